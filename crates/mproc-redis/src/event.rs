//! `RedisEvent`: Python's `Event` through a Redis server.

use std::time::{Duration, Instant};

use mproc_queue::Unavailable;
use redis::Value;

use crate::conn::{COMMAND_TIMEOUT, Redis, check_name};
use crate::error::RedisError;

/// A flag that processes on any host wait for: `set`, `clear`, `is_set`, `wait`. Python's
/// `multiprocessing.Event`, kept on a Redis server (`PREFIX:{NAME}:flag`, with a wake-up
/// token in `PREFIX:{NAME}:wake`). Waiters see a `set` at once, and within 200 ms in the
/// worst case.
#[derive(Debug, Clone)]
pub struct RedisEvent {
    redis: Redis,
    flag: String,
    wake: String,
}

impl Redis {
    /// The event called `name` (unset until someone sets it).
    pub fn event(&self, name: &str) -> Result<RedisEvent, RedisError> {
        check_name(name)?;
        Ok(RedisEvent {
            redis: self.clone(),
            flag: self.key(name, "flag"),
            wake: self.key(name, "wake"),
        })
    }
}

fn unavailable(reason: String) -> Unavailable {
    Unavailable { reason }
}

impl RedisEvent {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<(), Unavailable> {
        self.redis
            .run(COMMAND_TIMEOUT, |c| {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&self.flag)
                    .arg(1)
                    .cmd("DEL")
                    .arg(&self.wake)
                    .cmd("RPUSH")
                    .arg(&self.wake)
                    .arg(1)
                    .cmd("PEXPIRE")
                    .arg(&self.wake)
                    .arg(1000)
                    .query::<()>(c)
            })
            .map_err(unavailable)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<(), Unavailable> {
        self.redis
            .run(COMMAND_TIMEOUT, |c| {
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(&self.flag)
                    .arg(&self.wake)
                    .query::<()>(c)
            })
            .map_err(unavailable)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, Unavailable> {
        self.redis
            .run(COMMAND_TIMEOUT, |c| {
                redis::cmd("EXISTS").arg(&self.flag).query::<bool>(c)
            })
            .map_err(unavailable)
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<(), Unavailable> {
        self.wait_until(None).map(drop)
    }

    /// Waits at most `timeout`; whether the flag is set.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, Unavailable> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool, Unavailable> {
        loop {
            if self.is_set()? {
                return Ok(true);
            }
            let mut block = Duration::from_millis(200);
            if let Some(d) = deadline {
                match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => block = block.min(l),
                    _ => return Ok(false),
                }
            }
            // A waiter that takes the token puts it back for the next one while the flag is
            // still set: one `set` wakes them all, one after another.
            let woke: i64 = self
                .redis
                .run(block + COMMAND_TIMEOUT, |c| {
                    let got: Value = redis::cmd("BLPOP")
                        .arg(&self.wake)
                        .arg(block.as_secs_f64().max(0.001))
                        .query(c)?;
                    if got == Value::Nil {
                        return Ok(0);
                    }
                    crate::scripts::pass_on()
                        .key(&self.flag)
                        .key(&self.wake)
                        .arg("exists")
                        .invoke(c)
                })
                .map_err(unavailable)?;
            if woke == 1 {
                return Ok(true);
            }
        }
    }
}
