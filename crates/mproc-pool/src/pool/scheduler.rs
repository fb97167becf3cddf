//! Scheduling: which worker gets which job. Jobs wait in `pending` in submission order; each
//! goes to the least loaded worker with room in its inbox (at most `PREFETCH` sent ahead), and
//! an idle worker steals jobs still waiting in a busy worker's inbox. Time limits and
//! cancellation stop a worker (its death is then settled in `settle.rs`).

use std::time::Instant;

use mproc_queue::PutError;

use super::PREFETCH;
use super::seam::WorkerIo;
use super::state::{Config, State};
use crate::TaskError;
use crate::protocol::Request;

impl<W: WorkerIo> State<W> {
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
        match worker.io.send(request) {
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
                    worker.io.close_inbox();
                    worker.retiring = true;
                }
                Ok(())
            }
            Err(e @ (PutError::Unsendable { .. } | PutError::TooLarge { .. })) => {
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
                .position(|w| w.io.status().is_none() && w.sent.len() >= 2)
            else {
                return;
            };
            let Some(request) = self.workers[victim].io.take_back() else {
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
    /// `Timeout` when the death is settled; the jobs queued behind it are sent elsewhere).
    pub(super) fn enforce_limits(&mut self) {
        let now = Instant::now();
        for w in &self.workers {
            if w.io.status().is_some() {
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
                if w.io.kill() {
                    job.kill_reason = Some(TaskError::Timeout {
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
        while let Some(req) = self.workers[i].io.take_back() {
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
            self.workers[i].io.kill();
            self.stopped_for_tasks += 1;
        }
        true
    }
}
