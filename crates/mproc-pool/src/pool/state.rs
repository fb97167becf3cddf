//! The pool's bookkeeping in the parent: jobs, workers and what each was sent, and how a
//! reply is recorded. With `scheduler.rs` (which worker gets which job) and `settle.rs` (what
//! happens when a worker dies) it is a pure state machine over the [`WorkerIo`] and
//! [`PoolIo`] seams (`io.rs`); the handler thread (`handler.rs`) and the callers drive it, the
//! wake-up protocol (`wakeup.rs`) tells waiters it changed.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashing for job ids, which the pool itself hands out in sequence (nobody else picks them):
/// a multiply spreads them over the table, and SipHash's resistance to chosen keys buys
/// nothing here. (SipHash was about 3% of a `map` at chunksize 1, in `perf`.)
#[derive(Default)]
pub(crate) struct JobIdHasher(u64);

impl Hasher for JobIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not called for `u64` keys; any other input still hashes (slowly, byte by byte).
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses for its control bytes,
        // change with every low bit of the id.
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The `BuildHasher` of the jobs table.
pub(crate) type JobIds = BuildHasherDefault<JobIdHasher>;
use std::time::{Duration, Instant};

use mproc_queue::GetError;

use super::seam::{PoolIo, WorkerIo};
use crate::call::FnRef;
use crate::launch::StartMethod;
use crate::protocol::Reply;
use crate::{SubmitError, TaskError};

/// What became of a job.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The worker's answer: one encoded `Result<R, TaskError>` per argument, back to back.
    Body(Vec<u8>),
    /// The whole job failed (its worker died, the pool was terminated, ...).
    Failed(TaskError),
}

/// A job: one function over a chunk of arguments.
#[derive(Debug)]
pub(crate) struct Job {
    pub func: FnRef,
    /// How many arguments.
    pub count: u32,
    /// The encoded arguments; `None` while a worker holds them.
    pub args: Option<Vec<u8>>,
    pub outcome: Option<Outcome>,
    /// Nobody will collect the outcome (its `AsyncResult` or `imap` was dropped).
    pub abandoned: bool,
    /// How long it may run once its worker starts it.
    pub limit: Option<Duration>,
    /// When its worker could start it (it became the oldest job that worker holds).
    pub started: Option<Instant>,
    /// Why its worker is being killed (a time limit, a cancel): what the job fails with.
    pub kill_reason: Option<TaskError>,
    /// Times it was run again after its worker died.
    pub attempts: u32,
    /// Its arguments, kept while a worker holds them if it may be retried.
    pub retry_args: Option<Vec<u8>>,
}

impl Job {
    /// A new job, waiting to be sent.
    pub(crate) fn new(func: FnRef, count: u32, args: Vec<u8>, limit: Option<Duration>) -> Job {
        Job {
            func,
            count,
            args: Some(args),
            outcome: None,
            abandoned: false,
            limit,
            started: None,
            kill_reason: None,
            attempts: 0,
            retry_args: None,
        }
    }
}

/// One worker process and what the parent has sent it.
#[derive(Debug)]
pub(crate) struct Worker<W> {
    /// The process and its inbox.
    pub io: W,
    /// Jobs sent and not yet answered, oldest first.
    pub sent: VecDeque<u64>,
    /// Jobs ever sent to this process.
    pub dispatched: u64,
    /// Jobs (chunks) it completed.
    pub completed: u64,
    /// It ran the initializer and takes requests.
    pub ready: bool,
    /// When it started, since when it has had work, and how long it has had work in all.
    pub born: Instant,
    pub busy_since: Option<Instant>,
    pub busy_total: Duration,
    /// Its inbox is closed (max_tasks_per_child reached); it exits when done.
    pub retiring: bool,
}

impl<W: WorkerIo> Worker<W> {
    /// A worker just started: not ready, nothing sent.
    pub(crate) fn new(io: W) -> Worker<W> {
        Worker {
            io,
            sent: VecDeque::new(),
            dispatched: 0,
            completed: 0,
            ready: false,
            born: Instant::now(),
            busy_since: None,
            busy_total: Duration::ZERO,
            retiring: false,
        }
    }

