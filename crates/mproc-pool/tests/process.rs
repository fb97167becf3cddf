//! `Process` across real child processes: results, panics, exit codes, signals, timeouts,
//! cleanup. Every test runs under a deadline; every child is reaped (the handle kills and
//! reaps on drop).

use std::time::{Duration, Instant};

use mproc_pool::{JoinError, Process, StartError, StartMethod, ThreadedFork};
use mproc_sync::Event;
use mproc_testkit::{unique_name, with_deadline};

const DEADLINE: Duration = Duration::from_secs(60);

fn alive(pid: u32) -> bool {
    // Signal 0 tests for existence; a reaped child is gone.
    mproc_testkit::exists(pid as i32)
}

/// Waits (bounded) on a named event; a task's way to block until the test releases it.
fn wait_for(name: String) -> u32 {
    let ev = Event::open(&name).expect("open event");
    assert!(ev.wait_timeout(Duration::from_secs(30)), "never released");
    std::process::id()
}

#[test]
fn join_returns_the_functions_result() {
    with_deadline(DEADLINE, || {
        let mut p = Process::spawn(|v: Vec<u32>| v.iter().sum::<u32>(), vec![1, 2, 3, 4]).unwrap();
        assert_ne!(p.pid(), std::process::id());
        assert_eq!(p.join().unwrap(), 10);
        assert_eq!(p.exit_status(), Some(0));
        assert!(!p.is_alive());
        assert!(matches!(p.join(), Err(JoinError::AlreadyJoined)));
    });
}

#[test]
fn the_child_really_is_another_process() {
    with_deadline(DEADLINE, || {
        let mut p = Process::spawn(|_: ()| std::process::id(), ()).unwrap();
        let child_pid = p.pid();
        assert_eq!(p.join().unwrap(), child_pid);
    });
}

#[test]
fn a_panic_comes_back_with_its_message_and_exit_status_1() {
    with_deadline(DEADLINE, || {
        let mut p = Process::spawn(
            |n: u32| -> u32 {
                if n > 3 {
                    panic!("n = {n} is too large");
                }
                n
            },
            7,
        )
        .unwrap();
        match p.join() {
            Err(JoinError::Panicked { message }) => assert_eq!(message, "n = 7 is too large"),
            other => panic!("expected a panic, got {other:?}"),
        }
        assert_eq!(p.exit_status(), Some(1));
    });
}

#[test]
fn exit_n_is_reported_as_exited_with_code_n() {
    with_deadline(DEADLINE, || {
        let mut p = Process::spawn(|code: i32| -> u32 { std::process::exit(code) }, 7).unwrap();
        assert!(matches!(p.join(), Err(JoinError::Exited { code: 7 })));
        assert_eq!(p.exit_status(), Some(7));
    });
}

#[test]
fn kill_and_terminate_are_reported_as_negative_signals() {
    with_deadline(DEADLINE, || {
        let ev_name = unique_name("proc-kill");
        let _ev = Event::create(&ev_name).unwrap();
        let mut p = Process::spawn(wait_for, ev_name.clone()).unwrap();
        assert!(p.is_alive());
        assert_eq!(p.exit_status(), None);
        assert!(matches!(
            p.join_timeout(Duration::from_millis(50)),
            Err(JoinError::Timeout)
        ));
        p.kill().unwrap();
        assert!(matches!(
            p.join_timeout(Duration::from_secs(10)),
            Err(JoinError::Signaled { signal: 9 })
        ));
        assert_eq!(p.exit_status(), Some(-9));

        let mut p = Process::spawn(wait_for, ev_name).unwrap();
        p.terminate().unwrap();
        assert!(matches!(
            p.join_timeout(Duration::from_secs(10)),
            Err(JoinError::Signaled { signal: 15 })
        ));
        assert_eq!(p.exit_status(), Some(-15));
        // Signalling a reaped child is a no-op, not an error (and never hits a recycled pid).
        p.kill().unwrap();
    });
}

#[test]
fn a_large_result_travels_in_the_arena() {
    with_deadline(DEADLINE, || {
        let mut p = Process::spawn(|n: usize| vec![7u8; n], 4 << 20).unwrap();
        let v = p.join().unwrap();
        assert_eq!(v.len(), 4 << 20);
        assert!(v.iter().all(|&b| b == 7));
    });
}

#[test]
fn dropping_an_unjoined_process_kills_and_reaps_it() {
    with_deadline(DEADLINE, || {
        let ev_name = unique_name("proc-drop");
        let _ev = Event::create(&ev_name).unwrap();
        let p = Process::spawn(wait_for, ev_name).unwrap();
        let pid = p.pid();
        assert!(alive(pid));
        drop(p);
        assert!(!alive(pid), "child {pid} survived its handle");
    });
}

#[test]
fn the_child_sees_shared_memory_made_before_the_fork() {
    with_deadline(DEADLINE, || {
        let name = unique_name("proc-array");
        let arr = mproc_array::Array::<u64>::create(&name, 8).unwrap();
        arr.set(0, 5).unwrap();
        let mut p = Process::spawn(
            |name: String| {
                let arr = mproc_array::Array::<u64>::open(&name).unwrap();
                let seed = arr.get(0).unwrap();
                for i in 1..8 {
                    arr.set(i, seed * i as u64).unwrap();
                }
            },
            name,
        )
        .unwrap();
        p.join().unwrap();
        assert_eq!(arr.to_vec().unwrap(), [5, 5, 10, 15, 20, 25, 30, 35]);
    });
}

