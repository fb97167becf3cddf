//! `RedisQueue` and `RedisJoinableQueue`: a bounded queue in a Redis stream with one consumer
//! group. See the crate docs for what "acknowledged" means and for the delivery guarantee.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use mproc_queue::{GetError, PutError, TaskDoneError, Unavailable, codec};
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conn::{COMMAND_TIMEOUT, Redis, check_name, identity};
use crate::error::RedisError;
use crate::reply::{Entry, int_of, parse_entries};
use crate::{plain, scripts};

/// The format version written in every queue's meta hash.
const VERSION: &str = "2";
/// The longest a blocked call waits on the server before it looks again (for a close, a
/// lapsed lease, or its own deadline).
const MAX_BLOCK: Duration = Duration::from_millis(200);
/// What the HMAC of a queue entry is bound to (besides the queue's name).
const DOMAIN: &str = "mproc-redis queue v1";

/// Options for creating or opening a queue: [`Redis::queue`].
#[derive(Debug, Clone)]
pub struct RedisQueueOptions<'r> {
    redis: &'r Redis,
    name: String,
    capacity: usize,
    lease: Duration,
    manual_ack: bool,
    max_message: usize,
    at_most_once: bool,
}

impl Redis {
    /// Options for the queue called `name` (capacity 1024, lease 30 s until set).
    pub fn queue(&self, name: &str) -> RedisQueueOptions<'_> {
        RedisQueueOptions {
            redis: self,
            name: name.to_string(),
            capacity: 1024,
            lease: Duration::from_secs(30),
            manual_ack: false,
            max_message: 64 << 20,
            at_most_once: false,
        }
    }

    /// Deletes every key of the queue `name` (waiting producers and consumers then fail).
    /// Whether it existed.
    pub fn unlink_queue(&self, name: &str) -> Result<bool, RedisError> {
        check_name(name)?;
        let keys: Vec<String> = ["meta", "s", "l", "room", "n", "done", "dead"]
            .iter()
            .map(|p| self.key(name, p))
            .collect();
        let n: i64 = self
            .run(COMMAND_TIMEOUT, |c| redis::cmd("DEL").arg(&keys).query(c))
            .map_err(|reason| RedisError::Unavailable { reason })?;
        Ok(n > 0)
    }
}

impl RedisQueueOptions<'_> {
    /// How many messages the queue holds, taken or not yet acknowledged included (a `put`
    /// waits while it is full). At least 1.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How long a consumer may hold a message without acknowledging it before it is
    /// delivered to another consumer (default 30 s). A live consumer's leases are renewed
    /// in the background, so this bounds how long a dead consumer's messages wait, not how
    /// long processing may take.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The largest message this handle puts or accepts (default 64 MiB): a larger `put` is
    /// [`PutError::TooLarge`], and a larger entry found in the queue is refused and set
    /// aside as a dead letter.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Messages taken through this handle are acknowledged only one by one, with
    /// [`RedisQueue::ack_item`] (or, for all of them, [`RedisQueue::ack`]), not by the next
    /// `get` nor by dropping the handle: for a consumer that works on several messages at
    /// once and finishes them in any order.
    pub fn manual_ack(mut self) -> Self {
        self.manual_ack = true;
        self
    }

    /// Makes the queue at most once (when creating it; an opener finds it as it was made):
    /// a `get` removes what it takes at once, with no lease and no acknowledgement, so a
    /// consumer that dies after a `get` loses what it took, and nothing is ever delivered
    /// twice. It lives in a Redis list and costs the server what a bare `RPUSH`/`LPOP` loop
    /// does. Deliveries carry no id (`Delivery::id` is empty). Not for joinable queues.
    pub fn at_most_once(mut self) -> Self {
        self.at_most_once = true;
        self
    }

    /// Creates the queue, or opens it if it exists with the same element type, kind and
    /// capacity.
    pub fn create<T: Serialize + DeserializeOwned>(self) -> Result<RedisQueue<T>, RedisError> {
        Ok(RedisQueue::wrap(self.attach::<T>(false, true)?))
    }

    /// Opens an existing queue ([`RedisError::NotFound`] otherwise).
    pub fn open<T: Serialize + DeserializeOwned>(self) -> Result<RedisQueue<T>, RedisError> {
        Ok(RedisQueue::wrap(self.attach::<T>(false, false)?))
    }

    /// Creates (or opens) a joinable queue.
    pub fn create_joinable<T: Serialize + DeserializeOwned>(
        self,
    ) -> Result<RedisJoinableQueue<T>, RedisError> {
        Ok(RedisJoinableQueue(RedisQueue::wrap(
            self.attach::<T>(true, true)?,
        )))
    }

    /// Opens an existing joinable queue.
    pub fn open_joinable<T: Serialize + DeserializeOwned>(
        self,
    ) -> Result<RedisJoinableQueue<T>, RedisError> {
        Ok(RedisJoinableQueue(RedisQueue::wrap(
            self.attach::<T>(true, false)?,
        )))
    }

    /// Creates (or opens) the queue for messages already encoded as `type_name`'s (what
    /// `mproc bridge` forwards from a shared-memory queue): bytes are put and taken as they
    /// are, and typed consumers and producers of `type_name` share the queue.
    pub fn create_encoded(self, type_name: &str) -> Result<RedisQueue<Vec<u8>>, RedisError> {
        let core = self.attach_named(type_name, false, true)?;
        Ok(RedisQueue::with_codec(core, raw_encode, raw_decode))
    }

    /// Opens an existing queue of `type_name`'s messages, as bytes.
    pub fn open_encoded(self, type_name: &str) -> Result<RedisQueue<Vec<u8>>, RedisError> {
        let core = self.attach_named(type_name, false, false)?;
        Ok(RedisQueue::with_codec(core, raw_encode, raw_decode))
    }

    fn attach<T>(self, joinable: bool, create: bool) -> Result<Core, RedisError> {
        self.attach_named(std::any::type_name::<T>(), joinable, create)
    }

    fn attach_named(
        self,
        type_name: &str,
        joinable: bool,
        create: bool,
    ) -> Result<Core, RedisError> {
        check_name(&self.name)?;
        if self.capacity == 0 || self.lease < Duration::from_millis(10) {
            return Err(RedisError::Invalid {
                reason: "a queue needs a capacity of at least 1 and a lease of at least 10 ms"
                    .into(),
            });
        }
        if joinable && self.at_most_once {
            return Err(RedisError::Invalid {
                reason: "a joinable queue counts acknowledgements: it cannot be at most once"
                    .into(),
            });
        }
        let r = self.redis;
        let kind = match (joinable, self.at_most_once) {
            (true, _) => "joinable",
            (false, true) => "plain",
            (false, false) => "queue",
        };
        let auth = if r.is_authenticated() { "1" } else { "0" };
        let (meta, stream) = (r.key(&self.name, "meta"), r.key(&self.name, "s"));
        let list = r.key(&self.name, "l");
        let reply: Value = r
            .run(COMMAND_TIMEOUT, |c| {
                if create {
                    scripts::create()
                        .key(&meta)
                        .key(if self.at_most_once { &list } else { &stream })
                        .arg(kind)
                        .arg(type_name)
                        .arg(self.capacity)
                        .arg(self.lease.as_millis() as u64)
                        .arg(auth)
                        .arg(VERSION)
                        .invoke(c)
                } else {
                    redis::cmd("HMGET")
                        .arg(&meta)
                        .arg(&["kind", "type", "cap", "lease_ms", "auth", "version"])
                        .query(c)
                }
            })
            .map_err(|reason| RedisError::Unavailable { reason })?;
        let (mut capacity, mut lease, mut plain) = (self.capacity, self.lease, self.at_most_once);
        if let Value::Array(fields) = reply {
            let s = |i: usize| match fields.get(i) {
                Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            };
            let Some(found_kind) = s(0) else {
                return Err(RedisError::NotFound {
                    kind: "queue",
                    name: self.name,
                });
            };
            let mismatch = |what, expected: &str, found: Option<String>| RedisError::Mismatch {
                name: self.name.clone(),
                what,
                expected: expected.to_string(),
                found: found.unwrap_or_default(),
            };
            if s(5).as_deref() != Some(VERSION) {
                return Err(mismatch("version", VERSION, s(5)));
            }
            // An opener takes the queue as it was made, plain or acknowledged; a creator (and
            // every joinable handle) must agree with it.
            let plain_found = found_kind == "plain";
            let agrees = found_kind == kind || (!create && !joinable && plain_found);
            if !agrees {
                return Err(mismatch("kind", kind, Some(found_kind)));
            }
            plain = plain_found;
            if s(1).as_deref() != Some(type_name) {
                return Err(mismatch("type", type_name, s(1)));
            }
            let found_cap = s(2).and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
            if create && found_cap != self.capacity {
                return Err(mismatch(
                    "capacity",
                    &self.capacity.to_string(),
                    Some(found_cap.to_string()),
                ));
            }
            if s(4).as_deref() != Some(auth) {
                let reason = if auth == "1" {
                    "was created without an auth key: its entries cannot be checked"
                } else {
                    "was created with an auth key, and this connection has none"
                };
                return Err(RedisError::AuthMismatch {
                    name: self.name,
                    reason,
                });
            }
            capacity = found_cap.max(1);
            lease = Duration::from_millis(s(3).and_then(|l| l.parse().ok()).unwrap_or(30_000));
        }
        Ok(Core {
            redis: r.clone(),
            room: r.key(&self.name, "room"),
            n: r.key(&self.name, "n"),
            done: r.key(&self.name, "done"),
            dead: r.key(&self.name, "dead"),
            max_message: self.max_message,
            name: self.name,
            meta,
            stream,
            list,
            plain,
            consumer: identity(),
            capacity,
            lease,
            joinable,
            manual: joinable || self.manual_ack,
            type_name: type_name.to_string(),
            held: Mutex::new(HashMap::new()),
            claimed: Mutex::new(None),
            room_owed: AtomicU64::new(0),
            later: Mutex::new(Vec::new()),
        })
    }
}

