//! `Pool` across real worker processes: ordering, laziness, failure isolation (panics, a
//! SIGKILLed worker, an unserializable result), recycling, initializers, terminate and
//! cleanup. Every test runs under a deadline; pools terminate and reap on drop.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mproc_array::Value;
use mproc_pool::{Pool, PoolError, StartError, SubmitError, TaskError, ThreadedFork, WaitError};
use mproc_queue::{ByteQueue, QueueOptions};
use mproc_sync::Event;
use mproc_testkit::{unique_name, with_deadline};
use serde::{Deserialize, Serialize, Serializer};

mod common;
use common::*;

#[test]
fn map_keeps_input_order_for_every_chunksize() {
    with_deadline(DEADLINE, || {
        let expected: Vec<u64> = (0..2000).map(square).collect();
        assert_eq!(pool(3).map(square, 0..2000).unwrap(), expected);
        for chunk in [1, 7, 5000] {
            let p = builder(2).chunksize(chunk).build().unwrap();
            assert_eq!(
                p.map(square, 0..2000).unwrap(),
                expected,
                "chunksize {chunk}"
            );
        }
        assert_eq!(pool(2).map(square, Vec::new()).unwrap(), Vec::<u64>::new());
    });
}

#[test]
fn work_really_runs_in_the_workers() {
    with_deadline(DEADLINE, || {
        let p = builder(2).chunksize(1).build().unwrap();
        let pids: HashSet<u32> = p
            .map(|_: u32| std::process::id(), 0..200)
            .unwrap()
            .into_iter()
            .collect();
        assert!(!pids.contains(&std::process::id()));
        let workers: HashSet<u32> = p.pids().into_iter().collect();
        assert!(pids.is_subset(&workers), "{pids:?} vs {workers:?}");
    });
}

#[test]
fn starmap_applies_a_two_argument_function() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let out = p
            .starmap(
                |a: u32, b: String| format!("{b}{a}"),
                (0..50).map(|i| (i, "x".repeat(i as usize % 3))),
            )
            .unwrap();
        assert_eq!(out[4], "x4");
        assert_eq!(out[5], "xx5");
        assert_eq!(out.len(), 50);
    });
}

#[test]
fn imap_is_lazy_on_an_endless_input() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let pulled = AtomicUsize::new(0);
        let input = (0u64..).inspect(|_| {
            pulled.fetch_add(1, Ordering::SeqCst);
        });
        let first: Vec<u64> = p
            .imap(square, input)
            .take(10)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(first, (0..10).map(square).collect::<Vec<_>>());
        // At most a window of 2 × processes chunks (of 1) beyond what was consumed.
        let n = pulled.load(Ordering::SeqCst);
        assert!(n <= 10 + 4, "imap pulled {n} items for 10 results");
    });
}

#[test]
fn imap_unordered_yields_in_completion_order() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let ev_name = unique_name("imap-unordered");
        let ev = Event::create(&ev_name).unwrap();
        // Item 0 cannot finish before the event is set, and we set it only after the first
        // result arrived: so the first result is not item 0's.
        fn job(arg: (u32, String)) -> u32 {
            if arg.0 == 0 {
                let ev = Event::open(&arg.1).unwrap();
                assert!(ev.wait_timeout(Duration::from_secs(30)));
            }
            arg.0
        }
        let mut it = p.imap_unordered(job, (0..20).map(|i| (i, ev_name.clone())));
        let first = it.next().unwrap().unwrap();
        assert_ne!(first, 0);
        ev.set();
        let mut all: Vec<u32> = it.collect::<Result<_, _>>().unwrap();
        all.push(first);
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
    });
}

fn picky(x: u32) -> u32 {
    if x == 13 {
        panic!("unlucky {x}");
    }
    x
}

