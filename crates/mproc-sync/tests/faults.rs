//! Fault injection for the primitives: processes are SIGKILLed at random moments while they
//! hold a `Lock` (in the middle of updating what it protects), while they wait on an `Event`,
//! and while they wait on a `Barrier`. The survivors always finish before a deadline, every
//! owner death is reported to exactly the next locker, and the protected data stays exact.
//! Totals are printed at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mproc_segment::Segment;
use mproc_sync::{Barrier, Event, Lock, LockError};
use mproc_testkit::{Exit, Rng, fork_child, unique_name, with_deadline};
use rustix::process::Signal;

const ROUNDS: u64 = 200;
const WORKERS: usize = 3;
const SECTIONS: u64 = 30_000;

#[test]
fn a_lock_holder_killed_mid_update_is_reported_and_the_data_stays_exact() {
    with_deadline(Duration::from_secs(240), || {
        let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
        let (mut kills, mut deaths_reported, mut sections) = (0u64, 0u64, 0u64);
        for _ in 0..ROUNDS {
            let lock = Lock::new().unwrap();
            // a and b move together under the lock (a, then b): a != b means an owner died
            // between the two. done[i] counts worker i's finished sections, also under the lock.
            let mem = Segment::anonymous(8 * (3 + WORKERS)).unwrap();
            let cells: &[AtomicU64] = mem.view_slice(0, 3 + WORKERS).unwrap();
            let (a, b, reported, done) = (&cells[0], &cells[1], &cells[2], &cells[3..]);
            let mut children: Vec<_> = (0..WORKERS)
                .map(|i| {
                    let lock = &lock;
                    fork_child(move || {
                        for _ in 0..SECTIONS {
                            let guard = match lock.lock() {
                                Ok(g) => g,
                                Err(LockError::OwnerDied(g)) => {
                                    // Repair: finish the dead owner's half-done update.
                                    b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
                                    reported.fetch_add(1, Ordering::Relaxed);
                                    g.make_consistent();
                                    g
                                }
                                Err(_) => return 2,
                            };
                            a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                            std::hint::spin_loop();
                            b.store(b.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                            done[i].fetch_add(1, Ordering::Relaxed);
                            drop(guard);
                        }
                        0
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 3000));
            let victim = (rng.next_u64() % WORKERS as u64) as usize;
            children[victim].signal(Signal::KILL);
            let mut killed = false;
            for (i, c) in children.iter_mut().enumerate() {
                let r = c.wait_deadline(Duration::from_secs(30));
                if i == victim && r.exit == Exit::Signaled(libc::SIGKILL) {
                    killed = true;
                } else {
                    assert_eq!(r.exit, Exit::Code(0), "worker {i}");
                    assert_eq!(done[i].load(Ordering::Relaxed), SECTIONS);
                }
            }
            // A death while holding the lock is reported once, to the next locker; after it
            // (or if the victim was not holding it) the lock is clean.
            let total: u64 = done.iter().map(|d| d.load(Ordering::Relaxed)).sum();
            let last = match lock.lock() {
                Ok(g) => g,
                Err(LockError::OwnerDied(g)) => {
                    b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
                    reported.fetch_add(1, Ordering::Relaxed);
                    g.make_consistent();
                    g
                }
                Err(e) => panic!("lock after the round: {e}"),
            };
            let (av, bv) = (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
            assert_eq!(av, bv, "protected data left half-updated");
            // The killed worker may have done a's increment of a section it never counted.
            assert!(
                av == total || av == total + 1,
                "a = {av}, sections = {total}"
            );
            drop(last);
            assert!(reported.load(Ordering::Relaxed) <= 1);
            kills += u64::from(killed);
            deaths_reported += reported.load(Ordering::Relaxed);
            sections += total;
        }
        println!(
            "lock fault injection: {ROUNDS} rounds, {kills} workers killed, {deaths_reported} owner deaths reported, {sections} critical sections checked"
        );
    });
}

#[test]
fn killed_waiters_and_missing_parties_never_hang_the_others() {
    with_deadline(Duration::from_secs(120), || {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for round in 0..100 {
            // Event: four waiters, one killed while waiting; set() still wakes the rest.
            let name = unique_name("fault-event");
            let ev = Event::create(&name).unwrap();
            let mut waiters: Vec<_> = (0..4)
                .map(|_| fork_child(|| i32::from(!ev.wait_timeout(Duration::from_secs(20)))))
                .collect();
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 2000));
            let victim = (rng.next_u64() % 4) as usize;
            waiters[victim].signal(Signal::KILL);
            ev.set();
            for (i, w) in waiters.iter_mut().enumerate() {
                let r = w.wait_deadline(Duration::from_secs(30));
                if i != victim {
                    assert_eq!(r.exit, Exit::Code(0), "round {round}: waiter {i} not woken");
                }
            }

            // Barrier: three parties wait; one is killed at a random moment — before it
            // arrives (the others' timed wait expires and breaks the barrier) or after (its
            // arrival counts and the barrier may release). Either way nobody hangs.
            let bname = unique_name("fault-barrier");
            let barrier = Barrier::create(&bname, 3).unwrap();
            let mut parties: Vec<_> = (0..3)
                .map(|_| {
                    fork_child(|| match barrier.wait_timeout(Duration::from_millis(100)) {
                        Ok(_) => 0,
                        Err(_) => 1,
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 2000));
            let victim = (rng.next_u64() % 3) as usize;
            parties[victim].signal(Signal::KILL);
            for (i, p) in parties.iter_mut().enumerate() {
                let r = p.wait_deadline(Duration::from_secs(30));
                if i != victim {
                    assert!(
                        matches!(r.exit, Exit::Code(0 | 1)),
                        "round {round}: party {i}: {:?}",
                        r.exit
                    );
                }
            }
        }
    });
}
