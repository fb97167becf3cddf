//! What happens when a worker dies: the handler thread notices (`watch`), reads every reply
//! the worker sent before it died, fails or retries the job it was running (by the cause: a
//! crash, a time limit, a cancellation, the memory ceiling), and starts a replacement
//! (`PoolIo::start_replacement`), counting restarts by cause for `Pool::stats` and the status board.

use std::time::Instant;

use super::START_FAILURES;
use super::io::{PoolIo, WorkerIo};
use super::state::State;
use crate::TaskError;

impl<W: WorkerIo> State<W> {
    /// Reaps dead workers, settles their jobs and starts replacements.
    pub(crate) fn watch(&mut self, pool: &impl PoolIo<Worker = W>) {
        self.enforce_limits();
        self.last_watch = Some(Instant::now());
        let mut dead = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            if w.io.status().is_none() && w.io.reap().is_some() {
                dead.push(i);
            }
        }
        if dead.is_empty() {
            return;
        }
        // Every reply a dead worker sent is in the results queue now: read them first.
        self.drain_replies(pool);
        for i in dead {
            self.settle(i, pool);
        }
    }

    fn settle(&mut self, i: usize, pool: &impl PoolIo<Worker = W>) {
        let w = &mut self.workers[i];
        let status = w.io.status();
        let pid = w.io.pid();
        let was_ready = w.ready;
        // Requests it never took: back to the front of the queue, in order.
        let mut back = Vec::new();
        while let Some(req) = w.io.take_back() {
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
        let retries = pool.config().retries;
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
        match pool.start_replacement(i as u32) {
            Ok(io) => {
                mproc_segment::slow_path_event!(
                    slot = i,
                    old_pid = pid,
                    new_pid = io.pid(),
                    status = ?status,
                    cause = cause.as_str(),
                    "pool worker replaced"
                );
                self.tasks_done += self.workers[i].completed;
                self.workers[i] = super::state::Worker::new(io);
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
