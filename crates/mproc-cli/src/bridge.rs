//! `mproc bridge FROM TO`: forwards every message of one queue to another, so a local
//! pipeline reaches another host without changing its producers or consumers.
//!
//! Endpoints are `shm:NAME` (an existing `Queue<T>` in shared memory) and
//! `redis://[user:password@]host[:port][/db]?queue=NAME[&capacity=N][&lease_ms=M][&prefix=P]`
//! (also `rediss://`). Messages travel as the bytes their queue's codec wrote, so a typed
//! consumer of the destination reads what a typed producer of the source put; the queues'
//! message types must have the same name. Closing the source closes the destination once
//! everything before the close has been forwarded.

use std::time::Duration;

use mproc_queue::{EncodedQueue, GetError, PutError};
use mproc_redis::{Redis, RedisQueue};

enum End {
    Shm(Box<EncodedQueue>),
    Redis(RedisQueue<Vec<u8>>),
}

/// A parsed endpoint, before it is opened.
enum Spec {
    Shm(String),
    Redis {
        url: String,
        queue: String,
        capacity: usize,
        lease: Duration,
        prefix: Option<String>,
    },
}

fn parse(s: &str) -> Result<Spec, String> {
    if let Some(name) = s.strip_prefix("shm:") {
        return Ok(Spec::Shm(name.trim_start_matches('/').to_string()));
    }
    if !(s.starts_with("redis://") || s.starts_with("rediss://") || s.starts_with("redis+unix://"))
    {
        return Err(format!(
            "{}: expected shm:NAME or redis://HOST/?queue=NAME",
            mproc_redis_redact(s)
        ));
    }
    let (base, query) = s.split_once('?').unwrap_or((s, ""));
    let (mut queue, mut capacity, mut lease, mut prefix) = (None, 1024, 30_000, None);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}={v:?} is not a number"))
        };
        match k {
            "queue" => queue = Some(v.to_string()),
            "capacity" => capacity = num(v)? as usize,
            "lease_ms" => lease = num(v)?,
            "prefix" => prefix = Some(v.to_string()),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(Spec::Redis {
        url,
        queue: queue.ok_or("a redis endpoint needs ?queue=NAME")?,
        capacity,
        lease: Duration::from_millis(lease),
        prefix,
    })
}

/// `url` without its password.
fn mproc_redis_redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Opens a Redis endpoint for messages of `type_name` (created if `create`).
fn open_redis(spec: Spec, type_name: &str, create: bool) -> Result<End, String> {
    let Spec::Redis {
        url,
        queue,
        capacity,
        lease,
        prefix,
    } = spec
    else {
        return Err("not a redis endpoint".into());
    };
    let mut b = Redis::builder(&url);
    if let Some(p) = prefix {
        b = b.prefix(p);
    }
    let redis = b.connect().map_err(|e| e.to_string())?;
    let opts = redis.queue(&queue).capacity(capacity).lease(lease);
    let q = if create {
        opts.create_encoded(type_name)
    } else {
        opts.open_encoded(type_name)
    };
    q.map(End::Redis).map_err(|e| format!("queue {queue}: {e}"))
}

fn open_shm(name: &str) -> Result<EncodedQueue, String> {
    EncodedQueue::open(name).map_err(|e| format!("shm:{name}: {e}"))
}

impl End {
    fn type_name(&self) -> Option<&str> {
        match self {
            End::Shm(q) => Some(q.type_name()),
            End::Redis(_) => None,
        }
    }

    fn get(&self, buf: &mut Vec<u8>) -> Result<(), GetError> {
        let wait = Duration::from_millis(200);
        match self {
            End::Shm(q) => q.get_into(buf, Some(wait)).map(drop),
            End::Redis(q) => {
                *buf = q.get_timeout(wait)?;
                Ok(())
            }
        }
    }

    fn put(&self, bytes: Vec<u8>) -> Result<(), String> {
        let r = match self {
            End::Shm(q) => q.put(&bytes, None).map_err(|e| e.map(|_| ())),
            End::Redis(q) => q.put(bytes).map_err(|e| e.map(|_| ())),
        };
        r.map_err(|e: PutError<()>| e.to_string())
    }

    fn close(&self) -> Result<(), String> {
        match self {
            End::Shm(q) => {
                q.close();
                Ok(())
            }
            End::Redis(q) => q.close().map_err(|e| e.to_string()),
        }
    }
}

/// Runs the bridge until the source is closed and drained, or `count` messages went over.
pub fn bridge(from: &str, to: &str, count: Option<u64>) -> Result<(), String> {
    let (src, dst) = (parse(from)?, parse(to)?);
    let (src, dst) = match (src, dst) {
        (Spec::Shm(a), Spec::Shm(b)) => {
            let (a, b) = (open_shm(&a)?, open_shm(&b)?);
            if a.type_name() != b.type_name() {
                return Err(format!(
                    "the queues hold different types: {} and {}",
                    a.type_name(),
                    b.type_name()
                ));
            }
            (End::Shm(Box::new(a)), End::Shm(Box::new(b)))
        }
        (Spec::Shm(a), r) => {
            let a = End::Shm(Box::new(open_shm(&a)?));
            let t = a.type_name().unwrap_or_default().to_string();
            (a, open_redis(r, &t, true)?)
        }
        (r, Spec::Shm(b)) => {
            let b = End::Shm(Box::new(open_shm(&b)?));
            let t = b.type_name().unwrap_or_default().to_string();
            (open_redis(r, &t, false)?, b)
        }
        (Spec::Redis { .. }, Spec::Redis { .. }) => {
            return Err("a bridge has a shm: end (Redis to Redis: use Redis itself)".into());
        }
    };
    let mut moved = 0u64;
    let mut skipped = 0u64;
    let mut buf = Vec::new();
    let mut warned = false;
    while count.is_none_or(|c| moved < c) {
        match src.get(&mut buf) {
            Ok(()) => {
                dst.put(std::mem::take(&mut buf))
                    .map_err(|e| format!("forwarding message {}: {e}", moved + 1))?;
                moved += 1;
                warned = false;
            }
            Err(GetError::Empty | GetError::Timeout) => {}
            Err(GetError::Closed) => {
                dst.close()?;
                break;
            }
            Err(GetError::Unreadable { reason }) => {
                skipped += 1;
                eprintln!("mproc bridge: skipped a message: {reason}");
            }
            Err(GetError::Unavailable { reason }) => {
                if !warned {
                    eprintln!("mproc bridge: source unavailable, retrying: {reason}");
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    println!(
        "forwarded {moved} messages from {} to {}{}",
        mproc_redis_redact(from),
        mproc_redis_redact(to),
        if skipped > 0 {
            format!(" ({skipped} unreadable skipped)")
        } else {
            String::new()
        }
    );
    Ok(())
}
