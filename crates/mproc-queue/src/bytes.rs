//! `ByteQueue`: messages of raw bytes at memory speed (Python's `Connection.send_bytes` /
//! `recv_bytes`), with zero-copy loans.

use std::os::fd::OwnedFd;
use std::time::Duration;

use mproc_segment::{Kind, SegmentError, SegmentOptions, TypeTag};

use crate::body;
use crate::loan::{Loan, ReadLoan};
use crate::queue::check_message_slots;
use crate::raw::RawQueue;
use crate::wait::Wait;
use crate::{GetError, PutError, QueueOptions};

/// The type tag of every byte queue.
fn options() -> SegmentOptions {
    SegmentOptions::new(Kind::QUEUE).type_tag(TypeTag::named::<u8>("mproc:bytes+arena"))
}

/// Sends one message of bytes: inline if it fits its slot, else through the arena (one copy
/// either way). The error carries `()`, for the caller to put its value back in.
pub(crate) fn send_bytes(raw: &RawQueue, b: &[u8], wait: Wait) -> Result<(), PutError<()>> {
    let sent = if b.len() <= body::inline_room(raw) {
        body::send_inline(raw, b, wait)
    } else {
        body::send_arena(raw, b.len(), wait, |body| {
            body.copy_from_slice(b);
            Ok(())
        })
    };
    sent.map_err(|e| e.with((), b.len()))
}

/// A bounded multi-producer multi-consumer queue of byte messages of any length, in shared
/// memory. A message that fits its slot travels inline; a larger one in the queue's body
/// arena: `put` is one copy in, `get` one copy out, and the loans none at all
/// ([`loan`](Self::loan) / [`get_loan`](Self::get_loan)). No system call per message.
///
/// ```
/// use mproc_queue::{ByteQueue, QueueOptions};
/// let q = QueueOptions::new().capacity(64).arena_bytes(4 << 20).anonymous_bytes()?;
/// q.put(b"hello").unwrap();
/// q.put(vec![1u8; 100_000]).unwrap();          // in the arena
/// assert_eq!(q.get().unwrap(), b"hello");
/// let mut buf = Vec::new();
/// assert_eq!(q.get_into(&mut buf).unwrap(), 100_000);  // reuses `buf`
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct ByteQueue {
    pub(crate) raw: RawQueue,
}

impl ByteQueue {
    /// A new byte queue laid out as `opts` says, named or anonymous.
    pub(crate) fn create_with(
        opts: &QueueOptions,
        name: Option<&str>,
    ) -> Result<ByteQueue, SegmentError> {
        let segment = match name {
            Some(_) => opts.with_reclaim(options()),
            None => options(),
        };
        Ok(ByteQueue {
            raw: RawQueue::create(segment, name, opts.layout()?)?,
        })
    }

    fn checked(raw: RawQueue) -> Result<ByteQueue, SegmentError> {
        check_message_slots(&raw)?;
        Ok(ByteQueue { raw })
    }

    /// An anonymous byte queue of at least `capacity` slots, default slot and arena sizes.
    pub fn new(capacity: usize) -> Result<ByteQueue, SegmentError> {
        QueueOptions::new().capacity(capacity).anonymous_bytes()
    }

    /// A named byte queue of at least `capacity` slots, default slot and arena sizes.
    pub fn create(name: &str, capacity: usize) -> Result<ByteQueue, SegmentError> {
        QueueOptions::new().capacity(capacity).create_bytes(name)
    }

    /// Opens a named byte queue (its geometry comes from the segment).
    pub fn open(name: &str) -> Result<ByteQueue, SegmentError> {
        Self::checked(RawQueue::open(options(), name)?)
    }

    /// Attaches to a byte queue through its segment's file descriptor.
    pub fn from_fd(fd: OwnedFd) -> Result<ByteQueue, SegmentError> {
        Self::checked(RawQueue::from_fd(options(), fd)?)
    }

    /// A second handle to the same queue (as if opened again).
    pub fn try_clone(&self) -> Result<ByteQueue, SegmentError> {
        Self::checked(self.raw.try_clone()?)
    }

    pub(crate) fn put_with<B: AsRef<[u8]>>(&self, bytes: B, wait: Wait) -> Result<(), PutError<B>> {
        let sent = send_bytes(&self.raw, bytes.as_ref(), wait);
        sent.map_err(|e| e.map(|()| bytes))
    }

