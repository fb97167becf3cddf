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
//! path of a new job. Replacement workers are forked by the handler thread: the child runs
//! only mproc's worker loop and your task functions, never code that could hold a lock of
//! another parent thread. If your task functions take process-wide locks of their own, use
//! [`StartMethod::Spawn`].

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mproc_queue::{GetError, PutError, Queue};
use nix::sys::signal::Signal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{FnRef, decode_result, encode, layout_check};
use crate::child::ChildProc;
use crate::process::{StartMethod, ThreadedFork, check_fork, start_worker};
use crate::worker::{Boot, Reply, Request, check_may_start, inbox_options, results_options};
use crate::{ProcessError, TaskError};

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

type Outcomes = Vec<Result<Vec<u8>, TaskError>>;

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
    chunksize: Option<usize>,
    start_timeout: Duration,
    #[cfg_attr(not(feature = "progress"), allow(dead_code))]
    progress: bool,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            method: StartMethod::default(),
            threaded_fork: ThreadedFork::default(),
            initializer: None,
            max_tasks_per_child: None,
            chunksize: None,
            start_timeout: Duration::from_secs(30),
            progress: false,
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
            encode(&arg)
                .map(|bytes| (FnRef::new(f), bytes))
                .map_err(|e| e.to_string()),
        );
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
        Pool::start(self)
    }
}

/// A job: one function over a chunk of arguments.
#[derive(Debug)]
struct Job {
    func: FnRef,
    /// The encoded arguments; `None` while a worker holds them.
    args: Option<Vec<Vec<u8>>>,
    outcome: Option<Outcomes>,
    /// Nobody will collect the outcome (its `AsyncResult` or `imap` was dropped).
    abandoned: bool,
}

/// One worker process and what the parent has sent it.
#[derive(Debug)]
struct Worker {
    child: ChildProc,
    inbox: Queue<Request>,
    /// Jobs sent and not yet answered, oldest first.
    sent: VecDeque<u64>,
    /// Jobs ever sent to this process.
    dispatched: u64,
    /// Jobs (chunks) it completed.
    completed: u64,
    /// It ran the initializer and takes requests.
    ready: bool,
    /// Its inbox is closed (max_tasks_per_child reached); it exits when done.
    retiring: bool,
}

impl Worker {
    /// Alive and not retiring: new jobs may be sent to it.
    fn takes_work(&self) -> bool {
        !self.retiring && self.child.status().is_none()
    }
}

#[derive(Debug)]
struct Config {
    method: StartMethod,
    initializer: Option<(FnRef, Vec<u8>)>,
    max_tasks: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    workers: Vec<Worker>,
    pending: VecDeque<u64>,
    jobs: HashMap<u64, Job>,
    next_job: u64,
    /// No new jobs (close / join / terminate).
    closed: bool,
    /// The handler thread should exit.
    stopping: bool,
    /// Why the pool cannot go on (initializer failure, workers that cannot start, terminate).
    broken: Option<TaskError>,
    start_failures: u32,
    last_watch: Option<Instant>,
    /// Workers replaced after dying or retiring.
    replaced: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    results: Queue<Reply>,
    config: Config,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn start_one(
    shared_results: &Queue<Reply>,
    config: &Config,
    index: u32,
) -> Result<Worker, ProcessError> {
    let inbox: Queue<Request> = inbox_options(PREFETCH).anonymous()?;
    let boot = Boot {
        index,
        inbox_fd: inbox.segment().as_fd().as_raw_fd(),
        results_fd: shared_results.segment().as_fd().as_raw_fd(),
        check: layout_check(),
        one_shot: false,
        initializer: config.initializer.clone(),
    };
    let child = start_worker(config.method, &boot)?;
    Ok(Worker {
        child,
        inbox,
        sent: VecDeque::new(),
        dispatched: 0,
        completed: 0,
        ready: false,
        retiring: false,
    })
}

impl State {
    fn worker_of(&mut self, index: u32, pid: u32) -> Option<&mut Worker> {
        self.workers
            .get_mut(index as usize)
            .filter(|w| w.child.pid() == pid)
    }

