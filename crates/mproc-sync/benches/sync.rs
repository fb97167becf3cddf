//! Lock and Event costs. (Python's `multiprocessing.Lock` acquire+release takes ~222 ns on the
//! reference machine.)
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mproc_sync::{Event, Lock};

fn lock_uncontended(c: &mut Criterion) {
    let lock = Lock::new().expect("lock");
    c.bench_function("sync/Lock lock+unlock uncontended", |b| {
        b.iter(|| drop(lock.lock().expect("lock")))
    });
}

/// Event ping-pong between two processes: the parent sets `ping` and waits for `pong`; a
/// forked child does the reverse. One iteration is one round trip (two set→wake handoffs).
fn event_round_trip(c: &mut Criterion) {
    let ping = Event::new().expect("event");
    let pong = Event::new().expect("event");
    let stop = Event::new().expect("event");
    let child = mproc_testkit::fork_child(|| {
        loop {
            if !ping.wait_timeout(Duration::from_secs(60)) {
                return 1;
            }
            ping.clear();
            if stop.is_set() {
                return 0;
            }
            pong.set();
        }
    });
    c.bench_function("sync/Event set->wake round trip (2 processes)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                ping.set();
                pong.wait();
                pong.clear();
            }
            start.elapsed()
        })
    });
    stop.set();
    ping.set();
    child.assert_success();
}

criterion_group!(benches, lock_uncontended, event_round_trip);
criterion_main!(benches);
