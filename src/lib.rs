//! # mproc
//!
//! Python's `multiprocessing` — shared memory, locks, queues, arrays, processes and pools —
//! done right for Rust, over POSIX shared memory.
//!
//! This facade is the one dependency users add; it re-exports mproc's crates:
//!
//! - [`segment`] (`mproc-segment`): named and anonymous shared-memory segments with a
//!   versioned, type-checked header.
//! - [`sync`] (`mproc-sync`): robust `Lock`, `RLock`, `Semaphore`, `Event`, `Condition`,
//!   `Barrier`.
//! - [`array`](mod@array) (`mproc-array`): `Array`, `Value`, `AtomicValue`, `RawArray`, readable from
//!   Python by name.
//! - [`queue`] (`mproc-queue`): lock-free `PodQueue`, `Queue` (any serde type), `ByteQueue`
//!   (byte messages, zero-copy loans), `JoinableQueue`, `pipe()`'s two `Connection`s, and
//!   `Broadcast`, `ByteBroadcast` and `PodBroadcast` (every subscriber reads every message);
//!   large messages travel in each queue's own shared arena.
//! - [`pool`] (`mproc-pool`): `Process` and `Pool` with fork and spawn start methods; a
//!   worker that dies fails only its own task.
//!
//! - `redis` (`mproc-redis`, the `redis` feature): the same queues, locks, events and
//!   values on a Redis server, for processes on more than one host. The queue traits
//!   [`MessageQueue`] and [`JoinableMessageQueue`] cover both, and [`open_queue`] picks
//!   where a queue lives from a URL.
//!
//! Programs that use the spawn start method call [`init`] first thing in `main`.
//!
//! With the `async` feature every wait has a future (`get_async`, `put_async`,
//! `lock_async`, `wait_async`, `acquire_async`, `join_async`; `AsyncResult` and `MapResult`
//! are futures, `Imap` a `Stream`), runtime-agnostic, and [`select`] / [`select_async`] wait
//! for the first of many sources — queues, events, semaphores, results, processes, file
//! descriptors — like Python's `multiprocessing.connection.wait`.
//!
//! ```
//! use mproc::segment::Segment;
//! let seg = Segment::anonymous(4096)?;     // shared with children through fork
//! seg.write_bytes(0, b"hi")?;
//! # Ok::<(), mproc::segment::SegmentError>(())
//! ```
#![forbid(unsafe_code)]

pub use mproc_array as array;
pub use mproc_pool as pool;
pub use mproc_pool::init;
pub use mproc_queue as queue;
pub use mproc_segment as segment;
pub use mproc_sync as sync;

/// mproc's vocabulary on a Redis server, for more than one host (the `redis` feature):
/// `RedisQueue`, `RedisJoinableQueue`, `RedisLock`, `RedisEvent`, `RedisValue`,
/// `RedisAtomic`.
#[cfg(feature = "redis")]
pub use mproc_redis as redis;

mod url;
pub use mproc_queue::{JoinableMessageQueue, MessageQueue};
pub use url::{QueueUrlError, open_queue, redact};

/// The error number the operating-system variants of mproc's errors carry
/// (`SegmentError::Io`, `LockError::Os`, `StartError::Os`): rustix's, compared with its
/// constants (`Errno::NOSPC`, `Errno::ACCESS`) or read with `raw_os_error()`.
pub use mproc_segment::Errno;

#[cfg(feature = "async")]
pub use mproc_sync::{Readable, Waitable, select, select_async};

/// Every Rust snippet of the README is compiled and run as a doctest, so the README cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

/// The names most programs need, in one `use mproc::prelude::*;`.
pub mod prelude {
    pub use mproc_array::{Array, ArrayError, AtomicValue, RawArray, Value};
    pub use mproc_pool::{
        AsyncResult, JoinError, LaunchOptions, Pool, PoolBroken, PoolError, Process, ProcessError,
        StartError, StartMethod, SubmitError, TaskError, ThreadedFork, WaitError,
    };
    #[cfg(feature = "cbor")]
    pub use mproc_queue::CborQueue;
    pub use mproc_queue::{
        Broadcast, BroadcastOptions, ByteBroadcast, ByteQueue, BytesDict, Connection, Dict,
        DictError, DictOptions, GetError, JoinableQueue, Lagging, PodBroadcast, PodQueue, PutError,
        Queue, QueueOptions, Subscriber, pipe,
    };
    pub use mproc_segment::{Kind, Segment, SegmentError, SegmentOptions, TypeTag};
    pub use mproc_sync::{
        Barrier, BoundedSemaphore, Condition, Event, Lock, LockError, RLock, Semaphore,
    };
}
