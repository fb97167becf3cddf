//! The primitives across real processes: counting, owner death, every timeout path, and that
//! blocked waits sleep. Children are forked with deadlines and reaped; named segments use
//! unique names and are unlinked by their creators.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mproc_segment::{Segment, SegmentError};
use mproc_sync::{
    Barrier, BoundedSemaphore, Event, Lock, LockError, RLock, Semaphore, SemaphoreError,
};
use mproc_testkit::{Child, Exit, fork_child, unique_name};
use rustix::process::Signal;

const LONG: Duration = Duration::from_secs(30);

mod common;
use common::Signal1;

#[test]
fn two_processes_increment_under_the_lock_without_losing_updates() {
    let lock = Lock::new().unwrap();
    let mem = Segment::anonymous(64).unwrap();
    let counter: &AtomicU64 = mem.view(0).unwrap();
    let work = || {
        for _ in 0..100_000 {
            let _g = lock.lock().unwrap();
            // A deliberately non-atomic read-modify-write: only the lock keeps it exact.
            let v = counter.load(Ordering::Relaxed);
            counter.store(v + 1, Ordering::Relaxed);
        }
        0
    };
    let a = fork_child(work);
    let b = fork_child(work);
    a.assert_success();
    b.assert_success();
    assert_eq!(counter.load(Ordering::Relaxed), 200_000);
}

/// A child takes the lock, tells the parent, then dies the way `die` says while holding it.
fn owner_dies(lock: &Lock, die: fn() -> !) -> Child {
    let held = Signal1::new();
    let child = fork_child(|| {
        let guard = lock.lock().unwrap();
        std::mem::forget(guard);
        held.notify();
        die()
    });
    held.wait();
    child
}

fn block_forever() -> ! {
    loop {
        rustix::event::pause();
    }
}

fn exit_holding() -> ! {
    // SAFETY: ends the child at once, without unlocking anything.
    unsafe { libc::_exit(0) }
}

fn check_recovery(lock: &Lock) {
    match lock.lock_timeout(Duration::from_secs(10)) {
        Err(LockError::OwnerDied(guard)) => {
            assert!(lock.is_inconsistent());
            // Until repaired, every acquisition reports the death.
            drop(guard);
            let again = lock.try_lock();
            assert!(matches!(again, Err(LockError::OwnerDied(_))), "{again:?}");
            again.unwrap_err().into_guard().unwrap().make_consistent();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!lock.is_inconsistent());
    assert!(lock.lock().is_ok());
    // A new process uses it normally too.
    fork_child(|| match lock.lock_timeout(Duration::from_secs(10)) {
        Ok(_g) => 0,
        Err(_) => 1,
    })
    .assert_success();
    assert!(lock.try_lock().is_ok());
}

#[test]
fn a_sigkilled_owner_is_reported_and_the_lock_recovers() {
    let lock = Lock::new().unwrap();
    for _round in 0..25 {
        let mut child = owner_dies(&lock, block_forever);
        child.signal(Signal::KILL);
        assert_eq!(child.wait().exit, Exit::Signaled(libc::SIGKILL));
        check_recovery(&lock);
    }
}

#[test]
fn an_owner_that_exits_holding_the_lock_is_reported() {
    let lock = Lock::new().unwrap();
    let mut child = owner_dies(&lock, exit_holding);
    assert_eq!(child.wait().exit, Exit::Code(0));
    check_recovery(&lock);
}

#[test]
fn a_thread_that_exits_holding_the_lock_is_reported() {
    let lock = Lock::new().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.lock().unwrap()));
    });
    // The holder thread is gone; its process lives on.
    match lock.lock_timeout(Duration::from_secs(10)) {
        Err(LockError::OwnerDied(g)) => g.make_consistent(),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(lock.try_lock().is_ok());
}

#[test]
fn a_plain_lock_taken_twice_by_one_thread_is_an_error_not_a_hang() {
    let lock = Lock::new().unwrap();
    let _g = lock.lock().unwrap();
    assert!(matches!(
        lock.lock(),
        Err(LockError::Os {
            errno: mproc_segment::Errno::DEADLK,
            ..
        })
    ));
}

#[test]
fn a_forked_child_dropping_its_copy_of_a_guard_does_not_unlock_the_parent() {
    let lock = Lock::new().unwrap();
    let guard = lock.lock().unwrap();
    fork_child(|| {
        // This copy of the guard names the parent's thread, not ours: dropping it must not
        // release the parent's lock.
        // SAFETY: the parent's `guard` is never used again in this child (it exits below), so
        // this bitwise copy is the only live guard here.
        drop(unsafe { std::ptr::read(&guard) });
        i32::from(!matches!(lock.try_lock(), Err(LockError::WouldBlock)))
    })
    .assert_success();
    drop(guard);
    assert!(lock.try_lock().is_ok());
}

