//! Child processes at the system-call level: starting them by `fork` or by re-executing this
//! binary, waiting on a pidfd, reaping exactly our own child (`wait4(pid)`, never
//! `waitpid(-1)`, which would steal other code's children), and signalling through the pidfd
//! so a signal can never reach a recycled pid.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use mproc_segment::Errno;
use rustix::process::{Pid, Signal};

use crate::sys::{Forked, exit_now, fork, reap_nohang};

use crate::forker::{arm_parent_death, on_forker};
use crate::{OsError, StartError};

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signaled(i32),
    /// It ended, but its status was gone when mproc asked for it: the program ignores
    /// `SIGCHLD` (the kernel then reaps children at once), or other code reaped it
    /// (`waitpid(-1)`). Seen through the child's pidfd, so the end is never missed.
    Unknown,
}

impl ExitStatus {
    /// Python's `Process.exitcode`: the code, or `-N` for signal `N`; 0 for
    /// [`Unknown`](ExitStatus::Unknown), as Python's `subprocess` reports a child whose
    /// status was lost.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signaled(s) => -s,
            ExitStatus::Unknown => 0,
        }
    }

    pub(crate) fn parts(self) -> (Option<i32>, Option<i32>) {
        match self {
            ExitStatus::Code(c) => (None, Some(c)),
            ExitStatus::Signaled(s) => (Some(s), None),
            ExitStatus::Unknown => (None, None),
        }
    }
}

/// A child process of ours: its pid, a pidfd for waiting and signalling, and its exit status
/// once reaped. Dropping an unreaped `ChildProc` kills and reaps it.
#[derive(Debug)]
pub(crate) struct ChildProc {
    pid: i32,
    pidfd: OwnedFd,
    /// Behind a lock so that reaping works through `&self` (one waitpid at a time).
    status: std::sync::Mutex<Option<ExitStatus>>,
    /// A child of the fork server, not of this process: it exits on its own (we see that on
    /// the pidfd) and the server reaps it and tells us its status.
    remote: bool,
    /// The child leads a process group of its own (pool workers: `worker_main`), which holds
    /// the processes its tasks started: a kill ends the whole group, and so does its end
    /// (see [`ChildProc::group_of_tasks`]).
    group: bool,
}

pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, StartError> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| StartError::os("pidfd_open", Errno::SRCH))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| StartError::os("pidfd_open", e))
}

/// How long `wait_until` polls for the child's exit before sleeping on its pidfd.
const EXIT_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// Exit status of a one-shot worker (a `Process`) whose function panicked (Python's 1), and
/// of a forked child whose closure panicked.
pub(crate) const EXIT_PANIC: i32 = 1;

impl ChildProc {
    /// Marks the child as the leader of the process group its tasks' processes live in (it
    /// calls `setpgid(0, 0)` first thing): a task's descendants then end with its worker —
    /// when it is killed (a time limit, a cancel, the pool's drop) and when it exits (retired
    /// after `max_tasks`, or dead). The group is signalled while the leader is not yet reaped
    /// (its pid, and so the group's id, cannot have been reused), or while members remain
    /// (they hold the id).
    pub(crate) fn group_of_tasks(mut self) -> ChildProc {
        self.group = true;
        self
    }

    /// SIGKILLs what remains of the child's process group (not the child: see `signal`).
    fn kill_group(&self) {
        if self.group {
            // ESRCH: no group (the child has not called setpgid yet, so it has started no
            // task) or nobody left in it.
            if let Some(group) = Pid::from_raw(self.pid) {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
            }
        }
    }

    /// Forks a child that runs `f` and exits with its return value; with `die_with_parent`,
    /// the child ends when this process does (see [`arm_parent_death`]).
    ///
    /// The child runs only `f`: it must not rely on locks other threads of the parent may hold
    /// (see [`thread_count`]).
    pub(crate) fn fork(
        die_with_parent: bool,
        f: impl FnOnce() -> i32 + Send,
    ) -> Result<ChildProc, StartError> {
        let parent = std::process::id();
        let pid = on_forker(move || {
            // SAFETY: in the child we only run `f` and `_exit`; we never return into the
            // forker's loop, and the parent's other threads do not exist in the child.
            match unsafe { fork() }? {
                Forked::Child => {
                    if die_with_parent {
                        arm_parent_death(parent);
                    }
                    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                        .unwrap_or(EXIT_PANIC);
                    exit_now(code)
                }
                Forked::Parent(child) => Ok(child),
            }
        })?;
        Self::adopt(pid)
    }

