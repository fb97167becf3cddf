//! Four worker processes fill disjoint parts of one named shared-memory segment; the parent
//! checks every cell. The workers are this same program, re-executed with `worker N` —
//! exactly how they would be separate binaries in a real deployment.
//!
//! Run with `cargo run --release --example shared_segment`.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use mproc::prelude::*;

const WORKERS: usize = 4;
const CELLS: usize = 1 << 20;

fn worker(name: &str, index: usize) -> Result<(), SegmentError> {
    // Opening checks the kind and the element type: a mismatch is an error, not garbage.
    let seg = Segment::open_for::<u64>(name, Kind::ARRAY)?;
    let cells: &[AtomicU64] = seg.view_slice(0, CELLS)?;
    let part = CELLS / WORKERS;
    for (i, cell) in cells[index * part..(index + 1) * part].iter().enumerate() {
        cell.store(((index * part + i) as u64).pow(2), Ordering::Relaxed);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "worker" {
        worker(&args[2], args[3].parse()?)?;
        return Ok(());
    }

    let name = format!("mproc-example-{}", std::process::id());
    // Zero-filled, mode 0600, unlinked when `seg` is dropped.
    let seg = Segment::create_for::<u64>(&name, Kind::ARRAY, CELLS as u64)?;
    let started = std::time::Instant::now();
    let mut children = Vec::new();
    for i in 0..WORKERS {
        children.push(
            Command::new(&args[0])
                .args(["worker", &name, &i.to_string()])
                .spawn()?,
        );
    }
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("worker exited with {status}").into());
        }
    }
    let cells: &[AtomicU64] = seg.view_slice(0, CELLS)?;
    let wrong = cells
        .iter()
        .enumerate()
        .filter(|(i, c)| c.load(Ordering::Relaxed) != (*i as u64).pow(2))
        .count();
    println!(
        "{WORKERS} worker processes filled {CELLS} cells of segment /{name} in {:.1?}; {wrong} wrong",
        started.elapsed()
    );
    let header = seg.header().expect("mproc segments have a header");
    println!(
        "header: kind {}, element {}, capacity {}, payload at byte {}",
        header.kind, header.element, header.capacity, header.payload_offset
    );
    if wrong > 0 {
        return Err("some cells were not written".into());
    }
    Ok(())
}