#[test]
fn a_panicking_task_fails_alone_with_its_message() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let out: Vec<Result<u32, PoolError>> = p.imap(picky, 0..30).collect();
        for (i, r) in out.iter().enumerate() {
            if i == 13 {
                assert_eq!(
                    r,
                    &Err(PoolError::Task(TaskError::Panicked {
                        message: "unlucky 13".into()
                    }))
                );
            } else {
                assert_eq!(r, &Ok(i as u32));
            }
        }
        // map reports the failure; the pool goes on.
        assert!(matches!(
            p.map(picky, 0..30),
            Err(PoolError::Task(TaskError::Panicked { .. }))
        ));
        assert_eq!(p.apply(picky, 12).unwrap(), 12);
        assert_eq!(p.replaced_workers(), 0, "a panic must not cost a worker");
    });
}

/// Serializes fine except for 0, which it refuses.
#[derive(Debug, PartialEq, Deserialize)]
struct NoZero(u32);

impl Serialize for NoZero {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 0 {
            return Err(serde::ser::Error::custom("zero cannot be sent"));
        }
        s.serialize_u32(self.0)
    }
}

#[test]
fn a_result_that_cannot_be_serialized_fails_that_task_only() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let out: Vec<Result<NoZero, PoolError>> = p.imap(NoZero, [3u32, 0, 5]).collect();
        assert_eq!(out[0], Ok(NoZero(3)));
        assert!(
            matches!(&out[1], Err(PoolError::Task(TaskError::Encode { message })) if message.starts_with("result")),
            "{:?}",
            out[1]
        );
        assert_eq!(out[2], Ok(NoZero(5)));
    });
}

#[test]
fn a_sigkilled_worker_fails_only_its_task_and_is_replaced() {
    with_deadline(DEADLINE, || {
        let p = builder(2).chunksize(1).build().unwrap();
        let victim_name = unique_name("pool-victim");
        let victim = Value::<u32>::create(&victim_name, 0).unwrap();
        // Task 5 publishes its worker's pid and then blocks until killed (bounded); the others
        // are quick.
        fn job(arg: (u32, String)) -> u32 {
            if arg.0 == 5 {
                let v = Value::<u32>::open(&arg.1).unwrap();
                v.set(std::process::id()).unwrap();
                std::thread::sleep(Duration::from_secs(30));
            }
            arg.0
        }
        let before: HashSet<u32> = p.pids().into_iter().collect();
        let mut results = Vec::new();
        let mut killed = 0;
        for r in p.imap(job, (0..40).map(|i| (i, victim_name.clone()))) {
            results.push(r);
            // Item 5 holds up the ordered iterator: once items 0..5 are in, kill its worker as
            // soon as it has published its pid.
            if results.len() == 5 && killed == 0 {
                eventually("the victim's pid", || victim.get().unwrap() != 0);
                killed = victim.get().unwrap();
                mproc_testkit::kill(killed as i32, rustix::process::Signal::KILL);
            }
        }
        assert_eq!(results.len(), 40);
        for (i, r) in results.iter().enumerate() {
            if i == 5 {
                assert_eq!(
                    r,
                    &Err(PoolError::Task(TaskError::WorkerDied {
                        pid: killed,
                        signal: Some(9),
                        code: None
                    }))
                );
            } else {
                assert_eq!(r, &Ok(i as u32), "item {i}");
            }
        }
        assert!(before.contains(&killed));
        // The pool still serves, with a replacement worker.
        assert_eq!(p.map(square, 0..100).unwrap()[99], 9801);
        assert_eq!(p.replaced_workers(), 1);
        let after: HashSet<u32> = p.pids().into_iter().collect();
        assert!(!after.contains(&killed));
        assert_eq!(after.len(), 2);
    });
}

