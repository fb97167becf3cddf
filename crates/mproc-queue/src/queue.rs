//! `Queue<T>`: any serde type, any size (Python's pickling `multiprocessing.Queue`).
//!
//! Messages are encoded with postcard's format, byte vectors copied in one piece (see
//! [`codec`](crate::codec)). A message that fits its slot (after an 8-byte
//! length/kind prefix) is stored inline; a larger one is encoded straight into the queue's
//! body arena (see `arena.rs`), and the consumer decodes it in place there. No system call
//! per message, whatever its size, up to the arena's size.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;

use mproc_segment::{Kind, SegmentError, SegmentOptions, TypeTag};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ByteQueue;
use crate::body;
use crate::body::MIN_MESSAGE_SLOT;
use crate::layout::Layout;
use crate::raw::RawQueue;
use crate::wait::{Refused, Wait};
use crate::{GetError, PutError};

/// Default bytes per slot: messages up to 120 encoded bytes travel inline.
pub const DEFAULT_SLOT_SIZE: usize = 128;
/// Smallest slot size (room for the prefix and a reference into the arena).
pub const MIN_SLOT_SIZE: usize = 64;
/// The smallest default arena (bytes): see [`QueueOptions::arena_bytes`]. 4 MiB: a default
/// queue takes the messages people send, three 1 MiB `Vec<u8>`s waiting at once (a 1 MiB
/// arena refused even one: its encoding is a few bytes longer than 1 MiB).
pub const MIN_DEFAULT_ARENA: usize = 4 << 20;

const _: () = assert!(MIN_SLOT_SIZE >= MIN_MESSAGE_SLOT);

/// How to create or open a [`Queue`] or [`JoinableQueue`](crate::JoinableQueue).
///
/// ```
/// use mproc_queue::{Queue, QueueOptions};
/// let q: Queue<String> = QueueOptions::new()
///     .capacity(16)
///     .slot_size(256)
///     .arena_bytes(8 << 20)          // messages up to 8 MiB, 8 MiB in flight
///     .anonymous()?;
/// assert_eq!(q.capacity(), 16);
/// assert_eq!(q.arena_bytes(), 8 << 20);
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug, Clone)]
pub struct QueueOptions {
    capacity: usize,
    slot_size: usize,
    arena_bytes: Option<usize>,
    type_name: Option<Cow<'static, str>>,
    fail_if_exists: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions::new()
    }
}

impl QueueOptions {
    /// Capacity 1024, slots of [`DEFAULT_SLOT_SIZE`] bytes, type named by `type_name`.
    pub fn new() -> QueueOptions {
        QueueOptions {
            capacity: 1024,
            slot_size: DEFAULT_SLOT_SIZE,
            arena_bytes: None,
            type_name: None,
            fail_if_exists: false,
        }
    }

    /// Number of slots (rounded up to a power of two).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Bytes per slot (at least [`MIN_SLOT_SIZE`]); larger messages go to the arena.
    pub fn slot_size(mut self, bytes: usize) -> Self {
        self.slot_size = bytes.max(MIN_SLOT_SIZE);
        self
    }

    /// Bytes of the body arena: shared memory, part of the queue's segment, that holds the
    /// messages larger than a slot (rounded up to a power of two, at least 2 KiB). It bounds
    /// both the largest message (a larger one is [`PutError::TooLarge`]) and how many bytes
    /// of large messages can wait in the queue (a `put` that finds no room waits like one
    /// that finds no slot). Default: twice the slots' bytes (capacity × slot size), at least
    /// [`MIN_DEFAULT_ARENA`] (4 MiB).
    ///
    /// A named queue reserves its ring and the arena's first MiB in `/dev/shm` at creation,
    /// and the rest of the arena as messages first reach it (`fallocate`, in doubling steps,
    /// before any byte is touched): a large arena costs only what it holds, and a
    /// container's small `/dev/shm` takes it. A message that finds `/dev/shm` full is
    /// [`PutError::OutOfSpace`] with the value handed back (never SIGBUS). Arenas over 8 MiB
    /// get units larger than 128 bytes, so that their bookkeeping stays at 1 MiB. An
    /// anonymous queue's pages come as they are first used.
    pub fn arena_bytes(mut self, bytes: usize) -> Self {
        self.arena_bytes = Some(bytes);
        self
    }

