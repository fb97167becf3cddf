//! [`PoolBuilder`] (a pool's options) and [`PoolStats`] (what `Pool::stats` reports).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pool;
use crate::StartError;
use crate::call::FnRef;
use crate::launch::{LaunchOptions, launch_setters};

/// Configures and starts a [`Pool`].
///
/// ```
/// use mproc_pool::{Pool, StartMethod, ThreadedFork};
/// let pool = Pool::builder()
///     .processes(2)
///     .start_method(StartMethod::Fork)
///     .threaded_fork(ThreadedFork::Allow)
///     .max_tasks_per_child(1000)
///     .build()?;
/// assert_eq!(pool.map(|x: u32| x + 1, [1, 2, 3])?, vec![2, 3, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    /// `None`: one per CPU, counted at `build` (reading the cgroup's CPU limit takes a few
    /// file reads, wasted when `processes` is then set).
    pub(super) processes: Option<usize>,
    pub(super) launch: LaunchOptions,
    pub(super) initializer: Option<Result<(FnRef, Vec<u8>), String>>,
    pub(super) max_tasks_per_child: Option<u64>,
    pub(super) arena_bytes: usize,
    pub(super) task_timeout: Option<Duration>,
    pub(super) retries: u32,
    pub(super) max_memory: Option<u64>,
    pub(super) chunksize: Option<usize>,
    pub(super) undumpable_parent: bool,
    #[cfg_attr(not(feature = "progress"), allow(dead_code))]
    pub(super) progress: bool,
    pub(super) board: Option<String>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: None,
            launch: LaunchOptions::default(),
            initializer: None,
            max_tasks_per_child: None,
            arena_bytes: crate::protocol::DEFAULT_ARENA_BYTES,
            task_timeout: None,
            retries: 0,
            max_memory: None,
            chunksize: None,
            undumpable_parent: false,
            progress: false,
            board: None,
        }
    }
}

impl PoolBuilder {
    /// Number of worker processes (default: the number of CPUs; at least 1).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n.max(1));
        self
    }

    launch_setters!(launch);

    /// Sets the start method, threaded-fork policy and start timeout at once.
    pub fn launch_options(mut self, launch: LaunchOptions) -> Self {
        self.launch = launch;
        self
    }

    /// Runs `f(arg)` in every worker before its first task (Python's `initializer`). If it
    /// panics in any worker, `build` fails with
    /// [`StartError::InitializerFailed`](crate::StartError::InitializerFailed) — once, not in a
    /// respawn loop.
    pub fn initializer<A: Serialize + DeserializeOwned>(mut self, f: fn(A), arg: A) -> Self {
        self.initializer = Some(
            crate::codec::encode_args(&[arg])
                .map(|bytes| (FnRef::new(f), bytes))
                .map_err(|e| e.to_string()),
        );
        self
    }

    /// A time limit for every task (every chunk of a `map`): one that runs longer fails alone
    /// with [`TaskError::Timeout`](crate::TaskError::Timeout); its worker is killed and replaced, and the tasks queued
    /// behind it run elsewhere. Measured from when its worker could start it; enforced within
    /// about 10 ms. Default: none. [`AsyncResult::timeout`](crate::AsyncResult::timeout) sets one per task.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Runs a task whose worker died (killed, crashed, OOM-killed) again, up to `n` times,
    /// before reporting [`TaskError::WorkerDied`](crate::TaskError::WorkerDied) (default 0, as Python). Tasks that overran
    /// their limit or were cancelled are not retried. Only for tasks that may safely run twice.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Retires a worker whose resident memory exceeds `bytes` after a task (it answers that
    /// task first, then exits; the tasks waiting in its inbox go elsewhere and a fresh worker
    /// replaces it), so a leaking or bloating task cannot grow a worker without bound
    /// (mpire's and billiard's `max_memory_per_child`). Checked after each task (chunk): a
    /// task that needs more than the machine has while it runs is the OOM killer's, and then
    /// fails alone with `WorkerDied`. Default: no ceiling.
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// Publishes the pool's status in a named segment (kind `pool`), so tools outside the
    /// process see it: each worker's pid and state (starting, idle, running job N), tasks
    /// done, jobs failed by kind, restarts by cause (`mproc ls --json`, `mproc metrics`,
    /// `mproc top`). The name is created like any segment's (a stale one left by a dead
    /// pool is reclaimed) and unlinked when the pool is dropped. Default: none.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.board = Some(name.into());
        self
    }

    /// Bytes of the body arena of each of the pool's queues (each worker's inbox and the
    /// results queue): the largest encoded chunk of arguments, or of results, that can
    /// travel. A larger one fails its tasks with [`TaskError::Encode`](crate::TaskError).
    /// Default [`DEFAULT_ARENA_BYTES`](crate::DEFAULT_ARENA_BYTES) (64 MiB): the queues are
    /// memfds whose pages come only as they are used, so this costs address space, not memory.
    pub fn arena_bytes(mut self, bytes: usize) -> Self {
        self.arena_bytes = bytes;
        self
    }

    /// Replaces each worker after it has run `k` jobs (chunks), freeing whatever it leaked
    /// (Python's `maxtasksperchild`). Default: never.
    pub fn max_tasks_per_child(mut self, k: u64) -> Self {
        self.max_tasks_per_child = Some(k.max(1));
        self
    }

    /// Items per job for `map`, `starmap`, `imap` and `imap_unordered`. Default: for `map` and
    /// `starmap`, Python's rule (`len / (4 × processes)`, rounded up); for the lazy `imap`s, 1.
    /// A worker that dies fails its whole chunk.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n.max(1));
        self
    }

    /// Shows a progress bar on stderr during `map` and `starmap` (feature `progress`).
    #[cfg(feature = "progress")]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Starts the workers and waits until each has run the initializer.
    pub fn build(self) -> Result<Pool, StartError> {
        if self.undumpable_parent {
            crate::forker::make_undumpable();
        }
        Pool::start(self)
    }

    /// Also makes *this* process non-dumpable when the pool is built (workers always are):
    /// other processes of the same user can then no longer open the pool's queues through
    /// `/proc/PID/fd` of the parent either, and inject or rewrite tasks. It affects the whole
    /// process for the rest of its life: no core dumps, no `ptrace` attach by the same user
    /// (debuggers need root). Default: off.
    pub fn undumpable_parent(mut self, on: bool) -> Self {
        self.undumpable_parent = on;
        self
    }
}

/// Numbers about a pool, from [`Pool::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// The current workers.
    pub workers: Vec<WorkerStats>,
    /// Tasks (chunks) completed by all workers, past ones included.
    pub tasks_done: u64,
    /// Tasks run again after their worker died (`PoolBuilder::retries`).
    pub retried: u64,
    /// Why workers were replaced.
    pub restarts: Restarts,
}

/// One worker, in [`PoolStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    /// Its process id.
    pub pid: u32,
    /// Tasks (chunks) it completed.
    pub tasks_done: u64,
    /// Whether it has work now.
    pub running: bool,
    /// How long it has had work since it started.
    pub busy: Duration,
    /// How long it has waited for work since it started.
    pub idle: Duration,
}

/// Why workers were replaced, in [`PoolStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restarts {
    /// It died (killed, crashed, OOM-killed, exited).
    pub died: u64,
    /// A task overran its time limit.
    pub timed_out: u64,
    /// A running task was cancelled.
    pub cancelled: u64,
    /// It outgrew `max_memory_per_child`.
    pub memory: u64,
    /// It ran `max_tasks_per_child` tasks.
    pub max_tasks: u64,
}
