//! The measurements. Every multi-process figure forks real processes through
//! `mproc::pool::Process`, each joined with a timeout.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mproc::prelude::*;

use crate::Plan;
use crate::pipes::{pipe_1to1, pipe_rtt, sock_rtt};
use crate::pools::{bare_fork, pool_apply, pool_map, pool_start, process_start};
use crate::stats::Stat;

/// How long any child of the benchmark may run.
pub(crate) const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// What each figure measures (appended to BENCHMARKS.md).
pub const DEFINITIONS: &str = "
## What each figure measures

- **1→1 throughput**: one producer process puts N items, one consumer process takes them; the
  consumer times from its first item to its last. crossbeam's `ArrayQueue` does the same
  between two threads of one process, both busy-polling (it has no blocking calls).
- **Pinned, blocking**: the fair in-process reference. Producer pinned to one CPU and
  consumer to the other, both blocking (`put`/`get`, or `send`/`recv`), the same loop: a
  `PodQueue<u64>` between two processes, the same `PodQueue` between two threads of one
  process, and std's `sync_channel` (crossbeam-channel's algorithm since Rust 1.67) between
  two threads. The two `PodQueue` rows show what the process boundary costs (nothing
  measurable); the std row is the ceiling.
- **4→4**: four producer and four consumer processes on one queue (on a 2-core machine, eight
  processes share two CPUs); wall time from the producers' start to the last item, per item.
- **pipe 1→1**: 8-byte `write`s into a pipe, 8-byte `read`s out of it, between two processes.
- **Round trip**: a message to a process that echoes it back, per round (two queues, two pipes
  or one socketpair), both sides blocking in `get`. The busy-poll round trip is the same pair
  of `PodQueue`s with both sides looping on `try_get` and never sleeping: the floor. A
  blocking wait spins for a while before it sleeps when its thread's last wait was short
  (`naps::ADAPTIVE_SPIN`, 50 µs), so a responsive peer is met without a futex sleep and
  wake-up on either side; an earlier BENCHMARKS.md showed 12 µs here because every wait
  slept and every answer paid two wake-ups, while other harnesses that spun measured
  0.4–0.9 µs. Both figures were right for what they ran.
