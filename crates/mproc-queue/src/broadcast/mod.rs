//! Broadcast channels in shared memory: every subscriber reads every message, each through
//! its own cursor (a publish/subscribe channel, like tokio's `broadcast`, across processes).
//!
//! Three flavours over one ring ([`ring`]), named as the queues are:
//! - [`Broadcast<T>`]: any serde type, encoded once by the producer and decoded by every
//!   subscriber; messages up to [`BroadcastOptions::max_message`] bytes encoded.
//! - [`ByteBroadcast`]: byte messages up to the same bound, copied without encoding.
//! - [`PodBroadcast<T>`]: `Pod` values copied as they are, the fastest.
//!
//! A message is written into its ring slot in place (there is no body arena): a slot is as
//! large as the longest message allowed, so the ring takes `capacity × (max_message + 16)`
//! bytes. For messages of megabytes, broadcast a name or an offset into an
//! [`Array`](https://docs.rs/mproc-array) instead.

mod ring;

use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use mproc_segment::{Kind, Segment, SegmentError, SegmentOptions, TypeTag};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use ring::{Core, Geometry, LEN_BYTES, Reader, SlotBytes, Stop};
pub use ring::{DEFAULT_SUBSCRIBERS, WRITING};

/// The longest encoded message a [`Broadcast`] or [`ByteBroadcast`] takes unless set
/// ([`BroadcastOptions::max_message`]).
pub const DEFAULT_MAX_MESSAGE: usize = 1024;

/// What a subscriber that falls a whole ring behind does to the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lagging {
    /// The producer waits for it (no message is ever lost to it while it lives).
    Block,
    /// The producer overwrites the oldest messages; the subscriber's next `recv` reports how
    /// many it lost ([`RecvError::Lagged`]) and goes on from the oldest one still there.
    DropOldest,
}

/// Errors of [`Subscriber::recv`] and friends.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing new now (`try_recv`).
    #[error("no new message")]
    Empty,
    /// Nothing new within the timeout.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The broadcast is closed and this subscriber has read everything sent before.
    #[error("broadcast is closed")]
    Closed,
    /// This many messages were overwritten before this subscriber read them; the next call
    /// returns the oldest one still in the ring.
    #[error("subscriber lagged: {0} messages lost")]
    Lagged(u64),
    /// The next message could not be read: it does not decode as this subscriber's type,
    /// or its length word is impossible (a peer wrote the ring badly). The message is
    /// consumed; the next call reads the one after it.
    #[error("message could not be read: {reason}")]
    Unreadable {
        /// What went wrong.
        reason: String,
    },
}

/// Errors of [`Broadcast::send`] and friends; each carries the value back.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SendError<T> {
    /// The broadcast is closed.
    #[error("broadcast is closed")]
    Closed(T),
    /// A blocking subscriber is a whole ring behind and did not move within the timeout.
    #[error("timed out waiting for a blocking subscriber")]
    Timeout(T),
    /// A blocking subscriber is a whole ring behind (`try_send`).
    #[error("a blocking subscriber is a whole ring behind")]
    Full(T),
    /// The message (encoded) is longer than the broadcast's slots hold
    /// ([`BroadcastOptions::max_message`]). Nothing was sent.
    #[error("message of {size} bytes exceeds the broadcast's {max}-byte messages")]
    TooLarge {
        /// The value.
        value: T,
        /// The message's length (encoded, for a [`Broadcast`]).
        size: usize,
        /// The longest message the broadcast takes.
        max: usize,
    },
    /// The value could not be encoded (its `Serialize` failed). Nothing was sent.
    #[error("message could not be encoded: {reason}")]
    Unsendable {
        /// The value.
        value: T,
        /// What went wrong.
        reason: String,
    },
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(v) | SendError::Timeout(v) | SendError::Full(v) => v,
            SendError::TooLarge { value, .. } | SendError::Unsendable { value, .. } => value,
        }
    }
}

