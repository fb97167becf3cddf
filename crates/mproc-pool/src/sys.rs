//! The system calls the pool makes that rustix does not type, each wrapped once here with the
//! reason; everything else goes through rustix directly. Nothing outside this file calls
//! `libc`.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use mproc_segment::Errno;
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::child::ExitStatus;

/// Which side of a [`fork`] this is.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The calling process; the child's pid.
    Parent(i32),
}

/// `fork(2)`, through libc: rustix offers only `kernel_fork`, which skips libc's fork handlers
/// (malloc's arenas and stdio's locks would stay as the parent's other threads left them) and
/// the `pthread_atfork` handlers mproc's own bookkeeping relies on.
///
/// # Safety
/// In the child, only the forking thread exists: it must not rely on anything another thread
/// of the parent may have been holding (locks, a half-done `Once`), and must end with
/// [`exit_now`] rather than return into code that assumes the parent's threads.
pub(crate) unsafe fn fork() -> Result<Forked, Errno> {
    // SAFETY: the caller's contract covers what runs in the child; `fork` itself takes no
    // arguments.
    match unsafe { libc::fork() } {
        0 => Ok(Forked::Child),
        pid if pid > 0 => Ok(Forked::Parent(pid)),
        _ => Err(last_errno()),
    }
}

/// Ends this process at once, without `atexit` handlers, destructors or a stdout flush (which
/// takes stdout's lock, perhaps held by a parent thread at the fork: the child would hang).
/// Rust's stdout writes each complete line as it is printed; only an unfinished last line is
/// lost. (`_exit` through libc: rustix's `exit_group` is not on its public surface.)
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it ends the process immediately.
    unsafe { libc::_exit(code) }
}

/// Reaps child `pid` (`-1`: any child) if it has ended, without blocking: its pid and how it
/// ended. The one place mproc reads a wait status.
///
/// Raw `waitpid` on purpose: rustix's `waitpid` keeps the raw status too, but swapping it in
/// broke the pool's fault-injection test (killed workers were reported with pids nobody had
/// killed); until that is understood, the call known to be right stays.
pub(crate) fn reap_nohang(pid: i32) -> Result<Option<(i32, ExitStatus)>, Errno> {
    let mut status = 0;
    // SAFETY: waitpid writes the status through a valid pointer; callers pass their own child
    // (or -1 in the fork server, whose children are all its workers).
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r > 0 => Ok(exit_status(status).map(|s| (r, s))),
        _ => Err(last_errno()),
    }
}

/// The pid of a child that has ended, left unreaped (`waitid(P_ALL, WEXITED | WNOHANG |
/// WNOWAIT)`), so that its zombie keeps its process group's id while the group is killed.
/// Any way it ended counts, a realtime signal included. Through libc: rustix's `waitid`
/// does not report the pid.
pub(crate) fn ended_child() -> Option<i32> {
    // SAFETY: `siginfo_t` is plain data, all zeros valid (and what "nothing ended" leaves);
    // waitid writes into it, and it lives across the call; for a WEXITED report the kernel
    // fills `si_pid`, which `si_pid()` reads.
    let pid = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) != 0
        {
            return None;
        }
        info.si_pid()
    };
    (pid > 0).then_some(pid)
}

/// The status word `waitpid` filled in, if it says the child ended (not a stop or a resume).
/// Any signal number, realtime ones included.
fn exit_status(status: i32) -> Option<ExitStatus> {
    if libc::WIFSIGNALED(status) {
        Some(ExitStatus::Signaled(libc::WTERMSIG(status)))
    } else if libc::WIFEXITED(status) {
        Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
    } else {
        None
    }
}

/// The calling thread's last error number.
pub(crate) fn last_errno() -> Errno {
    mproc_segment::errno_of(&std::io::Error::last_os_error())
}

