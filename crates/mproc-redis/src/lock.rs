//! `RedisLock`: a lease with a fencing token, renewed while held.
//!
//! Keys (`K` = `PREFIX:{NAME}`): `K:owner` holds the holder's token and expires with its
//! lease; `K:held` holds it too, without expiry, until a release; `K:fence` counts
//! acquisitions; `K:dirty` marks a lock whose holder lost its lease while holding it, until
//! someone calls `make_consistent`; `K:free` is a wake-up token for waiters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Script, Value};

use crate::conn::{COMMAND_TIMEOUT, Redis, check_name, identity};
use crate::error::RedisError;
use crate::reply::int_of;

fn acquire() -> Script {
    Script::new(
        r"
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -2 then return {0, pttl} end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('SET', KEYS[4], '1') end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[1])
return {1, f, redis.call('EXISTS', KEYS[4])}
",
    )
}

fn release() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[3], 1)
redis.call('PEXPIRE', KEYS[3], 1000)
return 1
",
    )
}

fn renew() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
}

fn consistent() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
return 1
",
    )
}

/// Why acquiring or releasing a [`RedisLock`] did not simply succeed; `G` is the guard, as in
/// mproc's shared-memory `LockError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLockError<G> {
    /// Acquired; but a previous holder lost its lease while holding the lock (it died, hung,
    /// or lost the server), now or earlier, and no one has called `make_consistent` since:
    /// what the lock protects may be half-updated.
    #[error("lock acquired, but a previous holder lost its lease while holding it")]
    OwnerDied(G),
    /// `try_lock` found the lock held.
    #[error("lock is held")]
    WouldBlock,
    /// `lock_timeout` gave up.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// `release`: this guard's lease had lapsed (the renewals did not reach the server in
    /// time), so another holder may have had the lock meanwhile.
    #[error("the lease lapsed before the release: the lock was no longer held")]
    NotOwner,
    /// The server could not be reached.
    #[error("Redis unavailable: {reason}")]
    Unavailable {
        /// What the client reported.
        reason: String,
    },
}

impl<G> RedisLockError<G> {
    /// The guard, also when a previous holder died (`Ok` whenever the lock is held).
    pub fn recover(self) -> Result<G, RedisLockError<()>> {
        match self {
            RedisLockError::OwnerDied(g) => Ok(g),
            RedisLockError::WouldBlock => Err(RedisLockError::WouldBlock),
            RedisLockError::Timeout => Err(RedisLockError::Timeout),
            RedisLockError::NotOwner => Err(RedisLockError::NotOwner),
            RedisLockError::Unavailable { reason } => Err(RedisLockError::Unavailable { reason }),
        }
    }
}

/// A lock shared through a Redis server by processes on any host: a **lease** (30 s unless
/// set with [`with_lease`](Self::with_lease)) renewed by a background thread while a guard
/// lives, with a **fencing token** that grows with every acquisition.
///
/// A holder that dies keeps the lock until its lease lapses; the next holder then gets
/// [`RedisLockError::OwnerDied`] with the guard, as with a shared-memory `Lock` whose owner
/// died, until one of them calls [`RedisLockGuard::make_consistent`]. A holder that was only
/// paused past its lease (stopped, swapping, cut off) may still believe it holds the lock:
/// storage it writes to should refuse writes carrying a fence older than one it has seen
/// ([`RedisLockGuard::fence`]).
#[derive(Debug, Clone)]
pub struct RedisLock {
    redis: Redis,
    name: String,
    keys: [String; 5],
    lease: Duration,
}

/// A held [`RedisLock`]; released when dropped.
#[derive(Debug)]
pub struct RedisLockGuard<'a> {
    lock: &'a RedisLock,
    token: String,
    fence: u64,
    lost: Arc<AtomicBool>,
    renewer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Redis {
    /// The lock called `name` (nothing is written until it is first acquired).
    pub fn lock(&self, name: &str) -> Result<RedisLock, RedisError> {
        check_name(name)?;
        let keys = ["owner", "fence", "held", "dirty", "free"].map(|p| self.key(name, p));
        Ok(RedisLock {
            redis: self.clone(),
            name: name.to_string(),
            keys,
            lease: Duration::from_secs(30),
        })
    }
}

enum Try {
    Got(u64, bool, String),
    Held(Duration),
}

