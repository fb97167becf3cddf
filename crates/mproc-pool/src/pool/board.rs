//! A pool's status board: a named segment (kind `pool`) in which the pool's handler thread
//! publishes what tools show — each worker's pid and state, tasks done, jobs failed by kind,
//! restarts by cause — so `mproc ls --json`, `metrics` and `top` can see a pool from outside.
//! Opt-in with [`PoolBuilder::name`](crate::PoolBuilder::name).
//!
//! Layout (format 1): native-endian `u64` words, written only by the handler thread with relaxed stores, read by anyone (a snapshot, never acted on):
//!
//! | word | meaning |
//! |---|---|
//! | 0 | board format ([`BOARD_FORMAT`]) |
//! | 1 | worker slots |
//! | 2 | tasks (chunks) completed |
//! | 3 | jobs run again after their worker died |
//! | 4..9 | restarts: died, timed out, cancelled, memory, max tasks |
//! | 9..13 | jobs failed: worker died, timed out, cancelled, other (panics are results, not failures) |
//! | 13..16 | reserved (0) |
//! | 16 + 4 i .. | worker i: pid, state (0 starting, 1 idle, 2 running), job id + 1 (0: none), tasks done |
//!
//! A reader validates the format word and the slot count against the segment's length: a
//! board is written by the pool's own process only, but a reader must not trust it.

use std::sync::atomic::{AtomicU64, Ordering};

use mproc_segment::{Kind, Segment, SegmentError, SegmentOptions};

/// The board layout this build writes and reads.
pub const BOARD_FORMAT: u64 = 1;
const HEAD_WORDS: usize = 16;
const WORKER_WORDS: usize = 4;

/// A worker's state on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardWorkerState {
    /// Started, not yet ready for work (initializer running).
    Starting,
    /// Ready, with no job.
    Idle,
    /// Running the job with this id.
    Running(u64),
}

/// One worker as the board shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardWorker {
    /// Its process id.
    pub pid: u32,
    /// What it is doing.
    pub state: BoardWorkerState,
    /// Tasks (chunks) it completed.
    pub tasks_done: u64,
}

/// A reading of a pool's board (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoardSnapshot {
    /// The workers, by slot.
    pub workers: Vec<BoardWorker>,
    /// Tasks (chunks) completed by all workers, past ones included.
    pub tasks_done: u64,
    /// Jobs run again after their worker died.
    pub retried: u64,
    /// Restarts by cause: died, timed out, cancelled, memory, max tasks.
    pub restarts: [u64; 5],
    /// Jobs failed by kind: worker died, timed out, cancelled, other.
    pub failures: [u64; 4],
}

/// Restart causes, in board order.
pub const RESTART_CAUSES: [&str; 5] = ["died", "timed_out", "cancelled", "memory", "max_tasks"];
/// Failure kinds, in board order.
pub const FAILURE_KINDS: [&str; 4] = ["worker_died", "timed_out", "cancelled", "other"];

impl BoardSnapshot {
    /// Decodes a board from a copy of its payload (as tools read it with `pread`); `None`
    /// if the bytes are not a board of this format.
    pub fn from_bytes(bytes: &[u8]) -> Option<BoardSnapshot> {
        let word = |i: usize| {
            Some(u64::from_ne_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        if word(0)? != BOARD_FORMAT {
            return None;
        }
        let slots = usize::try_from(word(1)?).ok()?;
        let words = slots.checked_mul(WORKER_WORDS)?.checked_add(HEAD_WORDS)?;
        if words.checked_mul(8)? > bytes.len() {
            return None;
        }
        let mut snap = BoardSnapshot {
            tasks_done: word(2)?,
            retried: word(3)?,
            ..BoardSnapshot::default()
        };
        for (k, r) in snap.restarts.iter_mut().enumerate() {
            *r = word(4 + k)?;
        }
        for (k, f) in snap.failures.iter_mut().enumerate() {
            *f = word(9 + k)?;
        }
        for i in 0..slots {
            let at = HEAD_WORDS + i * WORKER_WORDS;
            let job = word(at + 2)?;
            let state = match word(at + 1)? {
                0 => BoardWorkerState::Starting,
                2 if job > 0 => BoardWorkerState::Running(job - 1),
                _ => BoardWorkerState::Idle,
            };
            snap.workers.push(BoardWorker {
                pid: u32::try_from(word(at)?).ok()?,
                state,
                tasks_done: word(at + 3)?,
            });
        }
        Some(snap)
    }
}

/// The writing side, owned by the pool (the name is unlinked when the pool is dropped).
#[derive(Debug)]
pub(crate) struct Board {
    seg: Segment,
    slots: usize,
}

impl Board {
    pub(crate) fn create(name: &str, slots: usize) -> Result<Board, SegmentError> {
        let words = HEAD_WORDS + slots * WORKER_WORDS;
        let seg = SegmentOptions::new(Kind::POOL)
            .element::<u64>()
            .capacity(words as u64)
            .create(name)?;
        let b = Board { seg, slots };
        b.set(0, BOARD_FORMAT);
        b.set(1, slots as u64);
        Ok(b)
    }

    /// Takes the board's name out of `/dev/shm` (the pool has stopped; `AsyncResult`s that
    /// keep the pool's state alive must not keep a stale board on show).
    pub(crate) fn unlink(&self) {
        self.seg.unlink_now();
    }

    fn set(&self, i: usize, v: u64) {
        if let Ok(w) = self.seg.view::<AtomicU64>(i * 8) {
            w.store(v, Ordering::Relaxed);
        }
    }

    /// Writes `snap` (its workers beyond the board's slots are left out).
    pub(crate) fn publish(&self, snap: &BoardSnapshot) {
        self.set(2, snap.tasks_done);
        self.set(3, snap.retried);
        for (k, &r) in snap.restarts.iter().enumerate() {
            self.set(4 + k, r);
        }
        for (k, &f) in snap.failures.iter().enumerate() {
            self.set(9 + k, f);
        }
        for (i, w) in snap.workers.iter().take(self.slots).enumerate() {
            let at = HEAD_WORDS + i * WORKER_WORDS;
            let (state, job) = match w.state {
                BoardWorkerState::Starting => (0, 0),
                BoardWorkerState::Idle => (1, 0),
                BoardWorkerState::Running(j) => (2, j + 1),
            };
            self.set(at, u64::from(w.pid));
            self.set(at + 1, state);
            self.set(at + 2, job);
            self.set(at + 3, w.tasks_done);
        }
    }
}
