//! The word reactor: one thread per process asleep in `futex_waitv` on every registered futex
//! word (and a doorbell), waking the futures whose word changed or whose nap ran out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::{Instance, OVERFLOW_NAP, Table, WAITV_MAX, lock, per_process, start_thread, wake_all};

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
    static WORDS: AtomicPtr<Instance<Words>> = AtomicPtr::new(std::ptr::null_mut());
    static MAKING: AtomicU32 = AtomicU32::new(0);
    static FAILED: AtomicU64 = AtomicU64::new(0);
    per_process(&WORDS, &MAKING, || {
        let w = Words {
            table: Mutex::new(Table::default()),
            bell: AtomicU32::new(0),
            sleeping_on: Mutex::new(Vec::new()),
            awake: std::sync::atomic::AtomicBool::new(true),
        };
        // The thread lives as long as the process; it holds no resource but its stack.
        start_thread(w, "mproc-reactor", word_reactor, &FAILED)
    })
}

/// `struct futex_waitv` (linux/futex.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

const FUTEX2_SIZE_U32: u32 = 0x02;

/// `futex_waitv` until `until`: `Ok(index woken)` or `Err(errno)`.
fn futex_waitv(v: &[FutexWaitv], until: Instant) -> Result<usize, i32> {
    // The timeout is absolute on CLOCK_MONOTONIC, the clock `Instant` reads.
    let left = until.saturating_duration_since(Instant::now());
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the local we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
    let ts = libc::timespec {
        tv_sec: now.tv_sec
            + left.as_secs().min(1 << 31) as libc::time_t
            + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `v` is a live array of `v.len()` futex_waitv structs and `ts` a live timespec;
    // the kernel reads them and the words they name (it validates those addresses itself and
    // answers EFAULT for an unmapped one: nothing here is dereferenced in user space).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            v.as_ptr(),
            v.len() as u32,
            0u32,
            &ts as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    } else {
        Ok(r as usize)
    }
}

/// Whether the kernel still sees `w.expected` at `w.addr` (a zero-timeout FUTEX_WAIT: EAGAIN
/// means changed, EFAULT unmapped, ETIMEDOUT unchanged).
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
        v.push(FutexWaitv {
            val: u64::from(bell),
            uaddr: w.bell.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        });
        v.extend(list.iter().map(|k| FutexWaitv {
            val: u64::from(k.expected),
            uaddr: k.addr as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        }));
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
