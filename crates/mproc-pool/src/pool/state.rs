//! The pool's bookkeeping in the parent: jobs, workers and what each was sent, the handler
//! thread, and how a dead worker is settled (see the module docs of `pool`).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mproc_queue::{GetError, PutError, Queue};
use nix::sys::signal::Signal;

use super::{PREFETCH, START_FAILURES, WATCH_BUSY, WATCH_IDLE};
use crate::call::{FnRef, layout_check};
use crate::child::ChildProc;
use crate::process::{StartMethod, start_worker};
use crate::worker::{Boot, Reply, Request, inbox_options};
use crate::{ProcessError, TaskError};

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
pub(crate) struct Worker {
    pub child: ChildProc,
    pub inbox: Queue<Request>,
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

impl Worker {
    /// Alive and not retiring: new jobs may be sent to it.
    pub(crate) fn takes_work(&self) -> bool {
        !self.retiring && self.child.status().is_none()
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

#[derive(Debug, Default)]
pub(crate) struct State {
    pub workers: Vec<Worker>,
    pub pending: VecDeque<u64>,
    pub jobs: HashMap<u64, Job>,
    pub next_job: u64,
    /// No new jobs (close / join / terminate).
    pub closed: bool,
    /// The handler thread should exit.
    pub stopping: bool,
    /// Why the pool cannot go on (initializer failure, workers that cannot start, terminate).
    pub broken: Option<TaskError>,
    pub start_failures: u32,
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

#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub changed: Condvar,
    /// Bumped after every change waiters may care about (see [`Shared::notify`]).
    pub generation: AtomicU64,
    /// Threads sleeping on `changed`.
    pub sleepers: AtomicUsize,
    /// Callers reading the results queue themselves right now (see `wait_until`).
    pub drivers: AtomicUsize,
    pub results: Queue<Reply>,
    pub config: Config,
    /// The status board, if the pool has a name.
    pub board: Option<super::board::Board>,
    /// Futures (and selects) waiting for a change, woken by [`Shared::notify`].
    pub wakers: Wakers,
}

/// Wakers of futures waiting on the pool's state (`AsyncResult` as a future, `Imap` as a
/// stream, selects): one-shot, like the reactor's registrations — `notify` wakes and forgets
/// them all; a future still not ready registers again. Counted, so that `notify` takes no lock
/// when no future waits.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    list: Mutex<std::collections::HashMap<u64, std::task::Waker>>,
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    next: AtomicU64,
    count: AtomicUsize,
}

impl Wakers {
    /// Registers `waker` (replacing registration `prev`, if any) and returns its id. Register
    /// first, then look at the state: a change after the look is followed by a `notify` that
    /// sees the registration.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn register(&self, prev: Option<u64>, waker: &std::task::Waker) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = prev {
            list.remove(&p);
        }
        list.insert(id, waker.clone());
        self.count.store(list.len(), Ordering::SeqCst);
        id
    }

    /// Removes a registration (a future dropped or done).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn remove(&self, id: u64) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.remove(&id);
        self.count.store(list.len(), Ordering::SeqCst);
    }

    fn wake_all(&self) {
        // SYNC POINT: `count` is stored (SeqCst) under the list lock before the registering
        // future looks at the state; `notify` changes the state first, then reads it here.
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let woken: Vec<std::task::Waker> = {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            self.count.store(0, Ordering::SeqCst);
            list.drain().map(|(_, w)| w).collect()
        };
        woken.into_iter().for_each(std::task::Waker::wake);
    }
}

/// How long a waiting caller polls for replies itself before it sleeps until the handler
/// thread wakes it. Short tasks then come back without two thread wake-ups in between
/// (worker → handler → caller). The caller yields the CPU between polls, so on a machine
/// with as many workers as CPUs it does not slow the workers down.
const SPIN_FOR: Duration = Duration::from_micros(100);

