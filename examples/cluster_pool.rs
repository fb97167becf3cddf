//! The main job on more than one host: count the primes below 20 million on a pool whose
//! workers reach the caller through a Redis server. Two worker processes, started from this
//! same binary with `--worker URL`, stand for two hosts; each runs its tasks on a local pool
//! of processes.
//!
//! ```sh
//! cargo run --release --example cluster_pool                          # starts its own redis-server
//! cargo run --release --example cluster_pool -- 20000000 redis://10.0.0.5:6379/
//! # and on each other host, the same binary:
//! cluster_pool --worker redis://10.0.0.5:6379/
//! ```
//!
//! Without a URL it starts a `redis-server` (Debian's package) on a free port of 127.0.0.1
//! and stops it at the end. `tests/readme.rs` runs it with a smaller limit.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mproc::redis::{Redis, RemotePool, Task, Worker};

const LIMIT: u64 = 20_000_000;
const CHUNK: u64 = 250_000;
const POOL: &str = "primes";

/// Primes in `[lo, hi)` by trial division (as in `worker_pool`), and the host that counted
/// them (the pid of the worker process whose local pool ran the task).
fn count_primes(range: (u64, u64)) -> (u64, u32) {
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
    let n = (lo..hi).filter(|&n| is_prime(n)).count() as u64;
    (n, std::os::unix::process::parent_id())
}

/// The task, by name: the caller names it, the workers run it.
const COUNT: Task<(u64, u64), (u64, u32)> = Task::new("count_primes", count_primes);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        let url = args.get(1).ok_or("--worker needs the server's URL")?;
        let per_host = std::thread::available_parallelism()
            .map_or(1, |n| n.get() / 2)
            .max(1);
        let redis = Redis::connect(url)?;
        Worker::new(&redis, POOL)
            .processes(per_host)
            .register(&COUNT)
            .run()?;
        return Ok(());
    }
    let limit: u64 = match args.first() {
        Some(a) => a.parse()?,
        None => LIMIT,
    };
    let (url, _server) = match args.get(1) {
        Some(u) => (u.clone(), None),
        None => {
            let s = LocalRedis::start()?;
            (s.url.clone(), Some(s))
        }
    };
    let chunks: Vec<(u64, u64)> = (0..limit)
        .step_by(CHUNK as usize)
        .map(|lo| (lo, (lo + CHUNK).min(limit)))
        .collect();
    println!("counting primes below {limit} in {} chunks", chunks.len());
    let t = Instant::now();
    let single: u64 = chunks.iter().map(|&c| count_primes(c).0).sum();
    let single_time = t.elapsed();
    println!("  one process:        {single} primes in {single_time:.2?}");

    let t = Instant::now();
    let redis = Redis::connect(&url)?;
    let me = std::env::current_exe()?;
    let mut hosts: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(&me)
                .args(["--worker", &url])
                .stdin(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let pool = RemotePool::connect(&redis, POOL)?;
    let results = pool.map(&COUNT, chunks)?;
    pool.close()?;
    for h in &mut hosts {
        let status = h.wait()?;
        if !status.success() {
            return Err(format!("a worker host ended with {status}").into());
        }
    }
    let pool_time = t.elapsed();
    let total: u64 = results.iter().map(|r| r.0).sum();
    println!(
        "  2 worker hosts:     {total} primes in {pool_time:.2?} (start and shutdown included)"
    );
    let mut per_host: BTreeMap<u32, usize> = BTreeMap::new();
    for &(_, host) in &results {
        *per_host.entry(host).or_default() += 1;
    }
    for (host, n) in &per_host {
        println!("    host (pid {host}): {n} chunks");
    }
    if total != single {
        return Err(
            format!("the pool's answer {total} differs from one process's {single}").into(),
        );
    }
    println!("  answers agree: {total}");
    Ok(())
}

/// A `redis-server` of this example's own, on a free port, stopped when dropped.
struct LocalRedis {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl LocalRedis {
    fn start() -> Result<LocalRedis, Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("mproc-cluster-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("could not start redis-server (apt-get install redis-server): {e}")
            })?;
        let s = LocalRedis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(s)
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
