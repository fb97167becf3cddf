//! Unit tests of the pool's scheduling state machine (`state.rs`, `scheduler.rs`,
//! `settle.rs`), driven over fake workers: no process, no queue, no signal. Each test plays
//! what workers do (take a request, answer, die, exit) by hand and checks what the scheduler
//! does about it. The multi-process suites (`tests/pool*.rs`) check the same paths for real.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mproc_queue::{GetError, PutError};

use super::PREFETCH;
use super::seam::{PoolIo, WorkerIo};
use super::state::{Config, Outcome, State, Took, Worker};
use crate::call::FnRef;
use crate::child::ExitStatus;
use crate::launch::StartMethod;
use crate::protocol::{EXIT_MEMORY, Reply, Request};
use crate::{StartError, TaskError};

mod breaking;

const SIGKILL: i32 = 9;

/// A worker process played by hand: an inbox of bounded room, an exit the test decides.
#[derive(Debug)]
struct Fake {
    pid: u32,
    /// Requests sent and not yet taken by the "process".
    inbox: RefCell<VecDeque<Request>>,
    /// Requests the "process" took (it runs the front one).
    taken: RefCell<Vec<u64>>,
    closed: Cell<bool>,
    /// Refuse every request as too large to store.
    refuse: Cell<bool>,
    /// How the process ended, not yet reaped.
    exited: Cell<Option<ExitStatus>>,
    reaped: Cell<Option<ExitStatus>>,
    kills: Cell<u32>,
}

impl Fake {
    fn new(pid: u32) -> Fake {
        Fake {
            pid,
            inbox: RefCell::new(VecDeque::new()),
            taken: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            refuse: Cell::new(false),
            exited: Cell::new(None),
            reaped: Cell::new(None),
            kills: Cell::new(0),
        }
    }

    /// The process takes the oldest request from its inbox (it starts running it).
    fn take(&self) -> u64 {
        let req = self.inbox.borrow_mut().pop_front().expect("a request");
        self.taken.borrow_mut().push(req.job);
        req.job
    }

    fn inbox_jobs(&self) -> Vec<u64> {
        self.inbox.borrow().iter().map(|r| r.job).collect()
    }

    fn exit(&self, status: ExitStatus) {
        self.exited.set(Some(status));
    }
}

impl WorkerIo for Fake {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn send(&self, request: Request) -> Result<(), PutError<Request>> {
        if self.refuse.get() {
            return Err(PutError::TooLarge {
                value: request,
                size: 1 << 30,
                max: 1 << 20,
            });
        }
        if self.closed.get() || self.exited.get().is_some() {
            return Err(PutError::Closed(request));
        }
        if self.inbox.borrow().len() >= PREFETCH {
            return Err(PutError::Full(request));
        }
        self.inbox.borrow_mut().push_back(request);
        Ok(())
    }
    fn take_back(&self) -> Option<Request> {
        self.inbox.borrow_mut().pop_front()
    }
    fn close_inbox(&self) {
        self.closed.set(true);
    }
    fn status(&self) -> Option<ExitStatus> {
        self.reaped.get()
    }
    fn reap(&self) -> Option<ExitStatus> {
        if let Some(s) = self.exited.get() {
            self.reaped.set(Some(s));
        }
        self.reaped.get()
    }
    fn kill(&self) -> bool {
        self.kills.set(self.kills.get() + 1);
        if self.exited.get().is_none() {
            self.exited.set(Some(ExitStatus::Signaled(SIGKILL)));
        }
        true
    }
}

/// The pool around the fakes: a results queue the test fills, replacements with new pids.
struct FakePool {
    replies: RefCell<VecDeque<Reply>>,
    next_pid: Cell<u32>,
    fail_start: Cell<bool>,
    /// Starts that fail with EAGAIN (fork's "out of processes for now") before one works.
    eagain_starts: Cell<u32>,
    config: Config,
}

