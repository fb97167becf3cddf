//! The fork server (Python's `forkserver` start method): one small single-threaded process,
//! forked from this one, from which workers are forked. A `fork` from a process with other
//! threads gives a child in which any lock another thread held (stdout, a logger, an
//! allocator other than glibc's) stays locked forever; forking from a process that has only
//! one thread cannot do that, whatever the parent's threads are doing.
//!
//! **Protocol.** A `SOCK_SEQPACKET` socket pair links this process and the server. A request
//! is a worker's [`Boot`] (postcard) with its inbox and results queue fds attached
//! (`SCM_RIGHTS`); the server forks, and answers `Started { pid }` with a pidfd of the child
//! attached — opened by the server, the child's parent, before it could reap it, so the pidfd
//! cannot name a recycled pid. When a child exits the server reaps it (it waits on a
//! `signalfd` of `SIGCHLD`) and sends `Exited { pid, status }`; this process reads those
//! messages when it wants a status (on demand, under one lock).
//!
//! **Lifetimes.** The server ends when this process ends: it is forked on this process's
//! forker thread with a parent-death signal (and its end of the socket reads EOF then too).
//! Its workers carry a parent-death signal for the server, so they end with it. A forked child of this process
//! that wants a fork server starts its own.
//!
//! **State.** Workers are forked from the server, so they see this process as it was when the
//! server started: start it early, with [`start_forkserver`], before building state that
//! workers should not have (and before starting threads).

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mproc_segment::Errno;
use mproc_segment::ProcessCell;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg, sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use crate::child::{ChildProc, ExitStatus};
use crate::protocol::Boot;
use crate::{OsError, StartError};
use server::serve;

mod server;

/// What the server tells this process.
#[derive(Debug, Serialize, Deserialize)]
enum ServerMsg {
    /// A worker was forked (its pidfd is attached).
    Started { pid: u32 },
    /// The fork failed.
    Failed { errno: i32 },
    /// A worker exited and was reaped.
    Exited {
        pid: u32,
        signal: Option<i32>,
        code: Option<i32>,
    },
}

/// Room for any message.
const MSG_MAX: usize = 64 * 1024;

/// This process's link to its server.
struct Link {
    sock: OwnedFd,
    server: u32,
    /// Exit statuses read while looking for something else, by pid.
    exits: HashMap<u32, ExitStatus>,
}

/// This process's link, behind a lock that belongs to this process. After a `fork` the child
/// must not use the parent's lock: a thread of the parent may have held it at that moment, and
/// that thread does not exist in the child, so the lock would stay held forever. So the lock
/// lives in a [`ProcessCell`], and a forked child makes its own.
struct Slot {
    link: Mutex<Option<Link>>,
}

static SLOT: ProcessCell<Slot> = ProcessCell::new();

fn slot() -> &'static Slot {
    let made: Result<_, std::convert::Infallible> = SLOT.get_or_try_make(|| {
        // The slot inherited from a parent holds the parent's socket: close our copy if
        // nobody holds its lock (else leave it: leaked, like the slot).
        if let Some(old) = SLOT.inherited() {
            if let Ok(mut g) = old.link.try_lock() {
                drop(g.take());
            }
        }
        Ok(Box::leak(Box::new(Slot {
            link: Mutex::new(None),
        })))
    });
    let Ok(slot) = made;
    slot
}

/// Starts this process's fork server now, if it has none. Call it early in `main` (before
/// starting threads, and before building state workers should not inherit): the server is a
/// snapshot of the process at this moment. Otherwise it starts the first time a pool or
/// process with [`StartMethod::ForkServer`](crate::StartMethod::ForkServer) needs it.
///
/// ```
/// mproc_pool::start_forkserver()?;
/// let pool = mproc_pool::Pool::builder()
///     .processes(2)
///     .start_method(mproc_pool::StartMethod::ForkServer)
///     .build()?;
/// assert_eq!(pool.apply(|x: u32| x * 2, 21), Ok(42));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn start_forkserver() -> Result<(), StartError> {
    with_link(|_| Ok(()))
}

fn with_link<R>(f: impl FnOnce(&mut Link) -> Result<R, StartError>) -> Result<R, StartError> {
    let mut guard = slot().link.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(Link::start()?);
    }
    let link = guard
        .as_mut()
        .ok_or(StartError::os("forkserver", Errno::IO))?;
    f(link)
}

impl Link {
    fn start() -> Result<Link, StartError> {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| StartError::os("socketpair", e))?;
        let parent = std::process::id();
        let ours_raw = ours.as_raw_fd();
        let server = crate::forker::on_forker(move || {
            // SAFETY: the child only runs `serve` (plain system calls and allocation, which
            // glibc makes fork-safe) and `_exit`s; it never returns into the forker's loop.
            match unsafe { crate::sys::fork() }? {
                crate::sys::Forked::Child => {
                    crate::forker::arm_parent_death(parent);
                    // The server never uses the parent's end (it `_exit`s without dropping
                    // anything of the parent's).
                    crate::sys::close_inherited(ours_raw);
                    let code =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(theirs)))
                            .unwrap_or(1);
                    crate::sys::exit_now(code)
                }
                crate::sys::Forked::Parent(child) => {
                    drop(theirs);
                    Ok(child)
                }
            }
        })?;
        Ok(Link {
            sock: ours,
            server: server as u32,
            exits: HashMap::new(),
        })
    }

    /// Reads one message (waiting at most `timeout`), with any fd attached.
    fn read(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(ServerMsg, Option<OwnedFd>)>, StartError> {
        if !crate::sys::readable(self.sock.as_fd(), Some(timeout))
            .map_err(|e| StartError::os("poll", e))?
        {
            return Ok(None);
        }
        recv(self.sock.as_fd())
    }

    /// Reads messages until `want` returns something, keeping exit statuses for others.
    fn read_until<T>(
        &mut self,
        deadline: Instant,
        mut want: impl FnMut(&mut Link, ServerMsg, Option<OwnedFd>) -> Option<T>,
    ) -> Result<Option<T>, StartError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let Some((msg, fd)) = self.read(left)? else {
                continue;
            };
            if let Some(v) = want(self, msg, fd) {
                return Ok(Some(v));
            }
        }
    }
}

