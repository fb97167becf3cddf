//! A task's process tree is the task's: processes a task starts end with it — when its time
//! limit kills its worker, when it is cancelled, and when the pool is dropped — for workers
//! forked by the pool and by the fork server (which replacements come from). Spawned workers
//! run the same `worker_main` and are watched by the same `ChildProc`; this harness cannot
//! spawn (it has no `mproc::init()`).

use std::time::Duration;

use mproc_pool::{Pool, StartMethod, TaskError, ThreadedFork};
use mproc_queue::PodQueue;
use mproc_segment::ProcessId;
use mproc_testkit::{unique_name, with_deadline};

/// Starts a grandchild that would sleep for a minute, reports its pid on the queue named
/// `queue`, then (if `hang`) sleeps past any time limit.
fn fork_grandchild((queue, hang): (String, bool)) -> u32 {
    let Ok(q) = PodQueue::<u32>::open(&queue) else {
        return 0;
    };
    // SAFETY: the child only sleeps and `_exit`s.
    let pid = match unsafe { mproc_testkit::fork() } {
        Ok(mproc_testkit::Forked::Child) => {
            std::thread::sleep(Duration::from_secs(60));
            mproc_testkit::exit_now(0)
        }
        Ok(mproc_testkit::Forked::Parent(child)) => child as u32,
        Err(_) => return 0,
    };
    let _ = q.put(pid);
    if hang {
        std::thread::sleep(Duration::from_secs(60));
    }
    pid
}

fn grandchild_of(q: &PodQueue<u32>) -> ProcessId {
    let pid = q
        .get_timeout(Duration::from_secs(20))
        .expect("the task reports");
    ProcessId::of(pid).expect("the grandchild runs")
}

fn gone(p: ProcessId) -> bool {
    mproc_testkit::gone_within(Duration::from_secs(10), || p.is_alive())
}

fn pool(method: StartMethod) -> Pool {
    Pool::builder()
        .processes(1)
        .start_method(method)
        .threaded_fork(ThreadedFork::Allow)
        .build()
        .unwrap()
}

fn each_method(f: impl Fn(StartMethod)) {
    for m in [StartMethod::Fork, StartMethod::ForkServer] {
        f(m);
    }
}

#[test]
fn a_timed_out_task_takes_its_descendants_with_it() {
    with_deadline(Duration::from_secs(120), || {
        each_method(|m| {
            let name = unique_name("tree-timeout");
            let q = PodQueue::<u32>::create(&name, 4).unwrap();
            let pool = pool(m);
            let r = pool
                .apply_async(fork_grandchild, (name.clone(), true))
                .unwrap()
                .timeout(Duration::from_millis(500));
            let g = grandchild_of(&q);
            assert!(matches!(r.get(), Err(TaskError::Timeout { .. })), "{m:?}");
            assert!(
                gone(g),
                "{m:?}: the grandchild outlived its task's time limit"
            );
            // The pool goes on (a replacement worker).
            assert_eq!(pool.apply(|x: u32| x + 1, 1).unwrap(), 2);
        });
    });
}

#[test]
fn a_cancelled_task_takes_its_descendants_with_it() {
    with_deadline(Duration::from_secs(120), || {
        each_method(|m| {
            let name = unique_name("tree-cancel");
            let q = PodQueue::<u32>::create(&name, 4).unwrap();
            let pool = pool(m);
            let r = pool
                .apply_async(fork_grandchild, (name.clone(), true))
                .unwrap();
            let g = grandchild_of(&q);
            assert!(r.cancel(), "{m:?}");
            assert!(gone(g), "{m:?}: the grandchild outlived its cancelled task");
        });
    });
}

#[test]
fn dropping_the_pool_takes_the_tasks_descendants_with_it() {
    with_deadline(Duration::from_secs(120), || {
        each_method(|m| {
            let name = unique_name("tree-drop");
            let q = PodQueue::<u32>::create(&name, 4).unwrap();
            let pool = pool(m);
            // The task returns; the process it started goes on running in the worker's group.
            let pid = pool.apply(fork_grandchild, (name.clone(), false)).unwrap();
            let g = grandchild_of(&q);
            assert_eq!(g.pid, pid);
            assert!(g.is_alive(), "{m:?}");
            drop(pool);
            assert!(gone(g), "{m:?}: the grandchild outlived the pool");
        });
    });
}