impl Core {
    /// Whether `take` runs the take script, which claims entries whose lease lapsed, rather
    /// than only reading new ones: at least every quarter lease, and whenever nothing new
    /// is there. So an entry whose consumer died goes to a busy consumer at most a quarter
    /// lease after its lease lapsed.
    fn claim_due(&self) -> bool {
        lock(&self.claimed).is_none_or(|t| t.elapsed() >= self.lease / 4)
    }

    /// Acknowledges `ids` (held by this consumer); with `done`, also counts them done.
    fn acknowledge(&self, ids: &[String], done: bool) -> Result<i64, String> {
        let mut ids = ids.to_vec();
        sort_ids(&mut ids);
        self.redis.run(COMMAND_TIMEOUT, |con| {
            scripts::ack()
                .key(&self.meta)
                .key(&self.stream)
                .key(&self.room)
                .key(&self.n)
                .key(&self.done)
                .arg("mproc")
                .arg(&self.consumer)
                .arg(if done { "1" } else { "0" })
                .arg(&ids)
                .invoke(con)
        })
    }
}

/// What [`RedisQueue::read_new`] did: whether the acknowledgement was done, and the new
/// entries read (`None`: the server refused the read).
struct Fast {
    acked: bool,
    read: Option<Vec<Entry>>,
    /// The probed key's value (`Some(None)`: no such key; `None`: no probe, or no answer).
    probed: Probed,
}

/// A probed key's value read with a take: `Some(None)` when there is no such key, `None`
/// when the take did not probe (or the server's answer was not a string).
pub(crate) type Probed = Option<Option<String>>;

/// Who holds a taken entry until it is acknowledged: the thread that took it (a plain queue
/// acknowledges it at that thread's next `get`), or the handle (a joinable queue's
/// `task_done`, from any thread).
type Holder = Option<ThreadId>;

/// What a queue handle shares with its lease-renewing thread.
pub(crate) struct Core {
    redis: Redis,
    name: String,
    meta: String,
    stream: String,
    /// The list of an at-most-once queue.
    list: String,
    /// At most once: a list, no leases ([`crate::plain`]).
    plain: bool,
    room: String,
    n: String,
    done: String,
    dead: String,
    consumer: String,
    max_message: usize,
    capacity: usize,
    lease: Duration,
    joinable: bool,
    /// Acknowledged one by one (joinable queues, `manual_ack`): held by the handle, not by
    /// a thread, and not acknowledged by the next `get`.
    manual: bool,
    type_name: String,
    held: Mutex<HashMap<Holder, VecDeque<String>>>,
    /// Room tokens this handle owes producers for elements it took with BLPOP (an
    /// at-most-once queue): sent with its next BLPOP.
    room_owed: AtomicU64,
    /// When this handle last ran the take script, which claims entries whose lease lapsed
    /// ([`Core::claim_due`]).
    claimed: Mutex<Option<Instant>>,
    /// A manual queue's acknowledgements waiting for the next read
    /// ([`RedisQueue::ack_items_later`]).
    later: Mutex<Vec<String>>,
}