    /// Alive (not reaped) and not retiring: new jobs may be sent to it.
    pub(crate) fn takes_work(&self) -> bool {
        !self.retiring && self.io.status().is_none()
    }
}

#[derive(Debug)]
pub(crate) struct Config {
    pub method: StartMethod,
    pub initializer: Option<(FnRef, Vec<u8>)>,
    pub max_tasks: Option<u64>,
    /// Bytes of each queue's body arena.
    pub arena: usize,
    /// Default time limit of every job.
    pub task_timeout: Option<Duration>,
    /// How many times a job whose worker died is run again.
    pub retries: u32,
    /// A worker larger than this after a task retires.
    pub max_memory: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct State<W> {
    pub workers: Vec<Worker<W>>,
    pub pending: VecDeque<u64>,
    pub jobs: HashMap<u64, Job, JobIds>,
    pub next_job: u64,
    /// No new jobs (close / join / terminate).
    pub closed: bool,
    /// The handler thread should exit.
    pub stopping: bool,
    /// Why the pool cannot go on (initializer failure, workers that cannot start, terminate).
    pub broken: Option<TaskError>,
    pub start_failures: u32,
    /// Slots whose replacement could not start for a passing reason (EAGAIN, ENOMEM: out of
    /// processes or memory for a while), to be tried again (see `settle.rs`).
    pub restarts_due: Vec<super::settle::RestartDue>,
    pub last_watch: Option<Instant>,
    /// Workers replaced after dying or retiring.
    pub replaced: u64,
    /// Jobs run again after their worker died.
    pub retried: u64,
    /// Why workers were replaced.
    pub restarts: crate::pool::Restarts,
    /// Tasks completed by workers that have been replaced since.
    pub tasks_done: u64,
    /// Workers stopped because a task overran its limit or was cancelled.
    pub stopped_for_tasks: u64,
    /// Jobs failed, by kind: worker died, timed out, cancelled, other.
    pub failures: [u64; 4],
}

impl<W: WorkerIo> State<W> {
    /// The state of a pool of `workers`, with no job yet.
    pub(crate) fn new(workers: Vec<Worker<W>>) -> State<W> {
        State {
            workers,
            pending: VecDeque::new(),
            jobs: HashMap::default(),
            next_job: 0,
            closed: false,
            stopping: false,
            broken: None,
            restarts_due: Vec::new(),
            start_failures: 0,
            last_watch: None,
            replaced: 0,
            retried: 0,
            restarts: Default::default(),
            tasks_done: 0,
            stopped_for_tasks: 0,
            failures: [0; 4],
        }
    }

    /// Queues a job of `count` calls of `func` over the encoded `args`; `dispatch` sends it.
    pub(crate) fn submit(
        &mut self,
        func: FnRef,
        count: u32,
        args: Vec<u8>,
        limit: Option<Duration>,
    ) -> Result<u64, SubmitError> {
        if let Some(TaskError::Broken(b)) = &self.broken {
            return Err(SubmitError::Broken(b.clone()));
        }
        if self.closed || self.broken.is_some() {
            return Err(SubmitError::Closed);
        }
        let id = self.next_job;
        self.next_job += 1;
        self.jobs.insert(id, Job::new(func, count, args, limit));
        self.pending.push_back(id);
        Ok(id)
    }

    fn worker_of(&mut self, index: u32, pid: u32) -> Option<&mut Worker<W>> {
        self.workers
            .get_mut(index as usize)
            .filter(|w| w.io.pid() == pid)
    }

