//! Stale names reclaimed on create: a service whose creator was SIGKILLed comes back without
//! `mproc gc`; a segment some live process still maps is never taken; racing creators of a
//! stale name never both create.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mproc::prelude::*;
use mproc_testkit::{Child, fork_child, unique_name, with_deadline};

/// Removes the name however the test ends.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.0);
    }
}

/// A child that creates a named queue holding one item, then is SIGKILLed: the name stays
/// behind, stale (its creator is dead, nobody maps it).
fn leave_stale_queue(name: &str) {
    let (r, w) = rustix::pipe::pipe().unwrap();
    let n = name.to_owned();
    let mut child = fork_child(move || {
        let q: Queue<u32> = Queue::create(&n, 8).unwrap();
        q.put(7).unwrap();
        rustix::io::write(&w, b"x").unwrap();
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    let mut b = [0u8];
    rustix::io::read(&r, &mut b).unwrap();
    child.signal(rustix::process::Signal::KILL);
    child.wait();
    assert!(
        Segment::open_raw(name).is_ok(),
        "the stale name should still exist"
    );
}

#[test]
fn a_service_restarted_after_kill_9_creates_its_queue_again() {
    with_deadline(Duration::from_secs(60), || {
        let name = unique_name("restart");
        let _u = Unlink(name.clone());
        leave_stale_queue(&name);
        // The restarted service: no AlreadyExists, a fresh (empty) queue.
        let q: Queue<u32> = Queue::create(&name, 8).unwrap();
        assert!(q.is_empty());
        // Opt out: the old behaviour.
        drop(q); // unlinks
        leave_stale_queue(&name);
        let strict = SegmentOptions::new(Kind::RAW)
            .payload_len(64)
            .fail_if_exists();
        assert!(matches!(
            strict.create(&name),
            Err(SegmentError::AlreadyExists { .. })
        ));
    });
}

#[test]
fn a_stale_name_that_a_live_process_maps_is_left_alone() {
    with_deadline(Duration::from_secs(60), || {
        let name = unique_name("restart-mapped");
        let _u = Unlink(name.clone());
        leave_stale_queue(&name);
        // A live reader still has it mapped (and would keep reading what is left).
        let (r, w) = rustix::pipe::pipe().unwrap();
        let n = name.clone();
        let reader: Child = fork_child(move || {
            let q: Queue<u32> = Queue::open(&n).unwrap();
            rustix::io::write(&w, b"x").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            i32::from(q.is_empty())
        });
        let mut b = [0u8];
        rustix::io::read(&r, &mut b).unwrap();
        assert!(matches!(
            Queue::<u32>::create(&name, 8),
            Err(SegmentError::AlreadyExists { .. })
        ));
        // Once nobody maps it, it is reclaimed.
        drop(reader); // killed and reaped
        let q: Queue<u32> = Queue::create(&name, 8).unwrap();
        assert!(q.is_empty());
    });
}

#[test]
fn racing_creators_of_a_stale_name_never_both_create() {
    with_deadline(Duration::from_secs(60), || {
        for round in 0..10 {
            let name = unique_name("restart-race");
            let _u = Unlink(name.clone());
            leave_stale_queue(&name);
            let mem = Segment::anonymous(64).unwrap();
            let created: &[AtomicU32] = mem.view_slice(0, 2).unwrap();
            let kids: Vec<Child> = (0..4)
                .map(|_| {
                    let n = name.clone();
                    fork_child(move || {
                        let r = Queue::<u32>::create(&n, 8);
                        let code = match &r {
                            Ok(_) => {
                                created[0].fetch_add(1, Ordering::SeqCst);
                                0
                            }
                            Err(SegmentError::AlreadyExists { .. }) => 0,
                            Err(_) => 1,
                        };
                        // Everyone stays (the winner keeps its queue, live) until all tried:
                        // a winner that had left would leave a stale name, fairly reclaimed.
                        created[1].fetch_add(1, Ordering::SeqCst);
                        let end = std::time::Instant::now() + Duration::from_secs(30);
                        while created[1].load(Ordering::SeqCst) < 4
                            && std::time::Instant::now() < end
                        {
                            std::thread::yield_now();
                        }
                        drop(r);
                        code
                    })
                })
                .collect();
            for k in kids {
                k.assert_success();
            }
            assert_eq!(
                created[0].load(Ordering::SeqCst),
                1,
                "round {round}: exactly one creator expected"
            );
        }
    });
}
