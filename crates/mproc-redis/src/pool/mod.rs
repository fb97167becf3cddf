//! A Pool whose workers run on other hosts: [`RemotePool`] submits tasks by name through a
//! Redis queue; [`Worker`]s, running the same binary anywhere, take them and run them on a
//! local mproc `Pool`.
//!
//! Raw code addresses never cross the network: a task is a [`Task`], a name bound to a
//! function, registered in the worker with [`Worker::register`] and named by the caller.
//!
//! - Tasks go through the queue `NAME` (a [`RedisQueue`] with leases): a worker host that
//!   dies mid-task has its task delivered to another after the lease, at most `retries`
//!   more times ([`RemotePool::retries`]); then the caller gets [`RemoteError::Lost`].
//! - Results come back through a queue of the caller's own (`NAME.r.CALLER`). A task run
//!   twice (its first worker was only slow, or died after answering) answers twice; the
//!   caller keeps the first answer and drops the other by task id. Exactly one result
//!   reaches the caller.
//! - A task that panics fails with its panic message ([`RemoteError::Task`] carrying
//!   mproc's `TaskError::Panicked`), one that runs past [`RemotePool::task_timeout`] with
//!   `TaskError::Timeout` (its local worker process is killed), and neither affects the
//!   other tasks.

mod worker;

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mproc_pool::TaskError;
use mproc_queue::{GetError, PutError, codec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::conn::{COMMAND_TIMEOUT, Redis, identity};
use crate::error::RedisError;
use crate::queue::{RedisQueue, lock};

pub use worker::{Worker, WorkerReport};

/// Tasks the queue of a pool holds (chunks submitted and not yet finished).
const TASKS_CAPACITY: usize = 65_536;

/// A function callable by name on remote workers: declared once, as a constant both the
/// caller and the workers (the same binary) refer to.
///
/// ```
/// use mproc_redis::Task;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// const SQUARE: Task<u64, u64> = Task::new("square", square);
/// assert_eq!(SQUARE.name(), "square");
/// ```
pub struct Task<A, R> {
    name: &'static str,
    f: fn(A) -> R,
}

impl<A, R> Task<A, R> {
    /// Binds `name` to `f`. Names are unique within a pool's workers.
    pub const fn new(name: &'static str, f: fn(A) -> R) -> Task<A, R> {
        Task { name, f }
    }

    /// The task's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A task as it travels: a chunk of arguments for a named function.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    pub id: u64,
    /// The caller's result queue.
    pub reply: String,
    pub task: String,
    /// `Vec<A>`, encoded.
    pub args: Vec<u8>,
    pub timeout_ms: Option<u64>,
    pub retries: u32,
}

/// An answer: per argument, the encoded result or its error.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResultMsg {
    pub id: u64,
    pub host: String,
    pub outcome: Result<Vec<Result<Vec<u8>, TaskError>>, Failure>,
}

/// Why a worker did not run a task at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Failure {
    Lost { deliveries: u64 },
    UnknownTask { name: String },
    BadArgs { message: String },
    Cancelled,
}

/// Why a remote task, or waiting for it, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The task ran on `host` and failed there (panicked, ran past its limit, its local
    /// worker process died, or its argument or result did not encode).
    #[error("task failed on {host}: {error}")]
    Task {
        /// What went wrong, as mproc's local pool reports it.
        error: TaskError,
        /// The worker host's name.
        host: String,
    },
    /// Workers took the task and vanished `attempts` times (host died, lost the server),
    /// exhausting the pool's retries.
    #[error("task lost: its workers vanished {attempts} times")]
    Lost {
        /// How many times it was taken.
        attempts: u64,
    },
    /// The worker on `host` has no task of that name (a different build).
    #[error("worker {host} has no task named {name:?}")]
    UnknownTask {
        /// The task's name.
        name: String,
        /// The worker host.
        host: String,
    },
    /// The task was cancelled before it ran.
    #[error("task was cancelled")]
    Cancelled,
    /// The caller stopped waiting (`get_timeout`).
    #[error("timed out waiting for the result")]
    Timeout,
    /// The pool was closed: no more tasks are accepted.
    #[error("the pool is closed")]
    Closed,
    /// An argument or result could not be encoded or decoded.
    #[error("could not encode or decode: {message}")]
    Encode {
        /// What the codec said.
        message: String,
    },
    /// The server could not be reached.
    #[error("Redis unavailable: {reason}")]
    Unavailable {
        /// What the client said.
        reason: String,
    },
}

