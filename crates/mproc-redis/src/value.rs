//! `RedisValue<T>` (any serde value) and `RedisAtomic<N>` (a number with `fetch_add`), each
//! a hash `PREFIX:{NAME}:value` with fields `type` (the element type's name) and `v`.

use mproc_queue::codec;
use redis::{Script, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

use crate::auth::TAG_LEN;
use crate::conn::{COMMAND_TIMEOUT, Redis, check_name};
use crate::error::RedisError;
use crate::reply::{int_of, string_of};

/// What the HMAC of a value is bound to (besides its name).
const DOMAIN: &str = "mproc-redis value v1";

/// KEYS: hash. ARGV: type, initial. 1 if created, else the existing type (or "" if none).
fn create_script() -> Script {
    Script::new(
        r"
local t = redis.call('HGET', KEYS[1], 'type')
if t then return t end
redis.call('HSET', KEYS[1], 'type', ARGV[1], 'v', ARGV[2])
return 1
",
    )
}

/// KEYS: hash. ARGV: mode (`set`, `swap`, `cas`, `casf`, `add`, `addf`), a, b.
/// Returns `{status, old}`: status 1 done, 0 compare failed, -2 missing.
fn op_script() -> Script {
    Script::new(
        r"
local old = redis.call('HGET', KEYS[1], 'v')
if not old then return {-2, ''} end
local m = ARGV[1]
if m == 'set' or m == 'swap' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2])
elseif m == 'cas' then
  if old ~= ARGV[2] then return {0, old} end
  redis.call('HSET', KEYS[1], 'v', ARGV[3])
elseif m == 'casf' then
  if tonumber(old) ~= tonumber(ARGV[2]) then return {0, old} end
  redis.call('HSET', KEYS[1], 'v', ARGV[3])
elseif m == 'add' then
  redis.call('HINCRBY', KEYS[1], 'v', ARGV[2])
elseif m == 'addf' then
  redis.call('HINCRBYFLOAT', KEYS[1], 'v', ARGV[2])
end
return {1, old}
",
    )
}

fn unavailable(reason: String) -> RedisError {
    RedisError::Unavailable { reason }
}

/// The hash of `name`, created with `initial` if `create` and missing; checks its type.
fn attach(
    redis: &Redis,
    name: &str,
    type_name: &str,
    create: Option<Vec<u8>>,
) -> Result<String, RedisError> {
    check_name(name)?;
    let key = redis.key(name, "value");
    let found: Value = redis
        .run(COMMAND_TIMEOUT, |c| match &create {
            Some(initial) => create_script()
                .key(&key)
                .arg(type_name)
                .arg(initial)
                .invoke(c),
            None => redis::cmd("HGET").arg(&key).arg("type").query(c),
        })
        .map_err(unavailable)?;
    if int_of(&found) == Some(1) && create.is_some() {
        return Ok(key);
    }
    match string_of(&found) {
        None => Err(RedisError::NotFound {
            kind: "value",
            name: name.into(),
        }),
        Some(t) if t != type_name => Err(RedisError::Mismatch {
            name: name.into(),
            what: "type",
            expected: type_name.into(),
            found: t,
        }),
        Some(_) => Ok(key),
    }
}

/// Runs OP: `(status, old bytes)`.
fn op(
    redis: &Redis,
    key: &str,
    mode: &str,
    a: &[u8],
    b: &[u8],
) -> Result<(i64, Vec<u8>), RedisError> {
    let v: Value = redis
        .run(COMMAND_TIMEOUT, |c| {
            op_script().key(key).arg(mode).arg(a).arg(b).invoke(c)
        })
        .map_err(unavailable)?;
    let Value::Array(mut a) = v else {
        return Err(unavailable("unexpected reply to a value operation".into()));
    };
    let old = match a.pop() {
        Some(Value::BulkString(b)) => b,
        _ => Vec::new(),
    };
    let status = a.first().and_then(int_of).unwrap_or(-2);
    if status == -2 {
        return Err(RedisError::NotFound {
            kind: "value",
            name: key.into(),
        });
    }
    Ok((status, old))
}

