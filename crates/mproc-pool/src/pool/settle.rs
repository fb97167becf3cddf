//! What happens when a worker dies: the handler thread notices (`watch`), reads every reply
//! the worker sent before it died, fails or retries the job it was running (by the cause: a
//! crash, a time limit, a cancellation, the memory ceiling), and starts a replacement
//! (`PoolIo::start_replacement`), counting restarts by cause for `Pool::stats` and the status board.

use std::time::{Duration, Instant};

use super::seam::{PoolIo, WorkerIo};
use super::state::State;
use super::{RESTART_FIRST_DELAY, RESTART_GIVE_UP, RESTART_MAX_DELAY, START_FAILURES};
use crate::TaskError;

impl<W: WorkerIo> State<W> {
    /// Reaps dead workers, settles their jobs and starts replacements.
    pub(crate) fn watch(&mut self, pool: &impl PoolIo<Worker = W>) {
        self.enforce_limits();
        self.last_watch = Some(Instant::now());
        self.retry_restarts(pool);
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
        let memory = status == Some(crate::ExitStatus::Code(crate::protocol::EXIT_MEMORY));
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
                    TaskError::Timeout { .. } => Cause::TimedOut,
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
                self.break_pool(crate::PoolBroken::Start {
                    message: format!(
                        "{START_FAILURES} workers in a row died before they were ready (last: pid {pid}, {status:?})"
                    ),
                });
                return;
            }
        }
        match pool.start_replacement(i as u32) {
            Ok(io) => self.install(i, io, cause, pid),
            Err(e) if is_passing(&e) => {
                let now = Instant::now();
                mproc_segment::slow_path_event!(
                    slot = i,
                    old_pid = pid,
                    status = ?status,
                    error = %e,
                    "pool worker could not be replaced yet; trying again"
                );
                self.restarts_due.push(RestartDue {
                    slot: i,
                    old_pid: pid,
                    cause,
                    at: now + RESTART_FIRST_DELAY,
                    delay: RESTART_FIRST_DELAY,
                    since: now,
                });
            }
            Err(e) => self.break_pool(crate::PoolBroken::Start {
                message: e.to_string(),
            }),
        }
    }

    /// Puts the replacement `io` in slot `i` and counts the restart by its cause (`old_pid`:
    /// the worker it replaces, for the event).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    fn install(&mut self, i: usize, io: W, cause: Cause, old_pid: u32) {
        mproc_segment::slow_path_event!(
            slot = i,
            old_pid,
            new_pid = io.pid(),
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

    /// Tries again the replacements that failed for a passing reason and are due: a slot
    /// gets its worker back once the system lets it fork again; the pool breaks only if a
    /// replacement keeps failing for [`RESTART_GIVE_UP`], or fails for another reason.
    fn retry_restarts(&mut self, pool: &impl PoolIo<Worker = W>) {
        if self.restarts_due.is_empty() || self.stopping || self.broken.is_some() {
            return;
        }
        let now = Instant::now();
        let due: Vec<RestartDue> = {
            let (due, later) = std::mem::take(&mut self.restarts_due)
                .into_iter()
                .partition(|r| r.at <= now);
            self.restarts_due = later;
            due
        };
        for mut r in due {
            match pool.start_replacement(r.slot as u32) {
                Ok(io) => self.install(r.slot, io, r.cause, r.old_pid),
                Err(e) if is_passing(&e) && r.since.elapsed() < RESTART_GIVE_UP => {
                    r.delay = (r.delay * 2).min(RESTART_MAX_DELAY);
                    r.at = Instant::now() + r.delay;
                    self.restarts_due.push(r);
                }
                Err(e) => {
                    let message = if is_passing(&e) {
                        format!(
                            "a replacement worker could not start for {:?} (last: {e})",
                            r.since.elapsed()
                        )
                    } else {
                        e.to_string()
                    };
                    self.break_pool(crate::PoolBroken::Start { message });
                    return;
                }
            }
        }
    }
}

/// Whether a worker failed to start for a reason that passes (the system is out of
/// processes or memory for now: fork's EAGAIN and ENOMEM, however they reached us).
fn is_passing(e: &crate::StartError) -> bool {
    use mproc_segment::Errno;
    match e {
        crate::StartError::Os(os) => matches!(os.errno, Errno::AGAIN | Errno::NOMEM),
        _ => false,
    }
}

/// A slot waiting to try its replacement again.
#[derive(Debug)]
pub(crate) struct RestartDue {
    slot: usize,
    old_pid: u32,
    cause: Cause,
    /// When to try next, how long the last wait was, since when it has been failing.
    at: Instant,
    delay: Duration,
    since: Instant,
}

/// Why a worker was replaced.
#[derive(Debug, Clone, Copy)]
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
