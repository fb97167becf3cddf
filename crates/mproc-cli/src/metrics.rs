//! The Prometheus text exposition format of the segments' gauges and counters (`mproc
//! metrics`), written by hand: it is a few lines of a simple format.

use crate::report::SegmentInfo;

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    // The format's own escapes; every other control character becomes U+FFFD (the format
    // has no escape for them, and an ESC in a planted name must not reach a terminal that
    // shows the exposition).
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Gauges go up and down; counters only go up (since the segment was made).
#[derive(Clone, Copy, PartialEq)]
enum Type {
    Gauge,
    Counter,
}

/// The Prometheus text exposition format of the segments' gauges and counters.
pub fn metrics(infos: &[SegmentInfo]) -> String {
    use Type::{Counter, Gauge};
    let families: [(&str, &str, Type); 26] = [
        (
            "mproc_segment_bytes",
            "Total length of an mproc segment, in bytes.",
            Gauge,
        ),
        (
            "mproc_segment_creator_alive",
            "1 if the segment's creator still runs.",
            Gauge,
        ),
        (
            "mproc_queue_length",
            "Messages in a queue (published, not yet taken).",
            Gauge,
        ),
        ("mproc_queue_capacity", "Slots of a queue.", Gauge),
        (
            "mproc_queue_arena_bytes",
            "Bytes of a queue's body arena.",
            Gauge,
        ),
        ("mproc_queue_closed", "1 if the queue was closed.", Gauge),
        ("mproc_queue_handles", "Handles open on a queue.", Gauge),
        (
            "mproc_queue_unfinished",
            "JoinableQueue items not yet reported done.",
            Gauge,
        ),
        (
            "mproc_queue_blocked_producers",
            "Producers asleep waiting for room.",
            Gauge,
        ),
        (
            "mproc_queue_blocked_consumers",
            "Consumers asleep waiting for an item.",
            Gauge,
        ),
        (
            "mproc_queue_high_water",
            "Most items seen in a queue at once (the capacity once it ran full).",
            Gauge,
        ),
        (
            "mproc_queue_full_waits_total",
            "Puts refused because every slot was taken (try_put, or a timeout ran out).",
            Counter,
        ),
        (
            "mproc_queue_space_waits_total",
            "Puts whose body found the queue's arena full.",
            Counter,
        ),
        (
            "mproc_queue_put_total",
            "Items put into a queue since it was made.",
            Counter,
        ),
        (
            "mproc_queue_got_total",
            "Items taken from a queue since it was made.",
            Counter,
        ),
        (
            "mproc_queue_dead_skipped_total",
            "Slots skipped because their producer died mid-put.",
            Counter,
        ),
        (
            "mproc_queue_dead_reclaimed_total",
            "Slots reclaimed because their reader died mid-get.",
            Counter,
        ),
        ("mproc_lock_held", "1 if the lock is held.", Gauge),
        ("mproc_pool_workers", "Worker slots of a named pool.", Gauge),
        (
            "mproc_pool_workers_busy",
            "Workers of a named pool running a job now.",
            Gauge,
        ),
        (
            "mproc_pool_tasks_done_total",
            "Tasks (chunks) a named pool's workers completed.",
            Counter,
        ),
        (
            "mproc_pool_failures_total",
            "Jobs of a named pool that failed, by kind.",
            Counter,
        ),
        (
            "mproc_pool_restarts_total",
            "Workers of a named pool replaced, by cause.",
            Counter,
        ),
        (
            "mproc_lock_acquisitions_total",
            "Acquisitions of a lock since it was made.",
            Counter,
        ),
        (
            "mproc_lock_contentions_total",
            "Lockers that found a lock held and waited.",
            Counter,
        ),
        (
            "mproc_lock_owner_deaths_total",
            "Take-overs of a lock from a holder that died.",
            Counter,
        ),
    ];
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); families.len()];
    let mut push = |family: &str, labels: &str, value: u64| {
        if let Some(i) = families.iter().position(|f| f.0 == family) {
            samples[i].push(format!("{family}{{{labels}}} {value}"));
        }
    };
    for i in infos.iter().filter(|i| i.status == "mproc") {
        let name = label(&i.name);
        let kind = label(i.kind.as_deref().unwrap_or(""));
        let l = format!("name=\"{name}\"");
        push(
            "mproc_segment_bytes",
            &format!("name=\"{name}\",kind=\"{kind}\""),
            i.bytes.unwrap_or(0),
        );
        push(
            "mproc_segment_creator_alive",
            &l,
            u64::from(i.creator_alive),
        );
        if let Some(q) = &i.queue {
            push("mproc_queue_length", &l, q.len);
            push("mproc_queue_capacity", &l, q.capacity);
            push("mproc_queue_arena_bytes", &l, q.arena_bytes);
            push("mproc_queue_closed", &l, u64::from(q.closed));
            push("mproc_queue_handles", &l, u64::from(q.attached));
            push("mproc_queue_unfinished", &l, q.unfinished);
            push(
                "mproc_queue_blocked_producers",
                &l,
                u64::from(q.blocked_producers),
            );
            push(
                "mproc_queue_blocked_consumers",
                &l,
                u64::from(q.blocked_consumers),
            );
            push("mproc_queue_high_water", &l, q.high_water);
            push("mproc_queue_full_waits_total", &l, q.full_waits);
            push("mproc_queue_space_waits_total", &l, q.space_waits);
            push("mproc_queue_put_total", &l, q.put_total);
            push("mproc_queue_got_total", &l, q.got_total);
            push("mproc_queue_dead_skipped_total", &l, q.dead_skipped);
            push("mproc_queue_dead_reclaimed_total", &l, q.dead_reclaimed);
        }
        if let Some(pl) = &i.pool {
            push("mproc_pool_workers", &l, pl.workers.len() as u64);
            let busy = pl.workers.iter().filter(|w| w.state == "running").count();
            push("mproc_pool_workers_busy", &l, busy as u64);
            push("mproc_pool_tasks_done_total", &l, pl.tasks_done);
            for (kind, n) in &pl.failures {
                push(
                    "mproc_pool_failures_total",
                    &format!("{l},kind=\"{kind}\""),
                    *n,
                );
            }
            for (cause, n) in &pl.restarts {
                push(
                    "mproc_pool_restarts_total",
                    &format!("{l},cause=\"{cause}\""),
                    *n,
                );
            }
        }
        if let Some(c) = &i.lock {
            if i.kind
                .as_deref()
                .is_some_and(|k| k == "lock" || k == "rlock")
            {
                push("mproc_lock_held", &l, u64::from(i.lock_holder.is_some()));
            }
            push("mproc_lock_acquisitions_total", &l, c.acquisitions);
            push("mproc_lock_contentions_total", &l, u64::from(c.contentions));
            push(
                "mproc_lock_owner_deaths_total",
                &l,
                u64::from(c.owner_deaths),
            );
        }
    }
    let mut out = String::new();
    for ((name, help, ty), samples) in families.iter().zip(samples) {
        if samples.is_empty() {
            continue;
        }
        let ty = if *ty == Counter { "counter" } else { "gauge" };
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {ty}\n"));
        for s in samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}
