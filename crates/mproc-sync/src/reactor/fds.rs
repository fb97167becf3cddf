//! The fd reactor: a second thread per process in `poll(2)` over every registered file
//! descriptor, with an eventfd as its doorbell.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::{Instance, Table, lock, per_process, start_thread, wake_all};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fd {
    fd: RawFd,
    events: i16,
}

struct Fds {
    table: Mutex<Table<Fd>>,
    bell: OwnedFd,
}

/// The fd reactor of this process (as [`words`]).
fn fds() -> Option<&'static Fds> {
    static FDS: AtomicPtr<Instance<Fds>> = AtomicPtr::new(std::ptr::null_mut());
    static MAKING: AtomicU32 = AtomicU32::new(0);
    static FAILED: AtomicU64 = AtomicU64::new(0);
    per_process(&FDS, &MAKING, || {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` was just returned by eventfd and is owned by nobody else.
        let bell = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let f = Fds {
            table: Mutex::new(Table::default()),
            bell,
        };
        // If the thread cannot start, `f` (and the eventfd) is dropped again.
        start_thread(f, "mproc-fd-reactor", fd_reactor, &FAILED)
    })
}

fn fd_reactor(f: &'static Fds) {
    let mut fired: Vec<Fd> = Vec::new();
    loop {
        let now = Instant::now();
        let (woken, list, until) = {
            let mut t = lock(&f.table);
            let (woken, _, _) = t.take(now, |k| fired.contains(k));
            let mut list: Vec<Fd> = Vec::new();
            for e in t.entries.values() {
                if !list.contains(&e.key) {
                    list.push(e.key);
                }
            }
            (woken, list, t.earliest())
        };
        fired.clear();
        wake_all(woken);
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(list.len() + 1);
        pfds.push(libc::pollfd {
            fd: f.bell.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        pfds.extend(list.iter().map(|k| libc::pollfd {
            fd: k.fd,
            events: k.events,
            revents: 0,
        }));
        let ms = until.map_or(-1, |u| {
            let left = u.saturating_duration_since(Instant::now());
            // Round up: waking a little late is fine, early means a wasted turn.
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `pfds` is a live array of pollfd of the length passed; poll only writes
        // `revents`. A registered fd that was closed meanwhile comes back as POLLNVAL.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            continue;
        }
        if pfds[0].revents != 0 {
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live local buffer (drains the eventfd).
            let _ = unsafe { libc::read(pfds[0].fd, buf.as_mut_ptr().cast(), 8) };
        }
        for (p, k) in pfds[1..].iter().zip(&list) {
            if p.revents != 0 {
                fired.push(*k);
            }
        }
    }
}

/// A future's registration on a file descriptor; dropping it removes the registration.
#[derive(Debug)]
#[must_use = "the registration is removed when this is dropped"]
pub struct FdWatch {
    id: Option<u64>,
}

impl FdWatch {
    /// Wakes `waker` once `fd` is readable (`POLLIN`; errors and hang-ups count), or after
    /// `nap` at the latest. Without a reactor (the process could not start its thread or
    /// make an eventfd) the waker is woken at once, so a caller re-polls rather than hangs.
    pub fn readable(fd: BorrowedFd<'_>, waker: &Waker, nap: Duration) -> FdWatch {
        let Some(f) = fds() else {
            waker.wake_by_ref();
            return FdWatch { id: None };
        };
        let key = Fd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
        };
        let id = lock(&f.table).insert(key, waker, nap);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local to the eventfd (the doorbell).
        let _ = unsafe { libc::write(f.bell.as_raw_fd(), one.as_ptr().cast(), 8) };
        FdWatch { id: Some(id) }
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        if let (Some(id), Some(f)) = (self.id, fds()) {
            lock(&f.table).entries.remove(&id);
        }
    }
}
