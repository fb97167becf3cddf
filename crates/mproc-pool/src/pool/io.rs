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

/// Starts worker `index`: its inbox, then the process, which maps the inbox and the shared
/// results queue from the fds it inherits.
pub(crate) fn start_one(
    shared_results: &Queue<Reply>,
    config: &Config,
    index: u32,
    replacement: bool,
) -> Result<Worker<Live>, StartError> {
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
    let queues = [inbox.segment(), shared_results.segment()];
    let child = start_worker(method, &boot, [queues[0].as_fd(), queues[1].as_fd()])?;
    Ok(Worker::new(Live { child, inbox }))
}
