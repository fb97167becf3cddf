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

// ---- `Broadcast<T>` (serde) and `ByteBroadcast`: messages of any length up to a bound ----

/// A serde message whose text (0 to 900 bytes) is a function of its sequence number.
type Text = (u64, String);

fn text(seq: u64) -> Text {
    let len = (seq.wrapping_mul(7919) % 901) as usize;
    let c = char::from(b'a' + (seq % 26) as u8);
    (seq, std::iter::repeat_n(c, len).collect())
}

/// Reads until `Closed`, checking that every message is whole and that messages and lag
/// counts account for every sequence number from the first one seen to `end` with no gap
/// and no overlap. Exit 0 when they do.
fn account(sub: &mut mproc_queue::Subscriber<Text>, end: u64) -> i32 {
    // The next sequence number expected, once a first message made it known (lag reported
    // before it cannot be checked against anything).
    let mut next = None::<u64>;
    let mut lagged = 0u64;
    loop {
        match sub.recv_timeout(LONG) {
            Ok(m) => {
                if m != text(m.0) {
                    return 10;
                }
                match next {
                    None => next = Some(m.0 + 1),
                    Some(n) if n == m.0 => next = Some(n + 1),
                    Some(_) => return 11,
                }
            }
            Err(RecvError::Lagged(n)) => {
                lagged += n;
                next = next.map(|x| x + n);
            }
            Err(RecvError::Closed) => break,
            Err(_) => return 12,
        }
    }
    if sub.lagged() != lagged {
        return 13;
    }
    // Every message up to the last one sent was read or counted lost.
    match next {
        Some(n) if n == end => 0,
        None if lagged == 0 => 14,
        _ => 15,
    }
}

#[test]
fn serde_subscribers_join_lag_and_die_under_load_and_account_for_every_message() {
    with_deadline(LONG, || {
        const N: u64 = 40_000;
        let b = BroadcastOptions::new()
            .capacity(64)
            .subscribers(8)
            .anonymous::<Text>()
            .unwrap();
        // Markers: 1 subscribed early, 2 subscribed late, 3 parked (the one to be killed).
        let marks = PodQueue::<u64>::new(16).unwrap();
        let go = PodQueue::<u64>::new(4).unwrap();
        let early = |lagging| {
            let b = &b;
            let marks = &marks;
            move || {
                let Ok(mut sub) = b.subscribe(lagging) else {
                    return 1;
                };
                if marks.put(1).is_err() {
                    return 2;
                }
                account(&mut sub, N)
            }
        };
        let mut children = vec![
            fork_child(early(Lagging::Block)),
            fork_child(early(Lagging::DropOldest)),
            // In its own pid namespace: its slot's owner token is still decided by the kernel.
            fork_in_pid_namespace(false, early(Lagging::Block)),
            fork_in_pid_namespace(false, early(Lagging::DropOldest)),
        ];
        // A blocking subscriber that reads a little, then stops reading and is killed: the
        // producer, held up by it, goes on once it is dead.
        let mut doomed = fork_child(|| {
            let Ok(mut sub) = b.subscribe(Lagging::Block) else {
                return 1;
            };
            let _ = marks.put(1);
            for _ in 0..100 {
                if sub.recv_timeout(LONG).is_err() {
                    return 2;
                }
            }
            let _ = marks.put(3);
            loop {
                std::thread::park();
            }
        });
        for _ in 0..5 {
            assert_eq!(marks.get_timeout(LONG).unwrap(), 1);
        }
        let producer = fork_child(|| {
            for i in 0..N {
                if i == N / 2 {
                    // Half way: wait until the late subscribers joined.
                    if go.get_timeout(LONG) != Ok(2) {
                        return 1;
                    }
                }
                if b.send(text(i)).is_err() {
                    return 2;
                }
            }
            b.close();
            0
        });
        assert_eq!(marks.get_timeout(LONG).unwrap(), 3);
        doomed.signal(Signal::KILL);
        assert!(matches!(doomed.wait_deadline(LONG).exit, Exit::Signaled(_)));
        // Late subscribers join while the producer runs, then it is told to pass half way.
        let (b_ref, marks_ref) = (&b, &marks);
        for lagging in [Lagging::Block, Lagging::DropOldest] {
            let (b, marks) = (b_ref, marks_ref);
            children.push(fork_child(move || {
                let Ok(mut sub) = b.subscribe(lagging) else {
                    return 1;
                };
                if marks.put(2).is_err() {
                    return 2;
                }
                account(&mut sub, N)
            }));
        }
        for _ in 0..2 {
            assert_eq!(marks.get_timeout(LONG).unwrap(), 2);
        }
        go.put(2).unwrap();
        producer.assert_success();
        for (i, mut c) in children.into_iter().enumerate() {
            assert_eq!(c.wait_deadline(LONG).exit, Exit::Code(0), "subscriber {i}");
        }
        assert_eq!(b.sent(), N);
        assert_eq!(b.subscribers(), 0);
    });
}