/// A message with its delivery details: what [`RedisQueue::get_item`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<T> {
    /// The entry's id on the server (`MILLIS-SEQ`), the same on every delivery of this
    /// message: what a consumer dedupes by. Empty for an at-most-once queue (its messages
    /// are never delivered twice).
    pub id: String,
    /// Whether the message was delivered before (to a consumer whose lease lapsed).
    pub redelivered: bool,
    /// How many times it was delivered, this time included (1: the first time).
    pub deliveries: u64,
    /// The message.
    pub value: T,
}

/// An entry consumers refused, kept aside: [`RedisQueue::dead_letters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the queue.
    pub id: String,
    /// Why it was refused.
    pub reason: String,
    /// Its bytes as they were found.
    pub bytes: Vec<u8>,
}

/// A bounded FIFO queue of `T` on a Redis server, shared by processes on any host that
/// reach it: the same calls as [`mproc_queue::Queue`] (and the same
/// [`MessageQueue`](mproc_queue::MessageQueue) trait), with at-least-once delivery.
///
/// A message taken by `get` is **leased** to this consumer until it is **acknowledged**,
/// which happens when the same thread calls `get` (or `try_get`, `get_timeout`, `get_many`,
/// `get_item`) again, calls [`ack`](Self::ack), or when the handle is dropped outside a
/// panic. While a consumer lives, a background thread renews its leases. If it dies (or
/// stops reaching the server) before acknowledging, the message is delivered to another
/// consumer once its lease lapses, with the same [`Delivery::id`].
pub struct RedisQueue<T> {
    core: Arc<Core>,
    encode: Encode<T>,
    decode: Decode<T>,
    renewer: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for RedisQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("name", &self.core.name)
            .field("capacity", &self.core.capacity)
            .field("lease", &self.core.lease)
            .finish_non_exhaustive()
    }
}

type Encode<T> = fn(&T, &mut Vec<u8>) -> Result<(), String>;
type Decode<T> = fn(&[u8]) -> Result<T, String>;

fn codec_encode<T: Serialize>(v: &T, out: &mut Vec<u8>) -> Result<(), String> {
    codec::encode_into(v, out).map_err(|e| e.to_string())
}

fn codec_decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    codec::decode(b).map_err(|e| e.to_string())
}

// The signature is `Encode<Vec<u8>>`'s: a `&[u8]` would not fit the field.
#[allow(clippy::ptr_arg)]
fn raw_encode(v: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
    out.extend_from_slice(v);
    Ok(())
}

fn raw_decode(b: &[u8]) -> Result<Vec<u8>, String> {
    Ok(b.to_vec())
}

fn unavailable_put<T>(value: T, reason: String) -> PutError<T> {
    PutError::Unavailable { value, reason }
}

impl<T: Serialize + DeserializeOwned> RedisQueue<T> {
    fn wrap(core: Core) -> RedisQueue<T> {
        RedisQueue::with_codec(core, codec_encode::<T>, codec_decode::<T>)
    }

    fn with_codec(core: Core, encode: Encode<T>, decode: Decode<T>) -> RedisQueue<T> {
        RedisQueue {
            core: Arc::new(core),
            encode,
            decode,
            renewer: Mutex::new(None),
            _t: PhantomData,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// How many messages it holds at most.
    pub fn capacity(&self) -> usize {
        self.core.capacity
    }

    /// How long a dead consumer's messages wait before they are delivered again.
    pub fn lease(&self) -> Duration {
        self.core.lease
    }

    /// Appends `value`, waiting while the queue is full.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_until(value, Some(None))
    }

    /// Appends `value` if there is room now.
    pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_until(value, None)
    }

