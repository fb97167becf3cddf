//! `PodBroadcast`, `Broadcast` and `ByteBroadcast` across real processes: every subscriber gets every message (or an exact lag
//! count), subscribers join, lag and die under load, producers die mid-send, and a hostile
//! peer scribbles over the shared words.

use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use mproc_queue::{
    Broadcast, BroadcastOptions, ByteBroadcast, Lagging, PodBroadcast, PodQueue, RecvError,
    SendError,
};
use mproc_segment::SegmentError;
use mproc_testkit::{
    Exit, Rng, Signal, fork_child, fork_in_pid_namespace, shm_entries, unique_name, with_deadline,
};

const LONG: Duration = Duration::from_secs(60);

/// A message that shows if it was torn: `check` is a function of `seq`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
struct Msg {
    seq: u64,
    check: u64,
    pad: [u64; 6],
}

fn msg(seq: u64) -> Msg {
    let check = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    Msg {
        seq,
        check,
        pad: [check; 6],
    }
}

fn valid(m: &Msg) -> bool {
    *m == msg(m.seq)
}

/// A subscriber process's report: (received, lagged, ok), through a PodQueue.
type Report = [u64; 3];

/// Reads until `Closed`, checking order and integrity; reports what it saw.
fn consume(b: &PodBroadcast<Msg>, lagging: Lagging, reports: &PodQueue<Report>) -> i32 {
    let mut sub = match b.subscribe(lagging) {
        Ok(s) => s,
        Err(_) => return 1,
    };
    // Tells the parent it is subscribed (the report queue carries a marker first).
    if reports.put([u64::MAX, 0, 0]).is_err() {
        return 2;
    }
    let (mut received, mut lagged, mut ok, mut last) = (0u64, 0u64, 1u64, None::<u64>);
    loop {
        match sub.recv_timeout(LONG) {
            Ok(m) => {
                if !valid(&m) || last.is_some_and(|l| m.seq <= l) {
                    ok = 0;
                }
                last = Some(m.seq);
                received += 1;
            }
            Err(RecvError::Lagged(n)) => lagged += n,
            Err(RecvError::Closed) => break,
            Err(_) => return 3,
        }
    }
    if sub.lagged() != lagged {
        ok = 0;
    }
    i32::from(reports.put([received, lagged, ok]).is_err())
}

#[test]
fn every_subscriber_gets_every_message_or_an_exact_lag_count() {
    with_deadline(LONG, || {
        let b = BroadcastOptions::new()
            .capacity(64)
            .anonymous_pod::<Msg>()
            .unwrap();
        let reports = PodQueue::<Report>::new(16).unwrap();
        let modes = [
            Lagging::Block,
            Lagging::Block,
            Lagging::DropOldest,
            Lagging::DropOldest,
        ];
        let children: Vec<_> = modes
            .iter()
            .map(|&mode| fork_child(|| consume(&b, mode, &reports)))
            .collect();
        for _ in &modes {
            assert_eq!(reports.get().unwrap()[0], u64::MAX);
        }
        assert_eq!(b.subscribers(), 4);
        const N: u64 = 200_000;
        for i in 0..N {
            b.send(msg(i)).unwrap();
        }
        b.close();
        let mut got: Vec<Report> = (0..modes.len()).map(|_| reports.get().unwrap()).collect();
        for mut c in children {
            assert_eq!(c.wait_deadline(LONG).exit, Exit::Code(0));
        }
        got.sort_unstable();
        for r in &got {
            assert_eq!(r[2], 1, "order and integrity held: {got:?}");
            assert_eq!(r[0] + r[1], N, "received + lagged = sent: {got:?}");
        }
        // The blocking subscribers lost nothing.
        assert!(got.iter().filter(|r| r[1] == 0).count() >= 2, "{got:?}");
        assert!(matches!(b.send(msg(0)), Err(SendError::Closed(_))));
    });
}

#[test]
fn a_subscriber_sees_exactly_what_was_sent_after_it_joined() {
    with_deadline(LONG, || {
        let b = PodBroadcast::<u64>::new(1024).unwrap();
        for i in 0..10 {
            b.send(i).unwrap();
        }
        let mut late = b.subscribe(Lagging::Block).unwrap();
        assert_eq!(late.try_recv(), Err(RecvError::Empty));
        let child = fork_child(|| {
            for i in 10..20 {
                if b.send(i).is_err() {
                    return 1;
                }
            }
            0
        });
        for i in 10..20 {
            assert_eq!(late.recv_timeout(LONG).unwrap(), i);
        }
        child.assert_success();
        assert_eq!(late.pending(), 0);
    });
}

