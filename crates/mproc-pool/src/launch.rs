//! How a child process is started, for [`Process`](crate::Process) and
//! [`Pool`](crate::Pool) alike: the start method, what `Fork` does in a threaded parent, how
//! long a spawned child may take to call `init`, the checks made before starting, and the one
//! function that starts a worker by each method. Both builders take the same
//! [`LaunchOptions`] and the same setters (written once, in [`launch_setters`]).

use std::time::{Duration, Instant};

use mproc_queue::Queue;

use crate::child::{ChildProc, ExitStatus};
use crate::forker::thread_count;
use crate::protocol::{Boot, ENV, Reply};
use crate::worker::{check_may_start, worker_main};
use crate::{OsError, StartError};

/// How child processes are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// `fork()`: the child is a copy of the parent and runs the function at once (about
    /// 0.1–1 ms). The default on Linux, as in Python. The child must not depend on locks that
    /// other threads of the parent held at the moment of the fork (see [`ThreadedFork`]).
    #[default]
    Fork,
    /// Re-executes this binary; [`init`](crate::init) at the top of `main` turns the new
    /// process into a worker. Slower to start (an `exec` and the program's startup), but the
    /// child starts from a clean state, whatever threads the parent has.
    Spawn,
    /// Python's `forkserver`: children are forked from a small single-threaded server process
    /// that this process forks once (at [`start_forkserver`](crate::start_forkserver), or
    /// on first use). Safe whatever threads this process has — no lock can be inherited held
    /// — and nearly as fast as `Fork`; children see this process as it was when the server
    /// started. A `Fork` pool also starts its *replacement* workers this way, since it forks
    /// them while it has threads.
    ForkServer,
}

/// What the `Fork` start method does when the parent has more than one thread of its own
/// (mproc's own threads — a pool's handler, the forker, the async reactors — do not count).
///
/// After `fork` only the forking thread exists in the child; a lock another thread held at
/// that moment (inside `malloc` of some allocators, a logging library, your own `Mutex`)
/// stays locked forever there. glibc's `malloc` and mproc's own code are fork-safe; code you
/// run in the child may not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadedFork {
    /// Print one warning to stderr (once per process) and fork.
    #[default]
    Warn,
    /// Fork silently: you know the other threads hold no lock the child needs.
    Allow,
    /// Refuse with [`StartError::ThreadedFork`].
    Refuse,
}

/// Whether the threaded-fork warning was printed (once per process: a flag, not a `Once` —
/// a child forked while a parent thread was inside `call_once` would block on it for ever).
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Applies the threaded-fork policy before forking from user code.
pub(crate) fn check_fork(policy: ThreadedFork) -> Result<(), StartError> {
    // Allow needs no count; Warn needs none once its one warning is out (counting reads
    // /proc/self/stat: nine system calls on every start).
    if policy == ThreadedFork::Allow
        || (policy == ThreadedFork::Warn && WARNED.load(std::sync::atomic::Ordering::Relaxed))
    {
        return Ok(());
    }
    let threads = thread_count();
    if threads <= 1 {
        return Ok(());
    }
    match policy {
        ThreadedFork::Allow => Ok(()),
        ThreadedFork::Refuse => Err(StartError::ThreadedFork { threads }),
        ThreadedFork::Warn => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!(
                    "mproc: forking a process that has {threads} threads; a lock held by another \
                     thread stays locked in the child. Use StartMethod::Spawn, or \
                     ThreadedFork::Allow to silence this warning."
                );
            }
            Ok(())
        }
    }
}

