//! The scheduler's seam to the world. The scheduling state (`state.rs`, `scheduler.rs`,
//! `settle.rs`) is a pure state machine: it never touches a queue, a process or a signal
//! itself, only these two traits. The pool runs it over `Live` workers (`io.rs`: a child process and
//! its inbox) and the results queue; the unit tests in `machine_tests/` run it over fakes and
//! drive it through dispatch, stealing, deaths, limits, cancellation and retirement.

use mproc_queue::{GetError, PutError};

use super::state::Config;
use crate::StartError;
use crate::child::ExitStatus;
use crate::protocol::{Reply, Request};

/// What the scheduler does to one worker.
pub(crate) trait WorkerIo {
    /// Its process id.
    fn pid(&self) -> u32;
    /// Puts a request in its inbox without waiting; gives it back if the inbox is full or
    /// closed, or with the reason if it cannot be stored at all.
    fn send(&self, request: Request) -> Result<(), PutError<Request>>;
    /// Takes back a request still waiting in its inbox (atomic: the worker either got it
    /// first or never will).
    fn take_back(&self) -> Option<Request>;
    /// Closes its inbox: it finishes what it holds, then exits.
    fn close_inbox(&self);
    /// How it ended, if it has been reaped.
    fn status(&self) -> Option<ExitStatus>;
    /// Reaps it if it has ended; its status from then on.
    fn reap(&self) -> Option<ExitStatus>;
    /// Kills it (SIGKILL); false if the signal could not be sent.
    fn kill(&self) -> bool;
}

/// What the scheduler needs from the pool around it.
pub(crate) trait PoolIo {
    /// The kind of worker it starts.
    type Worker: WorkerIo;
    /// The next reply waiting in the results queue, without waiting.
    fn next_reply(&self) -> Result<Reply, GetError>;
    /// Starts a replacement worker for slot `index`.
    fn start_replacement(&self, index: u32) -> Result<Self::Worker, StartError>;
    /// The pool's configuration.
    fn config(&self) -> &Config;
}