/// A peer rewrites the lock's bytes (its owner word, depth, flags, padding) with random
/// values while this process's threads lock and unlock it with timeouts: nothing crashes or
/// hangs; every call returns a guard, `OwnerDied`, a timeout or a typed error.
#[test]
fn a_peer_scribbling_over_the_lock_cannot_crash_or_hang_its_users() {
    use std::sync::atomic::{AtomicU64, Ordering};
    mproc_testkit::with_deadline(Duration::from_secs(120), || {
        let lock = Lock::new().unwrap();
        // SAFETY: the lock's words are atomics, and in this process only the vandal child
        // (a copy of it) writes them through this view; the lockers are other processes.
        let words: &[AtomicU64] = unsafe { lock.raw_segment() }.view_slice(0, 6).unwrap();
        let vandal = fork_child(|| {
            let mut rng = mproc_testkit::Rng(0xFACE);
            let me = u64::from(std::process::id());
            for i in 0..20_000u64 {
                let v = match rng.next_u64() % 6 {
                    0 => 0,
                    1 => me,          // a live holder that never unlocks
                    2 => 0x7FFF_FFF0, // a holder that does not exist
                    3 => rng.next_u64(),
                    4 => me | 1 << 30 | (rng.next_u64() << 32), // live tid, wrong start time
                    _ => u64::MAX,
                };
                words[(rng.next_u64() % 6) as usize].store(v, Ordering::Relaxed);
                if i % 8 == 0 {
                    std::thread::yield_now();
                }
            }
            0
        });
        let (mut held, mut died, mut other) = (0u32, 0u32, 0u32);
        std::thread::scope(|s| {
            let users: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut counts = (0u32, 0u32, 0u32);
                        for _ in 0..300 {
                            match lock.lock_timeout(Duration::from_millis(30)) {
                                Ok(_g) => counts.0 += 1,
                                Err(LockError::OwnerDied(g)) => {
                                    g.make_consistent();
                                    counts.1 += 1;
                                }
                                Err(_) => counts.2 += 1,
                            }
                            let _ = lock.try_lock();
                        }
                        counts
                    })
                })
                .collect();
            for u in users {
                let (a, b, c) = u.join().unwrap();
                held += a;
                died += b;
                other += c;
            }
        });
        vandal.assert_success();
        println!("scribbled lock: {held} acquired, {died} owner-died, {other} errors or timeouts");
        // Once the vandal is gone the lock works again (after at most one owner-death report).
        words[0].store(0, Ordering::Relaxed);
        match lock.lock_timeout(Duration::from_secs(10)) {
            Ok(_) => {}
            Err(LockError::OwnerDied(g)) => g.make_consistent(),
            Err(e) => panic!("{e:?}"),
        }
        assert!(lock.try_lock().is_ok());
    });
}

#[test]
fn lock_timeout_and_try_lock_while_held_elsewhere() {
    let name = unique_name("sync-lock-named");
    let lock = Lock::create(&name).unwrap();
    let held = Signal1::new();
    let release = Signal1::new();
    let child = fork_child(|| {
        let lock = Lock::open(&name).unwrap();
        let _g = lock.lock().unwrap();
        held.notify();
        release.wait();
        0
    });
    held.wait();
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(50)),
        Err(LockError::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(50));
    release.notify();
    child.assert_success();
    assert!(lock.lock_timeout(LONG).is_ok());
    // The wrong kind is refused.
    assert!(matches!(
        Event::open(&name),
        Err(SegmentError::KindMismatch { .. })
    ));
}

#[test]
fn rlock_is_reentrant_and_refuses_a_non_owner_release() {
    let r = RLock::new().unwrap();
    r.acquire().unwrap();
    r.acquire().unwrap();
    // Another process can neither take it nor release it.
    fork_child(|| {
        let busy = matches!(r.try_acquire(), Err(LockError::WouldBlock));
        let not_owner = matches!(r.release(), Err(LockError::NotOwner));
        if busy && not_owner { 0 } else { 1 }
    })
    .assert_success();
    // Nor can another thread of this process.
    std::thread::scope(|s| {
        s.spawn(|| assert!(matches!(r.release(), Err(LockError::NotOwner))));
    });
    r.release().unwrap();
    r.release().unwrap();
    assert!(matches!(r.release(), Err(LockError::NotOwner)));
    fork_child(|| match r.acquire_timeout(LONG) {
        Ok(()) => 0,
        Err(_) => 1,
    })
    .assert_success();
}

#[test]
fn event_wakes_waiting_processes_and_times_out() {
    let ev = Event::new().unwrap();
    let waiters: Vec<Child> = (0..3)
        .map(|_| fork_child(|| if ev.wait_timeout(LONG) { 0 } else { 1 }))
        .collect();
    ev.set();
    for c in waiters {
        c.assert_success();
    }
    ev.clear();
    assert!(!ev.is_set());
    fork_child(|| {
        let start = Instant::now();
        let timed_out = !ev.wait_timeout(Duration::from_millis(30));
        if timed_out && start.elapsed() >= Duration::from_millis(30) {
            0
        } else {
            1
        }
    })
    .assert_success();
}