/// Starts a worker process for `boot` by `method`.
pub(crate) fn start_worker(
    method: StartMethod,
    boot: &Boot,
    queues: [std::os::fd::BorrowedFd<'_>; 2],
) -> Result<ChildProc, StartError> {
    match method {
        StartMethod::Fork => {
            let boot = boot.clone();
            ChildProc::fork(boot.die_with_parent, move || worker_main(&boot))
                .map(ChildProc::group_of_tasks)
        }
        StartMethod::Spawn => ChildProc::spawn(
            (ENV, &boot.to_env()?),
            &[boot.inbox_fd, boot.results_fd],
            boot.die_with_parent,
        )
        .map(ChildProc::group_of_tasks),
        StartMethod::ForkServer => {
            crate::forkserver::start_worker(boot, queues).map(ChildProc::group_of_tasks)
        }
    }
}

/// How child processes are started: the options [`ProcessBuilder`](crate::ProcessBuilder) and
/// [`PoolBuilder`](crate::PoolBuilder) share. Set them one by one on either builder
/// (`start_method`, `threaded_fork`, `start_timeout`), or all at once with
/// `launch_options`, e.g. to start every process of a program the same way.
///
/// ```
/// use mproc_pool::{LaunchOptions, Pool, Process, StartMethod, ThreadedFork};
/// let launch = LaunchOptions::default()
///     .start_method(StartMethod::Fork)
///     .threaded_fork(ThreadedFork::Allow);
/// let mut p = Process::builder().launch_options(launch).spawn(|x: u32| x + 1, 1)?;
/// assert_eq!(p.join()?, 2);
/// let pool = Pool::builder().processes(1).launch_options(launch).build()?;
/// assert_eq!(pool.apply(|x: u32| x * 2, 21)?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchOptions {
    pub(crate) method: StartMethod,
    pub(crate) threaded_fork: ThreadedFork,
    pub(crate) start_timeout: Duration,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            method: StartMethod::default(),
            threaded_fork: ThreadedFork::default(),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// The launch setters, written once for [`LaunchOptions`], `ProcessBuilder` and
/// `PoolBuilder` (each has a `launch: LaunchOptions` field, or is one).
macro_rules! launch_setters {
    ($($launch:ident)?) => {
        /// Fork (default), spawn or fork server; see [`StartMethod`](crate::StartMethod).
        pub fn start_method(mut self, method: $crate::StartMethod) -> Self {
            self$(.$launch)?.method = method;
            self
        }

        /// What `Fork` does when this process already has other threads (default: warn
        /// once); see [`ThreadedFork`](crate::ThreadedFork).
        pub fn threaded_fork(mut self, policy: $crate::ThreadedFork) -> Self {
            self$(.$launch)?.threaded_fork = policy;
            self
        }

        /// How long a spawned child may take to reach [`init`](crate::init) (default 30 s);
        /// after that it is killed and starting fails with
        /// [`StartError::InitNotCalled`](crate::StartError::InitNotCalled).
        pub fn start_timeout(mut self, timeout: std::time::Duration) -> Self {
            self$(.$launch)?.start_timeout = timeout;
            self
        }
    };
}
pub(crate) use launch_setters;

impl LaunchOptions {
    launch_setters!();

    /// The start method.
    pub fn method(&self) -> StartMethod {
        self.method
    }

    /// Whether this process may start a child this way now: not a spawned child that
    /// skipped `init`, `init` called for `Spawn`, and the threaded-fork policy for `Fork`.
    pub(crate) fn check(&self) -> Result<(), StartError> {
        check_may_start(self.method == StartMethod::Spawn)?;
        if self.method == StartMethod::Fork {
            check_fork(self.threaded_fork)?;
        }
        Ok(())
    }
}

/// How often the parent looks at its starting children while it waits for their first
/// messages: a child that died, or (Spawn) one that is late, is noticed within this.
const BOOT_POLL: Duration = Duration::from_millis(20);

/// How waiting for the start-up handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Booted {
    /// The awaited messages came (`done` holds).
    Done,
    /// A child ended first (every message it sent was read).
    Ended(ExitStatus),
    /// The deadline passed.
    Late,
}

/// The parent's side of the start-up handshake, for [`Process`](crate::Process) (a spawned
/// child's `Started`) and [`Pool`](crate::Pool) (every worker's `Ready`): reads `results` into
/// `absorb` until `done()` holds, a child has ended (`ended()`, asked whenever no message
/// came for a moment), or `deadline` passes. (The child's side is `worker_main`: `Started`
/// once attached, `Ready` or `InitFailed` after the initializer.)
pub(crate) fn await_boot(
    results: &Queue<Reply>,
    deadline: Option<Instant>,
    mut absorb: impl FnMut(Reply),
    mut done: impl FnMut() -> bool,
    mut ended: impl FnMut() -> Result<Option<ExitStatus>, OsError>,
) -> Result<Booted, OsError> {
    loop {
        if done() {
            return Ok(Booted::Done);
        }
        if let Ok(reply) = results.get_timeout(BOOT_POLL) {
            absorb(reply);
            continue;
        }
        if let Some(status) = ended()? {
            // Every message it sent before it ended is in the queue now; an unreadable one
            // is skipped.
            loop {
                match results.try_get() {
                    Ok(reply) => absorb(reply),
                    Err(mproc_queue::GetError::Unreadable { .. }) => {}
                    Err(_) => break,
                }
            }
            return Ok(if done() {
                Booted::Done
            } else {
                Booted::Ended(status)
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Booted::Late);
        }
    }
}
