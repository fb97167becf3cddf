//! `Queue<T>`: any serde type, any size (Python's pickling `multiprocessing.Queue`).
//!
//! Messages are encoded with postcard. A message that fits its slot (after an 8-byte
//! length/kind prefix) is stored inline; a larger one goes into a segment of its own
//! (`mproc-msg-...`, mode 0600) whose name travels through the slot. The reader copies the
//! body out and unlinks that segment. When the last handle of a queue is dropped, messages
//! nobody took are drained and their segments unlinked. A process killed between taking an
//! out-of-line message and unlinking its body leaves that segment behind (its creator pid is
//! in its header, for `mproc gc`).

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::time::{Duration, Instant};

use mproc_segment::{Kind, Segment, SegmentError, SegmentOptions, TypeTag, current_pid};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raw::{Layout, RawQueue};
use crate::ring::{Pop, Push};
use crate::{GetError, PutError};

/// Default bytes per slot: messages up to 120 encoded bytes travel inline.
pub const DEFAULT_SLOT_SIZE: usize = 128;
/// Smallest slot size (room for the prefix and an out-of-line segment's name).
pub const MIN_SLOT_SIZE: usize = 64;

const PREFIX: usize = 8;
const INLINE: u32 = 0;
const OUT_OF_LINE: u32 = 1;

/// How to create or open a [`Queue`] or [`JoinableQueue`](crate::JoinableQueue).
///
/// ```
/// use mproc_queue::{Queue, QueueOptions};
/// let q: Queue<String> = QueueOptions::new().capacity(16).slot_size(256).anonymous()?;
/// assert_eq!(q.capacity(), 16);
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug, Clone)]
pub struct QueueOptions {
    capacity: usize,
    slot_size: usize,
    type_name: Option<Cow<'static, str>>,
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
            type_name: None,
        }
    }

    /// Number of slots (rounded up to a power of two).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Bytes per slot (at least [`MIN_SLOT_SIZE`]); larger messages go out of line.
    pub fn slot_size(mut self, bytes: usize) -> Self {
        self.slot_size = bytes.max(MIN_SLOT_SIZE);
        self
    }

    /// A stable name for the message type, for processes built separately.
    pub fn type_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.type_name = Some(name.into());
        self
    }

    pub(crate) fn segment_options<T>(&self, flavour: &str) -> SegmentOptions {
        let name = self
            .type_name
            .clone()
            .unwrap_or(Cow::Borrowed(std::any::type_name::<T>()));
        SegmentOptions::new(Kind::QUEUE).type_tag(TypeTag::named::<T>(format!("{flavour}:{name}")))
    }

    pub(crate) fn raw<T>(
        &self,
        flavour: &str,
        name: Option<&str>,
    ) -> Result<RawQueue, SegmentError> {
        let layout = Layout::new(self.capacity, self.slot_size, 8)?;
        RawQueue::create(self.segment_options::<T>(flavour), name, layout)
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

    /// Opens a named queue, checking the message type.
    pub fn open<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Queue<T>, SegmentError> {
        Ok(Queue::from_raw(RawQueue::open(
            self.segment_options::<T>(FLAVOUR),
            name,
        )?))
    }
}

const FLAVOUR: &str = "postcard";

/// A bounded multi-producer multi-consumer queue of any serde type, in shared memory.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use mproc_queue::Queue;
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Job { id: u32, input: Vec<f64> }
///
/// let q: Queue<Job> = Queue::new(64)?;
/// q.put(Job { id: 1, input: vec![1.0; 1000] }).unwrap();   // 8 KB: travels out of line
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

/// A message as copied out of its slot.
enum Taken {
    Inline(Vec<u8>),
    OutOfLine(String),
    Corrupt,
}

fn take(slot: &[u8]) -> Taken {
    let len = u32::from_ne_bytes([slot[0], slot[1], slot[2], slot[3]]) as usize;
    let kind = u32::from_ne_bytes([slot[4], slot[5], slot[6], slot[7]]);
    let Some(body) = slot.get(PREFIX..PREFIX.saturating_add(len)) else {
        return Taken::Corrupt;
    };
    match kind {
        INLINE => Taken::Inline(body.to_vec()),
        OUT_OF_LINE => match std::str::from_utf8(body) {
            Ok(name) => Taken::OutOfLine(name.to_owned()),
            Err(_) => Taken::Corrupt,
        },
        _ => Taken::Corrupt,
    }
}

