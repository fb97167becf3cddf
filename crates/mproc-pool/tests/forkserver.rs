//! The fork server: pools and processes started from it, replacement workers of a `Fork`
//! pool forked from it while the parent has threads that hold locks, and its lifetime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mproc_pool::{JoinError, Pool, PoolError, Process, StartMethod, TaskError, ThreadedFork};
use mproc_segment::{ProcessId, Segment};
use mproc_testkit::{fork_child, with_deadline};
use rustix::process::Signal;

fn square(x: u64) -> u64 {
    x * x
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn pools_and_processes_run_from_the_fork_server() {
    with_deadline(Duration::from_secs(60), || {
        mproc_pool::start_forkserver().unwrap();
        let pool = Pool::builder()
            .processes(2)
            .start_method(StartMethod::ForkServer)
            .build()
            .unwrap();
        assert_eq!(pool.map(square, 0..100).unwrap()[99], 9801);
        for pid in pool.pids() {
            let parent = ppid_of(pid).unwrap();
            assert_ne!(parent, std::process::id(), "worker {pid} was forked by us");
        }
        let mut p = Process::builder()
            .start_method(StartMethod::ForkServer)
            .spawn(|s: String| s.len(), "forkserver".to_string())
            .unwrap();
        assert_eq!(p.join().unwrap(), 10);
        assert_eq!(p.exit_status(), Some(0));
        let mut p = Process::builder()
            .start_method(StartMethod::ForkServer)
            .spawn(
                |_: ()| -> u8 {
                    std::panic::set_hook(Box::new(|_| {}));
                    panic!("from the server's child")
                },
                (),
            )
            .unwrap();
        assert!(matches!(p.join(), Err(JoinError::Panicked { .. })));
        assert_eq!(p.exit_status(), Some(1));
        // Killed: the status comes back from the server.
        let mut p = Process::builder()
            .start_method(StartMethod::ForkServer)
            .spawn(
                |_: ()| {
                    std::thread::sleep(Duration::from_secs(60));
                },
                (),
            )
            .unwrap();
        p.kill().unwrap();
        assert!(matches!(p.join(), Err(JoinError::Signaled { signal: 9 })));
        pool.join().unwrap();
    });
}

/// A worker that dies on demand: item 0 kills its own process.
fn die_on_zero(x: u64) -> u64 {
    if x == 0 {
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    x
}

#[test]
fn replacements_come_from_the_fork_server_while_a_thread_holds_stdout() {
    with_deadline(Duration::from_secs(120), || {
        let pool = Pool::builder()
            .processes(2)
            .chunksize(1)
            .threaded_fork(ThreadedFork::Allow)
            .build()
            .unwrap();
        // A thread that keeps stdout's lock busy: a worker forked from this process at the
        // wrong moment would inherit it locked and hang when it flushes.
        let stop = Arc::new(AtomicBool::new(false));
        let printer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let out = std::io::stdout();
                while !stop.load(Ordering::Relaxed) {
                    // Held as a logger holds it while it formats a line; nothing is written,
                    // so the test's output (which the harness does not capture for a raw
                    // `stdout().lock()`) is not flooded.
                    let mut lock = out.lock();
                    let _ = lock.write_all(b"");
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                    drop(lock);
                }
            })
        };
        // And a thread that keeps the allocator busy.
        let allocator = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![0u8; 4096]);
                    if keep.len() > 256 {
                        keep.clear();
                    }
                }
            })
        };
        // 50 worker deaths, each replaced while the printer runs.
        let items = (0..400u64).map(|i| if i % 8 == 0 { 0 } else { i });
        let results: Vec<Result<u64, PoolError>> = pool.imap(die_on_zero, items).collect();
        stop.store(true, Ordering::Relaxed);
        printer.join().unwrap();
        allocator.join().unwrap();
        let died = results
            .iter()
            .filter(|r| matches!(r, Err(PoolError::Task(TaskError::WorkerDied { .. }))))
            .count();
        assert_eq!(died, 50);
        assert!(
            results
                .iter()
                .enumerate()
                .all(|(i, r)| i % 8 == 0 || r == &Ok(i as u64))
        );
        assert!(pool.replaced_workers() >= 50);
        for pid in pool.pids() {
            assert_ne!(
                ppid_of(pid),
                Some(std::process::id()),
                "a replacement was forked by us"
            );
        }
    });
}

fn fork_server_workers_end_with_a_parent_killed_by(sig: Signal) {
    {
        let mem = Segment::anonymous(64).unwrap();
        let pids: &[AtomicU32] = mem.view_slice(0, 3).unwrap();
        let mut parent = fork_child(|| {
            let pool = Pool::builder()
                .processes(2)
                .start_method(StartMethod::ForkServer)
                .build()
                .unwrap();
            let _busy: Vec<_> = (0..2)
                .map(|_| {
                    pool.apply_async(|_: u8| std::thread::sleep(Duration::from_secs(60)), 0)
                        .unwrap()
                })
                .collect();
            for (i, pid) in pool.pids().into_iter().enumerate() {
                pids[i].store(pid, Ordering::SeqCst);
            }
            pids[2].store(1, Ordering::SeqCst);
            std::mem::forget(pool);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let end = Instant::now() + Duration::from_secs(30);
        while pids[2].load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < end);
            std::thread::sleep(Duration::from_millis(2));
        }
        let ids: Vec<_> = pids[..2]
            .iter()
            .map(|p| ProcessId::of(p.load(Ordering::SeqCst)).unwrap())
            .collect();
        parent.signal(sig);
        parent.wait();
        for id in ids {
            assert!(
                mproc_testkit::gone_within(Duration::from_secs(1), || id.is_alive()),
                "worker {} outlived its parent",
                id.pid
            );
        }
    }
}

#[test]
fn fork_server_workers_end_with_their_parent() {
    with_deadline(Duration::from_secs(120), || {
        for sig in [Signal::KILL, Signal::TERM, Signal::INT] {
            fork_server_workers_end_with_a_parent_killed_by(sig);
        }
    });
}

#[test]
fn the_fork_server_does_not_keep_the_parents_files_open() {
    with_deadline(Duration::from_secs(60), || {
        // A fresh process (its own fork server) with a pipe open when the server starts.
        fork_child(|| {
            let (r, w) = rustix::pipe::pipe().unwrap();
            mproc_pool::start_forkserver().unwrap();
            let pool = Pool::builder()
                .processes(1)
                .start_method(StartMethod::ForkServer)
                .build()
                .unwrap();
            assert_eq!(pool.apply(square, 3), Ok(9));
            drop(w);
            // Neither the server nor its worker holds the write end: the reader sees EOF.
            let mut b = [0u8; 1];
            match rustix::io::read(&r, &mut b) {
                Ok(0) => 0,
                _ => 1,
            }
        })
        .assert_success();
    });
}