impl Stop {
    fn with<T>(self, value: T) -> SendError<T> {
        match self {
            Stop::Closed => SendError::Closed(value),
            Stop::Timeout => SendError::Timeout(value),
            Stop::Full => SendError::Full(value),
        }
    }
}

/// Errors of [`Broadcast::subscribe`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// Every subscriber slot is taken by a live subscriber.
    #[error("all {0} subscriber slots are taken by live subscribers")]
    NoRoom(usize),
}

/// Options of a new broadcast: capacity, subscriber slots, and for [`Broadcast`] and
/// [`ByteBroadcast`] the longest message.
///
/// ```
/// use mproc_queue::{Broadcast, BroadcastOptions, Lagging};
/// let b: Broadcast<String> = BroadcastOptions::new()
///     .capacity(64)
///     .subscribers(8)
///     .max_message(4096)
///     .anonymous()?;
/// assert_eq!((b.capacity(), b.max_message()), (64, 4096));
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    capacity: usize,
    subscribers: usize,
    max_message: usize,
    type_name: Option<String>,
}

impl Default for BroadcastOptions {
    fn default() -> Self {
        BroadcastOptions {
            capacity: 1024,
            subscribers: DEFAULT_SUBSCRIBERS,
            max_message: DEFAULT_MAX_MESSAGE,
            type_name: None,
        }
    }
}

impl BroadcastOptions {
    /// Default options: 1024 messages, 64 subscriber slots, messages up to
    /// [`DEFAULT_MAX_MESSAGE`] bytes.
    pub fn new() -> BroadcastOptions {
        BroadcastOptions::default()
    }

    /// How many messages the ring keeps (rounded up to a power of two).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// How many subscribers may be subscribed at once (1 to 4096).
    pub fn subscribers(mut self, n: usize) -> Self {
        self.subscribers = n;
        self
    }

    /// The longest message (bytes, encoded) a [`Broadcast`] or [`ByteBroadcast`] takes:
    /// every slot has room for one. Longer sends fail with [`SendError::TooLarge`]. Not
    /// used by a [`PodBroadcast`], whose messages are its type's size.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// The type name stored in the segment and checked on open, instead of the message
    /// type's `std::any::type_name` (for processes built separately).
    pub fn type_name(mut self, name: impl Into<String>) -> Self {
        self.type_name = Some(name.into());
        self
    }

    fn serde_tag<T>(&self) -> TypeTag {
        let name = self
            .type_name
            .clone()
            .unwrap_or_else(|| format!("broadcast:{}", std::any::type_name::<T>()));
        TypeTag::named::<T>(name)
    }

    fn bytes_tag(&self) -> TypeTag {
        let name = self
            .type_name
            .clone()
            .unwrap_or_else(|| "broadcast:bytes".to_string());
        TypeTag::named::<u8>(name)
    }

    fn core(&self, tag: TypeTag, item: usize, name: Option<&str>) -> Result<Core, SegmentError> {
        let geo = Geometry::new(self.capacity, item, self.subscribers)?;
        Core::create(
            SegmentOptions::new(Kind::BROADCAST).type_tag(tag),
            geo,
            name,
        )
    }

    fn prefixed(&self) -> Result<usize, SegmentError> {
        self.max_message
            .checked_add(LEN_BYTES)
            .ok_or(SegmentError::InvalidSize {
                reason: "broadcast messages too large",
            })
    }

    /// Creates a named broadcast of serde values.
    pub fn create<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Broadcast<T>, SegmentError> {
        let core = self.core(self.serde_tag::<T>(), self.prefixed()?, Some(name))?;
        Ok(Broadcast::from_core(core))
    }

    /// Makes an anonymous broadcast of serde values (shared with children by fork).
    pub fn anonymous<T: Serialize + DeserializeOwned>(&self) -> Result<Broadcast<T>, SegmentError> {
        let core = self.core(self.serde_tag::<T>(), self.prefixed()?, None)?;
        Ok(Broadcast::from_core(core))
    }

