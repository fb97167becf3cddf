//! A tokio service around mproc: it feeds a pool of worker processes and streams the results
//! as they come (`imap` as a `Stream`), stops early on a shutdown event (Ctrl-C sets it), and
//! serves two shared-memory queues and a child process from one task with `select_async` —
//! no thread blocked per queue.
//!
//! Run with `cargo run --release --example async_pipeline` (`-- --quick` for a short run).

use std::pin::Pin;
use std::time::Instant;

use mproc::prelude::*;
use mproc::{Waitable, select_async};

/// The work: a CPU-bound score for one input (the sum of the Collatz path lengths below it).
fn score(n: u64) -> u64 {
    (1..=n.min(2_000))
        .map(|mut x| {
            let mut steps = 0u64;
            while x != 1 {
                x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
                steps += 1;
            }
            steps
        })
        .sum()
}

/// The child process: puts readings into two named queues, then returns how many it sent.
fn sensor((fast, slow, n): (String, String, u32)) -> u32 {
    let (Ok(fast), Ok(slow)) = (PodQueue::<u64>::open(&fast), Queue::<String>::open(&slow)) else {
        return 0;
    };
    for i in 0..n {
        if fast.put(u64::from(i)).is_err() {
            return i;
        }
        if i % 10 == 9
            && slow
                .put(format!("status after {} readings", i + 1))
                .is_err()
        {
            return i;
        }
    }
    n
}

/// The next item of a stream (what `StreamExt::next` does, without another dependency).
async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let inputs = if quick { 200 } else { 2_000 };
    let readings = if quick { 100 } else { 1_000 };

    // Processes first, while this process has a single thread.
    let tag = std::process::id();
    let (fast_name, slow_name) = (
        format!("async-demo-fast-{tag}"),
        format!("async-demo-slow-{tag}"),
    );
    let fast = PodQueue::<u64>::create(&fast_name, 64)?;
    let slow = Queue::<String>::create(&slow_name, 16)?;
    let mut child = Process::spawn(sensor, (fast_name, slow_name, readings))?;
    let pool = Pool::new(2)?;
    let shutdown = Event::new()?;

    // Ctrl-C sets the shutdown event; anything else waiting on it (here: the stream loop)
    // stops at its next await.
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.set();
    };

    // 1. A pool fed from a lazy input, results streamed as they complete, in order.
    let pipeline = async {
        let started = Instant::now();
        let mut results = pool.imap(score, 1..=inputs);
        let (mut done, mut total) = (0u64, 0u64);
        loop {
            tokio::select! {
                item = next(&mut results) => match item {
                    Some(r) => {
                        total += r?;
                        done += 1;
                        if done % (inputs / 4) == 0 {
                            println!("pool: {done}/{inputs} scores, running total {total}");
                        }
                    }
                    None => break,
                },
                () = shutdown.wait_async() => {
                    println!("pool: shutdown after {done} scores");
                    break;
                }
            }
        }
        println!("pool: {done} scores in {:.2?}", started.elapsed());
        Ok::<u64, PoolError>(total)
    };

    // 2. Two queues and a child process served by one select loop.
    let serve = async {
        let (mut got_fast, mut got_slow) = (0u32, 0u32);
        let mut exited = false;
        loop {
            let (fast_ready, slow_ready) = (fast.readable(), slow.readable());
            let sources: [&dyn Waitable; 3] = [&fast_ready, &slow_ready, &child];
            let ready = select_async(&sources).await;
            while fast.try_get().is_ok() {
                got_fast += 1;
            }
            while let Ok(status) = slow.try_get() {
                got_slow += 1;
                if got_slow % 25 == 0 {
                    println!("sensor: {status}");
                }
            }
            // The child has exited and everything it sent is drained: done.
            if ready.contains(&2) {
                exited = true;
            }
            if exited && fast.is_empty() && slow.is_empty() {
                break;
            }
        }
        (got_fast, got_slow)
    };

    let (total, (got_fast, got_slow)) = tokio::select! {
        r = async { tokio::join!(pipeline, serve) } => r,
        () = ctrl_c => return Ok(()),
    };
    let total = total?;
    let sent = child.join_async().await?;
    println!("pool total: {total}");
    println!(
        "sensor: {got_fast} readings and {got_slow} status messages received, {sent} readings sent"
    );
    assert_eq!(got_fast, sent, "every reading arrives exactly once");
    Ok(())
}