#[test]
fn a_worker_that_exits_mid_task_is_reported_with_its_code() {
    with_deadline(DEADLINE, || {
        let p = pool(1);
        let r = p.apply(|code: i32| -> u32 { std::process::exit(code) }, 42);
        match r {
            Err(PoolError::Task(TaskError::WorkerDied { code, signal, .. })) => {
                assert_eq!((code, signal), (Some(42), None));
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        assert_eq!(p.apply(square, 3).unwrap(), 9);
    });
}

/// A realtime signal, which no signal enum names: its status must still be read and reported,
/// not lost after the kernel reaped the worker (which would leave the task waiting forever).
#[test]
fn a_worker_killed_by_a_realtime_signal_is_reported_with_it() {
    with_deadline(DEADLINE, || {
        let p = pool(1);
        let rt = mproc_testkit::realtime_signal();
        match p.apply(mproc_testkit::die_by_realtime_signal, 0) {
            Err(PoolError::Task(TaskError::WorkerDied { code, signal, .. })) => {
                assert_eq!((code, signal), (None, Some(rt)));
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        assert_eq!(p.apply(square, 3).unwrap(), 9);
        assert_eq!(p.stats().restarts.died, 1);
    });
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    with_deadline(DEADLINE, || {
        let p = builder(1)
            .chunksize(1)
            .max_tasks_per_child(2)
            .build()
            .unwrap();
        let pids = p.map(|_: u32| std::process::id(), 0..10).unwrap();
        let distinct: HashSet<u32> = pids.iter().copied().collect();
        assert_eq!(distinct.len(), 5, "{pids:?}");
        // Each worker ran exactly two tasks, in a row.
        for pair in pids.chunks(2) {
            assert_eq!(pair[0], pair[1]);
        }
        assert!(p.replaced_workers() >= 4);
    });
}

static INIT_VALUE: AtomicUsize = AtomicUsize::new(0);

#[test]
fn the_initializer_runs_in_every_worker_before_tasks() {
    with_deadline(DEADLINE, || {
        let p = builder(2)
            .chunksize(1)
            .initializer(|v: usize| INIT_VALUE.store(v, Ordering::SeqCst), 77)
            .build()
            .unwrap();
        let seen = p
            .map(|_: u8| INIT_VALUE.load(Ordering::SeqCst), 0..20)
            .unwrap();
        assert!(seen.iter().all(|&v| v == 77), "{seen:?}");
        // Not in the parent.
        assert_eq!(INIT_VALUE.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn a_failing_initializer_stops_the_pool_with_one_error() {
    with_deadline(DEADLINE, || {
        let t = Instant::now();
        let r = Pool::builder()
            .processes(3)
            .initializer(
                |what: String| panic!("cannot load {what}"),
                "model.bin".into(),
            )
            .threaded_fork(ThreadedFork::Allow)
            .build();
        match r {
            Err(StartError::InitializerFailed { message }) => {
                assert_eq!(message, "cannot load model.bin")
            }
            other => panic!("expected InitializerFailed, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(30));
    });
}

#[test]
fn apply_async_results_can_be_waited_for_and_timed_out() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let ev_name = unique_name("apply-async");
        let ev = Event::create(&ev_name).unwrap();
        let blocked = p.apply_async(wait_for, ev_name).unwrap();
        let quick = p.apply_async(square, 12).unwrap();
        assert_eq!(quick.get().unwrap(), 144);
        assert!(quick.ready() && quick.successful());
        assert_eq!(
            blocked.get_timeout(Duration::from_millis(50)),
            Err(WaitError::Timeout)
        );
        assert!(!blocked.ready());
        assert!(!blocked.wait_timeout(Duration::from_millis(10)));
        ev.set();
        let pid = blocked.get().unwrap();
        assert!(p.pids().contains(&pid));
        // get can be called again.
        assert_eq!(blocked.get().unwrap(), pid);
    });
}

#[test]
fn close_refuses_new_work_and_join_finishes_the_old() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let pending: Vec<_> = (0..20).map(|i| p.apply_async(square, i).unwrap()).collect();
        p.close();
        assert_eq!(
            p.apply(square, 1),
            Err(PoolError::Submit(SubmitError::Closed))
        );
        let pids = p.pids();
        p.join().unwrap();
        for (i, h) in pending.iter().enumerate() {
            assert_eq!(h.get().unwrap(), square(i as u64));
        }
        for pid in pids {
            assert!(!alive(pid), "worker {pid} outlived join");
        }
    });
}

#[test]
fn terminate_stops_busy_workers_within_a_bound() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let ev_name = unique_name("terminate");
        let _ev = Event::create(&ev_name).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| p.apply_async(wait_for, ev_name.clone()).unwrap())
            .collect();
        let pids = p.pids();
        let t = Instant::now();
        p.terminate();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        for h in &handles {
            assert_eq!(h.get(), Err(TaskError::Terminated));
        }
        for pid in pids {
            assert!(!alive(pid), "worker {pid} outlived terminate");
        }
        assert_eq!(
            p.apply(square, 2),
            Err(PoolError::Submit(SubmitError::Closed))
        );
    });
}