/// How soon the handler looks again while a caller reads the replies.
const DRIVER_CHECK: Duration = Duration::from_millis(1);

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells waiters that the state changed. The condition variable is signalled only when
    /// someone sleeps on it (a signal is a system call, and most changes have no sleeper).
    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        // SYNC POINT: pairs with the increment in `sleep`, made under the state lock before
        // the sleeper's last look at the state; a change made after that look is followed by
        // this load, which then sees the sleeper.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
        self.wakers.wake_all();
    }

    /// Sleeps on the condition variable for at most `timeout` (a missed signal costs at most
    /// that), counted in `sleepers` so that `notify` knows to signal.
    pub(crate) fn sleep<'a>(
        &self,
        st: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let st = self
            .changed
            .wait_timeout(st, timeout)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        st
    }

    /// Waits until `check` finds what it looks for in the state, or `deadline` passes
    /// (`Err(TaskError::Timeout)`).
    ///
    /// For the first [`SPIN_FOR`] the caller reads the results queue itself (replies it takes
    /// are handled exactly as the handler would: under the lock, then notified); after that it
    /// sleeps on the condition variable and the handler thread does the reading.
    pub(crate) fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, TaskError> {
        let spin_until = Instant::now() + SPIN_FOR;
        let mut st = self.lock();
        loop {
            if let Some(v) = check(&mut st) {
                return Ok(v);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(TaskError::Timeout);
            }
            if now < spin_until {
                let seen = self.generation.load(Ordering::SeqCst);
                drop(st);
                self.drivers.fetch_add(1, Ordering::SeqCst);
                loop {
                    // Read under the lock: a reply taken off the queue is handled before the
                    // handler can settle a dead worker (which first drains the queue, also
                    // under the lock), so a finished job is never also reported dead.
                    let mut st = self.lock();
                    match self.results.try_get() {
                        Ok(reply) => {
                            st.on_reply(reply);
                            st.drain_replies(&self.results);
                            st.dispatch(&self.config);
                            drop(st);
                            self.notify();
                            break;
                        }
                        Err(GetError::Message { reason }) => {
                            eprintln!("mproc pool: unreadable reply dropped: {reason}");
                        }
                        Err(_) => {}
                    }
                    drop(st);
                    if self.generation.load(Ordering::SeqCst) != seen
                        || Instant::now() >= spin_until
                    {
                        break;
                    }
                    std::thread::yield_now();
                }
                self.drivers.fetch_sub(1, Ordering::SeqCst);
                st = self.lock();
                continue;
            }
            let cap = Duration::from_millis(100);
            let wait = deadline.map_or(cap, |d| d.saturating_duration_since(now).min(cap));
            st = self.sleep(st, wait);
        }
    }
}

pub(crate) fn start_one(
    shared_results: &Queue<Reply>,
    config: &Config,
    index: u32,
    replacement: bool,
) -> Result<Worker, ProcessError> {
    let inbox: Queue<Request> = inbox_options(PREFETCH, config.arena).anonymous()?;
    let boot = Boot {
        index,
        inbox_fd: inbox.segment().as_fd().as_raw_fd(),
        results_fd: shared_results.segment().as_fd().as_raw_fd(),
        check: layout_check(),
        one_shot: false,
        initializer: config.initializer.clone(),
        parent: std::process::id(),
        die_with_parent: true,
        max_rss: config.max_memory,
    };
    // A replacement is started by the pool's handler thread, while the parent has other
    // threads (the caller's at least): forking it from here could leave it a lock another
    // thread holds. It comes from the fork server instead, which has one thread.
    let method = match config.method {
        StartMethod::Fork if replacement => StartMethod::ForkServer,
        m => m,
    };
    let child = start_worker(method, &boot)?;
    Ok(Worker {
        child,
        inbox,
        sent: VecDeque::new(),
        dispatched: 0,
        completed: 0,
        ready: false,
        born: Instant::now(),
        busy_since: None,
        busy_total: Duration::ZERO,
        retiring: false,
    })
}

