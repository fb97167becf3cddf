//! Queues across real processes: a many-process stress run, blocking and timeouts,
//! close/drain, JoinableQueue, a 64 MiB message through the arena, wrong-type opens.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use mproc_queue::{GetError, JoinableQueue, PodQueue, PutError, Queue, QueueOptions};
use mproc_segment::{Segment, SegmentError};
use mproc_testkit::{Child, fork_child, unique_name};
use serde::{Deserialize, Serialize};

const LONG: Duration = Duration::from_secs(60);

/// `producers` processes put `per_producer` tagged items each into one queue; `consumers`
/// processes take them until it is closed. Every item must arrive exactly once, and each
/// producer's items in order at any one consumer. `batched`: producers use `put_many` with
/// batches of 1 to 50 items and consumers `get_many` of up to 64 (the run paths).
fn stress(producers: u64, consumers: usize, per_producer: u64, batched: bool) {
    let total = (producers * per_producer) as usize;
    let q: PodQueue<u64> = PodQueue::new(4096).unwrap();
    // One counter per item, in shared memory: how many times it was received.
    let seen_mem = Segment::anonymous(total).unwrap();
    let seen: &[AtomicU8] = seen_mem.view_slice(0, total).unwrap();

    let producer_children: Vec<Child> = (0..producers)
        .map(|p| {
            let q = &q;
            fork_child(move || {
                if batched {
                    let mut i = 0;
                    let mut size = p + 1;
                    while i < per_producer {
                        size = size * 7 % 50 + 1;
                        let end = (i + size).min(per_producer);
                        let batch: Vec<u64> = (i..end).map(|i| p << 32 | i).collect();
                        if q.put_many(&batch).is_err() {
                            return 1;
                        }
                        i = end;
                    }
                    return 0;
                }
                for i in 0..per_producer {
                    if q.put(p << 32 | i).is_err() {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    let consumer_children: Vec<Child> = (0..consumers)
        .map(|_| {
            fork_child(|| {
                let mut last = vec![None::<u64>; producers as usize];
                let mut batch = Vec::with_capacity(64);
                loop {
                    let got = if batched {
                        batch.clear();
                        q.get_many(&mut batch, 64).map(|_| ())
                    } else {
                        q.get().map(|item| {
                            batch.clear();
                            batch.push(item);
                        })
                    };
                    match got.map(|()| batch.iter().copied()) {
                        Ok(items) => {
                            for item in items {
                                let (p, i) = ((item >> 32) as usize, item & 0xffff_ffff);
                                if p >= producers as usize || i >= per_producer {
                                    return 2;
                                }
                                // Each producer's items arrive in order at any one consumer.
                                if last[p].is_some_and(|l| l >= i) {
                                    return 3;
                                }
                                last[p] = Some(i);
                                seen[p * per_producer as usize + i as usize]
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(GetError::Closed) => return 0,
                        Err(_) => return 4,
                    }
                }
            })
        })
        .collect();
    for mut p in producer_children {
        assert_eq!(
            p.wait_deadline(Duration::from_secs(600)).exit,
            mproc_testkit::Exit::Code(0)
        );
    }
    q.close();
    for mut c in consumer_children {
        assert_eq!(
            c.wait_deadline(Duration::from_secs(600)).exit,
            mproc_testkit::Exit::Code(0)
        );
    }
    let wrong: Vec<usize> = (0..total)
        .filter(|&i| seen[i].load(Ordering::Relaxed) != 1)
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "items not received exactly once: {wrong:?}"
    );
    assert!(q.is_empty());
}

#[test]
fn four_producers_three_consumers_deliver_a_million_items_exactly_once_in_order() {
    stress(4, 3, 250_000, false);
}

#[test]
fn runs_of_put_many_and_get_many_deliver_exactly_once_in_order() {
    stress(4, 3, 250_000, true);
}

/// Eight producers and eight consumers on this 2-core machine, 10,000,000 items (a few seconds
/// even in a debug build). `MPROC_LOAD_ITEMS=N` changes the count.
#[test]
fn eight_producers_eight_consumers_exact_accounting() {
    let total: u64 = std::env::var("MPROC_LOAD_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let started = Instant::now();
    stress(8, 8, total / 8, false);
    println!(
        "8x8 load: {} items exactly once in {:.1?}",
        total / 8 * 8,
        started.elapsed()
    );
}

#[test]
fn full_empty_timeout_and_close_paths() {
    let q: PodQueue<u32> = PodQueue::new(4).unwrap();
    assert_eq!(q.capacity(), 4);
    for i in 0..4 {
        q.try_put(i).unwrap();
    }
    assert!(q.is_full());
    assert_eq!(q.try_put(9), Err(PutError::Full(9)));
    let start = Instant::now();
    assert_eq!(
        q.put_timeout(9, Duration::from_millis(30)),
        Err(PutError::Timeout(9))
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(q.len(), 4);
    let mut out = Vec::new();
    assert_eq!(q.get_many(&mut out, 10), Ok(4));
    assert_eq!(out, vec![0, 1, 2, 3]);
    assert_eq!(q.try_get(), Err(GetError::Empty));
    assert_eq!(
        q.get_timeout(Duration::from_millis(30)),
        Err(GetError::Timeout)
    );

    // Close: puts fail with the value back, gets drain then report Closed.
    q.put_many(&[5, 6]).unwrap();
    q.close();
    assert_eq!(q.put(7), Err(PutError::Closed(7)));
    assert_eq!(q.get(), Ok(5));
    assert_eq!(q.get(), Ok(6));
    assert_eq!(q.get(), Err(GetError::Closed));
    assert_eq!(q.try_get(), Err(GetError::Closed));
}

#[test]
fn blocked_get_and_put_wake_across_processes() {
    let q: PodQueue<u64> = PodQueue::new(1).unwrap();
    // A consumer blocks on the empty queue; a put from the parent wakes it.
    let consumer = fork_child(|| match q.get_timeout(LONG) {
        Ok(42) => 0,
        _ => 1,
    });
    q.put(42).unwrap();
    consumer.assert_success();
    // A producer blocks on the full queue; a get from the parent makes room.
    q.put(1).unwrap();
    let producer = fork_child(|| match q.put_timeout(2, LONG) {
        Ok(()) => 0,
        Err(_) => 1,
    });
    assert_eq!(q.get_timeout(LONG), Ok(1));
    assert_eq!(q.get_timeout(LONG), Ok(2));
    producer.assert_success();
    // A consumer blocked on an empty queue is released by close.
    let waiter = fork_child(|| match q.get() {
        Err(GetError::Closed) => 0,
        _ => 1,
    });
    q.close();
    waiter.assert_success();
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Job {
    id: u64,
    name: String,
    weights: Vec<f32>,
}

#[test]
fn named_serde_queue_between_processes_inline_and_out_of_line() {
    let name = unique_name("queue-serde");
    let q: Queue<Job> = QueueOptions::new().capacity(8).create(&name).unwrap();
    let child = fork_child(|| {
        let q: Queue<Job> = Queue::open(&name).unwrap();
        for id in 0..20u64 {
            // Alternate small (inline) and large (arena) messages.
            let weights = vec![id as f32; if id % 2 == 0 { 2 } else { 5000 }];
            let job = Job {
                id,
                name: format!("job-{id}"),
                weights,
            };
            if q.put_timeout(job, LONG).is_err() {
                return 1;
            }
        }
        0
    });
    for id in 0..20u64 {
        let job = q.get_timeout(LONG).unwrap();
        assert_eq!(job.id, id);
        assert_eq!(job.name, format!("job-{id}"));
        assert_eq!(job.weights.len(), if id % 2 == 0 { 2 } else { 5000 });
    }
    child.assert_success();
    // Every body the child wrote was freed by the reader.
    assert_eq!(q.arena_used(), 0);
}

/// A message type people write: byte payloads in a struct field, an enum and an `Option`,
/// with nothing annotated (the codec copies each in one piece).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Part {
    Header(u32),
    Body(Vec<u8>),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Frame {
    id: u64,
    pixels: Vec<u8>,
    parts: Vec<Part>,
    thumbnail: Option<Vec<u8>>,
}

fn frame(id: u64) -> Frame {
    let size = if id % 2 == 0 { 10 } else { 200_000 };
    Frame {
        id,
        pixels: (0..size).map(|i| (i as u64 * 31 + id) as u8).collect(),
        parts: vec![Part::Header(id as u32), Part::Body(vec![id as u8; 3000])],
        thumbnail: (id % 3 == 0).then(|| vec![7; 500]),
    }
}

#[test]
fn structs_with_byte_payloads_cross_processes_intact() {
    let q: Queue<Frame> = QueueOptions::new()
        .capacity(8)
        .arena_bytes(4 << 20)
        .anonymous()
        .unwrap();
    let child = fork_child(|| {
        for id in 0..12u64 {
            if q.put_timeout(frame(id), LONG).is_err() {
                return 1;
            }
        }
        0
    });
    for id in 0..12u64 {
        assert_eq!(q.get_timeout(LONG).unwrap(), frame(id));
    }
    child.assert_success();
    assert_eq!(q.arena_used(), 0);
}

#[test]
fn a_64_mib_message_round_trips_through_the_arena() {
    let q: Queue<Vec<u8>> = QueueOptions::new()
        .capacity(2)
        .arena_bytes(128 << 20)
        .anonymous()
        .unwrap();
    let child = fork_child(|| {
        let big: Vec<u8> = (0..64 << 20).map(|i: usize| (i % 251) as u8).collect();
        match q.put_timeout(big, LONG) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    });
    let got = q.get_timeout(LONG).unwrap();
    child.assert_success();
    assert_eq!(got.len(), 64 << 20);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(q.arena_used(), 0);
}

#[test]
fn a_message_larger_than_the_arena_is_refused_and_handed_back() {
    let q: Queue<Vec<u8>> = QueueOptions::new()
        .capacity(4)
        .arena_bytes(64 << 10)
        .anonymous()
        .unwrap();
    assert_eq!(q.arena_bytes(), 64 << 10);
    let big = vec![9u8; 100_000];
    match q.put(big.clone()) {
        Err(PutError::TooLarge { value, size, max }) => {
            assert_eq!(value, big);
            assert!(size > 100_000 && max == 64 << 10, "{size} {max}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Nothing was stored: the queue is as it was.
    assert!(q.is_empty());
    assert_eq!(q.arena_used(), 0);
}

#[test]
fn a_full_arena_waits_like_a_full_queue_and_loses_nothing() {
    let q: Queue<Vec<u8>> = QueueOptions::new()
        .capacity(64)
        .arena_bytes(64 << 10)
        .anonymous()
        .unwrap();
    // Two 20 KB messages fit; a third does not until one is taken.
    q.put(vec![1u8; 20_000]).unwrap();
    q.put(vec![2u8; 20_000]).unwrap();
    let third = vec![3u8; 30_000];
    assert_eq!(q.try_put(third.clone()), Err(PutError::Full(third.clone())));
    assert_eq!(
        q.put_timeout(third.clone(), Duration::from_millis(20)),
        Err(PutError::Timeout(third.clone()))
    );
    // A blocked put in another process goes through once a consumer frees space.
    let child = fork_child(|| match q.put_timeout(vec![3u8; 30_000], LONG) {
        Ok(()) => 0,
        Err(_) => 1,
    });
    assert_eq!(q.get_timeout(LONG).unwrap(), vec![1u8; 20_000]);
    assert_eq!(q.get_timeout(LONG).unwrap(), vec![2u8; 20_000]);
    assert_eq!(q.get_timeout(LONG).unwrap(), third);
    child.assert_success();
    assert_eq!(q.arena_used(), 0);
}

#[test]
fn a_producer_killed_inside_put_cannot_make_join_hang() {
    let mut rng = mproc_testkit::Rng(0x010A_B1E5);
    for round in 0..30 {
        let q: JoinableQueue<Vec<u8>> =
            JoinableQueue::anonymous_with(QueueOptions::new().capacity(4).arena_bytes(256 << 10))
                .unwrap();
        // The producer spends most of its time blocked in `put` on a full queue.
        let mut producer = fork_child(|| {
            for i in 0u64.. {
                if q.put(vec![(i % 251) as u8; 40_000]).is_err() {
                    return 1;
                }
            }
            0
        });
        let mut taken = 0;
        for _ in 0..(rng.next_u64() % 6) {
            if q.get_timeout(LONG).is_ok() {
                q.task_done().unwrap();
                taken += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 2000));
        producer.signal(rustix::process::Signal::KILL);
        producer.wait();
        // Drain what it finished putting (a slot it died writing is skipped after a re-poll).
        while q.get_timeout(Duration::from_millis(400)).is_ok() {
            q.task_done().unwrap();
            taken += 1;
        }
        assert!(
            q.join_timeout(Duration::from_secs(5)),
            "round {round}: join hung with {} unfinished after {taken} taken",
            q.unfinished_tasks()
        );
    }
}

#[test]
fn joinable_queue_join_waits_for_task_done_in_another_process() {
    let q: JoinableQueue<u32> = JoinableQueue::new(64).unwrap();
    for i in 0..50 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 50);
    assert!(!q.join_timeout(Duration::from_millis(10)));
    let worker = fork_child(|| {
        for _ in 0..50 {
            if q.get_timeout(LONG).is_err() || q.task_done().is_err() {
                return 1;
            }
        }
        0
    });
    assert!(q.join_timeout(LONG));
    worker.assert_success();
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.task_done().is_err());
}

#[test]
fn opening_with_the_wrong_type_is_refused() {
    let name = unique_name("queue-types");
    let _q: PodQueue<u64> = PodQueue::create(&name, 8).unwrap();
    assert!(matches!(
        PodQueue::<u32>::open(&name),
        Err(SegmentError::TypeMismatch { .. })
    ));
    assert!(matches!(
        PodQueue::<i64>::open(&name),
        Err(SegmentError::TypeMismatch { .. })
    ));
    assert!(matches!(
        Queue::<u64>::open(&name),
        Err(SegmentError::TypeMismatch { .. })
    ));
    assert!(PodQueue::<u64>::open(&name).is_ok());

    let jname = unique_name("queue-joinable");
    let _j: Queue<String> = Queue::create(&jname, 8).unwrap();
    assert!(matches!(
        JoinableQueue::<String>::open(&jname),
        Err(SegmentError::TypeMismatch { .. })
    ));
    assert!(matches!(
        mproc_sync::Lock::open(&jname),
        Err(SegmentError::KindMismatch { .. })
    ));
}

#[test]
fn an_idle_blocked_consumer_uses_almost_no_cpu() {
    let q: PodQueue<u64> = PodQueue::new(4).unwrap();
    let (r, w) = rustix::pipe::pipe().unwrap();
    let mut child = fork_child(|| {
        rustix::io::write(&w, b"x").unwrap();
        match q.get() {
            Ok(1) => 0,
            _ => 1,
        }
    });
    let mut b = [0u8];
    rustix::io::read(&r, &mut b).unwrap();
    // The measured interval: the consumer must sleep through it.
    std::thread::sleep(Duration::from_secs(1));
    q.put(1).unwrap();
    let reaped = child.wait();
    assert_eq!(reaped.exit, mproc_testkit::Exit::Code(0));
    assert!(
        reaped.cpu < Duration::from_millis(50),
        "idle consumer used {:?}",
        reaped.cpu
    );
}

/// A consumer fresh from a busy exchange (every wait short, so its waits spin before they
/// sleep) that then waits idle: the spin is bounded, and the idle second costs it almost no
/// CPU.
#[test]
fn a_consumer_idle_after_a_busy_exchange_uses_almost_no_cpu() {
    let q: PodQueue<u64> = PodQueue::new(4).unwrap();
    let used = mproc_testkit::idle_cpu(
        |ready| {
            let (Ok(ping), Ok(pong)) = (PodQueue::<u64>::new(4), PodQueue::<u64>::new(4)) else {
                return false;
            };
            let echo = std::thread::scope(|s| {
                let echo =
                    s.spawn(|| (0..2000).all(|_| ping.get().is_ok_and(|v| pong.put(v).is_ok())));
                let asked = (0..2000u64).all(|i| ping.put(i).is_ok() && pong.get() == Ok(i));
                asked && echo.join().unwrap_or(false)
            });
            ready();
            echo && q.get() == Ok(1)
        },
        || q.put(1).unwrap(),
    )
    .expect("the child failed");
    assert!(
        used < Duration::from_millis(50),
        "idle consumer used {used:?}"
    );
}

#[test]
fn items_are_distinct_values_not_aliases() {
    // A sanity check of zero-copy slots: values survive the slot being reused many times.
    let q: PodQueue<[u64; 3]> = PodQueue::new(2).unwrap();
    let mut seen = HashSet::new();
    for i in 0..1000u64 {
        q.put([i, i * 2, i * 3]).unwrap();
        let v = q.get().unwrap();
        assert_eq!(v, [i, i * 2, i * 3]);
        assert!(seen.insert(v[0]));
    }
}

/// Serializes fine; deserializing panics (when `boom`) — a hostile or buggy `Deserialize`.
#[derive(Serialize, Debug, PartialEq)]
struct Fragile {
    boom: bool,
    n: u32,
}

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (boom, n) = <(bool, u32)>::deserialize(d)?;
        if boom {
            panic!("Deserialize refuses this value");
        }
        Ok(Fragile { boom, n })
    }
}

#[test]
fn a_message_that_fails_to_decode_is_an_error_and_releases_its_slot() {
    let q: Queue<Fragile> = Queue::new(1).unwrap();
    q.put(Fragile { boom: true, n: 1 }).unwrap();
    assert!(matches!(q.get(), Err(GetError::Unreadable { .. })));
    // The single slot was released: the queue keeps working.
    q.put(Fragile { boom: false, n: 2 }).unwrap();
    assert_eq!(q.get(), Ok(Fragile { boom: false, n: 2 }));
}
