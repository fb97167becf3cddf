//! The real workers behind the scheduler's seam (`seam.rs`): a child process and its inbox
//! ([`Live`]), and starting one.

use std::os::fd::{AsFd, AsRawFd};

use mproc_queue::{PutError, Queue};
use rustix::process::Signal;

use super::PREFETCH;
use super::seam::WorkerIo;
use super::state::{Config, Worker};
use crate::StartError;
use crate::call::layout_check;
use crate::child::{ChildProc, ExitStatus};
use crate::launch::{StartMethod, start_worker};
use crate::protocol::{Boot, Reply, Request, inbox_options};
use crate::worker::worker_main;

/// A real worker: a child process and the inbox the parent sends it requests through.
#[derive(Debug)]
pub(crate) struct Live {
    pub child: ChildProc,
    pub inbox: Queue<Request>,
}

impl WorkerIo for Live {
    fn pid(&self) -> u32 {
        self.child.pid()
    }
    fn send(&self, request: Request) -> Result<(), PutError<Request>> {
        self.inbox.try_put(request)
    }
    fn take_back(&self) -> Option<Request> {
        self.inbox.try_get().ok()
    }
    fn close_inbox(&self) {
        self.inbox.close();
    }
    fn status(&self) -> Option<ExitStatus> {
        self.child.status()
    }
    fn reap(&self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
    fn kill(&self) -> bool {
        self.child.signal(Signal::KILL).is_ok()
    }
}

/// Worker `index`'s inbox and boot record.
fn prepare(
    shared_results: &Queue<Reply>,
    config: &Config,
    index: u32,
) -> Result<(Queue<Request>, Boot), StartError> {
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
    Ok((inbox, boot))
}

/// Starts a pool's first `n` workers. By fork, all in one visit to the forker thread
/// ([`ChildProc::fork_all`]); otherwise one by one, as [`start_one`].
pub(crate) fn start_all(
    shared_results: &Queue<Reply>,
    config: &Config,
    n: usize,
) -> Result<Vec<Worker<Live>>, StartError> {
    if config.method != StartMethod::Fork {
        return (0..n as u32)
            .map(|i| start_one(shared_results, config, i, false))
            .collect();
    }
    let prepared = (0..n as u32)
        .map(|i| prepare(shared_results, config, i))
        .collect::<Result<Vec<_>, _>>()?;
    let fs = prepared
        .iter()
        .map(|(_, boot)| {
            let boot = boot.clone();
            Box::new(move || worker_main(&boot)) as Box<dyn FnOnce() -> i32 + Send>
        })
        .collect();
    let children = ChildProc::fork_all(true, fs);
    // A failed fork fails the start; the children already started are dropped (killed and
    // reaped) with the workers made so far.
    prepared
        .into_iter()
        .zip(children)
        .map(|((inbox, _), child)| {
            Ok(Worker::new(Live {
                child: child?.group_of_tasks(),
                inbox,
            }))
        })
        .collect()
}

/// Starts worker `index`: its inbox, then the process, which maps the inbox and the shared
/// results queue from the fds it inherits.
pub(crate) fn start_one(
    shared_results: &Queue<Reply>,
    config: &Config,
    index: u32,
    replacement: bool,
) -> Result<Worker<Live>, StartError> {
    let (inbox, boot) = prepare(shared_results, config, index)?;
    // A replacement is started by the pool's handler thread, while the parent has other
    // threads (the caller's at least): forking it from here could leave it a lock another
    // thread holds. It comes from the fork server instead, which has one thread.
    let method = match config.method {
        StartMethod::Fork if replacement => StartMethod::ForkServer,
        m => m,
    };
    let queues = [inbox.segment(), shared_results.segment()];
    let child = start_worker(method, &boot, [queues[0].as_fd(), queues[1].as_fd()])?;
    Ok(Worker::new(Live { child, inbox }))
}
