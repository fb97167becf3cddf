//! Helpers shared by the pool's integration tests.
#![allow(dead_code)] // each test file uses some of them

use std::time::{Duration, Instant};

use mproc_pool::{Pool, PoolBuilder, ThreadedFork};
use mproc_sync::Event;

pub const DEADLINE: Duration = Duration::from_secs(90);

/// A builder for `n` workers that forks silently (the test harness has threads).
pub fn builder(n: usize) -> PoolBuilder {
    Pool::builder()
        .processes(n)
        .threaded_fork(ThreadedFork::Allow)
}

pub fn pool(n: usize) -> Pool {
    builder(n).build().unwrap()
}

pub fn alive(pid: u32) -> bool {
    mproc_testkit::exists(pid as i32)
}

pub fn square(x: u64) -> u64 {
    x * x
}

/// Blocks on a named event (bounded), then returns this worker's pid.
pub fn wait_for(name: String) -> u32 {
    let ev = Event::open(&name).expect("open event");
    assert!(ev.wait_timeout(Duration::from_secs(30)), "never released");
    std::process::id()
}

/// Waits until `cond` holds, checking every millisecond, for at most 30 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
