//! No orphans: whatever ends the parent of a pool or of a `Process` (SIGKILL, SIGTERM, SIGINT,
//! a normal exit, a panic), its workers and children end within moments — even busy ones. A
//! `Process` built with `daemon(false)` is the one that outlives its parent.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mproc_pool::{Pool, Process, ThreadedFork};
use mproc_segment::{ProcessId, Segment};
use mproc_testkit::{Exit, fork_child, with_deadline};
use rustix::process::Signal;

/// A task that keeps its worker busy far longer than the test.
fn busy(_: u32) -> u32 {
    std::thread::sleep(Duration::from_secs(120));
    0
}

/// How the parent ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Signal(Signal),
    Exit,
    Panic,
}

/// Waits until `who` is gone (a zombie counts as gone), for at most `limit`.
fn gone_within(who: ProcessId, limit: Duration) -> bool {
    mproc_testkit::gone_within(limit, || who.is_alive())
}

fn parent_ends(how: End) {
    // Pids the parent publishes: 2 pool workers, a daemonic Process, a daemon(false) Process.
    let mem = Segment::anonymous(64).unwrap();
    let pids: &[AtomicU32] = mem.view_slice(0, 5).unwrap();
    let mut parent = fork_child(|| {
        let pool = Pool::builder()
            .processes(2)
            .threaded_fork(ThreadedFork::Allow)
            .build()
            .unwrap();
        let _busy: Vec<_> = (0..2).map(|i| pool.apply_async(busy, i).unwrap()).collect();
        let daemonic = Process::builder()
            .threaded_fork(ThreadedFork::Allow)
            .spawn(busy, 0)
            .unwrap();
        let lasting = Process::builder()
            .threaded_fork(ThreadedFork::Allow)
            .daemon(false)
            .spawn(busy, 0)
            .unwrap();
        for (i, pid) in pool.pids().into_iter().enumerate() {
            pids[i].store(pid, Ordering::SeqCst);
        }
        pids[2].store(daemonic.pid(), Ordering::SeqCst);
        pids[3].store(lasting.pid(), Ordering::SeqCst);
        pids[4].store(1, Ordering::SeqCst); // published
        // Keep the handles alive: nothing is dropped or joined, the parent just ends.
        std::mem::forget((pool, daemonic, lasting));
        match how {
            End::Exit => std::process::exit(0),
            End::Panic => {
                std::panic::set_hook(Box::new(|_| {}));
                panic!("the parent panics")
            }
            End::Signal(_) => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
        }
    });
    let end = Instant::now() + Duration::from_secs(30);
    while pids[4].load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < end,
            "{how:?}: the parent never started its children"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let ids: Vec<ProcessId> = pids[..4]
        .iter()
        .map(|p| {
            let pid = p.load(Ordering::SeqCst);
            ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 })
        })
        .collect();
    if let End::Signal(sig) = how {
        parent.signal(sig);
    }
    let r = parent.wait();
    if let End::Signal(sig) = how {
        assert_eq!(r.exit, Exit::Signaled(sig.as_raw()), "{how:?}");
    }
    for (what, id) in ["worker", "worker", "daemonic process"].iter().zip(&ids) {
        assert!(
            gone_within(*id, Duration::from_secs(1)),
            "{how:?}: {what} {} outlived its parent",
            id.pid
        );
    }
    // The daemon(false) child runs on; stop it ourselves.
    let lasting = ids[3];
    assert!(
        lasting.is_alive(),
        "{how:?}: daemon(false) ended with its parent"
    );
    mproc_testkit::kill(lasting.pid as i32, Signal::KILL);
    assert!(gone_within(lasting, Duration::from_secs(5)));
}

#[test]
fn a_killed_parent_leaves_no_worker_behind() {
    with_deadline(Duration::from_secs(120), || {
        for sig in [Signal::KILL, Signal::TERM, Signal::INT] {
            parent_ends(End::Signal(sig));
        }
    });
}

#[test]
fn a_parent_that_exits_or_panics_leaves_no_worker_behind() {
    with_deadline(Duration::from_secs(120), || {
        parent_ends(End::Exit);
        parent_ends(End::Panic);
    });
}

#[test]
fn a_pool_built_by_a_thread_that_ends_keeps_its_workers() {
    // The parent-death signal follows the thread that forked: mproc must not rely on it.
    with_deadline(Duration::from_secs(60), || {
        let pool = std::thread::spawn(|| {
            Pool::builder()
                .processes(2)
                .threaded_fork(ThreadedFork::Allow)
                .build()
                .unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            pool.map(|x: u32| x + 1, 0..10).unwrap(),
            (1..11).collect::<Vec<_>>()
        );
        assert_eq!(pool.pids().len(), 2);
    });
}
