//! Fault injection: in every round, two producers and two consumers share a small queue and
//! one of the four is SIGKILLed at a random moment (a deterministic pseudo-random schedule, so
//! a failing round can be replayed). The survivors must finish before a deadline, no item may
//! arrive twice, and every item whose `put` returned `Ok` must arrive — except at most one
//! item per killed consumer (the one it had taken).

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
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut kills_landed, mut consumer_kills, mut items_checked) = (0u64, 0u64, 0u64);
    let mut dead_slots = 0u64;
    for round in 0..ROUNDS {
        let q: PodQueue<u64> = PodQueue::new(16).unwrap();
        let n = (2 * PER_PRODUCER) as usize;
        let mem = Segment::anonymous(n + 64).unwrap();
        let acked: &[AtomicU64] = mem.view_slice(0, 2).unwrap();
        let seen: &[AtomicU8] = mem.view_slice(64, n).unwrap();

        let mut procs: Vec<Child> = Vec::new();
        for p in 0..2u64 {
            let q = &q;
            procs.push(fork_child(move || {
                for i in 0..PER_PRODUCER {
                    if q.put(p * PER_PRODUCER + i).is_err() {
                        return 1;
                    }
                    // Acknowledged: put returned Ok.
                    acked[p as usize].store(i + 1, Ordering::SeqCst);
                }
                0
            }));
        }
        for _ in 0..2 {
            procs.push(fork_child(|| {
                loop {
                    match q.get() {
                        Ok(item) => {
                            seen[item as usize].fetch_add(1, Ordering::SeqCst);
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
        // One victim leaves at most one slot behind: a producer's unpublished slot (skipped)
        // or a consumer's half-read one (reclaimed), never both, and only its own kind.
        let st = q.stats();
        let producer_victim = victim < 2;
        assert!(
            st.dead_skipped + st.dead_reclaimed <= 1
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
        let allowed = u64::from(consumer_died);
        assert!(
            missing <= allowed,
            "round {round}: {missing} acknowledged items lost (victim {victim}, allowed {allowed})"
        );
    }
    println!(
        "fault injection: {ROUNDS} rounds, {kills_landed} kills landed ({consumer_kills} consumers), {dead_slots} dead peers' slots recovered, {items_checked} items checked"
    );
}
