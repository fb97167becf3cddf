//! `JoinableQueue<T>`: a `Queue<T>` that counts unfinished tasks (Python's
//! `multiprocessing.JoinableQueue`).

use std::time::{Duration, Instant};

use mproc_segment::SegmentError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::Ordering;
use crate::queue::{Queue, QueueOptions};
use crate::{GetError, PutError, TaskDoneError};

const FLAVOUR: &str = "postcard-joinable";

/// A queue whose consumers report each finished item with [`task_done`](Self::task_done), so
/// that a producer can [`join`](Self::join) until all are done.
///
/// An item is unfinished from the moment its `put` publishes it until a consumer that took it
/// calls `task_done`: `join` waits until no item is in the queue (published, or being taken by
/// a live consumer) and every item taken has been reported done. Items are counted where they
/// are — in their ring slot until a consumer takes them, then in a shared "taken, not done"
/// count that the consumer raises while it still holds the slot — so a producer killed inside
/// `put` leaves nothing counted (its item never existed), and a consumer killed inside `get`
/// before it took the item lets it go with it. A consumer that dies after `get` and before
/// `task_done` leaves its item counted: use [`join_timeout`](Self::join_timeout) where that
/// can happen.
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

    /// Items taken and not yet reported done (the shared count).
    fn taken(&self) -> &crate::atomic::AtomicU64 {
        &self.queue.raw().header().unfinished
    }

    /// Appends `value` (waiting for room); it is unfinished once this returns `Ok`.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.queue.put(value)
    }

    /// Appends `value` if there is room now.
    pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
        self.queue.try_put(value)
    }

    /// Appends `value`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.queue.put_timeout(value, timeout)
    }

    fn count_taken(&self) {
        self.taken().fetch_add(1, Ordering::SeqCst);
    }

    /// Takes the oldest item (waiting); call `task_done` when it is processed.
    pub fn get(&self) -> Result<T, GetError> {
        self.queue
            .get_hooked(crate::wait::Wait::Forever, || self.count_taken())
    }

    /// Takes the oldest item if there is one now.
    pub fn try_get(&self) -> Result<T, GetError> {
        self.queue
            .get_hooked(crate::wait::Wait::No, || self.count_taken())
    }

    /// `try_get` for the futures: peers asked after only if `check_peers`.
    #[cfg(feature = "async")]
    fn try_get_polled(&self, check_peers: bool) -> Result<T, GetError> {
        let wait = crate::wait::Wait::poll(check_peers);
        self.queue.get_hooked(wait, || self.count_taken())
    }

    /// `try_put` for the futures: peers asked after only if `check_peers`.
    #[cfg(feature = "async")]
    fn try_put_polled(&self, value: T, check_peers: bool) -> Result<(), PutError<T>> {
        self.queue.try_put_polled(value, check_peers)
    }

    /// Takes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        let wait = crate::wait::Wait::after(timeout);
        self.queue.get_hooked(wait, || self.count_taken())
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

    /// Waits without blocking a thread until every item put has been reported done (the
    /// async form of [`join`](Self::join)).
    #[cfg(feature = "async")]
    pub fn join_async(&self) -> impl std::future::Future<Output = ()> + '_ {
        let hdr = self.queue.raw().header();
        // The same 50 ms naps as `join`: the last item may leave without a wake.
        mproc_sync::__private::wait_async(
            [Some(&hdr.all_done), None],
            mproc_sync::__private::JOIN_CHECK,
            move |_| (self.unfinished_tasks() == 0).then_some(()),
        )
    }

    #[cfg(feature = "async")]
    crate::wait_async::async_queue_methods!(T, queue.raw());

    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        let hdr = self.queue.raw().header();
        // Naps: the last item may leave the queue without a wake (its producer or consumer
        // died); a few looks a second notice that.
        let d = mproc_sync::Deadline::at(deadline);
        loop {
            let until = d.nap_end(mproc_sync::__private::JOIN_CHECK);
            if hdr
                .all_done
                .block_on(Some(until), || (self.unfinished_tasks() == 0).then_some(()))
                .is_some()
            {
                return true;
            }
            if d.passed() {
                return false;
            }
        }
    }

    /// Items put and not yet reported done: in the queue (or being taken), plus taken and not
    /// yet `task_done`.
    pub fn unfinished_tasks(&self) -> u64 {
        // The taken count first: an item moves from the ring to it, never back, so reading it
        // before the ring cannot miss an item in flight (it may count one twice, briefly).
        let taken = self.taken().load(Ordering::SeqCst);
        taken + self.queue.raw().ring().outstanding() as u64
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

    /// Whether the queue has been closed.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// The queue's counters (see [`Queue::stats`](crate::Queue::stats)).
    pub fn stats(&self) -> crate::RingSnapshot {
        self.queue.stats()
    }

    /// Whether every slot holds an item now.
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// The segment the queue lives in: its name, header and descriptor (nothing that touches the
    /// bytes, see [`SegmentInfo`](mproc_segment::SegmentInfo)).
    pub fn segment(&self) -> mproc_segment::SegmentInfo<'_> {
        self.queue.segment()
    }

    /// The segment itself, whose `read_bytes`, `write_bytes` and `view` reach the
    /// object's bytes (for tools and tests).
    ///
    /// # Safety
    /// While this process uses the object (from any thread), nothing may access its bytes
    /// through the segment: the object's own accesses are partly non-atomic, and a
    /// concurrent access is a data race. Another process may (it cannot race with this
    /// one's memory model; the object treats what it reads as untrusted).
    pub unsafe fn raw_segment(&self) -> &mproc_segment::Segment {
        // SAFETY: the caller keeps the contract stated above.
        unsafe { self.queue.raw_segment() }
    }
}
