//! Queues and the remote pool on Redis, against bare redis-rs loops on the same local
//! redis-server, in the same run. A producer thread and a consumer thread, each with its own
//! connection; µs per message (or per task).

use std::time::{Duration, Instant};

use mproc::redis::{Redis, RedisQueue, RemotePool, Task, Worker};
use mproc_testkit::RedisServer;
use redis::Commands;

use crate::stats::Stat;
use crate::{Row, Rule};

const BATCH: usize = 64;

fn per(t: Duration, n: usize) -> f64 {
    t.as_secs_f64() * 1e6 / n as f64
}

fn bare(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to the benchmark's redis-server")
}

/// Runs `produce` and `consume` on two threads; µs per message over `n`.
fn pair(n: usize, produce: impl FnOnce() + Send, consume: impl FnOnce() + Send) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(produce);
        s.spawn(consume);
    });
    per(t.elapsed(), n)
}

/// A queue of its own for `f` (a producer handle and a consumer handle), removed after;
/// acknowledged (a stream), or at most once (a list) if `plain`.
fn with_queue(
    url: &str,
    name: &str,
    plain: bool,
    f: impl FnOnce(&RedisQueue<u64>, &RedisQueue<u64>) -> f64,
) -> f64 {
    let r = Redis::connect(url).expect("connect");
    let mut opts = r.queue(name).capacity(1 << 20);
    if plain {
        opts = opts.at_most_once();
    }
    let q = opts.create::<u64>().expect("queue");
    let c = q.try_clone().expect("clone");
    let v = f(&q, &c);
    drop((q, c));
    r.unlink_queue(name).expect("unlink");
    v
}

fn mproc_single(url: &str, name: &str, plain: bool, n: usize) -> f64 {
    with_queue(url, name, plain, |q, c| {
        pair(
            n,
            || (0..n as u64).for_each(|i| q.put(i).expect("put")),
            || {
                for _ in 0..n {
                    c.get().expect("get");
                }
            },
        )
    })
}

fn mproc_batch(url: &str, name: &str, plain: bool, n: usize) -> f64 {
    with_queue(url, name, plain, |q, c| {
        pair(
            n,
            || {
                for b in (0..n as u64).collect::<Vec<_>>().chunks(BATCH) {
                    q.put_many(b.to_vec()).expect("put_many");
                }
            },
            || {
                let (mut got, mut buf) = (0, Vec::new());
                while got < n {
                    buf.clear();
                    got += c.get_many(&mut buf, BATCH).expect("get_many");
                }
                c.ack().expect("ack");
            },
        )
    })
}

/// LPUSH / BRPOP, one item per command: no acknowledgement.
fn bare_list(url: &str, key: &str, n: usize) -> f64 {
    let (mut p, mut c) = (bare(url), bare(url));
    pair(
        n,
        || (0..n as u64).for_each(|i| p.lpush::<_, _, ()>(key, i).expect("lpush")),
        || {
            for _ in 0..n {
                let _: (String, u64) = c.brpop(key, 0.0).expect("brpop");
            }
        },
    )
}

/// The reliable list: BLMOVE into a processing list, LREM to acknowledge; one at a time.
fn bare_reliable(url: &str, key: &str, n: usize) -> f64 {
    let (mut p, mut c) = (bare(url), bare(url));
    let work = format!("{key}:processing");
    pair(
        n,
        || (0..n as u64).for_each(|i| p.lpush::<_, _, ()>(key, i).expect("lpush")),
        || {
            for _ in 0..n {
                let v: u64 = redis::cmd("BLMOVE")
                    .arg(key)
                    .arg(&work)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .arg(0)
                    .query(&mut c)
                    .expect("blmove");
                let _: i64 = c.lrem(&work, 1, v).expect("lrem");
            }
        },
    )
}

/// LPUSH of 64 values / LPOP with a count of 64 (no acknowledgement).
fn bare_list_batch(url: &str, key: &str, n: usize) -> f64 {
    let (mut p, mut c) = (bare(url), bare(url));
    pair(
        n,
        || {
            for b in (0..n as u64).collect::<Vec<_>>().chunks(BATCH) {
                p.lpush::<_, _, ()>(key, b).expect("lpush");
            }
        },
        || {
            let mut got = 0;
            while got < n {
                let v: Option<Vec<u64>> = redis::cmd("RPOP")
                    .arg(key)
                    .arg(BATCH)
                    .query(&mut c)
                    .expect("rpop");
                got += v.map_or(0, |v| v.len());
            }
        },
    )
}