    fn finish(&mut self, id: u64, outcomes: Outcomes) {
        if let Some(job) = self.jobs.get_mut(&id) {
            if job.abandoned {
                self.jobs.remove(&id);
            } else if job.outcome.is_none() {
                job.outcome = Some(outcomes);
            }
        }
    }

    /// Fails a job; a one-element failure stands for its whole chunk (see [`expand`]).
    fn fail(&mut self, id: u64, error: &TaskError) {
        self.finish(id, vec![Err(error.clone())]);
    }

    fn on_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Started { .. } => {}
            Reply::Ready { worker, pid } => {
                if let Some(w) = self.worker_of(worker, pid) {
                    w.ready = true;
                    self.start_failures = 0;
                }
            }
            Reply::InitFailed { message, .. } => {
                self.break_pool(TaskError::InitializerFailed { message });
            }
            Reply::Done {
                worker,
                pid,
                job,
                outcomes,
            } => {
                if let Some(w) = self.worker_of(worker, pid) {
                    if let Some(pos) = w.sent.iter().position(|&j| j == job) {
                        w.sent.remove(pos);
                    }
                    w.completed += 1;
                }
                self.finish(job, outcomes);
            }
        }
    }

    /// Fails every unfinished job with `error`, stops accepting work and kills the workers.
    fn break_pool(&mut self, error: TaskError) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(error.clone());
        self.closed = true;
        self.stopping = true;
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            self.fail(id, &error);
        }
        self.pending.clear();
        for w in &mut self.workers {
            w.sent.clear();
            let _ = w.child.signal(Signal::SIGKILL);
        }
    }

    /// Sends pending jobs to workers with room, oldest job first, each to the least loaded
    /// worker; then lets idle workers steal jobs waiting in a busy worker's inbox.
    fn dispatch(&mut self, config: &Config) {
        while let Some(&id) = self.pending.front() {
            let Some(w) = self.least_loaded() else {
                break;
            };
            self.pending.pop_front();
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if job.abandoned {
                self.jobs.remove(&id);
                continue;
            }
            let request = Request {
                job: id,
                func: job.func,
                args: job.args.take().unwrap_or_default(),
            };
            if let Err(request) = self.send(w, request, config) {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.args = Some(request.args);
                }
                self.pending.push_front(id);
                break;
            }
        }
        if self.pending.is_empty() {
            self.steal(config);
        }
    }

    /// The live, non-retiring worker with the fewest jobs, if it has room.
    fn least_loaded(&self) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.takes_work() && w.sent.len() < PREFETCH)
            .min_by_key(|(_, w)| w.sent.len())
            .map(|(i, _)| i)
    }

    /// Puts `request` in worker `w`'s inbox; gives it back if the inbox is full or closed.
    /// A request that cannot be stored at all (shared memory exhausted) fails its job.
    fn send(&mut self, w: usize, request: Request, config: &Config) -> Result<(), Request> {
        let id = request.job;
        let worker = &mut self.workers[w];
        match worker.inbox.try_put(request) {
            Ok(()) => {
                worker.sent.push_back(id);
                worker.dispatched += 1;
                if config.max_tasks.is_some_and(|k| worker.dispatched >= k) {
                    worker.inbox.close();
                    worker.retiring = true;
                }
                Ok(())
            }
            Err(PutError::Message { value, reason }) => {
                let n = value.args.len().max(1);
                self.finish(
                    id,
                    vec![
                        Err(TaskError::Encode {
                            message: format!("request could not be sent: {reason}"),
                        });
                        n
                    ],
                );
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }

    /// An idle worker takes a job that waits, not yet started, in another worker's inbox
    /// (taking it out of the inbox is atomic: the owner either got it first or never will).
    fn steal(&mut self, config: &Config) {
        loop {
            let Some(idle) = self
                .workers
                .iter()
                .position(|w| w.takes_work() && w.sent.is_empty())
            else {
                return;
            };
            let Some(victim) = self
                .workers
                .iter()
                .position(|w| w.child.status().is_none() && w.sent.len() >= 2)
            else {
                return;
            };
            let Ok(request) = self.workers[victim].inbox.try_get() else {
                return;
            };
            let id = request.job;
            self.workers[victim].sent.retain(|&j| j != id);
            if let Err(request) = self.send(idle, request, config) {
                // The idle worker's inbox refused (closed): queue the job again.
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.args = Some(request.args);
                    self.pending.push_front(id);
                }
                return;
            }
        }
    }

    /// Reaps dead workers, settles their jobs and starts replacements.
    fn watch(&mut self, shared: &Shared) {
        self.last_watch = Some(Instant::now());
        let mut dead = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            if w.child.status().is_none() && matches!(w.child.try_wait(), Ok(Some(_))) {
                dead.push(i);
            }
        }
        if dead.is_empty() {
            return;
        }
        // Every reply a dead worker sent is in the results queue now: read them first.
        self.drain_replies(&shared.results);
        for i in dead {
            self.settle(i, shared);
        }
    }

    fn drain_replies(&mut self, results: &Queue<Reply>) {
        loop {
            match results.try_get() {
                Ok(reply) => self.on_reply(reply),
                Err(GetError::Message { reason }) => {
                    eprintln!("mproc pool: unreadable reply dropped: {reason}");
                }
                Err(_) => break,
            }
        }
    }

    fn settle(&mut self, i: usize, shared: &Shared) {
        let w = &mut self.workers[i];
        let status = w.child.status();
        let pid = w.child.pid();
        let was_ready = w.ready;
        // Requests it never took: back to the front of the queue, in order.
        let mut back = Vec::new();
        while let Ok(req) = w.inbox.try_get() {
            back.push(req);
        }
        for req in back.into_iter().rev() {
            w.sent.retain(|&j| j != req.job);
            if let Some(job) = self.jobs.get_mut(&req.job) {
                job.args = Some(req.args);
                self.pending.push_front(req.job);
            }
        }
        let w = &mut self.workers[i];
        let lost: Vec<u64> = w.sent.drain(..).collect();
        let (signal, code) = status.map_or((None, None), |s| s.parts());
        let clean_exit = status == Some(crate::ExitStatus::Code(0)) && w.retiring;
        for id in lost {
            self.fail(id, &TaskError::WorkerDied { pid, signal, code });
        }
        if self.stopping || self.broken.is_some() {
            return;
        }
        if !was_ready && !clean_exit {
            self.start_failures += 1;
            if self.start_failures >= START_FAILURES {
                self.break_pool(TaskError::Start {
                    message: format!(
                        "{START_FAILURES} workers in a row died before they were ready (last: pid {pid}, {status:?})"
                    ),
                });
                return;
            }
        }
        match start_one(&shared.results, &shared.config, i as u32) {
            Ok(w) => {
                self.workers[i] = w;
                self.replaced += 1;
            }
            Err(e) => self.break_pool(TaskError::Start {
                message: e.to_string(),
            }),
        }
    }

    fn busy(&self) -> bool {
        !self.pending.is_empty() || self.workers.iter().any(|w| !w.sent.is_empty())
    }
}

