//! Processes and worker pools over shared memory: Python's `multiprocessing.Process` and
//! `Pool`, for Rust.
//!
//! - [`Process`]: run `f(arg)` in a child process; [`join`](Process::join) returns its result
//!   (or its panic), with Python's exit statuses, `terminate` and `kill`.
//! - [`Pool`]: `map`, `starmap`, `imap`, `imap_unordered`, `apply`, `apply_async` over a set of
//!   workers. A worker that dies fails only the task it was running and is replaced; nothing
//!   hangs.
//! - [`StartMethod`]: `Fork` (default) or `Spawn` (re-executes this binary; call [`init`]
//!   first thing in `main`).
//!
//! Tasks are plain functions `fn(A) -> R` (a closure that captures nothing coerces to one);
//! they travel as offsets from a base symbol of the binary, so both start methods share one
//! encoding. Arguments and results travel through `mproc-queue`'s shared-memory queues,
//! encoded with postcard.
//!
//! ```
//! use mproc_pool::{Pool, Process};
//!
//! let mut p = Process::spawn(|n: u32| n * 2, 21)?;
//! assert_eq!(p.join()?, 42);
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(|s: String| s.len(), ["a".to_string(), "bb".into()])?, [1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod call;
mod child;
mod codec;
mod error;
mod forker;
mod forkserver;
mod launch;
mod pool;
mod process;
mod protocol;
mod sys;
mod worker;

pub use child::ExitStatus;
pub use error::{
    JoinError, OsError, PoolBroken, PoolError, ProcessError, StartError, SubmitError, TaskError,
    WaitError,
};
pub use forkserver::start_forkserver;
pub use launch::{LaunchOptions, StartMethod, ThreadedFork};
pub use pool::{
    AsyncResult, BOARD_FORMAT, BoardSnapshot, BoardWorker, BoardWorkerState, FAILURE_KINDS, Imap,
    MapResult, PREFETCH, Pool, PoolBuilder, PoolStats, RESTART_CAUSES, Restarts, WorkerStats,
};
pub use process::{Process, ProcessBuilder};
pub use protocol::DEFAULT_ARENA_BYTES;
pub use worker::init;
