//! `Pool`: a fixed set of worker processes serving `map`, `imap`, `apply_async`, ...
//! (Python's `multiprocessing.Pool`), with failure semantics Python does not have.
//!
//! # How it works
//! Each worker has its own inbox (`Queue<Request>`, capacity [`PREFETCH`]) and all workers
//! share one results queue (`Queue<Reply>`). The parent keeps, per worker, the list of jobs
//! it sent and not yet had answered (`Worker::sent`). Workers answer strictly in order.
//!
//! A *handler* thread in the parent reads replies, refills inboxes, and watches the workers:
//! - a reply completes its job and wakes whoever waits for it;
//! - a dead worker (its pid reaped) is settled: first every reply it managed to send is read,
//!   then the requests still in its inbox are taken back and re-queued (they never started),
//!   and what remains in its `sent` list — at most the one job it held — fails with
//!   [`TaskError::WorkerDied`]. A replacement is started at the same slot;
//! - a worker that has been sent `max_tasks_per_child` jobs gets its inbox closed; it finishes
//!   them, exits, and is replaced.
//!
//! Threads that submit work also dispatch it directly, so an idle handler is never on the
//! path of a new job, and a thread waiting for a result reads the replies itself for a short
//! while (the handler then only watches the workers), so a short task's answer does not wait
//! for two thread wake-ups. Replacement workers are forked by the handler thread: the child runs
//! only mproc's worker loop and your task functions, never code that could hold a lock of
//! another parent thread. If your task functions take process-wide locks of their own, use
//! [`StartMethod::Spawn`].

mod board;
mod builder;
#[cfg(feature = "async")]
mod futures;
mod handler;
mod io;
#[cfg(test)]
mod machine_tests;
mod results;
mod scheduler;
mod seam;
mod settle;
mod state;
mod tasks;
mod wakeup;

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::StartMethod;
use crate::launch::{Booted, await_boot};
use crate::protocol::{Reply, results_options};
use crate::{PoolBroken, StartError, TaskError};
use mproc_queue::Queue;

pub use board::{
    BOARD_FORMAT, BoardSnapshot, BoardWorker, BoardWorkerState, FAILURE_KINDS, RESTART_CAUSES,
};
pub use builder::{PoolBuilder, PoolStats, Restarts, WorkerStats};
use handler::handler;
use io::start_all;
pub use results::{AsyncResult, Imap, MapResult};
use seam::WorkerIo;
use state::{Config, State};
use wakeup::Shared;

/// Jobs a worker may hold at once (running plus waiting in its inbox): enough that it never
/// waits for the parent between two jobs, few enough that work stays balanced.
pub const PREFETCH: usize = 2;

/// How often the handler looks for dead workers while jobs are in flight.
const WATCH_BUSY: Duration = Duration::from_millis(10);
/// ... and while the pool is idle.
const WATCH_IDLE: Duration = Duration::from_millis(100);
/// Workers that die before becoming ready, in a row, before the pool gives up.
const START_FAILURES: u32 = 3;
/// The first wait before a replacement that could not start for a passing reason (fork's
/// EAGAIN or ENOMEM) is tried again; each failure doubles it, up to [`RESTART_MAX_DELAY`].
const RESTART_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest wait between two tries of such a replacement.
const RESTART_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a replacement may keep failing for a passing reason before the pool is broken
/// (the documented rule: a pool that cannot start workers for a minute is reported broken).
const RESTART_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(60);
/// How long `terminate` lets workers react to SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Task functions are plain `fn(A) -> R` (closures that capture nothing coerce); `A` and `R`
/// are serde types. Results come back in order from `map`, lazily from `imap`, and through an
/// [`AsyncResult`] from `apply_async`.
///
/// **Failures stay local.** A task that panics fails alone with [`TaskError::Panicked`]. A
/// worker that dies (SIGKILL, OOM killer, `abort`) fails only the job it was running, with
/// [`TaskError::WorkerDied`]; jobs it had been sent but not started run elsewhere, a
/// replacement starts, and the pool goes on. (Python's `Pool.map` hangs forever in that case.)
///
/// Dropping a pool that was not [`join`](Pool::join)ed terminates it: workers are stopped
/// and reaped and their shared memory freed; unfinished tasks fail with
/// [`TaskError::Terminated`].
///
/// ```
/// use mproc_pool::Pool;
/// let pool = Pool::builder().processes(2).build()?;
/// let squares: Vec<u64> = pool.map(|x: u64| x * x, 0..100)?;
/// assert_eq!(squares[99], 9801);
/// let h = pool.apply_async(|s: String| s.to_uppercase(), "hi".to_string())?;
/// assert_eq!(h.get()?, "HI");
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    handler: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
    chunksize: Option<usize>,
    #[cfg_attr(not(feature = "progress"), allow(dead_code))]
    progress: bool,
}

