//! `Pipe`: Python's `multiprocessing.Pipe()`, a pair of [`Connection`]s over two shared
//! memory rings (one per direction), with end-of-file decided by the kernel.
//!
//! Each connection holds one [`End`] of a pair: a lock the kernel drops when the last copy
//! of that connection is closed, in any process, however it ended. A `recv` that finds
//! nothing and the other end closed returns `Closed` (Python's `EOFError`), after every
//! message sent before the close was received.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use mproc_segment::{End, SegmentError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bytes::ByteQueue;
use crate::wait::Wait;
use crate::{GetError, PutError, QueueOptions, codec};

/// How often a blocked `send` or `recv` asks the kernel whether the other end is still
/// open (a dead peer shows as end-of-file within this).
pub const PEER_CHECK: Duration = Duration::from_millis(50);

/// One end of a [`pipe`]: sends to and receives from the other end, like Python's
/// `multiprocessing.connection.Connection`.
///
/// A connection is shared with a child by `fork` (the pool's `Process` included). As with an
/// OS pipe, the other end sees end-of-file once *every* copy of this one is closed: after a
/// fork, drop the copies a process does not use (the parent its child's end), or a child's
/// death will not show.
///
/// ```
/// use mproc_queue::pipe;
/// let (a, b) = pipe(true)?;
/// a.send(&("job", 7u32)).unwrap();
/// assert_eq!(b.recv::<(String, u32)>().unwrap(), ("job".to_string(), 7));
/// b.send_bytes(b"done").unwrap();
/// assert_eq!(a.recv_bytes().unwrap(), b"done");
/// drop(b);
/// assert_eq!(a.recv_bytes(), Err(mproc_queue::GetError::Closed)); // end-of-file
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    rx: Option<ByteQueue>,
    tx: Option<ByteQueue>,
    end: End,
}

/// The descriptors of a [`Connection`] ([`Connection::fds`], [`Connection::from_fds`]).
#[derive(Debug)]
pub struct ConnectionFds<F> {
    /// The segment of the ring this end receives from (`None`: it only sends).
    pub inbox: Option<F>,
    /// The segment of the ring this end sends into (`None`: it only receives).
    pub outbox: Option<F>,
    /// The end's liveness mark (`mproc_segment::End`).
    pub end: F,
}

/// A connected pair of [`Connection`]s with the default queue options. With `duplex`, both
/// ends send and receive; without, the first only receives and the second only sends (as
/// Python's `Pipe(duplex=False)`).
pub fn pipe(duplex: bool) -> Result<(Connection, Connection), SegmentError> {
    QueueOptions::new().pipe(duplex)
}

impl QueueOptions {
    /// A [`pipe`] whose rings (one per direction) are laid out with these options: the
    /// capacity is how many messages may wait in each direction, the arena how many bytes.
    pub fn pipe(&self, duplex: bool) -> Result<(Connection, Connection), SegmentError> {
        let (a, b) = End::pair()?;
        // The first connection's inbox, written by the second.
        let to_a = self.anonymous_bytes()?;
        if duplex {
            let to_b = self.anonymous_bytes()?;
            let a_conn = Connection {
                rx: Some(to_a.try_clone()?),
                tx: Some(to_b.try_clone()?),
                end: a,
            };
            let b_conn = Connection {
                rx: Some(to_b),
                tx: Some(to_a),
                end: b,
            };
            Ok((a_conn, b_conn))
        } else {
            let a_conn = Connection {
                rx: Some(to_a.try_clone()?),
                tx: None,
                end: a,
            };
            let b_conn = Connection {
                rx: None,
                tx: Some(to_a),
                end: b,
            };
            Ok((a_conn, b_conn))
        }
    }
}

/// When a blocking call gives up.
fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

impl Connection {
    fn inbox(&self) -> Result<&ByteQueue, GetError> {
        self.rx.as_ref().ok_or_else(|| GetError::Unreadable {
            reason: "this end of a one-way pipe only sends".into(),
        })
    }

