//! The worker side: what a child process runs. What it is told and what it answers is the
//! protocol in `protocol.rs`.
//!
//! A worker owns one *inbox* (`Queue<Request>`, written only by its parent) and shares one
//! *results* queue (`Queue<Reply>`) with the other workers of its pool. It answers requests
//! strictly in order, one at a time; this is what lets the parent know, when a worker dies,
//! exactly which request was in its hands (see `pool/settle.rs`).

use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use mproc_queue::{GetError, PutError, Queue};
use mproc_segment::current_pid;

use crate::call::layout_check;
use crate::codec::{decode_outcomes, failed_outcomes};
use crate::protocol::{
    Boot, DEFAULT_ARENA_BYTES, ENV, EXIT_BOOT, EXIT_INIT_FAILED, EXIT_MEMORY, EXIT_PANIC, Reply,
    Request, inbox_options, results_options,
};
use crate::{StartError, TaskError};

/// Set once `init()` has run in this process.
static INIT_CALLED: AtomicBool = AtomicBool::new(false);

/// Turns a process started by the `Spawn` start method into a worker; does nothing in any
/// other process. Call it first thing in `main` of every binary that uses
/// [`StartMethod::Spawn`](crate::StartMethod::Spawn):
///
/// ```no_run
/// fn main() {
///     mproc_pool::init();
///     // ... the program; only the original process gets here
/// }
/// # main();
/// ```
///
/// In a spawned worker, `init` runs the worker and then ends the process with the worker's
/// exit status: it does not return there. The worker is told what to do through the
/// `MPROC_WORKER` environment variable and file descriptors kept open across `exec`; nothing of
/// `main` after `init` runs in it. Without `init`, a spawned child would run your whole
/// program again: mproc refuses to use `Spawn` in a process where `init` has not run, and a
/// spawned child that never reaches it is reported as
/// [`StartError::InitNotCalled`](crate::StartError::InitNotCalled).
pub fn init() {
    INIT_CALLED.store(true, Ordering::SeqCst);
    let Some(value) = std::env::var_os(ENV) else {
        return;
    };
    let threads = crate::forker::thread_count();
    if threads > 1 {
        eprintln!(
            "mproc: init() ran after {} other threads were started in this spawned worker; \
             call it first thing in main",
            threads - 1
        );
    }
    let code = match value
        .to_str()
        .ok_or(format!("{ENV} is not UTF-8"))
        .and_then(Boot::from_env)
    {
        // A spawned worker armed its parent-death signal before `exec` (it survives it).
        Ok(boot) => worker_main(&boot),
        Err(message) => {
            eprintln!("mproc: init(): {message}");
            EXIT_BOOT
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Ending the process is init's documented job in a spawned worker.
    std::process::exit(code)
}

/// Whether this process may start children: not a spawned child that skipped `init`
/// (it would start its own children, and so on).
pub(crate) fn check_may_start(spawn: bool) -> Result<(), StartError> {
    let init = INIT_CALLED.load(Ordering::SeqCst);
    if !init && std::env::var_os(ENV).is_some() {
        return Err(StartError::InitNotCalled(
            "this process was started by mproc's Spawn start method but did not call \
             mproc::init() at the top of main; refusing to start more processes",
        ));
    }
    if spawn && !init {
        return Err(StartError::InitNotCalled(
            "StartMethod::Spawn re-executes this binary: call mproc::init() first thing in main",
        ));
    }
    Ok(())
}

/// A close-on-exec copy of fd number `fd` from the parent, or why it is not there.
fn dup(fd: RawFd) -> Result<OwnedFd, String> {
    crate::sys::dup_inherited(fd).map_err(|e| format!("fd {fd} from the parent is not open: {e}"))
}

/// How long an idle worker keeps polling its inbox before it sleeps in the kernel. A worker
/// that is asleep takes a futex wake and a reschedule to start the next job (tens of µs in a
/// VM, where the idle CPU itself may be halted); polling for a short while after each job makes
/// back-to-back jobs start at once. It polls politely (yielding the CPU between polls, so a
/// busy sibling or the parent runs first) and for at most this long per idle period.
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// The next request: polled for [`IDLE_SPIN`], then waited for in the kernel.
fn next_request(inbox: &Queue<Request>) -> Result<Request, GetError> {
    let until = std::time::Instant::now() + IDLE_SPIN;
    loop {
        match inbox.try_get() {
            Err(GetError::Empty) if std::time::Instant::now() < until => {
                std::thread::yield_now();
            }
            Err(GetError::Empty) => return inbox.get(),
            other => return other,
        }
    }
}

/// Sends a request's outcomes; false if the results queue is closed (the parent is gone or
/// terminating). A reply that cannot be stored (shared memory exhausted) is replaced by one
/// saying so for every item, so the job fails rather than hangs.
fn send_done(results: &Queue<Reply>, worker: u32, pid: u32, req: &Request, body: Vec<u8>) -> bool {
    let reply = Reply::Done {
        worker,
        pid,
        job: req.job,
        body,
    };
    match results.put(reply) {
        Ok(()) => true,
        Err(e @ (PutError::Unsendable { .. } | PutError::TooLarge { .. })) => {
            let failed = TaskError::Encode {
                message: format!("result could not be sent: {e}"),
            };
            let body = failed_outcomes(&failed, req.count);
            results
                .put(Reply::Done {
                    worker,
                    pid,
                    job: req.job,
                    body,
                })
                .is_ok()
        }
        Err(_) => false,
    }
}

/// A `Process` started by fork: runs its one request with the queue handle inherited from the
/// parent (nothing to attach) and returns the exit status. The handle is never dropped here:
/// the child ends with `_exit`.
pub(crate) fn run_forked(req: &Request, results: &Queue<Reply>) -> i32 {
    crate::forker::make_undumpable();
    let mut body = Vec::new();
    // SAFETY: `req.func` was made by `FnRef::new` in the parent, of which this process is a
    // fork: the same binary at the same addresses.
    let panics = unsafe { req.func.call(&req.args, req.count, &mut body) };
    send_done(results, 0, current_pid(), req, body);
    if panics > 0 { EXIT_PANIC } else { 0 }
}

/// Runs a worker until its inbox is closed; returns its exit status.
pub(crate) fn worker_main(boot: &Boot) -> i32 {
    crate::forker::make_undumpable();
    // A process group of its own, holding whatever its tasks start: the pool ends the group
    // with the worker (`ChildProc::group_of_tasks`). Failure (EPERM: a session leader) only
    // means the descendants are not contained.
    let _ = rustix::process::setpgid(None, None);
    let attach = || -> Result<(Queue<Request>, Queue<Reply>), String> {
        let inbox = inbox_options(1, DEFAULT_ARENA_BYTES)
            .from_fd(dup(boot.inbox_fd)?)
            .map_err(|e| format!("inbox: {e}"))?;
        let results = results_options(1, DEFAULT_ARENA_BYTES)
            .from_fd(dup(boot.results_fd)?)
            .map_err(|e| format!("results queue: {e}"))?;
        Ok((inbox, results))
    };
    let (inbox, results) = match attach() {
        Ok(q) => q,
        Err(message) => {
            eprintln!("mproc worker: {message}");
            return EXIT_BOOT;
        }
    };
    if boot.check != layout_check() {
        eprintln!("mproc worker: this binary differs from the parent's (rebuilt since?)");
        return EXIT_BOOT;
    }
    let (worker, pid) = (boot.index, current_pid());
    if results.put(Reply::Started { worker, pid }).is_err() {
        return EXIT_BOOT;
    }
    if let Some((f, arg)) = &boot.initializer {
        let mut out = Vec::new();
        // SAFETY: `f` was made by `FnRef::new` in our parent, which runs this same binary
        // (checked above), and reached us through our own anonymous queue's fd.
        unsafe { f.call(arg, 1, &mut out) };
        if let Some(Err(e)) = decode_outcomes::<()>(&out, 1).next() {
            let message = match e {
                TaskError::Panicked { message } => message,
                other => other.to_string(),
            };
            let _ = results.put(Reply::InitFailed {
                worker,
                pid,
                message,
            });
            return EXIT_INIT_FAILED;
        }
    }
    if results.put(Reply::Ready { worker, pid }).is_err() {
        return EXIT_BOOT;
    }
    let mut code = 0;
    loop {
        let req = match next_request(&inbox) {
            Ok(req) => req,
            Err(GetError::Closed) => return code,
            Err(e) => {
                // We cannot tell which job this was: die, so the parent fails it as ours.
                eprintln!("mproc worker {pid}: unreadable request: {e}");
                return EXIT_BOOT;
            }
        };
        let mut body = Vec::new();
        // SAFETY: as for the initializer: made by `FnRef::new` in our parent (same binary),
        // received through our own inbox.
        let panics = unsafe { req.func.call(&req.args, req.count, &mut body) };
        if boot.one_shot && panics > 0 {
            code = EXIT_PANIC;
        }
        if !send_done(&results, worker, pid, &req, body) {
            // The parent closed the results queue: it is gone or terminating.
            return code;
        }
        if boot
            .max_rss
            .is_some_and(|max| mproc_segment::resident_bytes().is_some_and(|rss| rss > max))
        {
            // Retire: the parent takes back what waits in the inbox and starts a fresh worker.
            return EXIT_MEMORY;
        }
    }
}
