//! Pools and processes: `Pool.map`, `apply_async` round trips, start-up, against a bare
//! `fork` measured the same way.

use std::time::Instant;

use mproc::prelude::*;

use crate::figures::{CHILD_DEADLINE, per};
use crate::stats::Stat;

// ---- pool and processes ----

pub(crate) fn inc(x: u64) -> u64 {
    x + 1
}

pub(crate) fn pool(chunksize: Option<usize>) -> Pool {
    let b = Pool::builder()
        .processes(2)
        .threaded_fork(ThreadedFork::Allow);
    match chunksize {
        Some(c) => b.chunksize(c),
        None => b,
    }
    .build()
    .expect("pool")
}

pub(crate) fn pool_map(chunksize: Option<usize>, reps: usize) -> Option<Stat> {
    const N: u64 = 10_000;
    let p = pool(chunksize);
    p.map(inc, 0..100).expect("warm up");
    let s = Stat::repeat(reps, || {
        let t = Instant::now();
        let out = p.map(inc, 0..N).expect("map");
        assert_eq!(out[N as usize - 1], N);
        per(t.elapsed(), N, 1000.0)
    });
    p.join().expect("join");
    s
}

pub(crate) fn pool_apply(rounds: u64, reps: usize) -> Option<Stat> {
    let p = pool(None);
    p.apply(inc, 0).expect("warm up");
    let s = Stat::repeat(reps, || {
        let t = Instant::now();
        for i in 0..rounds {
            assert_eq!(
                p.apply_async(inc, i).expect("submit").get().expect("get"),
                i + 1
            );
        }
        per(t.elapsed(), rounds, 1000.0)
    });
    p.join().expect("join");
    s
}

pub(crate) fn pool_start(starts: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..starts {
        pool(None).join().expect("join");
    }
    per(t.elapsed(), starts as u64, 1000.0)
}

pub(crate) fn process_start(method: StartMethod, starts: usize) -> f64 {
    let b = Process::builder()
        .start_method(method)
        .threaded_fork(ThreadedFork::Allow);
    let t = Instant::now();
    for i in 0..starts as u64 {
        let mut p = b.spawn(inc, i).expect("spawn");
        assert_eq!(p.join_timeout(CHILD_DEADLINE).expect("join"), i + 1);
    }
    per(t.elapsed(), starts as u64, 1000.0)
}

/// A bare `fork` + `_exit` + `waitpid` of this (benchmark) process: the floor any start +
/// join by fork stands on.
pub(crate) fn bare_fork(starts: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..starts {
        // SAFETY: the child only calls `_exit` (always safe to call).
        match unsafe { libc::fork() } {
            // SAFETY: `_exit` is always safe to call.
            0 => unsafe { libc::_exit(0) },
            child => {
                assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
                let mut status = 0;
                // SAFETY: waits for our own child, writing its status into `status`.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            }
        }
    }
    per(t.elapsed(), starts as u64, 1000.0)
}