impl PoolIo for FakePool {
    type Worker = Fake;
    fn next_reply(&self) -> Result<Reply, GetError> {
        self.replies.borrow_mut().pop_front().ok_or(GetError::Empty)
    }
    fn start_replacement(&self, _index: u32) -> Result<Fake, StartError> {
        if self.eagain_starts.get() > 0 {
            self.eagain_starts.set(self.eagain_starts.get() - 1);
            return Err(StartError::os("fork", mproc_segment::Errno::AGAIN));
        }
        if self.fail_start.get() {
            return Err(StartError::Encode {
                message: "no more processes".into(),
            });
        }
        let pid = self.next_pid.get();
        self.next_pid.set(pid + 1);
        Ok(Fake::new(pid))
    }
    fn config(&self) -> &Config {
        &self.config
    }
}

fn config() -> Config {
    Config {
        method: StartMethod::Fork,
        initializer: None,
        max_tasks: None,
        arena: 1 << 20,
        task_timeout: None,
        retries: 0,
        max_memory: None,
    }
}

/// A pool of `n` ready fake workers (pids 100, 101, ...) and its surroundings.
fn pool(n: u32, config: Config) -> (State<Fake>, FakePool) {
    let workers = (0..n)
        .map(|i| {
            let mut w = Worker::new(Fake::new(100 + i));
            w.ready = true;
            w
        })
        .collect();
    let env = FakePool {
        replies: RefCell::new(VecDeque::new()),
        next_pid: Cell::new(200),
        fail_start: Cell::new(false),
        eagain_starts: Cell::new(0),
        config,
    };
    (State::new(workers), env)
}

fn square(x: u32) -> u32 {
    x * x
}

fn submit(st: &mut State<Fake>, limit: Option<Duration>) -> u64 {
    st.submit(FnRef::new(square as fn(u32) -> u32), 1, vec![7], limit)
        .expect("the pool takes work")
}

fn done(st: &mut State<Fake>, worker: u32, job: u64) {
    let pid = st.workers[worker as usize].io.pid;
    st.on_reply(Reply::Done {
        worker,
        pid,
        job,
        body: vec![job as u8],
    });
}

fn outcome(st: &State<Fake>, id: u64) -> Option<Outcome> {
    st.jobs.get(&id).and_then(|j| j.outcome.clone())
}

fn failed_with(st: &State<Fake>, id: u64) -> Option<TaskError> {
    match outcome(st, id) {
        Some(Outcome::Failed(e)) => Some(e),
        _ => None,
    }
}

#[test]
fn dispatch_sends_oldest_first_to_the_least_loaded_worker_up_to_prefetch() {
    let (mut st, env) = pool(2, config());
    let ids: Vec<u64> = (0..5).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    assert_eq!(st.workers[0].io.inbox_jobs(), vec![ids[0], ids[2]]);
    assert_eq!(st.workers[1].io.inbox_jobs(), vec![ids[1], ids[3]]);
    assert_eq!(st.pending, VecDeque::from([ids[4]]));
    assert_eq!(st.workers[0].dispatched, 2);
    // The one left waiting still has its arguments.
    assert!(st.jobs[&ids[4]].args.is_some());
    assert!(st.jobs[&ids[0]].args.is_none());
    assert!(st.busy());
}

#[test]
fn a_reply_completes_its_job_and_makes_room_for_the_next() {
    let (mut st, env) = pool(1, config());
    let ids: Vec<u64> = (0..3).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    assert_eq!(st.pending.len(), 1);
    assert_eq!(st.workers[0].io.take(), ids[0]);
    // One running and one waiting is all a worker holds, even with room in its inbox.
    st.dispatch(&env.config);
    assert_eq!(st.pending.len(), 1);
    done(&mut st, 0, ids[0]);
    assert!(matches!(outcome(&st, ids[0]), Some(Outcome::Body(b)) if b == vec![ids[0] as u8]));
    assert_eq!(st.workers[0].completed, 1);
    // The next job is now the one it runs: its clock started.
    assert!(st.jobs[&ids[1]].started.is_some());
    st.dispatch(&env.config);
    assert!(st.pending.is_empty());
    assert_eq!(st.workers[0].sent, VecDeque::from([ids[1], ids[2]]));
}