/// The handler thread: replies, refills, deaths.
fn handler(shared: Arc<Shared>) {
    loop {
        let busy = shared.lock().busy();
        let wait = if busy { WATCH_BUSY } else { WATCH_IDLE };
        let first = shared.results.get_timeout(wait);
        let mut st = shared.lock();
        match first {
            Ok(reply) => {
                st.on_reply(reply);
                st.drain_replies(&shared.results);
            }
            Err(GetError::Message { reason }) => {
                eprintln!("mproc pool: unreadable reply dropped: {reason}");
            }
            Err(_) => {}
        }
        let due = st.last_watch.is_none_or(|t| t.elapsed() >= WATCH_BUSY);
        if due {
            st.watch(&shared);
        }
        st.dispatch(&shared.config);
        let stop = st.stopping;
        drop(st);
        shared.changed.notify_all();
        if stop {
            return;
        }
    }
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
        };
        let capacity = (b.processes * (PREFETCH + 4)).max(64);
        let results: Queue<Reply> = results_options(capacity).anonymous()?;
        let mut workers = Vec::with_capacity(b.processes);
        for i in 0..b.processes {
            workers.push(start_one(&results, &config, i as u32)?);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                workers,
                ..State::default()
            }),
            changed: Condvar::new(),
            results,
            config,
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
            match shared.results.get_timeout(Duration::from_millis(20)) {
                Ok(reply) => shared.lock().on_reply(reply),
                Err(_) => {}
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

    /// Queues a job and sends it to a worker if one has room.
    fn submit(&self, func: FnRef, args: Vec<Vec<u8>>) -> Result<u64, TaskError> {
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
            Job {
                func,
                args: Some(args),
                outcome: None,
                abandoned: false,
            },
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
    ) -> Result<(usize, Outcomes), TaskError> {
        let mut st = self.shared.lock();
        loop {
            for (i, id) in ids.iter().enumerate() {
                match st.jobs.get(id) {
                    Some(job) if job.outcome.is_some() => {
                        let outcome = if take {
                            st.jobs.remove(id).and_then(|j| j.outcome)
                        } else {
                            job.outcome.clone()
                        };
                        return Ok((i, outcome.unwrap_or_default()));
                    }
                    Some(_) => {}
                    None => return Err(TaskError::Terminated),
                }
            }
            let timeout = match deadline {
                None => Duration::from_millis(100),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(TaskError::Timeout);
                    }
                    left.min(Duration::from_millis(100))
                }
            };
            st = self
                .shared
                .changed
                .wait_timeout(st, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
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

    fn run_all<R: DeserializeOwned>(
        &self,
        func: FnRef,
        args: Vec<Vec<u8>>,
    ) -> Result<Vec<R>, TaskError> {
        let n = args.len();
        let chunk = self.default_chunksize(n);
        let mut ids = Vec::with_capacity(n.div_ceil(chunk));
        let mut args = args.into_iter();
        loop {
            let part: Vec<Vec<u8>> = args.by_ref().take(chunk).collect();
            if part.is_empty() {
                break;
            }
            match self.submit(func, part) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    self.abandon(ids);
                    return Err(e);
                }
            }
        }
        #[cfg(feature = "progress")]
        let bar = self.progress.then(|| indicatif::ProgressBar::new(n as u64));
        let mut out = Vec::with_capacity(n);
        for (k, &id) in ids.iter().enumerate() {
            let outcomes = match self.wait_any(&[id], None, true) {
                Ok((_, o)) => o,
                Err(e) => {
                    self.abandon(ids[k..].iter().copied());
                    return Err(e);
                }
            };
            let expected = chunk.min(n - k * chunk);
            #[cfg(feature = "progress")]
            if let Some(bar) = &bar {
                bar.inc(expected as u64);
            }
            for r in expand(outcomes, expected) {
                match r.and_then(|bytes| decode_result::<R>(&bytes)) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        self.abandon(ids[k + 1..].iter().copied());
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
        let args = items
            .into_iter()
            .map(|a| encode(&a))
            .collect::<Result<Vec<_>, _>>()?;
        self.run_all(FnRef::new(f), args)
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
        let args = items
            .into_iter()
            .map(|a| encode(&a))
            .collect::<Result<Vec<_>, _>>()?;
        self.run_all(FnRef::pair(f), args)
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
        let id = self.submit(FnRef::new(f), vec![encode(&arg)?])?;
        Ok(AsyncResult {
            shared: Arc::clone(&self.shared),
            id,
            _r: PhantomData,
        })
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
                st = self
                    .shared
                    .changed
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
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
        let handle = self
            .handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
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
        self.shared.results.close();
        self.shared.changed.notify_all();
    }
}

impl State {
    /// As `break_pool`, but signals nobody (`stop` does it, with a grace period).
    fn break_pool_soft(&mut self, error: TaskError) {
        if self.broken.is_none() {
            self.broken = Some(error.clone());
        }
        self.closed = true;
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            self.fail(id, &error);
        }
        self.pending.clear();
        for w in &mut self.workers {
            w.sent.clear();
        }
    }
}

