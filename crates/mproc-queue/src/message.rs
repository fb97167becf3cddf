//! One interface over every queue of typed messages, wherever it lives: a producer or a
//! consumer written once against [`MessageQueue`] runs over a shared-memory [`Queue`] on
//! this host or over a queue on a server (`mproc-redis`'s `RedisQueue`), chosen at run time.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{GetError, PutError, TaskDoneError, Unavailable};
use crate::{JoinableQueue, Queue};

/// A bounded FIFO queue of `T` messages shared between processes: Python's
/// `multiprocessing.Queue` vocabulary, implemented by [`Queue`] (shared memory) and by
/// `mproc_redis::RedisQueue` (a Redis server).
///
/// The calls mean the same on both: `put` waits for room, `try_put` does not, `get` waits
/// for a message, `close` makes further `put`s fail and lets `get` drain what is left, then
/// return [`GetError::Closed`]. Calls that reach a server can also fail with the
/// `Unavailable` errors, which a shared-memory queue never returns.
///
/// ```
/// use mproc_queue::{GetError, MessageQueue, Queue};
///
/// // Written once, for any queue of u64.
/// fn produce(q: &dyn MessageQueue<u64>, n: u64) {
///     for i in 0..n {
///         q.put(i).expect("put");
///     }
///     q.close().expect("close");
/// }
/// fn consume(q: &dyn MessageQueue<u64>) -> u64 {
///     let mut sum = 0;
///     loop {
///         match q.get() {
///             Ok(v) => sum += v,
///             Err(GetError::Closed) => return sum,
///             Err(e) => panic!("{e}"),
///         }
///     }
/// }
///
/// let q = Queue::<u64>::new(16)?;
/// produce(&q, 10);
/// assert_eq!(consume(&q), 45);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait MessageQueue<T> {
    /// Appends `value`, waiting while the queue is full.
    fn put(&self, value: T) -> Result<(), PutError<T>>;
    /// Appends `value` if there is room now ([`PutError::Full`] otherwise).
    fn try_put(&self, value: T) -> Result<(), PutError<T>>;
    /// Appends `value`, waiting at most `timeout` for room ([`PutError::Timeout`]).
    fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>>;
    /// Takes the oldest message, waiting while the queue is empty.
    fn get(&self) -> Result<T, GetError>;
    /// Takes the oldest message if there is one now ([`GetError::Empty`] otherwise).
    fn try_get(&self) -> Result<T, GetError>;
    /// Takes the oldest message, waiting at most `timeout` ([`GetError::Timeout`]).
    fn get_timeout(&self, timeout: Duration) -> Result<T, GetError>;
    /// Closes the queue for every user: `put` fails from now on; `get` drains what is left.
    fn close(&self) -> Result<(), Unavailable>;
    /// Whether the queue was closed.
    fn is_closed(&self) -> Result<bool, Unavailable>;
    /// How many messages wait to be taken (a snapshot).
    fn len(&self) -> Result<usize, Unavailable>;
    /// Whether no message waits (a snapshot).
    fn is_empty(&self) -> Result<bool, Unavailable> {
        self.len().map(|n| n == 0)
    }
    /// Appends every value in order, waiting for room as needed. On an error, returns how
    /// many were put before it, and the error with the value that failed.
    fn put_many(&self, values: Vec<T>) -> Result<(), (usize, PutError<T>)> {
        for (i, v) in values.into_iter().enumerate() {
            self.put(v).map_err(|e| (i, e))?;
        }
        Ok(())
    }
    /// Waits for at least one message, then takes up to `max` without waiting further.
    fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        crate::error::get_batch(out, max, || self.get(), || self.try_get())
    }
}

/// A [`MessageQueue`] whose consumers report each message done, so a producer can wait for
/// all of them: Python's `JoinableQueue`. Implemented by [`JoinableQueue`] and
/// `mproc_redis::RedisJoinableQueue`.
pub trait JoinableMessageQueue<T>: MessageQueue<T> {
    /// Marks one message taken by this consumer as processed.
    fn task_done(&self) -> Result<(), TaskDoneError>;
    /// Waits until every message put so far has been marked done.
    fn join(&self) -> Result<(), Unavailable>;
    /// Waits at most `timeout`; whether every message was done.
    fn join_timeout(&self, timeout: Duration) -> Result<bool, Unavailable>;
    /// Messages put and not yet marked done.
    fn unfinished_tasks(&self) -> Result<u64, Unavailable>;
}

macro_rules! shm_message_queue {
    ($ty:ident) => {
        impl<T: Serialize + DeserializeOwned> MessageQueue<T> for $ty<T> {
            fn put(&self, value: T) -> Result<(), PutError<T>> {
                $ty::put(self, value)
            }
            fn try_put(&self, value: T) -> Result<(), PutError<T>> {
                $ty::try_put(self, value)
            }
            fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
                $ty::put_timeout(self, value, timeout)
            }
            fn get(&self) -> Result<T, GetError> {
                $ty::get(self)
            }
            fn try_get(&self) -> Result<T, GetError> {
                $ty::try_get(self)
            }
            fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                $ty::get_timeout(self, timeout)
            }
            fn close(&self) -> Result<(), Unavailable> {
                $ty::close(self);
                Ok(())
            }
            fn is_closed(&self) -> Result<bool, Unavailable> {
                Ok($ty::is_closed(self))
            }
            fn len(&self) -> Result<usize, Unavailable> {
                Ok($ty::len(self))
            }
        }
    };
}

shm_message_queue!(Queue);
shm_message_queue!(JoinableQueue);

impl<T: Serialize + DeserializeOwned> JoinableMessageQueue<T> for JoinableQueue<T> {
    fn task_done(&self) -> Result<(), TaskDoneError> {
        JoinableQueue::task_done(self)
    }
    fn join(&self) -> Result<(), Unavailable> {
        JoinableQueue::join(self);
        Ok(())
    }
    fn join_timeout(&self, timeout: Duration) -> Result<bool, Unavailable> {
        Ok(JoinableQueue::join_timeout(self, timeout))
    }
    fn unfinished_tasks(&self) -> Result<u64, Unavailable> {
        Ok(JoinableQueue::unfinished_tasks(self))
    }
}
