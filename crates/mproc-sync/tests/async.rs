//! Futures and select across real processes (the `async` feature).

use std::time::Duration;

use mproc_sync::{
    Barrier, BarrierError, Condition, Event, Lock, LockError, Readable, Semaphore, Waitable,
    select, select_async,
};
use mproc_testkit::{block_on_for, fork_child, poll_once, with_deadline};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn an_event_future_completes_when_another_process_sets_it() {
    with_deadline(LIMIT, || {
        let ev = Event::new().unwrap();
        let mut wait = Box::pin(ev.wait_async());
        // Registered with the reactor before the peer exists.
        assert!(poll_once(&mut wait).is_none());
        assert!(!ev.raw().is_set());
        let child = fork_child(|| {
            ev.set();
            0
        });
        assert_eq!(block_on_for(LIMIT, wait), Some(()));
        child.assert_success();
    });
}

#[test]
fn a_dropped_event_future_leaves_no_waiter_behind() {
    let ev = Event::new().unwrap();
    // The waiter count is what makes `set` issue a wake-up system call.
    let waiters = waiters_of;
    let mut wait = Box::pin(ev.wait_async());
    assert!(poll_once(&mut wait).is_none());
    assert_eq!(waiters(&ev), 1);
    drop(wait);
    assert_eq!(waiters(&ev), 0);
    // A set afterwards finds nobody; a new future completes at once.
    ev.set();
    assert_eq!(block_on_for(LIMIT, ev.wait_async()), Some(()));
}

/// The event's waiter count, read from its segment: the `Parking` after the 4-byte state,
/// second word.
fn waiters_of(ev: &Event) -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: an atomic read of the event's waiter count, a word the event only ever accesses
    // atomically.
    unsafe { ev.raw_segment() }.read_bytes(8, &mut b).unwrap();
    u32::from_ne_bytes(b)
}

#[test]
fn semaphore_permits_released_by_a_child_reach_async_acquirers() {
    with_deadline(LIMIT, || {
        let s = Semaphore::new(0).unwrap();
        let mut a = Box::pin(s.acquire_async());
        let mut b = Box::pin(s.acquire_async());
        assert!(poll_once(&mut a).is_none() && poll_once(&mut b).is_none());
        let child = fork_child(|| {
            s.release();
            s.release();
            0
        });
        child.assert_success();
        assert_eq!(block_on_for(LIMIT, a), Some(()));
        assert_eq!(block_on_for(LIMIT, b), Some(()));
        assert_eq!(s.value(), 0);
    });
}

#[test]
fn cancelled_acquires_take_no_permit_and_pass_on_their_wake_up() {
    with_deadline(LIMIT, || {
        let s = Semaphore::new(0).unwrap();
        for _ in 0..50 {
            let mut doomed = Box::pin(s.acquire_async());
            let mut keeper = Box::pin(s.acquire_async());
            assert!(poll_once(&mut doomed).is_none() && poll_once(&mut keeper).is_none());
            s.release();
            // Whichever future the release woke, dropping the other one must not lose the
            // permit or the wake-up: `keeper` gets it.
            drop(doomed);
            assert_eq!(block_on_for(LIMIT, keeper), Some(()));
            assert_eq!(s.value(), 0);
        }
    });
}

#[test]
fn select_returns_the_source_another_process_made_ready() {
    with_deadline(LIMIT, || {
        let events: Vec<Event> = (0..5).map(|_| Event::new().unwrap()).collect();
        let sources: Vec<&dyn Waitable> = events.iter().map(|e| e as &dyn Waitable).collect();
        assert!(select(&sources, Some(Duration::from_millis(20))).is_empty());
        for pick in [3usize, 0, 4] {
            let mut fut = select_async(&sources);
            assert!(poll_once(&mut fut).is_none());
            let child = fork_child(|| {
                events[pick].set();
                0
            });
            assert_eq!(block_on_for(LIMIT, fut), Some(vec![pick]));
            child.assert_success();
            events[pick].clear();
            // The blocking form sees the same.
            let child = fork_child(|| {
                events[pick].set();
                0
            });
            assert_eq!(select(&sources, Some(LIMIT)), vec![pick]);
            child.assert_success();
            events[pick].clear();
        }
    });
}