#[test]
fn a_blocking_subscriber_killed_while_the_producer_waits_for_it_frees_its_slot() {
    with_deadline(LONG, || {
        let name = unique_name("bcast-dead");
        let b = BroadcastOptions::new()
            .capacity(8)
            .subscribers(2)
            .create_pod::<u64>(&name)
            .unwrap();
        let ready = PodQueue::<u64>::new(4).unwrap();
        for round in 0..5u64 {
            // A subscriber in its own pid namespace on odd rounds.
            let body = || {
                let b = match PodBroadcast::<u64>::open(&name) {
                    Ok(b) => b,
                    Err(_) => return 1,
                };
                let _sub = match b.subscribe(Lagging::Block) {
                    Ok(s) => s,
                    Err(_) => return 2,
                };
                let _ = ready.put(1);
                // Never reads: the producer fills the ring and waits for it.
                loop {
                    std::thread::park();
                }
            };
            let mut child = if round % 2 == 1 {
                fork_in_pid_namespace(false, body)
            } else {
                fork_child(body)
            };
            assert_eq!(ready.get_timeout(LONG).unwrap(), 1);
            assert_eq!(b.subscribers(), 1);
            let sent_before = b.sent();
            for i in 0..8 {
                b.send(i).unwrap();
            }
            // Full: the subscriber is a whole ring behind.
            assert_eq!(b.try_send(99), Err(SendError::Full(99)));
            let t = Instant::now();
            std::thread::scope(|s| {
                let waiting = s.spawn(|| b.send_timeout(100, LONG));
                std::thread::sleep(Duration::from_millis(20 * round));
                child.signal(Signal::KILL);
                assert_eq!(waiting.join().unwrap(), Ok(()));
            });
            assert!(t.elapsed() < Duration::from_secs(10));
            child.wait_deadline(LONG);
            assert_eq!(b.sent(), sent_before + 9);
            assert_eq!(b.subscribers(), 0, "round {round}: the dead slot is free");
        }
        // Both slots can be taken again; a third is refused.
        let _a = b.subscribe(Lagging::Block).unwrap();
        let _c = b.subscribe(Lagging::DropOldest).unwrap();
        assert!(b.subscribe(Lagging::Block).is_err());
        drop((_a, _c, b));
        assert!(shm_entries(&name).is_empty(), "unlinked by its creator");
    });
}