    /// Forks one child per function, all in one visit to the forker thread (a pool's
    /// workers: one hand-over between threads instead of one per worker), each as
    /// [`fork`](Self::fork) forks one. Stops at the first failed fork: the result then holds
    /// the children started so far, and the error last.
    pub(crate) fn fork_all(
        die_with_parent: bool,
        fs: Vec<Box<dyn FnOnce() -> i32 + Send + '_>>,
    ) -> Vec<Result<ChildProc, StartError>> {
        let parent = std::process::id();
        let mut pids: Vec<Result<i32, Errno>> = Vec::with_capacity(fs.len());
        let out = &mut pids;
        let visit = on_forker(move || {
            for f in fs {
                // SAFETY: as in `fork`: the child runs only `f` and `_exit`, never returning
                // into the forker's loop. `out` has room for every pid (no allocation here).
                match unsafe { fork() } {
                    Ok(Forked::Child) => {
                        if die_with_parent {
                            arm_parent_death(parent);
                        }
                        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                            .unwrap_or(EXIT_PANIC);
                        exit_now(code)
                    }
                    Ok(Forked::Parent(child)) => out.push(Ok(child)),
                    Err(e) => {
                        out.push(Err(e));
                        break;
                    }
                }
            }
            Ok(0)
        });
        if let Err(e) = visit {
            return vec![Err(e)];
        }
        pids.into_iter()
            .map(|r| {
                r.map_err(|e| StartError::os("fork", e))
                    .and_then(Self::adopt)
            })
            .collect()
    }

    /// Re-executes this binary (`/proc/self/exe`, so a binary replaced on disk since we
    /// started is not picked up) with `env` set, keeping `keep_fds` open across `exec`.
    pub(crate) fn spawn(
        env: (&str, &str),
        keep_fds: &[RawFd],
        die_with_parent: bool,
    ) -> Result<ChildProc, StartError> {
        let mut cmd = Command::new("/proc/self/exe");
        if let Some(arg0) = std::env::args_os().next() {
            cmd.arg0(arg0);
        }
        cmd.env(env.0, env.1);
        let keep = keep_fds.to_vec();
        let parent = std::process::id();
        // The closure runs in the forked child before exec; the parent-death signal it arms
        // survives `exec`.
        // SAFETY: it only calls fcntl, prctl and getppid (async-signal-safe) and allocates
        // nothing (`keep` was built before); `borrow_raw` is sound: the parent holds the fds
        // in `keep` open (the queues it passes), so the child inherited them open.
        unsafe {
            cmd.pre_exec(move || {
                if die_with_parent {
                    arm_parent_death(parent);
                }
                for &fd in &keep {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                }
                Ok(())
            });
        }
        // On the forker thread, so that the parent-death signal follows the process.
        let pid = on_forker(move || {
            cmd.spawn()
                .map(|child| {
                    // `std::process::Child` neither waits nor kills on drop; the pid stays ours.
                    child.id() as i32
                })
                .map_err(|e| mproc_segment::errno_of(&e))
        })?;
        Self::adopt(pid)
    }

