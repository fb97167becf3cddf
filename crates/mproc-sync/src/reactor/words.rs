//! The word reactor: one thread per process asleep in `futex_waitv` on every registered futex
//! word (and a doorbell), waking the futures whose word changed or whose nap ran out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use mproc_segment::ProcessCell;
use rustix::thread::futex;

use super::{OVERFLOW_NAP, Table, WAITV_MAX, lock, start_thread, wake_all};

// ---- futex words ----------------------------------------------------------------------------

/// A futex word as the kernel sees it: its address and the value a waiter saw.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Word {
    addr: usize,
    expected: u32,
}

struct Words {
    table: Mutex<Table<Word>>,
    /// A futex in this process's memory that the reactor also sleeps on; bumped (and woken
    /// with the same shared FUTEX_WAKE as every other word) by each registration.
    bell: AtomicU32,
    /// The reactor is inside `futex_waitv` with exactly these words (a registration of one of
    /// them needs no doorbell).
    sleeping_on: Mutex<Vec<Word>>,
    /// The reactor is not asleep: a registration bumps the doorbell without waking it.
    awake: std::sync::atomic::AtomicBool,
}

/// The word reactor, started on first use in each process; `None` if its thread could not be
/// started (then a later call tries again, see [`start_thread`]).
fn words() -> Option<&'static Words> {
    static WORDS: ProcessCell<Words> = ProcessCell::new();
    static FAILED: AtomicU64 = AtomicU64::new(0);
    WORDS
        .get_or_try_make(|| {
            let w = Words {
                table: Mutex::new(Table::default()),
                bell: AtomicU32::new(0),
                sleeping_on: Mutex::new(Vec::new()),
                awake: std::sync::atomic::AtomicBool::new(true),
            };
            // The thread lives as long as the process; it holds no resource but its stack.
            start_thread(w, "mproc-reactor", word_reactor, &FAILED).ok_or(())
        })
        .ok()
}

/// One entry of a `futex_waitv` call: wait while the 32-bit word at `addr` holds `expected`.
fn waitv_entry(addr: usize, expected: u32) -> futex::Wait {
    let mut w = futex::Wait::new();
    w.val = u64::from(expected);
    // An address, not a reference: the word may be unmapped by the time the kernel looks
    // (it then answers EFAULT; nothing is dereferenced in user space).
    w.uaddr = futex::WaitPtr::new(addr as *mut std::ffi::c_void);
    w.flags = futex::WaitFlags::SIZE_U32;
    w
}

/// `futex_waitv` until `until`: `Ok(index woken)` or `Err(errno)`.
fn futex_waitv(v: &[futex::Wait], until: Instant) -> Result<usize, i32> {
    use rustix::time::{ClockId, Timespec, clock_gettime};
    // The timeout is absolute on CLOCK_MONOTONIC, the clock `Instant` reads.
    let left = until.saturating_duration_since(Instant::now());
    let now = clock_gettime(ClockId::Monotonic);
    let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
    let ts = Timespec {
        tv_sec: now.tv_sec + left.as_secs().min(1 << 31) as i64 + (nanos / 1_000_000_000) as i64,
        tv_nsec: (nanos % 1_000_000_000) as i64,
    };
    futex::waitv(v, futex::WaitvFlags::empty(), Some(&ts), ClockId::Monotonic)
        .map_err(|e| e.raw_os_error())
}