#[test]
fn an_idle_worker_steals_a_job_waiting_in_a_busy_workers_inbox() {
    let (mut st, env) = pool(2, config());
    // Worker 1 is full for now, so both jobs go to worker 0.
    st.workers[1].sent.extend([90, 91]);
    let a = submit(&mut st, None);
    let b = submit(&mut st, None);
    st.dispatch(&env.config);
    assert_eq!(st.workers[0].io.inbox_jobs(), vec![a, b]);
    assert_eq!(st.workers[0].io.take(), a);
    st.workers[1].sent.clear();
    st.dispatch(&env.config);
    // `b` waited behind `a`: worker 1 took it, worker 0 keeps only what it runs.
    assert_eq!(st.workers[0].sent, VecDeque::from([a]));
    assert_eq!(st.workers[1].sent, VecDeque::from([b]));
    assert_eq!(st.workers[1].io.inbox_jobs(), vec![b]);
    assert!(st.workers[0].io.inbox_jobs().is_empty());
}

#[test]
fn a_dead_worker_fails_only_its_running_job_and_is_replaced() {
    let (mut st, env) = pool(2, config());
    let ids: Vec<u64> = (0..4).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    // Worker 0 finished ids[0] (its reply is in the queue), then died running ids[2].
    assert_eq!(st.workers[0].io.take(), ids[0]);
    env.replies.borrow_mut().push_back(Reply::Done {
        worker: 0,
        pid: 100,
        job: ids[0],
        body: vec![1],
    });
    assert_eq!(st.workers[0].io.take(), ids[2]);
    st.workers[0].io.exit(ExitStatus::Signaled(SIGKILL));
    st.watch(&env);
    // The reply it sent before dying counts.
    assert!(matches!(outcome(&st, ids[0]), Some(Outcome::Body(_))));
    assert_eq!(
        failed_with(&st, ids[2]),
        Some(TaskError::WorkerDied {
            pid: 100,
            signal: Some(SIGKILL),
            code: None
        })
    );
    // Worker 1's jobs are untouched; slot 0 has a new process.
    assert!(outcome(&st, ids[1]).is_none() && outcome(&st, ids[3]).is_none());
    assert_eq!(st.workers[0].io.pid, 200);
    assert!(!st.workers[0].ready);
    assert_eq!((st.replaced, st.restarts.died, st.failures[0]), (1, 1, 1));
    assert!(st.broken.is_none());
}

#[test]
fn requests_a_dead_worker_never_took_go_back_to_the_front_in_order() {
    let (mut st, env) = pool(1, config());
    let ids: Vec<u64> = (0..3).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    // It died before taking anything: nothing was running, nothing fails.
    st.workers[0].io.exit(ExitStatus::Code(1));
    st.watch(&env);
    assert_eq!(st.pending, VecDeque::from(ids.clone()));
    assert!(ids.iter().all(|id| st.jobs[id].args.is_some()));
    assert!(ids.iter().all(|id| outcome(&st, *id).is_none()));
    // The replacement gets them, oldest first.
    st.dispatch(&env.config);
    assert_eq!(st.workers[0].io.inbox_jobs(), vec![ids[0], ids[1]]);
}

#[test]
fn a_job_is_retried_after_its_worker_dies_then_fails() {
    let mut cfg = config();
    cfg.retries = 1;
    let (mut st, env) = pool(1, cfg);
    let id = submit(&mut st, None);
    st.dispatch(&env.config);
    st.workers[0].io.take();
    st.workers[0].io.exit(ExitStatus::Signaled(SIGKILL));
    st.watch(&env);
    assert!(outcome(&st, id).is_none());
    assert_eq!((st.retried, st.jobs[&id].attempts), (1, 1));
    assert_eq!(st.jobs[&id].args.as_deref(), Some(&[7u8][..]));
    st.workers[0].ready = true;
    st.dispatch(&env.config);
    st.workers[0].io.take();
    st.workers[0].io.exit(ExitStatus::Signaled(SIGKILL));
    st.watch(&env);
    assert!(matches!(
        failed_with(&st, id),
        Some(TaskError::WorkerDied { pid: 200, .. })
    ));
}