#[test]
fn select_over_a_pipe_fires_when_a_child_writes_or_dies() {
    with_deadline(LIMIT, || {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let ev = Event::new().unwrap();
        let pipe = Readable(std::os::fd::AsFd::as_fd(&r));
        let sources: [&dyn Waitable; 2] = [&ev, &pipe];
        let child = fork_child(move || {
            rustix::io::write(&w, b"x").unwrap();
            0
        });
        assert_eq!(select(&sources, Some(LIMIT)), vec![1]);
        child.assert_success();
    });
}

#[test]
fn an_idle_async_waiter_uses_almost_no_cpu() {
    with_deadline(LIMIT, || {
        let ev = Event::new().unwrap();
        let stop = Event::new().unwrap();
        // Two waits pending at once, so the reactor has two words to sleep on; it wakes once
        // per 100 ms nap to look for dead peers, nothing more.
        let used = mproc_testkit::idle_cpu(
            |ready| {
                let sources: [&dyn Waitable; 1] = [&stop];
                let mut both = Box::pin(async {
                    let (a, b) = (ev.wait_async(), select_async(&sources));
                    a.await;
                    b.await
                });
                if poll_once(&mut both).is_some() {
                    return false;
                }
                ready();
                block_on_for(LIMIT, both) == Some(vec![0])
            },
            || {
                ev.set();
                stop.set();
            },
        );
        assert!(
            used.is_some_and(|u| u < Duration::from_millis(10)),
            "idle async waiter used {used:?} of CPU in 1 s (limit 1 %)"
        );
    });
}

