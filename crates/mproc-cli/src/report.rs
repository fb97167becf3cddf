//! What the scan found, segment by segment (`SegmentInfo`: what `ls --json` and
//! `inspect --json` print, with serde_json, and what `metrics` and `top` read), and how text
//! output shows names a planted file chose (`shown`).
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
    /// Whether any process holds it open (asked of the kernel: any pid namespace).
    pub in_use: bool,
    pub owner_uid: Option<u32>,
    pub error: Option<String>,
    /// For queues: the ring's counters.
    pub queue: Option<mproc_queue::RingSnapshot>,
    /// For locks and what holds one (arrays, values, conditions): the holder's peer token.
    pub lock_holder: Option<u32>,
    /// For locks and what holds one: the lock's counters.
    pub lock: Option<LockInfo>,
    /// For a pool's status board: its workers and counters.
    pub pool: Option<PoolInfo>,
    /// Live processes that map it, as far as this process can see them (`inspect` only).
    pub mapped_by: Option<Vec<u32>>,
}

/// A pool's status board.
#[derive(Debug, Serialize)]
pub struct PoolInfo {
    pub tasks_done: u64,
    pub retried: u64,
    /// Restarts by cause (died, timed_out, cancelled, memory, max_tasks).
    pub restarts: std::collections::BTreeMap<&'static str, u64>,
    /// Jobs failed by kind (worker_died, timed_out, cancelled, other).
    pub failures: std::collections::BTreeMap<&'static str, u64>,
    pub workers: Vec<PoolWorkerInfo>,
}

/// One worker of a pool.
#[derive(Debug, Serialize)]
pub struct PoolWorkerInfo {
    pub pid: u32,
    /// `starting`, `idle` or `running`.
    pub state: &'static str,
    /// The job it runs, if running.
    pub job: Option<u64>,
    pub tasks_done: u64,
}

/// The largest board `info` reads (a planted header claiming more is not followed).
const MAX_BOARD_BYTES: u64 = 1 << 20;

fn pool_info(b: mproc_pool::BoardSnapshot) -> PoolInfo {
    use mproc_pool::BoardWorkerState as S;
    PoolInfo {
        tasks_done: b.tasks_done,
        retried: b.retried,
        restarts: mproc_pool::RESTART_CAUSES
            .iter()
            .copied()
            .zip(b.restarts)
            .collect(),
        failures: mproc_pool::FAILURE_KINDS
            .iter()
            .copied()
            .zip(b.failures)
            .collect(),
        workers: b
            .workers
            .iter()
            .map(|w| PoolWorkerInfo {
                pid: w.pid,
                state: match w.state {
                    S::Starting => "starting",
                    S::Idle => "idle",
                    S::Running(_) => "running",
                },
                job: match w.state {
                    S::Running(j) => Some(j),
                    _ => None,
                },
                tasks_done: w.tasks_done,
            })
            .collect(),
    }
}

/// A lock's counters since it was made.
#[derive(Debug, Serialize)]
pub struct LockInfo {
    pub acquisitions: u64,
    pub contentions: u32,
    pub owner_deaths: u32,
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
        in_use: e.in_use,
        owner_uid: e.owner,
        error: match &e.status {
            Status::Damaged(err) => Some(err.to_string()),
            Status::Unreadable(why) => Some(why.clone()),
            _ => None,
        },
        queue: None,
        lock_holder: None,
        lock: None,
        pool: None,
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
                    out.queue = Some(r);
                }
            }
        }
        if h.kind == Kind::POOL && h.payload_len <= MAX_BOARD_BYTES {
            let mut raw = vec![0u8; h.payload_len as usize];
            if let Ok(n) = p.read_payload(0, &mut raw) {
                out.pool = mproc_pool::BoardSnapshot::from_bytes(&raw[..n]).map(pool_info);
            }
        }
        if has_lock(h.kind) {
            let mut raw = [0u8; std::mem::size_of::<mproc_sync::RawLock>()];
            if let Some(c) = p
                .read_payload(0, &mut raw)
                .ok()
                .and_then(|n| mproc_sync::LockCounters::from_bytes(&raw[..n]))
            {
                out.lock_holder = c.holder;
                out.lock = Some(LockInfo {
                    acquisitions: c.acquisitions,
                    contentions: c.contentions,
                    owner_deaths: c.owner_deaths,
                });
            }
        }
        if detail {
            out.mapped_by = Some(mapped_by(p.dev_ino));
        }
    }
    out
}

/// Text as a terminal may show it: control characters (ESC, BEL, CR, newlines: what could
/// move the cursor, rewrite a row or fake one) are written as escapes (`\u{1b}`). Names and
/// type names come from files any user can plant; JSON and metrics escape on their own.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
