//! Large messages: `ByteQueue`, `Queue<Vec<u8>>`, a `Queue` of a struct carrying a
//! `Vec<u8>` payload and `Queue<String>` 1→1 with bodies of 1 KiB to 16 MiB and
//! the loan round trip from 64 B to 4 MiB, beside a pipe with the same sizes, Python's
//! `mp.Queue` of `bytes` (in `baselines.py`) and one `memcpy` of the body in one process (the
//! physical reference).

use std::hint::black_box;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mproc::prelude::*;

use crate::figures::{join, name, per, start};
use crate::pipes::{pipe, read_exact, write_all};
use crate::stats::Stat;

/// Body sizes of the 1→1 rows.
pub const SIZES: [usize; 4] = [1 << 10, 64 << 10, 1 << 20, 16 << 20];
/// Body sizes of the loan round trip.
pub const LOAN_SIZES: [usize; 5] = [64, 4 << 10, 64 << 10, 1 << 20, 4 << 20];

/// A size for people: `1 KiB`, `16 MiB`, `64 B`.
pub fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Figures per size (indexed like [`SIZES`] / [`LOAN_SIZES`]).
#[derive(Debug, Default)]
pub struct Bodies {
    pub bytes: Vec<Option<Stat>>,
    pub vec: Vec<Option<Stat>>,
    /// `Queue<Frame>` (`{ id: u64, payload: Vec<u8> }`, nothing annotated).
    pub frame: Vec<Option<Stat>>,
    /// `Queue<String>`.
    pub string: Vec<Option<Stat>>,
    pub pipe: Vec<Option<Stat>>,
    pub memcpy: Vec<Option<Stat>>,
    pub loan_rtt: Vec<Option<Stat>>,
}

/// Messages per run: about `total` bytes, at least 20.
fn count(size: usize, quick: bool) -> u64 {
    let total: usize = if quick { 16 << 20 } else { 512 << 20 };
    (total / size).clamp(20, 200_000) as u64
}

fn options(size: usize) -> QueueOptions {
    QueueOptions::new()
        .capacity(64)
        .arena_bytes((4 * size).max(4 << 20))
}

fn bytes_consumer(args: (String, u64)) -> f64 {
    let q = ByteQueue::open(&args.0).expect("open");
    let mut buf = Vec::new();
    q.get_into(&mut buf).expect("get");
    let t = Instant::now();
    for _ in 1..args.1 {
        q.get_into(&mut buf).expect("get");
        black_box(&buf);
    }
    per(t.elapsed(), args.1 - 1, 1000.0)
}

pub fn bytes_1to1(size: usize, n: u64) -> f64 {
    let name = name("bytes");
    let q = options(size).create_bytes(&name).expect("create");
    let consumer = start(bytes_consumer, (name, n));
    let msg = vec![5u8; size];
    for _ in 0..n {
        q.put(&msg[..]).expect("put");
    }
    join(consumer)
}

fn vec_consumer(args: (String, u64)) -> f64 {
    let q: Queue<Vec<u8>> = QueueOptions::new().open(&args.0).expect("open");
    black_box(q.get().expect("get"));
    let t = Instant::now();
    for _ in 1..args.1 {
        black_box(q.get().expect("get"));
    }
    per(t.elapsed(), args.1 - 1, 1000.0)
}

pub fn vec_1to1(size: usize, n: u64) -> f64 {
    let name = name("vec");
    let q: Queue<Vec<u8>> = options(size).create(&name).expect("create");
    let consumer = start(vec_consumer, (name, n));
    let msg = vec![5u8; size];
    for _ in 0..n {
        q.put(msg.clone()).expect("put");
    }
    join(consumer)
}

/// A message type people write: an id and a byte payload, with no serde annotation.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Frame {
    id: u64,
    payload: Vec<u8>,
}

fn typed_consumer<T: serde::Serialize + serde::de::DeserializeOwned>(args: (String, u64)) -> f64 {
    let q: Queue<T> = QueueOptions::new().open(&args.0).expect("open");
    black_box(q.get().expect("get"));
    let t = Instant::now();
    for _ in 1..args.1 {
        black_box(q.get().expect("get"));
    }
    per(t.elapsed(), args.1 - 1, 1000.0)
}

