//! The body arena across real processes: byte messages of every size, loans, no file
//! descriptor or /dev/shm object per message, and a peer that scribbles over the queue while
//! others use it.

use std::time::Duration;

use mproc_queue::{ByteQueue, GetError, PodQueue, PutError, Queue, QueueOptions};
use mproc_segment::Segment;
use mproc_testkit::{Exit, Rng, fork_child, shm_entries, unique_name, with_deadline};

const LONG: Duration = Duration::from_secs(60);

/// A message whose every byte says which message it is.
fn message(id: u64, len: usize) -> Vec<u8> {
    vec![(id % 251) as u8; len]
}

#[test]
fn byte_messages_of_every_size_cross_processes_in_order() {
    with_deadline(LONG, || {
        let sizes = [0usize, 1, 119, 120, 121, 1024, 65_536, 1 << 20, 4 << 20];
        let q = QueueOptions::new()
            .capacity(8)
            .arena_bytes(8 << 20)
            .anonymous_bytes()
            .unwrap();
        let child = fork_child(|| {
            for round in 0..3u64 {
                for (i, &len) in sizes.iter().enumerate() {
                    if q.put_timeout(message(round * 100 + i as u64, len), LONG)
                        .is_err()
                    {
                        return 1;
                    }
                }
            }
            0
        });
        let mut buf = Vec::new();
        for round in 0..3u64 {
            for (i, &len) in sizes.iter().enumerate() {
                let id = round * 100 + i as u64;
                if i % 2 == 0 {
                    assert_eq!(q.get_into(&mut buf).unwrap(), len);
                    assert!(buf == message(id, len), "message {id} of {len} bytes");
                } else {
                    let m = q.get_loan_timeout(LONG).unwrap();
                    assert!(*m == message(id, len)[..], "loaned message {id}");
                }
            }
        }
        child.assert_success();
        assert_eq!(q.arena_used(), 0);
        assert!(q.is_empty());
    });
}

#[test]
fn loans_are_written_and_read_in_place_across_processes() {
    with_deadline(LONG, || {
        let q = QueueOptions::new()
            .capacity(4)
            .arena_bytes(1 << 20)
            .anonymous_bytes()
            .unwrap();
        let child = fork_child(|| {
            for id in 0..50u64 {
                let Ok(mut loan) = q.loan_timeout(100_000, LONG) else {
                    return 1;
                };
                loan.fill((id % 251) as u8);
                loan[..8].copy_from_slice(&id.to_ne_bytes());
                if loan.send_timeout(LONG).is_err() {
                    return 2;
                }
            }
            // A loan dropped unsent gives its space back and sends nothing.
            drop(q.loan(500_000).unwrap());
            0
        });
        for id in 0..50u64 {
            let m = q.get_loan_timeout(LONG).unwrap();
            assert_eq!(m.len(), 100_000);
            assert_eq!(u64::from_ne_bytes(m[..8].try_into().unwrap()), id);
            assert!(m[8..].iter().all(|&b| b == (id % 251) as u8));
        }
        child.assert_success();
        assert_eq!(q.try_get(), Err(GetError::Empty));
        assert_eq!(q.arena_used(), 0);
    });
}

#[test]
fn pod_loans_write_and_read_slots_in_place() {
    with_deadline(LONG, || {
        let q: PodQueue<[u64; 64]> = PodQueue::new(4).unwrap();
        let child = fork_child(|| {
            for i in 0..100u64 {
                let Ok(mut slot) = q.loan_timeout(LONG) else {
                    return 1;
                };
                slot.fill(i);
                slot.send();
            }
            // Dropped unsent: consumers pass over it; nothing arrives.
            drop(q.loan().unwrap());
            q.put([1000; 64]).map_or(2, |()| 0)
        });
        for i in 0..100u64 {
            let v = q.get_loan_timeout(LONG).unwrap();
            assert!(v.iter().all(|&x| x == i));
        }
        assert_eq!(q.get_timeout(LONG).unwrap(), [1000; 64]);
        child.assert_success();
        assert!(q.is_empty());
    });
}

