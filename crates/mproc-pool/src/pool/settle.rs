//! What happens when a worker dies: the handler thread notices (`watch`), reads every reply
//! the worker sent before it died, fails or retries the job it was running (by the cause: a
//! crash, a time limit, a cancellation, the memory ceiling), and starts a replacement
//! (`start_one`), counting restarts by cause for `Pool::stats` and the status board.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mproc_queue::Queue;

use super::state::{Config, State, Worker};
use super::wakeup::Shared;
use super::{PREFETCH, START_FAILURES};
use crate::call::layout_check;
use crate::process::{StartMethod, start_worker};
use crate::worker::{Boot, Reply, Request, inbox_options};
use crate::{ProcessError, TaskError};

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