/// `Queue<T>` 1→1 with `n` messages made by `make(size)` (each producer-side clone included,
/// as in `vec_1to1`).
pub fn typed_1to1<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    size: usize,
    n: u64,
    make: fn(usize) -> T,
) -> f64 {
    let name = name("typed");
    let q: Queue<T> = options(size).create(&name).expect("create");
    let consumer = start(typed_consumer::<T>, (name, n));
    let msg = make(size);
    for _ in 0..n {
        if q.put(msg.clone()).is_err() {
            panic!("put refused");
        }
    }
    join(consumer)
}

impl Clone for Frame {
    fn clone(&self) -> Frame {
        Frame {
            id: self.id,
            payload: self.payload.clone(),
        }
    }
}

pub fn frame_of(size: usize) -> Frame {
    Frame {
        id: 7,
        payload: vec![5u8; size],
    }
}

pub fn string_of(size: usize) -> String {
    "x".repeat(size)
}

fn pipe_sink(args: (RawFd, usize, u64)) -> f64 {
    let (rx, size, n) = args;
    let mut buf = vec![0u8; size];
    read_exact(rx, &mut buf);
    let t = Instant::now();
    for _ in 1..n {
        read_exact(rx, &mut buf);
        black_box(&buf);
    }
    per(t.elapsed(), n - 1, 1000.0)
}

fn pipe_1to1(size: usize, n: u64) -> f64 {
    let (r, w) = pipe();
    let sink = start(pipe_sink, (r.as_raw_fd(), size, n));
    let msg = vec![5u8; size];
    for _ in 0..n {
        write_all(w.as_raw_fd(), &msg);
    }
    join(sink)
}

fn memcpy(size: usize, n: u64) -> f64 {
    let src = vec![5u8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..n {
        black_box(&mut dst).copy_from_slice(black_box(&src));
    }
    per(t.elapsed(), n, 1000.0)
}

/// Echoes loans: reads the first word of each message in place, answers with a loan of the
/// same size carrying that word (no body is copied either way).
fn loan_echo(args: (String, String, u64)) {
    let a = ByteQueue::open(&args.0).expect("open");
    let b = ByteQueue::open(&args.1).expect("open");
    for _ in 0..args.2 {
        let m = a.get_loan().expect("get_loan");
        let mut reply = b.loan(m.len()).expect("loan");
        reply[..8].copy_from_slice(&m[..8]);
        drop(m);
        reply.send().expect("send");
    }
}

fn loan_rtt(size: usize, rounds: u64) -> f64 {
    let (na, nb) = (name("loan-a"), name("loan-b"));
    let a = options(size).create_bytes(&na).expect("create");
    let b = options(size).create_bytes(&nb).expect("create");
    let echo = start(loan_echo, (na, nb, rounds + 1));
    let round = |i: u64| {
        let mut l = a.loan(size).expect("loan");
        l[..8].copy_from_slice(&i.to_ne_bytes());
        l.send().expect("send");
        let back = b.get_loan().expect("get_loan");
        assert_eq!(back[..8], i.to_ne_bytes());
    };
    round(0);
    let t = Instant::now();
    for i in 1..=rounds {
        round(i);
    }
    let us = per(t.elapsed(), rounds, 1000.0);
    join(echo);
    us
}

/// Measures every large-message figure.
pub fn measure(reps: usize, rounds: u64, quick: bool) -> Bodies {
    let mut b = Bodies::default();
    for &size in &SIZES {
        eprintln!("  bodies of {}", human(size));
        let n = count(size, quick);
        b.bytes.push(Stat::repeat(reps, || bytes_1to1(size, n)));
        // As many messages as the ByteQueue rows: fewer would be timed mostly on the first
        // touches of the arena's pages (a 64 KiB row of 256 messages ran at half speed).
        b.vec.push(Stat::repeat(reps, || vec_1to1(size, n)));
        b.frame
            .push(Stat::repeat(reps, || typed_1to1(size, n, frame_of)));
        b.string
            .push(Stat::repeat(reps, || typed_1to1(size, n, string_of)));
        b.pipe.push(Stat::repeat(reps, || pipe_1to1(size, n)));
        b.memcpy.push(Stat::repeat(reps, || memcpy(size, n)));
    }
    for &size in &LOAN_SIZES {
        eprintln!("  loan round trip, {}", human(size));
        b.loan_rtt
            .push(Stat::repeat(reps, || loan_rtt(size, rounds / 10)));
    }
    b
}
