//! `mproc-bench`: one run that measures mproc beside what a user would pick instead — crossbeam
//! in-process (the physical reference), pipes and socketpairs between processes, a local
//! `Vec`, and Python's `multiprocessing` — on this machine, in this run, and writes the
//! ratios to `BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p mproc-bench                 # full run (< 10 min on 2 cores)
//! cargo run --release -p mproc-bench -- --quick      # smoke run (< 1 min), numbers rough
//! cargo run --release -p mproc-bench -- --out FILE   # write somewhere else
//! cargo run --release -p mproc-bench -- --pod-1to1 5 # only PodQueue 1→1, ns/item per rep
//! cargo run --release -p mproc-bench -- --async 3     # only the async figures, per rep
//! ```
//!
//! Every figure is the median of several repetitions, printed with its min and max.

use std::fmt::Write as _;
use std::time::Instant;

mod asyncs;
mod bodies;
mod figures;
mod locks;
mod pipes;
mod pools;
mod pypkg;
mod redisq;
mod stats;
mod vocab;

use stats::Stat;

/// Run sizes.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Repetitions per figure.
    pub reps: usize,
    /// Items for throughput figures.
    pub items: u64,
    /// Rounds for round-trip figures.
    pub rounds: u64,
    /// Starts for process/pool start figures.
    pub starts: usize,
    /// Bytes of the array summed from another process.
    pub array_bytes: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                reps: 1,
                items: 50_000,
                rounds: 2_000,
                starts: 3,
                array_bytes: 4 << 20,
            }
        } else {
            Plan {
                reps: 5,
                items: 2_000_000,
                rounds: 50_000,
                starts: 30,
                array_bytes: 64 << 20,
            }
        }
    }
}

/// One comparison in the table: an mproc figure, its baseline, and how to read them.
struct Row {
    what: String,
    mproc: Option<Stat>,
    baseline_name: String,
    baseline: Option<Stat>,
    /// How the ratio is formed and the target it is read against.
    rule: Rule,
}

#[derive(Clone, Copy)]
enum Rule {
    /// baseline / mproc (mproc is faster when > 1); target: at least this.
    FasterBy(f64),
    /// baseline / mproc with no target (shown for information).
    Info,
    /// mproc at most this many times the baseline (a floor it stands on).
    WithinTimes(f64),
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        Some(self.baseline.as_ref()?.median / self.mproc.as_ref()?.median)
    }

    fn verdict(&self) -> String {
        // A target as people write it: 0.67, not 0.6666666666666666.
        let short = |t: f64| (t * 100.0).round() / 100.0;
        match (self.rule, self.ratio()) {
            (_, None) => "not measured".into(),
            (Rule::FasterBy(t), Some(r)) if r >= t => format!("met (target ≥ {}×)", short(t)),
            (Rule::FasterBy(t), Some(_)) => format!("**missed** (target ≥ {}×)", short(t)),
            (Rule::Info, Some(_)) => "—".into(),
            (Rule::WithinTimes(t), Some(r)) if 1.0 / r <= t => {
                format!("met (target: within {}× of it)", short(t))
            }
            (Rule::WithinTimes(t), Some(_)) => {
                format!("**missed** (target: within {}× of it)", short(t))
            }
        }
    }
}

