//! Waiting for the first of many sources: [`select`] (blocking, with a timeout) and
//! [`select_async`], over anything [`Waitable`] — queues (readable or writable), events,
//! semaphores, pool results, processes, plain file descriptors — like Python's
//! `multiprocessing.connection.wait`.
//!
//! A select reports readiness, it takes nothing: a queue reported readable had a message (or
//! was closed) when it was looked at, and another consumer may take that message first. Follow
//! a select with a non-blocking call (`try_get`) and select again if it finds nothing.

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::naps::PARKING;
use crate::park::Parking;
use crate::reactor::{FdWatch, WordWatch};

/// A source [`select`] can wait on.
///
/// Implement it by saying when the source is ready and where a change is announced: a
/// [`Parking`] that the source's state changes wake (`Registration::parking`), a file
/// descriptor that becomes readable (`Registration::readable`), or a guard of your own that
/// wakes the waker (`Registration::custom`).
pub trait Waitable: Sync {
    /// Whether the source is ready now. Must not consume anything.
    fn is_ready(&self) -> bool;

    /// Arranges for `waker` to be woken when the source may have become ready, until the
    /// returned registration is dropped. Spurious wake-ups are fine; a missed one is not:
    /// a change after `register` returns must wake.
    fn register(&self, waker: &Waker) -> Registration<'_>;
}

/// A source's registration with a waker; dropping it removes it.
#[derive(Debug)]
pub struct Registration<'a>(Reg<'a>);

#[derive(Debug)]
enum Reg<'a> {
    Parking {
        /// Always `Some` until dropped.
        waiting: Option<crate::park::Waiting<'a>>,
        watch: Option<WordWatch>,
    },
    /// Held only to be dropped: that removes the registration.
    Fd(#[allow(dead_code)] FdWatch),
    Custom(#[allow(dead_code)] CustomGuard<'a>),
}

struct CustomGuard<'a>(#[allow(dead_code)] Box<dyn Send + 'a>);

impl std::fmt::Debug for CustomGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomGuard")
    }
}

