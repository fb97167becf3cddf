//! Errors of processes and pools.

use mproc_segment::Errno;
use mproc_segment::SegmentError;
use serde::{Deserialize, Serialize};

/// Why a pool task produced no result: its own outcome. The other tasks of the same `map`
/// and the pool itself go on (unless the pool broke, [`TaskError::Broken`]).
///
/// The pool's errors are split by operation: [`SubmitError`] (the pool refused the task),
/// `TaskError` (the task ran, or was meant to, and failed), [`WaitError`] (a caller stopped
/// waiting) and [`PoolError`] for the calls that submit and wait (`map`, `apply`, `imap`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskError {
    /// The task's function panicked; `message` is the panic's message.
    #[error("task panicked: {message}")]
    Panicked {
        /// The panic payload (`&str` or `String`), or a placeholder for other payloads.
        message: String,
    },
    /// The worker running the task died (SIGKILL, OOM killer, `abort`, `exit`) before it
    /// answered. The pool has started a replacement.
    #[error("worker process {pid} died while running the task ({})", describe(*signal, *code))]
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// The signal that killed it, if it was killed by one.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
    },
    /// The argument or the result could not be encoded or decoded (serde / postcard).
    #[error("task argument or result could not be encoded or decoded: {message}")]
    Encode {
        /// What serde or postcard said.
        message: String,
    },
    /// The task ran longer than its time limit (`PoolBuilder::task_timeout`,
    /// `AsyncResult::timeout`): its worker was killed and replaced; the tasks queued behind it
    /// ran elsewhere. (A caller that stops waiting gets [`WaitError::Timeout`] instead, and
    /// the task goes on.)
    #[error("task ran longer than its limit of {limit_ms} ms; its worker was stopped")]
    Timeout {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The task was cancelled (`AsyncResult::cancel`) before it finished.
    #[error("task was cancelled")]
    Cancelled,
    /// The pool was terminated (`Pool::terminate`, or dropped) before the task finished.
    #[error("the pool was terminated before the task finished")]
    Terminated,
    /// The pool broke before the task finished, and stopped.
    #[error(transparent)]
    Broken(#[from] PoolBroken),
}

/// Why a pool stopped for good: every unfinished task fails with
/// [`TaskError::Broken`], later submissions with [`SubmitError::Broken`], and
/// [`Pool::join`](crate::Pool::join) returns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PoolBroken {
    /// The pool's initializer failed in a worker.
    #[error("pool initializer failed: {message}")]
    InitializerFailed {
        /// The initializer's panic message, or how its worker ended.
        message: String,
    },
    /// A worker could not be started, or replaced for a minute (fork, exec or shared-memory
    /// setup failed).
    #[error("could not start a worker: {message}")]
    Start {
        /// The underlying [`StartError`], as text.
        message: String,
    },
}

/// Why the pool did not accept a task (`apply_async`, `map_async`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The pool no longer accepts tasks (`close`, `join` or `terminate` was called).
    #[error("the pool is closed")]
    Closed,
    /// An argument could not be encoded.
    #[error("task argument could not be encoded: {message}")]
    Encode {
        /// What serde or postcard said.
        message: String,
    },
    /// The pool broke and stopped.
    #[error(transparent)]
    Broken(#[from] PoolBroken),
}

/// Why waiting for a result with a timeout returned none (`get_timeout`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The timeout passed; the task is still pending, and a later `get` may return it.
    #[error("timed out waiting for the task")]
    Timeout,
    /// The task failed.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// The error of a pool call that submits tasks and waits for them (`map`, `starmap`,
/// `apply`, the items of `imap`): the submission's or a task's.
///
/// ```
/// use mproc_pool::{Pool, PoolError, TaskError};
/// let pool = Pool::new(1)?;
/// let r = pool.map(|x: u32| if x == 2 { panic!("two") } else { x }, [1, 2]);
/// assert!(matches!(r, Err(PoolError::Task(TaskError::Panicked { .. }))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool did not accept the tasks.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// A task failed (the first failure, in input order, for `map`).
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl From<PoolBroken> for PoolError {
    fn from(b: PoolBroken) -> PoolError {
        PoolError::Task(TaskError::Broken(b))
    }
}

fn describe(signal: Option<i32>, code: Option<i32>) -> String {
    match (signal, code) {
        (Some(s), _) => format!("killed by signal {s}"),
        (None, Some(c)) => format!("exited with code {c}"),
        (None, None) => "status unknown".to_owned(),
    }
}

