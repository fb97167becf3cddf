//! `mproc bridge`: a shared-memory queue's typed messages reach typed consumers of a queue
//! on a real redis-server, and back, through the command run as a process.

use std::process::{Command, Stdio};
use std::time::Duration;

use mproc_queue::{GetError, Queue};
use mproc_redis::Redis;
use mproc_testkit::{Child, RedisServer, fork_child, unique_name, with_deadline};

// The process is reaped through the returned test-kit `Child` (killed if the test fails).
#[allow(clippy::zombie_processes)]
fn bridge(from: &str, to: &str) -> (Child, std::process::ChildStdout) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mproc"));
    cmd.args(["bridge", from, to])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut std_child = cmd.spawn().expect("run mproc bridge");
    let out = std_child.stdout.take().expect("stdout");
    (Child::from_pid(std_child.id() as i32), out)
}

fn read_all(mut out: std::process::ChildStdout) -> String {
    use std::io::Read;
    let mut s = String::new();
    out.read_to_string(&mut s).expect("read stdout");
    s
}

#[test]
fn a_shm_queue_reaches_a_typed_redis_consumer_and_back() {
    with_deadline(Duration::from_secs(60), || {
        let server = RedisServer::start();
        let local = unique_name("bridge-out");
        let q = Queue::<(u32, String)>::create(&local, 8).unwrap();
        let to = format!("{}?queue=remote&capacity=16", server.url());
        // Made beforehand, as the remote side would: the bridge opens it (same type and
        // capacity) rather than creating it.
        Redis::connect(&server.url())
            .unwrap()
            .queue("remote")
            .capacity(16)
            .create::<(u32, String)>()
            .unwrap();
        let (mut b, out) = bridge(&format!("shm:{local}"), &to);
        // The consumer on "another host": typed, through Redis only.
        let url = server.url();
        let consumer = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let remote = r.queue("remote").open::<(u32, String)>().unwrap();
            let mut n = 0;
            loop {
                match remote.get() {
                    Ok((i, s)) if s == format!("m{i}") && i == n => n += 1,
                    Ok(_) => return 2,
                    Err(GetError::Closed) => return if n == 100 { 0 } else { 3 },
                    Err(_) => return 4,
                }
            }
        });
        for i in 0..100u32 {
            q.put((i, format!("m{i}"))).unwrap();
        }
        q.close();
        consumer.assert_success();
        assert_eq!(b.wait().exit, mproc_testkit::Exit::Code(0));
        assert!(read_all(out).contains("forwarded 100 messages"));

        // And back: a typed Redis producer, the bridge, a typed shm consumer.
        let back = unique_name("bridge-in");
        let inq = Queue::<(u32, String)>::create(&back, 8).unwrap();
        let r = Redis::connect(&server.url()).unwrap();
        let src = r.queue("upstream").create::<(u32, String)>().unwrap();
        let (mut b, out) = bridge(
            &format!("{}?queue=upstream", server.url()),
            &format!("shm:{back}"),
        );
        for i in 0..50u32 {
            src.put((i, format!("m{i}"))).unwrap();
        }
        src.close().unwrap();
        for i in 0..50u32 {
            assert_eq!(inq.get().unwrap(), (i, format!("m{i}")));
        }
        assert_eq!(inq.get(), Err(GetError::Closed));
        assert_eq!(b.wait().exit, mproc_testkit::Exit::Code(0));
        assert!(read_all(out).contains("forwarded 50 messages"));
    });
}

#[test]
fn a_bridge_to_a_missing_queue_or_a_bad_url_fails_with_a_message() {
    for (from, to) in [
        ("shm:mproc-no-such-queue-x", "redis://127.0.0.1:1/?queue=q"),
        ("tcp://x", "shm:y"),
        ("shm:a", "redis://127.0.0.1:1/"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
            .args(["bridge", from, to])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("mproc: "), "{err}");
    }
}