    /// Appends a message, waiting while the queue (or its arena) is full. The bytes come
    /// back in the error: `Closed`, or `TooLarge` if longer than the whole arena.
    pub fn put<B: AsRef<[u8]>>(&self, bytes: B) -> Result<(), PutError<B>> {
        self.put_with(bytes, Wait::Forever)
    }

    /// Appends a message if there is room now: `Err(Full)` otherwise.
    pub fn try_put<B: AsRef<[u8]>>(&self, bytes: B) -> Result<(), PutError<B>> {
        self.put_with(bytes, Wait::No)
    }

    /// Appends a message, waiting at most `timeout` for room: `Err(Timeout)` otherwise.
    pub fn put_timeout<B: AsRef<[u8]>>(
        &self,
        bytes: B,
        timeout: Duration,
    ) -> Result<(), PutError<B>> {
        self.put_with(bytes, Wait::after(timeout))
    }

    pub(crate) fn get_with(&self, wait: Wait, buf: &mut Vec<u8>) -> Result<usize, GetError> {
        body::receive(&self.raw, wait, |b| {
            buf.clear();
            buf.extend_from_slice(b);
            b.len()
        })
    }

    /// Takes the oldest message, waiting while the queue is empty. `Err(Closed)` once closed
    /// and drained.
    pub fn get(&self) -> Result<Vec<u8>, GetError> {
        let mut buf = Vec::new();
        self.get_with(Wait::Forever, &mut buf)?;
        Ok(buf)
    }

    /// Takes the oldest message if there is one now: `Err(Empty)` otherwise.
    pub fn try_get(&self) -> Result<Vec<u8>, GetError> {
        let mut buf = Vec::new();
        self.get_with(Wait::No, &mut buf)?;
        Ok(buf)
    }