    fn adopt(pid: i32) -> Result<ChildProc, StartError> {
        match pidfd_open(pid) {
            Ok(pidfd) => Ok(ChildProc {
                pid,
                pidfd,
                status: std::sync::Mutex::new(None),
                remote: false,
                group: false,
            }),
            // Gone already, zombie and all: only possible if it ended at once and was reaped
            // by someone else — this program ignores SIGCHLD (the kernel reaps), or another
            // thread ran waitpid(-1). It ended; how is lost. A pipe whose write end is closed
            // stands in for the pidfd: always readable ("exited"), never signalled (a child
            // with a status is not).
            Err(StartError::Os(OsError {
                errno: Errno::SRCH, ..
            })) => {
                let (stand_in, write_end) =
                    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                        .map_err(|e| StartError::os("pipe2", e))?;
                drop(write_end);
                Ok(ChildProc {
                    pid,
                    pidfd: stand_in,
                    status: std::sync::Mutex::new(Some(ExitStatus::Unknown)),
                    remote: false,
                    group: false,
                })
            }
            Err(e) => {
                // Do not leave the child running unwatched. `pid` is our unreaped child, so it
                // cannot have been recycled.
                if let Some(p) = Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, Signal::KILL);
                    let _ =
                        rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
                }
                Err(e)
            }
        }
    }

    /// A child of the fork server, known by the pidfd the server opened for it.
    pub(crate) fn remote(pid: i32, pidfd: OwnedFd) -> ChildProc {
        ChildProc {
            group: false,
            pid,
            pidfd,
            status: std::sync::Mutex::new(None),
            remote: true,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    pub(crate) fn pidfd(&self) -> &OwnedFd {
        &self.pidfd
    }

    /// The exit status, if the child has been reaped.
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the pidfd says the process has exited (reaped or not); never blocks.
    fn exited(&self) -> bool {
        crate::sys::readable(self.pidfd.as_fd(), Some(std::time::Duration::ZERO)).unwrap_or(false)
    }

    /// Reaps the child if it has exited; never blocks.
    pub(crate) fn try_wait(&self) -> Result<Option<ExitStatus>, OsError> {
        let mut status_slot = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status_slot.is_some() {
            return Ok(*status_slot);
        }
        if self.remote {
            if !self.exited() {
                return Ok(None);
            }
            let s = crate::forkserver::exit_status(self.pid as u32);
            *status_slot = Some(s);
            return Ok(Some(s));
        }
        // Its group first, while the child is a zombie that keeps the group's id ours.
        if self.group && self.exited() {
            self.kill_group();
        }
        // Reaps exactly this child (our own, unreaped, so its pid is not recycled).
        match reap_nohang(self.pid) {
            Ok(reaped) => {
                let s = reaped.map(|(_, s)| s);
                if s.is_some() {
                    // It ended between the look above and the reap: its group now, whose
                    // remaining members still hold the group's id.
                    self.kill_group();
                }
                *status_slot = s;
                Ok(s)
            }
            Err(Errno::INTR) => Ok(None),
            // Reaped by someone else (SIGCHLD ignored, or a waitpid(-1) elsewhere): if the
            // pidfd says it has exited, it ended with a status nobody can tell us any more.
            Err(Errno::CHILD) if self.exited() => {
                *status_slot = Some(ExitStatus::Unknown);
                Ok(Some(ExitStatus::Unknown))
            }
            Err(e) => Err(OsError::new("waitpid", e)),
        }
    }

    /// Waits until the child exits (reaping it) or `deadline` passes (`None`: no deadline).
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Option<ExitStatus>, OsError> {
        // A child that is about to exit (the usual case when joining a short task) is reaped
        // sooner by asking again for a moment than by sleeping until the kernel wakes us.
        let spin_until = Instant::now() + EXIT_SPIN;
        while Instant::now() < spin_until && deadline.is_none_or(|d| Instant::now() < d) {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            std::hint::spin_loop();
        }
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left)
                }
            };
            crate::sys::readable(self.pidfd.as_fd(), timeout)
                .map_err(|e| OsError::new("poll", e))?;
        }
    }

    /// Sends `sig` through the pidfd (a no-op once the child is reaped).
    pub(crate) fn signal(&self, sig: Signal) -> Result<(), OsError> {
        if self.status().is_some() {
            return Ok(());
        }
        if sig == Signal::KILL {
            self.kill_group();
        }
        match rustix::process::pidfd_send_signal(&self.pidfd, sig) {
            // ESRCH: it already exited (but is not reaped yet) — nothing to signal.
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(OsError::new("pidfd_send_signal", e)),
        }
    }

    /// SIGKILLs the child (if it still runs) and reaps it.
    pub(crate) fn kill_and_reap(&self) -> Option<ExitStatus> {
        if self.status().is_none() {
            let _ = self.signal(Signal::KILL);
            let _ = self.wait_until(None);
        }
        self.status()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}
