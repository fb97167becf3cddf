//! The worker's side: take tasks from the pool's queue, run them on a local mproc `Pool`,
//! answer, acknowledge.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mproc_pool::{AsyncResult, Pool, SubmitError, TaskError};
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
        }
    }

    /// How many local worker processes run tasks (at least 1).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n.max(1);
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
        // The local pool first, while this process has one thread.
        let pool = Pool::builder()
            .processes(self.processes)
            .build()
            .map_err(|e| RemoteError::Unavailable {
                reason: format!("could not start the local pool: {e}"),
            })?;
        let tasks = tasks_queue(&self.redis, &self.name, self.lease)?;
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let mut replies: HashMap<String, RedisQueue<ResultMsg>> = HashMap::new();
        let mut flight: Vec<InFlight> = Vec::new();
        let mut report = WorkerReport::default();
        let mut closed = false;
        // Up to two chunks per local process: one running, one waiting.
        let room = self.processes * 2;
        loop {
            if self.stop.load(Ordering::Relaxed) && flight.is_empty() {
                return Ok(report);
            }
            if !closed && !self.stop.load(Ordering::Relaxed) && flight.len() < room {
                let wait = flight.is_empty().then_some(Duration::from_millis(200));
                match tasks.get_items(room - flight.len(), wait) {
                    Ok(got) => {
                        for d in got {
                            if let Some(f) =
                                self.start(&pool, &tasks, d, &host, &mut replies, &mut report)
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
            if closed && flight.is_empty() {
                return Ok(report);
            }
            let before = flight.len();
            let mut i = 0;
            while i < flight.len() {
                if flight[i].running.ready() {
                    let f = flight.swap_remove(i);
                    let outcome = Ok(f.running.finish());
                    self.answer(
                        &tasks,
                        &mut replies,
                        &f.delivery,
                        f.id,
                        &f.reply,
                        &host,
                        outcome,
                    );
                    report.tasks += 1;
                } else {
                    i += 1;
                }
            }
            if flight.len() == before && !flight.is_empty() && (flight.len() >= room || closed) {
                flight[0].running.wait_timeout(Duration::from_millis(20));
            }
        }
    }

    /// Starts a delivered task, or answers it at once if it is not to run.
    fn start(
        &self,
        pool: &Pool,
        tasks: &RedisQueue<TaskMsg>,
        d: Delivery<TaskMsg>,
        host: &str,
        replies: &mut HashMap<String, RedisQueue<ResultMsg>>,
        report: &mut WorkerReport,
    ) -> Option<InFlight> {
        let msg = d.value;
        let refuse = if d.deliveries > u64::from(msg.retries) + 1 {
            Some(Failure::Lost {
                deliveries: d.deliveries,
            })
        } else if self.cancelled(&msg) {
            Some(Failure::Cancelled)
        } else if !self.tasks.contains_key(msg.task.as_str()) {
            Some(Failure::UnknownTask {
                name: msg.task.clone(),
            })
        } else {
            None
        };
        if let Some(f) = refuse {
            self.answer(tasks, replies, &d.id, msg.id, &msg.reply, host, Err(f));
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
                self.answer(
                    tasks,
                    replies,
                    &d.id,
                    msg.id,
                    &msg.reply,
                    host,
                    Err(Failure::BadArgs { message }),
                );
                report.tasks += 1;
                None
            }
        }
    }

    fn cancelled(&self, msg: &TaskMsg) -> bool {
        let key = self.redis.key(&self.name, "cancel");
        let member = format!("{}/{}", msg.reply, msg.id);
        self.redis
            .run(COMMAND_TIMEOUT, |c| {
                redis::cmd("SISMEMBER")
                    .arg(&key)
                    .arg(&member)
                    .query::<bool>(c)
            })
            .unwrap_or(false)
    }

    /// Sends an answer to the caller's result queue, then acknowledges the task. If the
    /// caller is gone (its queue deleted), the answer is dropped. If this worker dies
    /// between the two, the task runs again and the caller drops the second answer.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        tasks: &RedisQueue<TaskMsg>,
        replies: &mut HashMap<String, RedisQueue<ResultMsg>>,
        delivery: &str,
        id: u64,
        reply: &str,
        host: &str,
        outcome: Result<Vec<Result<Vec<u8>, TaskError>>, Failure>,
    ) {
        let delivered = match replies.get(reply) {
            Some(_) => true,
            None => match self.redis.queue(reply).open::<ResultMsg>() {
                Ok(q) => {
                    replies.insert(reply.to_string(), q);
                    true
                }
                // The caller is gone: nobody to answer.
                Err(crate::RedisError::NotFound { .. }) => {
                    let _ = tasks.ack_item(delivery);
                    return;
                }
                Err(_) => false,
            },
        };
        let sent = delivered
            && replies.get(reply).is_some_and(|q| {
                let msg = ResultMsg {
                    id,
                    host: host.to_string(),
                    outcome,
                };
                q.put_timeout(msg, Duration::from_secs(10)).is_ok()
            });
        if !sent {
            // Not answered: the task is delivered again after its lease (to this worker
            // or another), when the server or the caller can be reached again.
            replies.remove(reply);
            return;
        }
        let _ = tasks.ack_item(delivery);
    }
}