impl<'a> Registration<'a> {
    /// Waits on a [`Parking`] (the waker's side calls `wake_one`/`wake_all` after changing
    /// the state): counts a waiter and registers its current sequence with the reactor. The
    /// waiter count makes the source's wakers issue the system call that reaches the reactor.
    pub fn parking(parking: &'a Parking, waker: &Waker) -> Registration<'a> {
        Self::parking_for(parking, waker, PARKING)
    }

    /// As [`parking`](Self::parking), waking the waker after `nap` at the latest (when the
    /// source should look for dead peers).
    pub fn parking_for(parking: &'a Parking, waker: &Waker, nap: Duration) -> Registration<'a> {
        // The waiter's half of the `Parking` protocol; the caller then looks at the state
        // once more.
        let waiting = parking.prepare();
        let watch = WordWatch::new(&parking.seq, waiting.seen(), waker, nap);
        Registration(Reg::Parking {
            waiting: Some(waiting),
            watch: Some(watch),
        })
    }

    /// Whether a waker has moved the parking's sequence since this registration was made
    /// (`false` after a nap or a spurious poll; always `false` for other kinds).
    pub fn woken_by_change(&self) -> bool {
        match &self.0 {
            Reg::Parking { waiting, .. } => waiting.as_ref().is_some_and(|w| w.changed()),
            _ => false,
        }
    }

    /// Ends the registration without passing on a wake-up it absorbed (the caller is about
    /// to look at the source itself); `true` if it had fired.
    pub fn finish(mut self) -> bool {
        match &mut self.0 {
            Reg::Parking { watch, .. } => {
                // Drop still takes us off the waiter count; `watch` is gone, so it passes
                // nothing on.
                watch.take().is_some_and(WordWatch::finish)
            }
            _ => false,
        }
    }

    /// Waits for `fd` to become readable (or report an error or hang-up).
    pub fn readable(fd: BorrowedFd<'_>, waker: &Waker) -> Registration<'a> {
        Registration(Reg::Fd(FdWatch::readable(fd, waker, PARKING)))
    }

    /// A registration of the caller's own making: `guard` is dropped with it (it should then
    /// forget the waker).
    pub fn custom(guard: impl Send + 'a) -> Registration<'a> {
        Registration(Reg::Custom(CustomGuard(Box::new(guard))))
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Reg::Parking { waiting, watch } = &mut self.0 {
            let fired = watch.take().is_some_and(WordWatch::finish);
            // Uncounted first, so that the pass-on below does not count us.
            let parking = waiting.take().map(|w| w.parking());
            // A wake-up this registration absorbed may have been meant for a blocked waiter:
            // pass it on (a spurious wake-up costs that waiter one look).
            if let (true, Some(p)) = (fired, parking) {
                p.wake_one();
            }
        }
    }
}

/// A file descriptor as a [`Waitable`]: ready when readable (a pidfd: when its process has
/// exited; a socket or pipe: data or hang-up).
#[derive(Debug, Clone, Copy)]
pub struct Readable<'a>(pub BorrowedFd<'a>);

impl Waitable for Readable<'_> {
    fn is_ready(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        Registration::readable(self.0.as_fd(), waker)
    }
}

impl Waitable for crate::RawEvent {
    fn is_ready(&self) -> bool {
        self.is_set()
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        Registration::parking(self.parking(), waker)
    }
}

impl Waitable for crate::Event {
    fn is_ready(&self) -> bool {
        self.is_set()
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        self.raw().register(waker)
    }
}

impl Waitable for crate::RawSemaphore {
    fn is_ready(&self) -> bool {
        self.value() > 0
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        Registration::parking(self.parking(), waker)
    }
}

impl<T: Waitable + ?Sized> Waitable for &T {
    fn is_ready(&self) -> bool {
        (**self).is_ready()
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        (**self).register(waker)
    }
}

fn ready_of(sources: &[&dyn Waitable]) -> Vec<usize> {
    sources
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_ready())
        .map(|(i, _)| i)
        .collect()
}

/// One round of a select: ready sources, or the registrations to wait on.
fn round<'s>(
    sources: &[&'s (dyn Waitable + 's)],
    waker: &Waker,
) -> Result<Vec<usize>, Vec<Registration<'s>>> {
    let ready = ready_of(sources);
    if !ready.is_empty() {
        return Ok(ready);
    }
    let regs: Vec<Registration<'s>> = sources.iter().map(|&s| s.register(waker)).collect();
    // Registered first, then looked again: a change in between has already fired a waker.
    let ready = ready_of(sources);
    if ready.is_empty() {
        Err(regs)
    } else {
        Ok(ready)
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Blocks until at least one of `sources` is ready, or `timeout` passes; returns the indices
/// of the ready ones (empty on timeout). The calling thread sleeps; the process's reactor
/// threads watch the sources.
///
/// ```
/// use std::time::Duration;
/// use mproc_sync::{Event, select};
/// let (a, b) = (Event::new()?, Event::new()?);
/// assert!(select(&[&a, &b], Some(Duration::from_millis(10))).is_empty());
/// b.set();
/// assert_eq!(select(&[&a, &b], None), vec![1]);
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
pub fn select(sources: &[&dyn Waitable], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    loop {
        let regs = match round(sources, &waker) {
            Ok(ready) => return ready,
            Err(regs) => regs,
        };
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Vec::new();
                }
                std::thread::park_timeout(left);
            }
        }
        drop(regs);
    }
}

/// The future of [`select_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SelectFuture<'a> {
    sources: &'a [&'a dyn Waitable],
    regs: Vec<Registration<'a>>,
}

impl std::fmt::Debug for SelectFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectFuture")
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl Future for SelectFuture<'_> {
    type Output = Vec<usize>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<usize>> {
        self.regs.clear();
        match round(self.sources, cx.waker()) {
            Ok(ready) => Poll::Ready(ready),
            Err(regs) => {
                self.regs = regs;
                Poll::Pending
            }
        }
    }
}

/// Completes with the indices of the ready sources once at least one is ready (the async form
/// of [`select`]; combine with your runtime's timer for a timeout). Dropping it removes its
/// registrations.
pub fn select_async<'a>(sources: &'a [&'a dyn Waitable]) -> SelectFuture<'a> {
    SelectFuture {
        sources,
        regs: Vec::new(),
    }
}