#[test]
fn producers_killed_mid_send_never_leave_a_torn_message() {
    with_deadline(LONG, || {
        let b = BroadcastOptions::new()
            .capacity(256)
            .anonymous_pod::<Msg>()
            .unwrap();
        let mut sub = b.subscribe(Lagging::DropOldest).unwrap();
        let mut rng = Rng(7);
        let (mut seen, mut lagged) = (0u64, 0u64);
        for round in 0..20 {
            let child = fork_child(|| {
                let mut i = 0u64;
                loop {
                    if b.send(msg(i)).is_err() {
                        return 1;
                    }
                    i += 1;
                }
            });
            // Let it run, then kill it wherever it is.
            let until = Instant::now() + Duration::from_micros((rng.next_u64() % 20_000) + 100);
            while Instant::now() < until {
                match sub.try_recv() {
                    Ok(m) => {
                        assert!(valid(&m), "round {round}: torn {m:?}");
                        seen += 1;
                    }
                    Err(RecvError::Lagged(n)) => lagged += n,
                    Err(RecvError::Empty) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            child.signal(Signal::KILL);
            let mut child = child;
            child.wait_deadline(LONG);
            // The next producer goes on, whatever the dead one held.
            b.send(msg(round)).unwrap();
        }
        loop {
            match sub.try_recv() {
                Ok(m) => {
                    assert!(valid(&m));
                    seen += 1;
                }
                Err(RecvError::Lagged(n)) => lagged += n,
                Err(RecvError::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            seen + lagged,
            b.sent(),
            "every message read or counted lost"
        );
    });
}

#[test]
fn scribbled_shared_words_give_typed_results_never_a_panic_or_a_hang() {
    with_deadline(LONG, || {
        let b = BroadcastOptions::new()
            .capacity(16)
            .subscribers(4)
            .anonymous_pod::<Msg>()
            .unwrap();
        let mut subs = [
            b.subscribe(Lagging::DropOldest).unwrap(),
            b.subscribe(Lagging::Block).unwrap(),
        ];
        let seg = b.segment();
        let words = seg.len() / 8;
        let mut rng = Rng(11);
        let t = Instant::now();
        for i in 0..20_000u64 {
            // A hostile peer writes any word of the payload: header, table, stamps, bodies.
            let w = (rng.next_u64() % words as u64) as usize;
            let value = match rng.next_u64() % 4 {
                0 => 0,
                1 => u64::MAX,
                2 => i,
                _ => rng.next_u64(),
            };
            // SAFETY: in bounds (w < len / 8) and 8-aligned; shared memory is only accessed
            // atomically, so this is an ordinary racing store.
            unsafe {
                std::sync::atomic::AtomicU64::from_ptr(seg.as_ptr().cast::<u64>().add(w))
                    .store(value, std::sync::atomic::Ordering::Relaxed);
            }
            // Mostly calls that do not wait; now and then ones that do (bounded).
            let waits = i % 64 == 0;
            let _ = if waits {
                b.send_timeout(msg(i), Duration::from_millis(1))
            } else {
                b.try_send(msg(i))
            };
            for s in &mut subs {
                let got = if waits {
                    s.recv_timeout(Duration::from_millis(1))
                } else {
                    s.try_recv()
                };
                match got {
                    Ok(_)
                    | Err(RecvError::Lagged(_))
                    | Err(RecvError::Timeout)
                    | Err(RecvError::Closed)
                    | Err(RecvError::Empty) => {}
                    Err(e @ RecvError::Unreadable { .. }) => panic!("a Pod message is {e}"),
                }
            }
            let _ = b.subscribers();
            if i % 1000 == 0 {
                let _ = b.subscribe(Lagging::DropOldest);
            }
        }
        assert!(t.elapsed() < LONG);
    });
}

#[test]
fn opening_as_another_type_or_a_queue_as_a_broadcast_is_refused() {
    let name = unique_name("bcast-type");
    let b = PodBroadcast::<u64>::create(&name, 16).unwrap();
    assert!(matches!(
        PodBroadcast::<u32>::open(&name),
        Err(SegmentError::TypeMismatch { .. }) | Err(SegmentError::CorruptHeader { .. })
    ));
    let q = unique_name("bcast-q");
    let _queue = PodQueue::<u64>::create(&q, 16).unwrap();
    assert!(matches!(
        PodBroadcast::<u64>::open(&q),
        Err(SegmentError::KindMismatch { .. })
    ));
    drop((b, _queue));
    assert!(shm_entries(&name).is_empty() && shm_entries(&q).is_empty());
}

#[test]
fn an_idle_subscriber_sleeps() {
    with_deadline(LONG, || {
        let b = PodBroadcast::<u64>::new(64).unwrap();
        let idle = Duration::from_secs(2);
        let mut child = fork_child(|| {
            let mut sub = match b.subscribe(Lagging::Block) {
                Ok(s) => s,
                Err(_) => return 1,
            };
            match sub.recv_timeout(idle) {
                Err(RecvError::Timeout) => 0,
                _ => 2,
            }
        });
        let r = child.wait_deadline(LONG);
        assert_eq!(r.exit, Exit::Code(0));
        assert!(
            r.cpu < idle / 100,
            "an idle subscriber used {:?} of CPU in {idle:?}",
            r.cpu
        );
    });
}

#[test]
fn what_a_blocking_subscriber_has_read_never_holds_up_the_producer() {
    // The subscriber reads a whole ring and then does something else (it is not in `recv`):
    // the producer must see how far it got, at once.
    let b = PodBroadcast::<u64>::new(8).unwrap();
    let mut sub = b.subscribe(Lagging::Block).unwrap();
    for round in 0..4u64 {
        for i in 0..8 {
            b.try_send(round * 8 + i).unwrap();
        }
        assert_eq!(b.try_send(99), Err(SendError::Full(99)), "a ring ahead");
        for i in 0..8 {
            assert_eq!(sub.try_recv().unwrap(), round * 8 + i);
        }
    }
}
