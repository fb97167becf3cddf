//! The queues' futures and select sources (the `async` feature): the same operations as
//! `try_get` / `try_put`, retried whenever the reactor reports that the side the caller waits
//! for moved (see mproc-sync's `reactor` module), and after every [`REPOLL`] to look for dead peers,
//! as the blocking calls do.

use std::task::Waker;

use mproc_sync::{Registration, Waitable};

use crate::atomic::Ordering;
use crate::raw::RawQueue;
use crate::wait::REPOLL;

/// The futures of one queue type, delegated to its `try_get_polled` / `try_put_polled` (the
/// `try_` calls, asking after peers that hold slots only once a wait has woken or napped, as
/// the blocking calls do); `$item` is what it carries and `$($raw)+` the path from `self` to
/// its `RawQueue`.
macro_rules! async_queue_methods {
    ($item:ty, $($raw:tt)+) => {
        /// Takes the oldest item without blocking a thread: completes with what
        /// [`get`](Self::get) would return (`Err(Closed)` once closed and drained).
        ///
        /// Cancellation-safe: a future dropped before it completes has taken nothing, and
        /// leaves no registration behind.
        pub fn get_async(
            &self,
        ) -> impl std::future::Future<Output = Result<$item, $crate::GetError>> + '_ {
            mproc_sync::__private::wait_async(
                self.$($raw)+.get_parkings(),
                $crate::wait::REPOLL,
                move |check| match self.try_get_polled(check) {
                    Err($crate::GetError::Empty) => None,
                    r => Some(r),
                },
            )
        }

        /// Appends `value` without blocking a thread, waiting while the queue (or its arena)
        /// is full: completes with what [`put`](Self::put) would return; on close the value
        /// comes back in `Err(Closed(value))`.
        ///
        /// Dropping the future before it completes drops `value` unsent.
        pub fn put_async(
            &self,
            value: $item,
        ) -> impl std::future::Future<Output = Result<(), $crate::PutError<$item>>> + '_ {
            let mut value = Some(value);
            mproc_sync::__private::wait_async(
                self.$($raw)+.put_parkings(),
                $crate::wait::REPOLL,
                move |check| match self.try_put_polled(value.take()?, check) {
                    Err($crate::PutError::Full(v)) => {
                        value = Some(v);
                        None
                    }
                    r => Some(r),
                },
            )
        }

        /// Waits (without blocking a thread) for at least one item, then takes up to `max`
        /// without waiting further, appending them to `out`; the async form of `get_many`.
        /// Cancellation-safe: only the wait for the first item can be interrupted.
        pub async fn get_many_async(
            &self,
            out: &mut Vec<$item>,
            max: usize,
        ) -> Result<usize, $crate::GetError> {
            if max == 0 {
                return Ok(0);
            }
            out.push(self.get_async().await?);
            let mut n = 1;
            while n < max {
                match self.try_get() {
                    Ok(v) => out.push(v),
                    Err(_) => break,
                }
                n += 1;
            }
            Ok(n)
        }

        /// This queue as a [`select`](mproc_sync::select) source that is ready when an item
        /// may be taken (or the queue is closed).
        pub fn readable(&self) -> $crate::QueueReady<'_> {
            $crate::QueueReady::readable(&self.$($raw)+)
        }

        /// This queue as a [`select`](mproc_sync::select) source that is ready when a slot
        /// is free (or the queue is closed).
        pub fn writable(&self) -> $crate::QueueReady<'_> {
            $crate::QueueReady::writable(&self.$($raw)+)
        }
    };
}
pub(crate) use async_queue_methods;

/// One side of a queue as a [`Waitable`] source for [`select`](mproc_sync::select)
/// (`queue.readable()`, `queue.writable()`). Readiness is a hint read from the ring's
/// counters: another consumer may take the item first, or it may still be being written; the
/// `try_` call after the select says for sure.
#[derive(Debug, Clone, Copy)]
pub struct QueueReady<'a> {
    raw: &'a RawQueue,
    readable: bool,
}

impl<'a> QueueReady<'a> {
    pub(crate) fn readable(raw: &'a RawQueue) -> QueueReady<'a> {
        QueueReady {
            raw,
            readable: true,
        }
    }

    pub(crate) fn writable(raw: &'a RawQueue) -> QueueReady<'a> {
        QueueReady {
            raw,
            readable: false,
        }
    }
}

impl Waitable for QueueReady<'_> {
    fn is_ready(&self) -> bool {
        let h = self.raw.header();
        if self.raw.is_closed() {
            return true;
        }
        let head = h.head.load(Ordering::SeqCst);
        let tail = h.tail.load(Ordering::SeqCst);
        let depth = tail.saturating_sub(head);
        if self.readable {
            depth > 0
        } else {
            depth < self.raw.capacity() as u64
        }
    }

    fn register(&self, waker: &Waker) -> Registration<'_> {
        let h = self.raw.header();
        let parking = if self.readable {
            &h.not_empty
        } else {
            &h.not_full
        };
        Registration::parking_for(parking, waker, REPOLL)
    }
}
