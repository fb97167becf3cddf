//! The worker's side: take tasks from the pool's queue, run them on a local mproc `Pool`,
//! answer, acknowledge.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mproc_pool::{AsyncResult, LaunchOptions, Pool, SubmitError, TaskError};
use mproc_queue::{GetError, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Failure, RemoteError, ResultMsg, Task, TaskMsg, tasks_queue};
use crate::conn::{COMMAND_TIMEOUT, Redis};
use crate::queue::{Delivery, RedisQueue};

/// A registered task, with its types erased: decodes a chunk of arguments and starts each
/// on the local pool.
trait Dispatch: Send + Sync {
    fn start(
        &self,
        pool: &Pool,
        args: &[u8],
        limit: Option<Duration>,
    ) -> Result<Box<dyn Pending>, String>;
}

/// A chunk running on the local pool.
trait Pending {
    fn ready(&self) -> bool;
    fn wait_timeout(&self, d: Duration);
    /// Stops what is still running or waiting (its local process is killed and replaced).
    fn cancel(&self);
    fn finish(self: Box<Self>) -> Vec<Result<Vec<u8>, TaskError>>;
}

struct Typed<A, R>(fn(A) -> R);

fn task_error(e: SubmitError) -> TaskError {
    match e {
        SubmitError::Encode { message } => TaskError::Encode { message },
        SubmitError::Broken(b) => TaskError::Broken(b),
        _ => TaskError::Terminated,
    }
}

impl<A, R> Dispatch for Typed<A, R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn start(
        &self,
        pool: &Pool,
        args: &[u8],
        limit: Option<Duration>,
    ) -> Result<Box<dyn Pending>, String> {
        let args: Vec<A> = codec::decode(args).map_err(|e| e.to_string())?;
        let started = args
            .into_iter()
            .map(|a| {
                pool.apply_async(self.0, a)
                    .map(|r| match limit {
                        Some(l) => r.timeout(l),
                        None => r,
                    })
                    .map_err(task_error)
            })
            .collect();
        Ok(Box::new(Chunk::<R>(started)))
    }
}

struct Chunk<R>(Vec<Result<AsyncResult<R>, TaskError>>);

impl<R: Serialize + DeserializeOwned> Pending for Chunk<R> {
    fn ready(&self) -> bool {
        self.0
            .iter()
            .all(|r| r.as_ref().map_or(true, |r| r.ready()))
    }

    fn wait_timeout(&self, d: Duration) {
        if let Some(Ok(r)) = self.0.iter().find(|r| r.as_ref().is_ok_and(|r| !r.ready())) {
            r.wait_timeout(d);
        }
    }

    fn cancel(&self) {
        for r in self.0.iter().flatten() {
            r.cancel();
        }
    }

    fn finish(self: Box<Self>) -> Vec<Result<Vec<u8>, TaskError>> {
        self.0
            .into_iter()
            .map(|r| {
                let v = r?.get()?;
                let mut out = Vec::new();
                codec::encode_into(&v, &mut out).map_err(|e| TaskError::Encode {
                    message: e.to_string(),
                })?;
                Ok(out)
            })
            .collect()
    }
}

/// How often a worker asks whether the tasks it runs were cancelled.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// How long the worker waits for tasks it has just started before it asks the server for
/// more (an answer that is ready goes out first).
const SETTLE: Duration = Duration::from_millis(1);

/// What a worker did before it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks (chunks) it answered.
    pub tasks: u64,
    /// Of those, tasks it refused without running: delivered more often than their
    /// retries allow, cancelled, or naming no registered task.
    pub refused: u64,
}

/// A worker of a [`RemotePool`](super::RemotePool): run by the same binary on any host
/// that reaches the server, with the pool's tasks registered. It runs tasks on a local
/// mproc `Pool` of [`processes`](Self::processes) worker processes, so a task that panics
/// or overruns its limit costs one local process, not the worker.
///
/// ```no_run
/// use mproc_redis::{Redis, Task, Worker};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// const SQUARE: Task<u64, u64> = Task::new("square", square);
///
/// let redis = Redis::connect("redis://127.0.0.1/")?;
/// let report = Worker::new(&redis, "squares").processes(4).register(&SQUARE).run()?;
/// println!("answered {} tasks", report.tasks);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Worker {
    redis: Redis,
    name: String,
    processes: usize,
    lease: Duration,
    tasks: HashMap<&'static str, Box<dyn Dispatch>>,
    stop: Arc<AtomicBool>,
    launch: LaunchOptions,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("processes", &self.processes)
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct InFlight {
    delivery: String,
    id: u64,
    reply: String,
    running: Box<dyn Pending>,
}

impl Worker {
    /// A worker of the pool `name` (one process per CPU until set).
    pub fn new(redis: &Redis, name: &str) -> Worker {
        Worker {
            redis: redis.clone(),
            name: name.to_string(),
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lease: Duration::from_secs(30),
            tasks: HashMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            launch: LaunchOptions::default(),
        }
    }