/// A value of any serde type kept on a Redis server: `get`, `set`, `compare_exchange` and
/// `update`, from processes on any host. With an auth key, the stored bytes carry an
/// HMAC-SHA256 that `get` checks.
#[derive(Debug, Clone)]
pub struct RedisValue<T> {
    redis: Redis,
    name: String,
    key: String,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> RedisValue<T> {
    /// Creates the value `name` holding `initial`, or opens it (keeping what it holds) if it
    /// exists with the same type.
    pub fn create(redis: &Redis, name: &str, initial: &T) -> Result<RedisValue<T>, RedisError> {
        let bytes = RedisValue::<T>::seal(redis, name, initial)?;
        let key = attach(redis, name, std::any::type_name::<T>(), Some(bytes))?;
        Ok(RedisValue {
            redis: redis.clone(),
            name: name.into(),
            key,
            _t: PhantomData,
        })
    }

    /// Opens the existing value `name`.
    pub fn open(redis: &Redis, name: &str) -> Result<RedisValue<T>, RedisError> {
        let key = attach(redis, name, std::any::type_name::<T>(), None)?;
        Ok(RedisValue {
            redis: redis.clone(),
            name: name.into(),
            key,
            _t: PhantomData,
        })
    }

    fn seal(redis: &Redis, name: &str, v: &T) -> Result<Vec<u8>, RedisError> {
        let mut body = Vec::new();
        codec::encode_into(v, &mut body).map_err(|e| RedisError::Invalid {
            reason: format!("value could not be encoded: {e}"),
        })?;
        Ok(match redis.authkey() {
            Some(k) => {
                let mut out = k.sign(DOMAIN, name, &body);
                out.extend_from_slice(&body);
                out
            }
            None => body,
        })
    }

    fn open_bytes(&self, bytes: &[u8]) -> Result<T, RedisError> {
        let body = match self.redis.authkey() {
            Some(k) => {
                let ok = bytes.len() >= TAG_LEN
                    && k.verify(DOMAIN, &self.name, &bytes[TAG_LEN..], &bytes[..TAG_LEN]);
                if !ok {
                    return Err(RedisError::Unreadable {
                        reason: format!("value {:?} failed its HMAC check", self.name),
                    });
                }
                &bytes[TAG_LEN..]
            }
            None => bytes,
        };
        codec::decode(body).map_err(|e| RedisError::Unreadable {
            reason: format!("value {:?}: {e}", self.name),
        })
    }

    /// The current value.
    pub fn get(&self) -> Result<T, RedisError> {
        let (_, old) = op(&self.redis, &self.key, "get", b"", b"")?;
        self.open_bytes(&old)
    }

    /// Replaces the value.
    pub fn set(&self, v: &T) -> Result<(), RedisError> {
        let bytes = Self::seal(&self.redis, &self.name, v)?;
        op(&self.redis, &self.key, "set", &bytes, b"").map(drop)
    }

    /// Sets `new` if the value is `current` (compared as encoded bytes): `Ok(Ok(()))`, or
    /// `Ok(Err(actual))` with what it held instead.
    pub fn compare_exchange(&self, current: &T, new: &T) -> Result<Result<(), T>, RedisError> {
        let cur = Self::seal(&self.redis, &self.name, current)?;
        let new = Self::seal(&self.redis, &self.name, new)?;
        let (status, old) = op(&self.redis, &self.key, "cas", &cur, &new)?;
        if status == 1 {
            Ok(Ok(()))
        } else {
            self.open_bytes(&old).map(Err)
        }
    }

    /// Applies `f` to the value atomically (a compare-exchange loop: `f` may run more than
    /// once if other processes write meanwhile). Returns `f`'s result from the run that won.
    pub fn update<R>(&self, mut f: impl FnMut(&mut T) -> R) -> Result<R, RedisError> {
        let mut cur = self.get()?;
        loop {
            let mut next = self.get_clone(&cur)?;
            let r = f(&mut next);
            match self.compare_exchange(&cur, &next)? {
                Ok(()) => return Ok(r),
                Err(actual) => cur = actual,
            }
        }
    }

    fn get_clone(&self, v: &T) -> Result<T, RedisError> {
        let mut b = Vec::new();
        codec::encode_into(v, &mut b).map_err(|e| RedisError::Invalid {
            reason: e.to_string(),
        })?;
        codec::decode(&b).map_err(|e| RedisError::Unreadable {
            reason: e.to_string(),
        })
    }

    /// Deletes the value from the server.
    pub fn unlink(self) -> Result<(), RedisError> {
        self.redis
            .run(COMMAND_TIMEOUT, |c| {
                redis::cmd("DEL").arg(&self.key).query::<()>(c)
            })
            .map_err(unavailable)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The numbers a [`RedisAtomic`] holds: `i64` and `f64` (the server's own integer and float
/// arithmetic), stored as decimal text
/// (so `redis-cli HGET` shows them, and the server adds them).
pub trait RedisNumber: sealed::Sealed + Copy + std::fmt::Display + std::str::FromStr {
    /// Whether it is added with `HINCRBYFLOAT`.
    const FLOAT: bool;
}

macro_rules! numbers {
    ($($t:ty => $float:expr),*) => {$(
        impl sealed::Sealed for $t {}
        impl RedisNumber for $t {
            const FLOAT: bool = $float;
        }
    )*};
}
numbers!(i64 => false, f64 => true);

/// A number on a Redis server with atomic `fetch_add`, `swap` and `compare_exchange`: the
/// counterpart of mproc's `AtomicValue`. The server does the arithmetic: an `i64` addition
/// that would overflow fails and leaves the value as it was. Numbers are not signed with the
/// auth key (use a [`RedisValue`] for a value that must be).
#[derive(Debug, Clone)]
pub struct RedisAtomic<N> {
    redis: Redis,
    key: String,
    _n: PhantomData<N>,
}

impl<N: RedisNumber> RedisAtomic<N> {
    /// Creates the number `name` holding `initial`, or opens it if it exists with the same
    /// type.
    pub fn create(redis: &Redis, name: &str, initial: N) -> Result<RedisAtomic<N>, RedisError> {
        let key = attach(
            redis,
            name,
            std::any::type_name::<N>(),
            Some(initial.to_string().into_bytes()),
        )?;
        Ok(RedisAtomic {
            redis: redis.clone(),
            key,
            _n: PhantomData,
        })
    }

    /// Opens the existing number `name`.
    pub fn open(redis: &Redis, name: &str) -> Result<RedisAtomic<N>, RedisError> {
        let key = attach(redis, name, std::any::type_name::<N>(), None)?;
        Ok(RedisAtomic {
            redis: redis.clone(),
            key,
            _n: PhantomData,
        })
    }

    fn parse(&self, b: &[u8]) -> Result<N, RedisError> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| RedisError::Unreadable {
                reason: format!(
                    "{} holds {:?}, not a number",
                    self.key,
                    String::from_utf8_lossy(b)
                ),
            })
    }

    fn op(&self, mode: &str, a: N, b: Option<N>) -> Result<(i64, N), RedisError> {
        let b = b.map(|b| b.to_string()).unwrap_or_default();
        let (status, old) = op(
            &self.redis,
            &self.key,
            mode,
            a.to_string().as_bytes(),
            b.as_bytes(),
        )?;
        Ok((status, self.parse(&old)?))
    }

    /// The current value.
    pub fn load(&self) -> Result<N, RedisError> {
        let (_, old) = op(&self.redis, &self.key, "get", b"", b"")?;
        self.parse(&old)
    }

    /// Replaces the value.
    pub fn store(&self, v: N) -> Result<(), RedisError> {
        self.op("set", v, None).map(drop)
    }

    /// Replaces the value, returning the previous one.
    pub fn swap(&self, v: N) -> Result<N, RedisError> {
        self.op("swap", v, None).map(|r| r.1)
    }

    /// Adds `v`, returning the previous value.
    pub fn fetch_add(&self, v: N) -> Result<N, RedisError> {
        self.op(if N::FLOAT { "addf" } else { "add" }, v, None)
            .map(|r| r.1)
    }

    /// Sets `new` if the value is `current`: `Ok(Ok(previous))` or `Ok(Err(actual))`.
    pub fn compare_exchange(&self, current: N, new: N) -> Result<Result<N, N>, RedisError> {
        let mode = if N::FLOAT { "casf" } else { "cas" };
        let (status, old) = self.op(mode, current, Some(new))?;
        Ok(if status == 1 { Ok(old) } else { Err(old) })
    }
}
