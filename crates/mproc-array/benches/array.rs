//! Summing a 64 MiB `Array<f64>` from another process beside summing a local `Vec<f64>`, and
//! `Value` increments (locked and atomic). Python's locked `Value` increment: ~1.2 µs on the
//! reference machine.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mproc_array::{Array, AtomicValue, Value};
use mproc_testkit::fork_child;

const N: usize = 8 << 20; // 8 Mi f64 = 64 MiB

fn sum_64_mib(c: &mut Criterion) {
    let mut g = c.benchmark_group("array/sum 64 MiB f64");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let local: Vec<f64> = (0..N).map(|i| i as f64).collect();
    g.bench_function("local Vec<f64> (baseline)", |b| {
        b.iter(|| std::hint::black_box(&local).iter().sum::<f64>())
    });
    let shared: Array<f64> = Array::new_from(&local).expect("array");
    let result: AtomicValue<u64> = AtomicValue::new(0).expect("value");
    g.bench_function("Array<f64> summed in another process", |b| {
        b.iter_custom(|iters| {
            let child = fork_child(|| {
                let start = Instant::now();
                for _ in 0..iters {
                    // SAFETY: nobody writes the array while the child sums it.
                    let s: f64 = unsafe { shared.as_slice_unsync() }.iter().sum();
                    std::hint::black_box(s);
                }
                result.store(start.elapsed().as_nanos() as u64);
                0
            });
            child.assert_success();
            Duration::from_nanos(result.load())
        })
    });
    g.finish();
}

fn value_increment(c: &mut Criterion) {
    let v: Value<u64> = Value::new(0).expect("value");
    c.bench_function("array/Value<u64> locked increment", |b| {
        b.iter(|| v.update(|x| *x += 1).expect("update"))
    });
    let a: AtomicValue<u64> = AtomicValue::new(0).expect("value");
    c.bench_function("array/AtomicValue<u64> fetch_add", |b| {
        b.iter(|| a.fetch_add(1))
    });
}

criterion_group!(benches, sum_64_mib, value_increment);
criterion_main!(benches);