impl From<RedisError> for RemoteError {
    fn from(e: RedisError) -> RemoteError {
        RemoteError::Unavailable {
            reason: e.to_string(),
        }
    }
}

#[derive(Default)]
struct Board {
    /// Answers not yet collected, by task id.
    answers: HashMap<u64, ResultMsg>,
    /// Ids submitted and not yet answered (or cancelled).
    open: HashSet<u64>,
    /// The receiver's last failure to read the result queue, if it keeps failing.
    trouble: Option<String>,
    /// Answers dropped: a second answer to a task that ran twice, or one to a task the
    /// caller cancelled or stopped waiting for.
    dropped: u64,
}

struct Shared {
    redis: Redis,
    name: String,
    reply: String,
    tasks: RedisQueue<TaskMsg>,
    next: AtomicU64,
    board: Mutex<Board>,
    answered: Condvar,
    stop: AtomicBool,
}

/// The caller's side of a pool whose workers run on other hosts ([`Worker`]s reading the
/// same Redis server): `apply_async`, `apply`, `map`, `map_async`, `imap` and
/// `imap_unordered`, with Python's meaning, for functions declared as [`Task`]s.
///
/// ```no_run
/// use mproc_redis::{Redis, RemotePool, Task};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// const SQUARE: Task<u64, u64> = Task::new("square", square);
///
/// let redis = Redis::connect("redis://127.0.0.1/")?;
/// let pool = RemotePool::connect(&redis, "squares")?;
/// // Workers, on any host: Worker::new(&redis, "squares").register(&SQUARE).run()
/// assert_eq!(pool.map(&SQUARE, (0..100).collect())?[99], 9801);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RemotePool {
    shared: Arc<Shared>,
    receiver: Option<JoinHandle<()>>,
    retries: u32,
    task_timeout: Option<Duration>,
    chunksize: usize,
    progress: bool,
}