#[test]
fn lock_async_gets_the_lock_when_a_child_releases_it_or_dies_holding_it() {
    with_deadline(LIMIT, || {
        let lock = Lock::new().unwrap();
        let (held, go) = (Event::new().unwrap(), Event::new().unwrap());
        let child = fork_child(|| {
            let g = lock.lock().unwrap();
            held.set();
            go.wait();
            drop(g);
            0
        });
        held.wait();
        let mut fut = Box::pin(lock.lock_async());
        assert!(poll_once(&mut fut).is_none(), "the child holds it");
        go.set();
        let guard = block_on_for(LIMIT, fut).expect("stuck").expect("lock");
        drop(guard);
        child.assert_success();

        // A holder that dies: nobody unlocks or wakes; the 20 ms liveness look finds it.
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut holder = fork_child(|| {
            std::mem::forget(lock.lock().unwrap());
            rustix::io::write(&w, b"x").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            0
        });
        let mut b = [0u8];
        rustix::io::read(&r, &mut b).unwrap();
        let mut fut = Box::pin(lock.lock_async());
        assert!(poll_once(&mut fut).is_none());
        holder.signal(rustix::process::Signal::KILL);
        holder.wait();
        match block_on_for(LIMIT, fut).expect("stuck") {
            Err(LockError::OwnerDied(g)) => g.make_consistent(),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        assert!(!lock.is_inconsistent());
    });
}

#[test]
fn barrier_wait_async_passes_with_blocked_children_and_a_dropped_one_breaks_it() {
    with_deadline(LIMIT, || {
        let b = Barrier::new(3).unwrap();
        let kids: Vec<_> = (0..2)
            .map(|_| {
                fork_child(|| match b.wait() {
                    Ok(i) if i < 3 => 0,
                    _ => 1,
                })
            })
            .collect();
        assert!(matches!(block_on_for(LIMIT, b.wait_async()), Some(Ok(i)) if i < 3));
        kids.into_iter()
            .for_each(mproc_testkit::Child::assert_success);

        // Arrive, then give up: the party that waits in a child learns it at once.
        let waiter = fork_child(|| match b.wait_timeout(LIMIT) {
            Err(BarrierError::Broken) => 0,
            _ => 1,
        });
        let mut fut = Box::pin(b.wait_async());
        assert!(poll_once(&mut fut).is_none());
        drop(fut);
        waiter.assert_success();
        assert!(b.is_broken());
    });
}

#[test]
fn condition_wait_async_wakes_on_a_notify_from_another_process() {
    with_deadline(LIMIT, || {
        let cond = Condition::new().unwrap();
        let flag = Event::new().unwrap();
        let run = async {
            let mut guard = cond.lock_async().await.unwrap();
            while !flag.is_set() {
                guard = cond.wait_async(guard).await.unwrap();
            }
            drop(guard);
        };
        let mut run = Box::pin(run);
        assert!(poll_once(&mut run).is_none(), "waiting for the flag");
        let child = fork_child(|| {
            let g = cond.lock().unwrap();
            flag.set();
            cond.notify_all();
            drop(g);
            0
        });
        assert_eq!(block_on_for(LIMIT, run), Some(()));
        child.assert_success();
    });
}

#[test]
fn more_pending_futures_than_one_futex_waitv_takes_all_complete() {
    with_deadline(LIMIT, || {
        // 200 distinct words: past the kernel's 128 per futex_waitv call, the reactor
        // re-polls the rest; every future must still complete once its event is set.
        let events: Vec<Event> = (0..200).map(|_| Event::new().unwrap()).collect();
        let mut waits: Vec<_> = events.iter().map(|e| Box::pin(e.wait_async())).collect();
        for w in &mut waits {
            assert!(poll_once(w).is_none());
        }
        let child = fork_child(|| {
            events.iter().rev().for_each(Event::set);
            0
        });
        child.assert_success();
        let all = async {
            for w in waits {
                w.await;
            }
        };
        assert_eq!(block_on_for(LIMIT, all), Some(()));
    });
}

#[test]
fn a_leaked_future_whose_segment_is_gone_costs_nothing_but_a_wake_up() {
    with_deadline(LIMIT, || {
        // The future is forgotten with its registration, then the event's segment is
        // unmapped: the reactor must not touch that memory (only the kernel reads registered
        // words), and other waits keep working.
        let ev = Event::new().unwrap();
        let mut fut = Box::pin(ev.wait_async());
        assert!(poll_once(&mut fut).is_none());
        std::mem::forget(fut);
        drop(ev);
        let other = Event::new().unwrap();
        let mut wait = Box::pin(other.wait_async());
        assert!(poll_once(&mut wait).is_none());
        let child = fork_child(|| {
            other.set();
            0
        });
        assert_eq!(block_on_for(LIMIT, wait), Some(()));
        child.assert_success();
    });
}

/// A process that cannot start threads (another user's, at its RLIMIT_NPROC): futures fall
/// back to being woken at once on every poll (the caller re-polls), and a second of such
/// polling leaks neither descriptors nor memory (it used to leak an eventfd or a boxed
/// reactor per poll).
#[test]
fn forked_child_without_threads_polls_without_leaking() {
    with_deadline(LIMIT, || {
        let ev = Event::new().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        fork_child(move || {
            if !mproc_testkit::become_nobody()
                || !mproc_testkit::set_limit(rustix::process::Resource::Nproc, 0)
            {
                return 2;
            }
            if std::thread::Builder::new().spawn(|| ()).is_ok() {
                return 3; // threads can still start: the test would prove nothing
            }
            // Unreadable (EMFILE) counts as a leak.
            let fds = || std::fs::read_dir("/proc/self/fd").map_or(usize::MAX, |d| d.count());
            let rss = || mproc_segment::resident_bytes().unwrap_or(u64::MAX);
            let fds_before = fds();
            let readable = Readable(std::os::fd::AsFd::as_fd(&r));
            let sources: [&dyn Waitable; 1] = [&readable];
            let poll_both = || {
                let mut wait = Box::pin(ev.wait_async());
                let mut sel = Box::pin(select_async(&sources));
                // Pending (nothing is set or readable), and woken at once by the fallback.
                poll_once(&mut wait).is_none() && poll_once(&mut sel).is_none()
            };
            for _ in 0..1000 {
                if !poll_both() {
                    return 4;
                }
            }
            let (fds0, rss0) = (fds(), rss());
            if fds0 != fds_before {
                return 8;
            }
            let start = std::time::Instant::now();
            let mut polls = 0u64;
            while start.elapsed() < Duration::from_secs(1) {
                if !poll_both() {
                    return 4;
                }
                polls += 1;
            }
            let (fds1, rss1) = (fds(), rss());
            if polls < 1000 {
                return 5;
            }
            if fds1 > fds0 {
                return 6;
            }
            if rss1 > rss0.saturating_add(1 << 20) {
                return 7;
            }
            0
        })
        .assert_success();
    });
}
