//! The async figures: futures on both sides of a queue, each process running its own tokio
//! current-thread runtime, against the blocking queue and tokio's `UnixStream`.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Instant;

use mproc::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::figures::{join, name, per, start};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn async_echo(args: (String, String, u64)) {
    let a = PodQueue::<u64>::open(&args.0).expect("open");
    let b = PodQueue::<u64>::open(&args.1).expect("open");
    runtime().block_on(async {
        for _ in 0..args.2 {
            let v = a.get_async().await.expect("get");
            b.put_async(v).await.expect("put");
        }
    });
}

/// Round trip with `get_async`/`put_async` on both sides, µs per round.
pub fn async_rtt(rounds: u64) -> f64 {
    let (na, nb) = (name("artt-a"), name("artt-b"));
    let a = PodQueue::<u64>::create(&na, 64).expect("create");
    let b = PodQueue::<u64>::create(&nb, 64).expect("create");
    let echo = start(async_echo, (na, nb, rounds + 1));
    let us = runtime().block_on(async {
        a.put_async(0).await.expect("put");
        b.get_async().await.expect("get");
        let t = Instant::now();
        for i in 0..rounds {
            a.put_async(i).await.expect("put");
            b.get_async().await.expect("get");
        }
        per(t.elapsed(), rounds, 1000.0)
    });
    join(echo);
    us
}

fn tokio_stream(fd: RawFd) -> tokio::net::UnixStream {
    // SAFETY: this process owns its copy of the socket inherited through fork, and only this
    // stream uses it from here on.
    let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    s.set_nonblocking(true).expect("nonblocking");
    tokio::net::UnixStream::from_std(s).expect("tokio stream")
}

fn unix_echo(args: (RawFd, RawFd, u64)) {
    // The parent's end, inherited through fork, is not ours to keep open.
    // SAFETY: closes the child's copy of the parent's end; nothing here uses it.
    unsafe { libc::close(args.1) };
    runtime().block_on(async {
        let mut s = tokio_stream(args.0);
        let mut buf = [0u8; 8];
        for _ in 0..args.2 {
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("write");
        }
    });
}

/// Round trip of 8 bytes over a tokio `UnixStream` pair between the same two kinds of
/// process, µs per round.
pub fn tokio_unix_rtt(rounds: u64) -> f64 {
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let echo = start(
        unix_echo,
        (theirs.as_raw_fd(), mine.as_raw_fd(), rounds + 1),
    );
    drop(theirs);
    let us = runtime().block_on(async {
        mine.set_nonblocking(true).expect("nonblocking");
        let mut s = tokio::net::UnixStream::from_std(mine).expect("tokio stream");
        let mut buf = [0u8; 8];
        s.write_all(&buf).await.expect("write");
        s.read_exact(&mut buf).await.expect("read");
        let t = Instant::now();
        for i in 0..rounds {
            s.write_all(&i.to_ne_bytes()).await.expect("write");
            s.read_exact(&mut buf).await.expect("read");
        }
        per(t.elapsed(), rounds, 1000.0)
    });
    join(echo);
    us
}

fn async_consumer(args: (String, u64)) -> f64 {
    let q = PodQueue::<u64>::open(&args.0).expect("open");
    runtime().block_on(async {
        let first = q.get_async().await.expect("get");
        let t = Instant::now();
        let mut sum = first;
        for _ in 1..args.1 {
            sum = sum.wrapping_add(q.get_async().await.expect("get"));
        }
        std::hint::black_box(sum);
        per(t.elapsed(), args.1 - 1, 1.0)
    })
}

/// 1→1 throughput with `put_async` / `get_async` on both sides, ns per item.
pub fn async_1to1(n: u64) -> f64 {
    let nq = name("a1to1");
    let q = PodQueue::<u64>::create(&nq, 4096).expect("create");
    let consumer = start(async_consumer, (nq, n));
    runtime().block_on(async {
        for i in 0..n {
            q.put_async(i).await.expect("put");
        }
    });
    join(consumer)
}
