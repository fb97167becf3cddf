//! How a future learns that a futex word (or a file descriptor) changed: one reactor thread
//! per process for futex words, one for file descriptors, each started on first use.
//!
//! **Futex words.** A future that must wait registers `(word, the value it saw, its Waker)`
//! and returns `Pending`. The word reactor sleeps in `futex_waitv` (Linux ≥ 5.16) on every
//! registered word at once, plus a process-private *doorbell* word that a registration rings
//! so the reactor re-reads the list. A peer's ordinary `FUTEX_WAKE` (the same one that wakes a
//! blocked thread: wakers do not know or care that the sleeper is a reactor) or a value that
//! no longer matches ends the sleep; the reactor wakes every future registered on that word
//! and forgets them (registrations are one-shot: a future that is still not ready registers
//! again). Every registration also carries a *nap*: when it passes, the future is woken
//! anyway and re-polls, which is how a wait learns that a peer died without waking it (the
//! same re-poll interval as the blocking call).
//!
//! The fast path stays free of system calls: a future registers only after its operation
//! failed, and counts itself in the primitive's waiter count (`Parking`, the lock's WAITERS
//! bit) exactly as a blocked thread does, so a waker that sees nobody waiting makes no system
//! call at all. An idle process with pending futures costs one reactor wake-up per nap.
//!
//! **Memory safety.** The reactor never reads a registered word itself: only the kernel does
//! (`futex_waitv`, and a zero-timeout `FUTEX_WAIT` to find which word changed), and the kernel
//! answers `EFAULT` for an address that is no longer mapped. So a registration that outlives
//! its segment (a future leaked with `mem::forget`) costs at most a spurious wake-up, never a
//! read of unmapped memory. A dropped future removes its registration.
//!
//! **File descriptors** (pidfds for process exit, a user's fd in a select) are watched by a
//! second thread in `poll(2)`, with an eventfd as its doorbell; the same one-shot and nap
//! rules apply, and a closed fd (`POLLNVAL`) fires its registration.
//!
//! On a kernel without `futex_waitv` (`ENOSYS`, before 5.16) the word reactor degrades to
//! waking every registration each millisecond: correct, but no longer idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

/// The most futex words one `futex_waitv` call takes (the kernel's `FUTEX_WAITV_MAX`); one
/// of them is the doorbell. Beyond that, the words left out are re-polled every millisecond.
const WAITV_MAX: usize = 128;

/// How long the word reactor naps when it could not include every word in its call, or when
/// the kernel lacks `futex_waitv`.
const OVERFLOW_NAP: Duration = crate::naps::REACTOR_OVERFLOW;

/// One registration: who to wake, and when to wake it anyway.
struct Entry<K> {
    key: K,
    waker: Waker,
    until: Instant,
    nap: Duration,
}

/// Naps that end this close together are served by one wake-up of the reactor.
const NAP_SLACK: Duration = crate::naps::REACTOR_SLACK;

/// A reactor's table of registrations (one-shot: firing removes them).
struct Table<K> {
    entries: HashMap<u64, Entry<K>>,
    next_id: u64,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
            next_id: 1,
        }
    }
}

impl<K: Copy + PartialEq> Table<K> {
    fn insert(&mut self, key: K, waker: &Waker, nap: Duration) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                key,
                waker: waker.clone(),
                until: Instant::now() + nap,
                nap,
            },
        );
        id
    }

    /// Removes the entries whose nap has passed (or ends within [`NAP_SLACK`]), and those
    /// `fire` says changed; returns their wakers (woken by the caller after releasing the
    /// lock), whether any was a change, and the keys and naps of those that only napped.
    fn take(
        &mut self,
        now: Instant,
        mut fire: impl FnMut(&K) -> bool,
    ) -> (Vec<Waker>, bool, Vec<(K, Duration)>) {
        let mut woken = Vec::new();
        let mut changed = false;
        let mut napped = Vec::new();
        self.entries.retain(|_, e| {
            let hit = fire(&e.key);
            changed |= hit;
            if hit || e.until <= now + NAP_SLACK {
                woken.push(e.waker.clone());
                if !hit {
                    napped.push((e.key, e.nap));
                }
                false
            } else {
                true
            }
        });
        (woken, changed, napped)
    }

    fn earliest(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.until).min()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// How long after a reactor thread could not be started (out of threads: RLIMIT_NPROC, a
/// cgroup's pids.max) the next attempt waits; meanwhile futures use the re-poll fallback.
const RESTART_AFTER: Duration = Duration::from_millis(10);

/// Starts `run` on a thread of its own over `value`, which lives for the rest of the process
/// if the thread starts. If it cannot start, `value` is dropped again (its descriptors closed,
/// its memory freed: a process out of threads leaks nothing per attempt), and no new attempt
/// is made for [`RESTART_AFTER`] (`last_failure`: when the last one failed, ms since `BASE`).
fn start_thread<T: Sync + 'static>(
    value: T,
    name: &str,
    run: fn(&'static T),
    last_failure: &AtomicU64,
) -> Option<&'static T> {
    let now = mproc_segment::monotonic_ms().max(1);
    let failed = last_failure.load(Ordering::Relaxed);
    if failed != 0 && now < failed + RESTART_AFTER.as_millis() as u64 {
        return None;
    }
    let raw: *mut T = Box::into_raw(Box::new(value));
    // SAFETY: `raw` comes from `Box::into_raw`: valid, aligned and initialised; it is freed
    // below only if the thread never started.
    let shared: &'static T = unsafe { &*raw };
    let own = mproc_segment::OwnThread::mark();
    match std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _own = own;
            run(shared)
        }) {
        Ok(_) => Some(shared),
        Err(_) => {
            last_failure.store(now, Ordering::Relaxed);
            // SAFETY: the thread was not created, so its closure (the only other holder of
            // `shared`) was dropped without running; nothing refers to the allocation.
            drop(unsafe { Box::from_raw(raw) });
            None
        }
    }
}

mod fds;
mod words;

pub use fds::FdWatch;
pub use words::WordWatch;