    /// Appends `value`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(value, Some(Some(Instant::now() + timeout)))
    }

    fn encode(&self, value: &T, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        let mut body = Vec::new();
        (self.encode)(value, &mut body)?;
        let tag = match self.core.redis.authkey() {
            Some(k) => k.sign(DOMAIN, &self.core.name, &body),
            None => Vec::new(),
        };
        out.push(body);
        out.push(tag);
        Ok(())
    }

    /// `wait`: `None` = do not wait; `Some(None)` = forever; `Some(Some(t))` = until `t`.
    fn put_until(&self, value: T, wait: Option<Option<Instant>>) -> Result<(), PutError<T>> {
        let mut args = Vec::with_capacity(2);
        if let Err(reason) = self.encode(&value, &mut args) {
            return Err(PutError::Unsendable { value, reason });
        }
        if args[0].len() > self.core.max_message {
            return Err(PutError::TooLarge {
                value,
                size: args[0].len(),
                max: self.core.max_message as u64,
            });
        }
        loop {
            match self.push(&args, wait.flatten()) {
                Ok(1) => return Ok(()),
                Ok(-1) => return Err(PutError::Closed(value)),
                Ok(-2) => return Err(unavailable_put(value, self.gone())),
                Ok(_) => {}
                Err(reason) => return Err(unavailable_put(value, reason)),
            }
            let Some(deadline) = wait else {
                return Err(PutError::Full(value));
            };
            if let Err(reason) = self.wait_for_room(deadline) {
                return Err(match reason {
                    None => PutError::Timeout(value),
                    Some(reason) => unavailable_put(value, reason),
                });
            }
        }
    }

    fn gone(&self) -> String {
        format!("queue {:?} no longer exists on the server", self.core.name)
    }

    /// Runs PUT with `args` (value, mac pairs): how many were added, -1 closed, -2 gone.
    /// The reply is awaited until shortly after `deadline`.
    fn push(&self, args: &[Vec<u8>], deadline: Option<Instant>) -> Result<i64, String> {
        let c = &self.core;
        if c.plain {
            let framed: Vec<Vec<u8>> = args
                .chunks(2)
                .map(|p| plain::frame(&p[0], p.get(1).map_or(&[][..], |t| &t[..])))
                .collect();
            return c.redis.run(reply_timeout(deadline), |con| {
                plain::put()
                    .key(&c.meta)
                    .key(&c.list)
                    .arg(&framed)
                    .invoke(con)
            });
        }
        c.redis.run(reply_timeout(deadline), |con| {
            scripts::put()
                .key(&c.meta)
                .key(&c.stream)
                .key(&c.n)
                .arg(args)
                .invoke(con)
        })
    }

    /// Waits for a room token (pushed by acknowledgements and by `close`), at most
    /// [`MAX_BLOCK`] and not past `deadline`. `Err(None)`: the deadline passed.
    fn wait_for_room(&self, deadline: Option<Instant>) -> Result<(), Option<String>> {
        let block = block_for(deadline).ok_or(None)?;
        let room = &self.core.room;
        self.core
            .redis
            .run(block + GRACE, |c| {
                redis::cmd("BLPOP")
                    .arg(room)
                    .arg(block.as_secs_f64())
                    .query::<Value>(c)
            })
            .map(drop)
            .map_err(Some)
    }

    /// Appends every value in order, waiting for room as needed, sending as many as fit in
    /// each round trip. On an error, how many were put before it, and the error with the
    /// value that failed.
    pub fn put_many(&self, values: Vec<T>) -> Result<(), (usize, PutError<T>)> {
        let mut args = Vec::with_capacity(values.len() * 2);
        for (i, v) in values.iter().enumerate() {
            if let Err(reason) = self.encode(v, &mut args) {
                let value = values.into_iter().nth(i).unwrap_or_else(|| unreachable!());
                return Err((0, PutError::Unsendable { value, reason }));
            }
        }
        // The value at `done`, handed back with the error that stopped the batch.
        let stop = |values: Vec<T>, done: usize, e: &dyn Fn(T) -> PutError<T>| {
            let v = values
                .into_iter()
                .nth(done)
                .unwrap_or_else(|| unreachable!("done < len"));
            Err((done, e(v)))
        };
        let mut done = 0;
        while done < values.len() {
            let unavailable = |reason: String| move |v| unavailable_put(v, reason.clone());
            match self.push(&args[done * 2..], None) {
                Ok(n) if n > 0 => done += n as usize,
                Ok(-1) => return stop(values, done, &PutError::Closed),
                Ok(-2) => return stop(values, done, &unavailable(self.gone())),
                Ok(_) => {
                    if let Err(Some(reason)) = self.wait_for_room(None) {
                        return stop(values, done, &unavailable(reason));
                    }
                }
                Err(reason) => return stop(values, done, &unavailable(reason)),
            }
        }
        Ok(())
    }

    /// Takes the oldest message, waiting while the queue is empty.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_item().map(|d| d.value)
    }

    /// Takes the oldest message if there is one now.
    pub fn try_get(&self) -> Result<T, GetError> {
        self.take_one(None).map(|d| d.value)
    }

    /// Takes the oldest message, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.take_one(Some(Some(Instant::now() + timeout)))
            .map(|d| d.value)
    }

    /// Takes the oldest message with its id and whether it was delivered before, waiting
    /// while the queue is empty.
    pub fn get_item(&self) -> Result<Delivery<T>, GetError> {
        self.take_one(Some(None))
    }

    /// Waits for at least one message, then takes up to `max` (in one round trip when they
    /// are there).
    pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        if max == 0 {
            return Ok(0);
        }
        let got = self.take(Some(None), max)?;
        let n = got.len();
        out.extend(got.into_iter().map(|d| d.value));
        Ok(n)
    }

    /// Takes up to `max` messages with their delivery details, waiting at most `wait` for
    /// the first (`None`: not at all).
    pub fn get_items(
        &self,
        max: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<Delivery<T>>, GetError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.take(wait.map(|w| Some(Instant::now() + w)), max)
    }

    /// [`get_items`](Self::get_items), and the string value of the key `probe`, asked in the
    /// same round trip after the read (`Some(None)`: no such key; `None` when the read took
    /// another path: ask separately). The remote pool's worker probes its cancel set's
    /// version this way.
    pub(crate) fn get_items_probing(
        &self,
        max: usize,
        wait: Option<Duration>,
        probe: &str,
    ) -> (Result<Vec<Delivery<T>>, GetError>, Probed) {
        if max == 0 {
            return (Ok(Vec::new()), None);
        }
        let mut probed = None;
        let got = self.take_probing(
            wait.map(|w| Some(Instant::now() + w)),
            max,
            Some((probe, &mut probed)),
        );
        (got, probed)
    }

    /// Acknowledges the messages `ids` taken through this handle, in one call: how many were
    /// still this consumer's.
    pub fn ack_items(&self, ids: &[String]) -> Result<usize, Unavailable> {
        if ids.is_empty() || self.core.plain {
            return Ok(0);
        }
        {
            let mut held = lock(&self.core.held);
            for q in held.values_mut() {
                q.retain(|h| !ids.contains(h));
            }
        }
        match self.acknowledge(ids, false) {
            Ok(n) => Ok(n as usize),
            Err(reason) => {
                lock(&self.core.held)
                    .entry(self.holder())
                    .or_default()
                    .extend(ids.iter().cloned());
                Err(Unavailable { reason })
            }
        }
    }

    /// Acknowledges the message `id` taken through this handle: it will not be delivered
    /// again. Whether it was still this consumer's (a message whose lease lapsed and which
    /// went to another consumer is not).
    pub fn ack_item(&self, id: &str) -> Result<bool, Unavailable> {
        if self.core.plain {
            return Ok(false);
        }
        let found = {
            let mut held = lock(&self.core.held);
            let mut found = false;
            for q in held.values_mut() {
                if let Some(i) = q.iter().position(|h| h == id) {
                    q.remove(i);
                    found = true;
                }
            }
            found
        };
        if !found {
            return Ok(false);
        }
        let ids = [id.to_string()];
        match self.acknowledge(&ids, false) {
            Ok(n) => Ok(n == 1),
            Err(reason) => {
                lock(&self.core.held)
                    .entry(self.holder())
                    .or_default()
                    .push_back(ids[0].clone());
                Err(Unavailable { reason })
            }
        }
    }

    /// Acknowledges the messages `ids` taken through this handle with the next `get` (in its
    /// round trip), or when the handle is dropped or [`ack`](Self::ack) is called, whichever
    /// comes first. One round trip fewer than [`ack_items`](Self::ack_items) for a consumer
    /// that reads again soon; until then the messages stay leased to this consumer, and if it
    /// dies first they are delivered again.
    pub fn ack_items_later(&self, ids: &[String]) {
        if ids.is_empty() || self.core.plain {
            return;
        }
        {
            let mut held = lock(&self.core.held);
            for q in held.values_mut() {
                q.retain(|h| !ids.contains(h));
            }
        }
        if self.core.manual {
            lock(&self.core.later).extend(ids.iter().cloned());
        } else {
            lock(&self.core.held)
                .entry(self.holder())
                .or_default()
                .extend(ids.iter().cloned());
        }
    }

    /// Gives back acknowledgements a take could not send: the next one sends them.
    fn keep(&self, holder: Holder, ack: Vec<String>) {
        if self.core.manual {
            lock(&self.core.later).extend(ack);
        } else {
            lock(&self.core.held).entry(holder).or_default().extend(ack);
        }
    }

    fn take_one(&self, wait: Option<Option<Instant>>) -> Result<Delivery<T>, GetError> {
        let mut got = self.take(wait, 1)?;
        got.pop().ok_or(GetError::Empty)
    }

    fn holder(&self) -> Holder {
        if self.core.manual {
            None
        } else {
            Some(std::thread::current().id())
        }
    }

    /// Takes up to `count` entries (at least one, or an error).
    fn take(
        &self,
        wait: Option<Option<Instant>>,
        count: usize,
    ) -> Result<Vec<Delivery<T>>, GetError> {
        self.take_probing(wait, count, None)
    }

    /// [`take`](Self::take), probing whether a key exists in the fast path's round trip.
    fn take_probing(
        &self,
        wait: Option<Option<Instant>>,
        count: usize,
        probe: Option<(&str, &mut Probed)>,
    ) -> Result<Vec<Delivery<T>>, GetError> {
        let c = &self.core;
        if c.plain {
            return self.take_plain(wait, count);
        }
        let holder = self.holder();
        // A plain queue acknowledges what this thread took before, in the same round trip; a
        // manual one what was acknowledged with `ack_items_later`.
        let mut ack: Vec<String> = if c.manual {
            std::mem::take(&mut *lock(&c.later))
        } else {
            lock(&c.held)
                .remove(&holder)
                .map(Vec::from)
                .unwrap_or_default()
        };
        sort_ids(&mut ack);
        if !c.claim_due() {
            // A get that may wait blocks in this read (one round trip for an idle consumer
            // too); the take script runs after it if nothing came.
            let block = wait
                .and_then(block_for)
                .map(|b| b.min(c.lease / 4).max(Duration::from_millis(1)));
            let (key, out) = probe.unzip();
            match self.read_new(&ack, count, wait.flatten(), block, key) {
                Ok(fast) => {
                    if let Some(out) = out {
                        *out = fast.probed;
                    }
                    if fast.acked {
                        ack.clear();
                    }
                    match fast.read {
                        Some(entries) if !entries.is_empty() => {
                            self.keep(holder, ack);
                            return self.deliver(entries, holder);
                        }
                        // Nothing new, or the read was refused (a missing queue): the take
                        // script below claims, acknowledges, or reports.
                        _ => {}
                    }
                }
                Err(reason) => {
                    self.keep(holder, ack);
                    return Err(GetError::Unavailable { reason });
                }
            }
        }
        loop {
            let reply: Result<Value, String> = c.redis.run(reply_timeout(wait.flatten()), |con| {
                scripts::take()
                    .key(&c.meta)
                    .key(&c.stream)
                    .key(&c.room)
                    .arg("mproc")
                    .arg(&c.consumer)
                    .arg(c.lease.as_millis() as u64)
                    .arg(count)
                    .arg(&ack)
                    .invoke(con)
            });
            let reply = match reply {
                Ok(r) => r,
                Err(reason) => {
                    // Not acknowledged: keep holding them (the next call tries again).
                    self.keep(holder, ack);
                    return Err(GetError::Unavailable { reason });
                }
            };
            ack.clear();
            *lock(&c.claimed) = Some(Instant::now());
            match int_of(&reply) {
                Some(-1) => return Err(GetError::Closed),
                Some(-2) => {
                    return Err(GetError::Unavailable {
                        reason: self.gone(),
                    });
                }
                _ => {}
            }
            let entries = parse_entries(&reply);
            if !entries.is_empty() {
                return self.deliver(entries, holder);
            }
            let Some(deadline) = wait else {
                return Err(GetError::Empty);
            };
            let Some(block) = block_for(deadline) else {
                return Err(GetError::Timeout);
            };
            let block = block.min(c.lease / 4).max(Duration::from_millis(1));
            let reply: Value = c
                .redis
                .run(block + GRACE, |con| {
                    redis::cmd("XREADGROUP")
                        .arg(&["GROUP", "mproc"])
                        .arg(&c.consumer)
                        .arg("COUNT")
                        .arg(count)
                        .arg("BLOCK")
                        .arg(block.as_millis() as u64)
                        .arg("STREAMS")
                        .arg(&c.stream)
                        .arg(">")
                        .query(con)
                })
                .map_err(|reason| GetError::Unavailable { reason })?;
            let entries = crate::reply::parse_read(&reply);
            if !entries.is_empty() {
                return self.deliver(entries, holder);
            }
        }
    }

    /// The fast path of [`take`](Self::take), one round trip: acknowledges `ack` (the ack
    /// script) and reads up to `count` new entries with an `XREADGROUP` of its own. Reading
    /// inside the take script made the server convert every entry to Lua and back, which cost
    /// as much as the commands.
    fn read_new(
        &self,
        ack: &[String],
        count: usize,
        deadline: Option<Instant>,
        block: Option<Duration>,
        probe: Option<&str>,
    ) -> Result<Fast, String> {
        let c = &self.core;
        let budget = block.map_or(reply_timeout(deadline), |b| b + GRACE);
        c.redis.run(budget, |con| {
            let script = scripts::ack();
            let mut acking = script.prepare_invoke();
            acking
                .key(&c.meta)
                .key(&c.stream)
                .key(&c.room)
                .key(&c.n)
                .key(&c.done)
                .arg("mproc")
                .arg(&c.consumer)
                .arg("0")
                .arg(ack);
            let mut p = redis::pipe();
            p.ignore_errors();
            if !ack.is_empty() {
                p.invoke_script(&acking);
            }
            p.cmd("XREADGROUP")
                .arg(&["GROUP", "mproc"])
                .arg(&c.consumer)
                .arg("COUNT")
                .arg(count);
            if let Some(b) = block {
                p.arg("BLOCK").arg(b.as_millis() as u64);
            }
            p.arg("STREAMS").arg(&c.stream).arg(">");
            if let Some(key) = probe {
                p.cmd("GET").arg(key);
            }
            let mut replies: Vec<Value> = p.query(con)?;
            let probed = match probe {
                Some(_) => match replies.pop() {
                    Some(Value::Nil) => Some(None),
                    Some(Value::BulkString(v)) => Some(Some(String::from_utf8_lossy(&v).into())),
                    _ => None,
                },
                None => None,
            };
            let read = replies.pop().unwrap_or(Value::Nil);
            let refused = |v: &Value| match v {
                Value::ServerError(e) => Some(e.kind() == Some(redis::ServerErrorKind::NoScript)),
                _ => None,
            };
            let acked = match replies.first().and_then(refused) {
                None => true,
                // The server restarted or never ran it (scripts are not persisted): load
                // it and acknowledge now (the read above is kept either way).
                Some(true) => acking.invoke::<i64>(con).is_ok(),
                Some(false) => false,
            };
            // What was read is leased to this consumer now: deliver it even if the
            // acknowledgement failed (it is retried at the next call).
            Ok(Fast {
                probed,
                acked,
                read: refused(&read)
                    .is_none()
                    .then(|| crate::reply::parse_read(&read)),
            })
        })
    }

    /// [`take`](Self::take) for an at-most-once queue.
    fn take_plain(
        &self,
        wait: Option<Option<Instant>>,
        count: usize,
    ) -> Result<Vec<Delivery<T>>, GetError> {
        let c = &self.core;
        let unavailable = |reason| GetError::Unavailable { reason };
        // A blocking get of one message goes to BLPOP at once (one round trip when a message
        // is there or comes, as a bare BLPOP loop): the take script, which reports a closed
        // or missing queue, runs when BLPOP found nothing in its slice.
        let mut pop_first = count == 1 && wait.flatten().is_none_or(|d| d > Instant::now());
        if wait.is_none() {
            pop_first = false;
        }
        loop {
            if pop_first {
                pop_first = false;
            } else {
                let reply: Value = c
                    .redis
                    .run(reply_timeout(wait.flatten()), |con| {
                        plain::take()
                            .key(&c.meta)
                            .key(&c.list)
                            .key(&c.room)
                            .arg(count)
                            .invoke(con)
                    })
                    .map_err(unavailable)?;
                if plain::is(&reply, -1) {
                    return Err(GetError::Closed);
                }
                if plain::is(&reply, -2) {
                    return Err(unavailable(self.gone()));
                }
                let entries = plain::entries(reply);
                if !entries.is_empty() {
                    return self.deliver(entries, None);
                }
            }
            let Some(deadline) = wait else {
                return Err(GetError::Empty);
            };
            let Some(block) = block_for(deadline) else {
                return Err(GetError::Timeout);
            };
            // BLPOP takes the element it waited for. Its room token (a wake-up for producers
            // waiting on a full queue; they also look again every 200 ms) goes with this
            // handle's next BLPOP, in the same round trip.
            let owed = c.room_owed.swap(0, Ordering::Relaxed);
            let got = c
                .redis
                .run(block + GRACE, |con| {
                    let mut p = redis::pipe();
                    if owed > 0 {
                        p.rpush(&c.room, owed).ignore();
                        p.ltrim(&c.room, -64, -1).ignore();
                    }
                    p.cmd("BLPOP").arg(&c.list).arg(block.as_secs_f64());
                    p.query::<Vec<Value>>(con)
                })
                .map_err(unavailable)?
                .pop();
            if let Some(Value::Array(mut kv)) = got
                && kv.len() == 2
            {
                c.room_owed.fetch_add(1, Ordering::Relaxed);
                let element = kv.pop().unwrap_or(Value::Nil);
                return self.deliver(plain::entries(Value::Array(vec![element])), None);
            }
        }
    }

    /// Checks and decodes taken entries and records them as held. An entry that fails its
    /// HMAC or does not decode is acknowledged and dropped (it is never delivered again),
    /// and reported if nothing else was taken.
    fn deliver(&self, entries: Vec<Entry>, holder: Holder) -> Result<Vec<Delivery<T>>, GetError> {
        let c = &self.core;
        let mut out = Vec::with_capacity(entries.len());
        let mut refused: Vec<(Entry, String)> = Vec::new();
        for e in entries {
            let checked = match c.redis.authkey() {
                _ if e.value.len() > c.max_message => Err(format!(
                    "entry {} of queue {:?} holds {} bytes, more than this consumer's limit \
                     of {} (RedisQueueOptions::max_message_bytes)",
                    e.id,
                    c.name,
                    e.value.len(),
                    c.max_message
                )),
                Some(k) if !k.verify(DOMAIN, &c.name, &e.value, &e.tag) => Err(format!(
                    "entry {} of queue {:?} failed its HMAC check (not written with this \
                     queue's auth key, or altered): refused",
                    e.id, c.name
                )),
                _ => (self.decode)(&e.value).map_err(|err| {
                    format!(
                        "entry {} of queue {:?} could not be decoded: {err}",
                        e.id, c.name
                    )
                }),
            };
            match checked {
                Ok(value) => out.push(Delivery {
                    id: e.id,
                    redelivered: e.deliveries > 1,
                    deliveries: e.deliveries,
                    value,
                }),
                Err(r) => refused.push((e, r)),
            }
        }
        let reason = refused.last().map(|r| r.1.clone()).unwrap_or_default();
        if !refused.is_empty() {
            // Best effort: if this fails, the entries come back after their lease and are
            // refused again.
            let _ = self.set_aside(&refused);
        }
        if out.is_empty() {
            return Err(GetError::Unreadable { reason });
        }
        if c.plain {
            return Ok(out);
        }
        lock(&c.held)
            .entry(holder)
            .or_default()
            .extend(out.iter().map(|d| d.id.clone()));
        self.start_renewer();
        Ok(out)
    }

    /// Moves refused entries (held by this consumer) to the queue's dead letters, with the
    /// reason: out of the queue for good, kept for inspection ([`Self::dead_letters`]).
    fn set_aside(&self, refused: &[(Entry, String)]) -> Result<i64, String> {
        let c = &self.core;
        let mut refused: Vec<&(Entry, String)> = refused.iter().collect();
        refused.sort_by_key(|(e, _)| id_key(&e.id));
        if c.plain {
            // Already out of the list: only copied aside.
            return c.redis.run(COMMAND_TIMEOUT, |con| {
                let mut p = redis::pipe();
                for (e, why) in &refused {
                    p.cmd("XADD")
                        .arg(&c.dead)
                        .arg(&["MAXLEN", "~", "10000", "*", "id", ""])
                        .arg("v")
                        .arg(&e.value)
                        .arg("h")
                        .arg(&e.tag)
                        .arg("reason")
                        .arg(why)
                        .ignore();
                }
                p.query::<()>(con).map(|()| refused.len() as i64)
            });
        }
        c.redis.run(COMMAND_TIMEOUT, |con| {
            let script = scripts::dead_letter();
            let mut inv = script.key(&c.stream);
            inv.key(&c.dead)
                .key(&c.room)
                .key(&c.n)
                .key(&c.done)
                .key(&c.meta);
            inv.arg("mproc").arg(&c.consumer);
            for (e, why) in &refused {
                inv.arg(&e.id).arg(&e.value).arg(&e.tag).arg(why);
            }
            inv.invoke(con)
        })
    }

    /// Up to `max` of the entries consumers refused (a failed HMAC check, bytes that do not
    /// decode, more bytes than a consumer's limit), oldest first: they left the queue and
    /// wait here for inspection. At most the last 10,000 are kept.
    pub fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, Unavailable> {
        let dead = &self.core.dead;
        let v: Value = self
            .core
            .redis
            .run(COMMAND_TIMEOUT, |c| {
                redis::cmd("XRANGE")
                    .arg(dead)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(max)
                    .query(c)
            })
            .map_err(|reason| Unavailable { reason })?;
        Ok(crate::reply::parse_dead(&v))
    }

    /// Acknowledges `ids` (held by this consumer); with `done`, also counts them done.
    fn acknowledge(&self, ids: &[String], done: bool) -> Result<i64, String> {
        self.core.acknowledge(ids, done)
    }

    /// Acknowledges the messages this thread took and still holds now, rather than at its
    /// next `get`: they will not be delivered again. Returns how many (a message whose lease
    /// lapsed and which went to another consumer is not counted).
    pub fn ack(&self) -> Result<usize, Unavailable> {
        let holder = self.holder();
        let mut ids: Vec<String> = if self.core.manual {
            // A manual queue's messages are acknowledged one by one: only those passed to
            // `ack_items_later` are due.
            std::mem::take(&mut *lock(&self.core.later))
        } else {
            lock(&self.core.held)
                .remove(&holder)
                .map(Vec::from)
                .unwrap_or_default()
        };
        sort_ids(&mut ids);
        if ids.is_empty() {
            return Ok(0);
        }
        match self.acknowledge(&ids, false) {
            Ok(n) => Ok(n as usize),
            Err(reason) => {
                self.keep(holder, ids);
                Err(Unavailable { reason })
            }
        }
    }

    /// Closes the queue for every user: `put` fails from now on; `get` drains what is left,
    /// then returns [`GetError::Closed`] (a consumer blocked in `get` sees it within 200 ms).
    pub fn close(&self) -> Result<(), Unavailable> {
        let c = &self.core;
        c.redis
            .run(COMMAND_TIMEOUT, |con| {
                scripts::close()
                    .key(&c.meta)
                    .key(&c.room)
                    .invoke::<i64>(con)
            })
            .map(drop)
            .map_err(|reason| Unavailable { reason })
    }

    fn state(&self) -> Result<(usize, bool), Unavailable> {
        let c = &self.core;
        let v: Value = c
            .redis
            .run(COMMAND_TIMEOUT, |con| match c.plain {
                true => plain::state().key(&c.meta).key(&c.list).invoke(con),
                false => scripts::state().key(&c.meta).key(&c.stream).invoke(con),
            })
            .map_err(|reason| Unavailable { reason })?;
        match &v {
            Value::Array(a) if a.len() == 2 => {
                let n = int_of(&a[0]).unwrap_or(0).max(0) as usize;
                Ok((n, int_of(&a[1]) == Some(1)))
            }
            _ => Err(Unavailable {
                reason: self.gone(),
            }),
        }
    }

    /// How many messages wait to be taken (leased ones not counted).
    pub fn len(&self) -> Result<usize, Unavailable> {
        self.state().map(|s| s.0)
    }

    /// Whether no message waits to be taken.
    pub fn is_empty(&self) -> Result<bool, Unavailable> {
        self.len().map(|n| n == 0)
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> Result<bool, Unavailable> {
        self.state().map(|s| s.1)
    }

    /// A new handle on the same queue: a consumer of its own (its own leases).
    pub fn try_clone(&self) -> Result<RedisQueue<T>, RedisError> {
        let mut opts = self.core.redis.queue(&self.core.name);
        opts.manual_ack = self.core.manual;
        opts.at_most_once = self.core.plain;
        let core = opts.attach_named(&self.core.type_name, self.core.joinable, false)?;
        Ok(RedisQueue::with_codec(core, self.encode, self.decode))
    }

    fn start_renewer(&self) {
        let mut r = lock(&self.renewer);
        if r.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(&self.core);
        let every = self.core.lease / 3;
        let spawned = std::thread::Builder::new()
            .name("mproc-redis-lease".into())
            .spawn(move || renew_loop(weak, rx, every));
        // Without the thread (out of threads), leases are not renewed: a consumer slower than
        // its lease has its message delivered twice, which at-least-once allows.
        if let Ok(h) = spawned {
            *r = Some((tx, h));
        }
    }
}

