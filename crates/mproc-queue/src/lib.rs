//! Lock-free bounded multi-producer multi-consumer queues in shared memory — Python's
//! `multiprocessing.Queue`, at memory speed and robust to killed processes.
//!
//! - [`PodQueue<T: Pod>`](PodQueue): zero-copy slots of plain-old-data values.
//! - [`Queue<T: Serialize + DeserializeOwned>`](Queue): any serde type (postcard; inline up
//!   to the slot size, in the queue's body arena above it).
//! - [`ByteQueue`]: byte messages of any length, one copy each way, or none with loans
//!   ([`Loan`], [`ReadLoan`]).
//! - [`JoinableQueue<T>`](JoinableQueue): `task_done` / `join`.
//!
//! All three share one ring (Vyukov's bounded MPMC algorithm with per-slot claim words that
//! name the claiming process): `put`/`get` are a CAS, a copy and a store, with no system call
//! unless someone sleeps. Blocked callers spin briefly, then sleep on a futex.
//!
//! **What a SIGKILL can lose.** A producer killed inside `put` before it returned `Ok` loses
//! only its own item (consumers skip its half-written slot). A consumer killed inside `get`
//! after claiming an item loses that item. Nothing else is lost or duplicated, and nobody
//! deadlocks: every item whose `put` returned `Ok` is delivered exactly once unless the
//! consumer that took it died. (A killed process that was merely *waiting* loses nothing.)
//!
//! ```
//! use mproc_queue::PodQueue;
//! let q: PodQueue<[f32; 4]> = PodQueue::new(1024)?;
//! q.put([1.0, 2.0, 3.0, 4.0]).unwrap();
//! assert_eq!(q.get().unwrap()[3], 4.0);
//! # Ok::<(), mproc_segment::SegmentError>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub(crate) use mproc_sync::atomic;

/// The state accessors every queue type shares, delegated to its `raw: RawQueue` field.
#[cfg(not(loom))]
macro_rules! queue_state_methods {
    () => {
        /// Closes the queue: later `put`s fail with `Closed`; `get`s drain what is left, then
        /// fail with `Closed`. Every blocked `put` and `get` wakes.
        pub fn close(&self) {
            self.raw.close()
        }

        /// Whether the queue has been closed.
        pub fn is_closed(&self) -> bool {
            self.raw.is_closed()
        }

        /// How many items `get` could take now (exact when no `put`/`get` is in flight; never
        /// counts an item that is still being written). O(len).
        pub fn len(&self) -> usize {
            self.raw.len()
        }

        /// Whether `get` would find nothing now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Whether every slot holds an item now.
        pub fn is_full(&self) -> bool {
            self.len() >= self.capacity()
        }

        /// The number of slots (the requested capacity rounded up to a power of two).
        pub fn capacity(&self) -> usize {
            self.raw.capacity()
        }

        /// The segment the queue lives in: its name, header and descriptor (nothing that touches the
        /// bytes, see [`SegmentInfo`](mproc_segment::SegmentInfo)).
        pub fn segment(&self) -> mproc_segment::SegmentInfo<'_> {
            mproc_segment::SegmentInfo::of(self.raw.segment())
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
            self.raw.segment()
        }

        /// The queue's counters as every process sees them: items put and taken since it was
        /// made, sleepers on each side, slots recovered from dead peers (what `mproc metrics`
        /// reports). Each field is read on its own: a snapshot, not an atomic picture.
        pub fn stats(&self) -> $crate::RingSnapshot {
            self.raw.header().snapshot()
        }
    };
}

/// The waiting forms of `put` and `get`, each one [`Wait`](crate::wait::Wait) over the
/// type's `put_with(value, wait)` and `get_with(wait)`: `put` / `try_put` / `put_timeout`,
/// `get` / `try_get` / `get_timeout`, and the polls the futures make.
#[cfg(not(loom))]
macro_rules! wait_forms {
    ($item:ty) => {
        /// Appends `value`, waiting while the queue (or its arena) is full. `Err(Closed)` once
        /// closed; for a `Queue`, `Err(TooLarge)` if its encoding exceeds the whole arena. The
        /// value comes back in the error.
        pub fn put(&self, value: $item) -> Result<(), $crate::PutError<$item>> {
            self.put_with(value, $crate::wait::Wait::Forever)
        }

        /// Appends `value` if there is room now: `Err(Full)` otherwise.
        pub fn try_put(&self, value: $item) -> Result<(), $crate::PutError<$item>> {
            self.put_with(value, $crate::wait::Wait::No)
        }

        /// Appends `value`, waiting at most `timeout` for room: `Err(Timeout)` otherwise.
        pub fn put_timeout(
            &self,
            value: $item,
            timeout: std::time::Duration,
        ) -> Result<(), $crate::PutError<$item>> {
            self.put_with(value, $crate::wait::Wait::after(timeout))
        }

        /// Takes the oldest item, waiting while the queue is empty. `Err(Closed)` once closed
        /// and drained.
        pub fn get(&self) -> Result<$item, $crate::GetError> {
            self.get_with($crate::wait::Wait::Forever)
        }

        /// Takes the oldest item if there is one now: `Err(Empty)` otherwise.
        pub fn try_get(&self) -> Result<$item, $crate::GetError> {
            self.get_with($crate::wait::Wait::No)
        }

        /// Takes the oldest item, waiting at most `timeout`: `Err(Timeout)` otherwise.
        pub fn get_timeout(&self, timeout: std::time::Duration) -> Result<$item, $crate::GetError> {
            self.get_with($crate::wait::Wait::after(timeout))
        }

        /// `try_get` for the futures: peers asked after only if `check_peers`.
        #[cfg(feature = "async")]
        pub(crate) fn try_get_polled(&self, check_peers: bool) -> Result<$item, $crate::GetError> {
            self.get_with($crate::wait::Wait::poll(check_peers))
        }

        /// `try_put` for the futures: peers asked after only if `check_peers`.
        #[cfg(feature = "async")]
        pub(crate) fn try_put_polled(
            &self,
            value: $item,
            check_peers: bool,
        ) -> Result<(), $crate::PutError<$item>> {
            self.put_with(value, $crate::wait::Wait::poll(check_peers))
        }
    };
}