impl Pool {
    /// A builder; see [`PoolBuilder`].
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// A pool of `processes` workers with the default options.
    pub fn new(processes: usize) -> Result<Pool, StartError> {
        Pool::builder().processes(processes).build()
    }

    fn start(b: PoolBuilder) -> Result<Pool, StartError> {
        b.launch.check()?;
        let processes = b
            .processes
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let initializer = match b.initializer {
            None => None,
            Some(Ok(init)) => Some(init),
            Some(Err(message)) => return Err(StartError::Encode { message }),
        };
        let config = Config {
            method: b.launch.method,
            initializer,
            max_tasks: b.max_tasks_per_child,
            arena: b.arena_bytes,
            task_timeout: b.task_timeout,
            retries: b.retries,
            max_memory: b.max_memory,
        };
        let board = match &b.board {
            Some(name) => Some(board::Board::create(name, processes)?),
            None => None,
        };
        let capacity = (processes * (PREFETCH + 4)).max(64);
        let results: Queue<Reply> = results_options(capacity, b.arena_bytes).anonymous()?;
        let workers = start_all(&results, &config, processes)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(workers)),
            changed: Condvar::new(),
            generation: std::sync::atomic::AtomicU64::new(0),
            sleepers: std::sync::atomic::AtomicUsize::new(0),
            drivers: std::sync::atomic::AtomicUsize::new(0),
            results,
            reading: Mutex::new(()),
            config,
            board,
            wakers: Default::default(),
        });
        // Wait for every worker to be ready (initializer done) before anyone uses the pool.
        Self::await_ready(&shared, b.launch.start_timeout)?;
        let handler = {
            let shared = Arc::clone(&shared);
            let own = mproc_segment::OwnThread::mark();
            std::thread::Builder::new()
                .name("mproc-pool".into())
                .spawn(move || {
                    let _own = own;
                    handler(shared)
                })
                .map_err(|e| StartError::os("thread spawn", mproc_segment::errno_of(&e)))?
        };
        Ok(Pool {
            shared,
            handler: Mutex::new(Some(handler)),
            processes,
            chunksize: b.chunksize,
            progress: b.progress,
        })
    }

    /// Reads replies until all workers are ready. A worker that fails its initializer, dies,
    /// or (spawn) does not reach `init` in time fails the start; the caller's drop of
    /// `shared` then kills and reaps every worker.
    fn await_ready(shared: &Shared, start_timeout: Duration) -> Result<(), StartError> {
        let spawn = shared.config.method == StartMethod::Spawn;
        // Only a spawned worker can be late: it must reach `init` in a program we do not run.
        let deadline = spawn.then(|| Instant::now() + start_timeout);
        let booted = await_boot(
            &shared.results,
            deadline,
            |reply| shared.lock().on_reply(reply),
            || {
                let st = shared.lock();
                st.broken.is_some() || st.workers.iter().all(|w| w.ready)
            },
            || {
                let st = shared.lock();
                for w in &st.workers {
                    if let Some(status) = w.io.child.try_wait()? {
                        return Ok(Some(status));
                    }
                }
                Ok(None)
            },
        )?;
        if let Some(TaskError::Broken(crate::PoolBroken::InitializerFailed { message })) =
            shared.lock().broken.clone()
        {
            return Err(StartError::InitializerFailed { message });
        }
        match booted {
            Booted::Done => Ok(()),
            Booted::Ended(_) if spawn => Err(StartError::InitNotCalled(
                "a spawned worker exited before it was ready: call mproc::init() first thing in \
                 main",
            )),
            Booted::Ended(status) => Err(StartError::WorkerEnded { status }),
            Booted::Late => Err(StartError::InitNotCalled(
                "a spawned worker did not become ready in time: call mproc::init() first thing \
                 in main",
            )),
        }
    }

    /// Number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The process ids of the current workers.
    pub fn pids(&self) -> Vec<u32> {
        self.shared
            .lock()
            .workers
            .iter()
            .map(|w| w.io.pid())
            .collect()
    }

    /// How many workers have been replaced so far (after dying or `max_tasks_per_child`).
    pub fn replaced_workers(&self) -> u64 {
        self.shared.lock().replaced
    }

    /// What the pool's workers are doing and have done: per worker, its pid, the tasks
    /// (chunks) it completed, how long it has had work and how long it waited; and why
    /// workers were replaced.
    ///
    /// ```
    /// let pool = mproc_pool::Pool::builder().processes(2).build()?;
    /// pool.map(|x: u32| x + 1, 0..100)?;
    /// let stats = pool.stats();
    /// assert_eq!(stats.workers.len(), 2);
    /// assert!(stats.tasks_done >= 2);
    /// assert_eq!(stats.restarts.died, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        let st = self.shared.lock();
        let now = Instant::now();
        let workers: Vec<WorkerStats> = st
            .workers
            .iter()
            .map(|w| {
                let busy = w.busy_total + w.busy_since.map_or(Duration::ZERO, |s| now - s);
                let age = now - w.born;
                WorkerStats {
                    pid: w.io.pid(),
                    tasks_done: w.completed,
                    running: !w.sent.is_empty(),
                    busy,
                    idle: age.saturating_sub(busy),
                }
            })
            .collect();
        PoolStats {
            tasks_done: st.tasks_done + workers.iter().map(|w| w.tasks_done).sum::<u64>(),
            workers,
            retried: st.retried,
            restarts: st.restarts,
        }
    }

    /// Accepts no more tasks; the workers exit once the queued ones are done (see
    /// [`join`](Pool::join)).
    pub fn close(&self) {
        self.shared.lock().closed = true;
    }

    /// Closes the pool, waits for every queued task to finish, stops the workers and reaps
    /// them. Results of `AsyncResult`s remain available.
    pub fn join(&self) -> Result<(), PoolBroken> {
        {
            let mut st = self.shared.lock();
            st.closed = true;
            while st.busy() && st.broken.is_none() && !st.stopping {
                st = self.shared.sleep(st, Duration::from_millis(100));
            }
        }
        self.stop(false);
        match self.shared.lock().broken.clone() {
            Some(TaskError::Broken(b)) => Err(b),
            _ => Ok(()),
        }
    }

    /// Stops the workers now (SIGTERM, then SIGKILL after a grace period of 1 s) and reaps
    /// them; unfinished tasks fail with [`TaskError::Terminated`].
    pub fn terminate(&self) {
        self.shared.lock().break_pool_soft(TaskError::Terminated);
        self.stop(true);
    }

    /// Stops the handler, then the workers: closes their inboxes (graceful) or signals them.
    fn stop(&self, terminate: bool) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            // A graceful stop lets the workers start leaving now: their exits overlap the
            // handler's (a stopping pool replaces no worker, see `settle.rs`).
            if !terminate {
                for w in &st.workers {
                    w.io.close_inbox();
                }
            }
        }
        // Wakes the handler if it sleeps on the results queue; nothing is read from it after
        // this (a worker's late reply is dropped with the queue).
        self.shared.results.close();
        let handle = self
            .handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        if let Some(board) = &self.shared.board {
            board.unlink();
        }
        let mut workers = std::mem::take(&mut self.shared.lock().workers);
        for w in &workers {
            if terminate {
                let _ = w.io.child.signal(Signal::TERM);
            } else {
                w.io.close_inbox();
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        for w in &mut workers {
            if !matches!(w.io.child.wait_until(Some(deadline)), Ok(Some(_))) {
                w.io.child.kill_and_reap();
            }
        }
        // Replies nobody will read stay in the results queue's memfd, which goes with it.
        self.shared.notify();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let running = self
            .handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if running {
            self.terminate();
        }
    }
}
