//! A [`Queue`](crate::Queue)'s messages as their encoded bytes, for tools that move them
//! without knowing the message type (the `mproc bridge` command forwards them to a queue on
//! a server, whose consumers decode them as the type the shared-memory queue was made for).

use std::time::{Duration, Instant};

use mproc_segment::{Kind, SegmentError, SegmentOptions};

use crate::body;
use crate::error::{GetError, PutError};
use crate::queue::{FLAVOUR, check_message_slots};
use crate::raw::RawQueue;
use crate::wait::Wait;

/// Any `Queue<T>` by name, its messages as bytes: exactly what the queue's codec wrote
/// (postcard's format, see [`codec`](crate::codec)), put and taken unchanged.
#[derive(Debug)]
pub struct EncodedQueue {
    raw: RawQueue,
    type_name: String,
}

fn wait_of(timeout: Option<Duration>) -> Wait {
    match timeout {
        None => Wait::Forever,
        Some(t) if t.is_zero() => Wait::No,
        Some(t) => Wait::Until(Instant::now() + t),
    }
}

impl EncodedQueue {
    /// Opens the `Queue<T>` called `name`, whatever its `T` (a `ByteQueue`, a `PodQueue` or
    /// another kind of segment is refused).
    pub fn open(name: &str) -> Result<EncodedQueue, SegmentError> {
        let raw = RawQueue::open(SegmentOptions::any(), name)?;
        let header = raw.segment().header().ok_or(SegmentError::CorruptHeader {
            reason: "a named queue without a header",
        })?;
        if header.kind != Kind::QUEUE {
            return Err(SegmentError::KindMismatch {
                expected: Kind::QUEUE,
                found: header.kind,
            });
        }
        let stored = header.element.name.to_string();
        let Some(type_name) = stored
            .strip_prefix(FLAVOUR)
            .and_then(|s| s.strip_prefix(':'))
        else {
            return Err(SegmentError::TypeMismatch {
                expected: format!("{FLAVOUR}:<any type>"),
                found: stored,
            });
        };
        let type_name = type_name.to_string();
        check_message_slots(&raw)?;
        Ok(EncodedQueue { raw, type_name })
    }

    /// The message type's name, as the queue's creator recorded it
    /// (`std::any::type_name::<T>()`, or its `QueueOptions::type_name`).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Puts one encoded message, waiting at most `timeout` for room (`None`: as long as it
    /// takes; zero: not at all).
    pub fn put(&self, bytes: &[u8], timeout: Option<Duration>) -> Result<(), PutError<()>> {
        let wait = wait_of(timeout);
        let size = bytes.len();
        let sent = if size <= body::inline_room(&self.raw) {
            body::send_inline(&self.raw, bytes, wait)
        } else {
            body::send_arena(&self.raw, size, wait, |b| {
                b.copy_from_slice(bytes);
                Ok(())
            })
        };
        sent.map_err(|e| e.with((), size))
    }

    /// Takes one message into `buf` (cleared first), waiting at most `timeout` (`None`: as
    /// long as it takes; zero: not at all). Returns its length.
    pub fn get_into(
        &self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        body::receive(&self.raw, wait_of(timeout), |bytes: &[u8]| {
            buf.clear();
            buf.extend_from_slice(bytes);
            bytes.len()
        })
    }

    queue_state_methods!();
}
