//! A queue chosen by URL: shared memory on this host, or a Redis server.

use mproc_queue::{MessageQueue, Queue};
use mproc_segment::SegmentError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why [`open_queue`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueUrlError {
    /// The URL is not one [`open_queue`] reads, or a parameter is malformed.
    #[error("queue URL {url:?}: {reason}")]
    Invalid {
        /// The URL as given (a password in it is not repeated: see [`redact`]).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Creating or opening the shared-memory queue failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// Connecting, or creating or opening the Redis queue, failed.
    #[cfg(feature = "redis")]
    #[error(transparent)]
    Redis(#[from] mproc_redis::RedisError),
}

/// `url` with the password of its user-info, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(p) => p,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A queue of `T` where `url` says, created if it does not exist (or opened, if it does
/// with the same type), behind the [`MessageQueue`] trait: a program's producers and
/// consumers are written once, and a setting moves the queue.
///
/// - `shm:NAME?capacity=N`: a shared-memory [`Queue`] on this host (capacity 1024 unless
///   given).
/// - `redis://[user:password@]host[:port][/db]?queue=NAME&capacity=N&lease_ms=M&prefix=P`
///   (also `rediss://` with the `tls` feature of `mproc-redis`, and `redis+unix:///path`):
///   a `RedisQueue`, with the `redis` feature. The auth key comes from `MPROC_AUTHKEY`.
///   `&delivery=at_most_once` makes it at most once (a list, no leases) when creating it.
///
/// ```
/// let name = format!("mproc-doc-url-{}", std::process::id());
/// let q = mproc::open_queue::<String>(&format!("shm:{name}?capacity=8"))?;
/// q.put("hello".into()).unwrap();
/// assert_eq!(q.get().unwrap(), "hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open_queue<T>(url: &str) -> Result<Box<dyn MessageQueue<T> + Send + Sync>, QueueUrlError>
where
    T: Serialize + DeserializeOwned + 'static,
{
    let invalid = |reason: String| QueueUrlError::Invalid {
        url: redact(url),
        reason,
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("parameter {pair:?} has no value")))?;
        params.push((k, v));
    }
    let take = |params: &mut Vec<(&str, &str)>, key: &str| -> Option<String> {
        let i = params.iter().position(|(k, _)| *k == key)?;
        Some(params.remove(i).1.to_string())
    };
    let number = |v: Option<String>, key: &str, default: u64| -> Result<u64, QueueUrlError> {
        v.map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| invalid(format!("{key}={v:?} is not a number")))
        })
    };
    if let Some(name) = base.strip_prefix("shm:") {
        let name = name.trim_start_matches('/');
        let capacity = number(take(&mut params, "capacity"), "capacity", 1024)? as usize;
        if let Some((k, _)) = params.first() {
            return Err(invalid(format!("unknown parameter {k:?} for a shm: queue")));
        }
        return Ok(Box::new(shm_queue::<T>(name, capacity)?));
    }
    #[cfg(feature = "redis")]
    if ["redis://", "rediss://", "redis+unix://"]
        .iter()
        .any(|s| base.starts_with(s))
    {
        let name = take(&mut params, "queue")
            .ok_or_else(|| invalid("a redis queue URL needs ?queue=NAME".into()))?;
        let capacity = number(take(&mut params, "capacity"), "capacity", 1024)? as usize;
        let lease = number(take(&mut params, "lease_ms"), "lease_ms", 30_000)?;
        let prefix = take(&mut params, "prefix");
        let at_most_once = match take(&mut params, "delivery").as_deref() {
            None | Some("at_least_once") => false,
            Some("at_most_once") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "delivery={other}: expected at_least_once or at_most_once"
                )));
            }
        };
        let mut builder = mproc_redis::Redis::builder(&rebuild(base, &params));
        if let Some(p) = prefix {
            builder = builder.prefix(p);
        }
        let redis = builder.connect()?;
        let mut opts = redis
            .queue(&name)
            .capacity(capacity)
            .lease(std::time::Duration::from_millis(lease));
        if at_most_once {
            opts = opts.at_most_once();
        }
        let q = opts.create::<T>()?;
        return Ok(Box::new(q));
    }
    Err(invalid(
        "expected shm:NAME, or redis://, rediss:// or redis+unix:// (with the `redis` feature)"
            .into(),
    ))
}

/// `base` with the query parameters left for the client.
#[cfg(feature = "redis")]
fn rebuild(base: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return base.to_string();
    }
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{base}?{}", q.join("&"))
}

/// Opens the shared-memory queue `name`, or creates it.
fn shm_queue<T: Serialize + DeserializeOwned>(
    name: &str,
    capacity: usize,
) -> Result<Queue<T>, SegmentError> {
    match Queue::open(name) {
        Err(SegmentError::NotFound { .. }) => match Queue::create(name, capacity) {
            Err(SegmentError::AlreadyExists { .. }) => Queue::open(name),
            r => r,
        },
        r => r,
    }
}
