//! Queue futures and select sources across real processes (the `async` feature).

use std::collections::HashSet;
use std::time::Duration;

use mproc_queue::{GetError, JoinableQueue, PodQueue, PutError, Queue};
use mproc_sync::{Waitable, select, select_async};
use mproc_testkit::{Rng, block_on_for, fork_child, poll_once, with_deadline};
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn items_put_by_another_process_reach_an_async_consumer_in_order() {
    with_deadline(LIMIT, || {
        let q: PodQueue<u64> = PodQueue::new(16).unwrap();
        let mut first = Box::pin(q.get_async());
        assert!(poll_once(&mut first).is_none(), "nothing put yet");
        let producer = fork_child(|| {
            for i in 0..10_000u64 {
                if q.put(i).is_err() {
                    return 1;
                }
            }
            0
        });
        assert_eq!(block_on_for(LIMIT, first), Some(Ok(0)));
        for i in 1..10_000u64 {
            assert_eq!(block_on_for(LIMIT, q.get_async()), Some(Ok(i)));
        }
        producer.assert_success();
        q.close();
        assert_eq!(
            block_on_for(LIMIT, q.get_async()),
            Some(Err(GetError::Closed))
        );
    });
}

#[test]
fn an_async_put_waits_for_room_a_child_makes_and_gets_its_value_back_on_close() {
    with_deadline(LIMIT, || {
        let q: Queue<String> = Queue::new(2).unwrap();
        q.put("a".into()).unwrap();
        q.put("b".into()).unwrap();
        let mut put = Box::pin(q.put_async("c".into()));
        assert!(poll_once(&mut put).is_none(), "the queue is full");
        let consumer = fork_child(|| match q.get() {
            Ok(s) if s == "a" => 0,
            _ => 1,
        });
        assert_eq!(block_on_for(LIMIT, put), Some(Ok(())));
        consumer.assert_success();
        assert_eq!(q.len(), 2);

        let mut put = Box::pin(q.put_async("d".into()));
        assert!(poll_once(&mut put).is_none());
        let closer = fork_child(|| {
            q.close();
            0
        });
        match block_on_for(LIMIT, put) {
            Some(Err(PutError::Closed(v))) => assert_eq!(v, "d"),
            other => panic!("expected Closed(d), got {other:?}"),
        }
        closer.assert_success();
    });
}

#[test]
fn futures_dropped_at_random_points_lose_and_duplicate_nothing() {
    with_deadline(Duration::from_secs(120), || {
        const N: u64 = 20_000;
        // Small, so that both sides find it full and empty often.
        let q: Queue<u64> = Queue::new(4).unwrap();
        let producer = fork_child(|| {
            let mut rng = Rng(0xA5A5_0001);
            let mut i = 0;
            while i < N {
                // Now and then the producer stalls (load shaping, not synchronisation): long
                // enough for the consumer's futures to stop spinning and register, so that
                // its cancellations race real wake-ups. Long enough too that a consumer
                // slowed by a loaded machine still drains the ring during some of the ~150
                // stalls (the test checks that cancellations happened).
                if i % 128 == 0 {
                    let stall = std::time::Instant::now() + Duration::from_millis(1);
                    while std::time::Instant::now() < stall {
                        std::hint::spin_loop();
                    }
                }
                let mut put = Box::pin(q.put_async(i));
                match poll_once(&mut put) {
                    Some(Ok(())) => i += 1,
                    Some(Err(_)) => return 1,
                    // Pending: the value was not sent. Cancel it now and then (the next
                    // future sends `i` again), otherwise wait for it.
                    None if rng.next_u64() % 3 == 0 => drop(put),
                    None => match block_on_for(LIMIT, put) {
                        Some(Ok(())) => i += 1,
                        _ => return 2,
                    },
                }
            }
            0
        });
        let mut rng = Rng(0x5A5A_0002);
        let mut got = Vec::with_capacity(N as usize);
        let mut cancelled = 0u64;
        while (got.len() as u64) < N {
            let mut get = Box::pin(q.get_async());
            match poll_once(&mut get) {
                Some(r) => got.push(r.unwrap()),
                None if rng.next_u64() % 3 == 0 => {
                    cancelled += 1;
                    drop(get);
                }
                None => got.push(block_on_for(LIMIT, get).expect("stuck").unwrap()),
            }
        }
        producer.assert_success();
        // Exactly once, in order (one producer), and nothing left behind.
        assert!(
            got.iter().copied().eq(0..N),
            "lost, duplicated or reordered"
        );
        assert!(cancelled > 0);
        assert_eq!(q.try_get(), Err(GetError::Empty));
        let st = q.stats();
        assert_eq!(
            (st.blocked_consumers, st.blocked_producers),
            (0, 0),
            "a cancelled future stayed counted: {st:?}"
        );
    });
}

