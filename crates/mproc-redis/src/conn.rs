//! The connection to a server: a client, a small pool of connections (a blocking call holds
//! one while it waits, so other threads use others), the key prefix and the auth key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Client, Connection, RedisResult};

use crate::auth::AuthKey;
use crate::error::RedisError;

/// Connections kept for reuse; more are opened when threads need them at once.
const POOL_KEEP: usize = 8;

/// How long a plain (non-blocking) command may take before the call fails.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to a Redis server, from which queues, locks, events and values are created
/// or opened. Cheap to clone (the clones share connections).
///
/// ```no_run
/// use mproc_redis::Redis;
///
/// let redis = Redis::connect("redis://127.0.0.1:6379/")?;
/// let q = redis.queue("jobs").capacity(1024).create::<String>()?;
/// q.put("hello".to_string())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    pool: Mutex<Vec<Connection>>,
    prefix: String,
    key: Option<AuthKey>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.inner.prefix)
            .field("authenticated", &self.inner.key.is_some())
            .finish_non_exhaustive()
    }
}

/// Settings for [`Redis::builder`].
#[derive(Clone)]
pub struct RedisBuilder {
    url: String,
    prefix: String,
    key: Option<AuthKey>,
    connect_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<redis::TlsCertificates>,
}

impl std::fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the URL (it may hold a password) nor key material.
        let mut d = f.debug_struct("RedisBuilder");
        d.field("prefix", &self.prefix)
            .field("authenticated", &self.key.is_some())
            .field("connect_timeout", &self.connect_timeout);
        #[cfg(feature = "tls")]
        d.field("tls_certificates", &self.tls.is_some());
        d.finish_non_exhaustive()
    }
}

/// The environment variable an auth key is read from when none is given: its bytes are the
/// key (like Python's `authkey`). Every process that shares a queue must have the same one.
pub const AUTHKEY_ENV: &str = "MPROC_AUTHKEY";

impl RedisBuilder {
    /// The prefix of every key mproc writes (default `mproc`): several applications can share
    /// one server under different prefixes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Signs every entry with HMAC-SHA256 under `key`, and refuses entries that do not carry
    /// a valid signature. Overrides [`AUTHKEY_ENV`].
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(AuthKey::new(key.as_ref()));
        self
    }

    /// How long connecting may take (default 5 s). A call that has to open a new
    /// connection waits at most this long, or less if its own timeout is shorter.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// For `rediss://` URLs: trusts the CA certificate `root_pem` (PEM) instead of the
    /// system's roots: a server with a private CA (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_root_cert(mut self, root_pem: impl Into<Vec<u8>>) -> Self {
        self.tls
            .get_or_insert(redis::TlsCertificates {
                client_tls: None,
                root_cert: None,
            })
            .root_cert = Some(root_pem.into());
        self
    }

    /// For `rediss://` URLs: presents a client certificate and its key (PEM), for servers
    /// that require mutual TLS (`tls-auth-clients yes`; feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls
            .get_or_insert(redis::TlsCertificates {
                client_tls: None,
                root_cert: None,
            })
            .client_tls = Some(redis::ClientTlsConfig {
            client_cert: cert_pem.into(),
            client_key: key_pem.into(),
        });
        self
    }

    fn client(&self) -> Result<Client, RedisError> {
        use redis::IntoConnectionInfo;
        let bad = |e: redis::RedisError| RedisError::Invalid {
            reason: format!("bad Redis URL or TLS settings: {e}"),
        };
        // No CLIENT SETINFO after connecting: each of its two replies would wait the whole
        // connect timeout on a server that hangs, so connecting would take twice as long.
        let info = self.url.as_str().into_connection_info().map_err(bad)?;
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        #[cfg(feature = "tls")]
        {
            // rustls needs a process-wide crypto provider; ring is the one this crate builds
            // with. An application that installed its own keeps it. Installing one here also
            // keeps rustls from panicking when the build enables two providers. (ring's
            // provider is marked deprecated for lacking post-quantum key exchange; Redis
            // servers negotiate X25519 with it.)
            #[allow(deprecated)]
            let _ = rustls::crypto::ring::default_provider().install_default();
            if let Some(certs) = &self.tls {
                return Client::build_with_tls(info, certs.clone()).map_err(bad);
            }
        }
        Client::open(info).map_err(bad)
    }

    /// Connects (and checks the server answers, and that AUTH, if the URL has a password,
    /// passed).
    pub fn connect(self) -> Result<Redis, RedisError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', ' ']) {
            return Err(RedisError::Invalid {
                reason: format!(
                    "key prefix {:?} is empty or has braces or spaces",
                    self.prefix
                ),
            });
        }
        let client = self.client()?;
        let mut con = client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(unavailable)?;
        con.set_read_timeout(Some(self.connect_timeout))
            .map_err(unavailable)?;
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map_err(unavailable)?;
        let key = self
            .key
            .or_else(|| std::env::var_os(AUTHKEY_ENV).map(|k| AuthKey::new(k.as_encoded_bytes())));
        Ok(Redis {
            inner: Arc::new(Inner {
                client,
                pool: Mutex::new(vec![con]),
                prefix: self.prefix,
                key,
                connect_timeout: self.connect_timeout,
            }),
        })
    }
}