#[test]
fn a_consumer_out_of_file_descriptors_still_gets_every_message() {
    with_deadline(LONG, || {
        let q: Queue<Vec<u8>> = QueueOptions::new().capacity(16).anonymous().unwrap();
        let bytes = ByteQueue::new(16).unwrap();
        for id in 0..10u64 {
            q.put(message(id, 50_000)).unwrap();
            bytes.put(message(id, 50_000)).unwrap();
        }
        let child = fork_child(|| {
            // No descriptor can be opened at all (EMFILE for any open).
            if !mproc_testkit::set_limit(rustix::process::Resource::Nofile, 0) {
                return 9;
            }
            if std::fs::File::open("/dev/null").is_ok() {
                return 8; // the limit did not take
            }
            for id in 0..10u64 {
                match (q.get(), bytes.get()) {
                    (Ok(a), Ok(b)) if a == message(id, 50_000) && b == a => {}
                    _ => return 1,
                }
            }
            // And puts need no descriptor either.
            match q.put(message(99, 70_000)) {
                Ok(()) => 0,
                Err(_) => 2,
            }
        });
        child.assert_success();
        assert_eq!(q.get().unwrap(), message(99, 70_000));
        assert_eq!(q.arena_used(), 0);
    });
}

#[test]
fn large_messages_create_no_shared_memory_objects() {
    with_deadline(LONG, || {
        let name = unique_name("arena-named");
        let q = QueueOptions::new()
            .capacity(16)
            .arena_bytes(4 << 20)
            .create_bytes(&name)
            .unwrap();
        let before = shm_entries("mproc");
        let child = fork_child(|| {
            let q = ByteQueue::open(&name).unwrap();
            for id in 0..1000u64 {
                if q.put_timeout(message(id, 64 << 10), LONG).is_err() {
                    return 1;
                }
            }
            0
        });
        for id in 0..1000u64 {
            assert_eq!(q.get_timeout(LONG).unwrap(), message(id, 64 << 10));
        }
        child.assert_success();
        // Other tests of this binary may create segments meanwhile; none of ours is new.
        let after = shm_entries("mproc");
        let new: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
        assert!(
            new.iter().all(|n| !n.starts_with("mproc-msg")),
            "per-message objects appeared: {new:?}"
        );
        drop(q);
        assert!(Segment::open_raw(&name).is_err(), "creator's drop unlinks");
    });
}

