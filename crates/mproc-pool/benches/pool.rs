//! Pool and Process overheads (compare with `benches/python/mp_pool.py`, run on the same
//! machine): per-task cost of `map` on a trivial function at chunksize 1 and at the default
//! chunksize, `apply` round trip, pool start + shutdown, `Process` start + join by fork and by
//! spawn.
//!
//! Own `main` (harness = false): `mproc_pool::init()` must run first so the spawn start
//! method can re-execute this binary as a worker.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use mproc_pool::{Pool, Process, StartMethod, ThreadedFork};

fn inc(x: u64) -> u64 {
    x + 1
}

fn pool(chunksize: Option<usize>) -> Pool {
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

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_map_trivial");
    const N: u64 = 10_000;
    g.throughput(Throughput::Elements(N));
    for (label, chunk) in [("chunksize_1", Some(1)), ("chunksize_default", None)] {
        let p = pool(chunk);
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| p.map(inc, 0..N).expect("map"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pool");
    let p = pool(None);
    g.bench_function("apply_round_trip", |b| {
        b.iter(|| p.apply(inc, 1).expect("apply"))
    });
    drop(p);
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("start_and_shutdown_2_workers", |b| {
        b.iter(|| pool(None).join().expect("join"))
    });
    g.finish();

    let mut g = c.benchmark_group("process_start_join");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let builder = Process::builder()
            .start_method(method)
            .threaded_fork(ThreadedFork::Allow);
        g.bench_function(BenchmarkId::from_parameter(format!("{method:?}")), |b| {
            b.iter(|| builder.spawn(inc, 1).expect("spawn").join().expect("join"))
        });
    }
    g.finish();
}

fn main() {
    mproc_pool::init();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
