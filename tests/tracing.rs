//! With the `tracing` feature, slow-path recoveries show up in a service's own logs: a lock
//! taken over from a dead holder, a queue slot skipped because its producer died, a pool
//! worker that died mid-task and was replaced. Every event is caused by a real process dying.

use std::io::{Read, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mproc::pool::{Pool, TaskError, ThreadedFork};
use mproc::prelude::*;
use mproc_testkit::{fork_child, with_deadline};

/// Everything the subscriber wrote, for all tests of this binary (each looks for its own pid).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt().with_writer(|| Capture).finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// Whether a captured line contains every one of `parts`, waiting up to `within` (the pool's
/// events come from its handler thread).
fn logged(parts: &[&str], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let text =
            String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        if text
            .lines()
            .any(|l| l.contains("mproc") && parts.iter().all(|p| l.contains(p)))
        {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("captured log:\n{text}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The peer token a child reports (see `mproc_segment::liveness`): what the events name.
fn peer_of(s: &mut std::os::unix::net::UnixStream) -> u32 {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).expect("the child reports its token");
    u32::from_ne_bytes(b)
}

#[test]
fn a_lock_taken_over_from_a_dead_holder_is_logged() {
    install();
    with_deadline(Duration::from_secs(60), || {
        let lock = Lock::new().unwrap();
        let (mut here, mut there) = std::os::unix::net::UnixStream::pair().unwrap();
        let child = fork_child(|| {
            std::mem::forget(lock.lock().unwrap());
            let _ = there.write_all(&mproc::segment::liveness::me().to_ne_bytes());
            0
        });
        let peer = peer_of(&mut here);
        child.assert_success();
        match lock.lock_timeout(Duration::from_secs(10)) {
            Err(LockError::OwnerDied(g)) => g.make_consistent(),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        assert!(logged(
            &["lock taken over", &format!("dead_holder_peer={peer}")],
            Duration::ZERO
        ));
    });
}

#[test]
fn a_slot_skipped_after_its_producer_died_is_logged_and_counted() {
    install();
    with_deadline(Duration::from_secs(60), || {
        let q: PodQueue<u64> = PodQueue::new(4).unwrap();
        // The child claims a slot to write in place, then exits without publishing it.
        let (mut here, mut there) = std::os::unix::net::UnixStream::pair().unwrap();
        let child = fork_child(|| {
            std::mem::forget(q.loan().unwrap());
            let _ = there.write_all(&mproc::segment::liveness::me().to_ne_bytes());
            0
        });
        let peer = peer_of(&mut here);
        child.assert_success();
        q.put(7).unwrap();
        // The dead slot comes first; the consumer skips it and takes the next.
        assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), 7);
        assert_eq!(q.stats().dead_skipped, 1);
        assert!(logged(
            &["queue slot skipped", &format!("producer_peer={peer}")],
            Duration::ZERO
        ));
    });
}

#[test]
fn a_pool_worker_dying_mid_task_is_logged_with_its_replacement() {
    install();
    with_deadline(Duration::from_secs(90), || {
        let p = Pool::builder()
            .processes(1)
            .threaded_fork(ThreadedFork::Allow)
            .build()
            .unwrap();
        let before = p.pids()[0];
        let r = p.apply(|code: i32| -> u32 { std::process::exit(code) }, 42);
        assert!(
            matches!(r, Err(PoolError::Task(TaskError::WorkerDied { .. }))),
            "{r:?}"
        );
        assert!(logged(
            &["pool task failed", &format!("worker_pid={before}")],
            Duration::from_secs(10)
        ));
        assert!(logged(
            &[
                "pool worker replaced",
                &format!("old_pid={before}"),
                "cause=\"died\""
            ],
            Duration::from_secs(10)
        ));
    });
}