/// A value whose `Serialize` fails.
#[derive(Debug, PartialEq)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

#[test]
fn a_message_over_the_bound_or_unencodable_is_handed_back_and_nothing_is_sent() {
    let b = BroadcastOptions::new()
        .capacity(8)
        .max_message(100)
        .anonymous::<Vec<u8>>()
        .unwrap();
    assert_eq!(b.max_message(), 100);
    let mut sub = b.subscribe(Lagging::Block).unwrap();
    // A Vec<u8> of 99 bytes encodes as 100 (a one-byte length): the longest that fits.
    b.send(vec![7; 99]).unwrap();
    match b.send(vec![8; 100]) {
        Err(SendError::TooLarge { value, size, max }) => {
            assert_eq!((value, size, max), (vec![8; 100], 101, 100))
        }
        other => panic!("{other:?}"),
    }
    b.send(Vec::new()).unwrap();
    assert_eq!(b.sent(), 2);
    assert_eq!(sub.recv().unwrap(), vec![7; 99]);
    assert_eq!(sub.recv().unwrap(), Vec::<u8>::new());
    assert_eq!(sub.try_recv(), Err(RecvError::Empty));

    let bytes = BroadcastOptions::new()
        .capacity(8)
        .max_message(64)
        .anonymous_bytes()
        .unwrap();
    let mut s = bytes.subscribe(Lagging::DropOldest).unwrap();
    bytes.send([1u8; 64]).unwrap();
    assert!(matches!(
        bytes.send([2u8; 65]),
        Err(SendError::TooLarge {
            size: 65,
            max: 64,
            ..
        })
    ));
    bytes.send(b"").unwrap();
    let mut buf = vec![9; 1000];
    assert_eq!(s.recv_into(&mut buf).unwrap(), 64);
    assert_eq!(buf, [1u8; 64]);
    assert_eq!(s.try_recv_into(&mut buf).unwrap(), 0);
    assert_eq!(s.try_recv_into(&mut buf), Err(RecvError::Empty));

    let u = Broadcast::<Unencodable>::new(4).unwrap();
    assert!(matches!(
        u.send(Unencodable),
        Err(SendError::Unsendable {
            value: Unencodable,
            ..
        })
    ));
    assert_eq!(u.sent(), 0);

    // A zero-byte bound is allowed: only empty messages (a unit type's encoding) fit.
    let unit = BroadcastOptions::new()
        .max_message(0)
        .anonymous::<()>()
        .unwrap();
    let mut us = unit.subscribe(Lagging::Block).unwrap();
    unit.send(()).unwrap();
    assert_eq!(us.recv(), Ok(()));
}

#[test]
fn a_lying_length_word_or_body_is_unreadable_and_consumed_never_a_panic() {
    let b = BroadcastOptions::new()
        .capacity(4)
        .subscribers(1)
        .max_message(32)
        .anonymous::<String>()
        .unwrap();
    let mut sub = b.subscribe(Lagging::Block).unwrap();
    let seg = b.segment();
    // The ring starts after the 256-byte header and one 64-byte subscriber slot; a slot is a
    // stamp, a length word and 32 bytes.
    let ring = 256 + 64;
    let word = |i: usize| {
        // SAFETY: `i` indexes an 8-aligned word inside the payload; shared memory is only
        // accessed atomically.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(seg.as_ptr().cast::<u64>().add(i)) }
    };
    b.send("first".to_string()).unwrap();
    b.send("second".to_string()).unwrap();
    b.send("third".to_string()).unwrap();
    let len_word = |slot: usize| word((ring + slot * 48) / 8 + 1);
    let ordering = std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        len_word(0).load(ordering),
        6,
        "the layout this test writes over"
    );
    len_word(0).store(u64::MAX, ordering);
    assert!(matches!(sub.recv(), Err(RecvError::Unreadable { .. })));
    // A length that fits but bytes that are not a String (invalid UTF-8).
    word((ring + 48) / 8 + 2).store(u64::MAX, ordering);
    assert!(matches!(sub.recv(), Err(RecvError::Unreadable { .. })));
    assert_eq!(sub.recv().unwrap(), "third");

    let bytes = BroadcastOptions::new()
        .capacity(4)
        .subscribers(1)
        .max_message(32)
        .anonymous_bytes()
        .unwrap();
    let mut bs = bytes.subscribe(Lagging::Block).unwrap();
    bytes.send(b"abc").unwrap();
    bytes.send(b"def").unwrap();
    // SAFETY: as above, inside `bytes`' payload.
    let w = unsafe {
        std::sync::atomic::AtomicU64::from_ptr(
            bytes.segment().as_ptr().cast::<u64>().add(ring / 8 + 1),
        )
    };
    w.store(33, ordering);
    assert!(matches!(bs.recv(), Err(RecvError::Unreadable { .. })));
    assert_eq!(bs.recv().unwrap(), b"def");
}

