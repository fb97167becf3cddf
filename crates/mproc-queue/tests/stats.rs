//! A queue's counters across real processes: puts, gets and sleepers, full rings and full
//! arenas, the high-water mark, and a stale queue kept by `fail_if_exists`.

use std::time::{Duration, Instant};

use mproc_queue::{PodQueue, PutError, Queue, QueueOptions};
use mproc_testkit::fork_child;

const LONG: Duration = Duration::from_secs(60);

/// Polls `f` until it holds or `within` passes (observing another process's state, which
/// cannot notify us; the result is asserted, never assumed).
fn eventually(within: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::yield_now();
    }
    f()
}

#[test]
fn stats_count_puts_gets_and_sleepers_across_processes() {
    let q: Queue<String> = Queue::new(8).unwrap();
    let producer = fork_child(|| {
        for i in 0..100 {
            if q.put(format!("item {i}")).is_err() {
                return 1;
            }
        }
        0
    });
    for _ in 0..60 {
        q.get_timeout(LONG).unwrap();
    }
    // The producer has 40 more to put and 8 slots: it blocks until we take more.
    assert!(
        eventually(LONG, || q.stats().blocked_producers == 1),
        "{:?}",
        q.stats()
    );
    for _ in 0..40 {
        q.get_timeout(LONG).unwrap();
    }
    producer.assert_success();
    let st = q.stats();
    assert_eq!(
        (st.put_total, st.got_total, st.len),
        (100, 100, 0),
        "{st:?}"
    );
    assert_eq!(st.blocked_producers, 0, "{st:?}");
    // It ran full (the producer blocked on it), so the high-water mark is the capacity.
    // Its waits all ended with room: none was a refusal.
    assert_eq!(st.full_waits, 0, "{st:?}");
    assert_eq!(st.high_water, 8, "{st:?}");
    assert_eq!(st.space_waits, 0, "{st:?}");

    // A consumer asleep on the empty queue is counted, and leaves the count when woken.
    let consumer = fork_child(|| match q.get_timeout(LONG) {
        Ok(s) if s == "wake" => 0,
        _ => 1,
    });
    assert!(
        eventually(LONG, || q.stats().blocked_consumers == 1),
        "{:?}",
        q.stats()
    );
    q.put("wake".to_string()).unwrap();
    consumer.assert_success();
    let st = q.stats();
    assert_eq!((st.put_total, st.got_total), (101, 101), "{st:?}");
    assert_eq!(st.blocked_consumers, 0, "{st:?}");
    assert_eq!((st.dead_skipped, st.dead_reclaimed), (0, 0), "{st:?}");
}

#[test]
fn stats_count_full_rings_and_full_arenas() {
    let q: Queue<Vec<u8>> = QueueOptions::new()
        .capacity(4)
        .arena_bytes(64 << 10)
        .anonymous()
        .unwrap();
    // A reading in process samples the depth...
    q.put(vec![1]).unwrap();
    assert_eq!(q.stats().high_water, 1);
    // ...a full ring sets it to the capacity, and a refused try_put counts as a full wait.
    for _ in 0..3 {
        q.put(vec![1]).unwrap();
    }
    assert!(matches!(q.try_put(vec![2]), Err(PutError::Full(_))));
    let st = q.stats();
    assert_eq!(
        (st.high_water, st.full_waits, st.space_waits),
        (4, 1, 0),
        "{st:?}"
    );
    while q.try_get().is_ok() {}

    // A body bigger than the arena's free space: one space wait, nothing lost.
    let big = vec![7u8; 40 << 10];
    q.put(big.clone()).unwrap();
    assert!(matches!(
        q.put_timeout(big.clone(), Duration::from_millis(1)),
        Err(PutError::Timeout(_))
    ));
    let st = q.stats();
    assert_eq!(st.space_waits, 1, "{st:?}");
    assert_eq!(q.get().unwrap(), big);
    q.put(big.clone()).unwrap();
    assert_eq!(q.get().unwrap(), big);

    // Below the capacity, the deepest reading counts and a shallower one does not lower it.
    let deep: PodQueue<u64> = PodQueue::new(256).unwrap();
    for i in 0..200 {
        deep.put(i).unwrap();
    }
    assert_eq!(deep.stats().high_water, 200);
    for _ in 0..150 {
        deep.get().unwrap();
    }
    let st = deep.stats();
    assert_eq!(
        (st.high_water, st.len, st.full_waits),
        (200, 50, 0),
        "{st:?}"
    );
}

#[test]
fn puts_sample_the_depth_for_the_high_water_mark_without_a_stats_call() {
    // A producer in another process fills the ring past one sampling point; nobody calls
    // `stats()` while it is deep. The put at position HIGH_WATER_EVERY saw that many items.
    let every = mproc_queue::HIGH_WATER_EVERY;
    let q: PodQueue<u64> = PodQueue::new(4 * every as usize).unwrap();
    let n = every + every / 2;
    let producer = fork_child(|| {
        for i in 0..n {
            if q.put(i).is_err() {
                return 1;
            }
        }
        0
    });
    producer.assert_success();
    for i in 0..n {
        assert_eq!(q.get().unwrap(), i);
    }
    let st = q.stats();
    assert_eq!(
        (st.high_water, st.len, st.put_total),
        (every, 0, n),
        "{st:?}"
    );
}

/// `QueueOptions::fail_if_exists`: a stale queue (its creator died, nobody holds it) is
/// reclaimed by a plain `create`, but not by one that opted out — its messages stay.
#[test]
fn fail_if_exists_keeps_a_stale_queue_and_its_messages() {
    let name = mproc_testkit::unique_name("q-fail-if-exists");
    let n = name.clone();
    mproc_testkit::fork_child(move || {
        let Ok(q) = mproc_queue::QueueOptions::new().create::<u32>(&n) else {
            return 1;
        };
        if q.put(7).is_err() {
            return 2;
        }
        std::mem::forget(q); // the name outlives its creator
        0
    })
    .assert_success();
    let refused = mproc_queue::QueueOptions::new()
        .fail_if_exists()
        .create::<u32>(&name);
    assert!(matches!(
        refused,
        Err(mproc_segment::SegmentError::AlreadyExists { .. })
    ));
    // The stale queue's message is still there. A child looks: a descriptor open in this
    // process would be inherited by any child another test thread forks meanwhile, and its
    // hold on the segment would keep `create` below from reclaiming it (this test failed
    // that way once).
    let n = name.clone();
    mproc_testkit::fork_child(move || {
        match mproc_queue::Queue::<u32>::open(&n).map(|q| q.try_get()) {
            Ok(Ok(7)) => 0,
            _ => 1,
        }
    })
    .assert_success();
    // Without the opt-out, create reclaims it.
    let fresh = mproc_queue::QueueOptions::new()
        .create::<u32>(&name)
        .unwrap();
    assert!(fresh.is_empty());
}
