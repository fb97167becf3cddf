//! `Process`: run one function in a child process and join it (Python's
//! `multiprocessing.Process`, with the function's return value coming back).

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mproc_queue::{GetError, Queue};
use rustix::process::Signal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{FnRef, layout_check};
use crate::child::{ChildProc, ExitStatus};
use crate::codec::{decode_outcomes, encode_into};
use crate::launch::{Booted, LaunchOptions, StartMethod, await_boot, launch_setters, start_worker};
use crate::protocol::{Boot, DEFAULT_ARENA_BYTES, Reply, Request, inbox_options, results_options};
use crate::worker::run_forked;
use crate::{JoinError, OsError, StartError, TaskError};

/// Builds a [`Process`] with a start method other than the default.
///
/// ```
/// use mproc_pool::{Process, StartMethod, ThreadedFork};
/// let mut p = Process::builder()
///     .start_method(StartMethod::Fork)
///     .threaded_fork(ThreadedFork::Allow)
///     .spawn(|s: String| s.len(), "hello".to_string())?;
/// assert_eq!(p.join()?, 5);
/// # Ok::<(), mproc_pool::ProcessError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProcessBuilder {
    launch: LaunchOptions,
    daemon: bool,
}

impl Default for ProcessBuilder {
    fn default() -> Self {
        ProcessBuilder {
            launch: LaunchOptions::default(),
            daemon: true,
        }
    }
}

impl ProcessBuilder {
    launch_setters!(launch);

    /// Sets the start method, threaded-fork policy and start timeout at once.
    pub fn launch_options(mut self, launch: LaunchOptions) -> Self {
        self.launch = launch;
        self
    }

    /// Whether the child ends when this process ends (default `true`), as Python's daemonic
    /// processes are terminated when their parent exits. The child ends whatever ends the
    /// parent — `exit`, a panic, any signal, SIGKILL included — and within milliseconds.
    /// `daemon(false)` lets it run on (Python's default; Rust has no `atexit` join, so the
    /// parent that wants to wait for it must `join` it).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Starts `f(arg)` in a child process.
    pub fn spawn<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Process<R>, StartError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.launch.check()?;
        let mut args = Vec::new();
        encode_into(&arg, &mut args).map_err(|e| StartError::Encode {
            message: e.to_string(),
        })?;
        let results: Queue<Reply> = results_options(4, DEFAULT_ARENA_BYTES).anonymous()?;
        let request = Request {
            job: 0,
            func: FnRef::new(f),
            count: 1,
            args,
        };
        let method = self.launch.method;
        let (child, inbox) = match method {
            // The child has the request and the queue already: it is a copy of us.
            StartMethod::Fork => (
                ChildProc::fork(self.daemon, || run_forked(&request, &results))?,
                None,
            ),
            StartMethod::Spawn | StartMethod::ForkServer => {
                let inbox: Queue<Request> = inbox_options(1, DEFAULT_ARENA_BYTES).anonymous()?;
                inbox.put(request).map_err(|e| StartError::Encode {
                    message: e.to_string(),
                })?;
                // One request, then the worker finds its inbox closed and exits.
                inbox.close();
                let boot = Boot {
                    index: 0,
                    inbox_fd: inbox.segment().as_fd().as_raw_fd(),
                    results_fd: results.segment().as_fd().as_raw_fd(),
                    check: layout_check(),
                    one_shot: true,
                    initializer: None,
                    parent: std::process::id(),
                    die_with_parent: self.daemon,
                    max_rss: None,
                };
                (
                    start_worker(
                        method,
                        &boot,
                        [inbox.segment().as_fd(), results.segment().as_fd()],
                    )?,
                    Some(inbox),
                )
            }
        };
        let mut p = Process {
            child,
            results,
            _inbox: inbox,
            method,
            heard: Heard::default(),
            joined: false,
            _r: PhantomData,
        };
        if method == StartMethod::Spawn {
            p.await_start(self.launch.start_timeout)?;
        }
        Ok(p)
    }
}

/// A function running in a child process: Python's `multiprocessing.Process`, except that
/// [`join`](Process::join) hands back the function's return value (or its panic).
///
/// The function is a plain `fn(A) -> R` (a closure that captures nothing coerces to one);
/// `A` and `R` travel with serde. Dropping a `Process` that has not been joined kills
/// (SIGKILL) and reaps the child: a handle never leaves an orphan or a zombie behind.
///
/// ```
/// use mproc_pool::Process;
/// fn fib(n: u64) -> u64 { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }
///
/// let mut p = Process::spawn(fib, 20)?;
/// assert_eq!(p.join()?, 6765);
/// assert_eq!(p.exit_status(), Some(0));
/// # Ok::<(), mproc_pool::ProcessError>(())
/// ```
#[derive(Debug)]
pub struct Process<R> {
    child: ChildProc,
    results: Queue<Reply>,
    /// The request's queue of a spawned child (a forked one has the request in memory).
    _inbox: Option<Queue<Request>>,
    method: StartMethod,
    /// What the child sent.
    heard: Heard,
    joined: bool,
    _r: PhantomData<fn() -> R>,
}