    /// Opens a named broadcast of serde values, checking the type (or the name set with
    /// [`type_name`](Self::type_name)). Its geometry is the creator's.
    pub fn open<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Broadcast<T>, SegmentError> {
        let opts = SegmentOptions::new(Kind::BROADCAST).type_tag(self.serde_tag::<T>());
        Ok(Broadcast::from_core(Core::wrap(opts.open(name)?, None)?))
    }

    /// Creates a named [`ByteBroadcast`].
    pub fn create_bytes(&self, name: &str) -> Result<ByteBroadcast, SegmentError> {
        let core = self.core(self.bytes_tag(), self.prefixed()?, Some(name))?;
        Ok(ByteBroadcast { core })
    }

    /// Makes an anonymous [`ByteBroadcast`].
    pub fn anonymous_bytes(&self) -> Result<ByteBroadcast, SegmentError> {
        let core = self.core(self.bytes_tag(), self.prefixed()?, None)?;
        Ok(ByteBroadcast { core })
    }

    /// Opens a named [`ByteBroadcast`].
    pub fn open_bytes(&self, name: &str) -> Result<ByteBroadcast, SegmentError> {
        let opts = SegmentOptions::new(Kind::BROADCAST).type_tag(self.bytes_tag());
        Ok(ByteBroadcast {
            core: Core::wrap(opts.open(name)?, None)?,
        })
    }

    /// Creates a named [`PodBroadcast`] of `T`.
    pub fn create_pod<T: Pod>(&self, name: &str) -> Result<PodBroadcast<T>, SegmentError> {
        let core = self.core(TypeTag::of::<T>(), std::mem::size_of::<T>(), Some(name))?;
        Ok(PodBroadcast::from_core(core))
    }

    /// Makes an anonymous [`PodBroadcast`] of `T`.
    pub fn anonymous_pod<T: Pod>(&self) -> Result<PodBroadcast<T>, SegmentError> {
        let core = self.core(TypeTag::of::<T>(), std::mem::size_of::<T>(), None)?;
        Ok(PodBroadcast::from_core(core))
    }
}

/// The producer's methods every flavour has.
macro_rules! producer_methods {
    ($subscriber:ident $(<$t:ident>)?) => {
        /// The segment.
        pub fn segment(&self) -> &Segment {
            self.core.segment()
        }

        /// How many messages the ring keeps.
        pub fn capacity(&self) -> usize {
            self.core.capacity()
        }

        /// How many messages were sent so far.
        pub fn sent(&self) -> u64 {
            self.core.sent()
        }

        /// Closes the broadcast: sends fail, and subscribers get [`RecvError::Closed`] once
        /// they have read what was sent before.
        pub fn close(&self) {
            self.core.close()
        }

        /// Whether [`close`](Self::close) was called.
        pub fn is_closed(&self) -> bool {
            self.core.is_closed()
        }

        /// How many subscribers are subscribed now (slots held by live processes).
        pub fn subscribers(&self) -> usize {
            self.core.subscribers()
        }

        /// A new subscriber that receives every message sent from now on. Takes a free
        /// slot, or one whose process died. `NoRoom` if every slot is held by a live
        /// subscriber.
        pub fn subscribe(
            &self,
            lagging: Lagging,
        ) -> Result<$subscriber $(<$t>)?, SubscribeError> {
            Ok($subscriber::from_reader(self.core.subscribe(lagging)?))
        }
    };
}

