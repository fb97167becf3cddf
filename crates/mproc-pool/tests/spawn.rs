//! The `Spawn` start method end to end: this test binary re-executes itself, and
//! `mproc_pool::init()` at the top of `main` turns each re-executed copy into a worker.
//!
//! The file has its own `main` (harness = false) because `init` must run first thing in
//! `main`, which libtest's generated `main` does not do.

use std::collections::HashSet;
use std::time::Duration;

use mproc_pool::{JoinError, Pool, PoolError, Process, StartError, StartMethod};
use mproc_testkit::with_deadline;

/// Set in the environment to make a re-executed child leave before reaching `init`.
const EXIT_BEFORE_INIT: &str = "MPROC_TEST_EXIT_BEFORE_INIT";

fn triple(x: u64) -> u64 {
    x * 3
}

fn spawn_process_returns_its_result() {
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(|v: Vec<String>| v.join("+"), vec!["a".into(), "b".into()])
        .unwrap();
    assert_ne!(p.pid(), std::process::id());
    assert_eq!(p.join().unwrap(), "a+b");
    assert_eq!(p.exit_status(), Some(0));

    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(
            |_: ()| -> u8 {
                // Expected: keep the default hook's report out of the test output.
                std::panic::set_hook(Box::new(|_| {}));
                panic!("spawned panic")
            },
            (),
        )
        .unwrap();
    assert!(matches!(p.join(), Err(JoinError::Panicked { message }) if message == "spawned panic"));
    assert_eq!(p.exit_status(), Some(1));
}

fn spawned_child_is_a_fresh_process() {
    // A static set in the parent is not seen by a spawned child (it would be by a fork).
    static MARK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    MARK.store(99, std::sync::atomic::Ordering::SeqCst);
    let read = |_: ()| MARK.load(std::sync::atomic::Ordering::SeqCst);
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(read, ())
        .unwrap();
    assert_eq!(p.join().unwrap(), 0);
    let mut p = Process::spawn(read, ()).unwrap();
    assert_eq!(p.join().unwrap(), 99);
}

fn spawn_pool_serves_and_replaces_a_killed_worker() {
    let pool = Pool::builder()
        .processes(2)
        .chunksize(1)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    assert_eq!(
        pool.map(triple, 0..500).unwrap(),
        (0..500).map(triple).collect::<Vec<_>>()
    );
    let pids: HashSet<u32> = pool
        .map(|_: u8| std::process::id(), 0..50)
        .unwrap()
        .into_iter()
        .collect();
    assert!(!pids.contains(&std::process::id()));

    let victim = pool.pids()[0];
    mproc_testkit::kill(victim as i32, rustix::process::Signal::KILL);
    // The pool notices, spawns a replacement, and keeps serving.
    assert_eq!(pool.map(triple, 0..100).unwrap()[99], 297);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pool.replaced_workers() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "killed worker never replaced"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!pool.pids().contains(&victim));
    let r: Result<u64, PoolError> = pool.apply(triple, 5);
    assert_eq!(r, Ok(15));
    pool.join().unwrap();
}

fn a_child_that_skips_init_is_reported() {
    // SAFETY: this harness is single-threaded here; nothing reads the environment concurrently.
    unsafe { std::env::set_var(EXIT_BEFORE_INIT, "1") };
    let r = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(triple, 1);
    // SAFETY: as above.
    unsafe { std::env::remove_var(EXIT_BEFORE_INIT) };
    match r {
        Err(e @ StartError::InitNotCalled(_)) => assert!(e.to_string().contains("mproc::init()")),
        other => panic!("expected InitNotCalled, got {other:?}"),
    }
}

fn busy(_: u32) -> u32 {
    std::thread::sleep(Duration::from_secs(120));
    0
}

fn spawned_workers_end_with_their_killed_parent() {
    for sig in [
        rustix::process::Signal::KILL,
        rustix::process::Signal::TERM,
        rustix::process::Signal::INT,
    ] {
        spawned_workers_end_with_a_parent_killed_by(sig);
    }
}

fn spawned_workers_end_with_a_parent_killed_by(sig: rustix::process::Signal) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let mem = mproc_segment::Segment::anonymous(64).unwrap();
    let pids: &[AtomicU32] = mem.view_slice(0, 4).unwrap();
    let mut parent = mproc_testkit::fork_child(|| {
        let pool = Pool::builder()
            .processes(2)
            .start_method(StartMethod::Spawn)
            .build()
            .unwrap();
        let _busy: Vec<_> = (0..2).map(|i| pool.apply_async(busy, i).unwrap()).collect();
        let p = Process::builder()
            .start_method(StartMethod::Spawn)
            .spawn(busy, 0)
            .unwrap();
        for (i, pid) in pool.pids().into_iter().enumerate() {
            pids[i].store(pid, Ordering::SeqCst);
        }
        pids[2].store(p.pid(), Ordering::SeqCst);
        pids[3].store(1, Ordering::SeqCst);
        std::mem::forget((pool, p));
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while pids[3].load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < end,
            "the parent never started its workers"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let ids: Vec<_> = pids[..3]
        .iter()
        .map(|p| {
            let pid = p.load(Ordering::SeqCst);
            mproc_segment::ProcessId::of(pid)
                .unwrap_or(mproc_segment::ProcessId { pid, start_time: 0 })
        })
        .collect();
    parent.signal(sig);
    parent.wait();
    for id in ids {
        assert!(
            mproc_testkit::gone_within(Duration::from_secs(1), || id.is_alive()),
            "spawned child {} outlived its killed parent",
            id.pid
        );
    }
}

fn main() {
    if std::env::var_os(EXIT_BEFORE_INIT).is_some() && std::env::var_os("MPROC_WORKER").is_some() {
        // Plays a program whose main does not call init first: it just ends.
        return;
    }
    mproc_pool::init();
    let tests: [(&str, fn()); 5] = [
        (
            "spawn_process_returns_its_result",
            spawn_process_returns_its_result,
        ),
        (
            "spawned_child_is_a_fresh_process",
            spawned_child_is_a_fresh_process,
        ),
        (
            "spawn_pool_serves_and_replaces_a_killed_worker",
            spawn_pool_serves_and_replaces_a_killed_worker,
        ),
        (
            "a_child_that_skips_init_is_reported",
            a_child_that_skips_init_is_reported,
        ),
        (
            "spawned_workers_end_with_their_killed_parent",
            spawned_workers_end_with_their_killed_parent,
        ),
    ];
    for (name, test) in tests {
        with_deadline(Duration::from_secs(120), test);
        println!("test {name} ... ok");
    }
}