    fn arena_len(&self) -> usize {
        self.arena_bytes.unwrap_or_else(|| {
            self.capacity
                .saturating_mul(self.slot_size)
                .saturating_mul(2)
                .max(MIN_DEFAULT_ARENA)
        })
    }

    /// A stable name for the message type, for processes built separately.
    pub fn type_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.type_name = Some(name.into());
        self
    }

    /// `create` fails with `AlreadyExists` when the name is taken, even by a stale queue
    /// (one nobody holds, whose creator is gone) that it would otherwise remove and make
    /// afresh: for a program that must not lose what a crashed predecessor left queued.
    ///
    /// ```
    /// use mproc_queue::{Queue, QueueOptions};
    /// let name = format!("mproc-doc-fail-if-exists-{}", std::process::id());
    /// let q: Queue<u32> = QueueOptions::new().create(&name)?;
    /// let again = QueueOptions::new().fail_if_exists().create::<u32>(&name);
    /// assert!(matches!(again, Err(mproc_segment::SegmentError::AlreadyExists { .. })));
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    pub fn fail_if_exists(mut self) -> Self {
        self.fail_if_exists = true;
        self
    }

    /// The segment options every queue of these options is made with.
    pub(crate) fn with_reclaim(&self, options: SegmentOptions) -> SegmentOptions {
        if self.fail_if_exists {
            options.fail_if_exists()
        } else {
            options
        }
    }

    pub(crate) fn segment_options<T>(&self, flavour: &str) -> SegmentOptions {
        let name = self
            .type_name
            .clone()
            .unwrap_or(Cow::Borrowed(std::any::type_name::<T>()));
        self.with_reclaim(
            SegmentOptions::new(Kind::QUEUE)
                .type_tag(TypeTag::named::<T>(format!("{flavour}:{name}"))),
        )
    }

    pub(crate) fn layout(&self) -> Result<Layout, SegmentError> {
        Layout::new(self.capacity, self.slot_size, 8, self.arena_len().max(1))
    }

    pub(crate) fn raw<T>(
        &self,
        flavour: &str,
        name: Option<&str>,
    ) -> Result<RawQueue, SegmentError> {
        RawQueue::create(self.segment_options::<T>(flavour), name, self.layout()?)
    }

    /// Creates a named queue.
    pub fn create<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Queue<T>, SegmentError> {
        Ok(Queue::from_raw(self.raw::<T>(FLAVOUR, Some(name))?))
    }

    /// Creates an anonymous queue (children get it through `fork`).
    pub fn anonymous<T: Serialize + DeserializeOwned>(&self) -> Result<Queue<T>, SegmentError> {
        Ok(Queue::from_raw(self.raw::<T>(FLAVOUR, None)?))
    }

    /// Attaches to a queue through its segment's file descriptor (an anonymous queue handed
    /// to a child across `exec`, see [`Segment::inheritable_fd`](mproc_segment::Segment::inheritable_fd)), checking the message type.
    pub fn from_fd<T: Serialize + DeserializeOwned>(
        &self,
        fd: OwnedFd,
    ) -> Result<Queue<T>, SegmentError> {
        Queue::checked(RawQueue::from_fd(self.segment_options::<T>(FLAVOUR), fd)?)
    }

    /// Opens a named queue, checking the message type.
    pub fn open<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Queue<T>, SegmentError> {
        Queue::checked(RawQueue::open(self.segment_options::<T>(FLAVOUR), name)?)
    }

    /// Creates a named [`ByteQueue`] with these options (the type name is not used).
    pub fn create_bytes(&self, name: &str) -> Result<ByteQueue, SegmentError> {
        ByteQueue::create_with(self, Some(name))
    }

    /// Creates an anonymous [`ByteQueue`] with these options.
    pub fn anonymous_bytes(&self) -> Result<ByteQueue, SegmentError> {
        ByteQueue::create_with(self, None)
    }
}

pub(crate) const FLAVOUR: &str = "postcard+arena";

