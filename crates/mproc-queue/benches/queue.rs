//! Queue throughput and latency between two processes, beside the in-process physical
//! reference (crossbeam's `ArrayQueue`, same algorithm family) and a pipe, measured in the
//! same run. Ratios are read off the criterion report (and, later, BENCHMARKS.md).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use mproc_queue::{PodQueue, Queue};
use mproc_testkit::fork_child;
use serde::{Deserialize, Serialize};

const CAP: usize = 4096;

fn pod_one_to_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/1->1 u64");
    g.throughput(Throughput::Elements(1));
    g.bench_function("PodQueue (2 processes)", |b| {
        b.iter_custom(|iters| {
            let q: PodQueue<u64> = PodQueue::new(CAP).expect("queue");
            let consumer = fork_child(|| {
                for _ in 0..iters {
                    if q.get_timeout(Duration::from_secs(60)).is_err() {
                        return 1;
                    }
                }
                0
            });
            let start = Instant::now();
            for i in 0..iters {
                q.put(i).expect("put");
            }
            consumer.assert_success();
            start.elapsed()
        })
    });
    g.bench_function("PodQueue put_many/get_many x64 (2 processes)", |b| {
        b.iter_custom(|iters| {
            let q: PodQueue<u64> = PodQueue::new(CAP).expect("queue");
            let consumer = fork_child(|| {
                let mut got = 0;
                let mut buf = Vec::with_capacity(64);
                while got < iters {
                    buf.clear();
                    match q.get_many(&mut buf, 64) {
                        Ok(n) => got += n as u64,
                        Err(_) => return 1,
                    }
                }
                0
            });
            let batch: Vec<u64> = (0..64).collect();
            let start = Instant::now();
            let mut sent = 0;
            while sent < iters {
                let n = (iters - sent).min(64) as usize;
                q.put_many(&batch[..n]).expect("put_many");
                sent += n as u64;
            }
            consumer.assert_success();
            start.elapsed()
        })
    });
    g.bench_function("crossbeam ArrayQueue (2 threads, reference)", |b| {
        b.iter_custom(|iters| {
            let q = ArrayQueue::<u64>::new(CAP);
            let start = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut got = 0;
                    while got < iters {
                        if q.pop().is_some() {
                            got += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                });
                for i in 0..iters {
                    while q.push(i).is_err() {
                        std::hint::spin_loop();
                    }
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

#[derive(Serialize, Deserialize, Clone)]
struct Small {
    id: u64,
    x: f64,
    tag: [u8; 8],
}

fn serde_one_to_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/1->1 small struct");
    g.throughput(Throughput::Elements(1));
    g.bench_function("Queue<Small> (2 processes)", |b| {
        b.iter_custom(|iters| {
            let q: Queue<Small> = Queue::new(CAP).expect("queue");
            let consumer = fork_child(|| {
                for _ in 0..iters {
                    if q.get_timeout(Duration::from_secs(60)).is_err() {
                        return 1;
                    }
                }
                0
            });
            let start = Instant::now();
            for i in 0..iters {
                let m = Small {
                    id: i,
                    x: i as f64,
                    tag: *b"abcdefgh",
                };
                q.put(m).ok().expect("put");
            }
            consumer.assert_success();
            start.elapsed()
        })
    });
    g.finish();
}

fn pipe_pair() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe().expect("pipe")
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/round trip 8 B");
    g.bench_function("two PodQueues ping-pong (2 processes)", |b| {
        b.iter_custom(|iters| {
            let ping: PodQueue<u64> = PodQueue::new(2).expect("queue");
            let pong: PodQueue<u64> = PodQueue::new(2).expect("queue");
            let echo = fork_child(|| {
                for _ in 0..iters {
                    match ping.get_timeout(Duration::from_secs(60)) {
                        Ok(v) => pong.put(v).expect("put"),
                        Err(_) => return 1,
                    }
                }
                0
            });
            let start = Instant::now();
            for i in 0..iters {
                ping.put(i).expect("put");
                pong.get().expect("get");
            }
            let t = start.elapsed();
            echo.assert_success();
            t
        })
    });
    g.bench_function("two pipes ping-pong (2 processes, baseline)", |b| {
        b.iter_custom(|iters| {
            let (ping_r, ping_w) = pipe_pair();
            let (pong_r, pong_w) = pipe_pair();
            let echo = fork_child(|| {
                let mut buf = [0u8; 8];
                for _ in 0..iters {
                    if rustix::io::read(&ping_r, &mut buf) != Ok(8) {
                        return 1;
                    }
                    rustix::io::write(&pong_w, &buf).expect("write");
                }
                0
            });
            let mut buf = [0u8; 8];
            let start = Instant::now();
            for i in 0..iters {
                rustix::io::write(&ping_w, &i.to_ne_bytes()).expect("write");
                rustix::io::read(&pong_r, &mut buf).expect("read");
            }
            let t = start.elapsed();
            echo.assert_success();
            t
        })
    });
    g.finish();
}

fn four_by_four(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/4->4 u64");
    g.throughput(Throughput::Elements(1));
    g.bench_function("PodQueue (8 processes)", |b| {
        b.iter_custom(|iters| {
            let q: PodQueue<u64> = PodQueue::new(CAP).expect("queue");
            let per = iters.div_ceil(4);
            let start = Instant::now();
            let consumers: Vec<_> = (0..4)
                .map(|_| {
                    fork_child(|| {
                        loop {
                            match q.get() {
                                Ok(_) => {}
                                Err(mproc_queue::GetError::Closed) => return 0,
                                Err(_) => return 1,
                            }
                        }
                    })
                })
                .collect();
            let producers: Vec<_> = (0..4)
                .map(|_| {
                    fork_child(|| {
                        for i in 0..per {
                            if q.put(i).is_err() {
                                return 1;
                            }
                        }
                        0
                    })
                })
                .collect();
            for p in producers {
                p.assert_success();
            }
            q.close();
            for c in consumers {
                c.assert_success();
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = pod_one_to_one, serde_one_to_one, round_trip, four_by_four
}
criterion_main!(benches);