#[test]
fn too_large_and_full_are_typed_and_hand_the_bytes_back() {
    let q = QueueOptions::new()
        .capacity(8)
        .arena_bytes(16 << 10)
        .anonymous_bytes()
        .unwrap();
    let big = vec![1u8; 17 << 10];
    match q.put(&big[..]) {
        Err(PutError::TooLarge { value, size, max }) => {
            assert_eq!(value.len(), big.len());
            assert_eq!((size, max), (17 << 10, 16 << 10));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(q.loan(17 << 10), Err(PutError::TooLarge { .. })));
    q.put(vec![2u8; 12 << 10]).unwrap();
    let v = vec![3u8; 8 << 10];
    assert_eq!(q.try_put(v.clone()), Err(PutError::Full(v.clone())));
    assert!(matches!(q.try_loan(8 << 10), Err(PutError::Full(()))));
    q.close();
    assert_eq!(q.put(v.clone()), Err(PutError::Closed(v)));
    assert_eq!(q.get().unwrap(), vec![2u8; 12 << 10]);
    assert_eq!(q.get(), Err(GetError::Closed));
}

/// A vandal process writes random words over the whole queue (ring, slots, arena counters,
/// chunk words, bodies) while a producer and a consumer keep using it with timeouts. Neither
/// may crash, panic or hang: every call returns, with data or a typed error.
#[test]
fn a_peer_scribbling_over_a_live_queue_cannot_crash_or_hang_its_users() {
    with_deadline(Duration::from_secs(120), || {
        for round in 0..4u64 {
            let q = QueueOptions::new()
                .capacity(8)
                .arena_bytes(64 << 10)
                .anonymous_bytes()
                .unwrap();
            let words = q.segment().len() / 8;
            let vandal = fork_child(|| {
                // SAFETY: only this forked child (which does not use the queue otherwise)
                // touches the bytes through the segment; the users are other processes.
                let seg = unsafe { q.raw_segment() };
                let mem: &[std::sync::atomic::AtomicU64] = seg.view_slice(0, words).unwrap();
                let mut rng = Rng(0xD1CE ^ (round + 1));
                for _ in 0..20_000 {
                    let at = (rng.next_u64() % words as u64) as usize;
                    let v = match rng.next_u64() % 4 {
                        0 => rng.next_u64(),
                        1 => rng.next_u64() % 4096,
                        2 => u64::MAX - rng.next_u64() % 8,
                        _ => 0,
                    };
                    mem[at].store(v, std::sync::atomic::Ordering::Relaxed);
                    if rng.next_u64() % 4 == 0 {
                        std::thread::yield_now();
                    }
                }
                0
            });
            let short = Duration::from_millis(5);
            let producer = fork_child(|| {
                let mut rng = Rng(0xBEEF ^ (round + 1));
                for i in 0..400u64 {
                    let len = (rng.next_u64() % 20_000) as usize;
                    let _ = match i % 3 {
                        0 => q.put_timeout(message(i, len), short).map_err(drop),
                        1 => q.try_put(message(i, len)).map_err(drop),
                        _ => match q.loan_timeout(len, short) {
                            Ok(l) => l.try_send().map_err(drop),
                            Err(_) => Err(()),
                        },
                    };
                    let _ = (q.len(), q.is_full(), q.arena_used());
                }
                0
            });
            let consumer = fork_child(|| {
                for i in 0..400u64 {
                    if i % 2 == 0 {
                        let _ = q.get_timeout(short);
                    } else if let Ok(m) = q.get_loan_timeout(short) {
                        let _ = m.iter().map(|&b| u64::from(b)).sum::<u64>();
                    }
                    let _ = (q.len(), q.is_empty(), q.arena_used());
                }
                0
            });
            for (who, mut child) in [
                ("vandal", vandal),
                ("producer", producer),
                ("consumer", consumer),
            ] {
                let r = child.wait_deadline(Duration::from_secs(60));
                assert_eq!(
                    r.exit,
                    Exit::Code(0),
                    "round {round}: {who} crashed or failed"
                );
            }
        }
    });
}

/// Four producers and four consumers move 80,000 byte messages of 8 B to 64 KiB through one
/// small arena (it fills, wraps and pads constantly): every message arrives exactly once and
/// intact, and the arena is empty afterwards.
#[test]
fn four_by_four_mixed_sizes_exact_accounting() {
    use std::sync::atomic::{AtomicU8, Ordering};
    with_deadline(Duration::from_secs(120), || {
        const PER: u64 = 20_000;
        let q = QueueOptions::new()
            .capacity(32)
            .arena_bytes(256 << 10)
            .anonymous_bytes()
            .unwrap();
        let mem = Segment::anonymous((4 * PER) as usize).unwrap();
        let seen: &[AtomicU8] = mem.view_slice(0, (4 * PER) as usize).unwrap();
        let size = |id: u64| -> usize {
            let mut r = Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            match r.next_u64() % 10 {
                0 => 8 + ((r.next_u64() % 64) << 10) as usize, // up to 64 KiB
                1..=4 => 121 + (r.next_u64() % 4000) as usize, // arena, small
                _ => 8 + (r.next_u64() % 112) as usize,        // inline
            }
        };
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let q = &q;
                fork_child(move || {
                    for k in 0..PER {
                        let id = p * PER + k;
                        let mut m = vec![(id % 251) as u8; size(id)];
                        m[..8].copy_from_slice(&id.to_ne_bytes());
                        if q.put(m).is_err() {
                            return 1;
                        }
                    }
                    0
                })
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|c| {
                let q = &q;
                fork_child(move || {
                    let mut buf = Vec::new();
                    loop {
                        let got = if c % 2 == 0 {
                            q.get_into(&mut buf).map(|_| buf.clone())
                        } else {
                            q.get_loan().map(|m| m.to_vec())
                        };
                        match got {
                            Ok(m) => {
                                let id = u64::from_ne_bytes(m[..8].try_into().unwrap());
                                let ok = id < 4 * PER
                                    && m.len() == size(id)
                                    && m[8..].iter().all(|&b| b == (id % 251) as u8);
                                if !ok {
                                    return 3;
                                }
                                seen[id as usize].fetch_add(1, Ordering::SeqCst);
                            }
                            Err(GetError::Closed) => return 0,
                            Err(_) => return 2,
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.assert_success();
        }
        q.close();
        for c in consumers {
            c.assert_success();
        }
        for (id, s) in seen.iter().enumerate() {
            assert_eq!(s.load(Ordering::SeqCst), 1, "message {id}");
        }
        assert_eq!(q.arena_used(), 0);
    });
}

/// A default queue takes the messages people send: a 1 MiB `Vec<u8>` (its encoding is a few
/// bytes longer), three of them waiting at once; a message larger than the arena is refused
/// with both sizes named, the value handed back.
#[test]
fn a_default_queue_takes_three_one_mib_messages_and_names_both_sizes_when_too_large() {
    let q: Queue<Vec<u8>> = Queue::new(8).unwrap();
    let mib = vec![7u8; 1 << 20];
    for _ in 0..3 {
        q.put(mib.clone()).unwrap();
    }
    for _ in 0..3 {
        assert_eq!(q.get().unwrap(), mib);
    }
    let huge = vec![1u8; q.arena_bytes() as usize + 1];
    match q.try_put(huge.clone()) {
        Err(PutError::TooLarge { value, size, max }) => {
            assert_eq!(value, huge);
            assert!(size > huge.len() && max == q.arena_bytes(), "{size} {max}");
            let text = PutError::TooLarge {
                value: (),
                size,
                max,
            }
            .to_string();
            assert!(
                text.contains(&size.to_string()) && text.contains(&max.to_string()),
                "{text}"
            );
        }
        other => panic!("{:?}", other.map_err(|e| e.to_string())),
    }
}

/// A producer waiting for arena space counts in `blocked_producers` (what `mproc top` shows
/// as asleep and `metrics` exports), and stops counting when it gets in.
#[test]
fn a_producer_waiting_for_arena_space_counts_as_blocked() {
    with_deadline(Duration::from_secs(30), || {
        let q = QueueOptions::new()
            .capacity(8)
            .arena_bytes(64 * 1024)
            .anonymous_bytes()
            .unwrap();
        let big = q.arena_bytes() as usize * 3 / 4;
        let held = q.loan(big).unwrap();
        std::thread::scope(|s| {
            let producer = s.spawn(|| q.put_timeout(vec![1u8; big], Duration::from_secs(20)));
            let start = std::time::Instant::now();
            while q.stats().blocked_producers != 1 {
                assert!(start.elapsed() < Duration::from_secs(10), "never counted");
                std::thread::yield_now();
            }
            drop(held);
            assert!(producer.join().unwrap().is_ok());
        });
        assert_eq!(q.stats().blocked_producers, 0);
    });
}

/// `Queue<Vec<u8>>` and `Queue<String>` (one copy each way, postcard's bytes): every size,
/// inline and in the arena, from another process, exactly and in order; `get_into` reuses
/// its buffer.
#[test]
fn byte_and_string_queues_carry_every_size_across_processes() {
    with_deadline(Duration::from_secs(60), || {
        let sizes = [
            0usize,
            1,
            100,
            119,
            120,
            121,
            127,
            128,
            1000,
            65_536,
            1 << 20,
        ];
        let bytes: Queue<Vec<u8>> = Queue::new(4).unwrap();
        let text: Queue<String> = Queue::new(4).unwrap();
        let boxed: Queue<Box<[u8]>> = Queue::new(4).unwrap();
        let producer = fork_child(|| {
            for (i, &n) in sizes.iter().enumerate() {
                if bytes.put(vec![i as u8; n]).is_err()
                    || text.put("é".repeat(n / 2)).is_err()
                    || boxed.put(vec![!(i as u8); n].into_boxed_slice()).is_err()
                {
                    return 1;
                }
            }
            0
        });
        let mut buf = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(bytes.get().unwrap(), vec![i as u8; n], "size {n}");
            } else {
                assert_eq!(bytes.get_into(&mut buf).unwrap(), n);
                assert_eq!(buf, vec![i as u8; n], "size {n}");
            }
            assert_eq!(text.get().unwrap(), "é".repeat(n / 2), "size {n}");
            assert_eq!(&*boxed.get().unwrap(), &vec![!(i as u8); n][..], "size {n}");
        }
        producer.assert_success();
    });
}