/// XADD ×64 pipelined / XREADGROUP COUNT 64 + XACK: a stream's acknowledged batch.
fn bare_stream_batch(url: &str, key: &str, n: usize) -> f64 {
    let (mut p, mut c) = (bare(url), bare(url));
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", key, "g", "$", "MKSTREAM"])
        .query(&mut p)
        .expect("xgroup");
    pair(
        n,
        || {
            for b in (0..n as u64).collect::<Vec<_>>().chunks(BATCH) {
                let mut pipe = redis::pipe();
                for v in b {
                    pipe.cmd("XADD").arg(key).arg("*").arg("v").arg(*v).ignore();
                }
                pipe.query::<()>(&mut p).expect("xadd");
            }
        },
        || {
            let mut got = 0;
            while got < n {
                let r: redis::Value = redis::cmd("XREADGROUP")
                    .arg(&["GROUP", "g", "c", "COUNT"])
                    .arg(BATCH)
                    .arg(&["BLOCK", "1000", "STREAMS", key, ">"])
                    .query(&mut c)
                    .expect("xreadgroup");
                let ids = stream_ids(&r);
                got += ids.len();
                if !ids.is_empty() {
                    let _: i64 = redis::cmd("XACK")
                        .arg(key)
                        .arg("g")
                        .arg(&ids)
                        .query(&mut c)
                        .expect("xack");
                }
            }
        },
    )
}

fn stream_ids(v: &redis::Value) -> Vec<String> {
    use redis::Value::{Array, BulkString, Map};
    let entries: Vec<&redis::Value> = match v {
        Array(s) => s
            .iter()
            .filter_map(|s| match s {
                Array(kv) => kv.get(1),
                _ => None,
            })
            .collect(),
        Map(m) => m.iter().map(|(_, e)| e).collect(),
        _ => Vec::new(),
    };
    entries
        .into_iter()
        .filter_map(|e| match e {
            Array(es) => Some(es),
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            Array(parts) => match parts.first() {
                Some(BulkString(id)) => Some(String::from_utf8_lossy(id).into_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn inc(x: u64) -> u64 {
    x + 1
}
const INC: Task<u64, u64> = Task::new("inc", inc);

/// A worker of the benchmark's remote pool, in a thread of this process (its local pool's
/// two processes run the tasks).
fn remote_map(url: &str, tasks: usize, rounds: usize) -> (f64, f64) {
    let r = Redis::connect(url).expect("connect");
    // The worker runs in a thread of this (threaded) process: its local pool forks anyway.
    let launch =
        mproc::prelude::LaunchOptions::default().threaded_fork(mproc::prelude::ThreadedFork::Allow);
    let worker = Worker::new(&r, "bench-pool")
        .processes(2)
        .launch_options(launch)
        .register(&INC);
    let stop = worker.stop_flag();
    let w = std::thread::spawn(move || worker.run());
    let pool = RemotePool::connect(&r, "bench-pool").expect("pool");
    // Warm the worker up before timing.
    pool.map(&INC, vec![1; 8]).expect("warm-up");
    let t = Instant::now();
    let out = pool.map(&INC, (0..tasks as u64).collect()).expect("map");
    let map = per(t.elapsed(), tasks);
    assert_eq!(out.len(), tasks);
    let t = Instant::now();
    for i in 0..rounds as u64 {
        assert_eq!(pool.apply(&INC, i).expect("apply"), i + 1);
    }
    let apply = per(t.elapsed(), rounds);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = w.join();
    drop(pool);
    let _ = r.unlink_queue("bench-pool");
    (map, apply)
}

/// A virtual environment under `target/` with RQ, Celery and redis-py, made (and filled from
/// PyPI) on first use: the Python baselines' interpreter.
fn python_env() -> Result<std::path::PathBuf, String> {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/bench-venv"
    ));
    let python = dir.join("bin/python");
    let ready = || {
        std::process::Command::new(&python)
            .args(["-c", "import rq, celery, redis, packaging"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        return Ok(python);
    }
    eprintln!(
        "  installing RQ and Celery from PyPI into {}",
        dir.display()
    );
    let run = |cmd: &mut std::process::Command| {
        cmd.output()
            .map_err(|e| e.to_string())
            .and_then(|o| match o.status.success() {
                true => Ok(()),
                false => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            })
    };
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir))?;
    run(std::process::Command::new(dir.join("bin/pip")).args([
        "install",
        "-q",
        "rq>=2,<4",
        "celery>=5.3,<6",
        "redis>=5",
        "packaging",
    ]))?;
    if ready() {
        Ok(python)
    } else {
        Err("RQ or Celery does not import after installing them".into())
    }
}

/// BaseManager's queue, RQ and Celery, on `url` (benches/python/redis_baselines.py).
fn python_refs(url: &str, quick: bool) -> Result<std::collections::HashMap<String, Stat>, String> {
    let python = python_env()?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/python/redis_baselines.py"
    );
    eprintln!("  python baselines on Redis (BaseManager, RQ, Celery)");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script).args(["--url", url]);
    if quick {
        cmd.arg("--quick");
    }
    crate::figures::parse_python(cmd)
}

/// Only the acknowledged batch against the bare stream, alternating, `reps` rounds: for
/// working on that row (`mproc-bench --redis-batch REPS`). Prints µs/msg of each round.
pub(crate) fn batch_only(reps: usize) {
    let server = RedisServer::start();
    let url = server.url();
    let nb = 200_000;
    // MPROC_BENCH_ONLY=mproc or =bare runs one side (to profile it).
    let only = std::env::var("MPROC_BENCH_ONLY").unwrap_or_default();
    for i in 0..reps {
        let m = if only == "bare" {
            f64::NAN
        } else {
            mproc_batch(&url, &format!("ab-m{i}"), false, nb)
        };
        let b = if only == "mproc" {
            f64::NAN
        } else {
            bare_stream_batch(&url, &format!("ab-b{i}"), nb)
        };
        if std::env::var_os("MPROC_BENCH_STATS").is_some() {
            let mut c = bare(&url);
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut c)
                .expect("info");
            let cpu: String = redis::cmd("INFO").arg("cpu").query(&mut c).expect("info");
            println!("{info}{cpu}");
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query(&mut c)
                .expect("resetstat");
        }
        println!(
            "round {i}: mproc {m:.3} µs/msg, bare stream {b:.3} µs/msg, {:.2}×",
            b / m
        );
    }
}

