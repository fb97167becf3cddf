//! The rest of the vocabulary: `pipe()`'s round trip, `Broadcast` 1 → 4 subscribers, and
//! `Dict`'s get and insert.

use std::sync::Mutex;
use std::time::Instant;

use mproc::prelude::*;

use crate::figures::{join, name, per, start};

/// The child's end of the benchmark's pipe, handed over through fork (a `Connection` is not
/// serialisable: it lives in the memory the child inherits).
static CHILD_END: Mutex<Option<Connection>> = Mutex::new(None);

fn conn_echo(rounds: u64) {
    let conn = CHILD_END
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the child's end");
    let mut buf = Vec::new();
    for _ in 0..rounds {
        conn.recv_bytes_into(&mut buf).expect("recv");
        conn.send_bytes(&buf).expect("send");
    }
}

/// µs per round trip of 8 bytes over a duplex `pipe()` between two processes (blocking
/// `send_bytes` / `recv_bytes_into` on both sides).
pub fn conn_rtt(rounds: u64) -> f64 {
    let (here, there) = pipe(true).expect("pipe");
    *CHILD_END.lock().unwrap_or_else(|e| e.into_inner()) = Some(there);
    let echo = start(conn_echo, rounds + 1);
    // The parent's copy of the child's end, dropped as with an OS pipe.
    drop(CHILD_END.lock().unwrap_or_else(|e| e.into_inner()).take());
    let mut buf = Vec::new();
    here.send_bytes([0u8; 8]).expect("send");
    here.recv_bytes_into(&mut buf).expect("recv");
    let t = Instant::now();
    for i in 0..rounds {
        here.send_bytes(i.to_ne_bytes()).expect("send");
        here.recv_bytes_into(&mut buf).expect("recv");
    }
    let us = per(t.elapsed(), rounds, 1000.0);
    join(echo);
    us
}

fn bcast_subscriber(args: (String, String, u64)) -> f64 {
    let b = PodBroadcast::<u64>::open(&args.0).expect("open");
    let ready = PodQueue::<u64>::open(&args.1).expect("open");
    let mut sub = b.subscribe(Lagging::Block).expect("subscribe");
    ready.put(1).expect("ready");
    let first = sub.recv().expect("recv");
    assert_eq!(first, 0);
    let t = Instant::now();
    for i in 1..args.2 {
        assert_eq!(sub.recv().expect("recv"), i);
    }
    per(t.elapsed(), args.2 - 1, 1.0)
}

/// ns per message per subscriber: one producer, `subs` blocking subscriber processes, each
/// receiving all `n` messages (the median subscriber's figure).
pub fn bcast_1ton(n: u64, subs: usize) -> f64 {
    let (bn, rn) = (name("bcast"), name("bcast-ready"));
    let b = BroadcastOptions::new()
        .capacity(4096)
        .create_pod::<u64>(&bn)
        .expect("create");
    let ready = PodQueue::<u64>::create(&rn, 64).expect("create");
    let children: Vec<_> = (0..subs)
        .map(|_| start(bcast_subscriber, (bn.clone(), rn.clone(), n)))
        .collect();
    for _ in 0..subs {
        ready.get().expect("ready");
    }
    for i in 0..n {
        b.send(i).expect("send");
    }
    let mut each: Vec<f64> = children.into_iter().map(join).collect();
    each.sort_by(f64::total_cmp);
    each[each.len() / 2]
}

/// Keys the `Dict` benchmarks use (as `baselines.py` does for `Manager().dict()`).
pub const DICT_KEYS: u64 = 1000;

fn dict_of_keys(name: &str) -> Dict<u64, u64> {
    let d = DictOptions::new()
        .entries(DICT_KEYS as usize)
        .create(name)
        .expect("dict");
    for k in 0..DICT_KEYS {
        d.insert(k, k).expect("insert");
    }
    d
}

/// Overwrites keys of the dict named `name` until the key `u64::MAX` appears.
fn dict_writer(name: String) -> u64 {
    let d = Dict::<u64, u64>::open(&name).expect("open");
    let mut i = 0u64;
    while !d.contains_key(&u64::MAX).expect("get") {
        for _ in 0..64 {
            d.insert(i % DICT_KEYS, i).expect("insert");
            i += 1;
        }
    }
    i
}

/// ns per `get` of a `Dict<u64, u64>` of 1000 keys (keys in a scrambled order), while a
/// writer in another process overwrites keys all along (the reads validate and retry).
pub fn dict_get(n: u64) -> f64 {
    let name = name("dict");
    let d = dict_of_keys(&name);
    let writer = start(dict_writer, name);
    let t = Instant::now();
    let mut sum = 0u64;
    for i in 0..n {
        let k = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % DICT_KEYS;
        sum = sum.wrapping_add(d.get(&k).expect("get").expect("present"));
    }
    let ns = per(t.elapsed(), n, 1.0);
    std::hint::black_box(sum);
    d.insert(u64::MAX, 0).expect("insert");
    join(writer);
    ns
}

/// ns per `insert` (overwriting) into a `Dict<u64, u64>` of 1000 keys, from one process.
pub fn dict_insert(n: u64) -> f64 {
    let d = dict_of_keys(&name("dict"));
    let t = Instant::now();
    for i in 0..n {
        let k = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % DICT_KEYS;
        d.insert(k, i).expect("insert");
    }
    per(t.elapsed(), n, 1.0)
}
