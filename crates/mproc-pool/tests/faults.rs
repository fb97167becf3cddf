//! Fault injection for the pool: while `imap` runs, a killer thread SIGKILLs random workers at
//! random moments. Every item must come back exactly once — its correct result, or
//! `WorkerDied` naming a worker that was killed — never more `WorkerDied`s than kills, and the
//! pool must keep serving. Bounded: a deadline covers the whole run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mproc_pool::{Pool, PoolError, TaskError, ThreadedFork};
use mproc_testkit::{Rng, with_deadline};

const ROUNDS: usize = 25;
const ITEMS: u64 = 60;

/// A little CPU work whose length varies with the input.
fn work(x: u64) -> u64 {
    let mut h = x;
    for _ in 0..(x % 7 + 1) * 100_000 {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    h
}

#[test]
fn killed_workers_fail_only_their_tasks() {
    with_deadline(Duration::from_secs(240), || {
        let pool = Arc::new(
            Pool::builder()
                .processes(3)
                .chunksize(1)
                .threaded_fork(ThreadedFork::Allow)
                .build()
                .unwrap(),
        );
        let mut rng = Rng(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1);
        let (mut kills, mut died, mut checked) = (0usize, 0usize, 0usize);
        for _ in 0..ROUNDS {
            let killed = Arc::new(Mutex::new(HashSet::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let killer = {
                let (pool, killed, stop) = (pool.clone(), killed.clone(), stop.clone());
                let mut s = Rng(rng.next_u64());
                std::thread::spawn(move || {
                    // Up to three kills per round, at random moments.
                    for _ in 0..(s.next_u64() % 4) {
                        std::thread::sleep(Duration::from_micros(s.next_u64() % 4000));
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let pids = pool.pids();
                        let victim = pids[(s.next_u64() % pids.len() as u64) as usize];
                        mproc_testkit::kill(victim as i32, rustix::process::Signal::KILL);
                        killed.lock().unwrap().insert(victim);
                    }
                })
            };
            let results: Vec<Result<u64, PoolError>> = pool.imap(work, 0..ITEMS).collect();
            stop.store(true, Ordering::SeqCst);
            killer.join().unwrap();
            let killed = killed.lock().unwrap().clone();
            kills += killed.len();
            assert_eq!(results.len(), ITEMS as usize);
            let mut round_died = 0;
            for (i, r) in results.iter().enumerate() {
                match r {
                    Ok(v) => assert_eq!(*v, work(i as u64), "item {i}"),
                    Err(PoolError::Task(TaskError::WorkerDied { pid, signal, .. })) => {
                        assert!(killed.contains(pid), "item {i}: {pid} was not killed");
                        assert_eq!(*signal, Some(9));
                        round_died += 1;
                    }
                    Err(e) => panic!("item {i}: unexpected {e}"),
                }
            }
            assert!(
                round_died <= killed.len(),
                "{round_died} failures for {} kills",
                killed.len()
            );
            died += round_died;
            checked += results.len();
            // The pool still serves.
            assert_eq!(pool.apply(work, 3).unwrap(), work(3));
        }
        println!(
            "pool fault injection: {ROUNDS} rounds, {kills} workers killed, {died} tasks reported WorkerDied, {checked} results checked, {} workers replaced",
            pool.replaced_workers()
        );
        assert!(pool.replaced_workers() as usize >= kills.min(1));
    });
}
