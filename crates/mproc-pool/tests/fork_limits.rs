//! A pool whose replacement worker cannot be forked for a while (the user is at its process
//! limit: fork fails with EAGAIN) waits and goes on once processes are available again; it
//! does not break for good.

use std::time::Duration;

use mproc_pool::{Pool, StartMethod, ThreadedFork};
use mproc_testkit::{fork_child, with_deadline};

fn my_pid(_: ()) -> u32 {
    std::process::id()
}

fn square(x: u64) -> u64 {
    x * x
}

/// A pool of `n` workers started by fork.
fn forked_pool(n: usize) -> Result<Pool, mproc_pool::StartError> {
    Pool::builder()
        .processes(n)
        .start_method(StartMethod::Fork)
        .threaded_fork(ThreadedFork::Allow)
        .build()
}

/// Runs as user `nobody` with a process limit; returns 0 when the pool recovered.
fn starve_and_restore() -> i32 {
    use mproc_testkit::{Forked, exit_now, fork};
    if !mproc_testkit::become_nobody() {
        return 2;
    }
    // Threads count against the limit too: room for the pool, then filled up below.
    if !mproc_testkit::set_limit(rustix::process::Resource::Nproc, 64) {
        return 3;
    }
    let Ok(pool) = forked_pool(1) else {
        return 4;
    };
    let Ok(worker) = pool.apply(my_pid, ()) else {
        return 5;
    };
    // The fork server that replacements come from must exist before the user is full.
    if pool.apply(square, 3) != Ok(9) {
        return 6;
    }
    // Fill the user's process table, and keep it full: a hog process forks a filler into
    // every slot that frees up (spinning on EAGAIN) until told to stop, so the slot the
    // killed worker gives back goes to the hog, not to the pool's replacement.
    let (fill_r, fill_w) = rustix::pipe::pipe().unwrap();
    let (stop_r, stop_w) = rustix::pipe::pipe().unwrap();
    let (full_r, full_w) = rustix::pipe::pipe().unwrap();
    // SAFETY: the hog only forks, polls, reads, waits and `_exit`s.
    let hog = match unsafe { fork() } {
        Ok(Forked::Child) => {
            drop((stop_w, full_r));
            let mut full_told = false;
            loop {
                let mut fds = [rustix::event::PollFd::new(
                    &stop_r,
                    rustix::event::PollFlags::IN,
                )];
                let now = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if rustix::event::poll(&mut fds, Some(&now)).is_ok_and(|n| n > 0) {
                    break;
                }
                // SAFETY: the filler only blocks on a read and `_exit`s.
                match unsafe { fork() } {
                    Ok(Forked::Child) => {
                        // Only the hog keeps the write end: its close ends every filler.
                        // SAFETY: closes this process's copy of a descriptor it does not use
                        // (the handle is the hog's; this filler `_exit`s without dropping it).
                        unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(&fill_w)) };
                        let mut b = [0u8; 1];
                        let _ = rustix::io::read(&fill_r, &mut b);
                        exit_now(0)
                    }
                    Ok(Forked::Parent(_)) => {}
                    Err(_) => {
                        if !full_told {
                            let _ = rustix::io::write(&full_w, b"f");
                            full_told = true;
                        }
                        std::thread::yield_now();
                    }
                }
            }
            drop(fill_w);
            while rustix::process::wait(rustix::process::WaitOptions::empty()).is_ok() {}
            exit_now(0)
        }
        Ok(Forked::Parent(child)) => child,
        Err(_) => return 7,
    };
    drop((fill_r, fill_w, stop_r, full_w));
    let mut b = [0u8; 1];
    if rustix::io::read(&full_r, &mut b) != Ok(1) {
        return 8;
    }
    // The worker dies; its replacement cannot be forked now.
    mproc_testkit::kill(worker as i32, rustix::process::Signal::KILL);
    let Ok(job) = pool.apply_async(square, 7) else {
        return 9;
    };
    // A while of failing forks (the pool retries with backoff meanwhile).
    let ran_anyway = job.wait_timeout(Duration::from_millis(500));
    // Processes come back: the replacement starts and takes the job.
    drop(stop_w);
    let _ = mproc_testkit::waitpid(hog);
    if ran_anyway {
        return match job.get() {
            Ok(_) => 10,  // the replacement won a freed slot: the test proved nothing
            Err(_) => 13, // the pool gave up on the first refused fork
        };
    }
    match job.get_timeout(Duration::from_secs(20)) {
        Ok(49) => {}
        _ => return 11,
    }
    if pool.apply(square, 5) != Ok(25) {
        return 12;
    }
    0
}

/// Both tests count user `nobody`'s processes: one at a time.
static NOBODY: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_pool_out_of_processes_for_a_while_recovers() {
    let _one_at_a_time = NOBODY.lock().unwrap_or_else(|e| e.into_inner());
    with_deadline(Duration::from_secs(60), || {
        fork_child(starve_and_restore).assert_success();
    });
}

/// Threads of user `nobody` now, all processes together (what `RLIMIT_NPROC` counts).
fn nobody_tasks() -> u64 {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        };
        if field("Uid:").as_deref() == Some("65534") {
            n += field("Threads:").and_then(|t| t.parse().ok()).unwrap_or(1);
        }
    }
    n
}

/// Exit codes of a run whose count of `nobody`'s tasks went stale before its forks (another
/// of the user's processes ended, or started, in between): it proves nothing, and is run
/// again.
const MORE_ROOM: i32 = 40;
const LESS_ROOM: i32 = 41;

/// Runs as `nobody` with room for two more tasks than it has: the forker thread and one
/// worker. Returns 0 when a pool of four failed to start with the failed fork's error and
/// left no child behind.
fn start_with_room_for_one_worker() -> i32 {
    if !mproc_testkit::become_nobody() {
        return 2;
    }
    if !mproc_testkit::set_limit(rustix::process::Resource::Nproc, nobody_tasks() + 2) {
        return 3;
    }
    let started = forked_pool(4);
    let Err(e) = started else {
        return MORE_ROOM;
    };
    if !matches!(&e, mproc_pool::StartError::Os(os)
        if os.errno == rustix::io::Errno::AGAIN && os.call == "fork")
    {
        eprintln!("not the worker's fork: {e}");
        return LESS_ROOM;
    }
    // The worker that was forked was killed and reaped with the failed start.
    if let Ok(left) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
        eprintln!("a child is left: {left:?}");
        return 6;
    }
    // Its slot is free again: a pool of one fits exactly.
    let Ok(pool) = forked_pool(1) else {
        return 7;
    };
    if pool.apply(square, 6) != Ok(36) || pool.join().is_err() {
        return 8;
    }
    0
}

/// The pool's workers are forked in one visit to the forker thread; when the user's process
/// limit stops that midway, the start fails with the fork's error and the workers already
/// forked do not outlive it.
#[test]
fn a_pool_that_cannot_fork_all_its_workers_fails_and_leaves_none() {
    let _one_at_a_time = NOBODY.lock().unwrap_or_else(|e| e.into_inner());
    with_deadline(Duration::from_secs(60), || {
        for _ in 0..5 {
            match fork_child(start_with_room_for_one_worker).wait().exit {
                mproc_testkit::Exit::Code(0) => return,
                mproc_testkit::Exit::Code(MORE_ROOM | LESS_ROOM) => continue,
                other => panic!("the run failed: {other:?}"),
            }
        }
        panic!("five runs found the user's task count moving under them");
    });
}