/// The receiving methods every subscriber has: `recv`, `try_recv` and `recv_timeout` over
/// the flavour's `recv_with`.
macro_rules! subscriber_methods {
    ($out:ty) => {
        /// How many messages this subscriber lost to lagging so far.
        pub fn lagged(&self) -> u64 {
            self.reader.lagged()
        }

        /// How many messages are waiting for this subscriber.
        pub fn pending(&self) -> u64 {
            self.reader.pending()
        }

        /// Receives the next message, waiting for one.
        pub fn recv(&mut self) -> Result<$out, RecvError> {
            self.recv_with(None, false)
        }

        /// Receives the next message if there is one now: `Empty` otherwise.
        pub fn try_recv(&mut self) -> Result<$out, RecvError> {
            self.recv_with(None, true)
        }

        /// Receives the next message, waiting at most `timeout`.
        pub fn recv_timeout(&mut self, timeout: Duration) -> Result<$out, RecvError> {
            self.recv_with(Some(Instant::now() + timeout), false)
        }
    };
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

/// A broadcast channel of `Pod` values in shared memory: any number of producers, and up
/// to 64 subscribers (by default), each of which receives every message sent after it
/// subscribed, in order.
///
/// A subscriber chooses at [`subscribe`](Self::subscribe) what happens when it falls a whole
/// ring behind: the producer waits for it ([`Lagging::Block`]) or overwrites the oldest
/// messages and the subscriber is told how many it lost ([`Lagging::DropOldest`]). A
/// subscriber whose process dies gives its slot back: a producer waiting for it goes on, and
/// a new subscriber may take the slot.
///
/// ```
/// use mproc_queue::{Lagging, PodBroadcast};
/// let b = PodBroadcast::<u64>::new(8)?;
/// let mut fast = b.subscribe(Lagging::Block).unwrap();
/// let mut slow = b.subscribe(Lagging::DropOldest).unwrap();
/// for i in 0..8 {
///     b.send(i).unwrap();
/// }
/// assert_eq!(fast.recv().unwrap(), 0);          // every subscriber gets every message
/// assert_eq!(slow.recv().unwrap(), 0);
/// for i in 1..8 {
///     assert_eq!(fast.recv().unwrap(), i);
/// }
/// b.send(8).unwrap();                             // `slow` is 7 behind: fine, it fits
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct PodBroadcast<T> {
    core: Core,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Pod> PodBroadcast<T> {
    fn from_core(core: Core) -> PodBroadcast<T> {
        PodBroadcast {
            core,
            _t: PhantomData,
        }
    }

    /// An anonymous broadcast keeping `capacity` messages (rounded up to a power of two).
    pub fn new(capacity: usize) -> Result<PodBroadcast<T>, SegmentError> {
        BroadcastOptions::new().capacity(capacity).anonymous_pod()
    }

    /// A named broadcast keeping `capacity` messages.
    pub fn create(name: &str, capacity: usize) -> Result<PodBroadcast<T>, SegmentError> {
        BroadcastOptions::new().capacity(capacity).create_pod(name)
    }

    /// Opens a named broadcast, checking the message type.
    pub fn open(name: &str) -> Result<PodBroadcast<T>, SegmentError> {
        let opts = SegmentOptions::new(Kind::BROADCAST).type_tag(TypeTag::of::<T>());
        Self::attach(opts.open(name)?)
    }

    /// Attaches through a file descriptor (an anonymous broadcast passed to an `exec`ed
    /// child), checking the message type.
    pub fn from_fd(fd: OwnedFd) -> Result<PodBroadcast<T>, SegmentError> {
        let opts = SegmentOptions::new(Kind::BROADCAST).type_tag(TypeTag::of::<T>());
        Self::attach(opts.from_fd(fd)?)
    }

    fn attach(seg: Segment) -> Result<PodBroadcast<T>, SegmentError> {
        Ok(Self::from_core(Core::wrap(
            seg,
            Some(std::mem::size_of::<T>()),
        )?))
    }

    producer_methods!(PodSubscriber<T>);

    /// Sends `value` to every subscriber, waiting while a blocking subscriber is a whole
    /// ring behind. `Closed` once closed.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_with(value, None, false)
    }

    /// As [`send`](Self::send), waiting at most `timeout` for a blocking subscriber.
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_with(value, deadline_of(Some(timeout)), false)
    }

    /// As [`send`](Self::send) without waiting: `Full` if a blocking subscriber is a whole
    /// ring behind.
    pub fn try_send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_with(value, None, true)
    }

    fn send_with(
        &self,
        value: T,
        deadline: Option<Instant>,
        no_wait: bool,
    ) -> Result<(), SendError<T>> {
        self.core
            .send(deadline, no_wait, |slot| {
                slot.store(0, bytemuck::bytes_of(&value));
            })
            .map_err(|stop| stop.with(value))
    }
}

