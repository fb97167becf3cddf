//! This process's *forker* thread, and what every child arms right after `fork`.
//!
//! The kernel sends the parent-death signal when the *thread* that forked dies, not the
//! process; so every fork of this process happens on one long-lived thread, which lives as long
//! as the process, and a child's parent-death signal then means "the parent process is gone".
//! Also here: how many threads this process has (the threaded-fork policy asks), and making a
//! process non-dumpable.

use mproc_segment::Errno;

use crate::StartError;
use mproc_segment::ProcessCell;

/// The exit code of a child whose parent died before it could arm its parent-death signal.
pub(crate) const EXIT_ORPHANED: i32 = 79;

/// In a freshly forked child: die (SIGKILL) when the parent dies, with the race closed — if
/// the parent died before the signal was armed, our parent pid has changed and we leave now.
///
/// The kernel sends the parent-death signal when the *thread* that forked dies, not the
/// process. That is why every fork of this process happens on one long-lived thread (the
/// forker, see [`on_forker`]), which lives as long as the process: the signal then means
/// "the parent process is gone". A fork server, single-threaded, forks on its only thread.
/// Must stay async-signal-safe (it also runs between `fork` and `exec`).
pub(crate) fn arm_parent_death(parent: u32) {
    // rustix's prctl and getppid are direct system calls: async-signal-safe.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    if ppid != parent {
        crate::sys::exit_now(EXIT_ORPHANED);
    }
}

/// A job for the forker thread: it forks (and in the child never returns), then hands back
/// the child's pid.
type ForkJob = Box<dyn FnOnce() -> Result<i32, Errno> + Send>;

/// A job and where to send its result.
type ForkRequest = (ForkJob, std::sync::mpsc::SyncSender<Result<i32, Errno>>);

/// This process's forker thread (a forked child starts its own: the parent's thread does not
/// exist there, see [`ProcessCell`]).
struct Forker {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<ForkRequest>>,
}

static FORKER: ProcessCell<Forker> = ProcessCell::new();

/// Whether this process has a forker thread (not counted by [`thread_count`]: it holds no
/// lock while another thread could fork).
static FORKER_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn forker() -> Result<&'static Forker, StartError> {
    FORKER.get_or_try_make(|| {
        let (tx, rx) = std::sync::mpsc::channel::<ForkRequest>();
        // Every child of this process starts as a copy of this thread, and Rust keeps its
        // name: a panic in a child or a pool worker reads "thread 'mproc child' panicked".
        // (Setting a panic hook in the child instead would take the hook's lock, which a
        // thread of the parent may have held at the fork: a child must not.)
        std::thread::Builder::new()
            .name("mproc child".into())
            .spawn(move || {
                while let Ok((job, reply)) = rx.recv() {
                    let _ = reply.send(job());
                }
            })
            .map_err(|e| StartError::os("spawn forker thread", mproc_segment::errno_of(&e)))?;
        FORKER_RUNNING.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Box::leak(Box::new(Forker {
            tx: std::sync::Mutex::new(tx),
        })))
    })
}

/// Runs `fork_here` on this process's forker thread and returns what it returns: the fork
/// (and so the child's parent thread, as far as the parent-death signal goes) is the
/// forker's, which lives as long as the process.
pub(crate) fn on_forker(
    fork_here: impl FnOnce() -> Result<i32, Errno> + Send,
) -> Result<i32, StartError> {
    let f = forker()?;
    let job: Box<dyn FnOnce() -> Result<i32, Errno> + Send + '_> = Box::new(fork_here);
    // SAFETY: only the lifetime is extended. We block below until the forker has run the job
    // to completion (in the parent it returns the pid; in the child it never returns), so
    // everything it borrows outlives its use; the child uses its own copy of that memory.
    let job: ForkJob = unsafe { std::mem::transmute(job) };
    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
    f.tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((job, reply_tx))
        .map_err(|_| StartError::os("forker thread", Errno::PIPE))?;
    match reply_rx.recv() {
        Ok(r) => r.map_err(|e| StartError::os("fork", e)),
        Err(_) => Err(StartError::os("forker thread", Errno::PIPE)),
    }
}

/// Makes this process non-dumpable: `/proc/PID/fd`, `/proc/PID/mem` and `ptrace` become
/// inaccessible to other processes of the same user (only root, or a process with
/// `CAP_SYS_PTRACE`, can still reach them), so the pool's memfds cannot be opened from outside
/// to rewrite queued tasks. It also means no core dump.
pub(crate) fn make_undumpable() {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

/// The number of the user's threads in this process (from `/proc/self/stat`), or 1 if
/// unknown: mproc's own threads — the forker, a pool's handler, the async reactors (each
/// marked with `mproc_segment::OwnThread`) — are not counted, so a `Process::spawn` after
/// `Pool::new` (the Quick start) forks without a warning.
pub(crate) fn thread_count() -> usize {
    let forker = usize::from(FORKER_RUNNING.load(std::sync::atomic::Ordering::Relaxed));
    os_thread_count()
        .saturating_sub(forker)
        .saturating_sub(mproc_segment::OwnThread::count())
        .max(1)
}

fn os_thread_count() -> usize {
    mproc_segment::ProcStat::of("self").map_or(1, |s| s.num_threads as usize)
}