    /// Another handle on this same end (as `dup` gives for a file descriptor): the end stays
    /// open until every handle and every forked copy is dropped.
    pub fn try_clone(&self) -> Result<Connection, SegmentError> {
        Ok(Connection {
            rx: self.rx.as_ref().map(ByteQueue::try_clone).transpose()?,
            tx: self.tx.as_ref().map(ByteQueue::try_clone).transpose()?,
            end: self.end.try_clone()?,
        })
    }

    /// The descriptors this end is made of, borrowed: its inbox's and outbox's segments
    /// (`None` on a one-way end) and the end's own. Passed to a process that is not a fork
    /// of this one (with `SCM_RIGHTS`, or inherited across `exec`), they become the same end
    /// there with [`from_fds`](Self::from_fds), which then counts as one more copy of it.
    pub fn fds(&self) -> ConnectionFds<BorrowedFd<'_>> {
        ConnectionFds {
            inbox: self.rx.as_ref().map(|q| q.raw.segment().as_fd()),
            outbox: self.tx.as_ref().map(|q| q.raw.segment().as_fd()),
            end: self.end.as_fd(),
        }
    }

    /// Takes back an end from its descriptors (see [`fds`](Self::fds)): checks that the
    /// segments are byte queues and that the end is an end of a channel, in the right order.
    pub fn from_fds(fds: ConnectionFds<OwnedFd>) -> Result<Connection, SegmentError> {
        if fds.inbox.is_none() && fds.outbox.is_none() {
            return Err(SegmentError::InvalidArgument {
                reason: "a connection needs an inbox, an outbox or both",
            });
        }
        Ok(Connection {
            rx: fds.inbox.map(ByteQueue::from_fd).transpose()?,
            tx: fds.outbox.map(ByteQueue::from_fd).transpose()?,
            end: End::from_fd(fds.end)?,
        })
    }

    /// Whether the other end is still open in some process (asked of the kernel).
    pub fn peer_open(&self) -> bool {
        self.end.peer_open()
    }

    /// Sends `bytes` as one message, waiting while the other end's inbox is full. `Closed`
    /// (with the bytes) if the other end is closed while this waits; a message sent to a
    /// closed end that finds room is lost with the end, as with an OS pipe's buffer.
    pub fn send_bytes<B: AsRef<[u8]>>(&self, bytes: B) -> Result<(), PutError<B>> {
        self.send_with(bytes, None)
    }

    /// As [`send_bytes`](Self::send_bytes), waiting at most `timeout` for room.
    pub fn send_bytes_timeout<B: AsRef<[u8]>>(
        &self,
        bytes: B,
        timeout: Duration,
    ) -> Result<(), PutError<B>> {
        self.send_with(bytes, Some(timeout))
    }

    fn send_with<B: AsRef<[u8]>>(
        &self,
        bytes: B,
        timeout: Option<Duration>,
    ) -> Result<(), PutError<B>> {
        let Some(tx) = &self.tx else {
            return Err(PutError::Unsendable {
                value: bytes,
                reason: "this end of a one-way pipe only receives".into(),
            });
        };
        let deadline = deadline_of(timeout);
        let mut bytes = match tx.put_with(bytes, Wait::No) {
            Err(PutError::Full(b)) => b,
            other => return other,
        };
        loop {
            if !self.end.peer_open() {
                return Err(PutError::Closed(bytes));
            }
            let slice = slice_until(deadline);
            if slice.is_zero() {
                return Err(PutError::Timeout(bytes));
            }
            bytes = match tx.put_with(bytes, Wait::after(slice)) {
                Err(PutError::Timeout(b)) => b,
                other => return other,
            };
        }
    }

    /// Sends `value` (serde, the queues' encoding), waiting for room as
    /// [`send_bytes`](Self::send_bytes) does. `Unsendable` if it cannot be encoded.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), PutError<()>> {
        let mut buf = Vec::new();
        codec::encode_into(value, &mut buf).map_err(|e| PutError::Unsendable {
            value: (),
            reason: e.to_string(),
        })?;
        self.send_bytes(buf).map_err(|e| e.map(|_| ()))
    }

    /// Receives one message into `buf` (cleared first, its allocation reused), waiting for
    /// it; returns its length. `Closed` (end-of-file) once the other end is closed and
    /// everything it sent was received.
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize, GetError> {
        self.recv_with(buf, None)
    }

    /// Receives one message, waiting for it. `Closed` at end-of-file.
    pub fn recv_bytes(&self) -> Result<Vec<u8>, GetError> {
        let mut buf = Vec::new();
        self.recv_with(&mut buf, None)?;
        Ok(buf)
    }

    /// As [`recv_bytes`](Self::recv_bytes), waiting at most `timeout`: `Timeout` then.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetError> {
        let mut buf = Vec::new();
        self.recv_with(&mut buf, Some(timeout))?;
        Ok(buf)
    }

    /// Receives one value sent with [`send`](Self::send). `Unreadable` (the message is
    /// consumed) if it does not decode as a `T`; `Closed` at end-of-file.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T, GetError> {
        let bytes = self.recv_bytes()?;
        decode(&bytes)
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, GetError> {
        let bytes = self.recv_bytes_timeout(timeout)?;
        decode(&bytes)
    }

    fn recv_with(&self, buf: &mut Vec<u8>, timeout: Option<Duration>) -> Result<usize, GetError> {
        let rx = self.inbox()?;
        let deadline = deadline_of(timeout);
        match rx.get_with(Wait::No, buf) {
            Err(GetError::Empty) => {}
            other => return other,
        }
        loop {
            if !self.end.peer_open() {
                // Whatever the other end sent before it closed is in the ring by now.
                return match rx.get_with(Wait::No, buf) {
                    Err(GetError::Empty) => Err(GetError::Closed),
                    other => other,
                };
            }
            let slice = slice_until(deadline);
            if slice.is_zero() {
                return Err(GetError::Timeout);
            }
            match rx.get_with(Wait::after(slice), buf) {
                Err(GetError::Timeout) => {}
                other => return other,
            }
        }
    }

    /// Whether a message (or end-of-file) can be received now, waiting up to `timeout`
    /// for one (`None`: as long as it takes), like Python's `Connection.poll`.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool, GetError> {
        let rx = self.inbox()?;
        let deadline = deadline_of(timeout);
        let parking = &rx.raw.header().not_empty;
        loop {
            let waiting = parking.prepare();
            if has_message(rx) || !self.end.peer_open() {
                return Ok(true);
            }
            let slice = slice_until(deadline);
            if slice.is_zero() {
                return Ok(false);
            }
            waiting.sleep(Some(Instant::now() + slice));
        }
    }

    /// This connection as a [`select`](mproc_sync::select) source: ready when a message can
    /// be received or the other end is closed (end-of-file).
    #[cfg(feature = "async")]
    pub fn readable(&self) -> ConnectionReady<'_> {
        ConnectionReady { conn: self }
    }
}