fn renew_loop(core: Weak<Core>, stop: mpsc::Receiver<()>, every: Duration) {
    loop {
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(c) = core.upgrade() else { return };
        let ids: Vec<String> = lock(&c.held).values().flatten().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let lost: Result<Vec<String>, String> = c.redis.run(COMMAND_TIMEOUT, |con| {
            scripts::renew()
                .key(&c.stream)
                .arg("mproc")
                .arg(&c.consumer)
                .arg(&ids)
                .invoke(con)
        });
        if let Ok(lost) = lost
            && !lost.is_empty()
        {
            for q in lock(&c.held).values_mut() {
                q.retain(|id| !lost.contains(id));
            }
        }
    }
}

impl<T> Drop for RedisQueue<T> {
    fn drop(&mut self) {
        if let Some((tx, h)) = lock(&self.renewer).take() {
            drop(tx);
            let _ = h.join();
        }
        // What was taken was handed to the program: acknowledge it, unless the thread is
        // unwinding from a panic (then the messages are delivered again after their lease).
        // A joinable or manual queue's messages wait for `task_done` or `ack_item`: theirs
        // lapse and are redelivered.
        let c = &self.core;
        let owed = c.room_owed.swap(0, Ordering::Relaxed);
        if owed > 0 {
            // Best effort: producers waiting for room look again every 200 ms anyway.
            let _ = c.redis.run(COMMAND_TIMEOUT, |con| {
                redis::pipe()
                    .rpush(&c.room, owed)
                    .ltrim(&c.room, -64, -1)
                    .query::<()>(con)
            });
        }
        // Acknowledgements the program asked for (`ack_items_later`) are sent in any case.
        let mut later = std::mem::take(&mut *lock(&c.later));
        if !later.is_empty() {
            sort_ids(&mut later);
            let _ = c.acknowledge(&later, false);
        }
        if std::thread::panicking() || c.manual {
            return;
        }
        let ids: Vec<String> = lock(&c.held).drain().flat_map(|(_, q)| q).collect();
        if !ids.is_empty() {
            let _ = c.acknowledge(&ids, false);
        }
    }
}