    pub(crate) fn finish(&mut self, id: u64, outcome: Outcome) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.retry_args = None;
            if job.abandoned {
                self.jobs.remove(&id);
            } else if job.outcome.is_none() {
                job.outcome = Some(outcome);
            }
        }
    }

    /// Fails a whole job.
    pub(crate) fn fail(&mut self, id: u64, error: &TaskError) {
        if self
            .jobs
            .get(&id)
            .is_some_and(|j| j.outcome.is_none() && !j.abandoned)
        {
            self.failures[match error {
                TaskError::WorkerDied { .. } => 0,
                TaskError::Timeout { .. } => 1,
                TaskError::Cancelled => 2,
                _ => 3,
            }] += 1;
        }
        self.finish(id, Outcome::Failed(error.clone()));
    }

    /// What the status board shows now.
    pub(crate) fn board_snapshot(&self) -> super::board::BoardSnapshot {
        use super::board::{BoardSnapshot, BoardWorker, BoardWorkerState};
        let r = &self.restarts;
        BoardSnapshot {
            workers: self
                .workers
                .iter()
                .map(|w| BoardWorker {
                    pid: w.io.pid(),
                    state: match (w.ready, w.sent.front()) {
                        (false, _) => BoardWorkerState::Starting,
                        (true, None) => BoardWorkerState::Idle,
                        (true, Some(&job)) => BoardWorkerState::Running(job),
                    },
                    tasks_done: w.completed,
                })
                .collect(),
            tasks_done: self.tasks_done + self.workers.iter().map(|w| w.completed).sum::<u64>(),
            retried: self.retried,
            restarts: [r.died, r.timed_out, r.cancelled, r.memory, r.max_tasks],
            failures: self.failures,
        }
    }

    pub(crate) fn on_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Started { .. } => {}
            Reply::Ready { worker, pid } => {
                if let Some(w) = self.worker_of(worker, pid) {
                    w.ready = true;
                    self.start_failures = 0;
                }
            }
            Reply::InitFailed { message, .. } => {
                self.break_pool(crate::PoolBroken::InitializerFailed { message });
            }
            Reply::Done {
                worker,
                pid,
                job,
                body,
            } => {
                let mut next = None;
                if let Some(w) = self.worker_of(worker, pid) {
                    if let Some(pos) = w.sent.iter().position(|&j| j == job) {
                        w.sent.remove(pos);
                    }
                    w.completed += 1;
                    next = w.sent.front().copied();
                    if next.is_none() {
                        if let Some(since) = w.busy_since.take() {
                            w.busy_total += since.elapsed();
                        }
                    }
                }
                if let Some(next) = next.and_then(|id| self.jobs.get_mut(&id)) {
                    next.started.get_or_insert_with(Instant::now);
                }
                self.finish(job, Outcome::Body(body));
            }
        }
    }

    /// Fails every unfinished job with `error`, stops accepting work and kills the workers.
    pub(crate) fn break_pool(&mut self, error: impl Into<TaskError>) {
        let error = error.into();
        if self.broken.is_some() {
            return;
        }
        self.break_pool_soft(error);
        self.stopping = true;
        for w in &self.workers {
            w.io.kill();
        }
    }

    /// Records every reply waiting in the results queue.
    pub(crate) fn drain_replies(&mut self, pool: &impl PoolIo) {
        while self.take_reply(pool.next_reply()) != Took::Nothing {}
    }

    /// Handles what one read of the results queue returned: a reply is recorded; one that
    /// cannot be decoded (a worker's bug, or a peer scribbling) is reported on stderr and
    /// dropped (its job then fails when its worker is settled, or completes by a later
    /// reply); anything else (empty, timed out, closed) is nothing.
    pub(crate) fn take_reply(&mut self, got: Result<Reply, GetError>) -> Took {
        match got {
            Ok(reply) => {
                self.on_reply(reply);
                Took::Reply
            }
            Err(GetError::Unreadable { reason }) => {
                eprintln!("mproc pool: unreadable reply dropped: {reason}");
                Took::Unreadable
            }
            Err(_) => Took::Nothing,
        }
    }

    pub(crate) fn busy(&self) -> bool {
        !self.pending.is_empty() || self.workers.iter().any(|w| !w.sent.is_empty())
    }
}

impl<W: WorkerIo> State<W> {
    /// Fails every unfinished job with `error` and stops accepting work, but signals nobody
    /// (`Pool::stop` does that, with a grace period; `break_pool` at once).
    pub(crate) fn break_pool_soft(&mut self, error: TaskError) {
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

pub(crate) fn abandon_job<W>(st: &mut State<W>, id: u64) {
    match st.jobs.get_mut(&id) {
        Some(job) if job.outcome.is_some() => {
            st.jobs.remove(&id);
        }
        Some(job) => job.abandoned = true,
        None => {}
    }
}

/// What one read of the results queue gave (see [`State::take_reply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Took {
    Reply,
    Unreadable,
    Nothing,
}