impl std::fmt::Debug for RemotePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePool")
            .field("name", &self.shared.name)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl RemotePool {
    /// Joins (creating if needed) the pool `name` on `redis` as a caller: tasks are
    /// delivered again after a 30 s lease if their worker vanishes.
    pub fn connect(redis: &Redis, name: &str) -> Result<RemotePool, RedisError> {
        RemotePool::connect_with_lease(redis, name, Duration::from_secs(30))
    }

    /// [`connect`](Self::connect), with the lease after which a vanished worker's task is
    /// delivered again (the first to create the pool's queue sets it).
    pub fn connect_with_lease(
        redis: &Redis,
        name: &str,
        lease: Duration,
    ) -> Result<RemotePool, RedisError> {
        let tasks = tasks_queue(redis, name, lease)?;
        let reply = format!("{name}.r.{}", identity().replace(':', "."));
        let results = redis
            .queue(&reply)
            .capacity(TASKS_CAPACITY)
            .create::<ResultMsg>()?;
        let shared = Arc::new(Shared {
            redis: redis.clone(),
            name: name.to_string(),
            reply,
            tasks,
            next: AtomicU64::new(1),
            board: Mutex::new(Board::default()),
            answered: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let receiver = std::thread::Builder::new()
            .name("mproc-remote-results".into())
            .spawn(move || receive(&s, &results))
            .map_err(|e| RedisError::Unavailable {
                reason: format!("could not start the result thread: {e}"),
            })?;
        Ok(RemotePool {
            shared,
            receiver: Some(receiver),
            retries: 2,
            task_timeout: None,
            chunksize: 1,
            progress: false,
        })
    }

    /// How many more times a task is delivered after its worker vanished (default 2).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// A time limit for each task (each argument of a `map`): past it, the worker kills
    /// the process running it and the task fails with `TaskError::Timeout`.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// How many arguments of a `map` or `imap` travel in one task (default 1).
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n.max(1);
        self
    }

    /// Shows a progress bar on stderr while `map` waits (feature `progress`; drawn only
    /// when stderr is a terminal).
    #[cfg(feature = "progress")]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// How many answers this caller dropped so far: second answers to tasks that ran twice
    /// (a worker paused or cut off past its lease, whose task was run again elsewhere), and
    /// answers to tasks it cancelled or stopped waiting for.
    pub fn dropped_answers(&self) -> u64 {
        lock(&self.shared.board).dropped
    }

    /// Stops accepting tasks, for every caller of the pool: workers finish what is queued
    /// and then exit.
    pub fn close(&self) -> Result<(), RemoteError> {
        self.shared
            .tasks
            .close()
            .map_err(|e| RemoteError::Unavailable { reason: e.reason })
    }

    fn submit<A: Serialize, R>(&self, task: &Task<A, R>, args: &[A]) -> Result<u64, RemoteError> {
        let mut bytes = Vec::new();
        codec::encode_into(args, &mut bytes).map_err(|e| RemoteError::Encode {
            message: e.to_string(),
        })?;
        let id = self.shared.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.board).open.insert(id);
        let msg = TaskMsg {
            id,
            reply: self.shared.reply.clone(),
            task: task.name.to_string(),
            args: bytes,
            timeout_ms: self.task_timeout.map(|t| t.as_millis() as u64),
            retries: self.retries,
        };
        match self.shared.tasks.put(msg) {
            Ok(()) => Ok(id),
            Err(e) => {
                lock(&self.shared.board).open.remove(&id);
                Err(match e {
                    PutError::Closed(_) => RemoteError::Closed,
                    PutError::Unavailable { reason, .. } => RemoteError::Unavailable { reason },
                    other => RemoteError::Encode {
                        message: other.to_string(),
                    },
                })
            }
        }
    }

    /// Starts `task(arg)` on a worker.
    pub fn apply_async<A, R>(
        &self,
        task: &Task<A, R>,
        arg: A,
    ) -> Result<RemoteResult<R>, RemoteError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let id = self.submit(task, std::slice::from_ref(&arg))?;
        Ok(RemoteResult {
            shared: Arc::clone(&self.shared),
            id,
            _r: PhantomData,
        })
    }

    /// Runs `task(arg)` on a worker and waits for its result.
    pub fn apply<A, R>(&self, task: &Task<A, R>, arg: A) -> Result<R, RemoteError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.apply_async(task, arg)?.get()
    }

    fn submit_chunks<A: Serialize, R>(
        &self,
        task: &Task<A, R>,
        args: &[A],
    ) -> Result<Vec<(u64, usize)>, RemoteError> {
        args.chunks(self.chunksize)
            .map(|c| self.submit(task, c).map(|id| (id, c.len())))
            .collect()
    }

    /// Starts `task` over every argument, in chunks of [`chunksize`](Self::chunksize).
    pub fn map_async<A, R>(
        &self,
        task: &Task<A, R>,
        args: Vec<A>,
    ) -> Result<RemoteMap<R>, RemoteError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let chunks = self.submit_chunks(task, &args)?;
        Ok(RemoteMap {
            shared: Arc::clone(&self.shared),
            chunks,
            progress: self.progress,
            _r: PhantomData,
        })
    }

    /// Runs `task` over every argument on the workers; the results in order, or the first
    /// error (in argument order).
    pub fn map<A, R>(&self, task: &Task<A, R>, args: Vec<A>) -> Result<Vec<R>, RemoteError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.map_async(task, args)?.get()
    }

    /// The results of `task` over every argument, in argument order, as they are ready.
    pub fn imap<A, R>(
        &self,
        task: &Task<A, R>,
        args: Vec<A>,
    ) -> Result<impl Iterator<Item = Result<R, RemoteError>> + use<A, R>, RemoteError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let shared = Arc::clone(&self.shared);
        let chunks = self.submit_chunks(task, &args)?;
        Ok(chunks
            .into_iter()
            .flat_map(move |(id, n)| items::<R>(wait(&shared, id, None), n)))
    }

    /// The results of `task` over every argument, in the order they finish.
    pub fn imap_unordered<A, R>(
        &self,
        task: &Task<A, R>,
        args: Vec<A>,
    ) -> Result<impl Iterator<Item = Result<R, RemoteError>> + use<A, R>, RemoteError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let shared = Arc::clone(&self.shared);
        let mut left: HashMap<u64, usize> = self.submit_chunks(task, &args)?.into_iter().collect();
        Ok(std::iter::from_fn(move || {
            if left.is_empty() {
                return None;
            }
            let (id, answer) = wait_any(&shared, &left, None);
            let n = left.remove(&id).unwrap_or(1);
            Some(items::<R>(answer, n))
        })
        .flatten())
    }
}