/// A subscriber of a [`PodBroadcast`]: receives every message sent since it subscribed.
/// Dropping it gives its slot back (so does its process's death).
#[derive(Debug)]
pub struct PodSubscriber<T> {
    reader: Reader,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod> PodSubscriber<T> {
    fn from_reader(reader: Reader) -> PodSubscriber<T> {
        PodSubscriber {
            reader,
            _t: PhantomData,
        }
    }

    subscriber_methods!(T);

    fn recv_with(&mut self, deadline: Option<Instant>, no_wait: bool) -> Result<T, RecvError> {
        self.reader.recv(deadline, no_wait, |slot| {
            let mut value = T::zeroed();
            // The slot is the type's size (checked on attach): the copy is whole.
            slot.load(0, bytemuck::bytes_of_mut(&mut value));
            value
        })
    }
}

/// A broadcast channel of serde values in shared memory: each message is encoded once by
/// its producer, and every subscriber decodes its own copy. Otherwise as [`PodBroadcast`]:
/// many producers, up to 64 subscribers by default, each choosing at subscribe time whether
/// it holds the producer back or loses the oldest messages when a whole ring behind.
///
/// Messages are at most [`BroadcastOptions::max_message`] bytes encoded (1 KiB unless set);
/// a longer one is refused with [`SendError::TooLarge`] and sends nothing.
///
/// ```
/// use mproc_queue::{Broadcast, Lagging, RecvError};
/// let prices = Broadcast::<(String, f64)>::new(64)?;
/// let mut a = prices.subscribe(Lagging::Block).unwrap();
/// let mut b = prices.subscribe(Lagging::DropOldest).unwrap();
/// prices.send(("ACME".to_string(), 12.5)).unwrap();
/// assert_eq!(a.recv().unwrap(), ("ACME".to_string(), 12.5));
/// assert_eq!(b.recv().unwrap().0, "ACME");
/// prices.close();
/// assert_eq!(a.recv(), Err(RecvError::Closed));
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct Broadcast<T> {
    core: Core,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Broadcast<T> {
    fn from_core(core: Core) -> Broadcast<T> {
        Broadcast {
            core,
            _t: PhantomData,
        }
    }

    /// An anonymous broadcast keeping `capacity` messages (rounded up to a power of two) of
    /// up to [`DEFAULT_MAX_MESSAGE`] bytes encoded.
    pub fn new(capacity: usize) -> Result<Broadcast<T>, SegmentError> {
        BroadcastOptions::new().capacity(capacity).anonymous()
    }

    /// A named broadcast keeping `capacity` messages of up to [`DEFAULT_MAX_MESSAGE`] bytes.
    pub fn create(name: &str, capacity: usize) -> Result<Broadcast<T>, SegmentError> {
        BroadcastOptions::new().capacity(capacity).create(name)
    }

    /// Opens a named broadcast, checking the message type.
    pub fn open(name: &str) -> Result<Broadcast<T>, SegmentError> {
        BroadcastOptions::new().open(name)
    }

    /// Attaches through a file descriptor, checking the message type.
    pub fn from_fd(fd: OwnedFd) -> Result<Broadcast<T>, SegmentError> {
        let opts =
            SegmentOptions::new(Kind::BROADCAST).type_tag(BroadcastOptions::new().serde_tag::<T>());
        Ok(Self::from_core(Core::wrap(opts.from_fd(fd)?, None)?))
    }

    /// The longest message (bytes, encoded) this broadcast takes.
    pub fn max_message(&self) -> usize {
        self.core.item() - LEN_BYTES
    }

    producer_methods!(Subscriber<T>);

    /// Sends `value` to every subscriber, waiting while a blocking subscriber is a whole
    /// ring behind. `Closed` once closed; `TooLarge` if its encoding is longer than
    /// [`max_message`](Self::max_message).
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_with(value, None, false)
    }

    /// As [`send`](Self::send), waiting at most `timeout` for a blocking subscriber.
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_with(value, deadline_of(Some(timeout)), false)
    }

