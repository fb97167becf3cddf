//! A pool's queues are memfds; another process of the same user must not be able to open
//! them through `/proc/PID/fd/N` and rewrite queued tasks. Workers are non-dumpable, and with
//! `undumpable_parent(true)` so is the pool's parent. A control process of the same user that
//! holds a memfd and is dumpable shows the attack would otherwise work.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mproc_pool::{Pool, ThreadedFork};
use mproc_segment::Segment;
use mproc_testkit::{Exit, fork_child, with_deadline};

fn become_nobody() -> bool {
    // After a uid change the kernel makes a process non-dumpable; make it an ordinary
    // process of that user again.
    mproc_testkit::become_nobody()
        && rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
            .is_ok()
}

/// How many memfds of process `pid` this process can open for writing through /proc.
fn memfds_opened(pid: u32) -> u32 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("memfd:"))
        })
        .filter(|e| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
                .is_ok()
        })
        .count() as u32
}

fn wait_for(flag: &AtomicU32) {
    let end = Instant::now() + Duration::from_secs(30);
    while flag.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < end, "a helper process never got ready");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_same_user_process_cannot_open_a_pools_queues() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: cannot run the processes as `nobody`; skipped");
        return;
    }
    with_deadline(Duration::from_secs(60), || {
        // [0..2] worker pids, [2] pool parent pid, [3] control pid, [4] pool ready, [5] control ready
        let mem = Segment::anonymous(64).unwrap();
        let w: &[AtomicU32] = mem.view_slice(0, 6).unwrap();
        let parent = fork_child(|| {
            if !become_nobody() {
                return 4;
            }
            let pool = Pool::builder()
                .processes(2)
                .threaded_fork(ThreadedFork::Allow)
                .undumpable_parent(true)
                .build()
                .unwrap();
            assert_eq!(pool.apply(|x: u32| x + 1, 1), Ok(2));
            for (i, pid) in pool.pids().into_iter().enumerate() {
                w[i].store(pid, Ordering::SeqCst);
            }
            w[2].store(std::process::id(), Ordering::SeqCst);
            w[4].store(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(60));
            0
        });
        let control = fork_child(|| {
            if !become_nobody() {
                return 4;
            }
            let _memfd = Segment::anonymous(4096).unwrap();
            w[3].store(std::process::id(), Ordering::SeqCst);
            w[5].store(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(60));
            0
        });
        wait_for(&w[4]);
        wait_for(&w[5]);
        let attacker = fork_child(|| {
            if !become_nobody() {
                return 64;
            }
            let pool_side: u32 = (0..3)
                .map(|i| memfds_opened(w[i].load(Ordering::SeqCst)))
                .sum();
            let control_side = memfds_opened(w[3].load(Ordering::SeqCst));
            // 1: the control was reachable (as expected); 2: something of the pool was.
            i32::from(control_side > 0) | (i32::from(pool_side > 0) << 1)
        });
        let mut attacker = attacker;
        let r = attacker.wait();
        drop((parent, control)); // killed and reaped
        assert_eq!(
            r.exit,
            Exit::Code(1),
            "expected only the dumpable control to be reachable (1); 3 means a pool queue was opened"
        );
    });
}