#[test]
fn an_async_get_skips_the_slot_of_a_producer_that_died_without_waking_anyone() {
    with_deadline(LIMIT, || {
        let q: PodQueue<u64> = PodQueue::new(4).unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        // The child claims the next slot to write in place and holds it.
        let mut holder = fork_child(|| {
            let loan = q.loan().unwrap();
            rustix::io::write(&w, b"x").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(loan);
            0
        });
        let mut b = [0u8];
        rustix::io::read(&r, &mut b).unwrap();
        q.put(7).unwrap();
        // The held slot comes first: the future waits for its (live) writer...
        let mut get = Box::pin(q.get_async());
        assert!(poll_once(&mut get).is_none());
        // ...who dies without publishing or waking anyone. The re-poll notices.
        holder.signal(Signal::KILL);
        holder.wait();
        assert_eq!(block_on_for(LIMIT, get), Some(Ok(7)));
        assert_eq!(q.stats().dead_skipped, 1);
    });
}

#[test]
fn join_async_completes_when_a_child_reports_every_task_done() {
    with_deadline(LIMIT, || {
        let q: JoinableQueue<u32> = JoinableQueue::new(8).unwrap();
        for i in 0..5 {
            q.put(i).unwrap();
        }
        let mut join = Box::pin(q.join_async());
        assert!(poll_once(&mut join).is_none());
        let worker = fork_child(|| {
            for _ in 0..5 {
                if q.get().is_err() || q.task_done().is_err() {
                    return 1;
                }
            }
            0
        });
        assert_eq!(block_on_for(LIMIT, join), Some(()));
        worker.assert_success();
        let mut out = Vec::new();
        q.put(9).unwrap();
        assert_eq!(
            block_on_for(LIMIT, q.get_many_async(&mut out, 4)),
            Some(Ok(1))
        );
        assert_eq!(out, vec![9]);
    });
}

#[test]
fn select_reports_which_of_two_queues_a_child_filled() {
    with_deadline(LIMIT, || {
        let a: PodQueue<u64> = PodQueue::new(4).unwrap();
        let b: Queue<String> = Queue::new(4).unwrap();
        let (ra, rb) = (a.readable(), b.readable());
        let sources: [&dyn Waitable; 2] = [&ra, &rb];
        assert!(select(&sources, Some(Duration::from_millis(10))).is_empty());
        let mut fut = select_async(&sources);
        assert!(poll_once(&mut fut).is_none());
        let child = fork_child(|| match b.put("hi".into()) {
            Ok(()) => 0,
            Err(_) => 1,
        });
        assert_eq!(block_on_for(LIMIT, fut), Some(vec![1]));
        child.assert_success();
        assert_eq!(b.try_get().unwrap(), "hi");
        // Writable: a full queue is not, until a child takes an item.
        for i in 0..4 {
            a.put(i).unwrap();
        }
        let wa = a.writable();
        assert!(!wa.is_ready());
        let child = fork_child(|| match a.get() {
            Ok(0) => 0,
            _ => 1,
        });
        assert_eq!(select(&[&wa], Some(LIMIT)), vec![0]);
        child.assert_success();
        let seen: HashSet<u64> = (0..3).map(|_| a.try_get().unwrap()).collect();
        assert_eq!(seen, HashSet::from([1, 2, 3]));
    });
}

#[test]
fn an_idle_async_consumer_uses_almost_no_cpu() {
    let q: PodQueue<u64> = PodQueue::new(4).unwrap();
    let used = mproc_testkit::idle_cpu(
        |ready| {
            let mut get = Box::pin(q.get_async());
            if poll_once(&mut get).is_some() {
                return false;
            }
            ready();
            matches!(block_on_for(LIMIT, get), Some(Ok(1)))
        },
        || q.put(1).unwrap(),
    );
    assert!(
        used.is_some_and(|u| u < Duration::from_millis(10)),
        "idle async consumer used {used:?} of CPU in 1 s (limit 1 %)"
    );
}