impl State {
    fn worker_of(&mut self, index: u32, pid: u32) -> Option<&mut Worker> {
        self.workers
            .get_mut(index as usize)
            .filter(|w| w.child.pid() == pid)
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
                TaskError::TimedOut { .. } => 1,
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
                    pid: w.child.pid(),
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
                self.break_pool(TaskError::InitializerFailed { message });
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
    pub(crate) fn break_pool(&mut self, error: TaskError) {
        if self.broken.is_some() {
            return;
        }
        self.break_pool_soft(error);
        self.stopping = true;
        for w in &self.workers {
            let _ = w.child.signal(Signal::SIGKILL);
        }
    }

    /// Sends pending jobs to workers with room, oldest job first, each to the least loaded
    /// worker; then lets idle workers steal jobs waiting in a busy worker's inbox.
    pub(crate) fn dispatch(&mut self, config: &Config) {
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
                count: job.count,
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
        let retry_args = (config.retries > 0).then(|| request.args.clone());
        let worker = &mut self.workers[w];
        match worker.inbox.try_put(request) {
            Ok(()) => {
                worker.sent.push_back(id);
                let idle = worker.sent.len() == 1;
                if idle {
                    worker.busy_since = Some(Instant::now());
                }
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.retry_args = retry_args;
                    if idle {
                        job.started = Some(Instant::now());
                    }
                }
                let worker = &mut self.workers[w];
                worker.dispatched += 1;
                if config.max_tasks.is_some_and(|k| worker.dispatched >= k) {
                    worker.inbox.close();
                    worker.retiring = true;
                }
                Ok(())
            }
            Err(e @ (PutError::Message { .. } | PutError::TooLarge { .. })) => {
                let hint = match e {
                    PutError::TooLarge { .. } => {
                        " (PoolBuilder::arena_bytes, or a smaller chunksize)"
                    }
                    _ => "",
                };
                self.fail(
                    id,
                    &TaskError::Encode {
                        message: format!("request could not be sent: {e}{hint}"),
                    },
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

    /// Kills the worker running a job that overran its time limit (the job then fails with
    /// `TimedOut` when the death is settled; the jobs queued behind it are sent elsewhere).
    fn enforce_limits(&mut self) {
        let now = Instant::now();
        for w in &self.workers {
            if w.child.status().is_some() {
                continue;
            }
            let Some(&id) = w.sent.front() else {
                continue;
            };
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let Some(limit) = job.limit else {
                continue;
            };
            // The front job is the one the worker runs: if no clock was started for it yet
            // (it reached the front in a way that did not set one), start it now, so a task
            // over its limit can never run unbounded.
            let started = *job.started.get_or_insert(now);
            if job.kill_reason.is_none() && now.duration_since(started) >= limit {
                // Marked only once the signal is sent: a failed kill is tried again at the
                // next watch instead of leaving the task to run on.
                if w.child.signal(Signal::SIGKILL).is_ok() {
                    job.kill_reason = Some(TaskError::TimedOut {
                        limit_ms: limit.as_millis() as u64,
                    });
                    self.stopped_for_tasks += 1;
                }
            }
        }
    }

    /// Cancels job `id`: a job still waiting is dropped; one waiting in a worker's inbox is
    /// taken back out (the others there go back to the front of the line); a running one has
    /// its worker killed and replaced. Returns false if the job had already finished.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        match self.jobs.get(&id) {
            Some(job) if job.outcome.is_none() => {}
            _ => return false,
        }
        if let Some(pos) = self.pending.iter().position(|&j| j == id) {
            self.pending.remove(pos);
            self.fail(id, &TaskError::Cancelled);
            return true;
        }
        let Some(i) = self.workers.iter().position(|w| w.sent.contains(&id)) else {
            self.fail(id, &TaskError::Cancelled);
            return true;
        };
        // Take back what waits in its inbox: the job, if not started, is among it.
        let mut back = Vec::new();
        while let Ok(req) = self.workers[i].inbox.try_get() {
            back.push(req);
        }
        let mut found = false;
        for req in back.into_iter().rev() {
            self.workers[i].sent.retain(|&j| j != req.job);
            if req.job == id {
                found = true;
            } else if let Some(job) = self.jobs.get_mut(&req.job) {
                job.args = Some(req.args);
                self.pending.push_front(req.job);
            }
        }
        if found {
            self.fail(id, &TaskError::Cancelled);
        } else if let Some(job) = self.jobs.get_mut(&id) {
            // It is running: stop its worker; settling the death fails it as Cancelled.
            job.kill_reason = Some(TaskError::Cancelled);
            let _ = self.workers[i].child.signal(Signal::SIGKILL);
            self.stopped_for_tasks += 1;
        }
        true
    }

    /// Reaps dead workers, settles their jobs and starts replacements.
    pub(crate) fn watch(&mut self, shared: &Shared) {
        self.enforce_limits();
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

    pub(crate) fn drain_replies(&mut self, results: &Queue<Reply>) {
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
        let memory = status == Some(crate::ExitStatus::Code(crate::worker::EXIT_MEMORY));
        let clean_exit = (status == Some(crate::ExitStatus::Code(0)) && w.retiring) || memory;
        let retries = shared.config.retries;
        let mut cause = if memory {
            Cause::Memory
        } else if clean_exit {
            Cause::MaxTasks
        } else {
            Cause::Died
        };
        for id in lost {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if let Some(reason) = job.kill_reason.take() {
                cause = match reason {
                    TaskError::TimedOut { .. } => Cause::TimedOut,
                    _ => Cause::Cancelled,
                };
                self.fail(id, &reason);
            } else if job.attempts < retries && job.retry_args.is_some() && job.outcome.is_none() {
                // Run it again elsewhere, first in line.
                job.attempts += 1;
                job.args = job.retry_args.take();
                job.started = None;
                self.pending.push_front(id);
                self.retried += 1;
            } else {
                mproc_segment::slow_path_event!(
                    task = id,
                    worker_pid = pid,
                    ?signal,
                    ?code,
                    "pool task failed: its worker died while running it"
                );
                self.fail(id, &TaskError::WorkerDied { pid, signal, code });
            }
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
        match start_one(&shared.results, &shared.config, i as u32, true) {
            Ok(w) => {
                mproc_segment::slow_path_event!(
                    slot = i,
                    old_pid = pid,
                    new_pid = w.child.pid(),
                    status = ?status,
                    cause = cause.as_str(),
                    "pool worker replaced"
                );
                self.tasks_done += self.workers[i].completed;
                self.workers[i] = w;
                self.replaced += 1;
                let r = &mut self.restarts;
                *match cause {
                    Cause::Died => &mut r.died,
                    Cause::TimedOut => &mut r.timed_out,
                    Cause::Cancelled => &mut r.cancelled,
                    Cause::Memory => &mut r.memory,
                    Cause::MaxTasks => &mut r.max_tasks,
                } += 1;
            }
            Err(e) => self.break_pool(TaskError::Start {
                message: e.to_string(),
            }),
        }
    }

    pub(crate) fn busy(&self) -> bool {
        !self.pending.is_empty() || self.workers.iter().any(|w| !w.sent.is_empty())
    }
}

/// Why a worker was replaced.
enum Cause {
    Died,
    TimedOut,
    Cancelled,
    Memory,
    MaxTasks,
}

impl Cause {
    /// The name events and stats use.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    fn as_str(&self) -> &'static str {
        match self {
            Cause::Died => "died",
            Cause::TimedOut => "timed_out",
            Cause::Cancelled => "cancelled",
            Cause::Memory => "memory",
            Cause::MaxTasks => "max_tasks",
        }
    }
}

/// The handler thread: replies, refills, deaths.
pub(crate) fn handler(shared: Arc<Shared>) {
    loop {
        if shared.drivers.load(Ordering::SeqCst) > 0 {
            // A waiting caller reads the replies right now: reading too would only make us
            // compete with it for the CPU and the lock. Look again soon (it stops reading when
            // its short polling phase ends) and keep watching the workers meanwhile.
            // A plain sleep, not the condition variable: the caller's notifications are for
            // other waiters, and waking us for each would cost it a system call per reply.
            std::thread::sleep(DRIVER_CHECK);
            let mut st = shared.lock();
            if st.last_watch.is_none_or(|t| t.elapsed() >= WATCH_BUSY) {
                st.watch(&shared);
                st.dispatch(&shared.config);
            }
            if let Some(board) = &shared.board {
                board.publish(&st.board_snapshot());
            }
            if st.stopping {
                return;
            }
            continue;
        }
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
        if let Some(board) = &shared.board {
            board.publish(&st.board_snapshot());
        }
        let stop = st.stopping;
        drop(st);
        shared.notify();
        if stop {
            return;
        }
    }
}

impl State {
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

pub(crate) fn abandon_job(st: &mut State, id: u64) {
    match st.jobs.get_mut(&id) {
        Some(job) if job.outcome.is_some() => {
            st.jobs.remove(&id);
        }
        Some(job) => job.abandoned = true,
        None => {}
    }
}
