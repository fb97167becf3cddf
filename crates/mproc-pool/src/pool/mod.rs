//! `Pool`: a fixed set of worker processes serving `map`, `imap`, `apply_async`, ...
//! (Python's `multiprocessing.Pool`), with failure semantics Python does not have.
//!
//! # How it works
//! Each worker has its own inbox (`Queue<Request>`, capacity [`PREFETCH`]) and all workers
//! share one results queue (`Queue<Reply>`). The parent keeps, per worker, the list of jobs
//! it sent and not yet had answered (`Worker::sent`). Workers answer strictly in order.
//!
//! A *handler* thread in the parent reads replies, refills inboxes, and watches the workers:
//! - a reply completes its job and wakes whoever waits for it;
//! - a dead worker (its pid reaped) is settled: first every reply it managed to send is read,
//!   then the requests still in its inbox are taken back and re-queued (they never started),
//!   and what remains in its `sent` list — at most the one job it held — fails with
//!   [`TaskError::WorkerDied`]. A replacement is started at the same slot;
//! - a worker that has been sent `max_tasks_per_child` jobs gets its inbox closed; it finishes
//!   them, exits, and is replaced.
//!
//! Threads that submit work also dispatch it directly, so an idle handler is never on the
//! path of a new job, and a thread waiting for a result reads the replies itself for a short
//! while (the handler then only watches the workers), so a short task's answer does not wait
//! for two thread wake-ups. Replacement workers are forked by the handler thread: the child runs
//! only mproc's worker loop and your task functions, never code that could hold a lock of
//! another parent thread. If your task functions take process-wide locks of their own, use
//! [`StartMethod::Spawn`].

mod board;
#[cfg(feature = "async")]
mod futures;
mod results;
mod state;

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{FnRef, encode_into};
use crate::process::{StartMethod, ThreadedFork, check_fork};
use crate::worker::{Reply, check_may_start, results_options};
use crate::{ProcessError, TaskError};
use mproc_queue::Queue;

pub use board::{
    BOARD_FORMAT, BoardSnapshot, BoardWorker, BoardWorkerState, FAILURE_KINDS, RESTART_CAUSES,
};
pub use results::{AsyncResult, Imap, MapResult};
use state::{Config, Job, Outcome, Shared, State, abandon_job, handler, start_one};

/// Jobs a worker may hold at once (running plus waiting in its inbox): enough that it never
/// waits for the parent between two jobs, few enough that work stays balanced.
pub const PREFETCH: usize = 2;

/// How often the handler looks for dead workers while jobs are in flight.
const WATCH_BUSY: Duration = Duration::from_millis(10);
/// ... and while the pool is idle.
const WATCH_IDLE: Duration = Duration::from_millis(100);
/// Workers that die before becoming ready, in a row, before the pool gives up.
const START_FAILURES: u32 = 3;
/// How long `terminate` lets workers react to SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

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
    processes: usize,
    method: StartMethod,
    threaded_fork: ThreadedFork,
    initializer: Option<Result<(FnRef, Vec<u8>), String>>,
    max_tasks_per_child: Option<u64>,
    arena_bytes: usize,
    task_timeout: Option<Duration>,
    retries: u32,
    max_memory: Option<u64>,
    chunksize: Option<usize>,
    start_timeout: Duration,
    undumpable_parent: bool,
    #[cfg_attr(not(feature = "progress"), allow(dead_code))]
    progress: bool,
    board: Option<String>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            method: StartMethod::default(),
            threaded_fork: ThreadedFork::default(),
            initializer: None,
            max_tasks_per_child: None,
            arena_bytes: crate::worker::DEFAULT_ARENA_BYTES,
            task_timeout: None,
            retries: 0,
            max_memory: None,
            chunksize: None,
            start_timeout: Duration::from_secs(30),
            undumpable_parent: false,
            progress: false,
            board: None,
        }
    }
}