    /// How many local worker processes run tasks (at least 1).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n.max(1);
        self
    }

    /// How the local pool starts its processes (mproc's `LaunchOptions`: start method, the
    /// threaded-fork policy, ...).
    pub fn launch_options(mut self, launch: LaunchOptions) -> Self {
        self.launch = launch;
        self
    }

    /// The lease if this worker is the first to create the pool's queue (default 30 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Makes `task` callable on this worker by its name.
    pub fn register<A, R>(mut self, task: &Task<A, R>) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.tasks.insert(task.name, Box::new(Typed(task.f)));
        self
    }

    /// A flag that makes [`run`](Self::run) return once set (after answering what it has
    /// started; tasks it took and had not started are delivered again after their lease).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Runs tasks until the pool is closed and drained, or the stop flag is set.
    pub fn run(self) -> Result<WorkerReport, RemoteError> {
        // The local pool first, while this process may still have one thread.
        let pool = Pool::builder()
            .processes(self.processes)
            .launch_options(self.launch)
            .build()
            .map_err(|e| RemoteError::Unavailable {
                reason: format!("could not start the local pool: {e}"),
            })?;
        let tasks = tasks_queue(&self.redis, &self.name, self.lease)?;
        let mut out = Outbox {
            host: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            replies: HashMap::new(),
            answers: Vec::new(),
        };
        let mut flight: Vec<InFlight> = Vec::new();
        let mut report = WorkerReport::default();
        let mut closed = false;
        // Up to four chunks per local process: one running, the rest waiting there.
        let room = self.processes * 4;
        let mut checked = Instant::now();
        // Tasks started in the last pass: waited for before the next read.
        let mut settle = false;
        let mut cancels = CancelCache::default();
        let version = self.redis.key(&self.name, "cancel.v");
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if (stopping || closed) && flight.is_empty() {
                return Ok(report);
            }
            let mut progress = false;
            let mut started = false;
            if settle && !flight.is_empty() {
                // Most tasks finish within microseconds: asking the server for more first
                // would put a round trip before their answers.
                flight[0].running.wait_timeout(SETTLE);
            } else if !closed && !stopping && flight.len() < room {
                let wait = flight.is_empty().then_some(Duration::from_millis(200));
                let (got, probed) = tasks.get_items_probing(room - flight.len(), wait, &version);
                match got {
                    Ok(got) => {
                        progress = !got.is_empty();
                        started = progress;
                        let keys: Vec<(&str, u64)> = got
                            .iter()
                            .map(|d| (d.value.reply.as_str(), d.value.id))
                            .collect();
                        let cancelled = match probed {
                            Some(v) if !keys.is_empty() => {
                                self.cancelled_cached(&keys, v, &mut cancels)
                            }
                            _ => self.cancelled(&keys),
                        };
                        for (d, cancelled) in got.into_iter().zip(cancelled) {
                            if let Some(f) = self.start(&pool, d, cancelled, &mut out, &mut report)
                            {
                                flight.push(f);
                            }
                        }
                    }
                    Err(GetError::Closed) => closed = true,
                    Err(GetError::Empty | GetError::Timeout | GetError::Unreadable { .. }) => {}
                    Err(GetError::Unavailable { .. }) => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            let mut i = 0;
            while i < flight.len() {
                if flight[i].running.ready() {
                    let f = flight.swap_remove(i);
                    out.answers
                        .push((f.delivery, f.id, f.reply, Ok(f.running.finish())));
                    report.tasks += 1;
                    progress = true;
                } else {
                    i += 1;
                }
            }
            out.flush(&self.redis, &tasks);
            settle = started;
            if !flight.is_empty() && checked.elapsed() >= CANCEL_CHECK {
                // Tasks their callers cancelled while they ran: stopped here.
                checked = Instant::now();
                let keys: Vec<(&str, u64)> =
                    flight.iter().map(|f| (f.reply.as_str(), f.id)).collect();
                for (f, cancelled) in flight.iter().zip(self.cancelled(&keys)) {
                    if cancelled {
                        f.running.cancel();
                    }
                }
            }
            if !progress && !flight.is_empty() {
                // Nothing new: wait a little for the oldest task rather than ask the server
                // again at once (a task that finishes ends the wait).
                flight[0].running.wait_timeout(Duration::from_millis(2));
            }
        }
    }

    /// Starts a delivered task, or queues its answer at once if it is not to run.
    fn start(
        &self,
        pool: &Pool,
        d: Delivery<TaskMsg>,
        cancelled: bool,
        out: &mut Outbox,
        report: &mut WorkerReport,
    ) -> Option<InFlight> {
        let msg = d.value;
        let refuse = if d.deliveries > u64::from(msg.retries) + 1 {
            Some(Failure::Lost {
                deliveries: d.deliveries,
            })
        } else if cancelled {
            Some(Failure::Cancelled)
        } else if !self.tasks.contains_key(msg.task.as_str()) {
            Some(Failure::UnknownTask {
                name: msg.task.clone(),
            })
        } else {
            None
        };
        if let Some(f) = refuse {
            out.answers.push((d.id, msg.id, msg.reply, Err(f)));
            report.tasks += 1;
            report.refused += 1;
            return None;
        }
        let dispatch = self.tasks.get(msg.task.as_str())?;
        let limit = msg.timeout_ms.map(Duration::from_millis);
        match dispatch.start(pool, &msg.args, limit) {
            Ok(running) => Some(InFlight {
                delivery: d.id,
                id: msg.id,
                reply: msg.reply,
                running,
            }),
            Err(message) => {
                out.answers
                    .push((d.id, msg.id, msg.reply, Err(Failure::BadArgs { message })));
                report.tasks += 1;
                None
            }
        }
    }

    /// Which of the tasks (reply queue, task id) their callers cancelled, from the cached
    /// cancel set while `version` (read with the tasks) is the one it was read at: no round
    /// trip unless something was cancelled since.
    fn cancelled_cached(
        &self,
        tasks: &[(&str, u64)],
        version: Option<String>,
        cache: &mut CancelCache,
    ) -> Vec<bool> {
        let Some(version) = version else {
            // Nothing cancelled in the pool's last day.
            return vec![false; tasks.len()];
        };
        if cache.version.as_deref() != Some(version.as_str()) {
            let key = self.redis.key(&self.name, "cancel");
            match self.redis.run(COMMAND_TIMEOUT, |c| {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query::<std::collections::HashSet<String>>(c)
            }) {
                // Read after the version: it holds every member that version announced.
                Ok(set) => {
                    cache.version = Some(version);
                    cache.members = set;
                }
                Err(_) => return self.cancelled(tasks),
            }
        }
        tasks
            .iter()
            .map(|(reply, id)| cache.members.contains(&format!("{reply}/{id}")))
            .collect()
    }

    /// Which of the tasks (reply queue, task id) their callers cancelled (one `SMISMEMBER`
    /// for all of them; none if the server cannot say).
    fn cancelled(&self, tasks: &[(&str, u64)]) -> Vec<bool> {
        if tasks.is_empty() {
            return Vec::new();
        }
        let key = self.redis.key(&self.name, "cancel");
        let members: Vec<String> = tasks
            .iter()
            .map(|(reply, id)| format!("{reply}/{id}"))
            .collect();
        self.redis
            .run(COMMAND_TIMEOUT, |c| {
                redis::cmd("SMISMEMBER")
                    .arg(&key)
                    .arg(&members)
                    .query::<Vec<bool>>(c)
            })
            .unwrap_or_else(|_| vec![false; tasks.len()])
    }
}

