//! The pool's results as futures and streams, and results and processes as select sources
//! (the `async` feature).
//!
//! Results arrive in this process's memory (the handler thread reads the workers' replies), so
//! their futures are woken by [`Shared::notify`](super::state::Shared) through the pool's
//! waker list, not by the futex reactor. A worker's death is settled by the handler thread as
//! for the blocking calls, and wakes the futures the same way.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use mproc_sync::{Registration, Waitable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::results::{AsyncResult, Imap, MapResult};
use super::wakeup::Shared;
use crate::TaskError;
use crate::process::Process;

/// Registers `waker` (replacing `registered`), then runs `look`; keeps the registration only
/// while `look` finds nothing.
fn poll_with<T>(
    shared: &Shared,
    registered: &mut Option<u64>,
    waker: &Waker,
    look: impl FnOnce() -> Option<T>,
) -> Poll<T> {
    *registered = Some(shared.wakers.register(registered.take(), waker));
    match look() {
        Some(v) => {
            if let Some(r) = registered.take() {
                shared.wakers.remove(r);
            }
            Poll::Ready(v)
        }
        None => Poll::Pending,
    }
}

/// Awaiting an `AsyncResult` gives what [`get`](AsyncResult::get) returns, without blocking
/// a thread. Await it by reference (`(&mut handle).await`) to keep the handle; dropping a
/// pending one before the result arrives abandons the task as dropping the handle does.
impl<R: DeserializeOwned> Future for AsyncResult<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        let mut registered = this.registered.take();
        let r = poll_with(&shared, &mut registered, cx.waker(), || {
            this.outcome(Some(Instant::now()))
        });
        this.registered = registered;
        r
    }
}

/// Awaiting a `MapResult` gives what [`get`](MapResult::get) returns, without blocking a
/// thread.
impl<R: DeserializeOwned> Future for MapResult<R> {
    type Output = Result<Vec<R>, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        let mut registered = this.registered.take();
        let r = poll_with(&shared, &mut registered, cx.waker(), || {
            this.collect(Some(Instant::now()))
        });
        this.registered = registered;
        r
    }
}

/// `imap` / `imap_unordered` as a [`Stream`](futures_core::Stream): the same items as the
/// iterator, in the same order, without blocking a thread. Input is pulled (and tasks
/// submitted) as the stream is polled, within the same bounded window.
impl<A, I, R> futures_core::Stream for Imap<'_, I, R>
where
    A: Serialize,
    I: Iterator<Item = A> + Unpin,
    R: DeserializeOwned,
{
    type Item = Result<R, crate::PoolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.pool.shared);
        let mut registered = this.registered.take();
        let r = poll_with(&shared, &mut registered, cx.waker(), || {
            this.advance(Some(Instant::now())).ok()
        });
        this.registered = registered;
        r
    }
}

/// A registration in the pool's waker list, removed when dropped.
struct PoolWaker {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for PoolWaker {
    fn drop(&mut self) {
        self.shared.wakers.remove(self.id);
    }
}

/// Ready when the task has finished (successfully or not).
impl<R: DeserializeOwned> Waitable for AsyncResult<R> {
    fn is_ready(&self) -> bool {
        self.ready()
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        let id = self.shared.wakers.register(None, waker);
        Registration::custom(PoolWaker {
            shared: Arc::clone(&self.shared),
            id,
        })
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Waits for the child to exit without blocking a thread, then returns what
    /// [`join`](Process::join) returns. The child's pidfd is watched by the process's fd
    /// reactor (`poll`). Dropping the future leaves the child running and joinable.
    pub async fn join_async(&mut self) -> Result<R, crate::JoinError> {
        let mut watch: Option<mproc_sync::__private::FdWatch> = None;
        std::future::poll_fn(|cx| {
            watch = None;
            if self.is_alive() {
                watch = Some(mproc_sync::__private::FdWatch::readable(
                    self.pidfd().as_fd(),
                    cx.waker(),
                    mproc_sync::__private::PARKING,
                ));
                // Registered, then looked again: an exit in between has made the fd readable.
                if self.is_alive() {
                    return Poll::Pending;
                }
            }
            Poll::Ready(())
        })
        .await;
        self.join()
    }
}

/// Ready when the child has exited (a select does not reap it: `join` does).
impl<R: DeserializeOwned> Waitable for Process<R>
where
    Process<R>: Sync,
{
    fn is_ready(&self) -> bool {
        !self.is_alive()
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        Registration::readable(self.pidfd().as_fd(), waker)
    }
}