/// `ByteQueue` has the futures and select sources the other queues have: messages of every
/// size (inline and in the arena) from another process reach an async consumer in order; an
/// async producer waits for arena space; `readable()` is a select source.
#[test]
fn byte_queue_futures_and_select_across_processes() {
    with_deadline(LIMIT, || {
        let q = mproc_queue::QueueOptions::new()
            .capacity(8)
            .arena_bytes(256 * 1024)
            .anonymous_bytes()
            .unwrap();
        let ready = q.readable();
        assert!(select(&[&ready as &dyn Waitable], Some(Duration::ZERO)).is_empty());
        let mut first = Box::pin(q.get_async());
        assert!(poll_once(&mut first).is_none(), "nothing put yet");
        let size = |i: usize| [0, 10, 1000, 100_000][i % 4];
        let producer = fork_child(|| {
            for i in 0..200usize {
                let msg = vec![i as u8; size(i)];
                match block_on_for(LIMIT, q.put_async(msg)) {
                    Some(Ok(())) => {}
                    _ => return 1,
                }
            }
            0
        });
        assert_eq!(block_on_for(LIMIT, first), Some(Ok(vec![0u8; 0])));
        assert_eq!(block_on_for(LIMIT, select_async(&[&ready])), Some(vec![0]));
        for i in 1..200usize {
            let got = block_on_for(LIMIT, q.get_async()).unwrap().unwrap();
            assert_eq!(got, vec![i as u8; size(i)], "message {i}");
        }
        producer.assert_success();
        q.close();
        assert_eq!(
            block_on_for(LIMIT, q.get_async()),
            Some(Err(GetError::Closed))
        );
    });
}

#[test]
fn loans_have_futures_that_wait_for_another_process() {
    with_deadline(LIMIT, || {
        use mproc_queue::{ByteQueue, QueueOptions};
        // A read loan waits for a message a child sends.
        let bq = ByteQueue::new(4).unwrap();
        let mut got = Box::pin(bq.get_loan_async());
        assert!(poll_once(&mut got).is_none(), "nothing sent yet");
        let sender = fork_child(|| match bq.put(vec![7u8; 100_000]) {
            Ok(()) => 0,
            Err(_) => 1,
        });
        match block_on_for(LIMIT, got) {
            Some(Ok(loan)) => assert!(loan.len() == 100_000 && loan.iter().all(|&b| b == 7)),
            other => panic!(
                "expected a read loan, got {:?}",
                other.map(|r| r.map(|l| l.len()))
            ),
        }
        sender.assert_success();

        // A write loan waits for arena space a child frees by taking a message.
        let small = QueueOptions::new()
            .capacity(4)
            .arena_bytes(64 << 10)
            .anonymous_bytes()
            .unwrap();
        small.put(vec![1u8; 40 << 10]).unwrap();
        let mut room = Box::pin(small.loan_async(40 << 10));
        assert!(poll_once(&mut room).is_none(), "the arena is full");
        let taker = fork_child(|| match small.get() {
            Ok(m) if m.len() == 40 << 10 => 0,
            _ => 1,
        });
        let mut loan = match block_on_for(LIMIT, room) {
            Some(Ok(loan)) => loan,
            other => panic!("expected a write loan, got {:?}", other.map(|r| r.is_ok())),
        };
        taker.assert_success();
        loan.fill(9);
        loan.send().unwrap();
        assert_eq!(small.get().unwrap(), vec![9u8; 40 << 10]);

        // PodQueue: a slot loan waits for room, a read loan for a value.
        let pq: PodQueue<[u64; 8]> = PodQueue::new(1).unwrap();
        pq.put([1; 8]).unwrap();
        let mut slot = Box::pin(pq.loan_async());
        assert!(poll_once(&mut slot).is_none(), "the ring is full");
        let taker = fork_child(|| match pq.get() {
            Ok(v) if v == [1; 8] => 0,
            _ => 1,
        });
        let mut slot = match block_on_for(LIMIT, slot) {
            Some(Ok(slot)) => slot,
            other => panic!("expected a slot, got {:?}", other.map(|r| r.is_ok())),
        };
        taker.assert_success();
        *slot = [2; 8];
        slot.send();
        let read = block_on_for(LIMIT, pq.get_loan_async()).unwrap().unwrap();
        assert_eq!(*read, [2; 8]);
        drop(read);
        let mut empty = Box::pin(pq.get_loan_async());
        assert!(poll_once(&mut empty).is_none(), "nothing left");
        pq.close();
        assert!(matches!(
            block_on_for(LIMIT, empty),
            Some(Err(GetError::Closed))
        ));
    });
}