#[test]
fn scribbled_serde_broadcast_gives_typed_results_never_a_panic_or_a_hang() {
    with_deadline(LONG, || {
        let b = BroadcastOptions::new()
            .capacity(16)
            .subscribers(4)
            .max_message(256)
            .anonymous::<Text>()
            .unwrap();
        let mut subs = [
            b.subscribe(Lagging::DropOldest).unwrap(),
            b.subscribe(Lagging::Block).unwrap(),
        ];
        let seg = b.segment();
        let words = seg.len() / 8;
        let mut rng = Rng(13);
        let (mut read, mut unreadable) = (0u64, 0u64);
        for i in 0..20_000u64 {
            let w = (rng.next_u64() % words as u64) as usize;
            let value = match rng.next_u64() % 4 {
                0 => 0,
                1 => u64::MAX,
                2 => i % 300,
                _ => rng.next_u64(),
            };
            // SAFETY: in bounds (w < len / 8) and 8-aligned; a racing atomic store.
            unsafe {
                std::sync::atomic::AtomicU64::from_ptr(seg.as_ptr().cast::<u64>().add(w))
                    .store(value, std::sync::atomic::Ordering::Relaxed);
            }
            let (seq, s) = text(i);
            let m = (seq, s.chars().take(200).collect::<String>());
            let waits = i % 64 == 0;
            let _ = if waits {
                b.send_timeout(m, Duration::from_millis(1))
            } else {
                b.try_send(m)
            };
            for s in &mut subs {
                let got = if waits {
                    s.recv_timeout(Duration::from_millis(1))
                } else {
                    s.try_recv()
                };
                match got {
                    Ok(_) => read += 1,
                    Err(RecvError::Unreadable { .. }) => unreadable += 1,
                    Err(RecvError::Lagged(_))
                    | Err(RecvError::Timeout)
                    | Err(RecvError::Closed)
                    | Err(RecvError::Empty) => {}
                }
            }
            if i % 1000 == 0 {
                let _ = b.subscribe(Lagging::DropOldest);
            }
        }
        // The scribbles hit lengths and bodies: both outcomes happened.
        assert!(
            read > 0 && unreadable > 0,
            "read {read}, unreadable {unreadable}"
        );
    });
}

#[test]
fn serde_producers_killed_mid_send_never_leave_a_torn_message() {
    with_deadline(LONG, || {
        let b = BroadcastOptions::new()
            .capacity(128)
            .anonymous::<Text>()
            .unwrap();
        let mut sub = b.subscribe(Lagging::DropOldest).unwrap();
        let mut rng = Rng(17);
        let (mut seen, mut lagged) = (0u64, 0u64);
        let mut check = |sub: &mut mproc_queue::Subscriber<Text>| match sub.try_recv() {
            Ok(m) => {
                assert_eq!(m, text(m.0), "a torn message");
                seen += 1;
                true
            }
            Err(RecvError::Lagged(n)) => {
                lagged += n;
                true
            }
            Err(RecvError::Empty) => false,
            Err(e) => panic!("{e}"),
        };
        for round in 0..20 {
            let mut child = fork_child(|| {
                let mut i = 0u64;
                while b.send(text(i)).is_ok() {
                    i += 1;
                }
                1
            });
            let until = Instant::now() + Duration::from_micros((rng.next_u64() % 20_000) + 100);
            while Instant::now() < until {
                check(&mut sub);
            }
            child.signal(Signal::KILL);
            child.wait_deadline(LONG);
            b.send(text(round)).unwrap();
        }
        while check(&mut sub) {}
        assert_eq!(
            seen + lagged,
            b.sent(),
            "every message read or counted lost"
        );
    });
}

