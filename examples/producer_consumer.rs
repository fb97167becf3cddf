//! 100 keys through a shared `Queue` to 5 consumer processes, each printing what it got;
//! the parent produces, closes the queue, joins the consumers and checks that every key was
//! taken exactly once.
//!
//! Run with `cargo run --release --example producer_consumer`.

use mproc::prelude::*;

const CONSUMERS: usize = 5;
const KEYS: usize = 100;

/// Takes keys until the queue is closed and drained; returns them.
fn consume(args: (usize, String)) -> Vec<String> {
    let (me, queue) = args;
    let q: Queue<String> = Queue::open(&queue).expect("open queue");
    let mut got = Vec::new();
    while let Ok(key) = q.get() {
        got.push(key);
    }
    println!(
        "consumer {me} (pid {}): {} keys: {}",
        std::process::id(),
        got.len(),
        got.join(" ")
    );
    got
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mproc::init();
    let name = format!("mproc-example-keys-{}", std::process::id());
    let q: Queue<String> = Queue::create(&name, 16)?;

    let mut consumers = Vec::new();
    for me in 0..CONSUMERS {
        consumers.push(Process::spawn(consume, (me, name.clone()))?);
    }
    for k in 0..KEYS {
        // Blocks while the 16 slots are full: the consumers set the pace.
        q.put(format!("key-{k:03}"))?;
    }
    q.close();

    let mut all = Vec::new();
    for mut c in consumers {
        all.extend(c.join()?);
    }
    all.sort();
    all.dedup();
    println!(
        "{} distinct keys received by {CONSUMERS} consumers",
        all.len()
    );
    if all.len() != KEYS {
        return Err(format!("expected {KEYS} keys, got {}", all.len()).into());
    }
    Ok(())
}