    /// As [`send`](Self::send) without waiting: `Full` if a blocking subscriber is a whole
    /// ring behind.
    pub fn try_send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_with(value, None, true)
    }

    fn send_with(
        &self,
        value: T,
        deadline: Option<Instant>,
        no_wait: bool,
    ) -> Result<(), SendError<T>> {
        codec::with_scratch(|buf| {
            buf.clear();
            if let Err(e) = codec::encode_into(&value, buf) {
                return Err(SendError::Unsendable {
                    value,
                    reason: e.to_string(),
                });
            }
            let max = self.max_message();
            if buf.len() > max {
                let size = buf.len();
                return Err(SendError::TooLarge { value, size, max });
            }
            send_prefixed(&self.core, buf, deadline, no_wait).map_err(|stop| stop.with(value))
        })
    }
}

/// Sends a message that fits its slot (checked by the caller) with its length word.
fn send_prefixed(
    core: &Core,
    message: &[u8],
    deadline: Option<Instant>,
    no_wait: bool,
) -> Result<(), Stop> {
    core.send(deadline, no_wait, |slot| {
        ring::store_prefixed(slot, message);
    })
}

/// Copies a length-prefixed message out of its slot into `out`, reporting an impossible
/// length word as unreadable.
fn recv_prefixed(
    reader: &mut Reader,
    out: &mut Vec<u8>,
    deadline: Option<Instant>,
    no_wait: bool,
) -> Result<(), RecvError> {
    let read = |slot: &SlotBytes<'_>| ring::load_prefixed(slot, out);
    match reader.recv(deadline, no_wait, read)? {
        Ok(()) => Ok(()),
        Err(len) => Err(RecvError::Unreadable {
            reason: format!("length word {len} exceeds the broadcast's message size"),
        }),
    }
}

/// A subscriber of a [`Broadcast`]: receives every message sent since it subscribed.
/// Dropping it gives its slot back (so does its process's death).
#[derive(Debug)]
pub struct Subscriber<T> {
    reader: Reader,
    buf: Vec<u8>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Subscriber<T> {
    fn from_reader(reader: Reader) -> Subscriber<T> {
        Subscriber {
            reader,
            buf: Vec::new(),
            _t: PhantomData,
        }
    }

    subscriber_methods!(T);

    fn recv_with(&mut self, deadline: Option<Instant>, no_wait: bool) -> Result<T, RecvError> {
        recv_prefixed(&mut self.reader, &mut self.buf, deadline, no_wait)?;
        codec::decode(&self.buf).map_err(|e| RecvError::Unreadable {
            reason: e.to_string(),
        })
    }
}

/// A broadcast channel of byte messages (up to [`BroadcastOptions::max_message`] bytes
/// each), copied without encoding; otherwise as [`Broadcast`].
///
/// ```
/// use mproc_queue::{BroadcastOptions, Lagging};
/// let b = BroadcastOptions::new().capacity(16).max_message(64).anonymous_bytes()?;
/// let mut s = b.subscribe(Lagging::Block).unwrap();
/// b.send(b"tick").unwrap();
/// assert_eq!(s.recv().unwrap(), b"tick");
/// assert!(b.send([0u8; 65]).is_err());            // longer than max_message
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct ByteBroadcast {
    core: Core,
}

impl ByteBroadcast {
    /// An anonymous broadcast keeping `capacity` messages of up to
    /// [`DEFAULT_MAX_MESSAGE`] bytes.
    pub fn new(capacity: usize) -> Result<ByteBroadcast, SegmentError> {
        BroadcastOptions::new().capacity(capacity).anonymous_bytes()
    }

