//! mproc's vocabulary on a Redis server, for processes on more than one host: [`RedisQueue`],
//! [`RedisJoinableQueue`], [`RedisValue`], [`RedisAtomic`], [`RedisLock`] and [`RedisEvent`].
//!
//! Shared memory stays mproc's default: nothing here is used unless a program connects to a
//! server. The queues implement the same [`MessageQueue`](mproc_queue::MessageQueue) and
//! [`JoinableMessageQueue`](mproc_queue::JoinableMessageQueue) traits as the shared-memory
//! ones, so a producer or consumer is written once and runs over either.
//!
//! ```no_run
//! use mproc_redis::Redis;
//!
//! let redis = Redis::connect("redis://127.0.0.1:6379/")?;
//! let jobs = redis.queue("jobs").capacity(1000).create::<(u64, String)>()?;
//! jobs.put((1, "resize a.png".into()))?;
//! // On any host that reaches the server:
//! let (id, what) = jobs.get()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Delivery: at least once
//!
//! A queue is a Redis stream read through one consumer group. `get` **leases** a message to
//! its consumer (the handle). The message is **acknowledged**, and gone for good, when:
//! - the thread that took it calls `get` (or `try_get`, `get_timeout`, `get_many`,
//!   `get_item`) again on the same handle, or calls [`RedisQueue::ack`];
//! - the handle is dropped, unless its thread is unwinding from a panic;
//! - for a [`RedisJoinableQueue`]: `task_done` is called for it (and only then).
//!
//! While the consumer lives, a background thread renews its leases every third of the
//! lease. If the consumer dies, hangs without its process, or loses the server for longer
//! than the lease (30 s by default, [`RedisQueueOptions::lease`]), the message is delivered
//! to another consumer, with the same [`Delivery::id`] and `redelivered` set (a consumer
//! looks for such messages whenever it finds nothing new, and at least every quarter lease
//! while it is busy). So a message
//! may be processed twice, never lost: a consumer whose effects must happen once dedupes by
//! that id. A queue's capacity counts messages until they are acknowledged.
//!
//! # Security
//!
//! With an auth key ([`RedisBuilder::authkey`], or the [`AUTHKEY_ENV`] environment variable),
//! every entry carries an HMAC-SHA256 of its queue's name and bytes, and an entry without a
//! valid one is refused ([`GetError::Unreadable`](mproc_queue::GetError::Unreadable)) and
//! dropped, never decoded. A queue created with a key cannot be opened without one, nor the
//! reverse. Server passwords and ACL users go in the URL
//! (`redis://user:password@host/`); `rediss://` URLs use TLS with the `tls` feature.
//!
//! # Blocking and waking
//!
//! Blocking calls wait on the server (`XREADGROUP BLOCK`, `BLPOP`) in slices of at most
//! 200 ms, so a close, a lapsed lease or a deadline is seen within that. Each blocked call
//! holds one connection from the handle's [`Redis`] pool while it waits.
//!
//! Handles are not carried across `fork`: a child connects on its own.
#![deny(unsafe_code)]

/// A script, built (and its SHA-1 computed) at each use. Not cached in a `static`: a
/// process forked while another thread held a lazy static's initialisation would wait for
/// it forever, and handles are used in forked children.
macro_rules! script {
    ($src:expr) => {
        $src
    };
}
pub(crate) use script;

mod auth;
mod conn;
mod error;
mod event;
mod lock;
mod plain;
mod pool;
mod queue;
mod reply;
mod scripts;
mod stats;
mod traits;
mod value;

pub use conn::{AUTHKEY_ENV, Redis, RedisBuilder};
pub use error::RedisError;
pub use event::RedisEvent;
pub use lock::{RedisLock, RedisLockError, RedisLockGuard};
pub use pool::{RemoteError, RemoteMap, RemotePool, RemoteResult, Task, Worker, WorkerReport};
pub use queue::{DeadLetter, Delivery, RedisJoinableQueue, RedisQueue, RedisQueueOptions};
pub use stats::QueueStats;
pub use value::{RedisAtomic, RedisNumber, RedisValue};