/// A stream id `MS-SEQ` as numbers, for sorting (a malformed one sorts first).
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Puts ids in stream order, as the acknowledging scripts expect them.
fn sort_ids(ids: &mut [String]) {
    ids.sort_by_key(|id| id_key(id));
}

/// How late past a caller's deadline a reply may come before the call fails as
/// `Unavailable`: a server that stopped answering (paused, partitioned) costs a call with a
/// timeout at most this much more.
const GRACE: Duration = Duration::from_secs(1);

/// How long to wait for a reply: until `GRACE` past `deadline`, or [`COMMAND_TIMEOUT`]
/// without one.
fn reply_timeout(deadline: Option<Instant>) -> Duration {
    match deadline {
        None => COMMAND_TIMEOUT,
        Some(d) => (d.saturating_duration_since(Instant::now()) + GRACE).min(COMMAND_TIMEOUT),
    }
}

/// How long the next blocking call may wait: at most [`MAX_BLOCK`], and not past
/// `deadline` (`None`: it passed).
fn block_for(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(MAX_BLOCK),
        Some(d) => {
            let left = d.checked_duration_since(Instant::now())?;
            (!left.is_zero()).then(|| left.min(MAX_BLOCK))
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay valid if a holder panicked: carry on with them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`RedisQueue`] whose consumers call [`task_done`](Self::task_done) for each message, so
/// a producer can [`join`](Self::join) until all are processed: Python's `JoinableQueue`.
///
/// Here a message is acknowledged by `task_done` (from any thread of the handle), not by the
/// next `get`: a consumer that dies before calling it has the message delivered again after
/// its lease, and the count stays right (a message is counted done once, by the consumer
/// that holds it).
pub struct RedisJoinableQueue<T>(RedisQueue<T>);

impl<T> std::fmt::Debug for RedisJoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisJoinableQueue").field(&self.0).finish()
    }
}

