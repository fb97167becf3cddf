//! `Condition` and `Barrier` across real processes: notify one and all, distinct barrier
//! indices, and a timeout that breaks a barrier for everyone until reset. Children are
//! forked with deadlines and reaped; named segments use unique names.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mproc_segment::Segment;
use mproc_sync::{Barrier, BarrierError, Condition};
use mproc_testkit::{Child, fork_child};

mod common;
use common::Signal1;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn condition_notifies_a_waiting_process() {
    let cond = Condition::new().unwrap();
    let mem = Segment::anonymous(64).unwrap();
    let flag: &AtomicU32 = mem.view(0).unwrap();
    let waiting = Signal1::new();
    let child = fork_child(|| {
        let g = cond.lock().unwrap();
        waiting.notify();
        let (g, timed_out) = cond
            .wait_while(g, Some(LONG), || flag.load(Ordering::Relaxed) == 0)
            .unwrap();
        drop(g);
        if timed_out { 1 } else { 0 }
    });
    waiting.wait();
    {
        // The child holds the lock until it sleeps in wait_while, so this lock() returns
        // only once it is waiting.
        let _g = cond.lock().unwrap();
        flag.store(1, Ordering::Relaxed);
        cond.notify_all();
    }
    child.assert_success();

    // Timeout paths.
    let g = cond.lock().unwrap();
    let (g, timed_out) = cond.wait_timeout(g, Duration::from_millis(20)).unwrap();
    assert!(timed_out);
    let (g, still) = cond
        .wait_while(g, Some(Duration::from_millis(20)), || true)
        .unwrap();
    assert!(still);
    drop(g);
}

#[test]
fn condition_notify_one_wakes_one_of_many() {
    let cond = Condition::new().unwrap();
    let mem = Segment::anonymous(64).unwrap();
    let tickets: &AtomicU32 = mem.view(0).unwrap();
    let ready: &AtomicU32 = mem.view(4).unwrap();
    let children: Vec<Child> = (0..3)
        .map(|_| {
            fork_child(|| {
                let g = cond.lock().unwrap();
                ready.fetch_add(1, Ordering::SeqCst);
                let (g, timed_out) = cond
                    .wait_while(g, Some(LONG), || tickets.load(Ordering::Relaxed) == 0)
                    .unwrap();
                tickets.fetch_sub(1, Ordering::Relaxed);
                drop(g);
                if timed_out { 1 } else { 0 }
            })
        })
        .collect();
    // Hand out three tickets one at a time, each with notify_one.
    for _ in 0..3 {
        let _g = cond.lock().unwrap();
        tickets.fetch_add(1, Ordering::Relaxed);
        cond.notify_one();
    }
    for c in children {
        c.assert_success();
    }
    assert_eq!(tickets.load(Ordering::Relaxed), 0);
    assert_eq!(ready.load(Ordering::SeqCst), 3);
}

#[test]
fn barrier_releases_all_parties_with_distinct_indices() {
    let barrier = Barrier::new(4).unwrap();
    let mem = Segment::anonymous(64).unwrap();
    let seen: &[AtomicU32] = mem.view_slice(0, 4).unwrap();
    for round in 0..3u32 {
        let children: Vec<Child> = (0..3)
            .map(|_| {
                fork_child(|| match barrier.wait_timeout(LONG) {
                    Ok(i) => {
                        seen[i as usize].fetch_add(1, Ordering::SeqCst);
                        0
                    }
                    Err(_) => 1,
                })
            })
            .collect();
        let mine = barrier.wait_timeout(LONG).unwrap();
        seen[mine as usize].fetch_add(1, Ordering::SeqCst);
        for c in children {
            c.assert_success();
        }
        for s in seen {
            assert_eq!(
                s.load(Ordering::SeqCst),
                round + 1,
                "each index once per round"
            );
        }
    }
    assert!(!barrier.is_broken());
}

#[test]
fn a_barrier_timeout_breaks_it_for_everyone_until_reset() {
    let barrier = Barrier::new(3).unwrap();
    let arrived = Signal1::new();
    let child = fork_child(|| {
        arrived.notify();
        match barrier.wait_timeout(LONG) {
            Err(BarrierError::Broken) => 0,
            _ => 1,
        }
    });
    arrived.wait();
    // Two of three parties: the parent's short wait times out and breaks the barrier, which
    // releases the child with Broken.
    assert_eq!(
        barrier.wait_timeout(Duration::from_millis(50)),
        Err(BarrierError::Timeout)
    );
    child.assert_success();
    assert!(barrier.is_broken());
    assert_eq!(barrier.wait(), Err(BarrierError::Broken));
    barrier.reset();
    assert!(!barrier.is_broken());
    let kids: Vec<Child> = (0..2)
        .map(|_| {
            fork_child(|| {
                if barrier.wait_timeout(LONG).is_ok() {
                    0
                } else {
                    1
                }
            })
        })
        .collect();
    assert!(barrier.wait_timeout(LONG).is_ok());
    for k in kids {
        k.assert_success();
    }
}

#[test]
fn an_arrival_waits_in_steps_without_breaking_and_breaks_when_dropped() {
    let barrier = Barrier::new(2).unwrap();
    let mem = Segment::anonymous(64).unwrap();
    let steps: &AtomicU32 = mem.view(0).unwrap();
    // The child waits in 10 ms steps; the parent arrives only after it saw several of them
    // time out, which must not have broken the barrier.
    let child = fork_child(|| {
        let mut arrival = barrier.arrive_then();
        for _ in 0..3000 {
            match arrival.wait_timeout(Duration::from_millis(10)) {
                None => {
                    steps.fetch_add(1, Ordering::SeqCst);
                }
                Some(Ok(0)) => return 0,
                Some(_) => return 1,
            }
        }
        2
    });
    let deadline = std::time::Instant::now() + LONG;
    while steps.load(Ordering::SeqCst) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never waited"
        );
        std::thread::yield_now();
    }
    assert!(!barrier.is_broken());
    assert_eq!(barrier.wait_timeout(LONG), Ok(1));
    child.assert_success();

    // The child's arrival, dropped after the barrier opened, broke nothing.
    assert!(!barrier.is_broken());

    // An arrival dropped while waiting breaks the barrier for the party that waits with it.
    let barrier = Barrier::new(3).unwrap();
    let arrived = Signal1::new();
    let child = fork_child(|| {
        arrived.notify();
        match barrier.wait_timeout(LONG) {
            Err(BarrierError::Broken) => 0,
            _ => 1,
        }
    });
    arrived.wait();
    let deadline = std::time::Instant::now() + LONG;
    while barrier.n_waiting() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never arrived"
        );
        std::thread::yield_now();
    }
    let mut arrival = barrier.arrive_then();
    assert_eq!(arrival.wait_timeout(Duration::from_millis(1)), None);
    assert!(!barrier.is_broken());
    drop(arrival);
    assert!(barrier.is_broken());
    child.assert_success();
}
