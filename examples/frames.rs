//! Large messages through a queue's shared arena: a producer process writes 10,000 frames of
//! 64 KiB straight into shared memory with loans, the parent reads each one in place and
//! checks it. No frame is copied, and no system call or shared-memory object is made per
//! frame (`strace -f -e trace=openat,mmap,memfd_create` shows none after start-up).
//!
//! Run with `cargo run --release --example frames`.

use std::time::Instant;

use mproc::prelude::*;

const FRAMES: u64 = 10_000;
const FRAME: usize = 64 << 10;

/// Writes every frame in place: its number in the first 8 bytes, its low byte everywhere else.
fn produce(name: String) -> u64 {
    let q = ByteQueue::open(&name).expect("open queue");
    for n in 0..FRAMES {
        let mut frame = q.loan(FRAME).expect("loan");
        frame.fill(n as u8);
        frame[..8].copy_from_slice(&n.to_ne_bytes());
        frame.send().expect("send");
    }
    FRAMES
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mproc::init();
    let name = format!("mproc-example-frames-{}", std::process::id());
    // 64 slots, and 8 MiB of arena: up to 128 frames in flight.
    let q = QueueOptions::new()
        .capacity(64)
        .arena_bytes(8 << 20)
        .create_bytes(&name)?;
    let start = Instant::now();
    let mut producer = Process::spawn(produce, name)?;
    for n in 0..FRAMES {
        let frame = q.get_loan()?; // a view of the frame in shared memory
        let id = u64::from_ne_bytes(frame[..8].try_into()?);
        if id != n || frame.len() != FRAME || frame[FRAME - 1] != n as u8 {
            return Err(format!("frame {n} arrived as {id} ({} bytes)", frame.len()).into());
        }
    } // each frame's memory is free again when its guard drops
    let sent = producer.join()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{sent} frames of {} KiB in {secs:.3} s: {:.0} frames/s, {:.2} GiB/s",
        FRAME >> 10,
        sent as f64 / secs,
        (sent as f64 * FRAME as f64) / secs / (1u64 << 30) as f64
    );
    println!(
        "arena in use after the last frame: {} bytes",
        q.arena_used()
    );
    Ok(())
}