    /// A named broadcast keeping `capacity` messages of up to [`DEFAULT_MAX_MESSAGE`] bytes.
    pub fn create(name: &str, capacity: usize) -> Result<ByteBroadcast, SegmentError> {
        BroadcastOptions::new()
            .capacity(capacity)
            .create_bytes(name)
    }

    /// Opens a named byte broadcast.
    pub fn open(name: &str) -> Result<ByteBroadcast, SegmentError> {
        BroadcastOptions::new().open_bytes(name)
    }

    /// Attaches through a file descriptor.
    pub fn from_fd(fd: OwnedFd) -> Result<ByteBroadcast, SegmentError> {
        let opts =
            SegmentOptions::new(Kind::BROADCAST).type_tag(BroadcastOptions::new().bytes_tag());
        Ok(ByteBroadcast {
            core: Core::wrap(opts.from_fd(fd)?, None)?,
        })
    }

    /// The longest message (bytes) this broadcast takes.
    pub fn max_message(&self) -> usize {
        self.core.item() - LEN_BYTES
    }

    producer_methods!(ByteSubscriber);

    /// Sends `bytes` to every subscriber, waiting while a blocking subscriber is a whole
    /// ring behind. `Closed` once closed; `TooLarge` if longer than
    /// [`max_message`](Self::max_message).
    pub fn send<B: AsRef<[u8]>>(&self, bytes: B) -> Result<(), SendError<B>> {
        self.send_with(bytes, None, false)
    }

    /// As [`send`](Self::send), waiting at most `timeout` for a blocking subscriber.
    pub fn send_timeout<B: AsRef<[u8]>>(
        &self,
        bytes: B,
        timeout: Duration,
    ) -> Result<(), SendError<B>> {
        self.send_with(bytes, deadline_of(Some(timeout)), false)
    }

    /// As [`send`](Self::send) without waiting: `Full` if a blocking subscriber is a whole
    /// ring behind.
    pub fn try_send<B: AsRef<[u8]>>(&self, bytes: B) -> Result<(), SendError<B>> {
        self.send_with(bytes, None, true)
    }

    fn send_with<B: AsRef<[u8]>>(
        &self,
        bytes: B,
        deadline: Option<Instant>,
        no_wait: bool,
    ) -> Result<(), SendError<B>> {
        let (size, max) = (bytes.as_ref().len(), self.max_message());
        if size > max {
            return Err(SendError::TooLarge {
                value: bytes,
                size,
                max,
            });
        }
        send_prefixed(&self.core, bytes.as_ref(), deadline, no_wait)
            .map_err(|stop| stop.with(bytes))
    }
}

/// A subscriber of a [`ByteBroadcast`]. Dropping it gives its slot back.
#[derive(Debug)]
pub struct ByteSubscriber {
    reader: Reader,
}

impl ByteSubscriber {
    fn from_reader(reader: Reader) -> ByteSubscriber {
        ByteSubscriber { reader }
    }

    subscriber_methods!(Vec<u8>);

    /// Receives the next message into `buf` (replacing its contents, reusing its
    /// allocation), waiting for one; returns its length.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        recv_prefixed(&mut self.reader, buf, None, false)?;
        Ok(buf.len())
    }

    /// As [`recv_into`](Self::recv_into) without waiting: `Empty` if nothing is new.
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        recv_prefixed(&mut self.reader, buf, None, true)?;
        Ok(buf.len())
    }

    fn recv_with(
        &mut self,
        deadline: Option<Instant>,
        no_wait: bool,
    ) -> Result<Vec<u8>, RecvError> {
        let mut buf = Vec::new();
        recv_prefixed(&mut self.reader, &mut buf, deadline, no_wait)?;
        Ok(buf)
    }
}