fn message_name() -> String {
    static N: StdAtomicU64 = StdAtomicU64::new(0);
    let n = N.fetch_add(1, StdOrdering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("mproc-msg-{}-{n}-{nanos}", current_pid())
}

/// The body of a message that does not fit its slot, stored in a segment of its own.
struct Body {
    name: String,
}

impl Body {
    fn store(bytes: &[u8]) -> Result<Body, SegmentError> {
        let name = message_name();
        let mut seg = SegmentOptions::new(Kind::MESSAGE)
            .payload_len(bytes.len().max(1))
            .create(&name)?;
        seg.write_bytes(0, bytes)?;
        // From now on the reader (or the queue's last handle) unlinks it.
        seg.persist();
        Ok(Body { name })
    }

    fn load(name: &str) -> Result<Vec<u8>, SegmentError> {
        let result = (|| {
            let seg = SegmentOptions::new(Kind::MESSAGE).open(name)?;
            let mut buf = vec![0u8; seg.len()];
            seg.read_bytes(0, &mut buf)?;
            Ok(buf)
        })();
        let _ = Segment::unlink(name);
        result
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(crate) fn from_raw(raw: RawQueue) -> Queue<T> {
        Queue {
            raw,
            _t: PhantomData,
        }
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

    /// Encodes `value` (into its slot or, if larger, into a body segment) and pushes it with
    /// `push`; the body segment is removed again if the push fails.
    fn put_with(
        &self,
        value: T,
        push: impl FnOnce(&mut dyn FnMut(&mut [u8])) -> Push,
        timed: bool,
    ) -> Result<(), PutError<T>> {
        let bytes = match postcard::to_allocvec(&value) {
            Ok(b) => b,
            Err(e) => {
                return Err(PutError::Message {
                    value,
                    reason: e.to_string(),
                });
            }
        };
        let room = self.raw.slot_size() - PREFIX;
        let body = if bytes.len() > room {
            match Body::store(&bytes) {
                Ok(b) => Some(b),
                Err(e) => {
                    return Err(PutError::Message {
                        value,
                        reason: e.to_string(),
                    });
                }
            }
        } else {
            None
        };
        let (kind, payload): (u32, &[u8]) = match &body {
            Some(b) => (OUT_OF_LINE, b.name.as_bytes()),
            None => (INLINE, &bytes),
        };
        let mut fill = |slot: &mut [u8]| {
            slot[..4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
            slot[4..8].copy_from_slice(&kind.to_ne_bytes());
            slot[PREFIX..PREFIX + payload.len()].copy_from_slice(payload);
        };
        let r = push(&mut fill);
        if r != Push::Done {
            if let Some(b) = &body {
                let _ = Segment::unlink(&b.name);
            }
        }
        match r {
            Push::Done => Ok(()),
            Push::Closed => Err(PutError::Closed(value)),
            Push::Full if timed => Err(PutError::Timeout(value)),
            Push::Full => Err(PutError::Full(value)),
        }
    }

    fn decode(taken: Taken) -> Result<T, GetError> {
        let bytes = match taken {
            Taken::Inline(b) => b,
            Taken::OutOfLine(name) => Body::load(&name).map_err(|e| GetError::Message {
                reason: format!("message body {name}: {e}"),
            })?,
            Taken::Corrupt => {
                return Err(GetError::Message {
                    reason: "slot holds a malformed message".into(),
                });
            }
        };
        postcard::from_bytes(&bytes).map_err(|e| GetError::Message {
            reason: e.to_string(),
        })
    }

    fn get_result(r: Pop<Taken>, timed: bool) -> Result<T, GetError> {
        match r {
            Pop::Item(t) => Self::decode(t),
            Pop::Closed => Err(GetError::Closed),
            Pop::Empty | Pop::InProgress if timed => Err(GetError::Timeout),
            Pop::Empty | Pop::InProgress => Err(GetError::Empty),
        }
    }

    /// Appends `value`, waiting while the queue is full. `Err(Closed)` once closed.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_with(value, |fill| self.raw.push_deadline(None, fill), false)
    }

    /// Appends `value` if there is room now: `Err(Full)` otherwise.
    pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_with(value, |fill| self.raw.try_push(fill), false)
    }

    /// Appends `value`, waiting at most `timeout` for room: `Err(Timeout)` otherwise.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
        let deadline = Some(Instant::now() + timeout);
        self.put_with(value, |fill| self.raw.push_deadline(deadline, fill), true)
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

    /// Takes the oldest message, waiting while the queue is empty. `Err(Closed)` once closed
    /// and drained.
    pub fn get(&self) -> Result<T, GetError> {
        Self::get_result(self.raw.pop_deadline(None, take), false)
    }

    /// Takes the oldest message if there is one now: `Err(Empty)` otherwise.
    pub fn try_get(&self) -> Result<T, GetError> {
        Self::get_result(self.raw.try_pop(take), false)
    }

    /// Takes the oldest message, waiting at most `timeout`: `Err(Timeout)` otherwise.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        let deadline = Some(Instant::now() + timeout);
        Self::get_result(self.raw.pop_deadline(deadline, take), true)
    }

    /// Waits for at least one message, then takes up to `max` without waiting further.
    pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        crate::error::get_batch(out, max, || self.get(), || self.try_get())
    }

    /// Closes the queue: later `put`s fail with `Closed`; `get`s drain what is left, then
    /// fail with `Closed`.
    pub fn close(&self) {
        self.raw.close()
    }

    /// Whether the queue has been closed.
    pub fn is_closed(&self) -> bool {
        self.raw.is_closed()
    }

    /// How many messages `get` could take now. O(len).
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether `get` would find nothing now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every slot holds a message now.
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// Bytes per slot; encoded messages longer than this minus 8 go out of line.
    pub fn slot_size(&self) -> usize {
        self.raw.slot_size()
    }

    /// The segment the queue lives in.
    pub fn segment(&self) -> &Segment {
        self.raw.segment()
    }
}

/// Reclaims the bodies of messages nobody took, when the last handle goes.
pub(crate) fn drain_on_last_detach(raw: &RawQueue) {
    if raw.detach() {
        while let Pop::Item(t) = raw.try_pop(take) {
            if let Taken::OutOfLine(name) = t {
                let _ = Segment::unlink(&name);
            }
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        drain_on_last_detach(&self.raw);
    }
}
