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
use std::os::fd::{AsFd, OwnedFd};
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

thread_local! {
    /// Per-thread buffer that small messages are encoded into before being copied to a slot.
    static ENCODE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
const INLINE: u32 = 0;
/// Every out-of-line message body's name starts with this.
const BODY_PREFIX: &str = "mproc-msg-";
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

    /// Attaches to a queue through its segment's file descriptor (an anonymous queue handed
    /// to a child across `exec`, see [`Segment::inheritable_fd`]), checking the message type.
    pub fn from_fd<T: Serialize + DeserializeOwned>(
        &self,
        fd: OwnedFd,
    ) -> Result<Queue<T>, SegmentError> {
        Ok(Queue::from_raw(RawQueue::from_fd(
            self.segment_options::<T>(FLAVOUR),
            fd,
        )?))
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

/// A message as taken out of its slot.
enum Taken<T> {
    /// Inline: decoded in place while the slot was held (`Err` holds postcard's complaint).
    Decoded(Result<T, String>),
    /// Out of line: the name of the body segment.
    OutOfLine(String),
    Corrupt,
}

/// Splits a slot into (kind, body) after checking the length prefix.
fn parse(slot: &[u8]) -> Option<(u32, &[u8])> {
    let len = u32::from_ne_bytes(slot.get(0..4)?.try_into().ok()?) as usize;
    let kind = u32::from_ne_bytes(slot.get(4..8)?.try_into().ok()?);
    Some((kind, slot.get(PREFIX..PREFIX.checked_add(len)?)?))
}

/// Takes a message out of its slot. An inline message is decoded right here (no copy, no
/// allocation beyond what `T` itself needs); a panicking `Deserialize` impl is caught so the
/// slot is always released.
fn take<T: DeserializeOwned>(slot: &[u8]) -> Taken<T> {
    match parse(slot) {
        Some((INLINE, body)) => {
            let decoded = std::panic::catch_unwind(|| postcard::from_bytes::<T>(body));
            Taken::Decoded(match decoded {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("Deserialize panicked".into()),
            })
        }
        Some((OUT_OF_LINE, body)) => match std::str::from_utf8(body) {
            Ok(name) => Taken::OutOfLine(name.to_owned()),
            Err(_) => Taken::Corrupt,
        },
        _ => Taken::Corrupt,
    }
}

/// The body segment's name of an out-of-line message (for reclaiming undelivered ones).
fn take_body_name(slot: &[u8]) -> Option<String> {
    match parse(slot) {
        Some((OUT_OF_LINE, body)) => std::str::from_utf8(body)
            .ok()
            .filter(|n| n.starts_with(BODY_PREFIX))
            .map(str::to_owned),
        _ => None,
    }
}

/// Unlinks the out-of-line message bodies that process `pid` created and nobody took
/// (segments `mproc-msg-PID-…`). Call it only once `pid` has exited and every queue it wrote
/// to has been drained or is being discarded: a body still referenced by an unread message
/// would be lost. A pool calls it for the workers it reaps, so that a worker killed between
/// storing a large result and enqueueing it leaves nothing in `/dev/shm`. Returns how many it
/// removed.
pub fn remove_message_bodies_of(pid: u32) -> usize {
    let prefix = format!("{BODY_PREFIX}{pid}-");
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .filter(|n| Segment::unlink(n).is_ok())
        .count()
}

fn message_name() -> String {
    static N: StdAtomicU64 = StdAtomicU64::new(0);
    let n = N.fetch_add(1, StdOrdering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{BODY_PREFIX}{}-{n}-{nanos}", current_pid())
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
        // The name comes out of shared memory: never open (or unlink) anything that is not
        // a message body, whatever a corrupted or hostile slot says.
        if !name.starts_with(BODY_PREFIX) {
            return Err(SegmentError::InvalidName {
                name: name.to_owned(),
                reason: "not a message body name",
            });
        }
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

    /// Attaches to a queue through its segment's file descriptor, checking the message type.
    /// The fd is usually [`Segment::inheritable_fd`] of [`segment`](Queue::segment), passed to
    /// a child across `exec`; a `fork`ed child can use a duplicate of the inherited fd.
    pub fn from_fd(fd: OwnedFd) -> Result<Queue<T>, SegmentError> {
        QueueOptions::new().from_fd(fd)
    }

    /// A second handle to the same queue (as if opened again): the queue lives until the last
    /// handle is dropped.
    pub fn try_clone(&self) -> Result<Queue<T>, SegmentError> {
        let fd = self
            .raw
            .segment()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SegmentError::Io {
                call: "dup",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
        Ok(Queue::from_raw(RawQueue::from_fd(
            SegmentOptions::any(),
            fd,
        )?))
    }

    /// Encodes `value` (into its slot or, if larger, into a body segment) and pushes it with
    /// `push`; the body segment is removed again if the push fails.
    fn put_with(
        &self,
        value: T,
        push: impl FnOnce(&mut dyn FnMut(&mut [u8])) -> Push,
        timed: bool,
    ) -> Result<(), PutError<T>> {
        let room = self.raw.slot_size() - PREFIX;
        ENCODE_BUF.with(|cell| {
            // A re-entrant put from inside a Serialize impl finds the buffer borrowed and
            // uses a fresh one.
            let mut own = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let buf = match guard.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut own,
            };
            if buf.len() < room {
                buf.resize(room, 0);
            }
            // Small messages encode straight into the reused buffer (no allocation); a
            // message that does not fit is encoded again, into its own allocation.
            let inline_len = match postcard::to_slice(&value, &mut buf[..room]) {
                Ok(used) => Some(used.len()),
                Err(postcard::Error::SerializeBufferFull) => None,
                Err(e) => {
                    return Err(PutError::Message {
                        value,
                        reason: e.to_string(),
                    });
                }
            };
            let large = match inline_len {
                Some(_) => None,
                None => match postcard::to_allocvec(&value) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        return Err(PutError::Message {
                            value,
                            reason: e.to_string(),
                        });
                    }
                },
            };
            let body = match &large {
                Some(bytes) => match Body::store(bytes) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        return Err(PutError::Message {
                            value,
                            reason: e.to_string(),
                        });
                    }
                },
                None => None,
            };
            let (kind, payload): (u32, &[u8]) = match (&body, inline_len) {
                (Some(b), _) => (OUT_OF_LINE, b.name.as_bytes()),
                (None, len) => (INLINE, &buf[..len.unwrap_or(0)]),
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
        })
    }

    fn decode(taken: Taken<T>) -> Result<T, GetError> {
        let bytes = match taken {
            Taken::Decoded(r) => return r.map_err(|reason| GetError::Message { reason }),
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

    fn get_result(r: Pop<Taken<T>>, timed: bool) -> Result<T, GetError> {
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
        Self::get_result(self.raw.pop_deadline(None, take::<T>), false)
    }

    /// Takes the oldest message if there is one now: `Err(Empty)` otherwise.
    pub fn try_get(&self) -> Result<T, GetError> {
        Self::get_result(self.raw.try_pop(take::<T>), false)
    }

    /// Takes the oldest message, waiting at most `timeout`: `Err(Timeout)` otherwise.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        let deadline = Some(Instant::now() + timeout);
        Self::get_result(self.raw.pop_deadline(deadline, take::<T>), true)
    }

    /// Waits for at least one message, then takes up to `max` without waiting further.
    pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        crate::error::get_batch(out, max, || self.get(), || self.try_get())
    }

    queue_state_methods!();

    /// Bytes per slot; encoded messages longer than this minus 8 go out of line.
    pub fn slot_size(&self) -> usize {
        self.raw.slot_size()
    }
}

/// Reclaims the bodies of messages nobody took, when the last handle goes.
pub(crate) fn drain_on_last_detach(raw: &RawQueue) {
    if raw.detach() {
        while let Pop::Item(name) = raw.try_pop(take_body_name) {
            if let Some(name) = name {
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