fn fmt_stat(s: &Option<Stat>) -> String {
    match s {
        Some(s) => s.to_string(),
        None => "n/a".into(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{n} CPUs, {cpu}, Linux {kernel}")
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The rows of large messages (see `bodies.rs`), with the targets of the arena's issue:
/// 1 KiB ≥ 10× Python's `mp.Queue` and ≥ 1.5× a pipe, 1 MiB ≥ 0.5× one `memcpy` of the body,
/// the loan round trip flat (4 MiB within 2× of 64 B).
fn body_rows(b: &bodies::Bodies, pyv: &dyn Fn(&str) -> Option<Stat>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, &size) in bodies::SIZES.iter().enumerate() {
        let h = bodies::human(size);
        let bytes = b.bytes.get(i).cloned().flatten();
        rows.push(Row {
            what: format!("`ByteQueue` 1→1, {h} messages, µs/msg"),
            mproc: bytes.clone(),
            baseline_name: format!("Python `mp.Queue` of {h} `bytes`"),
            baseline: pyv(&format!("queue_bytes_{size}")),
            rule: if size == 1 << 10 {
                Rule::FasterBy(10.0)
            } else {
                Rule::Info
            },
        });
        rows.push(Row {
            what: format!("`ByteQueue` 1→1, {h} messages, µs/msg"),
            mproc: bytes.clone(),
            baseline_name: format!("pipe, {h} writes"),
            baseline: b.pipe.get(i).cloned().flatten(),
            rule: if size == 1 << 10 {
                Rule::FasterBy(1.5)
            } else {
                Rule::Info
            },
        });
        rows.push(Row {
            what: format!("`ByteQueue` 1→1, {h} messages, µs/msg"),
            mproc: bytes.clone(),
            baseline_name: format!("one `memcpy` of {h}, one process"),
            baseline: b.memcpy.get(i).cloned().flatten(),
            rule: if size == 1 << 20 {
                Rule::FasterBy(0.5)
            } else {
                Rule::Info
            },
        });
        let vec = b.vec.get(i).cloned().flatten();
        rows.push(Row {
            what: format!("`Queue<Vec<u8>>` 1→1, {h} messages, µs/msg"),
            mproc: vec.clone(),
            baseline_name: format!("Python `mp.Queue` of {h} `bytes`"),
            baseline: pyv(&format!("queue_bytes_{size}")),
            rule: if size == 64 << 10 {
                Rule::FasterBy(10.0)
            } else {
                Rule::Info
            },
        });
        rows.push(Row {
            what: format!("`Queue<Vec<u8>>` 1→1, {h} messages, µs/msg"),
            mproc: vec.clone(),
            baseline_name: format!("`ByteQueue` 1→1, {h}"),
            baseline: bytes.clone(),
            rule: Rule::FasterBy(0.7),
        });
        if size == 1 << 10 {
            rows.push(Row {
                what: format!("`Queue<Vec<u8>>` 1→1, {h} messages, µs/msg"),
                mproc: vec.clone(),
                baseline_name: format!("pipe, {h} writes"),
                baseline: b.pipe.get(i).cloned().flatten(),
                rule: Rule::FasterBy(2.0),
            });
        }
        rows.push(Row {
            what: format!(
                "`Queue<Frame {{ id: u64, payload: Vec<u8> }}>` 1→1, {h} payloads, µs/msg"
            ),
            mproc: b.frame.get(i).cloned().flatten(),
            baseline_name: format!("`Queue<Vec<u8>>` 1→1, {h}"),
            baseline: vec.clone(),
            rule: if size == 64 << 10 {
                Rule::FasterBy(1.0 / 1.5)
            } else {
                Rule::Info
            },
        });
        rows.push(Row {
            what: format!("`Queue<String>` 1→1, {h} messages, µs/msg"),
            mproc: b.string.get(i).cloned().flatten(),
            baseline_name: format!("`ByteQueue` 1→1, {h}"),
            baseline: bytes.clone(),
            rule: if size == 1 << 10 {
                Rule::FasterBy(0.7)
            } else {
                Rule::Info
            },
        });
    }
    let small = b.loan_rtt.first().cloned().flatten();
    for (i, &size) in bodies::LOAN_SIZES.iter().enumerate().skip(1) {
        let last = i + 1 == bodies::LOAN_SIZES.len();
        rows.push(Row {
            what: format!("loan round trip, {}, µs", bodies::human(size)),
            mproc: b.loan_rtt.get(i).cloned().flatten(),
            baseline_name: "loan round trip, 64 B".into(),
            baseline: small.clone(),
            rule: if last {
                Rule::FasterBy(0.5)
            } else {
                Rule::Info
            },
        });
    }
    rows
}

/// The repetition count after `flag` (`--ab 3`), if the flag is there.
fn reps_of(args: &[String], flag: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.parse().ok()
}

/// Rows as lines on stdout (the `--redis` and `--python` runs).
fn print_rows(rows: &[Row]) {
    for r in rows {
        println!(
            "{}: {} | {}: {} | {}",
            r.what,
            fmt_stat(&r.mproc),
            r.baseline_name,
            fmt_stat(&r.baseline),
            r.ratio().map_or("n/a".into(), |x| format!("{x:.2}×"))
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "BENCHMARKS.md".into());
    let plan = Plan::new(quick);
    let started = Instant::now();
    // `--async REPS`: only the async figures, each repetition printed.
    if let Some(reps) = reps_of(&args, "--async") {
        for _ in 0..reps {
            println!(
                "async rtt {:.2} µs | tokio UnixStream rtt {:.2} µs | async 1→1 {:.1} ns",
                asyncs::async_rtt(plan.rounds),
                asyncs::tokio_unix_rtt(plan.rounds),
                asyncs::async_1to1(plan.items)
            );
        }
        return Ok(());
    }
    // `--pod-1to1 REPS`: only the PodQueue 1→1 figure, each repetition printed (for A/B runs
    // of two builds alternating on one machine).
    if let Some(reps) = reps_of(&args, "--pod-1to1") {
        for _ in 0..reps {
            println!("{:.2}", figures::pod_1to1(plan.items));
        }
        return Ok(());
    }

    // `--bytes REPS`: `Queue<Vec<u8>>`, `Queue<Frame>` (a struct with a `Vec<u8>` payload)
    // and `Queue<String>` beside `ByteQueue` between two processes, at 1 KiB and 64 KiB, µs
    // per message, one line per repetition.
    if let Some(reps) = reps_of(&args, "--bytes") {
        for _ in 0..reps {
            for size in [1 << 10, 64 << 10] {
                let n = if size < 4096 { 200_000 } else { 20_000 };
                let (b, v) = (bodies::bytes_1to1(size, n), bodies::vec_1to1(size, n));
                let f = bodies::typed_1to1(size, n, bodies::frame_of);
                let s = bodies::typed_1to1(size, n, bodies::string_of);
                println!(
                    "{:>6}: ByteQueue {b:.3} µs | Queue<Vec<u8>> {v:.3} µs ({:.2}×) | \
                     Queue<Frame> {f:.3} µs ({:.2}× the Vec) | Queue<String> {s:.3} µs ({:.2}×)",
                    bodies::human(size),
                    b / v,
                    v / f,
                    b / s
                );
            }
        }
        return Ok(());
    }
    // `--pool REPS`: Pool.map (chunksize 1 and default) µs/task, apply_async round trip µs,
    // Pool(2) start + join µs, Process start + join by fork and a bare fork µs.
    if let Some(reps) = reps_of(&args, "--pool") {
        for _ in 0..reps {
            let m = |s: Option<Stat>| s.map_or(f64::NAN, |s| s.median);
            println!(
                "map c1 {:.3} µs | map default {:.3} µs | apply {:.3} µs | Pool(2) {:.0} µs | \
                 Process fork {:.0} µs | bare fork {:.0} µs",
                m(pools::pool_map(Some(1), 1)),
                m(pools::pool_map(None, 1)),
                m(pools::pool_apply(2000, 1)),
                pools::pool_start(20),
                pools::process_start(mproc::prelude::StartMethod::Fork, 200),
                pools::bare_fork(200)
            );
        }
        return Ok(());
    }
    // `--python`: only the Python package's rows.
    if args.iter().any(|a| a == "--python") {
        print_rows(&pypkg::rows(quick));
        return Ok(());
    }
    // `--vocab REPS`: `pipe()` round trip and `Broadcast` 1→4 against `PodQueue` 1→1.
    if let Some(reps) = reps_of(&args, "--vocab") {
        for _ in 0..reps {
            println!(
                "pipe() rtt {:.2} µs | Broadcast 1→4 {:.1} ns/item/subscriber | PodQueue 1→1 \
                 {:.1} ns/item | Dict get {:.0} ns, insert {:.0} ns",
                vocab::conn_rtt(plan.rounds),
                vocab::bcast_1ton(
                    plan.items,
                    std::env::var("SUBS")
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(4)
                ),
                figures::pod_1to1(plan.items),
                vocab::dict_get(plan.items),
                vocab::dict_insert(plan.items / 4),
            );
        }
        return Ok(());
    }
    if let Some(reps) = reps_of(&args, "--redis-apply") {
        redisq::apply_only(reps);
        return Ok(());
    }
    if let Some(reps) = reps_of(&args, "--redis-batch") {
        redisq::batch_only(reps);
        return Ok(());
    }
    // `--redis REPS`: only the Redis rows (queues and the remote pool against bare redis-rs).
    if let Some(reps) = reps_of(&args, "--redis") {
        print_rows(&redisq::rows(reps, quick));
        return Ok(());
    }
    // `--fair REPS`: the fair in-process references (one loop shape, pinned), ns per item.
    if let Some(reps) = reps_of(&args, "--fair") {
        for _ in 0..reps {
            println!(
                "pinned, blocking: PodQueue procs {:.2} ns | PodQueue threads {:.2} ns | \
                 std sync_channel threads {:.2} ns | put_many/get_many procs {:.2} ns",
                figures::pinned_pod_procs(plan.items),
                figures::pinned_pod_threads(plan.items),
                figures::pinned_std_threads(plan.items),
                figures::pinned_pod_batch_procs(plan.items)
            );
        }
        return Ok(());
    }
    // `--ab REPS`: the three figures the liveness work could move (uncontended lock ns,
    // PodQueue 1→1 ns/item, blocking round trip µs), one line per repetition: run two builds'
    // binaries alternately and compare (this VM has slow phases).
    if let Some(reps) = reps_of(&args, "--ab") {
        for _ in 0..reps {
            println!(
                "lock {:.2} ns | pod 1→1 {:.2} ns | rtt {:.2} µs | busy-poll rtt {:.2} µs",
                figures::lock_cycle(plan.items),
                figures::pod_1to1(plan.items),
                figures::rtt(plan.rounds),
                figures::rtt_busy(plan.rounds)
            );
        }
        return Ok(());
    }

    eprintln!("mproc-bench: {} run", if quick { "quick" } else { "full" });
    let f = figures::measure_all(&plan)?;
    let py = figures::python(quick);
    let pyv = |k: &str| py.as_ref().ok().and_then(|m| m.get(k).cloned());

    let mut rows = vec![
        Row {
            what: "`PodQueue<u64>` 1→1, 2 processes, pinned, blocking, ns/item".into(),
            mproc: f.pinned_pod_procs.clone(),
            baseline_name: "std `sync_channel`, 2 threads, pinned, blocking".into(),
            baseline: f.pinned_std_threads.clone(),
            rule: Rule::FasterBy(1.0),
        },
        Row {
            what: "`PodQueue<u64>` 1→1, 2 threads, pinned, blocking, ns/item".into(),
            mproc: f.pinned_pod_threads.clone(),
            baseline_name: "std `sync_channel`, 2 threads, pinned, blocking".into(),
            baseline: f.pinned_std_threads.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "`PodQueue<u64>` `put_many`/`get_many` ×64, 2 processes, pinned, ns/item".into(),
            mproc: f.pinned_pod_batch_procs.clone(),
            baseline_name: "std `sync_channel`, 2 threads, pinned, blocking".into(),
            baseline: f.pinned_std_threads.clone(),
            rule: Rule::FasterBy(1.5),
        },
        Row {
            what: "`PodQueue<u64>` 1→1, ns/item".into(),
            mproc: f.pod_1to1.clone(),
            baseline_name: "crossbeam `ArrayQueue`, 2 threads, busy-polling".into(),
            baseline: f.crossbeam_1to1.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "`PodQueue<u64>` 1→1 with `put_many`/`get_many` ×64, ns/item".into(),
            mproc: f.pod_1to1_batch.clone(),
            baseline_name: "crossbeam `ArrayQueue`, 2 threads, busy-polling".into(),
            baseline: f.crossbeam_1to1.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "`PodQueue<u64>` 4→4 (8 processes), ns/item".into(),
            mproc: f.pod_4to4.clone(),
            baseline_name: "crossbeam `ArrayQueue`, 2 threads".into(),
            baseline: f.crossbeam_1to1.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "`Queue<(u64, f64, [u8; 8])>` 1→1, ns/item".into(),
            mproc: f.msg_1to1.clone(),
            baseline_name: "Python `mp.Queue` 1→1".into(),
            baseline: pyv("queue_1to1"),
            rule: Rule::FasterBy(50.0),
        },
        Row {
            what: "`Queue<(u64, f64, [u8; 8])>` 4→4, ns/item".into(),
            mproc: f.msg_4to4.clone(),
            baseline_name: "Python `mp.Queue` 1→1".into(),
            baseline: pyv("queue_1to1"),
            rule: Rule::Info,
        },
        Row {
            what: "pipe 1→1, 8-byte writes, ns/item (baseline row)".into(),
            mproc: f.pipe_1to1.clone(),
            baseline_name: "`PodQueue<u64>` 1→1".into(),
            baseline: f.pod_1to1.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "ping-pong round trip (`PodQueue<u64>` pair), µs".into(),
            mproc: f.rtt.clone(),
            baseline_name: "two pipes, 8 B".into(),
            baseline: f.pipe_rtt_8.clone(),
            rule: Rule::FasterBy(20.0),
        },
        Row {
            what: "ping-pong round trip (blocking `get`/`put`), µs".into(),
            mproc: f.rtt.clone(),
            baseline_name: "the same pair busy-polling (`try_get` loops)".into(),
            baseline: f.rtt_busy.clone(),
            rule: Rule::WithinTimes(2.0),
        },
        Row {
            what: "ping-pong round trip, µs".into(),
            mproc: f.rtt.clone(),
            baseline_name: "socketpair, 8 B".into(),
            baseline: f.sock_rtt_8.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "async ping-pong round trip (`get_async`/`put_async`, tokio each side), µs"
                .into(),
            mproc: f.async_rtt.clone(),
            baseline_name: "tokio `UnixStream` pair, 8 B".into(),
            baseline: f.tokio_unix_rtt.clone(),
            rule: Rule::FasterBy(5.0),
        },
        Row {
            what: "async ping-pong round trip, µs".into(),
            mproc: f.async_rtt.clone(),
            baseline_name: "blocking `PodQueue<u64>` pair".into(),
            baseline: f.rtt.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "`pipe()` round trip, 8 B (`send_bytes`/`recv_bytes_into`), µs".into(),
            mproc: f.conn_rtt.clone(),
            baseline_name: "Python `multiprocessing.Pipe` `send_bytes`/`recv_bytes`".into(),
            baseline: pyv("pipe_rtt_8b"),
            rule: Rule::FasterBy(20.0),
        },
        Row {
            what: "`PodBroadcast<u64>` 1→4 blocking subscribers, ns/item per subscriber".into(),
            mproc: f.bcast_1to4.clone(),
            baseline_name: "`PodQueue<u64>` 1→1".into(),
            baseline: f.pod_1to1.clone(),
            rule: Rule::FasterBy(0.5),
        },
        Row {
            what: "`Dict<u64, u64>` `get`, 1000 keys, a writer in another process, µs".into(),
            mproc: f.dict_get.clone(),
            baseline_name: "Python `Manager().dict()` `d[k]`".into(),
            baseline: pyv("manager_dict_get"),
            rule: Rule::FasterBy(100.0),
        },
        Row {
            what: "`Dict<u64, u64>` `insert` (overwrite), 1000 keys, µs".into(),
            mproc: f.dict_insert.clone(),
            baseline_name: "Python `Manager().dict()` `d[k] = v`".into(),
            baseline: pyv("manager_dict_set"),
            rule: Rule::FasterBy(50.0),
        },
        Row {
            what: "async `PodQueue<u64>` 1→1 (`put_async`/`get_async`), ns/item".into(),
            mproc: f.async_1to1.clone(),
            baseline_name: "blocking `PodQueue<u64>` 1→1".into(),
            baseline: f.pod_1to1.clone(),
            rule: Rule::FasterBy(0.5),
        },
        Row {
            what: "ping-pong round trip, 1 KiB (`Queue<Vec<u8>>`), µs".into(),
            mproc: f.rtt_1k.clone(),
            baseline_name: "two pipes, 1 KiB".into(),
            baseline: f.pipe_rtt_1k.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "ping-pong round trip, 1 KiB (`Queue<Vec<u8>>`), µs".into(),
            mproc: f.rtt_1k.clone(),
            baseline_name: "socketpair, 1 KiB".into(),
            baseline: f.sock_rtt_1k.clone(),
            rule: Rule::Info,
        },
        Row {
            what: "ping-pong round trip, µs".into(),
            mproc: f.rtt.clone(),
            baseline_name: "Python `mp.Queue` round trip".into(),
            baseline: pyv("queue_rtt"),
            rule: Rule::Info,
        },
        Row {
            what: "`Pool.map` trivial fn, chunksize 1, µs/task".into(),
            mproc: f.pool_map_c1.clone(),
            baseline_name: "Python `Pool.map`, chunksize 1".into(),
            baseline: pyv("pool_map_c1"),
            rule: Rule::FasterBy(20.0),
        },
        Row {
            what: "`Pool.map` trivial fn, default chunksize, µs/task".into(),
            mproc: f.pool_map_default.clone(),
            baseline_name: "Python `Pool.map`, default chunksize".into(),
            baseline: pyv("pool_map_default"),
            rule: Rule::FasterBy(20.0),
        },
        Row {
            what: "`apply_async(..).get()` round trip, µs".into(),
            mproc: f.pool_apply.clone(),
            baseline_name: "Python `apply_async(..).get()`".into(),
            baseline: pyv("pool_apply"),
            rule: Rule::FasterBy(50.0),
        },
        Row {
            what: "`Pool` of 2: start + join, µs".into(),
            mproc: f.pool_start.clone(),
            baseline_name: "Python `Pool(2)` + close + join".into(),
            baseline: pyv("pool_start"),
            rule: Rule::FasterBy(10.0),
        },
        Row {
            what: "`Process` start + join, fork, µs".into(),
            mproc: f.process_fork.clone(),
            baseline_name: "Python `Process`, fork".into(),
            baseline: pyv("process_fork"),
            rule: Rule::FasterBy(20.0),
        },
        Row {
            what: "`Process` start + join, fork, µs".into(),
            mproc: f.process_fork.clone(),
            baseline_name: "bare fork + _exit + waitpid".into(),
            baseline: f.bare_fork.clone(),
            rule: Rule::WithinTimes(1.5),
        },
        Row {
            what: "`Process` start + join, fork server, µs".into(),
            mproc: f.process_forkserver.clone(),
            baseline_name: "bare fork + _exit + waitpid".into(),
            baseline: f.bare_fork.clone(),
            rule: Rule::WithinTimes(1.5),
        },
        Row {
            what: "`Process` start + join, spawn, µs".into(),
            mproc: f.process_spawn.clone(),
            baseline_name: "Python `Process`, spawn".into(),
            baseline: pyv("process_spawn"),
            rule: Rule::FasterBy(20.0),
        },
        Row {
            what: "`Lock` lock + unlock, uncontended, ns".into(),
            mproc: f.lock.clone(),
            baseline_name: "Python `mp.Lock`".into(),
            baseline: pyv("lock"),
            rule: Rule::Info,
        },
        Row {
            what: "`Value<u64>` locked increment, ns".into(),
            mproc: f.value_inc.clone(),
            baseline_name: "Python `mp.Value` under its lock".into(),
            baseline: pyv("value_inc"),
            rule: Rule::Info,
        },
        Row {
            what: "`Array<f64>` summed in another process, ms".into(),
            mproc: f.array_sum.clone(),
            baseline_name: "local `Vec<f64>` sum".into(),
            baseline: f.vec_sum.clone(),
            rule: Rule::FasterBy(0.95),
        },
        Row {
            what: "… its first pass in the child (page faults included), ms".into(),
            mproc: f.array_sum_first.clone(),
            baseline_name: "local `Vec<f64>` sum".into(),
            baseline: f.vec_sum.clone(),
            rule: Rule::Info,
        },
    ];

    let l = locks::measure(plan.reps, plan.items);
    rows.push(Row {
        what: "`Lock` lock + unlock, uncontended, ns".into(),
        mproc: f.lock.clone(),
        baseline_name: "robust pthread mutex (the lock it replaced)".into(),
        baseline: l.pthread.clone(),
        rule: Rule::FasterBy(1.0),
    });
    rows.push(Row {
        what: "`Lock` handed between 2 processes, ns/acquisition".into(),
        mproc: l.mproc_contended.clone(),
        baseline_name: "robust pthread mutex, same".into(),
        baseline: l.pthread_contended.clone(),
        rule: Rule::FasterBy(1.0),
    });
    let b = bodies::measure(plan.reps, plan.rounds, quick);
    rows.extend(body_rows(&b, &pyv));
    rows.extend(redisq::rows(plan.reps, quick));
    rows.extend(pypkg::rows(quick));

    let mut md = String::new();
    writeln!(md, "# mproc benchmarks\n")?;
    writeln!(
        md,
        "Generated by `cargo run --release -p mproc-bench{}` on {} ({}), in {:.0} s. \
         Each cell is the median of {} repetition(s) with [min – max]. Ratios are \
         baseline ÷ mproc from this same run (> 1: mproc is faster), read against the \
         project's targets.\n",
        if quick { " -- --quick" } else { "" },
        today(),
        machine(),
        started.elapsed().as_secs_f64(),
        plan.reps
    )?;
    if quick {
        writeln!(
            md,
            "**Quick run**: small sizes, one repetition — a smoke test of the harness, not numbers to quote.\n"
        )?;
    }
    if let Err(why) = &py {
        writeln!(md, "Python baselines skipped: {why}.\n")?;
    }
    writeln!(
        md,
        "| what | mproc | baseline | baseline figure | ratio | target |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.what,
            fmt_stat(&r.mproc),
            r.baseline_name,
            fmt_stat(&r.baseline),
            r.ratio().map_or("n/a".into(), |x| format!("{x:.2}×")),
            r.verdict()
        )?;
    }
    md.push_str(figures::DEFINITIONS);
    std::fs::write(&out, &md)?;
    println!("{md}");
    eprintln!("mproc-bench: wrote {out} in {:.0?}", started.elapsed());
    Ok(())
}