- **Async**: the same round trip and 1→1 run with `get_async`/`put_async` on both sides,
  each process driving its futures on its own tokio current-thread runtime (the waiting side
  sleeps through mproc's reactor thread, which wakes the runtime); the baseline round trip is
  8 bytes over a tokio `UnixStream` pair between the same kinds of process.
- **Pool**: two worker processes; a trivial function (`x + 1`) over 10,000 items, per item; a
  single `apply_async(..).get()`; building a pool and joining it.
- **Process start + join**: start a child that runs `x + 1`, return its result, reap it. The
  bare fork row forks the benchmark process, `_exit`s in the child and `waitpid`s: the floor
  of any start by fork (the benchmark process maps all its queues, so its fork copies more
  page tables than a small program's). By the fork server, the child is forked from the
  small server process instead.
- **Lock / Value**: one process, no contention; a lock+unlock cycle, an increment under the
  value's lock. The robust pthread mutex rows measure the design `Lock` replaced (glibc,
  process-shared, robust) the same way; the handed-between-processes rows have two processes
  start together and increment a shared counter under the lock n times each: the slower
  one's time divided by 2n.
- **Array sum**: a child process sums an `Array<f64>` that the parent filled (timed in the
  child, under the array's lock) versus the parent summing a `Vec<f64>` of the same size. The
  child's first pass also maps every page into its address space (one minor fault per 4 KiB
  page); the second pass is the steady state, which the target is about.
- **Large messages**: one producer process puts N messages of the given size into a
  `ByteQueue` (`put(&[u8])`, one copy into the queue's arena), a `Queue<Vec<u8>>`, a
  `Queue<Frame { id: u64, payload: Vec<u8> }>` (no serde annotation) or a `Queue<String>`
  (postcard's bytes, each byte vector copied in one piece: `mproc_queue::codec`), one
  consumer process takes them (`get_into`, one copy out; `get`, which allocates the value);
  the producer of a typed queue clones its message for each `put` (a clone is in the time);
  the consumer times from its first message to its last. The pipe row does
  the same with `write`/`read` of the whole message; the `memcpy` row copies the body once in
  one process (the physical reference: a queue copies it twice, in and out). Each queue's
  arena holds four messages (at least 4 MiB).
- **`pipe()` round trip**: 8 bytes over a duplex `pipe()` to a forked process that echoes
  them (`send_bytes` / `recv_bytes_into`, both sides blocking); Python's is the same with
  `multiprocessing.Pipe`.
- **Broadcast 1→4**: one producer sends N `u64`s into a `PodBroadcast` of 4,096 slots; four
  subscriber processes (`Lagging::Block`) each time their N messages from the first to the
  last; the row shows the median subscriber per message. Five processes share the two CPUs.
- **`Dict` get and insert**: a `Dict<u64, u64>` of 1,000 keys; `get` of keys in a scrambled
  order while a writer process overwrites keys all along (so reads also pay for the validation
  and its retries), and `insert` overwriting keys from one process. Python's is a
  `Manager().dict()` of 1,000 int keys: `d[k]` and `d[k] = v` from the parent process.
- **Loan round trip**: a process loans a body of the given size from one `ByteQueue`, writes
  its first word and sends it; the other reads it in place, answers with a loan of the same
  size on a second queue; per round. No body is copied, so the time should not grow with size.
- **Python**: `benches/python/baselines.py` does the same with `multiprocessing` (Queue of a
  small tuple, Queue of `bytes` of each size, Pipe, Pool with the fork context, Process, Lock,
  Value, `Manager().dict()`).
- **The Python package** (`benches/python/py_package.py`, against `multiprocessing` and
  faster-fifo in the same run): Queue 1→1 as above from Python (a producer and a forked
  consumer), `Lock` acquire + release, `with v.get_lock(): v.value += 1`, and
  `numpy.frombuffer` of an `Array` summed. Why two targets stand missed:
  `mproc.Lock`'s pair is two calls into an extension module, each 25–30 ns of call
  machinery before the 15 ns lock, while multiprocessing's `SemLock` is CPython's own C type
  (about 20 ns a call): no extension-module lock reaches 2× of it. A `Value` increment is
  the same calls as multiprocessing's (a lock, a read and a write of `.value`), so it can be
  as fast, not 10× faster. The numpy sum reads 80 MB through 4 KiB pages: this kernel has
  huge pages off for shared memory (`shmem_enabled` = never), while numpy asks for them for
  its own arrays (`madvise`), so the shared array pays TLB misses the local one does not.

## Why the missed targets stand

Measured apart from the table (2026-12-08), each by alternating two builds in one run.

- **`PodQueue<u64>` 1→1 against std's `sync_channel` (target 1×).** std's channel (crossbeam's
  algorithm) makes one read-modify-write per item on each side, the CAS that moves its index.
  A `PodQueue` makes two: the CAS of the slot's word, which writes the claimer's peer token
  into the slot in the same instruction (how a survivor tells a dead claimer's slot from a
  live one, `ring.rs`), and the CAS that moves the index. Over five alternating rounds of
  `mproc-bench --fair`, a build with both CASes made plain stores (wrong with two producers or
  two consumers; measured, never shipped) did 16–32 ns/item (median 18.8) against 22–31
  (median 29.6) for the real queue, and std 12.5–14; making only the index CAS a store
  changed nothing (median 29.2), nor did Release instead of SeqCst stores when a slot is
  published or freed. The slot's CAS, the price of crash recovery, is most of the gap, and
  without it the queue would still trail std. `put_many`/`get_many` claim a run of slots at
  once and meet their target.
- **Async 1→1 (target 0.5× the blocking 1→1).** A future that is ready at once costs more
  than a blocking call: in one process, 4,000 `put_async` then 4,000 `get_async` on a tokio
  current-thread runtime take 41–42 ns an operation against 25 ns for `put`/`get` (the same
  ring calls; the rest is the poll). Between processes, a consumer future that finds nothing
  looks again for 10 µs (`naps::ASYNC_SPIN`), then sleeps through the reactor thread. Looking
  for 50 µs (tried) brought the async round trip from 1.5–5.8 µs to 0.8 µs but slowed this
  1→1 from 67–73 to 102–117 ns: the looking consumer keeps pulling the producer's cache
  lines. The 10 µs stays, for the round trip.
- **`Pool.map` (target 20×).** At chunksize 1 each item is a task of its own (a request in a
  worker's inbox, a reply in the results queue, the job table under a lock): about 1 µs a
  task, which reads 17–21× Python's from run to run, Python's own figure moving between 15
  and 34 µs. At the default chunksize what is left is work: every
  argument encoded and every result decoded by the caller, the calls run by two workers,
  three processes on two CPUs. A map of n items costs about 10 µs plus 9–15 ns an item
  (n from 1,000 to 100,000). This session removed the rest: results are written tag first and
  decoded straight into the caller's `Vec` (28–31 → 13.5–14.5 ns/task), and a small integer
  is written and read as its varint without postcard's machinery (→ 8.8–11.4 ns/task).
  Python's figure for the same map moves between 0.14 and 0.44 µs from run to run.
- **`Pool(2)` start + join (target 10×).** Both workers are forked in one visit to the
  forker thread, and `join` lets them exit while the handler thread stops; what is left is two
  forks of the calling process, each worker's start (its liveness token, its two queues) and
  exit, and `build` waiting until both workers report ready, so that a failing initializer
  fails `build` (Python's `Pool` returns before its workers run, and reports nothing).
  In a small program: `build` 460–517 µs, `join` 295–316 µs. 10× Python's is 600–750 µs
  from run to run, about 1.2× the cost of two bare forks of the benchmark process with their
  exits (2 × 190–272 µs): all the rest a pool does (two queues per worker, a handler thread,
  each worker's start and its reply that it is ready, a graceful exit) would have to fit in
  the remaining fifth.
- **`Process` start + join by fork (targets 20× Python, within 1.5× a bare fork).** 20×
  Python is about 120 µs, below the bare fork itself: no start by fork can reach it. Against
  the bare fork, in a small program (2,000 starts): bare fork 115 µs, `Process` 278 µs. A child
  that `_exit`s at once, right after the fork, already costs 250–268 µs through mproc's forker
  thread and 185 µs when forked on the calling thread (the forker exists so that a child's
  parent-death signal follows the process, not the thread that called `spawn`); forking on
  the calling thread with the real child (tried) gave the same 278–300 µs, the child's run
  then being the critical path. The child's own work (its liveness token: two opens of the
  roll, four `fstat`s, two `fcntl` locks; the call; the result through the results queue)
  takes 25–50 µs, and the child takes 42 page faults against the bare child's 10, most of
  them copy-on-write. The fork server adds a request over its socket.
- **`ByteQueue` of 1 MiB against one `memcpy` (target 0.5×).** A queue copies a body twice
  (in, then out), so 0.5× is the ceiling, reached only when both copies run as fast as a
  cache-hot `memcpy` in one process, while the consumer's copy reads lines another core
  wrote. The row reads 0.42–0.66× from run to run; five rounds alternating this build with
  7be3ce1 (before the lazy arena) measured 62.7–68.9 against 63.3–77.4 µs a message.
- **Rows that flip between runs, with nothing changed in their paths**: Redis at most once,
  one message per call, 0.74–0.9× a bare LPUSH/BRPOP (the bare loop's own spread within one
  run is up to 58–84 µs); the Python package's 1 KiB `bytes`, 9.9–11.5× `mp.Queue`;
  `Process` by fork, 0.54–0.69× a bare fork.
";

/// All mproc and Rust-baseline figures.
#[derive(Debug, Default)]
pub struct Figures {
    pub pod_1to1: Option<Stat>,
    pub pod_1to1_batch: Option<Stat>,
    pub pod_4to4: Option<Stat>,
    pub msg_1to1: Option<Stat>,
    pub msg_4to4: Option<Stat>,
    pub crossbeam_1to1: Option<Stat>,
    /// The fair references: one loop shape (blocking `put`/`get`, or `send`/`recv`), the
    /// producer pinned to one CPU and the consumer to the other.
    pub pinned_pod_procs: Option<Stat>,
    pub pinned_pod_threads: Option<Stat>,
    pub pinned_std_threads: Option<Stat>,
    pub pinned_pod_batch_procs: Option<Stat>,
    pub pipe_1to1: Option<Stat>,
    pub rtt: Option<Stat>,
    pub rtt_busy: Option<Stat>,
    pub rtt_1k: Option<Stat>,
    pub pipe_rtt_8: Option<Stat>,
    pub conn_rtt: Option<Stat>,
    pub bcast_1to4: Option<Stat>,
    pub dict_get: Option<Stat>,
    pub dict_insert: Option<Stat>,
    pub pipe_rtt_1k: Option<Stat>,
    pub sock_rtt_8: Option<Stat>,
    pub sock_rtt_1k: Option<Stat>,
    pub async_rtt: Option<Stat>,
    pub tokio_unix_rtt: Option<Stat>,
    pub async_1to1: Option<Stat>,
    pub pool_map_c1: Option<Stat>,
    pub pool_map_default: Option<Stat>,
    pub pool_apply: Option<Stat>,
    pub pool_start: Option<Stat>,
    pub process_fork: Option<Stat>,
    pub process_forkserver: Option<Stat>,
    pub process_spawn: Option<Stat>,
    pub bare_fork: Option<Stat>,
    pub lock: Option<Stat>,
    pub value_inc: Option<Stat>,
    pub array_sum: Option<Stat>,
    pub array_sum_first: Option<Stat>,
    pub vec_sum: Option<Stat>,
}

type Small = (u64, f64, [u8; 8]);

pub(crate) fn name(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "mproc-bench-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn start<A, R>(f: fn(A) -> R, arg: A) -> Process<R>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    Process::builder()
        .threaded_fork(ThreadedFork::Allow)
        .spawn(f, arg)
        .expect("start a benchmark process")
}

pub(crate) fn join<R: serde::de::DeserializeOwned>(mut p: Process<R>) -> R {
    p.join_timeout(CHILD_DEADLINE)
        .expect("benchmark process failed")
}

pub(crate) fn per(elapsed: Duration, n: u64, unit_ns: f64) -> f64 {
    elapsed.as_nanos() as f64 / n.max(1) as f64 / unit_ns
}

// ---- queues ----

fn pod_consumer(args: (String, u64)) -> f64 {
    let q = PodQueue::<u64>::open(&args.0).expect("open");
    let first = q.get().expect("get");
    let t = Instant::now();
    let mut sum = first;
    for _ in 1..args.1 {
        sum = sum.wrapping_add(q.get().expect("get"));
    }
    black_box(sum);
    per(t.elapsed(), args.1 - 1, 1.0)
}

fn pod_batch_consumer(args: (String, u64)) -> f64 {
    let q = PodQueue::<u64>::open(&args.0).expect("open");
    let mut buf = Vec::with_capacity(64);
    let mut got = q.get_many(&mut buf, 64).expect("get") as u64;
    let t = Instant::now();
    let first = got;
    while got < args.1 {
        buf.clear();
        got += q.get_many(&mut buf, 64).expect("get") as u64;
        black_box(&buf);
    }
    per(t.elapsed(), got - first, 1.0)
}

fn pod_1to1_batch(n: u64) -> f64 {
    // Whole batches: the consumer counts to `n`.
    let n = n / 64 * 64;
    let name = name("podb");
    let q = PodQueue::<u64>::create(&name, 4096).expect("create");
    let c = start(pod_batch_consumer, (name, n));
    let chunk: Vec<u64> = (0..64).collect();
    for _ in 0..n / 64 {
        q.put_many(&chunk).expect("put_many");
    }
    join(c)
}

fn msg_consumer(args: (String, u64)) -> f64 {
    let q = Queue::<Small>::open(&args.0).expect("open");
    q.get().expect("get");
    let t = Instant::now();
    for _ in 1..args.1 {
        black_box(q.get().expect("get"));
    }
    per(t.elapsed(), args.1 - 1, 1.0)
}

pub fn pod_1to1(n: u64) -> f64 {
    let name = name("pod");
    let q = PodQueue::<u64>::create(&name, 4096).expect("create");
    let c = start(pod_consumer, (name, n));
    for i in 0..n {
        q.put(i).expect("put");
    }
    join(c)
}

fn msg_1to1(n: u64) -> f64 {
    let name = name("msg");
    let q = Queue::<Small>::create(&name, 4096).expect("create");
    let c = start(msg_consumer, (name, n));
    for i in 0..n {
        q.put((i, i as f64, *b"abcdefgh")).expect("put");
    }
    join(c)
}

fn pod_producer(args: (String, u64)) {
    let q = PodQueue::<u64>::open(&args.0).expect("open");
    for i in 0..args.1 {
        q.put(i).expect("put");
    }
}

fn pod_drain(name: String) -> u64 {
    let q = PodQueue::<u64>::open(&name).expect("open");
    let mut n = 0;
    while q.get().is_ok() {
        n += 1;
    }
    n
}

fn msg_producer(args: (String, u64)) {
    let q = Queue::<Small>::open(&args.0).expect("open");
    for i in 0..args.1 {
        q.put((i, i as f64, *b"abcdefgh")).expect("put");
    }
}

fn msg_drain(name: String) -> u64 {
    let q = Queue::<Small>::open(&name).expect("open");
    let mut n = 0;
    while q.get().is_ok() {
        n += 1;
    }
    n
}

/// 4 producers and 4 consumers; `close` ends the consumers once the producers are done.
fn four_by_four(
    n: u64,
    name: String,
    close: impl FnOnce(),
    producer: fn((String, u64)),
    drain: fn(String) -> u64,
) -> f64 {
    let consumers: Vec<_> = (0..4).map(|_| start(drain, name.clone())).collect();
    let t = Instant::now();
    let producers: Vec<_> = (0..4)
        .map(|_| start(producer, (name.clone(), n / 4)))
        .collect();
    for p in producers {
        join(p);
    }
    close();
    let got: u64 = consumers.into_iter().map(join).sum();
    let elapsed = t.elapsed();
    assert_eq!(got, n / 4 * 4, "items lost or duplicated");
    per(elapsed, got, 1.0)
}

fn pod_4to4(n: u64) -> f64 {
    let name = name("pod44");
    let q = PodQueue::<u64>::create(&name, 4096).expect("create");
    four_by_four(n, name, || q.close(), pod_producer, pod_drain)
}

fn msg_4to4(n: u64) -> f64 {
    let name = name("msg44");
    let q = Queue::<Small>::create(&name, 4096).expect("create");
    four_by_four(n, name, || q.close(), msg_producer, msg_drain)
}

// ---- the fair in-process references: the same loop, pinned ----

/// Pins the calling thread to CPU `cpu` (modulo the CPUs it may use); `None` undoes it
/// (every CPU it had). Pinning fails quietly where it is not allowed: the figures are then
/// unpinned, like the others.
fn pin(cpu: Option<usize>) {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    static ALL: std::sync::OnceLock<Option<CpuSet>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| sched_getaffinity(None).ok());
    let Some(all) = all else { return };
    let set = match cpu {
        None => *all,
        Some(i) => {
            let usable: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| all.is_set(c)).collect();
            let Some(&c) = usable.get(i % usable.len().max(1)) else {
                return;
            };
            let mut one = CpuSet::new();
            one.set(c);
            one
        }
    };
    let _ = sched_setaffinity(None, &set);
}

fn pinned_pod_consumer(args: (String, u64)) -> f64 {
    pin(Some(1));
    pod_consumer(args)
}

/// `PodQueue<u64>` 1→1 between two processes, blocking on both sides, pinned.
pub fn pinned_pod_procs(n: u64) -> f64 {
    let name = name("podp");
    let q = PodQueue::<u64>::create(&name, 4096).expect("create");
    let c = start(pinned_pod_consumer, (name, n));
    pin(Some(0));
    for i in 0..n {
        q.put(i).expect("put");
    }
    pin(None);
    join(c)
}

fn pinned_batch_consumer(args: (String, u64)) -> f64 {
    pin(Some(1));
    pod_batch_consumer(args)
}

/// `put_many`/`get_many` ×64 between two processes, pinned.
pub fn pinned_pod_batch_procs(n: u64) -> f64 {
    // Whole batches: the consumer counts to `n`.
    let n = n / 64 * 64;
    let name = name("podbp");
    let q = PodQueue::<u64>::create(&name, 4096).expect("create");
    let c = start(pinned_batch_consumer, (name, n));
    pin(Some(0));
    let chunk: Vec<u64> = (0..64).collect();
    for _ in 0..n / 64 {
        q.put_many(&chunk).expect("put_many");
    }
    pin(None);
    join(c)
}

/// Two pinned threads of this process: `produce(i)` for every item on one, `consume()` on
/// the other, timed by the consumer from its first item to its last, as the process rows.
fn pinned_threads(
    n: u64,
    mut produce: impl FnMut(u64) + Send,
    mut consume: impl FnMut() -> u64 + Send,
) -> f64 {
    std::thread::scope(|s| {
        let consumer = s.spawn(move || {
            pin(Some(1));
            let mut sum = consume();
            let t = Instant::now();
            for _ in 1..n {
                sum = sum.wrapping_add(consume());
            }
            black_box(sum);
            per(t.elapsed(), n - 1, 1.0)
        });
        s.spawn(move || {
            pin(Some(0));
            for i in 0..n {
                produce(i);
            }
        });
        consumer.join().expect("consumer thread")
    })
}

/// `PodQueue<u64>` between two pinned threads, blocking `put`/`get`.
pub fn pinned_pod_threads(n: u64) -> f64 {
    let q = PodQueue::<u64>::new(4096).expect("create");
    let q = &q;
    pinned_threads(
        n,
        move |i| q.put(i).expect("put"),
        move || q.get().expect("get"),
    )
}

/// std's bounded channel (crossbeam-channel's algorithm since Rust 1.67) between two
/// pinned threads, blocking `send`/`recv`, the same capacity.
pub fn pinned_std_threads(n: u64) -> f64 {
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(4096);
    pinned_threads(
        n,
        move |i| tx.send(i).expect("send"),
        move || rx.recv().expect("recv"),
    )
}

fn crossbeam_1to1(n: u64) -> f64 {
    let q = crossbeam_queue::ArrayQueue::<u64>::new(4096);
    let mut per_item = 0.0;
    std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            while q.pop().is_none() {
                std::hint::spin_loop();
            }
            let t = Instant::now();
            let mut got = 1;
            while got < n {
                match q.pop() {
                    Some(v) => {
                        black_box(v);
                        got += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
            per(t.elapsed(), n - 1, 1.0)
        });
        for i in 0..n {
            while q.push(i).is_err() {
                std::hint::spin_loop();
            }
        }
        per_item = consumer.join().expect("consumer");
    });
    per_item
}

// ---- round trips ----

fn pod_echo(args: (String, String, u64)) {
    let a = PodQueue::<u64>::open(&args.0).expect("open");
    let b = PodQueue::<u64>::open(&args.1).expect("open");
    for _ in 0..args.2 {
        b.put(a.get().expect("get")).expect("put");
    }
}

pub fn rtt(rounds: u64) -> f64 {
    let (na, nb) = (name("rtt-a"), name("rtt-b"));
    let a = PodQueue::<u64>::create(&na, 64).expect("create");
    let b = PodQueue::<u64>::create(&nb, 64).expect("create");
    let echo = start(pod_echo, (na, nb, rounds + 1));
    a.put(0).expect("put");
    b.get().expect("get");
    let t = Instant::now();
    for i in 0..rounds {
        a.put(i).expect("put");
        b.get().expect("get");
    }
    let us = per(t.elapsed(), rounds, 1000.0);
    join(echo);
    us
}

fn pod_echo_busy(args: (String, String, u64)) {
    let a = PodQueue::<u64>::open(&args.0).expect("open");
    let b = PodQueue::<u64>::open(&args.1).expect("open");
    for _ in 0..args.2 {
        let v = loop {
            match a.try_get() {
                Ok(v) => break v,
                Err(_) => std::hint::spin_loop(),
            }
        };
        while b.try_put(v).is_err() {
            std::hint::spin_loop();
        }
    }
}

/// The round trip of [`rtt`] with both sides busy-polling (`try_get` in a loop, never
/// sleeping): the floor a blocking round trip is measured against.
pub fn rtt_busy(rounds: u64) -> f64 {
    let (na, nb) = (name("rttb-a"), name("rttb-b"));
    let a = PodQueue::<u64>::create(&na, 64).expect("create");
    let b = PodQueue::<u64>::create(&nb, 64).expect("create");
    let echo = start(pod_echo_busy, (na, nb, rounds + 1));
    let round = |i: u64| {
        while a.try_put(i).is_err() {
            std::hint::spin_loop();
        }
        loop {
            if b.try_get().is_ok() {
                break;
            }
            std::hint::spin_loop();
        }
    };
    round(0);
    let t = Instant::now();
    for i in 0..rounds {
        round(i);
    }
    let us = per(t.elapsed(), rounds, 1000.0);
    join(echo);
    us
}

fn bytes_options() -> QueueOptions {
    QueueOptions::new().capacity(64).slot_size(2048)
}

fn bytes_echo(args: (String, String, u64)) {
    let a: Queue<Vec<u8>> = bytes_options().open(&args.0).expect("open");
    let b: Queue<Vec<u8>> = bytes_options().open(&args.1).expect("open");
    for _ in 0..args.2 {
        b.put(a.get().expect("get")).expect("put");
    }
}

fn rtt_1k(rounds: u64) -> f64 {
    let (na, nb) = (name("rtt1k-a"), name("rtt1k-b"));
    let a: Queue<Vec<u8>> = bytes_options().create(&na).expect("create");
    let b: Queue<Vec<u8>> = bytes_options().create(&nb).expect("create");
    let echo = start(bytes_echo, (na, nb, rounds + 1));
    let msg = vec![7u8; 1024];
    a.put(msg.clone()).expect("put");
    b.get().expect("get");
    let t = Instant::now();
    for _ in 0..rounds {
        a.put(msg.clone()).expect("put");
        black_box(b.get().expect("get"));
    }
    let us = per(t.elapsed(), rounds, 1000.0);
    join(echo);
    us
}

// ---- locks, values, arrays ----

pub fn lock_cycle(n: u64) -> f64 {
    let lock = Lock::new().expect("lock");
    let t = Instant::now();
    for _ in 0..n {
        drop(black_box(lock.lock().ok()));
    }
    per(t.elapsed(), n, 1.0)
}

fn value_inc(n: u64) -> f64 {
    let v = Value::<u64>::new(0).expect("value");
    let t = Instant::now();
    for _ in 0..n {
        v.update(|x| *x += 1).expect("update");
    }
    let ns = per(t.elapsed(), n, 1.0);
    assert_eq!(v.get().expect("get"), n);
    ns
}

/// Sums the array twice in this (child) process: the first pass also maps each page into the
/// child (minor faults), the second runs at memory speed. Returns (first ms, second ms, sum).
fn array_summer(name: String) -> (f64, f64, f64) {
    let a = Array::<f64>::open(&name).expect("open");
    let guard = a.lock().expect("lock");
    let t = Instant::now();
    let first: f64 = black_box(&guard[..]).iter().sum();
    let cold = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let second: f64 = black_box(&guard[..]).iter().sum();
    let warm = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(first, second);
    (cold, warm, second)
}

/// (first pass ms, second pass ms) of a child summing a freshly filled array.
fn array_sum(len: usize) -> (f64, f64) {
    let name = name("array");
    let a = Array::<f64>::create(&name, len).expect("create");
    {
        let mut g = a.lock().expect("lock");
        for (i, x) in g.iter_mut().enumerate() {
            *x = (i % 1000) as f64;
        }
    }
    let (cold, warm, sum) = join(start(array_summer, name));
    assert_eq!(sum, expected_sum(len));
    (cold, warm)
}

fn expected_sum(len: usize) -> f64 {
    (0..len).map(|i| (i % 1000) as f64).sum()
}

fn vec_sum(len: usize) -> f64 {
    let v: Vec<f64> = (0..len).map(|i| (i % 1000) as f64).collect();
    let t = Instant::now();
    let s: f64 = black_box(&v[..]).iter().sum();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(s, expected_sum(len));
    ms
}

/// Measures every mproc and Rust-baseline figure.
pub fn measure_all(plan: &Plan) -> Result<Figures, Box<dyn std::error::Error>> {
    let r = plan.reps;
    let step = |what: &str| eprintln!("  {what}");
    let mut f = Figures::default();
    step("queues 1→1");
    f.pod_1to1 = Stat::repeat(r, || pod_1to1(plan.items));
    f.pod_1to1_batch = Stat::repeat(r, || pod_1to1_batch(plan.items));
    f.crossbeam_1to1 = Stat::repeat(r, || crossbeam_1to1(plan.items));
    f.pinned_pod_procs = Stat::repeat(r, || pinned_pod_procs(plan.items));
    f.pinned_pod_threads = Stat::repeat(r, || pinned_pod_threads(plan.items));
    f.pinned_std_threads = Stat::repeat(r, || pinned_std_threads(plan.items));
    f.pinned_pod_batch_procs = Stat::repeat(r, || pinned_pod_batch_procs(plan.items));
    f.msg_1to1 = Stat::repeat(r, || msg_1to1(plan.items));
    f.pipe_1to1 = Stat::repeat(r, || pipe_1to1(plan.items / 4));
    step("queues 4→4");
    f.pod_4to4 = Stat::repeat(r, || pod_4to4(plan.items));
    f.msg_4to4 = Stat::repeat(r, || msg_4to4(plan.items));
    step("round trips");
    f.rtt = Stat::repeat(r, || rtt(plan.rounds));
    f.rtt_busy = Stat::repeat(r, || rtt_busy(plan.rounds));
    f.rtt_1k = Stat::repeat(r, || rtt_1k(plan.rounds));
    f.pipe_rtt_8 = Stat::repeat(r, || pipe_rtt(8, plan.rounds));
    f.pipe_rtt_1k = Stat::repeat(r, || pipe_rtt(1024, plan.rounds));
    f.sock_rtt_8 = Stat::repeat(r, || sock_rtt(8, plan.rounds));
    f.sock_rtt_1k = Stat::repeat(r, || sock_rtt(1024, plan.rounds));
    step("pipe() and Broadcast");
    f.conn_rtt = Stat::repeat(r, || crate::vocab::conn_rtt(plan.rounds));
    f.bcast_1to4 = Stat::repeat(r, || crate::vocab::bcast_1ton(plan.items, 4));
    step("Dict");
    f.dict_get = Stat::repeat(r, || crate::vocab::dict_get(plan.items) / 1000.0);
    f.dict_insert = Stat::repeat(r, || crate::vocab::dict_insert(plan.items / 4) / 1000.0);
    step("async");
    f.async_rtt = Stat::repeat(r, || crate::asyncs::async_rtt(plan.rounds));
    f.tokio_unix_rtt = Stat::repeat(r, || crate::asyncs::tokio_unix_rtt(plan.rounds));
    f.async_1to1 = Stat::repeat(r, || crate::asyncs::async_1to1(plan.items));
    step("pool and processes");
    f.pool_map_c1 = pool_map(Some(1), r);
    f.pool_map_default = pool_map(None, r);
    f.pool_apply = pool_apply(plan.rounds / 10, r);
    f.pool_start = Stat::repeat(r, || pool_start(plan.starts.div_ceil(3)));
    f.process_fork = Stat::repeat(r, || process_start(StartMethod::Fork, plan.starts));
    f.process_spawn = Stat::repeat(r, || process_start(StartMethod::Spawn, plan.starts / 3 + 1));
    mproc::pool::start_forkserver().expect("forkserver");
    f.process_forkserver = Stat::repeat(r, || process_start(StartMethod::ForkServer, plan.starts));
    f.bare_fork = Stat::repeat(r, || bare_fork(plan.starts));
    step("locks, values, arrays");
    f.lock = Stat::repeat(r, || lock_cycle(plan.items));
    f.value_inc = Stat::repeat(r, || value_inc(plan.items));
    let len = plan.array_bytes / 8;
    let sums: Vec<(f64, f64)> = (0..r).map(|_| array_sum(len)).collect();
    f.array_sum_first = Stat::of(sums.iter().map(|s| s.0).collect());
    f.array_sum = Stat::of(sums.iter().map(|s| s.1).collect());
    f.vec_sum = Stat::repeat(r, || vec_sum(len));
    Ok(f)
}

/// Runs `benches/python/baselines.py`; `Err` says why there are no Python figures.
pub fn python(quick: bool) -> Result<HashMap<String, Stat>, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/python/baselines.py"
    );
    eprintln!("  python baselines");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script);
    if quick {
        cmd.arg("--quick");
    }
    parse_python(cmd)
}

/// Runs a baselines script and reads its `name<TAB>median<TAB>unit<TAB>min<TAB>max` lines.
pub fn parse_python(mut cmd: std::process::Command) -> Result<HashMap<String, Stat>, String> {
    let script = format!("{:?}", cmd.get_args().next().unwrap_or_default());
    let out = cmd
        .output()
        .map_err(|e| format!("python3 could not be run ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 {script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.split('\t').collect();
        if let [name, median, _unit, min, max] = parts[..] {
            if let (Ok(median), Ok(min), Ok(max)) = (median.parse(), min.parse(), max.parse()) {
                m.insert(name.to_owned(), Stat { median, min, max });
            }
        }
    }
    Ok(m)
}