impl RedisLock {
    /// The same lock with another lease (at least 30 ms): how long the lock stays taken after
    /// its holder dies. The guard renews it every third of it.
    pub fn with_lease(mut self, lease: Duration) -> RedisLock {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the lock.
    pub fn lock(&self) -> Result<RedisLockGuard<'_>, RedisLockError<RedisLockGuard<'_>>> {
        self.acquire(Some(None))
    }

    /// Takes the lock if it is free now ([`RedisLockError::WouldBlock`] otherwise).
    pub fn try_lock(&self) -> Result<RedisLockGuard<'_>, RedisLockError<RedisLockGuard<'_>>> {
        self.acquire(None)
    }

    /// Waits at most `timeout` for the lock.
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<RedisLockGuard<'_>, RedisLockError<RedisLockGuard<'_>>> {
        self.acquire(Some(Some(Instant::now() + timeout)))
    }

    fn try_once(&self) -> Result<Try, String> {
        let token = identity();
        let k = &self.keys;
        let v: Value = self.redis.run(COMMAND_TIMEOUT, |c| {
            acquire()
                .key(&k[0])
                .key(&k[1])
                .key(&k[2])
                .key(&k[3])
                .arg(&token)
                .arg(self.lease.as_millis() as u64)
                .invoke(c)
        })?;
        let Value::Array(a) = v else {
            return Err("unexpected reply to the acquire script".into());
        };
        let n = |i: usize| a.get(i).and_then(int_of).unwrap_or(0);
        Ok(if n(0) == 1 {
            Try::Got(n(1) as u64, n(2) == 1, token)
        } else {
            // -1: a holder's key without expiry (someone else wrote it): wait in slices.
            Try::Held(Duration::from_millis(n(1).max(1) as u64))
        })
    }

    fn acquire(
        &self,
        wait: Option<Option<Instant>>,
    ) -> Result<RedisLockGuard<'_>, RedisLockError<RedisLockGuard<'_>>> {
        let unavailable = |reason| RedisLockError::Unavailable { reason };
        loop {
            let left = match self.try_once().map_err(unavailable)? {
                Try::Got(fence, dirty, token) => {
                    let guard = self.guard(token, fence);
                    return if dirty {
                        Err(RedisLockError::OwnerDied(guard))
                    } else {
                        Ok(guard)
                    };
                }
                Try::Held(left) => left,
            };
            let Some(deadline) = wait else {
                return Err(RedisLockError::WouldBlock);
            };
            let mut block = left.min(Duration::from_millis(200));
            if let Some(d) = deadline {
                match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => block = block.min(l),
                    _ => return Err(RedisLockError::Timeout),
                }
            }
            let free = &self.keys[4];
            self.redis
                .run(block + COMMAND_TIMEOUT, |c| {
                    redis::cmd("BLPOP")
                        .arg(free)
                        .arg(block.as_secs_f64().max(0.001))
                        .query::<Value>(c)
                })
                .map_err(unavailable)?;
        }
    }

    fn guard(&self, token: String, fence: u64) -> RedisLockGuard<'_> {
        let lost = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let (redis, owner, lease) = (self.redis.clone(), self.keys[0].clone(), self.lease);
        let (tok, flag) = (token.clone(), lost.clone());
        let renewer = std::thread::Builder::new()
            .name("mproc-redis-lock".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(lease / 3) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let r: Result<i64, String> = redis.run(COMMAND_TIMEOUT, |c| {
                        renew()
                            .key(&owner)
                            .arg(&tok)
                            .arg(lease.as_millis() as u64)
                            .invoke(c)
                    });
                    if r == Ok(0) {
                        flag.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            })
            .ok()
            .map(|h| (tx, h));
        RedisLockGuard {
            lock: self,
            token,
            fence,
            lost,
            renewer,
        }
    }
}

impl RedisLockGuard<'_> {
    /// This acquisition's fencing token: larger than that of every earlier acquisition of
    /// the lock.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Whether a renewal found the lease gone (the lock may be someone else's now).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Declares what the lock protects consistent again: later holders no longer get
    /// `OwnerDied`.
    pub fn make_consistent(&self) -> Result<(), RedisLockError<()>> {
        let k = &self.lock.keys;
        self.as_owner(consistent(), &[&k[0], &k[3]], &self.token)
    }

    /// Runs an owner-checked script (it returns 1 if `token` still owns the lock, else 0).
    fn as_owner(
        &self,
        script: redis::Script,
        keys: &[&String],
        token: &str,
    ) -> Result<(), RedisLockError<()>> {
        let n: i64 = self
            .lock
            .redis
            .run(COMMAND_TIMEOUT, |c| {
                let mut inv = script.prepare_invoke();
                for k in keys {
                    inv.key(*k);
                }
                inv.arg(token).invoke(c)
            })
            .map_err(|reason| RedisLockError::Unavailable { reason })?;
        if n == 1 {
            Ok(())
        } else {
            Err(RedisLockError::NotOwner)
        }
    }

    /// Releases the lock, reporting a lease that lapsed before it
    /// ([`RedisLockError::NotOwner`]).
    pub fn release(mut self) -> Result<(), RedisLockError<()>> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<(), RedisLockError<()>> {
        if let Some((tx, h)) = self.renewer.take() {
            drop(tx);
            let _ = h.join();
        }
        if self.token.is_empty() {
            return Ok(());
        }
        let token = std::mem::take(&mut self.token);
        let k = &self.lock.keys;
        self.as_owner(release(), &[&k[0], &k[2], &k[4]], &token)
    }
}

impl Drop for RedisLockGuard<'_> {
    fn drop(&mut self) {
        // A release that fails leaves the lock to its lease, as a dead holder's.
        let _ = self.release_now();
    }
}
