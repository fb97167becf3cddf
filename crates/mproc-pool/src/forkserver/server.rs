//! The fork server's side: the loop that runs in the server process (one thread), forking a
//! worker per request and reporting its children's exits. The client side (starting the
//! server, asking it for workers, reading exit statuses) is in `mod.rs`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{ForkResult, fork};

use super::{ServerMsg, recv_raw, send};
use crate::child::reap_nohang;
use crate::protocol::Boot;

/// Closes every fd of this process but stdin, stdout, stderr and `keep`: the server (and so
/// every worker forked from it) must not hold the parent's files — a pipe's write end kept
/// open here would keep its reader from ever seeing EOF.
///
/// Raw system calls on purpose: neither nix nor rustix wraps `close_range`, and the fallback
/// closes fd numbers, not fds this process holds handles to.
fn close_other_fds(keep: RawFd) {
    let close_range = |first: u32, last: u32| {
        // SAFETY: close_range takes two fd numbers and flags; it only closes fds.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) == 0 }
    };
    let keep = keep as u32;
    let ok = (keep <= 3 || close_range(3, keep - 1)) && close_range(keep + 1, u32::MAX);
    if !ok {
        // Kernels before 5.9: one by one, up to a generous bound.
        for fd in 3..4096 {
            if fd != keep as i32 {
                // SAFETY: the server owns no Rust handle to these fds (they are the parent's,
                // inherited); closing an unused number is harmless.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// The server's loop: fork a worker per request, report exits, end at EOF.
pub(super) fn serve(sock: OwnedFd) -> i32 {
    close_other_fds(sock.as_raw_fd());
    crate::forker::make_undumpable();
    // The server reaps its children to report their statuses: a parent that ignores SIGCHLD
    // (inherited here) would have the kernel reap them first and every status would be lost.
    // SAFETY: SIG_DFL installs no handler; the server has one thread.
    if unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) }
        .is_err()
    {
        return 2;
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None).is_err() {
        return 2;
    }
    let Ok(sigfd) = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        return 2;
    };
    let me = std::process::id();
    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return 3,
        }
        let sock_ev = fds[0].revents().unwrap_or(PollFlags::empty());
        let sig_ev = fds[1].revents().unwrap_or(PollFlags::empty());
        if sig_ev.contains(PollFlags::POLLIN) {
            while let Ok(Some(_)) = sigfd.read_signal() {}
            if !report_exits(sock.as_raw_fd()) {
                return 0;
            }
        }
        if sock_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let Ok((msg, received)) = recv_raw(sock.as_raw_fd()) else {
                return 0;
            };
            let Some(bytes) = msg else {
                return 0; // the parent is gone
            };
            if !fork_worker(&sock, &sigfd, &chld, &bytes, received, me) {
                return 0;
            }
        }
    }
}

/// Reaps every exited child and tells the parent; false if the parent is gone.
fn report_exits(sock: RawFd) -> bool {
    loop {
        // The server's children are its workers; WNOHANG never blocks. Each ended worker's
        // process group (what its tasks started) is killed before the worker is reaped,
        // while its zombie keeps the group's id from being reused.
        // (nix's waitid fails for a realtime signal it cannot name: that worker is reaped
        // without its group being killed.)
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        let ended = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        )
        .ok()
        .and_then(|st| st.pid());
        if let Some(ended) = ended {
            let _ = nix::sys::signal::killpg(ended, Signal::SIGKILL);
        }
        let Ok(Some((pid, exit))) = reap_nohang(ended.map_or(-1, |p| p.as_raw())) else {
            return true;
        };
        let (signal, code) = exit.parts();
        let msg = ServerMsg::Exited {
            pid: pid as u32,
            signal,
            code,
        };
        let Ok(bytes) = postcard::to_allocvec(&msg) else {
            continue;
        };
        if send(sock, &bytes, &[]).is_err() {
            return false;
        }
    }
}

/// Forks one worker for the `Boot` in `bytes` with the queue fds `received`; false if the
/// parent is gone.
fn fork_worker(
    sock: &OwnedFd,
    sigfd: &SignalFd,
    chld: &SigSet,
    bytes: &[u8],
    received: Vec<OwnedFd>,
    me: u32,
) -> bool {
    let reply = |msg: ServerMsg, fds: &[RawFd]| {
        postcard::to_allocvec(&msg)
            .map_err(|_| Errno::EINVAL)
            .and_then(|b| send(sock.as_raw_fd(), &b, fds))
            .is_ok()
    };
    let boot: Result<Boot, _> = postcard::from_bytes(bytes);
    let (Ok(mut boot), [inbox, results]) = (boot, &received[..]) else {
        return reply(
            ServerMsg::Failed {
                errno: libc::EINVAL,
            },
            &[],
        );
    };
    boot.inbox_fd = inbox.as_raw_fd();
    boot.results_fd = results.as_raw_fd();
    // SAFETY: the server has one thread; the child runs the worker and `_exit`s.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(chld), None);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: the worker never uses these handles (or drops them: it `_exit`s);
                // closing them keeps it from holding the server's socket open.
                unsafe {
                    libc::close(sock.as_raw_fd());
                    libc::close(sigfd.as_fd().as_raw_fd());
                }
                // It ends when the server does (the server has one thread: its death is the
                // death of the thread that forked us).
                crate::forker::arm_parent_death(me);
                crate::worker::worker_main(&boot)
            }))
            .unwrap_or(crate::protocol::EXIT_PANIC);
            crate::child::exit_now(code)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(received);
            match crate::child::pidfd_open(child.as_raw()) {
                Ok(pidfd) => reply(
                    ServerMsg::Started {
                        pid: child.as_raw() as u32,
                    },
                    &[pidfd.as_raw_fd()],
                ),
                Err(_) => reply(ServerMsg::Failed { errno: libc::EIO }, &[]),
            }
        }
        Err(e) => reply(ServerMsg::Failed { errno: e as i32 }, &[]),
    }
}