/// What a `Process`'s child sent through its results queue.
#[derive(Debug, Default)]
struct Heard {
    /// It reached `init` (spawned children).
    started: bool,
    /// The encoded `Result<R, TaskError>` it sent.
    outcome: Option<Vec<u8>>,
}

impl Heard {
    fn absorb(&mut self, reply: Reply) {
        match reply {
            Reply::Started { .. } => self.started = true,
            Reply::Done { body, .. } => self.outcome = Some(body),
            Reply::Ready { .. } | Reply::InitFailed { .. } => {}
        }
    }
}

impl Process<()> {
    /// A builder for the start method and its options.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Starts `f(arg)` in a child process with the default start method (`Fork`).
    pub fn spawn<A>(f: fn(A) -> R, arg: A) -> Result<Process<R>, StartError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize,
    {
        ProcessBuilder::default().spawn(f, arg)
    }

    fn drain(&mut self) {
        loop {
            match self.results.try_get() {
                Ok(reply) => self.heard.absorb(reply),
                Err(GetError::Unreadable { .. }) => continue,
                Err(_) => break,
            }
        }
    }

    /// Waits for a spawned child to reach `init` (its `Started` message).
    fn await_start(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        let heard = std::cell::RefCell::new(std::mem::take(&mut self.heard));
        let booted = await_boot(
            &self.results,
            Some(deadline),
            |reply| heard.borrow_mut().absorb(reply),
            || heard.borrow().started,
            || self.child.try_wait(),
        );
        self.heard = heard.into_inner();
        match booted? {
            Booted::Done => Ok(()),
            Booted::Ended(_) => Err(StartError::InitNotCalled(
                "the spawned child exited without becoming a worker: call mproc::init() first \
                 thing in main",
            )),
            Booted::Late => {
                self.child.kill_and_reap();
                Err(StartError::InitNotCalled(
                    "the spawned child did not reach mproc::init() in time (killed): call it \
                     first thing in main",
                ))
            }
        }
    }

    /// The child's pidfd (readable once it has exited).
    #[cfg(feature = "async")]
    pub(crate) fn pidfd(&self) -> &std::os::fd::OwnedFd {
        self.child.pidfd()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the child is still running (it has not exited). Does not reap it.
    pub fn is_alive(&self) -> bool {
        if self.child.status().is_some() {
            return false;
        }
        !crate::sys::readable(self.child.pidfd().as_fd(), Some(std::time::Duration::ZERO))
            .unwrap_or(false)
    }

    /// Python's `exitcode`: `None` while the child runs; then 0 on success, 1 if the function
    /// panicked, `N` if the child called `exit(N)`, `-N` if signal `N` killed it. Reaps the
    /// child if it has exited.
    pub fn exit_status(&self) -> Option<i32> {
        self.child.try_wait().ok().flatten().map(ExitStatus::code)
    }

    /// Waits for the child to exit and returns the function's result.
    ///
    /// Errors: [`JoinError::Panicked`] (with the panic message), [`JoinError::Exited`]
    /// (it called `exit`), [`JoinError::Signaled`] (it was killed),
    /// [`JoinError::AlreadyJoined`] on a second call.
    pub fn join(&mut self) -> Result<R, JoinError> {
        self.join_until(None)
    }

    /// As [`join`](Process::join), giving up with [`JoinError::Timeout`] after `timeout`
    /// (the child keeps running and can be joined again).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, JoinError> {
        self.join_until(Some(Instant::now() + timeout))
    }

    fn join_until(&mut self, deadline: Option<Instant>) -> Result<R, JoinError> {
        if self.joined {
            return Err(JoinError::AlreadyJoined);
        }
        let Some(status) = self.child.wait_until(deadline)? else {
            return Err(JoinError::Timeout);
        };
        self.drain();
        self.joined = true;
        let outcome = self
            .heard
            .outcome
            .take()
            .and_then(|body| decode_outcomes::<R>(&body, 1).next());
        match outcome {
            Some(Ok(r)) => Ok(r),
            Some(Err(TaskError::Panicked { message })) => Err(JoinError::Panicked { message }),
            Some(Err(e)) => Err(JoinError::Decode {
                message: e.to_string(),
            }),
            None if !self.heard.started && self.method == StartMethod::Spawn => {
                Err(JoinError::InitNotCalled(
                    "the spawned child exited without becoming a worker: call mproc::init() \
                     first thing in main",
                ))
            }
            None => Err(match status {
                ExitStatus::Code(code) => JoinError::Exited { code },
                ExitStatus::Signaled(signal) => JoinError::Signaled { signal },
                ExitStatus::Unknown => JoinError::StatusUnknown,
            }),
        }
    }

    /// Sends SIGTERM (Python's `terminate`).
    pub fn terminate(&self) -> Result<(), OsError> {
        self.child.signal(Signal::TERM)
    }

    /// Sends SIGKILL (Python's `kill`).
    pub fn kill(&self) -> Result<(), OsError> {
        self.child.signal(Signal::KILL)
    }
}
