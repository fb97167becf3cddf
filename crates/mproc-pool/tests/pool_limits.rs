//! `Pool` limits and control across real worker processes: time limits, cancellation,
//! retries, the memory ceiling, the `_async` calls, and a named pool's board. Every test runs
//! under a deadline; pools terminate and reap on drop.

use std::time::Duration;

use mproc_pool::{PoolError, TaskError, WaitError};
use mproc_sync::Event;
use mproc_testkit::{unique_name, with_deadline};

mod common;
use common::*;

/// Sleeps `ms` milliseconds, then returns it.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_task_over_its_time_limit_fails_alone_and_its_worker_is_replaced() {
    with_deadline(DEADLINE, || {
        let p = builder(2)
            .chunksize(1)
            .task_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        // One task that would sleep for a minute among 1,000 quick ones.
        let items = (0..1000u64).map(|i| if i == 300 { 60_000 } else { 0 });
        let results: Vec<Result<u64, PoolError>> = p.imap(nap, items).collect();
        for (i, r) in results.iter().enumerate() {
            if i == 300 {
                assert_eq!(
                    r,
                    &Err(PoolError::Task(TaskError::Timeout { limit_ms: 500 }))
                );
            } else {
                assert_eq!(r, &Ok(0), "item {i}");
            }
        }
        eventually("a replacement", || p.stats().restarts.timed_out == 1);
        assert_eq!(p.apply(square, 7), Ok(49));
        let stats = p.stats();
        assert_eq!(stats.workers.len(), 2);
        assert_eq!(stats.restarts.died, 0);
        assert!(stats.tasks_done >= 999, "{stats:?}");
        // A per-task limit on a pool without one.
        let q = pool(1);
        let slow = q
            .apply_async(nap, 60_000)
            .unwrap()
            .timeout(Duration::from_millis(200));
        let quick = q.apply_async(nap, 1).unwrap();
        assert_eq!(slow.get(), Err(TaskError::Timeout { limit_ms: 200 }));
        assert_eq!(quick.get(), Ok(1), "the task queued behind ran elsewhere");
    });
}

#[test]
fn cancelling_removes_a_queued_task_and_stops_a_running_one() {
    with_deadline(DEADLINE, || {
        let p = pool(1);
        let ev_name = unique_name("cancel");
        let ev = Event::create(&ev_name).unwrap();
        let running = p.apply_async(wait_for, ev_name.clone()).unwrap();
        let queued: Vec<_> = (0..3).map(|i| p.apply_async(square, i).unwrap()).collect();
        // A queued task (it may sit in the worker's inbox or still wait in the parent).
        assert!(queued[1].cancel());
        assert_eq!(queued[1].get(), Err(TaskError::Cancelled));
        ev.set();
        assert!(running.get().is_ok());
        assert_eq!(queued[0].get(), Ok(0));
        assert_eq!(queued[2].get(), Ok(4));
        assert!(!queued[0].cancel(), "a finished task cannot be cancelled");

        // A running task: its worker is stopped and replaced.
        let before = p.pids();
        let started_name = unique_name("cancel-started");
        let started = Event::create(&started_name).unwrap();
        fn announce_then_sleep(name: String) -> u32 {
            Event::open(&name).expect("open event").set();
            std::thread::sleep(Duration::from_secs(60));
            0
        }
        let stuck = p.apply_async(announce_then_sleep, started_name).unwrap();
        let behind = p.apply_async(square, 5).unwrap();
        assert!(
            started.wait_timeout(Duration::from_secs(30)),
            "the task never started"
        );
        assert!(stuck.cancel());
        assert_eq!(stuck.get(), Err(TaskError::Cancelled));
        assert_eq!(behind.get(), Ok(25));
        eventually("a replacement", || {
            let now = p.pids();
            now.len() == 1 && now != before
        });
        assert_eq!(p.stats().restarts.cancelled, 1);
    });
}

