//! Fault injection with large bodies: in every round two producers and two consumers share a
//! `ByteQueue` whose arena is small enough to fill (producers then block on arena space), and
//! one of the four is SIGKILLed at a random moment: mid-`put`, mid-loan, while blocked on a
//! full arena, mid-`get` or while holding a received loan. Messages are 1 KiB to 4 MiB.
//!
//! The survivors must finish before a deadline; no message may arrive twice or corrupted;
//! every message whose `put` (or `send`) returned `Ok` must arrive, except at most one per
//! killed consumer; and once the survivors have drained the queue the arena must be entirely
//! free again (what the victim held is reclaimed).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use mproc_queue::{ByteQueue, GetError, QueueOptions};
use mproc_segment::Segment;
use mproc_testkit::{Child, Rng, fork_child, reap_round};
use rustix::process::Signal;

const ROUNDS: u64 = 100;
const PER_PRODUCER: u64 = 40;
const DEADLINE: Duration = Duration::from_secs(30);

/// The size of message `id`: mostly small, sometimes up to 4 MiB.
fn size_of(id: u64) -> usize {
    let mut r = Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    match r.next_u64() % 100 {
        0..=2 => 4 << 20,
        3..=9 => 1 << 20,
        10..=39 => 64 << 10,
        40..=69 => 4 << 10,
        _ => 1 << 10,
    }
}

/// Writes message `id`: its id at both ends, its low byte everywhere else.
fn fill(id: u64, buf: &mut [u8]) {
    buf.fill(id as u8);
    buf[..8].copy_from_slice(&id.to_ne_bytes());
    let n = buf.len();
    buf[n - 8..].copy_from_slice(&id.to_ne_bytes());
}

/// Checks a received message (ends and a sample of bytes); returns its id.
fn check(buf: &[u8]) -> Option<u64> {
    let n = buf.len();
    let id = u64::from_ne_bytes(buf.get(..8)?.try_into().ok()?);
    let ok = n == size_of(id)
        && buf[n - 8..] == id.to_ne_bytes()
        && (8..n - 8).step_by(509).all(|i| buf[i] == id as u8);
    ok.then_some(id)
}

fn produce(q: &ByteQueue, p: u64, acked: &AtomicU64) -> i32 {
    let mut buf = Vec::new();
    for i in 0..PER_PRODUCER {
        let id = p * PER_PRODUCER + i;
        let len = size_of(id);
        let sent = if i % 2 == 0 {
            buf.resize(len, 0);
            fill(id, &mut buf);
            q.put(&buf[..]).is_ok()
        } else {
            match q.loan(len) {
                Ok(mut loan) => {
                    fill(id, &mut loan);
                    loan.send().is_ok()
                }
                Err(_) => false,
            }
        };
        if !sent {
            return 1;
        }
        // Acknowledged: put (or send) returned Ok.
        acked.store(i + 1, Ordering::SeqCst);
    }
    0
}

fn consume(q: &ByteQueue, seen: &[AtomicU8]) -> i32 {
    let mut buf = Vec::new();
    for n in 0u64.. {
        let id = if n % 2 == 0 {
            match q.get_into(&mut buf) {
                Ok(_) => check(&buf),
                Err(GetError::Closed) => return 0,
                Err(_) => return 2,
            }
        } else {
            match q.get_loan() {
                Ok(m) => check(&m),
                Err(GetError::Closed) => return 0,
                Err(_) => return 2,
            }
        };
        let Some(id) = id else { return 3 };
        seen[id as usize].fetch_add(1, Ordering::SeqCst);
    }
    0
}

#[test]
fn random_sigkills_with_large_bodies_lose_nothing_acknowledged_and_free_the_arena() {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let (mut kills_landed, mut consumer_kills) = (0u64, 0u64);
    let mut delivered = 0u64;
    for round in 0..ROUNDS {
        let q = QueueOptions::new()
            .capacity(16)
            .arena_bytes(8 << 20)
            .anonymous_bytes()
            .unwrap();
        let n = (2 * PER_PRODUCER) as usize;
        let mem = Segment::anonymous(n + 64).unwrap();
        let acked: &[AtomicU64] = mem.view_slice(0, 2).unwrap();
        let seen: &[AtomicU8] = mem.view_slice(64, n).unwrap();

        let mut procs: Vec<Child> = Vec::new();
        for p in 0..2u64 {
            let (q, acked) = (&q, &acked[p as usize]);
            procs.push(fork_child(move || produce(q, p, acked)));
        }
        for _ in 0..2 {
            procs.push(fork_child(|| consume(&q, seen)));
        }

        let victim = (rng.next_u64() % 4) as usize;
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 20_000));
        procs[victim].signal(Signal::KILL);

        let kill = reap_round(&mut procs, 2, victim, DEADLINE, round, || q.close());
        kills_landed += u64::from(kill.landed);
        consumer_kills += u64::from(kill.consumer_died);
        let consumer_died = kill.consumer_died;

        let mut missing = 0;
        for (i, s) in seen.iter().enumerate() {
            let count = s.load(Ordering::SeqCst);
            assert!(
                count <= 1,
                "round {round}: message {i} delivered {count} times"
            );
            delivered += u64::from(count);
            let (p, k) = (i as u64 / PER_PRODUCER, i as u64 % PER_PRODUCER);
            if k < acked[p as usize].load(Ordering::SeqCst) && count == 0 {
                missing += 1;
            }
        }
        let allowed = u64::from(consumer_died);
        assert!(
            missing <= allowed,
            "round {round}: {missing} acknowledged messages lost (victim {victim})"
        );
        // Drained, closed, the victim dead: all of the arena is free again.
        assert_eq!(q.try_get(), Err(GetError::Closed), "round {round}");
        assert_eq!(
            q.arena_used(),
            0,
            "round {round}: arena not fully reclaimed"
        );
    }
    println!(
        "arena fault injection: {ROUNDS} rounds, {kills_landed} kills landed ({consumer_kills} consumers), {delivered} messages delivered"
    );
}