#[test]
fn each_flavour_opens_only_as_itself_and_with_the_creators_geometry() {
    let name = unique_name("bcast-serde");
    let b = BroadcastOptions::new()
        .capacity(32)
        .max_message(300)
        .create::<String>(&name)
        .unwrap();
    let other = Broadcast::<String>::open(&name).unwrap();
    assert_eq!((other.capacity(), other.max_message()), (32, 300));
    let mut sub = other.subscribe(Lagging::Block).unwrap();
    b.send("from the creator".to_string()).unwrap();
    assert_eq!(sub.recv().unwrap(), "from the creator");
    assert!(Broadcast::<u64>::open(&name).is_err(), "another serde type");
    assert!(ByteBroadcast::open(&name).is_err(), "the byte flavour");
    assert!(PodBroadcast::<u64>::open(&name).is_err(), "the Pod flavour");
    // Named by the user: processes built apart agree on the name, not on Rust's type name.
    let tagged = unique_name("bcast-tagged");
    let t = BroadcastOptions::new()
        .type_name("ticks")
        .create_bytes(&tagged)
        .unwrap();
    assert!(
        ByteBroadcast::open(&tagged).is_err(),
        "the default name differs"
    );
    let opened = BroadcastOptions::new()
        .type_name("ticks")
        .open_bytes(&tagged)
        .unwrap();
    assert_eq!(opened.max_message(), mproc_queue::DEFAULT_MAX_MESSAGE);
    assert!(
        BroadcastOptions::new()
            .max_message(usize::MAX)
            .anonymous::<String>()
            .is_err()
    );
    drop((b, other, sub, t, opened));
    assert!(shm_entries(&name).is_empty() && shm_entries(&tagged).is_empty());
}

#[test]
fn a_subscriber_that_stops_reading_part_way_does_not_hold_up_a_waiting_send() {
    // A waiting `send` is woken when half a ring is free. A subscriber that stops reading
    // with less free must not hold it up for long: the room it made is used.
    with_deadline(LONG, || {
        let b = PodBroadcast::<u64>::new(64).unwrap();
        let ready = PodQueue::<u64>::new(4).unwrap();
        let mut child = fork_child(|| {
            let Ok(mut sub) = b.subscribe(Lagging::Block) else {
                return 1;
            };
            let _ = ready.put(0);
            // It reads whatever comes for a while, 16 messages at most, then stops.
            for _ in 0..16 {
                if sub.recv_timeout(LONG).is_err() {
                    return 2;
                }
            }
            let _ = ready.put(16);
            loop {
                std::thread::park();
            }
        });
        assert_eq!(ready.get_timeout(LONG), Ok(0));
        std::thread::scope(|s| {
            // 64 + 16 messages fit; the 81st waits for the subscriber until it dies.
            let sender = s.spawn(|| (0..81).try_for_each(|i| b.send(i)));
            assert_eq!(ready.get_timeout(LONG), Ok(16));
            let t = Instant::now();
            while b.sent() < 80 {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "held up at {}",
                    b.sent()
                );
                std::thread::yield_now();
            }
            assert!(!sender.is_finished());
            child.signal(Signal::KILL);
            assert_eq!(sender.join().unwrap(), Ok(()));
        });
        child.wait_deadline(LONG);
        assert_eq!(b.sent(), 81);
        assert_eq!(b.subscribers(), 0);
    });
}

#[test]
fn a_waiting_send_timeout_goes_as_soon_as_its_one_message_fits() {
    with_deadline(LONG, || {
        let b = PodBroadcast::<u64>::new(64).unwrap();
        let mut sub = b.subscribe(Lagging::Block).unwrap();
        for i in 0..64 {
            b.send(i).unwrap();
        }
        std::thread::scope(|s| {
            let t = Instant::now();
            let sender = s.spawn(|| b.send_timeout(64, LONG));
            while !sender.is_finished() && t.elapsed() < Duration::from_millis(100) {
                std::thread::yield_now();
            }
            assert!(!sender.is_finished(), "a ring ahead: it waits");
            // One message read makes room for one: the send goes, well before its timeout.
            assert_eq!(sub.recv().unwrap(), 0);
            assert_eq!(sender.join().unwrap(), Ok(()));
            assert!(t.elapsed() < LONG / 2);
        });
    });
}

/// A value whose encoding sends on another broadcast (a `Serialize` impl with side effects).
#[derive(Debug, PartialEq)]
struct Chatty;

static SIDE: std::sync::OnceLock<Broadcast<u32>> = std::sync::OnceLock::new();

impl serde::Serialize for Chatty {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sent = SIDE.get().map(|side| side.send(5).is_ok());
        s.serialize_bool(sent == Some(true))
    }
}

impl<'de> serde::Deserialize<'de> for Chatty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ok = <bool as serde::Deserialize>::deserialize(d)?;
        if ok {
            Ok(Chatty)
        } else {
            Err(serde::de::Error::custom("the side message was not sent"))
        }
    }
}

#[test]
fn a_send_from_inside_a_serialize_impl_works() {
    let side = SIDE.get_or_init(|| Broadcast::<u32>::new(4).unwrap());
    let mut side_sub = side.subscribe(Lagging::Block).unwrap();
    let b = Broadcast::<Chatty>::new(4).unwrap();
    let mut sub = b.subscribe(Lagging::Block).unwrap();
    b.send(Chatty).unwrap();
    assert_eq!(sub.recv().unwrap(), Chatty);
    assert_eq!(side_sub.recv().unwrap(), 5);
}