fn abandon_job(st: &mut State, id: u64) {
    match st.jobs.get_mut(&id) {
        Some(job) if job.outcome.is_some() => {
            st.jobs.remove(&id);
        }
        Some(job) => job.abandoned = true,
        None => {}
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

/// A one-element failure stands for the whole chunk; otherwise outcomes map one-to-one.
fn expand(outcomes: Outcomes, expected: usize) -> Vec<Result<Vec<u8>, TaskError>> {
    if outcomes.len() == expected {
        return outcomes;
    }
    match outcomes.into_iter().next() {
        Some(Err(e)) => vec![Err(e); expected],
        _ => vec![
            Err(TaskError::Encode {
                message: "a worker answered with the wrong number of results".into(),
            });
            expected
        ],
    }
}

/// The pending result of [`Pool::apply_async`] (Python's `AsyncResult`).
///
/// ```
/// use std::time::Duration;
/// use mproc_pool::Pool;
/// let pool = Pool::new(1)?;
/// let h = pool.apply_async(|n: u64| (1..=n).product::<u64>(), 10)?;
/// h.wait();
/// assert!(h.ready());
/// assert_eq!(h.get_timeout(Duration::from_secs(5))?, 3_628_800);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AsyncResult<R> {
    shared: Arc<Shared>,
    id: u64,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    fn outcome(&self, deadline: Option<Instant>) -> Result<Result<Vec<u8>, TaskError>, TaskError> {
        let mut st = self.shared.lock();
        loop {
            match st.jobs.get(&self.id) {
                Some(job) => {
                    if let Some(o) = &job.outcome {
                        return Ok(o.first().cloned().unwrap_or(Err(TaskError::Terminated)));
                    }
                }
                None => return Err(TaskError::Terminated),
            }
            let wait = match deadline {
                None => Duration::from_millis(100),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(TaskError::Timeout);
                    }
                    left.min(Duration::from_millis(100))
                }
            };
            st = self
                .shared
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the task and returns its result (can be called again).
    pub fn get(&self) -> Result<R, TaskError> {
        self.outcome(None)?.and_then(|bytes| decode_result(&bytes))
    }

    /// As [`get`](AsyncResult::get), giving up with [`TaskError::Timeout`] after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        self.outcome(Some(Instant::now() + timeout))?
            .and_then(|bytes| decode_result(&bytes))
    }

    /// Waits until the task has finished (successfully or not).
    pub fn wait(&self) {
        let _ = self.outcome(None);
    }

    /// Waits up to `timeout`; true if the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        !matches!(
            self.outcome(Some(Instant::now() + timeout)),
            Err(TaskError::Timeout)
        )
    }

    /// Whether the task has finished.
    pub fn ready(&self) -> bool {
        let st = self.shared.lock();
        st.jobs.get(&self.id).is_none_or(|j| j.outcome.is_some())
    }

    /// Whether the task has finished without error (false while it runs).
    pub fn successful(&self) -> bool {
        let st = self.shared.lock();
        st.jobs
            .get(&self.id)
            .and_then(|j| j.outcome.as_ref())
            .is_some_and(|o| o.iter().all(Result::is_ok))
    }
}

impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        abandon_job(&mut self.shared.lock(), self.id);
    }
}

/// One submitted chunk of an [`Imap`], or a chunk that failed before submission.
#[derive(Debug)]
enum Slot {
    Job { id: u64, len: usize },
    Failed { error: TaskError, len: usize },
}

/// The lazy iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: yields one
/// `Result<R, TaskError>` per input item.
///
/// ```
/// use mproc_pool::Pool;
/// let pool = Pool::new(2)?;
/// // An endless input: only what is consumed (plus a bounded window) is ever computed.
/// let first: Vec<u64> = pool
///     .imap(|x: u64| x * 10, 0..)
///     .take(5)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(first, [0, 10, 20, 30, 40]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Imap<'p, I, R> {
    pool: &'p Pool,
    func: FnRef,
    input: I,
    chunksize: usize,
    window: VecDeque<Slot>,
    max_window: usize,
    ready: VecDeque<Result<R, TaskError>>,
    ordered: bool,
    exhausted: bool,
}

impl<'p, A, I, R> Imap<'p, I, R>
where
    A: Serialize,
    I: Iterator<Item = A>,
    R: DeserializeOwned,
{
    fn new(pool: &'p Pool, func: FnRef, input: I, ordered: bool) -> Self {
        Imap {
            pool,
            func,
            input,
            chunksize: pool.chunksize.unwrap_or(1),
            window: VecDeque::new(),
            max_window: 2 * pool.processes,
            ready: VecDeque::new(),
            ordered,
            exhausted: false,
        }
    }

    /// Pulls input and submits chunks until the window is full or the input ends.
    fn fill(&mut self) {
        while !self.exhausted && self.window.len() < self.max_window {
            let mut args = Vec::with_capacity(self.chunksize);
            let mut failure = None;
            for a in self.input.by_ref().take(self.chunksize) {
                match encode(&a) {
                    Ok(bytes) => args.push(bytes),
                    Err(e) => {
                        failure.get_or_insert(e);
                        args.push(Vec::new());
                    }
                }
            }
            if args.len() < self.chunksize {
                self.exhausted = true;
            }
            if args.is_empty() {
                break;
            }
            let len = args.len();
            let slot = match failure {
                Some(error) => Slot::Failed { error, len },
                None => match self.pool.submit(self.func, args) {
                    Ok(id) => Slot::Job { id, len },
                    Err(error) => {
                        self.exhausted = true;
                        Slot::Failed { error, len }
                    }
                },
            };
            self.window.push_back(slot);
        }
    }

    fn collect_slot(&mut self, outcomes: Outcomes, len: usize) {
        for r in expand(outcomes, len) {
            self.ready
                .push_back(r.and_then(|bytes| decode_result(&bytes)));
        }
    }
}

