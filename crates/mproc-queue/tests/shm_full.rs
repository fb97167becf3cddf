//! A named queue on a small or full `/dev/shm` (a container's is 64 MiB): an arena larger
//! than the filesystem is made, costs only the pages messages use, and a message that finds
//! no room is `PutError::OutOfSpace` with the value handed back — never SIGBUS, never a lost
//! message. Each test runs in a child with a size-limited tmpfs of its own on `/dev/shm`.

use std::time::Duration;

use mproc_queue::{ByteQueue, PutError, QueueOptions};
use mproc_segment::SegmentError;
use mproc_testkit::{Exit, fork_child, fork_with_shm_limit, unique_name, with_deadline};

const LONG: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// Bytes in use on the `/dev/shm` this process sees.
fn shm_used() -> u64 {
    let st = rustix::fs::statvfs("/dev/shm").expect("statvfs");
    (st.f_blocks - st.f_bfree) * st.f_frsize
}

/// Message `k`: 1 MiB, every byte `k`.
fn message(k: usize) -> Vec<u8> {
    vec![(k % 251) as u8; MIB]
}

#[test]
fn an_arena_larger_than_dev_shm_fills_it_and_then_refuses_with_out_of_space() {
    with_deadline(LONG, || {
        let child = fork_with_shm_limit(Some(16 * MIB as u64), || {
            let name = unique_name("shm-full");
            // A 64 MiB arena on a 16 MiB /dev/shm.
            let q = match QueueOptions::new()
                .capacity(64)
                .arena_bytes(64 * MIB)
                .create_bytes(&name)
            {
                Ok(q) => q,
                Err(_) => return 10,
            };
            // Only the ring, the bookkeeping and the first MiB of the body are reserved.
            if shm_used() > 4 * MIB as u64 {
                return 11;
            }
            // A consumer in another process takes the first 4 messages as they come, while
            // the producer reserves further pages.
            let mut consumer = fork_child(|| {
                let Ok(q) = ByteQueue::open(&name) else {
                    return 20;
                };
                for k in 0..4 {
                    match q.get_timeout(LONG) {
                        Ok(m) if m == message(k) => {}
                        _ => return 21,
                    }
                }
                0
            });
            let mut sent = 0;
            let refused = loop {
                match q.put_timeout(message(sent), LONG) {
                    Ok(()) => sent += 1,
                    Err(e) => break e,
                }
                if sent > 64 {
                    return 13;
                }
            };
            let code = consumer.wait_deadline(LONG).exit;
            if code != Exit::Code(0) {
                return 14;
            }
            // The refusal hands the message back and says how much room it needed.
            match refused {
                PutError::OutOfSpace { value, requested } => {
                    if value != message(sent) || requested == 0 {
                        return 15;
                    }
                }
                _ => return 16,
            }
            // The refusal came when /dev/shm was nearly full (16 MiB less the ring and the
            // bookkeeping: some 14 messages waiting, and the 4 taken, whose space the log may
            // have reused, came before).
            if sent < 12 || shm_used() < 13 * MIB as u64 {
                eprintln!("sent {sent}, /dev/shm holds {} bytes", shm_used());
                return 17;
            }
            // Everything sent is there, intact.
            for k in 4..sent {
                match q.get_timeout(LONG) {
                    Ok(m) if m == message(k) => {}
                    _ => return 18,
                }
            }
            // The reserved pages are reused once the queue is empty.
            for k in 0..20 {
                if q.put_timeout(message(k), LONG).is_err() || q.get().ok() != Some(message(k)) {
                    return 19;
                }
            }
            0
        });
        child.assert_success();
    });
}

#[test]
fn a_queue_that_does_not_fit_is_out_of_space_and_leaves_no_name() {
    with_deadline(LONG, || {
        let child = fork_with_shm_limit(Some(4 * MIB as u64), || {
            let name = unique_name("shm-small");
            // A ring of 65,536 slots of 1 KiB needs 64 MiB up front.
            match QueueOptions::new()
                .capacity(1 << 16)
                .slot_size(1024)
                .create_bytes(&name)
            {
                Err(SegmentError::OutOfSpace { .. }) => {}
                _ => return 10,
            }
            let left = std::fs::read_dir("/dev/shm").map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().contains(&name))
            });
            if left.unwrap_or(true) {
                return 11;
            }
            0
        });
        child.assert_success();
    });
}
