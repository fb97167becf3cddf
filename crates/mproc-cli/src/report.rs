//! Machine-readable views of the scan: JSON (`ls --json`, `inspect --json`, with serde_json,
//! the de-facto standard and already in the dependency tree) and the Prometheus text
//! exposition format (`metrics`, written by hand: it is a few lines of a simple format).
//!
//! Everything is read with `pread` (see `scan.rs`); nothing is mapped.

use mproc_segment::{Kind, peek};
use serde::Serialize;

use crate::scan::{Entry, Status, mapped_by};

/// One segment, as `ls --json` and `inspect --json` print it.
#[derive(Debug, Serialize)]
pub struct SegmentInfo {
    pub name: String,
    /// `mproc`, `damaged`, `foreign`, `not_regular` or `unreadable`.
    pub status: &'static str,
    pub kind: Option<String>,
    pub element_type: Option<String>,
    pub capacity: Option<u64>,
    pub bytes: Option<u64>,
    pub creator_pid: Option<u32>,
    pub creator_alive: bool,
    pub owner_uid: Option<u32>,
    pub error: Option<String>,
    /// For queues: the ring's counters.
    pub queue: Option<QueueInfo>,
    /// For locks and what holds one (arrays, values, conditions): the holder's thread id.
    pub lock_holder: Option<u32>,
    /// Live processes that map it (`inspect` only).
    pub mapped_by: Option<Vec<u32>>,
}

/// A queue's counters.
#[derive(Debug, Serialize)]
pub struct QueueInfo {
    pub length: u64,
    pub capacity: u64,
    pub slot_size: u64,
    pub arena_bytes: u64,
    pub closed: bool,
    pub handles: u32,
    pub unfinished: u64,
}

fn has_lock(kind: Kind) -> bool {
    [
        Kind::LOCK,
        Kind::RLOCK,
        Kind::CONDITION,
        Kind::ARRAY,
        Kind::VALUE,
    ]
    .contains(&kind)
}

/// What is known of `e`; with `detail`, also who maps it.
pub fn info(e: &Entry, detail: bool) -> SegmentInfo {
    let mut out = SegmentInfo {
        name: e.name.clone(),
        status: match &e.status {
            Status::Mproc(_) => "mproc",
            Status::Damaged(_) => "damaged",
            Status::Foreign => "foreign",
            Status::NotRegular => "not_regular",
            Status::Unreadable(_) => "unreadable",
        },
        kind: None,
        element_type: None,
        capacity: None,
        bytes: None,
        creator_pid: None,
        creator_alive: e.creator_alive,
        owner_uid: e.owner,
        error: match &e.status {
            Status::Damaged(err) => Some(err.to_string()),
            Status::Unreadable(why) => Some(why.clone()),
            _ => None,
        },
        queue: None,
        lock_holder: None,
        mapped_by: None,
    };
    let Status::Mproc(h) = &e.status else {
        return out;
    };
    out.kind = Some(h.kind.to_string());
    out.element_type = Some(h.element.name.to_string());
    out.capacity = Some(h.capacity);
    out.bytes = Some(h.total_len);
    out.creator_pid = Some(h.creator.pid);
    if let Ok(p) = peek(&e.name) {
        if h.kind == Kind::QUEUE {
            let mut ring = vec![0u8; std::mem::size_of::<mproc_queue::RingHeader>()];
            if let Ok(n) = p.read_payload(0, &mut ring) {
                if let Some(r) = mproc_queue::RingSnapshot::from_bytes(&ring[..n]) {
                    out.queue = Some(QueueInfo {
                        length: r.len,
                        capacity: r.capacity,
                        slot_size: r.slot_size,
                        arena_bytes: r.arena_bytes,
                        closed: r.closed,
                        handles: r.attached,
                        unfinished: r.unfinished,
                    });
                }
            }
        }
        if has_lock(h.kind) {
            let mut word = [0u8; 8];
            if p.read_payload(0, &mut word).is_ok_and(|n| n == 8) {
                let tid = (u64::from_ne_bytes(word) & ((1 << 30) - 1)) as u32;
                out.lock_holder = (tid != 0).then_some(tid);
            }
        }
        if detail {
            out.mapped_by = Some(mapped_by(p.dev_ino));
        }
    }
    out
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format of the segments' gauges.
pub fn metrics(infos: &[SegmentInfo]) -> String {
    let mut families: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "mproc_segment_bytes",
            "Total length of an mproc segment, in bytes.",
            vec![],
        ),
        (
            "mproc_segment_creator_alive",
            "1 if the segment's creator still runs.",
            vec![],
        ),
        (
            "mproc_queue_length",
            "Messages in a queue (published, not yet taken).",
            vec![],
        ),
        ("mproc_queue_capacity", "Slots of a queue.", vec![]),
        (
            "mproc_queue_arena_bytes",
            "Bytes of a queue's body arena.",
            vec![],
        ),
        ("mproc_queue_closed", "1 if the queue was closed.", vec![]),
        ("mproc_queue_handles", "Handles open on a queue.", vec![]),
        (
            "mproc_queue_unfinished",
            "JoinableQueue items not yet reported done.",
            vec![],
        ),
        ("mproc_lock_held", "1 if the lock is held.", vec![]),
    ];
    let mut push = |family: usize, labels: String, value: u64| {
        let name = families[family].0;
        families[family]
            .2
            .push(format!("{name}{{{labels}}} {value}"));
    };
    for i in infos.iter().filter(|i| i.status == "mproc") {
        let name = label(&i.name);
        let kind = label(i.kind.as_deref().unwrap_or(""));
        push(
            0,
            format!("name=\"{name}\",kind=\"{kind}\""),
            i.bytes.unwrap_or(0),
        );
        push(1, format!("name=\"{name}\""), u64::from(i.creator_alive));
        if let Some(q) = &i.queue {
            let l = format!("name=\"{name}\"");
            push(2, l.clone(), q.length);
            push(3, l.clone(), q.capacity);
            push(4, l.clone(), q.arena_bytes);
            push(5, l.clone(), u64::from(q.closed));
            push(6, l.clone(), u64::from(q.handles));
            push(7, l, q.unfinished);
        }
        if i.kind
            .as_deref()
            .is_some_and(|k| k == "lock" || k == "rlock")
        {
            push(
                8,
                format!("name=\"{name}\""),
                u64::from(i.lock_holder.is_some()),
            );
        }
    }
    let mut out = String::new();
    for (name, help, samples) in families {
        if samples.is_empty() {
            continue;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for s in samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}
