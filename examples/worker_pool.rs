//! The main job: count the primes below 20 million with a pool of worker processes, check the
//! answer against a single-process run, and show the speed-up and how the work was spread.
//!
//! Run with `cargo run --release --example worker_pool`. An optional argument sets the limit
//! (`tests/readme.rs` runs it with a smaller one and checks what it prints).

use std::collections::BTreeMap;
use std::time::Instant;

use mproc::prelude::*;

/// The default limit: the primes below 20 million.
const LIMIT: u64 = 20_000_000;
const CHUNK: u64 = 250_000;

/// Primes in `[lo, hi)`, by trial division with 6k±1 candidates: CPU-bound, no shared state.
fn count_primes(range: (u64, u64)) -> u64 {
    let (lo, hi) = range;
    let is_prime = |n: u64| {
        if n < 4 {
            return n >= 2;
        }
        if n % 2 == 0 || n % 3 == 0 {
            return false;
        }
        let mut d = 5;
        while d * d <= n {
            if n % d == 0 || n % (d + 2) == 0 {
                return false;
            }
            d += 6;
        }
        true
    };
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

/// A task: the count for one chunk, and which worker process computed it.
fn task(range: (u64, u64)) -> (u64, u32) {
    (count_primes(range), std::process::id())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Needed for StartMethod::Spawn; harmless otherwise. Must come first.
    mproc::init();

    let limit: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => LIMIT,
    };
    let chunks: Vec<(u64, u64)> = (0..limit)
        .step_by(CHUNK as usize)
        .map(|lo| (lo, (lo + CHUNK).min(limit)))
        .collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());

    println!("counting primes below {limit} in {} chunks", chunks.len());
    let t = Instant::now();
    let single: u64 = chunks.iter().map(|&c| count_primes(c)).sum();
    let single_time = t.elapsed();
    println!("  one process:        {single} primes in {single_time:.2?}");

    let t = Instant::now();
    let pool = Pool::builder().processes(workers).chunksize(1).build()?;
    let results = pool.map(task, chunks.iter().copied())?;
    pool.join()?;
    let pool_time = t.elapsed();
    let total: u64 = results.iter().map(|r| r.0).sum();
    println!(
        "  pool of {workers} workers:  {total} primes in {pool_time:.2?} (start and shutdown included)"
    );

    let mut per_worker: BTreeMap<u32, usize> = BTreeMap::new();
    for &(_, pid) in &results {
        *per_worker.entry(pid).or_default() += 1;
    }
    for (pid, n) in &per_worker {
        println!("    worker pid {pid}: {n} chunks");
    }
    println!(
        "  speed-up: {:.2}x on {workers} CPUs",
        single_time.as_secs_f64() / pool_time.as_secs_f64()
    );
    if total != single {
        return Err(
            format!("pool answer {total} differs from single-process answer {single}").into(),
        );
    }
    println!("  answers agree: {total}");
    Ok(())
}