impl Drop for RemotePool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
        let _ = self.shared.redis.unlink_queue(&self.shared.reply);
    }
}

fn tasks_queue(
    redis: &Redis,
    name: &str,
    lease: Duration,
) -> Result<RedisQueue<TaskMsg>, RedisError> {
    redis
        .queue(name)
        .capacity(TASKS_CAPACITY)
        .lease(lease)
        .manual_ack()
        .create::<TaskMsg>()
}

/// How long, in seconds, a pool's cancel set outlives its last cancellation.
pub(crate) const CANCEL_KEEP: u64 = 86_400;

/// The result thread: reads the caller's result queue and posts each first answer.
fn receive(shared: &Shared, results: &RedisQueue<ResultMsg>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match results.get_timeout(Duration::from_millis(100)) {
            Ok(msg) => {
                let mut b = lock(&shared.board);
                b.trouble = None;
                // A second answer to the same task (it ran twice) or one to a cancelled
                // task finds its id closed: dropped.
                if b.open.remove(&msg.id) {
                    b.answers.insert(msg.id, msg);
                    shared.answered.notify_all();
                } else {
                    b.dropped += 1;
                }
            }
            Err(GetError::Timeout | GetError::Empty | GetError::Unreadable { .. }) => {}
            Err(GetError::Closed) => return,
            Err(GetError::Unavailable { reason }) => {
                lock(&shared.board).trouble = Some(reason);
                shared.answered.notify_all();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

type Answer = Result<Vec<Result<Vec<u8>, TaskError>>, RemoteError>;

fn answer_of(msg: ResultMsg) -> Answer {
    msg.outcome.map_err(|f| match f {
        Failure::Lost { deliveries } => RemoteError::Lost {
            attempts: deliveries.saturating_sub(1),
        },
        Failure::UnknownTask { name } => RemoteError::UnknownTask {
            name,
            host: msg.host,
        },
        Failure::BadArgs { message } => RemoteError::Encode { message },
        Failure::Cancelled => RemoteError::Cancelled,
    })
}

/// Waits for the answer to `id` until `deadline`.
fn wait(shared: &Shared, id: u64, deadline: Option<Instant>) -> (Answer, String) {
    wait_any(shared, &HashMap::from([(id, 1)]), deadline).1
}

/// Waits for the first answer among `ids` until `deadline` (then a `Timeout` for one of
/// them). A cancelled id answers `Cancelled`.
fn wait_any(
    shared: &Shared,
    ids: &HashMap<u64, usize>,
    deadline: Option<Instant>,
) -> (u64, (Answer, String)) {
    let mut b = lock(&shared.board);
    loop {
        if let Some(&id) = ids.keys().find(|id| b.answers.contains_key(id)) {
            let msg = b.answers.remove(&id).unwrap_or_else(|| unreachable!());
            let host = msg.host.clone();
            return (id, (answer_of(msg), host));
        }
        if let Some(&id) = ids.keys().find(|id| !b.open.contains(id)) {
            return (id, (Err(RemoteError::Cancelled), String::new()));
        }
        let slice = match deadline {
            None => Duration::from_millis(500),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(l) if !l.is_zero() => l.min(Duration::from_millis(500)),
                _ => {
                    let id = ids.keys().next().copied().unwrap_or_default();
                    return (id, (Err(RemoteError::Timeout), String::new()));
                }
            },
        };
        b = shared
            .answered
            .wait_timeout(b, slice)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// The `n` results of one answer.
fn items<R: DeserializeOwned>(
    (answer, host): (Answer, String),
    n: usize,
) -> Vec<Result<R, RemoteError>> {
    match answer {
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        Ok(v) => v
            .into_iter()
            .map(|r| match r {
                Ok(bytes) => codec::decode::<R>(&bytes).map_err(|e| RemoteError::Encode {
                    message: e.to_string(),
                }),
                Err(error) => Err(RemoteError::Task {
                    error,
                    host: host.clone(),
                }),
            })
            .collect(),
    }
}

/// The result of one remote task: [`RemotePool::apply_async`].
pub struct RemoteResult<R> {
    shared: Arc<Shared>,
    id: u64,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for RemoteResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteResult")
            .field("id", &self.id)
            .finish()
    }
}

impl<R: DeserializeOwned> RemoteResult<R> {
    /// Waits for the result.
    pub fn get(self) -> Result<R, RemoteError> {
        self.get_until(None)
    }

    /// Waits at most `timeout` ([`RemoteError::Timeout`]; the task goes on, and its late
    /// answer is dropped).
    pub fn get_timeout(self, timeout: Duration) -> Result<R, RemoteError> {
        self.get_until(Some(Instant::now() + timeout))
    }

    fn get_until(self, deadline: Option<Instant>) -> Result<R, RemoteError> {
        let answer = wait(&self.shared, self.id, deadline);
        if matches!(answer.0, Err(RemoteError::Timeout)) {
            lock(&self.shared.board).open.remove(&self.id);
        }
        items::<R>(answer, 1)
            .pop()
            .unwrap_or(Err(RemoteError::Encode {
                message: "an answer without a result".into(),
            }))
    }

    /// Cancels the task: a worker that has not started it answers `Cancelled` without
    /// running it, and one running it stops it within about 100 ms (the local process
    /// running it is killed and replaced; no other task is affected). Waiting for it gives
    /// [`RemoteError::Cancelled`] at once. Whether the task was still unanswered.
    pub fn cancel(&self) -> Result<bool, RemoteError> {
        let was_open = lock(&self.shared.board).open.remove(&self.id);
        if was_open {
            let key = self.shared.redis.key(&self.shared.name, "cancel");
            let version = self.shared.redis.key(&self.shared.name, "cancel.v");
            let member = format!("{}/{}", self.shared.reply, self.id);
            // The set's version changes after the member is in (one transaction): a worker
            // that sees the new version and then reads the set finds the member. Workers
            // cache the set until its version changes.
            self.shared
                .redis
                .run(COMMAND_TIMEOUT, |c| {
                    redis::pipe()
                        .atomic()
                        .cmd("SADD")
                        .arg(&key)
                        .arg(&member)
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(CANCEL_KEEP)
                        .cmd("SET")
                        .arg(&version)
                        .arg(&member)
                        .arg("EX")
                        .arg(CANCEL_KEEP)
                        .query::<()>(c)
                })
                .map_err(|reason| RemoteError::Unavailable { reason })?;
            self.shared.answered.notify_all();
        }
        Ok(was_open)
    }
}

/// The results of a [`RemotePool::map_async`].
pub struct RemoteMap<R> {
    shared: Arc<Shared>,
    chunks: Vec<(u64, usize)>,
    #[cfg_attr(not(feature = "progress"), allow(dead_code))]
    progress: bool,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for RemoteMap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteMap")
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl<R: DeserializeOwned> RemoteMap<R> {
    /// Waits for every result: in argument order, or the first error.
    pub fn get(self) -> Result<Vec<R>, RemoteError> {
        // Every chunk's answer is collected, also after an error, so none is left behind.
        let mut out = Vec::new();
        let mut first_error = None;
        #[cfg(feature = "progress")]
        let bar = self.progress.then(|| {
            let total = self.chunks.iter().map(|c| c.1 as u64).sum();
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} items, {per_sec}, eta {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        for &(id, n) in &self.chunks {
            let answer = wait(&self.shared, id, None);
            #[cfg(feature = "progress")]
            if let Some(bar) = &bar {
                bar.inc(n as u64);
                if answer.0.is_err() {
                    bar.set_message("(some tasks failed)");
                }
            }
            for r in items::<R>(answer, n) {
                match r {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        #[cfg(feature = "progress")]
        if let Some(bar) = bar {
            bar.finish();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