/// `--redis-apply N`: N rounds of 2,000 `RemotePool.apply` round trips, with the spread of
/// single round trips (to find where a slow mode comes from).
pub(crate) fn apply_only(reps: usize) {
    let server = RedisServer::start();
    let url = server.url();
    for i in 0..reps {
        let r = Redis::connect(&url).expect("connect");
        let launch = mproc::prelude::LaunchOptions::default()
            .threaded_fork(mproc::prelude::ThreadedFork::Allow);
        let name = format!("apply-{i}");
        let worker = Worker::new(&r, &name)
            .processes(2)
            .launch_options(launch)
            .register(&INC);
        let stop = worker.stop_flag();
        let w = std::thread::spawn(move || worker.run());
        let pool = RemotePool::connect(&r, &name).expect("pool");
        pool.map(&INC, vec![1; 8]).expect("warm-up");
        let mut each: Vec<f64> = (0..2000u64)
            .map(|i| {
                let t = Instant::now();
                assert_eq!(pool.apply(&INC, i).expect("apply"), i + 1);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        each.sort_by(f64::total_cmp);
        let q = |f: f64| each[((each.len() - 1) as f64 * f) as usize];
        println!(
            "round {i}: apply µs p10 {:.0} p50 {:.0} p90 {:.0} p99 {:.0} max {:.0}",
            q(0.1),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = w.join();
        drop(pool);
        let _ = r.unlink_queue(&name);
    }
}

/// The Redis rows. Without a `redis-server` to start, they say so (`cargo xtask deps`
/// installs it).
pub(crate) fn rows(reps: usize, quick: bool) -> Vec<Row> {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        eprintln!("mproc-bench: redis-server not found: Redis rows skipped");
        return Vec::new();
    }
    let server = RedisServer::start();
    let url = server.url();
    let n = if quick { 500 } else { 20_000 };
    let nb = if quick { 2_000 } else { 200_000 };
    let mut k = 0;
    let mut key = || {
        k += 1;
        format!("bench-{k}")
    };
    let rep = |f: &mut dyn FnMut() -> f64| Stat::repeat(reps, f);
    let single = rep(&mut || mproc_single(&url, &key(), false, n));
    let plain_single = rep(&mut || mproc_single(&url, &key(), true, n));
    let plain = rep(&mut || bare_list(&url, &key(), n));
    let reliable = rep(&mut || bare_reliable(&url, &key(), n));
    let batch = rep(&mut || mproc_batch(&url, &key(), false, nb));
    let amo_batch = rep(&mut || mproc_batch(&url, &key(), true, nb));
    let plain_batch = rep(&mut || bare_list_batch(&url, &key(), nb));
    let stream_batch = rep(&mut || bare_stream_batch(&url, &key(), nb));
    let (tasks, rounds) = if quick { (100, 20) } else { (5_000, 500) };
    let remote: Vec<(f64, f64)> = (0..reps).map(|_| remote_map(&url, tasks, rounds)).collect();
    let map = Stat::of(remote.iter().map(|r| r.0).collect());
    let apply = Stat::of(remote.iter().map(|r| r.1).collect());
    let py = python_refs(&url, quick).unwrap_or_else(|why| {
        eprintln!("mproc-bench: Python baselines on Redis skipped: {why}");
        Default::default()
    });
    let pyref = |k: &str| py.get(k).cloned();
    drop(server);

    // A server that writes every command to disk before it answers.
    let durable = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = durable.url();
    let nd = if quick { 1_000 } else { 50_000 };
    let durable_batch = rep(&mut || mproc_batch(&url, &key(), false, nd));
    let durable_amo_batch = rep(&mut || mproc_batch(&url, &key(), true, nd));
    let durable_plain_batch = rep(&mut || bare_list_batch(&url, &key(), nd));
    let durable_stream_batch = rep(&mut || bare_stream_batch(&url, &key(), nd));
    drop(durable);

    let q = "`RedisQueue<u64>` 1→1";
    let d = "durable server (`appendfsync always`)";
    vec![
        Row {
            what: format!("{q}, one per call (acknowledged), µs/msg"),
            mproc: single.clone(),
            baseline_name: "bare redis-rs reliable list (BLMOVE + LREM), one at a time".into(),
            baseline: reliable,
            rule: Rule::FasterBy(0.8),
        },
        Row {
            what: format!("{q}, one per call, at most once, µs/msg"),
            mproc: plain_single,
            baseline_name: "bare redis-rs LPUSH / BRPOP, one per command (no ack)".into(),
            baseline: plain,
            rule: Rule::FasterBy(0.8),
        },
        Row {
            what: format!("{q}, `put_many`/`get_many` ×64 (acknowledged), µs/msg"),
            mproc: batch.clone(),
            baseline_name: "bare redis-rs stream: XADD ×64 pipelined / XREADGROUP 64 + XACK".into(),
            baseline: stream_batch,
            rule: Rule::FasterBy(0.7),
        },
        Row {
            what: format!("{q}, `put_many`/`get_many` ×64, at most once, µs/msg"),
            mproc: amo_batch.clone(),
            baseline_name: "bare redis-rs LPUSH of 64 values / RPOP 64 (no ack)".into(),
            baseline: plain_batch,
            rule: Rule::FasterBy(0.5),
        },
        Row {
            what: format!("{q}, `put_many`/`get_many` ×64, at most once, µs/msg"),
            mproc: amo_batch,
            baseline_name: "Python `BaseManager` queue over TCP (authkey), one per call".into(),
            baseline: pyref("manager_queue_1to1"),
            rule: Rule::FasterBy(10.0),
        },
        Row {
            what: format!("{q}, `put_many`/`get_many` ×64 (acknowledged), µs/msg"),
            mproc: batch,
            baseline_name: "Python `BaseManager` queue over TCP (authkey), one per call".into(),
            baseline: pyref("manager_queue_1to1"),
            rule: Rule::Info,
        },
        Row {
            what: format!("{q}, one per call (acknowledged), µs/msg"),
            mproc: single,
            baseline_name: "Python `BaseManager` queue over TCP (authkey), one per call".into(),
            baseline: pyref("manager_queue_1to1"),
            rule: Rule::Info,
        },
        Row {
            what: format!("{q}, {d}, `put_many`/`get_many` ×64, at most once, µs/msg"),
            mproc: durable_amo_batch,
            baseline_name: format!("bare redis-rs LPUSH of 64 values / RPOP 64, {d}"),
            baseline: durable_plain_batch,
            rule: Rule::FasterBy(0.7),
        },
        Row {
            what: format!("{q}, {d}, `put_many`/`get_many` ×64 (acknowledged), µs/msg"),
            mproc: durable_batch,
            baseline_name: format!("bare redis-rs stream XADD ×64 / XREADGROUP + XACK, {d}"),
            baseline: durable_stream_batch,
            rule: Rule::Info,
        },
        Row {
            what: "`RemotePool.map` trivial fn, 1 worker host × 2 processes, chunksize 1, µs/task"
                .into(),
            mproc: map.clone(),
            baseline_name: "RQ, 2 `SimpleWorker`s, enqueue → last result".into(),
            baseline: pyref("rq_simpleworker_task"),
            rule: Rule::FasterBy(10.0),
        },
        Row {
            what: "`RemotePool.map` trivial fn, 1 worker host × 2 processes, chunksize 1, µs/task"
                .into(),
            mproc: map,
            baseline_name: "Celery, Redis broker and backend, `-c 2`, N × `delay` then `get`"
                .into(),
            baseline: pyref("celery_task"),
            rule: Rule::FasterBy(4.0),
        },
        Row {
            what: "`RemotePool.apply` round trip, µs".into(),
            mproc: apply.clone(),
            baseline_name: "Celery `delay(x).get()`".into(),
            baseline: pyref("celery_delay_get"),
            rule: Rule::FasterBy(5.0),
        },
        Row {
            what: "`RemotePool.apply` round trip, µs".into(),
            mproc: apply,
            baseline_name: "RQ enqueue → result (polled every 0.2 ms)".into(),
            baseline: pyref("rq_enqueue_to_result"),
            rule: Rule::Info,
        },
    ]
}