impl<T> std::ops::Deref for RedisJoinableQueue<T> {
    type Target = RedisQueue<T>;
    fn deref(&self) -> &RedisQueue<T> {
        &self.0
    }
}

impl<T: Serialize + DeserializeOwned> RedisJoinableQueue<T> {
    /// Marks the oldest message this handle took and has not marked done as processed.
    /// [`TaskDoneError::TooManyCalls`] if it holds none. A message whose lease lapsed and
    /// went to another consumer is that consumer's to count: `Ok` without counting.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        let c = &self.0.core;
        let Some(id) = lock(&c.held).get_mut(&None).and_then(|q| q.pop_front()) else {
            return Err(TaskDoneError::TooManyCalls);
        };
        match self.0.acknowledge(std::slice::from_ref(&id), true) {
            Ok(_) => Ok(()),
            Err(reason) => {
                lock(&c.held).entry(None).or_default().push_front(id);
                Err(TaskDoneError::Unavailable { reason })
            }
        }
    }

    /// Messages put and not yet marked done.
    pub fn unfinished_tasks(&self) -> Result<u64, Unavailable> {
        let n = &self.0.core.n;
        let v: Option<i64> = self
            .0
            .core
            .redis
            .run(COMMAND_TIMEOUT, |c| redis::cmd("GET").arg(n).query(c))
            .map_err(|reason| Unavailable { reason })?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Waits until every message put so far has been marked done.
    pub fn join(&self) -> Result<(), Unavailable> {
        self.join_until(None).map(drop)
    }

    /// Waits at most `timeout`; whether every message was done.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, Unavailable> {
        self.join_until(Some(Instant::now() + timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<bool, Unavailable> {
        let c = &self.0.core;
        loop {
            if self.unfinished_tasks()? == 0 {
                return Ok(true);
            }
            let Some(block) = block_for(deadline) else {
                return Ok(false);
            };
            // The done token is put back for the next joiner while the count is still 0.
            let woke: i64 = c
                .redis
                .run(block + GRACE, |con| {
                    let got: Value = redis::cmd("BLPOP")
                        .arg(&c.done)
                        .arg(block.as_secs_f64())
                        .query(con)?;
                    if got == Value::Nil {
                        return Ok(0);
                    }
                    scripts::pass_on()
                        .key(&c.n)
                        .key(&c.done)
                        .arg("zero")
                        .invoke(con)
                })
                .map_err(|reason| Unavailable { reason })?;
            if woke == 1 {
                return Ok(true);
            }
        }
    }
}