/// Closes fd number `fd`, which this process inherited and holds no Rust handle to (the
/// other end of a socket pair, after a fork). rustix's `close` is `unsafe` for the same
/// reason; this is the one place mproc closes by number.
pub(crate) fn close_inherited(fd: RawFd) {
    // SAFETY: the callers pass an fd whose Rust owner lives in the *parent's* memory image;
    // in this (forked) process nothing will use or close it again.
    unsafe { libc::close(fd) };
}

/// Closes every fd of this process but stdin, stdout, stderr and `keep` (the fork server:
/// it and every worker forked from it must not hold the parent's files — a pipe's write end
/// kept open here would keep its reader from ever seeing EOF). Raw `close_range`: rustix
/// does not wrap it; the fallback closes numbers, not handles.
pub(crate) fn close_other_fds(keep: RawFd) {
    let close_range = |first: u32, last: u32| {
        // SAFETY: close_range takes two fd numbers and flags; it only closes fds, none of
        // which has a Rust owner in this freshly forked server.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) == 0 }
    };
    let keep = keep as u32;
    let ok = (keep <= 3 || close_range(3, keep - 1)) && close_range(keep + 1, u32::MAX);
    if !ok {
        // Kernels before 5.9: one by one, up to a generous bound.
        for fd in 3..4096 {
            if fd != keep as i32 {
                close_inherited(fd);
            }
        }
    }
}

/// A close-on-exec copy of fd number `fd`, which another process (the parent) says it left
/// open for us. Raw `fcntl`: the typed calls take a borrowed fd, which must be open, and this
/// number came from elsewhere: it may not be, and that is the error to report (`EBADF`).
pub(crate) fn dup_inherited(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new fd (or fails with EBADF); `fd` is only read. A
    // new fd is fresh: nothing else owns it.
    unsafe {
        let new = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
        if new < 0 {
            return Err(last_errno());
        }
        Ok(OwnedFd::from_raw_fd(new))
    }
}

/// Waits until `fd` is readable or `timeout` passes (`None`: no limit): whether it is.
/// An interrupted wait counts as "not yet".
pub(crate) fn readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool, Errno> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match rustix::event::poll(&mut fds, timespec(timeout).as_ref()) {
        Ok(n) => Ok(n > 0),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A poll timeout.
pub(crate) fn timespec(timeout: Option<Duration>) -> Option<Timespec> {
    timeout.map(|d| Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    })
}

/// SIGCHLD, delivered through a descriptor: its disposition reset to the default (a parent
/// that ignores SIGCHLD would have the kernel reap the children first, losing every status),
/// blocked, and read from a signalfd. The fork server's one source of "a worker ended".
/// Through libc: rustix has no `sigprocmask`, `sigaction` or `signalfd` on its public surface.
pub(crate) struct ChildSignals {
    fd: OwnedFd,
    mask: libc::sigset_t,
}

impl ChildSignals {
    /// Sets SIGCHLD up as above. Call it in a process with one thread (the mask is the
    /// thread's).
    pub(crate) fn open() -> Result<ChildSignals, Errno> {
        // SAFETY: `sigset_t` is plain data, all zeros valid, and sigemptyset initialises it
        // before any other use; each call gets valid pointers to it (or null for the old
        // set); SIG_DFL installs no handler; a new signalfd is fresh: nothing else owns it.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, libc::SIGCHLD);
            if libc::signal(libc::SIGCHLD, libc::SIG_DFL) == libc::SIG_ERR
                || libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) != 0
            {
                return Err(last_errno());
            }
            let fd = libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(last_errno());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            Ok(ChildSignals { fd, mask })
        }
    }

    /// Reads every pending notification (they only say "some child changed state").
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 128 * 4]; // four `signalfd_siginfo`s a read
        while matches!(rustix::io::read(&self.fd, &mut buf), Ok(n) if n > 0) {}
    }

    /// Unblocks SIGCHLD again (a forked worker, which must not inherit the mask).
    pub(crate) fn unblock(&self) {
        // SAFETY: a valid set; the old set is not asked for.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &self.mask, std::ptr::null_mut()) };
    }
}

impl AsFd for ChildSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