#[test]
fn a_job_over_its_time_limit_has_its_worker_killed_and_fails_timed_out() {
    let (mut st, env) = pool(2, config());
    let slow = submit(&mut st, Some(Duration::ZERO));
    let other = submit(&mut st, Some(Duration::from_secs(3600)));
    st.dispatch(&env.config);
    st.workers[0].io.take();
    st.workers[1].io.take();
    st.watch(&env);
    assert_eq!(st.workers[0].io.kills.get(), 0, "old worker replaced");
    assert_eq!(st.workers[0].io.pid, 200);
    assert_eq!(st.workers[1].io.kills.get(), 0);
    assert_eq!(
        failed_with(&st, slow),
        Some(TaskError::Timeout { limit_ms: 0 })
    );
    assert!(outcome(&st, other).is_none());
    assert_eq!((st.restarts.timed_out, st.stopped_for_tasks), (1, 1));
    assert_eq!(st.failures[1], 1);
}

#[test]
fn cancel_drops_a_waiting_job_takes_back_a_sent_one_and_kills_a_running_one() {
    let (mut st, env) = pool(1, config());
    let ids: Vec<u64> = (0..4).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    assert_eq!(st.workers[0].io.take(), ids[0]);
    // Waiting in the parent.
    assert!(st.cancel(ids[3]));
    assert_eq!(failed_with(&st, ids[3]), Some(TaskError::Cancelled));
    assert_eq!(st.pending, VecDeque::from([ids[2]]));
    // Waiting in the worker's inbox: taken back, nobody killed.
    assert!(st.cancel(ids[1]));
    assert_eq!(failed_with(&st, ids[1]), Some(TaskError::Cancelled));
    assert_eq!(st.workers[0].io.kills.get(), 0);
    assert_eq!(st.workers[0].sent, VecDeque::from([ids[0]]));
    // Running: its worker is killed, and the death settles it as cancelled.
    assert!(st.cancel(ids[0]));
    assert_eq!(st.workers[0].io.kills.get(), 1);
    assert!(outcome(&st, ids[0]).is_none());
    st.watch(&env);
    assert_eq!(failed_with(&st, ids[0]), Some(TaskError::Cancelled));
    assert_eq!(st.restarts.cancelled, 1);
    // Already finished: nothing to cancel.
    assert!(!st.cancel(ids[0]));
    // The job that waited is still there, for the replacement.
    assert_eq!(st.pending, VecDeque::from([ids[2]]));
}

#[test]
fn a_worker_retires_after_max_tasks_and_is_replaced_without_blame() {
    let mut cfg = config();
    cfg.max_tasks = Some(1);
    let (mut st, env) = pool(2, cfg);
    let ids: Vec<u64> = (0..3).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    // One job each, then their inboxes are closed; the third waits.
    assert!(st.workers.iter().all(|w| w.retiring && w.io.closed.get()));
    assert_eq!(st.pending, VecDeque::from([ids[2]]));
    st.workers[0].io.take();
    done(&mut st, 0, ids[0]);
    st.workers[0].io.exit(ExitStatus::Code(0));
    st.watch(&env);
    assert_eq!((st.restarts.max_tasks, st.restarts.died), (1, 0));
    assert_eq!(st.start_failures, 0);
    assert_eq!(st.tasks_done, 1);
    assert!(!st.workers[0].retiring);
    st.dispatch(&env.config);
    assert_eq!(st.workers[0].io.inbox_jobs(), vec![ids[2]]);
}

#[test]
fn a_worker_over_its_memory_ceiling_is_replaced_and_its_job_counts() {
    let (mut st, env) = pool(1, config());
    let id = submit(&mut st, None);
    st.dispatch(&env.config);
    st.workers[0].io.take();
    done(&mut st, 0, id);
    st.workers[0].io.exit(ExitStatus::Code(EXIT_MEMORY));
    st.watch(&env);
    assert!(matches!(outcome(&st, id), Some(Outcome::Body(_))));
    assert_eq!((st.restarts.memory, st.restarts.died), (1, 0));
}