/// A worker's copy of its pool's cancel set, with the version it was read at.
#[derive(Default)]
struct CancelCache {
    version: Option<String>,
    members: std::collections::HashSet<String>,
}

type Outcome = Result<Vec<Result<Vec<u8>, TaskError>>, Failure>;

/// Answers waiting to be sent, with the result queues they go to.
struct Outbox {
    host: String,
    replies: HashMap<String, RedisQueue<ResultMsg>>,
    /// (delivery id, task id, reply queue, outcome)
    answers: Vec<(String, u64, String, Outcome)>,
}

impl Outbox {
    /// Sends the answers (one `put_many` per caller), then acknowledges their tasks (with the
    /// next read of the tasks queue). A task is acknowledged once its answer is sent, or once its caller is gone
    /// (its result queue deleted). One whose answer could not be sent is not: it is
    /// delivered again after its lease (to this worker or another), and a caller that gets
    /// two answers keeps the first.
    fn flush(&mut self, redis: &Redis, tasks: &RedisQueue<TaskMsg>) {
        if self.answers.is_empty() {
            return;
        }
        let mut by_reply: HashMap<String, Vec<(String, ResultMsg)>> = HashMap::new();
        for (delivery, id, reply, outcome) in self.answers.drain(..) {
            let msg = ResultMsg {
                id,
                host: self.host.clone(),
                outcome,
            };
            by_reply.entry(reply).or_default().push((delivery, msg));
        }
        let mut done = Vec::new();
        for (reply, batch) in by_reply {
            if !self.replies.contains_key(&reply) {
                match redis.queue(&reply).open::<ResultMsg>() {
                    Ok(q) => {
                        self.replies.insert(reply.clone(), q);
                    }
                    // The caller is gone: nobody to answer.
                    Err(crate::RedisError::NotFound { .. }) => {
                        done.extend(batch.into_iter().map(|(d, _)| d));
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            let (ids, msgs): (Vec<String>, Vec<ResultMsg>) = batch.into_iter().unzip();
            let sent = self
                .replies
                .get(&reply)
                .is_some_and(|q| q.put_many(msgs).is_ok());
            if sent {
                done.extend(ids);
            } else {
                self.replies.remove(&reply);
            }
        }
        // Acknowledged with the next read (one round trip fewer per answer; if this worker
        // dies first, the tasks are delivered again and their callers keep one answer).
        tasks.ack_items_later(&done);
    }
}
