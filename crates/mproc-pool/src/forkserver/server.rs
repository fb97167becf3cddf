//! The fork server's side: the loop that runs in the server process (one thread), forking a
//! worker per request and reporting its children's exits. The client side (starting the
//! server, asking it for workers, reading exit statuses) is in `mod.rs`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use mproc_segment::Errno;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, Signal};

use super::{ServerMsg, recv_raw, send};
use crate::protocol::Boot;
use crate::sys::{ChildSignals, Forked, reap_nohang};

/// The server's loop: fork a worker per request, report exits, end at EOF.
pub(super) fn serve(sock: OwnedFd) -> i32 {
    crate::sys::close_other_fds(sock.as_raw_fd());
    crate::forker::make_undumpable();
    // The server reaps its children to report their statuses (it has one thread, so the
    // signal mask is the process's).
    let Ok(sigfd) = ChildSignals::open() else {
        return 2;
    };
    let me = std::process::id();
    loop {
        let mut fds = [
            PollFd::new(&sock, PollFlags::IN),
            PollFd::new(&sigfd, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(_) => return 3,
        }
        let sock_ev = fds[0].revents();
        let sig_ev = fds[1].revents();
        if sig_ev.contains(PollFlags::IN) {
            sigfd.drain();
            if !report_exits(sock.as_fd()) {
                return 0;
            }
        }
        if sock_ev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            let Ok((msg, received)) = recv_raw(sock.as_fd()) else {
                return 0;
            };
            let Some(bytes) = msg else {
                return 0; // the parent is gone
            };
            if !fork_worker(&sock, &sigfd, &bytes, received, me) {
                return 0;
            }
        }
    }
}

/// Reaps every exited child and tells the parent; false if the parent is gone.
fn report_exits(sock: BorrowedFd<'_>) -> bool {
    loop {
        // The server's children are its workers; WNOHANG never blocks. Each ended worker's
        // process group (what its tasks started) is killed before the worker is reaped,
        // while its zombie keeps the group's id from being reused.
        let ended = crate::sys::ended_child().and_then(Pid::from_raw);
        if let Some(ended) = ended {
            let _ = rustix::process::kill_process_group(ended, Signal::KILL);
        }
        let Ok(Some((pid, exit))) = reap_nohang(ended.map_or(-1, |p| p.as_raw_nonzero().get()))
        else {
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
    sigfd: &ChildSignals,
    bytes: &[u8],
    received: Vec<OwnedFd>,
    me: u32,
) -> bool {
    let reply = |msg: ServerMsg, fds: &[BorrowedFd<'_>]| {
        postcard::to_allocvec(&msg)
            .map_err(|_| Errno::INVAL)
            .and_then(|b| send(sock.as_fd(), &b, fds))
            .is_ok()
    };
    let boot: Result<Boot, _> = postcard::from_bytes(bytes);
    let (Ok(mut boot), [inbox, results]) = (boot, &received[..]) else {
        return reply(
            ServerMsg::Failed {
                errno: Errno::INVAL.raw_os_error(),
            },
            &[],
        );
    };
    boot.inbox_fd = inbox.as_raw_fd();
    boot.results_fd = results.as_raw_fd();
    // SAFETY: the server has one thread; the child runs the worker and `_exit`s.
    match unsafe { crate::sys::fork() } {
        Ok(Forked::Child) => {
            sigfd.unblock();
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // The worker never uses these handles (or drops them: it `_exit`s); closing
                // them keeps it from holding the server's socket open.
                crate::sys::close_inherited(sock.as_raw_fd());
                crate::sys::close_inherited(sigfd.as_fd().as_raw_fd());
                // It ends when the server does (the server has one thread: its death is the
                // death of the thread that forked us).
                crate::forker::arm_parent_death(me);
                crate::worker::worker_main(&boot)
            }))
            .unwrap_or(crate::protocol::EXIT_PANIC);
            crate::sys::exit_now(code)
        }
        Ok(Forked::Parent(child)) => {
            drop(received);
            match crate::child::pidfd_open(child) {
                Ok(pidfd) => reply(ServerMsg::Started { pid: child as u32 }, &[pidfd.as_fd()]),
                Err(_) => reply(
                    ServerMsg::Failed {
                        errno: Errno::IO.raw_os_error(),
                    },
                    &[],
                ),
            }
        }
        Err(e) => reply(
            ServerMsg::Failed {
                errno: e.raw_os_error(),
            },
            &[],
        ),
    }
}
