//! A real `redis-server` for one test: started on 127.0.0.1 with a free port and a temporary
//! directory, without persistence, and stopped (SIGKILL, reaped, directory removed) when the
//! handle drops.
//!
//! The binary comes from Debian's `redis-server` package; `cargo xtask test` installs it
//! when it is missing. A test that cannot start one fails with that advice: a test that
//! needs Redis never passes without it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Child, Signal};

/// A running `redis-server` owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    killed: bool,
    extra: Vec<String>,
    /// Listens with TLS only (`--tls-port`), the plain port closed.
    tls: bool,
}

/// Whether the server on `s` answers `PING`, other than with `-LOADING` (a server with a
/// password answers `-NOAUTH`: it is up).
fn pong(mut s: TcpStream) -> bool {
    use std::io::{Read, Write};
    let mut buf = [0u8; 64];
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| n > 0 && !buf[..n].starts_with(b"-LOADING"))
}

/// The server binary: `$MPROC_REDIS_SERVER`, else `redis-server` on the `PATH`.
fn binary() -> String {
    std::env::var("MPROC_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl RedisServer {
    /// Starts a server with no password.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra configuration directives (`["--requirepass", "pw"]`).
    /// Panics, with the reason, if none can be started within 10 s.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_mode(extra, false)
    }

    /// Starts a server that speaks only TLS on its port, with extra directives (at least
    /// `--tls-cert-file`, `--tls-key-file` and `--tls-ca-cert-file`). Clients use
    /// [`tls_url`](Self::tls_url).
    pub fn start_tls(extra: &[&str]) -> RedisServer {
        RedisServer::start_mode(extra, true)
    }

    fn start_mode(extra: &[&str], tls: bool) -> RedisServer {
        let mut last = String::new();
        for _ in 0..5 {
            match RedisServer::try_start(extra, tls) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!(
            "could not start {}: {last}. `cargo xtask test` installs Debian's redis-server \
             package when it is missing",
            binary()
        )
    }

    fn try_start(extra: &[&str], tls: bool) -> Result<RedisServer, String> {
        // A free port: bind port 0, read what the kernel chose, close it. Another process could
        // take it in between; the caller then tries again with a new one.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(crate::unique_name("redis"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = RedisServer::spawn(port, &dir, &extra, tls).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        Ok(RedisServer {
            child,
            port,
            dir,
            killed: false,
            extra,
            tls,
        })
    }

    /// Kills the server (SIGKILL, as a crash) if it runs, and starts it again on the same
    /// port and directory with the same settings: what was persisted (`--appendonly yes`)
    /// is read back.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match RedisServer::spawn(self.port, &self.dir, &self.extra, self.tls) {
                Ok(child) => {
                    self.child = child;
                    self.killed = false;
                    return;
                }
                // The port may linger for a moment after the kill.
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server: {last}");
    }

    /// Starts the server and waits until it accepts connections.
    fn spawn(
        port: u16,
        dir: &std::path::Path,
        extra: &[String],
        tls: bool,
    ) -> Result<Child, String> {
        let port_args = match tls {
            false => [
                "--port".to_string(),
                port.to_string(),
                String::new(),
                String::new(),
            ],
            true => [
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
            ],
        };
        let mut cmd = Command::new(binary());
        cmd.args(["--bind", "127.0.0.1"])
            .args(port_args.iter().filter(|a| !a.is_empty()))
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = Child::spawn(&mut cmd).map_err(|e| format!("spawn: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Up means answering PING (not `-LOADING` while it reads its append-only file);
            // a TLS-only server is taken as up once it accepts connections.
            if TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| tls || pong(s)) {
                return Ok(child);
            }
            if child.wait_timeout(Duration::from_millis(0)).is_some() || Instant::now() > deadline {
                return Err(format!("redis-server on port {port} did not come up"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `rediss://127.0.0.1:PORT/`, for a server started with [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (SIGSTOP): connections stay open and go unanswered, as with a
    /// server that hangs or a network that drops packets.
    pub fn pause(&self) {
        self.child.signal(Signal::STOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.child.signal(Signal::CONT);
    }

    /// The server's pid (to stop or kill it in a test of an unreachable server).
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Kills the server now (SIGKILL) and reaps it: clients see a dead server.
    pub fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        self.child.signal(Signal::KILL);
        let _ = self.child.wait_timeout(Duration::from_secs(10));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