#[test]
fn retries_run_a_task_again_after_its_worker_died() {
    with_deadline(DEADLINE, || {
        let name = unique_name("retries");
        let attempts = mproc_array::AtomicValue::<u32>::create(&name, 0).unwrap();
        fn die_once(name: String) -> u32 {
            let a = mproc_array::AtomicValue::<u32>::open(&name).unwrap();
            if a.fetch_add(1) == 0 {
                // SAFETY: kill(2) on our own pid; the first attempt dies as if SIGKILLed.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            a.load()
        }
        let p = builder(2).retries(1).build().unwrap();
        assert_eq!(p.apply(die_once, name.clone()), Ok(2));
        assert_eq!(attempts.load(), 2);
        // Without retries the death is reported.
        attempts.store(0);
        let q = pool(1);
        assert!(matches!(
            q.apply(die_once, name),
            Err(PoolError::Task(TaskError::WorkerDied { .. }))
        ));
    });
}

/// Leaks `mb` MiB of touched memory (the worker's resident size grows by that much).
fn bloat(mb: usize) -> usize {
    let v = vec![1u8; mb << 20];
    let touched = v.iter().step_by(4096).map(|&b| b as usize).sum();
    std::mem::forget(v);
    touched
}

#[test]
fn a_worker_that_outgrows_its_memory_ceiling_is_replaced_after_its_task() {
    with_deadline(DEADLINE, || {
        let p = builder(1).max_memory_per_child(150 << 20).build().unwrap();
        let first = p.pids()[0];
        assert_eq!(p.apply(bloat, 4), Ok(1024));
        assert_eq!(p.pids(), vec![first], "a small task keeps its worker");
        // The big task still answers; then its worker retires and a fresh one takes over.
        assert_eq!(p.apply(bloat, 200), Ok(51200));
        eventually("the retirement", || p.stats().restarts.memory == 1);
        assert_ne!(p.pids()[0], first);
        assert_eq!(p.apply(square, 3), Ok(9));
        let stats = p.stats();
        assert_eq!(stats.restarts.died, 0, "{stats:?}");
        assert_eq!(stats.tasks_done, 3, "{stats:?}");
    });
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[test]
fn map_async_starmap_async_and_per_call_chunksize() {
    with_deadline(DEADLINE, || {
        let p = pool(2);
        let expected: Vec<u64> = (0..500).map(square).collect();
        let m = p.map_async(square, 0..500).unwrap();
        let s = p.starmap_async(add, (0..100).map(|i| (i, 2 * i))).unwrap();
        assert_eq!(m.get().unwrap(), expected);
        assert!(m.ready());
        assert_eq!(m.get().unwrap(), expected, "get can be called again");
        assert_eq!(
            s.get().unwrap(),
            (0..100).map(|i| 3 * i).collect::<Vec<_>>()
        );
        assert_eq!(p.map_chunked(square, 0..500, 3).unwrap(), expected);
        // Waiting with a limit, then for good.
        let slow = p.map_async(nap, [300, 300]).unwrap();
        assert_eq!(
            slow.get_timeout(Duration::from_millis(10)),
            Err(WaitError::Timeout)
        );
        assert_eq!(slow.get().unwrap(), vec![300, 300]);
        // A failure is the first failed item's error.
        let bad = p
            .map_async(|x: u64| if x == 3 { panic!("three") } else { x }, 0..6)
            .unwrap();
        assert!(matches!(bad.get(), Err(TaskError::Panicked { .. })));
    });
}

/// A named pool's status board counts a task as soon as the call that waited for it
/// returns: `mproc top` and `metrics` never show a finished `apply` or `map` as not done.
#[test]
fn a_named_pools_board_counts_a_task_as_soon_as_its_call_returns() {
    with_deadline(Duration::from_secs(60), || {
        let name = unique_name("board-lag");
        let pool = builder(2).name(name.as_str()).build().unwrap();
        let done = || {
            let peek = mproc_segment::peek(&name).unwrap();
            let mut bytes = vec![0u8; peek.header.payload_len as usize];
            let n = peek.read_payload(0, &mut bytes).unwrap();
            mproc_pool::BoardSnapshot::from_bytes(&bytes[..n])
                .unwrap()
                .tasks_done
        };
        for i in 1..=20u64 {
            assert_eq!(pool.apply(square, i).unwrap(), i * i);
            assert_eq!(done(), i, "the board lags the returned apply");
        }
    });
}