impl<A, I, R> Iterator for Imap<'_, I, R>
where
    A: Serialize,
    I: Iterator<Item = A>,
    R: DeserializeOwned,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            self.fill();
            if self.window.is_empty() {
                return None;
            }
            // A chunk that failed before submission is ready at once (in order, when it is
            // at the front; unordered, whenever).
            let failed = if self.ordered {
                matches!(self.window.front(), Some(Slot::Failed { .. })).then_some(0)
            } else {
                self.window
                    .iter()
                    .position(|s| matches!(s, Slot::Failed { .. }))
            };
            if let Some(i) = failed {
                if let Some(Slot::Failed { error, len }) = self.window.remove(i) {
                    self.ready.extend((0..len).map(|_| Err(error.clone())));
                }
                continue;
            }
            let candidates: Vec<(u64, usize)> = self
                .window
                .iter()
                .take(if self.ordered { 1 } else { usize::MAX })
                .filter_map(|s| match s {
                    Slot::Job { id, len } => Some((*id, *len)),
                    Slot::Failed { .. } => None,
                })
                .collect();
            let ids: Vec<u64> = candidates.iter().map(|c| c.0).collect();
            match self.pool.wait_any(&ids, None, true) {
                Ok((i, outcomes)) => {
                    let (id, len) = candidates[i];
                    self.window
                        .retain(|s| !matches!(s, Slot::Job { id: j, .. } if *j == id));
                    self.collect_slot(outcomes, len);
                }
                Err(e) => {
                    let (id, len) = candidates[0];
                    self.window
                        .retain(|s| !matches!(s, Slot::Job { id: j, .. } if *j == id));
                    self.ready.extend((0..len).map(|_| Err(e.clone())));
                }
            }
        }
    }
}

impl<I, R> Drop for Imap<'_, I, R> {
    fn drop(&mut self) {
        let ids: Vec<u64> = self
            .window
            .iter()
            .filter_map(|s| match s {
                Slot::Job { id, .. } => Some(*id),
                Slot::Failed { .. } => None,
            })
            .collect();
        self.pool.abandon(ids);
    }
}