#[test]
fn a_process_blocked_in_event_wait_uses_almost_no_cpu() {
    let ev = Event::new().unwrap();
    let started = Signal1::new();
    let mut child = fork_child(|| {
        started.notify();
        ev.wait();
        0
    });
    started.wait();
    // The measured interval, not synchronisation: the child must sleep through it.
    std::thread::sleep(Duration::from_secs(1));
    ev.set();
    let reaped = child.wait();
    assert_eq!(reaped.exit, Exit::Code(0));
    assert!(
        reaped.cpu < Duration::from_millis(20),
        "blocked waiter used {:?} of CPU",
        reaped.cpu
    );
}

#[test]
fn semaphore_hands_out_permits_across_processes() {
    let name = unique_name("sync-sem");
    let sem = Semaphore::create(&name, 0).unwrap();
    assert!(!sem.try_acquire());
    assert!(!sem.acquire_timeout(Duration::from_millis(20)));
    let n = name.clone();
    let children: Vec<Child> = (0..3)
        .map(|_| {
            let n = n.clone();
            fork_child(move || {
                let sem = Semaphore::open(&n).unwrap();
                if sem.acquire_timeout(LONG) { 0 } else { 1 }
            })
        })
        .collect();
    for _ in 0..3 {
        sem.release();
    }
    for c in children {
        c.assert_success();
    }
    assert_eq!(sem.value(), 0);
    sem.release();
    assert_eq!(sem.value(), 1);
    // A bounded semaphore refuses to go above its bound, in any process.
    let b = BoundedSemaphore::new(2).unwrap();
    assert!(b.try_acquire());
    fork_child(|| match (b.release(), b.release()) {
        (Ok(()), Err(SemaphoreError::OverRelease { bound: 2 })) => 0,
        _ => 1,
    })
    .assert_success();
    assert_eq!(b.value(), 2);
    assert!(BoundedSemaphore::new(0).is_err());
    // Semaphore and BoundedSemaphore segments are not interchangeable.
    assert!(matches!(
        BoundedSemaphore::open(&name),
        Err(SegmentError::TypeMismatch { .. })
    ));
}

#[test]
fn lock_counters_count_acquisitions_waits_and_owner_deaths() {
    let lock = Lock::new().unwrap();
    for _ in 0..3 {
        drop(lock.lock().unwrap());
    }
    let c = lock.raw().counters();
    assert_eq!(
        (c.holder, c.acquisitions, c.contentions, c.owner_deaths),
        (None, 3, 0, 0)
    );

    // A child takes it and dies holding it: we wait (a contention), take it over (a death).
    let mut child = owner_dies(&lock, block_forever);
    let c = lock.raw().counters();
    assert_eq!(c.acquisitions, 4);
    assert!(c.holder.is_some());
    child.signal(Signal::KILL);
    child.wait();
    match lock.lock_timeout(LONG) {
        Err(LockError::OwnerDied(g)) => g.make_consistent(),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    let c = lock.raw().counters();
    assert_eq!(
        (c.holder, c.acquisitions, c.contentions, c.owner_deaths),
        (None, 5, 1, 1)
    );

    // The counters are in shared memory: another process sees them and adds to them.
    fork_child(|| {
        let c = lock.raw().counters();
        let ok = c.acquisitions == 5 && c.owner_deaths == 1 && lock.lock().is_ok();
        if ok { 0 } else { 1 }
    })
    .assert_success();
    assert_eq!(lock.raw().counters().acquisitions, 6);
}

/// `lock_recover` with `?` into `Box<dyn Error>`: no `map_err`, and a holder's death comes
/// back as a held guard that says so.
fn take_and_repair(lock: &Lock) -> Result<bool, Box<dyn std::error::Error>> {
    let guard = lock.lock_recover()?;
    let died = guard.owner_died();
    if died {
        guard.make_consistent();
    }
    Ok(died)
}

#[test]
fn lock_recover_hands_back_the_guard_of_a_dead_holder_and_works_with_question_mark() {
    let lock = Lock::new().unwrap();
    let _child = owner_dies(&lock, exit_holding);
    assert!(
        take_and_repair(&lock).unwrap(),
        "the holder's death was reported"
    );
    assert!(
        !take_and_repair(&lock).unwrap(),
        "repaired: no longer reported"
    );
    // A failure is an error without a guard ('static): it travels through `?` as well.
    let held = lock.lock().unwrap();
    let other = fork_child(|| match lock.try_lock().map_err(LockError::recover) {
        Err(Err(LockError::WouldBlock)) => 0,
        _ => 1,
    });
    other.assert_success();
    drop(held);
}

#[test]
fn out_of_range_parameters_are_invalid_arguments_and_create_nothing() {
    let name = unique_name("badarg");
    assert!(matches!(
        Barrier::create(&name, 0),
        Err(SegmentError::InvalidArgument { .. })
    ));
    assert!(matches!(
        BoundedSemaphore::create(&name, 0),
        Err(SegmentError::InvalidArgument { .. })
    ));
    // Nothing was left under the name: it can be created properly now.
    assert!(mproc_testkit::shm_entries(&name).is_empty());
    let b = Barrier::create(&name, 1).expect("one party");
    b.wait().expect("a party of one passes at once");
    drop(b);
    // The creator unlinks the name when it drops its handle.
    assert!(mproc_testkit::shm_entries(&name).is_empty());
}
