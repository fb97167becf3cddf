//! `JoinableQueue<T>`: a `Queue<T>` that counts unfinished tasks (Python's
//! `multiprocessing.JoinableQueue`).

use std::time::{Duration, Instant};

use mproc_segment::SegmentError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::Ordering;
use crate::message::{Queue, QueueOptions};
use crate::{GetError, PutError, TaskDoneError};

const FLAVOUR: &str = "postcard-joinable";

/// A queue whose consumers report each finished item with [`task_done`](Self::task_done), so
/// that a producer can [`join`](Self::join) until all are done.
///
/// The count of unfinished items lives in shared memory: `put` raises it (before the item can
/// be taken), `task_done` lowers it, `join` sleeps until it reaches zero. A consumer that dies
/// between `get` and `task_done` leaves the count raised: use
/// [`join_timeout`](Self::join_timeout) where that can happen.
///
/// ```
/// use mproc_queue::JoinableQueue;
/// let q: JoinableQueue<u32> = JoinableQueue::new(8)?;
/// q.put(1).unwrap();
/// let _item = q.get().unwrap();
/// assert!(!q.join_timeout(std::time::Duration::from_millis(1)));
/// q.task_done().unwrap();
/// q.join();
/// assert!(q.task_done().is_err());           // more calls than items
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An anonymous joinable queue of at least `capacity` slots.
    pub fn new(capacity: usize) -> Result<JoinableQueue<T>, SegmentError> {
        Self::anonymous_with(QueueOptions::new().capacity(capacity))
    }

    /// An anonymous joinable queue with these options.
    pub fn anonymous_with(options: QueueOptions) -> Result<JoinableQueue<T>, SegmentError> {
        Ok(JoinableQueue {
            queue: Queue::from_raw(options.raw::<T>(FLAVOUR, None)?),
        })
    }

    /// A named joinable queue of at least `capacity` slots.
    pub fn create(name: &str, capacity: usize) -> Result<JoinableQueue<T>, SegmentError> {
        Self::create_with(name, QueueOptions::new().capacity(capacity))
    }

    /// A named joinable queue with these options.
    pub fn create_with(
        name: &str,
        options: QueueOptions,
    ) -> Result<JoinableQueue<T>, SegmentError> {
        Ok(JoinableQueue {
            queue: Queue::from_raw(options.raw::<T>(FLAVOUR, Some(name))?),
        })
    }

    /// Opens a named joinable queue (a plain `Queue` of the same name is refused).
    pub fn open(name: &str) -> Result<JoinableQueue<T>, SegmentError> {
        let options = QueueOptions::new();
        let raw = crate::raw::RawQueue::open(options.segment_options::<T>(FLAVOUR), name)?;
        Ok(JoinableQueue {
            queue: Queue::checked(raw)?,
        })
    }

    fn unfinished(&self) -> &crate::atomic::AtomicU64 {
        &self.queue.raw().header().unfinished
    }

    fn counted(&self, r: Result<(), PutError<T>>) -> Result<(), PutError<T>> {
        if r.is_err() {
            self.task_done_inner();
        }
        r
    }

    /// Appends `value` (waiting for room) and counts it as unfinished.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.unfinished().fetch_add(1, Ordering::SeqCst);
        self.counted(self.queue.put(value))
    }

    /// Appends `value` if there is room now.
    pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
        self.unfinished().fetch_add(1, Ordering::SeqCst);
        self.counted(self.queue.try_put(value))
    }

    /// Appends `value`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.unfinished().fetch_add(1, Ordering::SeqCst);
        self.counted(self.queue.put_timeout(value, timeout))
    }

    /// Takes the oldest item (waiting); call `task_done` when it is processed.
    pub fn get(&self) -> Result<T, GetError> {
        self.queue.get()
    }

    /// Takes the oldest item if there is one now.
    pub fn try_get(&self) -> Result<T, GetError> {
        self.queue.try_get()
    }

    /// Takes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.queue.get_timeout(timeout)
    }

    fn task_done_inner(&self) -> bool {
        let hdr = self.queue.raw().header();
        let mut n = hdr.unfinished.load(Ordering::SeqCst);
        loop {
            if n == 0 {
                return false;
            }
            match hdr
                .unfinished
                .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n == 1 {
            hdr.all_done.wake_all();
        }
        true
    }

    /// Reports one taken item as processed. More calls than items is an error (and changes
    /// nothing).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.task_done_inner() {
            Ok(())
        } else {
            Err(TaskDoneError::TooManyCalls)
        }
    }

    /// Blocks until every item put has been reported done.
    pub fn join(&self) {
        self.join_deadline(None);
    }

    /// Blocks at most `timeout`; returns whether every item was reported done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_deadline(Some(Instant::now() + timeout))
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        let hdr = self.queue.raw().header();
        hdr.all_done
            .block_on(deadline, || {
                (hdr.unfinished.load(Ordering::SeqCst) == 0).then_some(())
            })
            .is_some()
    }

    /// Items put and not yet reported done.
    pub fn unfinished_tasks(&self) -> u64 {
        self.unfinished().load(Ordering::SeqCst)
    }

    /// Closes the queue (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close()
    }

    /// Items `get` could take now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether `get` would find nothing now.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}
