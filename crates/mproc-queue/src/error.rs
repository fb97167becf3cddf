//! Errors of the queues. Errors of `put` hand the value back.

use mproc_segment::SegmentError;

/// Why a `put` did not enqueue; carries the value back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PutError<T> {
    /// The queue is full (`try_put`).
    #[error("queue is full")]
    Full(T),
    /// `put_timeout` gave up while the queue stayed full.
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// The queue was closed; nothing more can be put.
    #[error("queue is closed")]
    Closed(T),
    /// The encoded message is larger than the queue's whole body arena (set its size with
    /// [`QueueOptions::arena_bytes`](crate::QueueOptions::arena_bytes)).
    #[error("message of {size} bytes exceeds the queue's arena of {max} bytes")]
    TooLarge {
        /// The value.
        value: T,
        /// Encoded size of the message (bytes).
        size: usize,
        /// The arena's size (bytes; 0 if the queue has none).
        max: u64,
    },
    /// The value could not be encoded, or its body could not be stored.
    #[error("message could not be stored: {reason}")]
    Unsendable {
        /// The value.
        value: T,
        /// What went wrong.
        reason: String,
    },
    /// The shared-memory filesystem (`/dev/shm`, its size limit, or a memory cgroup's) had
    /// no room for the arena pages this message needed: a named queue reserves its arena's
    /// pages as messages first use them, and this one could not. Nothing was enqueued. Room
    /// comes back as other segments are removed (`mproc ls` shows them, `mproc gc` removes
    /// dead processes' ones); a smaller `arena_bytes` or an anonymous queue needs none.
    #[error(
        "shared memory is full: no room for {requested} more bytes of the queue's arena \
         (/dev/shm or its size limit)"
    )]
    OutOfSpace {
        /// The value.
        value: T,
        /// The bytes the reservation asked for.
        requested: u64,
    },
    /// The queue's store could not be reached or refused the call (a queue on a server,
    /// such as `mproc-redis`'s: the server is down, the connection broke, or it denied
    /// access). Whether the value was enqueued is unknown only if the connection broke after
    /// the request was sent; a refused or unsent request enqueued nothing. A shared-memory
    /// queue never returns it.
    #[error("queue store unavailable: {reason}")]
    Unavailable {
        /// The value.
        value: T,
        /// What went wrong.
        reason: String,
    },
}

impl<T> PutError<T> {
    /// The value that was not enqueued.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(v) | PutError::Timeout(v) | PutError::Closed(v) => v,
            PutError::Unsendable { value, .. }
            | PutError::TooLarge { value, .. }
            | PutError::OutOfSpace { value, .. }
            | PutError::Unavailable { value, .. } => value,
        }
    }

    /// The same error carrying `f(value)`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> PutError<U> {
        match self {
            PutError::Full(v) => PutError::Full(f(v)),
            PutError::Timeout(v) => PutError::Timeout(f(v)),
            PutError::Closed(v) => PutError::Closed(f(v)),
            PutError::TooLarge { value, size, max } => PutError::TooLarge {
                value: f(value),
                size,
                max,
            },
            PutError::Unsendable { value, reason } => PutError::Unsendable {
                value: f(value),
                reason,
            },
            PutError::OutOfSpace { value, requested } => PutError::OutOfSpace {
                value: f(value),
                requested,
            },
            PutError::Unavailable { value, reason } => PutError::Unavailable {
                value: f(value),
                reason,
            },
        }
    }
}

/// Why a `get` returned no value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GetError {
    /// Nothing to take right now (`try_get`).
    #[error("queue is empty")]
    Empty,
    /// `get_timeout` gave up while the queue stayed empty.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The queue is closed and drained.
    #[error("queue is closed and empty")]
    Closed,
    /// A message was taken but could not be decoded into the requested type, or its body
    /// was missing or corrupt (a peer rewrote it). The message is consumed.
    #[error("message could not be read: {reason}")]
    Unreadable {
        /// What went wrong.
        reason: String,
    },
    /// The queue's store could not be reached or refused the call (a queue on a server:
    /// see [`PutError::Unavailable`]). Nothing was taken. A shared-memory queue never
    /// returns it.
    #[error("queue store unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },
}

/// Errors of [`JoinableQueue::task_done`](crate::JoinableQueue::task_done).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TaskDoneError {
    /// `task_done` was called more times than items were put.
    #[error("task_done() called more times than there were items")]
    TooManyCalls,
    /// The queue's store could not be reached (a queue on a server). Nothing was counted.
    #[error("queue store unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },
}

/// A queue's store could not be reached or refused the call: what the [`MessageQueue`]
/// calls without a value of their own return (`len`, `close`, `join`). A shared-memory queue
/// never returns it.
///
/// [`MessageQueue`]: crate::MessageQueue
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("queue store unavailable: {reason}")]
pub struct Unavailable {
    /// What went wrong.
    pub reason: String,
}

/// Errors of creating or opening a queue: those of its segment (a queue is created and
/// opened as one), [`SegmentError`].
pub type OpenError = SegmentError;

/// The body of `get_many`: waits for one value with `get`, then takes up to `max - 1` more with
/// `try_get` without waiting. A value that cannot be read (`GetError::Unreadable`) is reported;
/// `Empty`, `Closed` and `Timeout` just end the batch.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn get_batch<T>(
    out: &mut Vec<T>,
    max: usize,
    get: impl FnOnce() -> Result<T, GetError>,
    mut try_get: impl FnMut() -> Result<T, GetError>,
) -> Result<usize, GetError> {
    if max == 0 {
        return Ok(0);
    }
    out.push(get()?);
    let mut n = 1;
    while n < max {
        match try_get() {
            Ok(v) => {
                out.push(v);
                n += 1;
            }
            Err(e @ (GetError::Unreadable { .. } | GetError::Unavailable { .. })) => return Err(e),
            Err(_) => break,
        }
    }
    Ok(n)
}
