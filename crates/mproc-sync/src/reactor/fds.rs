//! The fd reactor: a second thread per process in `poll(2)` over every registered file
//! descriptor, with an eventfd as its doorbell.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::task::Waker;
use std::time::{Duration, Instant};

use mproc_segment::ProcessCell;

use super::{Table, lock, start_thread, wake_all};

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
    static FDS: ProcessCell<Fds> = ProcessCell::new();
    static FAILED: AtomicU64 = AtomicU64::new(0);
    FDS.get_or_try_make(|| {
        use rustix::event::{EventfdFlags, eventfd};
        let bell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(drop)?;
        let f = Fds {
            table: Mutex::new(Table::default()),
            bell,
        };
        // If the thread cannot start, `f` (and the eventfd) is dropped again.
        start_thread(f, "mproc-fd-reactor", fd_reactor, &FAILED).ok_or(())
    })
    .ok()
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
        // Raw `poll`, not rustix's: its `PollFd` borrows each descriptor for the call, and a
        // registered one may be closed by its owner at any moment (it then comes back as
        // POLLNVAL and wakes its future, which is what we want), so no borrow can be promised.
        // SAFETY: `pfds` is a live array of pollfd of the length passed; poll only writes
        // `revents`.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            continue;
        }
        if pfds[0].revents != 0 {
            // Drains the doorbell.
            let _ = rustix::io::read(&f.bell, &mut [0u8; 8]);
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
        let _ = rustix::io::write(&f.bell, &1u64.to_ne_bytes());
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
