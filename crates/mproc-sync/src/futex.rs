//! Futex wait and wake on a 32-bit word in shared memory.
//!
//! The operations are *shared* futexes (no `FUTEX_PRIVATE_FLAG`): the kernel keys them by the
//! physical page, so a wake from one process reaches a waiter in another, whatever address
//! each maps the segment at.
//!
//! The callers keep a waiter count next to each word so that a wake costs no system call when
//! nobody sleeps (the Dekker pattern: the waiter increments the count, then re-reads the word;
//! the waker changes the word, then reads the count — both SeqCst, so at least one of them sees
//! the other).
//!
//! Under `--cfg loom` the kernel is replaced by a model with the same contract (the value check
//! and the sleep are atomic with respect to wakes; spurious wake-ups are allowed), so loom can
//! find lost wake-ups in the protocols built on top.

use std::time::Instant;

use crate::atomic::{AtomicU32, AtomicU64};

/// Sleeps while `*word == expected`, until woken, until `deadline` (if any), or spuriously.
///
/// Returns `false` only if the deadline passed; `true` means "look again" (woken, value
/// already different, interrupted, or spurious). Callers re-check their condition in a loop.
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
    imp::wait(word, expected, deadline)
}

/// Wakes up to `n` processes or threads sleeping on `word`.
pub fn wake(word: &AtomicU32, n: u32) {
    imp::wake(word, n)
}

/// Wakes everyone sleeping on `word`.
pub fn wake_all(word: &AtomicU32) {
    imp::wake(word, i32::MAX as u32)
}

/// Sleeps while the low 32 bits of `*word` equal `expected` (as [`wait`]). For words that
/// carry more than a futex holds (the lock's owner word: the futex half holds the owner's
/// thread id and flags, the other half its start time). The kernel reads the half itself;
/// Rust code only ever accesses the word as a whole `AtomicU64`.
pub fn wait_low(word: &AtomicU64, expected: u32, deadline: Option<Instant>) -> bool {
    imp::wait_low(word, expected, deadline)
}

/// Wakes up to `n` sleepers of [`wait_low`] on `word`.
pub fn wake_low(word: &AtomicU64, n: u32) {
    imp::wake_low(word, n)
}

#[cfg(not(loom))]
mod imp {
    use rustix::thread::futex::{self, Flags, Timespec};

    use super::*;

    /// The half of `word` holding its low 32 bits, as the futex word the kernel compares.
    fn low_half(word: &AtomicU64) -> &AtomicU32 {
        let p = word.as_ptr().cast::<u32>();
        let p = if cfg!(target_endian = "big") {
            p.wrapping_add(1)
        } else {
            p
        };
        // SAFETY: `p` points at 4 bytes inside `word` (8-aligned, so these are 4-aligned),
        // valid for as long as `word` is borrowed. We never access them through the
        // `AtomicU32`: it only carries the address to the kernel's futex calls, which compare
        // the value atomically; every access of ours is to the whole `AtomicU64`.
        unsafe { AtomicU32::from_ptr(p) }
    }

    pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                Some(Timespec {
                    tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                })
            }
        };
        // Not `Flags::PRIVATE`: the word may be in memory shared with other processes.
        match futex::wait(word, Flags::empty(), expected, timeout.as_ref()) {
            Err(rustix::io::Errno::TIMEDOUT) => deadline.is_none_or(|d| Instant::now() < d),
            // Woken, the value already differed (EAGAIN), or interrupted: look again.
            _ => true,
        }
    }

    pub fn wake(word: &AtomicU32, n: u32) {
        let _ = futex::wake(word, Flags::empty(), n.min(i32::MAX as u32));
    }

    pub fn wait_low(word: &AtomicU64, expected: u32, deadline: Option<Instant>) -> bool {
        wait(low_half(word), expected, deadline)
    }

    pub fn wake_low(word: &AtomicU64, n: u32) {
        wake(low_half(word), n)
    }
}

#[cfg(loom)]
mod imp {
    //! A model of the kernel's futex for loom: one global lock makes "check the value, then
    //! sleep" atomic with respect to wakes, as the kernel's hash-bucket lock does. Every wake
    //! wakes every sleeper (any word): futex users must tolerate spurious wake-ups anyway.
    //! Deadlines are ignored (loom has no time): a sleeper nobody wakes is reported by loom as
    //! a deadlock, which is exactly the lost wake-up we are looking for.
    use super::*;
    use crate::atomic::Ordering;
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref KERNEL: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
    }

    /// Sleeps while `current()` (read under the model kernel's lock) equals `expected`.
    fn wait_while(current: impl FnOnce() -> u32, expected: u32) -> bool {
        let (lock, cv) = &*KERNEL;
        let mut generation = lock.lock().unwrap();
        if current() != expected {
            return true;
        }
        let start = *generation;
        while *generation == start {
            generation = cv.wait(generation).unwrap();
        }
        true
    }

    fn wake_everyone() {
        let (lock, cv) = &*KERNEL;
        *lock.lock().unwrap() += 1;
        cv.notify_all();
    }

    pub fn wait(word: &AtomicU32, expected: u32, _deadline: Option<Instant>) -> bool {
        wait_while(|| word.load(Ordering::SeqCst), expected)
    }

    pub fn wake(_word: &AtomicU32, _n: u32) {
        wake_everyone()
    }

    pub fn wait_low(word: &AtomicU64, expected: u32, _deadline: Option<Instant>) -> bool {
        wait_while(|| word.load(Ordering::SeqCst) as u32, expected)
    }

    pub fn wake_low(_word: &AtomicU64, _n: u32) {
        wake_everyone()
    }
}
