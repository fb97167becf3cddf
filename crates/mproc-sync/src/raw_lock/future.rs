//! `RawLock::lock_async`'s future (the `async` feature).

use super::{NAP, RawGuard, RawLock};
use crate::LockError;
use crate::futex;

/// The future of [`RawLock::lock_async`].
#[cfg(all(feature = "async", not(loom)))]
pub(super) struct LockFuture<'a> {
    pub(super) lock: &'a RawLock,
    pub(super) watch: Option<crate::reactor::WordWatch>,
}

#[cfg(all(feature = "async", not(loom)))]
impl<'a> std::future::Future for LockFuture<'a> {
    type Output = Result<RawGuard<'a>, LockError<RawGuard<'a>>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let Some(w) = self.watch.take() {
            w.finish();
        }
        let lock = self.lock;
        match lock.poll_acquire() {
            Ok(r) => std::task::Poll::Ready(
                r.map(|()| lock.guard(false))
                    .map_err(|e| e.map(|()| lock.guard(false))),
            ),
            Err(expected) => {
                self.watch = Some(crate::reactor::WordWatch::new_low(
                    &lock.word,
                    expected,
                    cx.waker(),
                    NAP,
                ));
                std::task::Poll::Pending
            }
        }
    }
}

#[cfg(all(feature = "async", not(loom)))]
impl Drop for LockFuture<'_> {
    fn drop(&mut self) {
        // An unlock wakes one sleeper: if it chose this future, pass the wake-up on.
        if self
            .watch
            .take()
            .is_some_and(crate::reactor::WordWatch::finish)
        {
            futex::wake_low(&self.lock.word, 1);
        }
    }
}
