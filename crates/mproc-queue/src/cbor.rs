//! `CborQueue<T>`: a queue of serde values in CBOR (RFC 8949), the encoding other languages
//! read. It is a [`ByteQueue`] whose messages are the byte `C` followed by one CBOR data
//! item: Python's `mproc.Queue(codec="cbor")` writes the same messages, and every
//! `mproc.Queue` reads them (as `dict`, `list`, `int`, `float`, `str`, `bytes`, `bool` and
//! `None`).
//!
//! How serde types map to CBOR is ciborium's: a struct is a map keyed by field name, a
//! tuple or `Vec` an array, `Option::None` and `()` null, an enum variant with data a
//! one-entry map `{variant: data}` and one without a string. A byte string (Python `bytes`)
//! deserialises into `serde_bytes::ByteBuf` (or a `#[serde(with = "serde_bytes")]` field);
//! a plain `Vec<u8>` is written as an array of integers.

use std::marker::PhantomData;
use std::time::Duration;

use mproc_segment::SegmentError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bytes::send_bytes;
use crate::raw::RawQueue;
use crate::wait::Wait;
use crate::{ByteQueue, GetError, PutError, QueueOptions};

/// The first byte of every message of a [`CborQueue`] (and of a Python `mproc.Queue` message
/// written with `codec="cbor"`); the CBOR data item follows it.
pub const CBOR_TAG: u8 = b'C';

/// Encodes `value` as a CBOR message (`CBOR_TAG`, then the data item) into `out` (cleared
/// first): what a [`CborQueue`] puts.
///
/// ```
/// let mut out = Vec::new();
/// mproc_queue::cbor::encode(&(1u8, "a"), &mut out).unwrap();
/// assert_eq!(out, [b'C', 0x82, 0x01, 0x61, b'a']); // C, array(2), 1, text(1) "a"
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    out.push(CBOR_TAG);
    ciborium::into_writer(value, &mut *out).map_err(|e| e.to_string())
}

/// Decodes a CBOR message (`CBOR_TAG`, then exactly one data item) into a `T`.
pub fn decode<T: DeserializeOwned>(message: &[u8]) -> Result<T, String> {
    let Some((&CBOR_TAG, mut item)) = message.split_first() else {
        return Err(match message.first() {
            Some(&b'P') | Some(&b'O') => "a pickle from Python (write it with \
                mproc.Queue(codec=\"cbor\") for Rust to read)"
                .to_string(),
            Some(t) => format!("not a CBOR message (first byte {t:#04x})"),
            None => "an empty message".to_string(),
        });
    };
    let value = ciborium::from_reader(&mut item).map_err(|e| format!("bad CBOR: {e}"))?;
    if !item.is_empty() {
        return Err(format!("{} bytes after the CBOR item", item.len()));
    }
    Ok(value)
}

/// A queue of serde values encoded as CBOR: readable by Python's `mproc.Queue` (and anything
/// that reads CBOR), and reading what a Python `mproc.Queue(codec="cbor")` writes. It is a
/// [`ByteQueue`] underneath: both open the same segment, and Python opens it by name.
///
/// Slower than [`Queue`](crate::Queue), whose encoding is not self-describing: use this one
/// where another language is at the other end.
///
/// ```
/// use mproc_queue::CborQueue;
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Job { id: u64, path: String }
/// let q = CborQueue::<Job>::new(16)?;
/// q.put(Job { id: 7, path: "/tmp/a".into() }).unwrap();
/// assert_eq!(q.get().unwrap().path, "/tmp/a");
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct CborQueue<T> {
    raw: RawQueue,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> CborQueue<T> {
    /// The same queue as `q`, read and written as CBOR messages (`ByteQueue::try_clone`
    /// gives a second handle to keep the byte view too).
    pub fn from_byte_queue(q: ByteQueue) -> CborQueue<T> {
        CborQueue {
            raw: q.raw,
            _t: PhantomData,
        }
    }

    /// An anonymous queue of at least `capacity` slots, default slot and arena sizes.
    pub fn new(capacity: usize) -> Result<CborQueue<T>, SegmentError> {
        Ok(Self::from_byte_queue(ByteQueue::new(capacity)?))
    }

    /// A named queue of at least `capacity` slots, default slot and arena sizes.
    pub fn create(name: &str, capacity: usize) -> Result<CborQueue<T>, SegmentError> {
        Ok(Self::from_byte_queue(ByteQueue::create(name, capacity)?))
    }

    /// A named queue laid out as `options` say (capacity, slot size, arena).
    pub fn create_with(options: &QueueOptions, name: &str) -> Result<CborQueue<T>, SegmentError> {
        Ok(Self::from_byte_queue(options.create_bytes(name)?))
    }

    /// Opens a named queue: one made by a `CborQueue`, a `ByteQueue`, or Python's
    /// `mproc.Queue`.
    pub fn open(name: &str) -> Result<CborQueue<T>, SegmentError> {
        Ok(Self::from_byte_queue(ByteQueue::open(name)?))
    }

    queue_state_methods!();

    fn put_with(&self, value: T, wait: Wait) -> Result<(), PutError<T>> {
        crate::codec::with_scratch(|buf| {
            if let Err(reason) = encode(&value, buf) {
                return Err(PutError::Unsendable { value, reason });
            }
            send_bytes(&self.raw, buf, wait).map_err(|e| e.map(|()| value))
        })
    }

    /// Appends `value`, waiting while the queue (or its arena) is full. The value comes back
    /// in the error: `Closed`, `TooLarge`, or `Unsendable` if it cannot be encoded (a map
    /// with keys serde cannot write, say).
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_with(value, Wait::Forever)
    }

    /// Appends `value` if there is room now: `Err(Full)` otherwise.
    pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_with(value, Wait::No)
    }

    /// Appends `value`, waiting at most `timeout` for room: `Err(Timeout)` otherwise.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_with(value, Wait::after(timeout))
    }

    fn get_with(&self, wait: Wait) -> Result<T, GetError> {
        crate::body::receive(&self.raw, wait, decode::<T>)?
            .map_err(|reason| GetError::Unreadable { reason })
    }

    /// Takes the oldest message, waiting while the queue is empty. A message that is not
    /// CBOR of a `T` (a pickle written by Python's default codec, say) is taken and reported
    /// as `Unreadable`. `Err(Closed)` once closed and drained.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_with(Wait::Forever)
    }

    /// Takes the oldest message if there is one now: `Err(Empty)` otherwise.
    pub fn try_get(&self) -> Result<T, GetError> {
        self.get_with(Wait::No)
    }

    /// Takes the oldest message, waiting at most `timeout`: `Err(Timeout)` otherwise.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_with(Wait::after(timeout))
    }
}