/// Receives one message and the fds attached to it.
fn recv(sock: BorrowedFd<'_>) -> Result<Option<(ServerMsg, Option<OwnedFd>)>, StartError> {
    let (msg, mut fds) = recv_raw(sock)?;
    let Some(bytes) = msg else {
        return Err(StartError::os("forkserver (it exited)", Errno::PIPE));
    };
    let msg: ServerMsg = postcard::from_bytes(&bytes).map_err(|e| StartError::Encode {
        message: format!("forkserver message: {e}"),
    })?;
    Ok(Some((msg, fds.pop())))
}

/// One datagram and its `SCM_RIGHTS` fds; `None` at EOF.
fn recv_raw(sock: BorrowedFd<'_>) -> Result<(Option<Vec<u8>>, Vec<OwnedFd>), StartError> {
    let mut buf = vec![0u8; MSG_MAX];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let n = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg(sock, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => break m.bytes,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(StartError::os("recvmsg", e)),
        }
    };
    // The kernel installed these fds for us just now: rustix hands them over owned.
    let mut fds = Vec::new();
    for message in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if n == 0 {
        return Ok((None, fds));
    }
    buf.truncate(n);
    Ok((Some(buf), fds))
}

fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    let iov = [IoSlice::new(bytes)];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::INVAL);
    }
    loop {
        match sendmsg(sock, &iov, &mut cmsg, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Starts a worker for `boot` through the fork server.
pub(crate) fn start_worker(
    boot: &Boot,
    queues: [BorrowedFd<'_>; 2],
) -> Result<ChildProc, StartError> {
    let bytes = postcard::to_allocvec(boot).map_err(|e| StartError::Encode {
        message: e.to_string(),
    })?;
    for attempt in 0..2 {
        let r = with_link(|link| {
            send(link.sock.as_fd(), &bytes, &queues)
                .map_err(|e| StartError::os("forkserver request", e))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let started = link.read_until(deadline, |link, msg, fd| match msg {
                ServerMsg::Started { pid } => Some(Ok((pid, fd))),
                ServerMsg::Failed { errno } => Some(Err(StartError::os(
                    "fork (forkserver)",
                    Errno::from_raw_os_error(errno),
                ))),
                ServerMsg::Exited { pid, signal, code } => {
                    link.exits.insert(pid, status_of(signal, code));
                    None
                }
            })?;
            match started {
                Some(Ok((pid, Some(pidfd)))) => Ok(ChildProc::remote(pid as i32, pidfd)),
                Some(Ok((_, None))) => Err(StartError::os("forkserver (no pidfd)", Errno::IO)),
                Some(Err(e)) => Err(e),
                None => Err(StartError::os("forkserver (no answer)", Errno::TIMEDOUT)),
            }
        });
        match r {
            // The server died: start another and try once more.
            Err(StartError::Os(OsError { errno, .. }))
                if attempt == 0 && matches!(errno, Errno::PIPE | Errno::CONNRESET) =>
            {
                let mut g = slot().link.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(old) = g.take() {
                    reap_server(old.server);
                }
                mproc_segment::slow_path_event!(?errno, "fork server gone; starting another");
            }
            r => return r,
        }
    }
    Err(StartError::os("forkserver", Errno::PIPE))
}

fn reap_server(pid: u32) {
    // The server is our own child; WNOHANG never blocks.
    let _ = crate::sys::reap_nohang(pid as i32);
}

/// SIGKILL's number: how a worker the server could not report on most likely ended.
const KILLED: i32 = rustix::process::Signal::KILL.as_raw();

fn status_of(signal: Option<i32>, code: Option<i32>) -> ExitStatus {
    match (signal, code) {
        (Some(s), _) => ExitStatus::Signaled(s),
        (None, Some(c)) => ExitStatus::Code(c),
        (None, None) => ExitStatus::Signaled(KILLED),
    }
}

/// The exit status of server child `pid`, whose pidfd says it has exited (the server sends
/// it as soon as it has reaped the child). If the server is gone, the child was killed with
/// it.
pub(crate) fn exit_status(pid: u32) -> ExitStatus {
    let r = with_link(|link| {
        if let Some(s) = link.exits.remove(&pid) {
            return Ok(Some(s));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        link.read_until(deadline, |link, msg, _| match msg {
            ServerMsg::Exited {
                pid: p,
                signal,
                code,
            } if p == pid => Some(status_of(signal, code)),
            ServerMsg::Exited {
                pid: p,
                signal,
                code,
            } => {
                link.exits.insert(p, status_of(signal, code));
                None
            }
            _ => None,
        })
    });
    r.ok().flatten().unwrap_or(ExitStatus::Signaled(KILLED))
}