/// A bounded multi-producer multi-consumer queue of any serde type, in shared memory.
///
/// A message whose encoding fits its slot travels inline; a larger one is encoded straight
/// into the queue's body arena and decoded in place by the consumer: no system call per
/// message at any size up to [`arena_bytes`](Self::arena_bytes). Byte vectors are copied
/// in one piece wherever they sit — a `Queue<Vec<u8>>` or `Queue<String>`, and a `Vec<u8>`
/// field of your own struct or enum alike, with nothing to annotate (see
/// [`codec`](crate::codec)).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use mproc_queue::Queue;
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Job { id: u32, input: Vec<f64> }
///
/// let q: Queue<Job> = Queue::new(64)?;
/// q.put(Job { id: 1, input: vec![1.0; 1000] }).unwrap();   // 8 KB: travels in the arena
/// assert_eq!(q.get().unwrap().input.len(), 1000);
/// q.close();
/// assert!(q.get().is_err());                                 // closed and drained
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct Queue<T> {
    raw: RawQueue,
    _t: PhantomData<fn(T) -> T>,
}

impl Queue<Vec<u8>> {
    /// Takes the oldest message into `buf` (cleared first, its allocation reused), waiting
    /// while the queue is empty; returns the message's length. One copy, out of the slot or
    /// the arena.
    ///
    /// ```
    /// let q: mproc_queue::Queue<Vec<u8>> = mproc_queue::Queue::new(8)?;
    /// q.put(vec![1u8; 100_000]).unwrap();
    /// let mut buf = Vec::new();
    /// assert_eq!(q.get_into(&mut buf).unwrap(), 100_000);
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize, GetError> {
        let read = |message: &[u8]| match crate::whole::split(message) {
            Some(bytes) => {
                buf.clear();
                buf.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            None => Err("malformed byte message".to_string()),
        };
        body::receive(&self.raw, Wait::Forever, read)?
            .map_err(|reason| GetError::Unreadable { reason })
    }
}

/// Decodes `bytes` as a `T`; a panicking `Deserialize` impl is caught (the slot and chunk
/// must always be released). A whole-message byte type is copied out in one piece.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if let Some(r) = crate::whole::decode::<T>(bytes) {
        return r;
    }
    match std::panic::catch_unwind(|| crate::codec::decode::<T>(bytes)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("Deserialize panicked".into()),
    }
}