#[test]
fn threaded_fork_policy_refuse_is_a_typed_error() {
    // The test harness runs this on its own thread: the process has at least two.
    let keep = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
    let r = Process::builder()
        .threaded_fork(ThreadedFork::Refuse)
        .spawn(|x: u8| x, 1);
    assert!(
        matches!(r, Err(StartError::ThreadedFork { threads }) if threads >= 2),
        "{r:?}"
    );
    keep.join().unwrap();
}

#[test]
fn spawn_without_init_is_refused_with_a_clear_message() {
    // This test binary's main (libtest's) never calls mproc_pool::init().
    let r = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(|x: u8| x, 1);
    match r {
        Err(e @ StartError::InitNotCalled(_)) => {
            assert!(e.to_string().contains("mproc::init()"), "{e}")
        }
        other => panic!("expected InitNotCalled, got {other:?}"),
    }
}

#[test]
fn join_timeout_returns_promptly_and_the_child_can_still_be_joined() {
    with_deadline(DEADLINE, || {
        let ev_name = unique_name("proc-timeout");
        let ev = Event::create(&ev_name).unwrap();
        let mut p = Process::spawn(wait_for, ev_name).unwrap();
        let t = Instant::now();
        assert!(matches!(
            p.join_timeout(Duration::from_millis(100)),
            Err(JoinError::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(100));
        ev.set();
        let pid = p.pid();
        assert_eq!(p.join().unwrap(), pid);
    });
}

#[test]
fn exit_status_reads_through_a_shared_reference_from_several_threads() {
    with_deadline(Duration::from_secs(30), || {
        let p = Process::builder()
            .threaded_fork(ThreadedFork::Allow)
            .spawn(|code: i32| -> u32 { std::process::exit(code) }, 5)
            .unwrap();
        // Several threads poll the same process; exactly one of them reaps it, all see 5.
        let seen: Vec<Option<i32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let end = Instant::now() + Duration::from_secs(20);
                        while Instant::now() < end {
                            if let Some(code) = p.exit_status() {
                                return Some(code);
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        None
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(seen, vec![Some(5); 4]);
        assert!(!p.is_alive());
    });
}

/// No signal enum names realtime signals; the child's status must survive that, for
/// every start method (the fork server reaps its children itself and reports them).
#[test]
fn a_child_killed_by_a_realtime_signal_is_reported_with_it() {
    with_deadline(DEADLINE, || {
        let rt = mproc_testkit::realtime_signal();
        for method in [StartMethod::Fork, StartMethod::ForkServer] {
            let mut p = Process::builder()
                .start_method(method)
                .threaded_fork(ThreadedFork::Allow)
                .spawn(mproc_testkit::die_by_realtime_signal, 0)
                .unwrap();
            match p.join_timeout(Duration::from_secs(20)) {
                Err(JoinError::Signaled { signal }) => assert_eq!(signal, rt, "{method:?}"),
                other => panic!("{method:?}: expected Signaled, got {other:?}"),
            }
            assert_eq!(p.exit_status(), Some(-rt));
        }
    });
}

/// A program that ignores SIGCHLD has its children reaped by the kernel: `waitpid` then finds
/// no status (ECHILD). mproc must still see the end — a pool must fail the task and replace
/// the worker, a `Process` must join — never wait forever. Run in a forked child, since the
/// disposition is process-wide.
#[test]
fn children_of_a_program_that_ignores_sigchld_are_still_seen_ending() {
    with_deadline(DEADLINE, || {
        let mut child = mproc_testkit::fork_child(|| {
            // The harness captures this child's panic messages: print them to the real stderr.
            std::panic::set_hook(Box::new(|info| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "in the SIGCHLD-ignoring child: {info}");
            }));
            // SAFETY: SIG_IGN installs no handler; only this forked child is affected.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
            let mut p = Process::builder()
                .threaded_fork(ThreadedFork::Allow)
                .spawn(|x: u32| x + 1, 1)
                .expect("spawn 1");
            // The result came back before the status was lost: join still returns it.
            if p.join_timeout(Duration::from_secs(20)).ok() != Some(2) {
                return 10;
            }
            let mut p = Process::builder()
                .threaded_fork(ThreadedFork::Allow)
                .spawn(|code: i32| -> u32 { std::process::exit(code) }, 3)
                .expect("spawn 2");
            match p.join_timeout(Duration::from_secs(20)) {
                Err(JoinError::StatusUnknown) => {}
                _ => return 11,
            }
            let pool = mproc_pool::Pool::builder()
                .processes(1)
                .threaded_fork(ThreadedFork::Allow)
                .build()
                .expect("pool");
            match pool.apply(|code: i32| -> u32 { std::process::exit(code) }, 3) {
                Err(mproc_pool::PoolError::Task(mproc_pool::TaskError::WorkerDied {
                    signal: None,
                    code: None,
                    ..
                })) => {}
                _ => return 12,
            }
            // The replacement comes from the fork server, which reaps its own children (it
            // resets SIGCHLD), so this death is reported with its code.
            match pool.apply(|code: i32| -> u32 { std::process::exit(code) }, 4) {
                Err(mproc_pool::PoolError::Task(mproc_pool::TaskError::WorkerDied {
                    code: Some(4),
                    ..
                })) => {}
                _ => return 13,
            }
            if pool.apply(|x: u32| x * 2, 21) != Ok(42) {
                return 14;
            }
            0
        });
        let reaped = child.wait_deadline(Duration::from_secs(60));
        assert_eq!(reaped.exit, mproc_testkit::Exit::Code(0));
    });
}