#[test]
fn dropping_a_pool_leaves_no_process_and_no_segment() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        // Results larger than a slot travel in the results queue's arena; leave some unread.
        let handles: Vec<_> = (0..6)
            .map(|_| p.apply_async(|n: usize| vec![1u8; n], 64 * 1024).unwrap())
            .collect();
        handles[0].wait();
        let pids = p.pids();
        drop(handles);
        drop(p);
        for pid in pids {
            assert!(!alive(pid), "worker {pid} outlived the pool");
        }
    });
}

/// A task that puts a 100 KB message into the user's named byte queue.
fn put_big(args: (String, u64)) -> u64 {
    let q = ByteQueue::open(&args.0).expect("open user queue");
    q.put(vec![(args.1 % 251) as u8; 100_000]).expect("put");
    args.1
}

#[test]
fn messages_tasks_put_in_a_user_queue_survive_retirement_join_and_drop() {
    with_deadline(DEADLINE, || {
        let name = unique_name("pool-user-queue");
        let q = QueueOptions::new()
            .capacity(64)
            .arena_bytes(16 << 20)
            .create_bytes(&name)
            .unwrap();
        // Every worker retires after one task: 20 workers put, exit and are reaped.
        let p = builder(2).max_tasks_per_child(1).build().unwrap();
        let ids = p.map(put_big, (0..20).map(|i| (name.clone(), i))).unwrap();
        assert_eq!(ids, (0..20).collect::<Vec<_>>());
        p.close();
        p.join().unwrap();
        // And a pool dropped right after its tasks put theirs.
        let p = pool(2);
        let h: Vec<_> = (20..30)
            .map(|i| p.apply_async(put_big, (name.clone(), i)).unwrap())
            .collect();
        for h in &h {
            h.get().unwrap();
        }
        drop(p);
        let mut got = HashSet::new();
        for _ in 0..30 {
            let m = q.get_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(m.len(), 100_000);
            assert!(m.iter().all(|&b| b == m[0]));
            got.insert(m[0]);
        }
        assert_eq!(got, (0..30u8).collect());
        assert_eq!(q.arena_used(), 0);
    });
}

fn total_len(v: Vec<u8>) -> usize {
    v.len()
}

#[test]
fn large_arguments_and_results_travel_in_the_arena_and_oversize_ones_fail_alone() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let args: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; 1 << 20]).collect();
        assert_eq!(p.map(total_len, args).unwrap(), vec![1 << 20; 8]);
        let big = p.apply(|n: usize| vec![3u8; n], 8 << 20).unwrap();
        assert_eq!(big.len(), 8 << 20);

        // A pool with small arenas: an argument or a result that cannot fit fails its task
        // with a typed error naming the cause; the pool goes on.
        let small = builder(1).arena_bytes(64 << 10).build().unwrap();
        match small.apply(total_len, vec![0u8; 100_000]) {
            Err(PoolError::Task(TaskError::Encode { message })) => {
                assert!(message.contains("arena"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        match small.apply(|n: usize| vec![1u8; n], 100_000) {
            Err(PoolError::Task(TaskError::Encode { message })) => {
                assert!(message.contains("arena"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(small.apply(square, 9), Ok(81));
    });
}

#[cfg(feature = "progress")]
#[test]
fn map_with_a_progress_bar_gives_the_same_results() {
    with_deadline(DEADLINE, || {
        let p = builder(2).chunksize(10).progress(true).build().unwrap();
        let expected: Vec<u64> = (0..500).map(square).collect();
        assert_eq!(p.map(square, 0..500).unwrap(), expected);
    });
}