/// Whether the kernel still sees `w.expected` at `w.addr` (a zero-timeout FUTEX_WAIT: EAGAIN
/// means changed, EFAULT unmapped, ETIMEDOUT unchanged). A raw system call, not rustix's
/// `futex::wait`: that takes a reference, and the word may have been unmapped meanwhile.
fn unchanged(w: Word) -> bool {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: FUTEX_WAIT reads the word in the kernel (EFAULT if unmapped) and takes a
    // relative timeout; `zero` is a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.addr as *const u32,
            libc::FUTEX_WAIT,
            w.expected,
            &zero as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

fn word_reactor(w: &'static Words) {
    let mut no_waitv = false;
    let mut changed: Vec<Word> = Vec::new();
    loop {
        // Awake (registrations ring the doorbell without a system call): fire what changed
        // or napped out.
        let (woken, by_change, napped) =
            lock(&w.table).take(Instant::now(), |k| no_waitv || changed.contains(k));
        changed.clear();
        wake_all(woken);
        // A future woken by a change is likely to wait again at once; one woken by its nap
        // (an idle wait looking for dead peers) is not worth staying awake for.
        if by_change && !no_waitv {
            linger(&w.bell);
        }
        // About to sleep: from here a registration wakes us. (SYNC POINT: `awake` is stored
        // before the doorbell is read, and a registrar bumps the doorbell before it reads
        // `awake`: either it sees us asleep and wakes us, or we see its bump.)
        w.awake.store(false, Ordering::SeqCst);
        let bell = w.bell.load(Ordering::SeqCst);
        let now = Instant::now();
        let (list, until) = {
            let t = lock(&w.table);
            let mut list: Vec<Word> = Vec::new();
            let mut overflow = false;
            // A wait woken only by its nap (nothing changed) registers again with the same
            // word and value: keep sleeping on it, with its next nap, so that registration
            // needs no doorbell (an idle wait then costs one reactor wake-up a nap, not two).
            let keys = t.entries.values().map(|e| e.key);
            for key in keys.chain(napped.iter().map(|n| n.0)) {
                if !list.contains(&key) {
                    if list.len() + 1 < WAITV_MAX {
                        list.push(key);
                    } else {
                        overflow = true;
                    }
                }
            }
            let next_nap = napped.iter().map(|n| now + n.1).min();
            let nap = (overflow || no_waitv).then_some(now + OVERFLOW_NAP);
            let until = [t.earliest(), nap, next_nap]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            *lock(&w.sleeping_on) = list.clone();
            (list, until)
        };
        let mut v = Vec::with_capacity(list.len() + 1);
        v.push(waitv_entry(w.bell.as_ptr() as usize, bell));
        v.extend(list.iter().map(|k| waitv_entry(k.addr, k.expected)));
        let r = if no_waitv {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            Err(libc::ETIMEDOUT)
        } else {
            futex_waitv(&v, until)
        };
        w.awake.store(true, Ordering::SeqCst);
        lock(&w.sleeping_on).clear();
        match r {
            Ok(0) => {}
            Ok(i) => changed.extend(list.get(i - 1).copied()),
            Err(libc::EAGAIN) | Err(libc::EFAULT) => {
                changed.extend(list.iter().copied().filter(|&k| !unchanged(k)));
            }
            Err(libc::ENOSYS) => no_waitv = true,
            Err(_) => {} // ETIMEDOUT (naps fire at the top), EINTR
        }
    }
}

/// How long the word reactor stays awake after waking futures
/// ([`naps::REACTOR_LINGER`](crate::naps::REACTOR_LINGER)).
const LINGER: Duration = crate::naps::REACTOR_LINGER;

/// Waits up to [`LINGER`] for the doorbell to ring.
fn linger(bell: &AtomicU32) {
    let rung = bell.load(Ordering::SeqCst);
    let end = Instant::now() + LINGER;
    while bell.load(Ordering::SeqCst) == rung && Instant::now() < end {
        std::thread::yield_now();
    }
}

/// A future's registration on a futex word; dropping it removes the registration.
#[derive(Debug)]
#[must_use = "the registration is removed when this is dropped"]
pub struct WordWatch {
    id: u64,
}

impl WordWatch {
    /// Wakes `waker` once the 32-bit `word` no longer holds `expected` (or a wake-up was
    /// sent to it), or after `nap` at the latest.
    pub fn new(word: &AtomicU32, expected: u32, waker: &Waker, nap: Duration) -> WordWatch {
        Self::at(word.as_ptr() as usize, expected, waker, nap)
    }

    /// As [`new`](Self::new), on the low 32 bits of a 64-bit word (as
    /// [`futex::wait_low`](crate::futex::wait_low) sleeps).
    pub fn new_low(word: &AtomicU64, expected: u32, waker: &Waker, nap: Duration) -> WordWatch {
        let p = word.as_ptr().cast::<u32>();
        let low = if cfg!(target_endian = "big") {
            p.wrapping_add(1)
        } else {
            p
        };
        Self::at(low as usize, expected, waker, nap)
    }

    fn at(addr: usize, expected: u32, waker: &Waker, nap: Duration) -> WordWatch {
        let Some(w) = words() else {
            // No reactor thread (out of threads): have the caller poll again rather than hang.
            waker.wake_by_ref();
            return WordWatch { id: 0 };
        };
        let key = Word { addr, expected };
        let id = lock(&w.table).insert(key, waker, nap);
        // The reactor already sleeps on this very word and value: it will see the change.
        // Otherwise ring the doorbell so it re-reads the table.
        if !lock(&w.sleeping_on).contains(&key) {
            w.bell.fetch_add(1, Ordering::SeqCst);
            if !w.awake.load(Ordering::SeqCst) {
                crate::futex::wake(&w.bell, 1);
            }
        }
        WordWatch { id }
    }

    /// Ends the registration: `true` if the reactor had already fired it (woke the future),
    /// which may have consumed a wake-up meant for some waiter.
    pub fn finish(self) -> bool {
        let fired = words().is_none_or(|w| lock(&w.table).entries.remove(&self.id).is_none());
        std::mem::forget(self);
        fired
    }
}

impl Drop for WordWatch {
    fn drop(&mut self) {
        if let Some(w) = words() {
            lock(&w.table).entries.remove(&self.id);
        }
    }
}

// ---- file descriptors -----------------------------------------------------------------------
