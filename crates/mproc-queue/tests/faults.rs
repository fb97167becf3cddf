//! Fault injection: in every round, two producers and two consumers share a small queue and
//! one of the four is SIGKILLed at a random moment (a deterministic pseudo-random schedule, so
//! a failing round can be replayed). The survivors must finish before a deadline, no item may
//! arrive twice, and every item whose `put` returned `Ok` must arrive — except at most one
//! item per killed consumer (the one it had taken). The batched rounds do the same with
//! `put_many` / `get_many` runs: a killed peer then leaves at most a run's worth of slots,
//! and a killed consumer takes at most a run's worth of items with it.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use mproc_queue::{GetError, PodQueue};
use mproc_segment::Segment;
use mproc_testkit::{Child, Rng, fork_child, reap_round};
use rustix::process::Signal;

const ROUNDS: u64 = 150;
const PER_PRODUCER: u64 = 3000;
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn random_sigkills_lose_nothing_acknowledged_and_never_hang() {
    fault_rounds(1, ROUNDS, 0x9E37_79B9_7F4A_7C15);
}

#[test]
fn random_sigkills_in_runs_lose_nothing_acknowledged_and_never_hang() {
    fault_rounds(8, ROUNDS / 2, 0x2545_F491_4F6C_DD1D);
}

/// Rounds of the fault injection above; `batch > 1`: producers `put_many` up to `batch`
/// values at a time (acknowledged when the call returns), consumers `get_many` up to `batch`.
fn fault_rounds(batch: u64, rounds: u64, seed: u64) {
    let mut rng = Rng(seed);
    let (mut kills_landed, mut consumer_kills, mut items_checked) = (0u64, 0u64, 0u64);
    let mut dead_slots = 0u64;
    for round in 0..rounds {
        let q: PodQueue<u64> = PodQueue::new(16).unwrap();
        let n = (2 * PER_PRODUCER) as usize;
        let mem = Segment::anonymous(n + 64).unwrap();
        let acked: &[AtomicU64] = mem.view_slice(0, 2).unwrap();
        let seen: &[AtomicU8] = mem.view_slice(64, n).unwrap();

        let mut procs: Vec<Child> = Vec::new();
        for p in 0..2u64 {
            let q = &q;
            procs.push(fork_child(move || {
                let mut i = 0;
                while i < PER_PRODUCER {
                    let end = (i + batch).min(PER_PRODUCER);
                    let values: Vec<u64> = (i..end).map(|k| p * PER_PRODUCER + k).collect();
                    let sent = if batch == 1 {
                        q.put(values[0]).is_ok()
                    } else {
                        q.put_many(&values).is_ok()
                    };
                    if !sent {
                        return 1;
                    }
                    // Acknowledged: the call returned Ok.
                    acked[p as usize].store(end, Ordering::SeqCst);
                    i = end;
                }
                0
            }));
        }
        for _ in 0..2 {
            procs.push(fork_child(|| {
                let mut got = Vec::new();
                loop {
                    got.clear();
                    let r = if batch == 1 {
                        q.get().map(|item| got.push(item))
                    } else {
                        q.get_many(&mut got, batch as usize).map(drop)
                    };
                    match r {
                        Ok(()) => {
                            for &item in &got {
                                seen[item as usize].fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(GetError::Closed) => return 0,
                        Err(_) => return 2,
                    }
                }
            }));
        }

        // The injection moment: a random delay, then SIGKILL one random process.
        let victim = (rng.next_u64() % 4) as usize;
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 3000));
        procs[victim].signal(Signal::KILL);

        let kill = reap_round(&mut procs, 2, victim, DEADLINE, round, || q.close());
        kills_landed += u64::from(kill.landed);
        consumer_kills += u64::from(kill.consumer_died);
        let consumer_died = kill.consumer_died;
        // One victim leaves at most one slot (a run) behind: a producer's unpublished slots
        // (skipped) or a consumer's half-read ones (reclaimed), never both, and only its own
        // kind.
        let st = q.stats();
        let producer_victim = victim < 2;
        assert!(
            st.dead_skipped + st.dead_reclaimed <= batch
                && (producer_victim || st.dead_skipped == 0)
                && (!producer_victim || st.dead_reclaimed == 0),
            "round {round}: victim {victim}, {st:?}"
        );
        assert_eq!(st.len, 0, "round {round}: drained queue has items: {st:?}");
        dead_slots += st.dead_skipped + st.dead_reclaimed;

        let mut missing = 0;
        for (i, s) in seen.iter().enumerate() {
            let count = s.load(Ordering::SeqCst);
            assert!(
                count <= 1,
                "round {round}: item {i} delivered {count} times"
            );
            let (p, k) = (i as u64 / PER_PRODUCER, i as u64 % PER_PRODUCER);
            if k < acked[p as usize].load(Ordering::SeqCst) && count == 0 {
                missing += 1;
            }
            items_checked += 1;
        }
        // A consumer killed between taking items and counting them takes them with it (up
        // to a run, or the up to `batch` it had in hand).
        let allowed = u64::from(consumer_died) * batch;
        assert!(
            missing <= allowed,
            "round {round}: {missing} acknowledged items lost (victim {victim}, allowed {allowed})"
        );
    }
    println!(
        "fault injection (batch {batch}): {rounds} rounds, {kills_landed} kills landed ({consumer_kills} consumers), {dead_slots} dead peers' slots recovered, {items_checked} items checked"
    );
}