    /// Takes the oldest message, waiting at most `timeout`: `Err(Timeout)` otherwise.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetError> {
        let mut buf = Vec::new();
        self.get_with(Wait::after(timeout), &mut buf)?;
        Ok(buf)
    }

    /// Takes the oldest message into `buf` (cleared first, its allocation reused), waiting
    /// while the queue is empty. Returns the message's length.
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize, GetError> {
        self.get_with(Wait::Forever, buf)
    }

    fn loan_with(&self, len: usize, wait: Wait) -> Result<Loan<'_>, PutError<()>> {
        match body::alloc_body(&self.raw, len, wait) {
            Ok(pos) => Ok(Loan::new(&self.raw, pos, len)),
            Err(e) => Err(e.with((), len)),
        }
    }

    /// Borrows `len` bytes of the arena to write a message in place, waiting for space.
    /// [`Loan::send`] enqueues it; dropping the loan frees it. `Err(TooLarge)` if `len`
    /// exceeds the arena.
    pub fn loan(&self, len: usize) -> Result<Loan<'_>, PutError<()>> {
        self.loan_with(len, Wait::Forever)
    }

    /// As [`loan`](Self::loan) if there is space now: `Err(Full)` otherwise.
    pub fn try_loan(&self, len: usize) -> Result<Loan<'_>, PutError<()>> {
        self.loan_with(len, Wait::No)
    }

    /// As [`loan`](Self::loan), waiting at most `timeout`: `Err(Timeout)` otherwise.
    pub fn loan_timeout(&self, len: usize, timeout: Duration) -> Result<Loan<'_>, PutError<()>> {
        self.loan_with(len, Wait::after(timeout))
    }

    fn get_loan_with(&self, wait: Wait) -> Result<ReadLoan<'_>, GetError> {
        ReadLoan::take(&self.raw, wait.claim_pop(&self.raw)?)
    }

    /// Takes the oldest message as a guard over its bytes in shared memory (no copy),
    /// waiting while the queue is empty. Dropping the guard frees the message.
    pub fn get_loan(&self) -> Result<ReadLoan<'_>, GetError> {
        self.get_loan_with(Wait::Forever)
    }

    /// As [`get_loan`](Self::get_loan) if a message is there now: `Err(Empty)` otherwise.
    pub fn try_get_loan(&self) -> Result<ReadLoan<'_>, GetError> {
        self.get_loan_with(Wait::No)
    }

    /// As [`get_loan`](Self::get_loan), waiting at most `timeout`.
    pub fn get_loan_timeout(&self, timeout: Duration) -> Result<ReadLoan<'_>, GetError> {
        self.get_loan_with(Wait::after(timeout))
    }

    /// `try_get` for the futures: peers asked after only if `check_peers`.
    #[cfg(feature = "async")]
    fn try_get_polled(&self, check_peers: bool) -> Result<Vec<u8>, GetError> {
        let mut buf = Vec::new();
        self.get_with(Wait::poll(check_peers), &mut buf)?;
        Ok(buf)
    }

    /// `try_put` for the futures: peers asked after only if `check_peers`.
    #[cfg(feature = "async")]
    fn try_put_polled(&self, bytes: Vec<u8>, check_peers: bool) -> Result<(), PutError<Vec<u8>>> {
        self.put_with(bytes, Wait::poll(check_peers))
    }

    /// Borrows `len` bytes of the arena without blocking a thread, waiting for space: the
    /// async form of [`loan`](Self::loan). Cancellation-safe: a future dropped before it
    /// completes holds no space.
    #[cfg(feature = "async")]
    pub fn loan_async(
        &self,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Loan<'_>, PutError<()>>> + '_ {
        let parkings = self.raw.put_parkings();
        mproc_sync::__private::wait_async(parkings, crate::wait::REPOLL, move |check| {
            match self.loan_with(len, Wait::poll(check)) {
                Err(PutError::Full(())) => None,
                r => Some(r),
            }
        })
    }

    /// Takes the oldest message as a guard over its bytes without blocking a thread: the
    /// async form of [`get_loan`](Self::get_loan). Cancellation-safe: a future dropped
    /// before it completes has taken nothing.
    #[cfg(feature = "async")]
    pub fn get_loan_async(
        &self,
    ) -> impl std::future::Future<Output = Result<ReadLoan<'_>, GetError>> + '_ {
        let parkings = self.raw.get_parkings();
        mproc_sync::__private::wait_async(parkings, crate::wait::REPOLL, move |check| {
            match self.get_loan_with(Wait::poll(check)) {
                Err(GetError::Empty) => None,
                r => Some(r),
            }
        })
    }

    queue_state_methods!();
    arena_methods!();

    #[cfg(feature = "async")]
    crate::wait_async::async_queue_methods!(Vec<u8>, raw);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::arena::Entries;
    use crate::atomic::Ordering;

    /// A same-user peer writes an out-of-range length into a live chunk's word (2^24 units in
    /// an arena of 512): the message is refused, and the queue goes on working — the chunk is
    /// set aside and counted rather than wedging the arena's tail for ever.
    #[test]
    fn forked_peer_scribbling_a_chunk_is_set_aside_not_forever() {
        let q = QueueOptions::new()
            .capacity(8)
            .slot_size(64)
            .arena_bytes(64 * 1024)
            .anonymous_bytes()
            .unwrap();
        let body = vec![9u8; 2000];
        q.put(&body).unwrap();
        let arena = q.raw.arena().unwrap();
        // The peer: a forked process (it shares the memfd), scribbling the Linked chunk's
        // length bits.
        mproc_testkit::fork_child(|| {
            let mut hit = 0;
            for u in 0..arena.units as usize {
                let w = arena.entries.word(u);
                let v = w.load(Ordering::Relaxed);
                if v >> 61 == 2 {
                    w.store(v | 0xFF_FFFF, Ordering::Relaxed);
                    hit += 1;
                }
            }
            if hit == 1 { 0 } else { 1 }
        })
        .assert_success();
        assert!(q.get_timeout(Duration::from_secs(1)).is_err(), "refused");
        // Later traffic flows, with short timeouts (a chunk held by a dead writer or a
        // corrupt one is recovered at a blocked call's first look).
        let start = std::time::Instant::now();
        for i in 0..200u32 {
            let msg = vec![i as u8; 3000];
            let put = q.put_timeout(&msg, Duration::from_millis(50));
            assert!(put.is_ok(), "put {i} failed");
            assert_eq!(q.get_timeout(Duration::from_millis(50)).unwrap(), msg);
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        assert_eq!(q.arena_used(), 0);
        assert!(q.arena_corrupt_skipped() > 0);
    }
}