#[cfg(feature = "async")]
impl Connection {
    /// Receives one message without blocking a thread: the async form of
    /// [`recv_bytes`](Self::recv_bytes). Cancellation-safe: a future dropped before it
    /// completes has taken nothing.
    pub fn recv_bytes_async(
        &self,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, GetError>> + '_ {
        let rx = self.rx.as_ref();
        let parkings = rx.map(|q| q.raw.get_parkings());
        mproc_sync::__private::wait_async(parkings.unwrap_or_default(), PEER_CHECK, move |check| {
            let Some(rx) = rx else {
                return Some(self.inbox().map(|_| Vec::new()));
            };
            let mut buf = Vec::new();
            match rx.get_with(Wait::poll(check), &mut buf) {
                Ok(_) => Some(Ok(buf)),
                Err(GetError::Empty) if check && !self.end.peer_open() => {
                    match rx.get_with(Wait::No, &mut buf) {
                        Ok(_) => Some(Ok(buf)),
                        Err(GetError::Empty) => Some(Err(GetError::Closed)),
                        Err(e) => Some(Err(e)),
                    }
                }
                Err(GetError::Empty) => None,
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// Receives one value without blocking a thread: the async form of [`recv`](Self::recv).
    pub async fn recv_async<T: DeserializeOwned>(&self) -> Result<T, GetError> {
        let bytes = self.recv_bytes_async().await?;
        decode(&bytes)
    }

    /// Sends `bytes` without blocking a thread, waiting for room: the async form of
    /// [`send_bytes`](Self::send_bytes). Dropping the future before it completes drops the
    /// message unsent.
    pub fn send_bytes_async(
        &self,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), PutError<Vec<u8>>>> + '_ {
        let tx = self.tx.as_ref();
        let parkings = tx.map(|q| q.raw.put_parkings());
        let mut bytes = Some(bytes);
        mproc_sync::__private::wait_async(parkings.unwrap_or_default(), PEER_CHECK, move |check| {
            let b = bytes.take()?;
            let Some(tx) = tx else {
                return Some(Err(PutError::Unsendable {
                    value: b,
                    reason: "this end of a one-way pipe only receives".into(),
                }));
            };
            match tx.put_with(b, Wait::poll(check)) {
                Err(PutError::Full(b)) if check && !self.end.peer_open() => {
                    Some(Err(PutError::Closed(b)))
                }
                Err(PutError::Full(b)) => {
                    bytes = Some(b);
                    None
                }
                r => Some(r),
            }
        })
    }

    /// Sends `value` without blocking a thread: the async form of [`send`](Self::send).
    pub async fn send_async<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), PutError<()>> {
        let mut buf = Vec::new();
        codec::encode_into(value, &mut buf).map_err(|e| PutError::Unsendable {
            value: (),
            reason: e.to_string(),
        })?;
        self.send_bytes_async(buf).await.map_err(|e| e.map(|_| ()))
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GetError> {
    codec::decode(bytes).map_err(|e| GetError::Unreadable {
        reason: format!(
            "a {}-byte message did not decode as {}: {e}",
            bytes.len(),
            std::any::type_name::<T>()
        ),
    })
}

/// Whether a message may be taken from `rx` now (a hint: another reader may take it first),
/// or it was closed.
fn has_message(rx: &ByteQueue) -> bool {
    let raw = &rx.raw;
    if raw.is_closed() {
        return true;
    }
    let h = raw.header();
    let head = h.head.load(crate::atomic::Ordering::SeqCst);
    let tail = h.tail.load(crate::atomic::Ordering::SeqCst);
    tail > head
}

/// The next wait of a blocked call: until the deadline, at most [`PEER_CHECK`].
fn slice_until(deadline: Option<Instant>) -> Duration {
    match deadline {
        None => PEER_CHECK,
        Some(d) => d.saturating_duration_since(Instant::now()).min(PEER_CHECK),
    }
}

/// A [`Connection`] as a [`select`](mproc_sync::select) source
/// ([`Connection::readable`]).
#[cfg(feature = "async")]
#[derive(Debug, Clone, Copy)]
pub struct ConnectionReady<'a> {
    conn: &'a Connection,
}

#[cfg(feature = "async")]
impl mproc_sync::Waitable for ConnectionReady<'_> {
    fn is_ready(&self) -> bool {
        match &self.conn.rx {
            // A send-only end has nothing to wait for: ready (its `recv` fails at once).
            None => true,
            Some(rx) => has_message(rx) || !self.conn.end.peer_open(),
        }
    }

    fn register(&self, waker: &std::task::Waker) -> mproc_sync::Registration<'_> {
        match &self.conn.rx {
            Some(rx) => {
                mproc_sync::Registration::parking_for(&rx.raw.header().not_empty, waker, PEER_CHECK)
            }
            None => {
                waker.wake_by_ref();
                mproc_sync::Registration::custom(Box::new(()))
            }
        }
    }
}