/// Refuses a message queue whose slots cannot hold the prefix and an arena reference.
pub(crate) fn check_message_slots(raw: &RawQueue) -> Result<(), SegmentError> {
    if raw.slot_size() < MIN_SLOT_SIZE {
        return Err(SegmentError::CorruptHeader {
            reason: "queue slot size below the minimum for messages",
        });
    }
    Ok(())
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(crate) fn from_raw(raw: RawQueue) -> Queue<T> {
        Queue {
            raw,
            _t: PhantomData,
        }
    }

    /// Wraps an opened queue after checking its geometry suits messages.
    pub(crate) fn checked(raw: RawQueue) -> Result<Queue<T>, SegmentError> {
        check_message_slots(&raw)?;
        Ok(Queue::from_raw(raw))
    }

    pub(crate) fn raw(&self) -> &RawQueue {
        &self.raw
    }

    /// An anonymous queue of at least `capacity` slots of [`DEFAULT_SLOT_SIZE`] bytes.
    pub fn new(capacity: usize) -> Result<Queue<T>, SegmentError> {
        QueueOptions::new().capacity(capacity).anonymous()
    }

    /// A named queue of at least `capacity` slots of [`DEFAULT_SLOT_SIZE`] bytes.
    pub fn create(name: &str, capacity: usize) -> Result<Queue<T>, SegmentError> {
        QueueOptions::new().capacity(capacity).create(name)
    }

    /// Opens a named queue created by another process for the same message type.
    pub fn open(name: &str) -> Result<Queue<T>, SegmentError> {
        QueueOptions::new().open(name)
    }

    /// Attaches to a queue through its segment's file descriptor, checking the message type.
    /// The fd is usually [`Segment::inheritable_fd`](mproc_segment::Segment::inheritable_fd)(mproc_segment::Segment::inheritable_fd)
    /// of [`segment`](Queue::segment), passed to a child across `exec`; a `fork`ed child can
    /// use a duplicate of the inherited fd.
    pub fn from_fd(fd: OwnedFd) -> Result<Queue<T>, SegmentError> {
        QueueOptions::new().from_fd(fd)
    }

    /// A second handle to the same queue (as if opened again).
    pub fn try_clone(&self) -> Result<Queue<T>, SegmentError> {
        Queue::checked(self.raw.try_clone()?)
    }

    /// A whole-message byte type (`Vec<u8>`, `String`, `Box<[u8]>`): its length prefix and
    /// its bytes, each copied once, inline or into the arena (see `whole.rs`). `None` if `T`
    /// is not one (`value` comes back).
    fn put_whole(&self, value: T, wait: Wait) -> Result<Result<(), PutError<T>>, T> {
        let Some(bytes) = crate::whole::bytes_of(&value) else {
            return Err(value);
        };
        let mut prefix = [0u8; 10];
        let n = crate::whole::length_prefix(bytes.len(), &mut prefix);
        let size = n + bytes.len();
        let sent = if size <= body::inline_room(&self.raw) {
            let mut buf = [0u8; 256];
            match buf.get_mut(..size) {
                Some(b) => {
                    b[..n].copy_from_slice(&prefix[..n]);
                    b[n..].copy_from_slice(bytes);
                    body::send_inline(&self.raw, b, wait)
                }
                // A slot larger than the stack buffer: through the arena below.
                None => body::send_arena(&self.raw, size, wait, |body| {
                    body[..n].copy_from_slice(&prefix[..n]);
                    body[n..].copy_from_slice(bytes);
                    Ok(())
                }),
            }
        } else {
            body::send_arena(&self.raw, size, wait, |body| {
                body[..n].copy_from_slice(&prefix[..n]);
                body[n..].copy_from_slice(bytes);
                Ok(())
            })
        };
        let size = if size > body::inline_room(&self.raw) {
            size
        } else {
            0
        };
        Ok(sent.map_err(|e| e.with(value, size)))
    }

    /// Encodes `value` (into its slot, or straight into the arena if larger) and sends it.
    fn put_with(&self, value: T, wait: Wait) -> Result<(), PutError<T>> {
        let value = if crate::whole::is_whole::<T>() {
            match self.put_whole(value, wait) {
                Ok(sent) => return sent,
                Err(value) => value,
            }
        } else {
            value
        };
        let room = body::inline_room(&self.raw);
        let inline = crate::codec::with_scratch(|buf| {
            if buf.len() < room {
                buf.resize(room, 0);
            }
            // Small messages encode straight into the reused buffer (no allocation).
            match crate::codec::encode_to_slice(&value, &mut buf[..room]) {
                Ok(used) => Ok(Some(body::send_inline(&self.raw, used, wait))),
                Err(postcard::Error::SerializeBufferFull) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        });
        let (sent, size) = match inline {
            Ok(Some(sent)) => (sent, 0),
            Ok(None) => match crate::codec::encoded_len(&value) {
                Ok(size) => {
                    let sent = body::send_arena(&self.raw, size, wait, |body| {
                        crate::codec::encode_to_slice(&value, body)
                            .map(drop)
                            .map_err(|e| e.to_string())
                    });
                    (sent, size)
                }
                Err(e) => (Err(Refused::Unsendable(e.to_string())), 0),
            },
            Err(reason) => (Err(Refused::Unsendable(reason)), 0),
        };
        sent.map_err(|e| e.with(value, size))
    }

    fn get_with(&self, wait: Wait) -> Result<T, GetError> {
        self.get_hooked(wait, || {})
    }

    /// Takes a message; `taken` runs once it has decoded, while its slot is still held (a
    /// `JoinableQueue` counts it there, so that it is always in the ring or counted).
    pub(crate) fn get_hooked(&self, wait: Wait, taken: impl Fn()) -> Result<T, GetError> {
        let read = |bytes: &[u8]| {
            let r = decode::<T>(bytes);
            if r.is_ok() {
                taken();
            }
            r
        };
        body::receive(&self.raw, wait, read)?.map_err(|reason| GetError::Unreadable { reason })
    }

    /// Appends every value in order, waiting for room as needed. On an error, returns how
    /// many were put before it, and the error with the value that failed.
    pub fn put_many(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), (usize, PutError<T>)> {
        for (i, v) in values.into_iter().enumerate() {
            self.put(v).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// Waits for at least one message, then takes up to `max` without waiting further.
    pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        crate::error::get_batch(out, max, || self.get(), || self.try_get())
    }

    wait_forms!(T);
    queue_state_methods!();

    #[cfg(feature = "async")]
    crate::wait_async::async_queue_methods!(T, raw);
    arena_methods!();
}