mod arena;
pub mod codec;
/// The slot and arena accessors of the message queues (`Queue`, `ByteQueue`).
#[cfg(not(loom))]
macro_rules! arena_methods {
    () => {
        /// Bytes per slot; messages (encoded) longer than this minus 8 go to the arena.
        pub fn slot_size(&self) -> usize {
            self.raw.slot_size()
        }

        /// Bytes of the body arena: the largest message (encoded), and the most bytes of
        /// large messages the queue holds at once.
        pub fn arena_bytes(&self) -> u64 {
            self.raw.arena_bytes()
        }

        /// Bytes of the arena in use now: by messages not yet taken, or being written or read
        /// (in whole units, including the space behind a chunk still held). Chunks that dead
        /// processes left at the front are freed first. 0 when the queue is drained.
        pub fn arena_used(&self) -> u64 {
            self.raw.arena_used()
        }

        /// Arena units set aside because the chunk word there failed validation (a peer
        /// scribbled over it): the message there was lost, and traffic went on.
        pub fn arena_corrupt_skipped(&self) -> u64 {
            self.raw.arena_corrupt_skipped()
        }
    };
}

mod error;
mod layout;
#[cfg(all(test, loom))]
mod loom_arena;
#[cfg(all(test, loom))]
mod loom_tests;
mod ring;
mod runs;
mod stats;
mod whole;

#[cfg(not(loom))]
mod body;
#[cfg(not(loom))]
mod broadcast;
#[cfg(not(loom))]
mod bytes;
#[cfg(all(feature = "cbor", not(loom)))]
pub mod cbor;
#[cfg(not(loom))]
pub mod dict;
#[cfg(not(loom))]
mod encoded;
#[cfg(not(loom))]
mod joinable;
#[cfg(not(loom))]
mod loan;
#[cfg(not(loom))]
mod message;
#[cfg(not(loom))]
mod pipe;
#[cfg(not(loom))]
mod pod;
#[cfg(not(loom))]
mod queue;
#[cfg(not(loom))]
mod raw;
#[cfg(not(loom))]
mod wait;
#[cfg(all(feature = "async", not(loom)))]
mod wait_async;

pub use arena::ArenaHeader;
pub use error::{GetError, OpenError, PutError, TaskDoneError, Unavailable};
pub use ring::{HIGH_WATER_EVERY, RingHeader, RingSnapshot};

#[cfg(not(loom))]
pub use broadcast::{
    Broadcast, BroadcastOptions, ByteBroadcast, ByteSubscriber, DEFAULT_MAX_MESSAGE,
    DEFAULT_SUBSCRIBERS, Lagging, PodBroadcast, PodSubscriber, RecvError, SendError,
    SubscribeError, Subscriber, WRITING,
};
#[cfg(not(loom))]
pub use bytes::ByteQueue;
#[cfg(all(feature = "cbor", not(loom)))]
pub use cbor::CborQueue;
#[cfg(not(loom))]
pub use dict::{BytesDict, Dict, DictError, DictOptions, DictStats, Repair};
#[cfg(not(loom))]
pub use encoded::EncodedQueue;
#[cfg(not(loom))]
pub use joinable::JoinableQueue;
#[cfg(not(loom))]
pub use loan::{Loan, PodLoan, PodReadLoan, ReadLoan};
#[cfg(not(loom))]
pub use message::{JoinableMessageQueue, MessageQueue};
#[cfg(all(feature = "async", not(loom)))]
pub use pipe::ConnectionReady;
#[cfg(not(loom))]
pub use pipe::{Connection, ConnectionFds, PEER_CHECK, pipe};
#[cfg(not(loom))]
pub use pod::PodQueue;
#[cfg(not(loom))]
pub use queue::{DEFAULT_SLOT_SIZE, MIN_DEFAULT_ARENA, MIN_SLOT_SIZE, Queue, QueueOptions};
#[cfg(all(feature = "async", not(loom)))]
pub use wait_async::QueueReady;
