//! The pool's wire protocol: what a parent tells a worker when it starts it ([`Boot`]), what
//! it sends it afterwards ([`Request`], one per chunk of calls, through the worker's own
//! inbox), and what workers answer ([`Reply`], through the results queue they share), plus
//! the queues' geometry and the exit statuses a worker ends with. A `Process` speaks the same
//! protocol with a one-request worker. Request arguments and reply bodies are chunks of the
//! codec in `codec.rs`.
//!
//! Both ends run the same binary (checked with [`layout_check`](crate::call::layout_check)),
//! so the protocol has no version: it is postcard over the shared-memory queues of
//! `mproc-queue`, and a worker refuses a [`Boot`] from another build.

use std::os::fd::RawFd;

use mproc_queue::QueueOptions;
use serde::{Deserialize, Serialize};

use crate::StartError;
use crate::call::FnRef;

/// The environment variable that carries a spawned worker's [`Boot`].
pub(crate) const ENV: &str = "MPROC_WORKER";

pub(crate) use crate::child::EXIT_PANIC;
/// Exit status of a worker whose initializer failed.
pub(crate) const EXIT_INIT_FAILED: i32 = 3;
/// Exit status of a worker that could not attach to its queues or was sent garbage (EX_CONFIG).
pub(crate) const EXIT_BOOT: i32 = 78;
/// Exit status of a worker that retired because it outgrew `max_memory_per_child`.
pub(crate) const EXIT_MEMORY: i32 = 80;

/// Everything a worker needs to start: fds of its queues (valid in the child: inherited by
/// `fork`, or kept open across `exec`), and what to run first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Boot {
    /// The worker's slot in its pool (0 for a `Process`).
    pub index: u32,
    pub inbox_fd: RawFd,
    pub results_fd: RawFd,
    /// [`layout_check`] of the parent: a child built from another binary refuses to run.
    pub check: i64,
    /// A `Process`: exit with status 1 if the function panicked.
    pub one_shot: bool,
    /// The pool's initializer and its encoded argument.
    pub initializer: Option<(FnRef, Vec<u8>)>,
    /// The parent process, and whether the worker ends when it does (a spawned worker sets
    /// that up itself in `init`; a forked one is set up by the fork).
    pub parent: u32,
    pub die_with_parent: bool,
    /// Retire (exit [`EXIT_MEMORY`]) after a task that leaves the worker larger than this.
    pub max_rss: Option<u64>,
}

impl Boot {
    /// The environment value for a spawned child: the postcard encoding, in hex.
    pub(crate) fn to_env(&self) -> Result<String, StartError> {
        let bytes = postcard::to_allocvec(self).map_err(|e| StartError::Encode {
            message: e.to_string(),
        })?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub(crate) fn from_env(value: &str) -> Result<Boot, String> {
        if value.len() % 2 != 0 {
            return Err(format!("{ENV} is not hex"));
        }
        let bytes = (0..value.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(value.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| format!("{ENV} is not hex"))?;
        postcard::from_bytes(&bytes).map_err(|e| format!("{ENV} is malformed: {e}"))
    }
}

/// A batch of calls of one function, sent to one worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub job: u64,
    pub func: FnRef,
    /// How many arguments `args` holds.
    pub count: u32,
    /// The arguments, postcard-encoded back to back (as one byte string, not a sequence of
    /// `u8`s: serde_bytes makes that a copy instead of a per-byte loop).
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
}

/// What workers tell their parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The worker attached to its queues (sent before the initializer runs).
    Started { worker: u32, pid: u32 },
    /// The initializer ran; the worker takes requests now.
    Ready { worker: u32, pid: u32 },
    /// The initializer failed; the worker exits with [`EXIT_INIT_FAILED`].
    InitFailed {
        worker: u32,
        pid: u32,
        message: String,
    },
    /// A request's outcomes: one encoded `Result<R, TaskError>` per argument, back to back.
    Done {
        worker: u32,
        pid: u32,
        job: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
}

/// Bytes of each pool queue's body arena by default: requests and replies larger than a slot
/// travel there. The queues are memfds whose pages come only as they are used, and a queue
/// whose reader keeps up reuses the arena's first pages, so the size costs address space, not
/// memory: it bounds the largest encoded chunk of arguments or of results.
pub const DEFAULT_ARENA_BYTES: usize = 64 << 20;

/// Queue geometry of a worker's inbox: a request with small arguments travels inline, a
/// larger one in the arena.
pub(crate) fn inbox_options(capacity: usize, arena: usize) -> QueueOptions {
    QueueOptions::new()
        .capacity(capacity)
        .slot_size(512)
        .arena_bytes(arena)
        .type_name("mproc-pool::Request")
}

/// Queue geometry of the results queue.
pub(crate) fn results_options(capacity: usize, arena: usize) -> QueueOptions {
    QueueOptions::new()
        .capacity(capacity)
        .slot_size(512)
        .arena_bytes(arena)
        .type_name("mproc-pool::Reply")
}