impl PoolBuilder {
    /// Number of worker processes (default: the number of CPUs; at least 1).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n.max(1);
        self
    }

    /// Fork (default) or spawn; see [`StartMethod`].
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// What `Fork` does when this process already has other threads (default: warn once).
    pub fn threaded_fork(mut self, policy: ThreadedFork) -> Self {
        self.threaded_fork = policy;
        self
    }

    /// Runs `f(arg)` in every worker before its first task (Python's `initializer`). If it
    /// panics in any worker, the pool stops with [`TaskError::InitializerFailed`] — once, not
    /// in a respawn loop.
    pub fn initializer<A: Serialize + DeserializeOwned>(mut self, f: fn(A), arg: A) -> Self {
        self.initializer = Some(
            Pool::encode_chunk(&[arg])
                .map(|bytes| (FnRef::new(f), bytes))
                .map_err(|e| e.to_string()),
        );
        self
    }

    /// A time limit for every task (every chunk of a `map`): one that runs longer fails alone
    /// with [`TaskError::TimedOut`]; its worker is killed and replaced, and the tasks queued
    /// behind it run elsewhere. Measured from when its worker could start it; enforced within
    /// about 10 ms. Default: none. [`AsyncResult::timeout`] sets one per task.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Runs a task whose worker died (killed, crashed, OOM-killed) again, up to `n` times,
    /// before reporting [`TaskError::WorkerDied`] (default 0, as Python). Tasks that overran
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

    /// How long a spawned worker may take to reach [`init`](crate::init) (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Shows a progress bar on stderr during `map` and `starmap` (feature `progress`).
    #[cfg(feature = "progress")]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Starts the workers and waits until each has run the initializer.
    pub fn build(self) -> Result<Pool, ProcessError> {
        if self.undumpable_parent {
            crate::child::make_undumpable();
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

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Task functions are plain `fn(A) -> R` (closures that capture nothing coerce); `A` and `R`
/// are serde types. Results come back in order from `map`, lazily from `imap`, and through an
/// [`AsyncResult`] from `apply_async`.
///
/// **Failures stay local.** A task that panics fails alone with [`TaskError::Panicked`]. A
/// worker that dies (SIGKILL, OOM killer, `abort`) fails only the job it was running, with
/// [`TaskError::WorkerDied`]; jobs it had been sent but not started run elsewhere, a
/// replacement starts, and the pool goes on. (Python's `Pool.map` hangs forever in that case.)
///
/// Dropping a pool that was not [`join`](Pool::join)ed terminates it: workers are stopped
/// and reaped and their shared memory freed; unfinished tasks fail with
/// [`TaskError::Terminated`].
///
/// ```
/// use mproc_pool::Pool;
/// let pool = Pool::builder().processes(2).build()?;
/// let squares: Vec<u64> = pool.map(|x: u64| x * x, 0..100)?;
/// assert_eq!(squares[99], 9801);
/// let h = pool.apply_async(|s: String| s.to_uppercase(), "hi".to_string())?;
/// assert_eq!(h.get()?, "HI");
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    handler: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
    chunksize: Option<usize>,
    #[cfg_attr(not(feature = "progress"), allow(dead_code))]
    progress: bool,
}

impl Pool {
    /// A builder; see [`PoolBuilder`].
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// A pool of `processes` workers with the default options.
    pub fn new(processes: usize) -> Result<Pool, ProcessError> {
        Pool::builder().processes(processes).build()
    }

    fn start(b: PoolBuilder) -> Result<Pool, ProcessError> {
        check_may_start(b.method == StartMethod::Spawn)?;
        if b.method == StartMethod::Fork {
            check_fork(b.threaded_fork)?;
        }
        let initializer = match b.initializer {
            None => None,
            Some(Ok(init)) => Some(init),
            Some(Err(message)) => return Err(ProcessError::Encode { message }),
        };
        let config = Config {
            method: b.method,
            initializer,
            max_tasks: b.max_tasks_per_child,
            arena: b.arena_bytes,
            task_timeout: b.task_timeout,
            retries: b.retries,
            max_memory: b.max_memory,
        };
        let board = match &b.board {
            Some(name) => Some(board::Board::create(name, b.processes)?),
            None => None,
        };
        let capacity = (b.processes * (PREFETCH + 4)).max(64);
        let results: Queue<Reply> = results_options(capacity, b.arena_bytes).anonymous()?;
        let mut workers = Vec::with_capacity(b.processes);
        for i in 0..b.processes {
            workers.push(start_one(&results, &config, i as u32, false)?);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                workers,
                ..State::default()
            }),
            changed: Condvar::new(),
            generation: std::sync::atomic::AtomicU64::new(0),
            sleepers: std::sync::atomic::AtomicUsize::new(0),
            drivers: std::sync::atomic::AtomicUsize::new(0),
            results,
            config,
            board,
            wakers: Default::default(),
        });
        // Wait for every worker to be ready (initializer done) before anyone uses the pool.
        Self::await_ready(&shared, b.start_timeout)?;
        let handler = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("mproc-pool".into())
                .spawn(move || handler(shared))
                .map_err(|e| {
                    ProcessError::os(
                        "thread spawn",
                        nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    )
                })?
        };
        Ok(Pool {
            shared,
            handler: Mutex::new(Some(handler)),
            processes: b.processes,
            chunksize: b.chunksize,
            progress: b.progress,
        })
    }

    /// Reads replies until all workers are ready. A worker that fails its initializer, dies,
    /// or (spawn) does not reach `init` in time fails the start; the caller's drop of
    /// `shared` then kills and reaps every worker.
    fn await_ready(shared: &Shared, start_timeout: Duration) -> Result<(), ProcessError> {
        let deadline = Instant::now() + start_timeout;
        loop {
            let mut st = shared.lock();
            if st.workers.iter().all(|w| w.ready) {
                return Ok(());
            }
            if let Some(TaskError::InitializerFailed { message }) = st.broken.clone() {
                return Err(ProcessError::InitializerFailed { message });
            }
            for w in &mut st.workers {
                if let Some(status) = w.child.try_wait()? {
                    drop(st);
                    let mut st = shared.lock();
                    st.drain_replies(&shared.results);
                    if let Some(TaskError::InitializerFailed { message }) = st.broken.clone() {
                        return Err(ProcessError::InitializerFailed { message });
                    }
                    return Err(match status {
                        _ if shared.config.method == StartMethod::Spawn => {
                            ProcessError::InitNotCalled(
                                "a spawned worker exited before it was ready: call \
                                 mproc::init() first thing in main",
                            )
                        }
                        crate::ExitStatus::Code(code) => ProcessError::Exited { code },
                        crate::ExitStatus::Signaled(signal) => ProcessError::Signaled { signal },
                    });
                }
            }
            let started_all = st.workers.iter().all(|w| w.ready);
            drop(st);
            if !started_all
                && Instant::now() >= deadline
                && shared.config.method == StartMethod::Spawn
            {
                return Err(ProcessError::InitNotCalled(
                    "a spawned worker did not become ready in time: call mproc::init() first \
                     thing in main",
                ));
            }
            if let Ok(reply) = shared.results.get_timeout(Duration::from_millis(20)) {
                shared.lock().on_reply(reply);
            }
        }
    }

    /// Number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The process ids of the current workers.
    pub fn pids(&self) -> Vec<u32> {
        self.shared
            .lock()
            .workers
            .iter()
            .map(|w| w.child.pid())
            .collect()
    }

    /// How many workers have been replaced so far (after dying or `max_tasks_per_child`).
    pub fn replaced_workers(&self) -> u64 {
        self.shared.lock().replaced
    }

    /// What the pool's workers are doing and have done: per worker, its pid, the tasks
    /// (chunks) it completed, how long it has had work and how long it waited; and why
    /// workers were replaced.
    ///
    /// ```
    /// let pool = mproc_pool::Pool::builder().processes(2).build()?;
    /// pool.map(|x: u32| x + 1, 0..100)?;
    /// let stats = pool.stats();
    /// assert_eq!(stats.workers.len(), 2);
    /// assert!(stats.tasks_done >= 2);
    /// assert_eq!(stats.restarts.died, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        let st = self.shared.lock();
        let now = Instant::now();
        let workers: Vec<WorkerStats> = st
            .workers
            .iter()
            .map(|w| {
                let busy = w.busy_total + w.busy_since.map_or(Duration::ZERO, |s| now - s);
                let age = now - w.born;
                WorkerStats {
                    pid: w.child.pid(),
                    tasks_done: w.completed,
                    running: !w.sent.is_empty(),
                    busy,
                    idle: age.saturating_sub(busy),
                }
            })
            .collect();
        PoolStats {
            tasks_done: st.tasks_done + workers.iter().map(|w| w.tasks_done).sum::<u64>(),
            workers,
            retried: st.retried,
            restarts: st.restarts,
        }
    }

    /// Queues a job and sends it to a worker if one has room.
    fn submit(&self, func: FnRef, count: u32, args: Vec<u8>) -> Result<u64, TaskError> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.broken {
            return Err(e.clone());
        }
        if st.closed {
            return Err(TaskError::Closed);
        }
        let id = st.next_job;
        st.next_job += 1;
        st.jobs.insert(
            id,
            Job::new(func, count, args, self.shared.config.task_timeout),
        );
        st.pending.push_back(id);
        st.dispatch(&self.shared.config);
        Ok(id)
    }

    /// Waits for any of `ids` to finish (or `deadline`); returns its index in `ids` and
    /// removes the job if `take`.
    fn wait_any(
        &self,
        ids: &[u64],
        deadline: Option<Instant>,
        take: bool,
    ) -> Result<(usize, Outcome), TaskError> {
        self.shared.wait_until(deadline, |st| {
            for (i, id) in ids.iter().enumerate() {
                match st.jobs.get(id) {
                    Some(job) if job.outcome.is_some() => {
                        let outcome = if take {
                            st.jobs.remove(id).and_then(|j| j.outcome)
                        } else {
                            job.outcome.clone()
                        };
                        let outcome = outcome.unwrap_or(Outcome::Failed(TaskError::Terminated));
                        return Some((i, outcome));
                    }
                    Some(_) => {}
                    None => return Some((i, Outcome::Failed(TaskError::Terminated))),
                }
            }
            None
        })
    }

    fn abandon(&self, ids: impl IntoIterator<Item = u64>) {
        let mut st = self.shared.lock();
        for id in ids {
            abandon_job(&mut st, id);
        }
    }

    fn default_chunksize(&self, n: usize) -> usize {
        self.chunksize
            .unwrap_or_else(|| n.div_ceil(4 * self.processes).max(1))
    }

    /// Encodes a chunk of arguments back to back.
    fn encode_chunk<T: Serialize>(items: &[T]) -> Result<Vec<u8>, TaskError> {
        let mut args = Vec::new();
        for item in items {
            encode_into(item, &mut args).map_err(|e| TaskError::Encode {
                message: format!("argument: {}", results::encode_message(e)),
            })?;
        }
        Ok(args)
    }

    /// Submits `items` in chunks of `func` calls and collects the results in order.
    /// Submits `items` in chunks of `chunk` (default: [`Self::default_chunksize`]) calls of
    /// `func`; returns each chunk's job id and length. Nothing stays submitted on an error.
    fn submit_all<T: Serialize>(
        &self,
        func: FnRef,
        items: &[T],
        chunk: Option<usize>,
    ) -> Result<Vec<(u64, usize)>, TaskError> {
        let chunk = chunk
            .unwrap_or_else(|| self.default_chunksize(items.len()))
            .max(1);
        let mut ids = Vec::with_capacity(items.len().div_ceil(chunk));
        for part in items.chunks(chunk) {
            let submitted = Self::encode_chunk(part)
                .and_then(|args| self.submit(func, part.len() as u32, args));
            match submitted {
                Ok(id) => ids.push((id, part.len())),
                Err(e) => {
                    self.abandon(ids.iter().map(|j| j.0));
                    return Err(e);
                }
            }
        }
        Ok(ids)
    }

    /// Submits `items` in chunks of `func` calls and collects the results in order.
    fn run_all<T: Serialize, R: DeserializeOwned>(
        &self,
        func: FnRef,
        items: Vec<T>,
        chunk: Option<usize>,
    ) -> Result<Vec<R>, TaskError> {
        let n = items.len();
        let ids = self.submit_all(func, &items, chunk)?;
        drop(items);
        #[cfg(feature = "progress")]
        let bar = self.progress.then(|| {
            let bar = indicatif::ProgressBar::new(n as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} items, {per_sec}, eta {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let mut out = Vec::with_capacity(n);
        for (k, &(id, len)) in ids.iter().enumerate() {
            let outcome = match self.wait_any(&[id], None, true) {
                Ok((_, o)) => o,
                Err(e) => {
                    self.abandon(ids[k..].iter().map(|j| j.0));
                    return Err(e);
                }
            };
            #[cfg(feature = "progress")]
            if let Some(bar) = &bar {
                bar.inc(len as u64);
                let r = self.shared.lock().restarts;
                let lost = r.died + r.timed_out + r.cancelled;
                if lost > 0 {
                    bar.set_message(format!("({lost} workers lost, replaced)"));
                }
            }
            for r in results::outcome_items::<R>(outcome, len) {
                match r {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        self.abandon(ids[k + 1..].iter().map(|j| j.0));
                        return Err(e);
                    }
                }
            }
        }
        #[cfg(feature = "progress")]
        if let Some(bar) = bar {
            bar.finish();
        }
        Ok(out)
    }

    /// Applies `f` to every item, in parallel; results in input order. The first failed
    /// item's error is returned (the remaining tasks are abandoned). For per-item outcomes use
    /// [`imap`](Pool::imap).
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run_all(FnRef::new(f), items.into_iter().collect(), None)
    }

    /// As [`map`](Pool::map) with `chunksize` items per task for this call (Python's
    /// `map(f, items, chunksize)`), whatever the pool's default.
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run_all(FnRef::new(f), items.into_iter().collect(), Some(chunksize))
    }

    /// Starts [`map`](Pool::map) and returns at once (Python's `map_async`): the
    /// [`MapResult`] gives the results in input order when they are all in.
    ///
    /// ```
    /// let pool = mproc_pool::Pool::builder().processes(2).build()?;
    /// let squares = pool.map_async(|x: u64| x * x, 0..100)?;
    /// // ... other work while the workers compute ...
    /// assert_eq!(squares.get()?[99], 9801);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<MapResult<R>, TaskError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let ids = self.submit_all(FnRef::new(f), &items, None)?;
        Ok(MapResult::new(Arc::clone(&self.shared), ids))
    }

    /// As [`map`](Pool::map) for a two-argument function over pairs (Python's `starmap`;
    /// for more arguments, take a tuple in `map`).
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, TaskError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run_all(FnRef::pair(f), items.into_iter().collect(), None)
    }

    /// As [`starmap`](Pool::starmap), returning at once (Python's `starmap_async`).
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<MapResult<R>, TaskError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<(A, B)> = items.into_iter().collect();
        let ids = self.submit_all(FnRef::pair(f), &items, None)?;
        Ok(MapResult::new(Arc::clone(&self.shared), ids))
    }

    /// Lazily applies `f` to the items, yielding each item's result in input order. Input is
    /// pulled only as results are consumed (at most `2 × processes` chunks ahead), so an
    /// endless iterator works. Each item fails alone.
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, items: I) -> Imap<'_, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, FnRef::new(f), items.into_iter(), true)
    }

    /// As [`imap`](Pool::imap), yielding results in the order they finish.
    pub fn imap_unordered<A, R, I>(&self, f: fn(A) -> R, items: I) -> Imap<'_, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, FnRef::new(f), items.into_iter(), false)
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    pub fn apply<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R, TaskError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(f, arg)?.get()
    }

    /// Starts `f(arg)` in a worker; the [`AsyncResult`] gives the result later.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<AsyncResult<R>, TaskError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let id = self.submit(FnRef::new(f), 1, Self::encode_chunk(&[arg])?)?;
        Ok(AsyncResult::new(Arc::clone(&self.shared), id))
    }

    /// Accepts no more tasks; the workers exit once the queued ones are done (see
    /// [`join`](Pool::join)).
    pub fn close(&self) {
        self.shared.lock().closed = true;
    }

    /// Closes the pool, waits for every queued task to finish, stops the workers and reaps
    /// them. Results of `AsyncResult`s remain available.
    pub fn join(&self) -> Result<(), TaskError> {
        {
            let mut st = self.shared.lock();
            st.closed = true;
            while st.busy() && st.broken.is_none() && !st.stopping {
                st = self.shared.sleep(st, Duration::from_millis(100));
            }
        }
        self.stop(false);
        match self.shared.lock().broken.clone() {
            Some(TaskError::Terminated) | None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Stops the workers now (SIGTERM, then SIGKILL after a grace period of 1 s) and reaps
    /// them; unfinished tasks fail with [`TaskError::Terminated`].
    pub fn terminate(&self) {
        self.shared.lock().break_pool_soft(TaskError::Terminated);
        self.stop(true);
    }

    /// Stops the handler, then the workers: closes their inboxes (graceful) or signals them.
    fn stop(&self, terminate: bool) {
        self.shared.lock().stopping = true;
        // Wakes the handler if it sleeps on the results queue; nothing is read from it after
        // this (a worker's late reply is dropped with the queue).
        self.shared.results.close();
        let handle = self
            .handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        if let Some(board) = &self.shared.board {
            board.unlink();
        }
        let mut workers = std::mem::take(&mut self.shared.lock().workers);
        for w in &workers {
            if terminate {
                let _ = w.child.signal(Signal::SIGTERM);
            } else {
                w.inbox.close();
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        for w in &mut workers {
            if !matches!(w.child.wait_until(Some(deadline)), Ok(Some(_))) {
                w.child.kill_and_reap();
            }
        }
        // Replies nobody will read stay in the results queue's memfd, which goes with it.
        self.shared.notify();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let running = self
            .handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if running {
            self.terminate();
        }
    }
}
