//! Segment life cycle: create + open + drop of a 4 KiB named segment, and an anonymous one.
//! (Python's `SharedMemory(create=True)` + close + unlink takes about 52 µs on the reference
//! machine.)

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{Criterion, criterion_group, criterion_main};
use mproc::segment::Segment;

fn lifecycle(c: &mut Criterion) {
    let name = format!("mproc-bench-segment-{}", std::process::id());
    c.bench_function("segment/named 4KiB create+open+drop", |b| {
        b.iter(|| {
            let created = Segment::create(&name, 4096).expect("create");
            let opened = Segment::open(&name).expect("open");
            drop(opened);
            drop(created);
        })
    });
    c.bench_function("segment/anonymous 4KiB create+drop", |b| {
        b.iter(|| Segment::anonymous(4096).expect("anonymous"))
    });
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
