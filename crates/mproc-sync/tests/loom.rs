//! Loom models of the futex wait/wake handshake (no interleaving loses a wake-up) and of the
//! lock (mutual exclusion, hand-over to sleepers).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p mproc-sync --test loom --release`
//! (`.ci/run` does). Without `--cfg loom` this file compiles to nothing.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use mproc_sync::{BarrierError, RawBarrier, RawEvent, RawLock, RawSemaphore};

/// Explores every interleaving with at most three preemptions (loom's recommended bound for
/// models with three threads; the exhaustive space is too large for CI).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// A waiter that finds the event clear goes to sleep; the setter must wake it, whatever the
/// interleaving (a lost wake-up shows up as a loom deadlock).
#[test]
fn event_set_wakes_a_sleeping_waiter() {
    model(|| {
        let ev = Arc::new(RawEvent::new());
        let e2 = ev.clone();
        let waiter = thread::spawn(move || e2.wait());
        ev.set();
        waiter.join().unwrap();
        assert!(ev.is_set());
    });
}

/// Two waiters, one set: both wake.
#[test]
fn event_set_wakes_every_waiter() {
    model(|| {
        let ev = Arc::new(RawEvent::new());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let e = ev.clone();
                thread::spawn(move || e.wait())
            })
            .collect();
        ev.set();
        for h in handles {
            h.join().unwrap();
        }
    });
}

/// Permits are neither lost nor duplicated, and a sleeping acquirer is woken by a release.
#[test]
fn semaphore_release_wakes_acquirers() {
    model(|| {
        let sem = Arc::new(RawSemaphore::new(0, None));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                thread::spawn(move || s.acquire())
            })
            .collect();
        sem.release().unwrap();
        sem.release().unwrap();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    });
}

/// Two parties meet; indices are distinct; nobody sleeps forever.
#[test]
fn barrier_two_parties_meet() {
    model(|| {
        let b = Arc::new(RawBarrier::new(2));
        let b2 = b.clone();
        let other = thread::spawn(move || b2.wait());
        let mine = b.wait();
        let theirs = other.join().unwrap();
        let (Ok(x), Ok(y)): (Result<u32, BarrierError>, _) = (mine, theirs) else {
            panic!("barrier broke without a timeout");
        };
        assert_ne!(x, y);
    });
}

#[test]
fn semaphore_one_acquirer() {
    model(|| {
        let sem = Arc::new(RawSemaphore::new(0, None));
        let s = sem.clone();
        let h = thread::spawn(move || s.acquire());
        sem.release().unwrap();
        h.join().unwrap();
        assert_eq!(sem.value(), 0);
    });
}

/// Three threads take the lock twice each around a non-atomic counter (a loom cell: any two
/// holders at once are reported as a data race); sleepers are woken by unlocks (a lost
/// wake-up shows as a deadlock); the count is exact.
#[test]
fn lock_excludes_and_hands_over_to_sleepers() {
    model(|| {
        let shared = Arc::new((RawLock::new(false), UnsafeCell::new(0u32)));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let s = shared.clone();
                thread::spawn(move || {
                    for _ in 0..2 {
                        let g = s.0.lock().unwrap();
                        // SAFETY: the lock is held; loom checks that no one else touches it.
                        s.1.with_mut(|c| unsafe { *c += 1 });
                        drop(g);
                    }
                })
            })
            .collect();
        {
            let g = shared.0.lock().unwrap();
            // SAFETY: as above.
            shared.1.with_mut(|c| unsafe { *c += 1 });
            drop(g);
        }
        for w in workers {
            w.join().unwrap();
        }
        let g = shared.0.lock().unwrap();
        // SAFETY: as above.
        assert_eq!(shared.1.with(|c| unsafe { *c }), 5);
        drop(g);
        assert_eq!(shared.0.holder(), None);
    });
}
