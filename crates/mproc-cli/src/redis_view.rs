//! `mproc ls|metrics|top --redis URL`: the queues on a Redis server (what `mproc-redis`
//! made there), with their depth and rates.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mproc_redis::{QueueStats, Redis};

fn connect(url: &str) -> Result<Redis, String> {
    Redis::connect(url).map_err(|e| e.to_string())
}

fn stats(redis: &Redis, prefix: &str) -> Result<Vec<QueueStats>, String> {
    redis.queue_stats(prefix).map_err(|e| e.to_string())
}

/// `mproc ls --redis URL [--json]`.
pub fn ls(url: &str, prefix: &str, json: bool) -> Result<(), String> {
    let qs = stats(&connect(url)?, prefix)?;
    if json {
        let rows: Vec<serde_json::Value> = qs
            .iter()
            .map(|q| {
                serde_json::json!({
                    "name": q.name, "kind": q.kind, "type": q.type_name,
                    "capacity": q.capacity, "waiting": q.waiting, "leased": q.leased,
                    "closed": q.closed, "added": q.added, "read": q.read,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "{:<40} {:<9} {:<28} {:>9} {:>9} {:>8} {:<6}",
        "NAME", "KIND", "TYPE", "CAPACITY", "WAITING", "LEASED", "CLOSED"
    );
    for q in qs {
        println!(
            "{:<40} {:<9} {:<28} {:>9} {:>9} {:>8} {:<6}",
            crate::report::shown(&q.name),
            crate::report::shown(&q.kind),
            crate::truncate(&crate::report::shown(&q.type_name), 28),
            q.capacity,
            q.waiting,
            q.leased,
            if q.closed { "yes" } else { "no" }
        );
    }
    Ok(())
}

/// Prometheus label value escaping.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric: name, type, help, and its value for a queue.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&QueueStats) -> u64,
);

/// `mproc metrics --redis URL`.
pub fn metrics(url: &str, prefix: &str) -> Result<(), String> {
    let qs = stats(&connect(url)?, prefix)?;
    let gauges: [Series; 5] = [
        (
            "mproc_redis_queue_waiting",
            "gauge",
            "Messages waiting to be taken.",
            |q| q.waiting,
        ),
        (
            "mproc_redis_queue_leased",
            "gauge",
            "Messages taken and not yet acknowledged.",
            |q| q.leased,
        ),
        (
            "mproc_redis_queue_capacity",
            "gauge",
            "Messages the queue holds at most.",
            |q| q.capacity,
        ),
        (
            "mproc_redis_queue_added_total",
            "counter",
            "Messages ever put.",
            |q| q.added,
        ),
        (
            "mproc_redis_queue_read_total",
            "counter",
            "Messages ever delivered the first time.",
            |q| q.read,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, f) in gauges {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for q in &qs {
            out.push_str(&format!(
                "{name}{{queue=\"{}\"}} {}\n",
                label(&q.name),
                f(q)
            ));
        }
    }
    print!("{out}");
    Ok(())
}

/// `mproc top --redis URL`: every interval, each queue's puts and first deliveries per
/// second, with its depth. `count` reports, or until interrupted.
pub fn top(url: &str, prefix: &str, interval: Duration, count: Option<u64>) -> Result<(), String> {
    let redis = connect(url)?;
    let mut last: HashMap<String, (u64, u64)> = stats(&redis, prefix)?
        .into_iter()
        .map(|q| (q.name, (q.added, q.read)))
        .collect();
    let mut at = Instant::now();
    let mut shown = 0;
    while count.is_none_or(|c| shown < c) {
        std::thread::sleep(interval.saturating_sub(at.elapsed()));
        let qs = stats(&redis, prefix)?;
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        println!(
            "{:<40} {:>10} {:>10} {:>9} {:>8}",
            "QUEUE", "PUT/S", "GET/S", "WAITING", "LEASED"
        );
        for q in &qs {
            let (a, r) = last.get(&q.name).copied().unwrap_or((q.added, q.read));
            println!(
                "{:<40} {:>10.0} {:>10.0} {:>9} {:>8}",
                crate::report::shown(&q.name),
                q.added.saturating_sub(a) as f64 / secs,
                q.read.saturating_sub(r) as f64 / secs,
                q.waiting,
                q.leased
            );
        }
        println!();
        last = qs
            .into_iter()
            .map(|q| (q.name, (q.added, q.read)))
            .collect();
        shown += 1;
    }
    Ok(())
}