/// A system call that failed, and its error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {errno}")]
pub struct OsError {
    /// The call.
    pub call: &'static str,
    /// Its error.
    pub errno: Errno,
}

impl OsError {
    pub(crate) fn new(call: &'static str, errno: Errno) -> OsError {
        OsError { call, errno }
    }
}

/// Why a child process or a pool could not be started ([`ProcessBuilder::spawn`](crate::ProcessBuilder::spawn),
/// [`PoolBuilder::build`](crate::PoolBuilder::build), [`start_forkserver`](crate::start_forkserver)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The `Spawn` start method needs `mproc::init()` to run at the top of `main`, in the
    /// parent (so that its re-executed children become workers) — it did not run, or a spawned
    /// child ended (or timed out) before reaching it.
    #[error("{0}")]
    InitNotCalled(&'static str),
    /// `Fork` was refused because the parent has other threads (see
    /// [`ThreadedFork`](crate::ThreadedFork)).
    #[error(
        "refusing to fork a process with {threads} threads (a lock held by another thread stays locked forever in the child); use StartMethod::Spawn"
    )]
    ThreadedFork {
        /// Threads in the parent.
        threads: usize,
    },
    /// A pool's initializer failed in a worker.
    #[error("pool initializer failed: {message}")]
    InitializerFailed {
        /// The initializer's panic message.
        message: String,
    },
    /// A pool worker ended before it was ready (before or while running the initializer).
    #[error("a worker ended before it was ready: {status:?}")]
    WorkerEnded {
        /// How it ended.
        status: crate::ExitStatus,
    },
    /// The argument (or the initializer's argument) could not be encoded.
    #[error("argument could not be encoded: {message}")]
    Encode {
        /// What serde or postcard said.
        message: String,
    },
    /// Setting up the shared memory for the child failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// A system call failed (fork, exec, pidfd_open, a thread, the fork server's socket).
    #[error(transparent)]
    Os(#[from] OsError),
}

impl StartError {
    pub(crate) fn os(call: &'static str, errno: Errno) -> StartError {
        StartError::Os(OsError::new(call, errno))
    }
}

/// Why [`Process::join`](crate::Process::join) (or `join_timeout`, `join_async`) returned no
/// result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The function panicked in the child (exit status 1).
    #[error("child process panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The child exited without returning a result (it called `exit(code)`).
    #[error("child process exited with code {code} before returning a result")]
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The child was killed by a signal before returning a result.
    #[error("child process was killed by signal {signal}")]
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The child ended without returning a result, and how it ended is not known: its status
    /// was reaped by someone else (see [`ExitStatus::Unknown`](crate::ExitStatus::Unknown)).
    #[error(
        "child process ended without returning a result (its exit status was reaped elsewhere: is SIGCHLD ignored?)"
    )]
    StatusUnknown,
    /// `join_timeout` gave up; the child is still running (and still owned by the handle).
    #[error("child process still running after the timeout")]
    Timeout,
    /// The result was already taken by an earlier `join`.
    #[error("the process was already joined")]
    AlreadyJoined,
    /// A spawned child exited without becoming a worker: the program does not call
    /// `mproc::init()` first thing in `main`.
    #[error("{0}")]
    InitNotCalled(&'static str),
    /// The result could not be decoded.
    #[error("result could not be decoded: {message}")]
    Decode {
        /// What serde or postcard said.
        message: String,
    },
    /// Waiting for the child failed.
    #[error(transparent)]
    Os(#[from] OsError),
}

/// Any error of a [`Process`](crate::Process): starting it ([`StartError`]), joining it
/// ([`JoinError`]) or signalling it ([`OsError`]). Each operation returns its own error type;
/// this one lets a function that does several use `?` on all of them, and keeps matching
/// precise (`ProcessError::Join(JoinError::Panicked { .. })`).
///
/// ```
/// use mproc_pool::{JoinError, Process, ProcessError};
/// fn run() -> Result<u32, ProcessError> {
///     let mut p = Process::spawn(|x: u32| x + 1, 1)?; // StartError
///     Ok(p.join()?) // JoinError
/// }
/// assert_eq!(run()?, 2);
/// # Ok::<(), ProcessError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// Starting failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Joining failed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A signal could not be sent.
    #[error(transparent)]
    Os(#[from] OsError),
}