pub(crate) fn unavailable(e: redis::RedisError) -> RedisError {
    RedisError::Unavailable {
        reason: e.to_string(),
    }
}

impl Redis {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS with
    /// the `tls` feature, `redis+unix:///path`), with the auth key from [`AUTHKEY_ENV`] if set.
    pub fn connect(url: &str) -> Result<Redis, RedisError> {
        Redis::builder(url).connect()
    }

    /// Settings before connecting.
    pub fn builder(url: &str) -> RedisBuilder {
        RedisBuilder {
            url: url.to_string(),
            prefix: "mproc".into(),
            key: None,
            connect_timeout: Duration::from_secs(5),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Whether entries are signed and checked.
    pub fn is_authenticated(&self) -> bool {
        self.inner.key.is_some()
    }

    pub(crate) fn authkey(&self) -> Option<&AuthKey> {
        self.inner.key.as_ref()
    }

    /// The key of `name`'s `part`: `PREFIX:{NAME}:PART`.
    pub(crate) fn key(&self, name: &str, part: &str) -> String {
        format!("{}:{{{name}}}:{part}", self.inner.prefix)
    }

    /// Runs `f` on a pooled connection whose reply may take up to `timeout`, counting the
    /// time to open a new connection if one is needed. A connection that
    /// failed at the transport level is dropped, not pooled.
    pub(crate) fn run<R>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Connection) -> RedisResult<R>,
    ) -> Result<R, String> {
        let start = std::time::Instant::now();
        let pooled = self.lock_pool().pop();
        let mut con = match pooled {
            Some(c) => c,
            None => self
                .inner
                .client
                .get_connection_with_timeout(self.inner.connect_timeout.min(timeout))
                .map_err(|e| e.to_string())?,
        };
        // Connecting counts against the same budget.
        let timeout = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        con.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        con.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let r = f(&mut con);
        let broken = matches!(&r, Err(e) if e.is_io_error() || e.is_connection_dropped()
            || e.is_timeout() || e.is_unrecoverable_error());
        let mut pool = self.lock_pool();
        if !broken {
            if pool.len() < POOL_KEEP {
                pool.push(con);
            }
        } else {
            // The server went away (or hangs): the idle connections went with it. Dropping
            // them now means that after a restart only this call fails, not one per pooled
            // connection.
            pool.clear();
        }
        r.map_err(|e| e.to_string())
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the pool was locked leaves a valid Vec: carry on with it.
        self.inner.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks a queue, lock, event or value name: 1 to 200 characters, none of them braces,
/// whitespace or control characters (they would change which keys a name maps to).
pub(crate) fn check_name(name: &str) -> Result<(), RedisError> {
    let bad = name.is_empty()
        || name.len() > 200
        || name
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(RedisError::Invalid {
            reason: format!(
                "name {name:?} must be 1 to 200 characters without braces, spaces or \
                 control characters"
            ),
        });
    }
    Ok(())
}

/// A name for this process's consumer or lock holder, unique across hosts and time:
/// `HOST:PID:NONCE`.
pub(crate) fn identity() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{host}:{}:{n}:{nanos:x}",
        rustix::process::getpid().as_raw_nonzero()
    )
}
