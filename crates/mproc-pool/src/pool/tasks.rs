//! Submitting work: `map`, `starmap`, `imap`, `apply` and their async forms, chunking, and
//! waiting for any of a set of jobs.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{Outcome, abandon_job};
use super::{AsyncResult, Imap, MapResult, Pool};
use crate::call::FnRef;
use crate::codec::encode_args;
use crate::{PoolError, SubmitError, TaskError};

impl Pool {
    /// Queues a job and sends it to a worker if one has room.
    pub(super) fn submit(
        &self,
        func: FnRef,
        count: u32,
        args: Vec<u8>,
    ) -> Result<u64, SubmitError> {
        let mut st = self.shared.lock();
        let id = st.submit(func, count, args, self.shared.config.task_timeout)?;
        st.dispatch(&self.shared.config);
        Ok(id)
    }

    /// Waits for any of `ids` to finish; returns its index in `ids` and removes the job if
    /// `take`. `None` if `deadline` passed first.
    pub(super) fn wait_any(
        &self,
        ids: &[u64],
        deadline: Option<Instant>,
        take: bool,
    ) -> Option<(usize, Outcome)> {
        self.shared.wait_until(deadline, |st| {
            for (i, id) in ids.iter().enumerate() {
                match st.jobs.get(id) {
                    Some(job) if job.outcome.is_some() => {
                        let outcome = if take {
                            st.jobs.remove(id).and_then(|j| j.outcome)
                        } else {
                            job.outcome.clone()
                        };
                        let outcome = outcome.unwrap_or(Outcome::Failed(TaskError::Terminated));
                        return Some((i, outcome));
                    }
                    Some(_) => {}
                    None => return Some((i, Outcome::Failed(TaskError::Terminated))),
                }
            }
            None
        })
    }

    pub(super) fn abandon(&self, ids: impl IntoIterator<Item = u64>) {
        let mut st = self.shared.lock();
        for id in ids {
            abandon_job(&mut st, id);
        }
    }

    pub(super) fn default_chunksize(&self, n: usize) -> usize {
        self.chunksize
            .unwrap_or_else(|| n.div_ceil(4 * self.processes).max(1))
    }

    /// Submits `items` in chunks of `chunk` (default: [`Self::default_chunksize`]) calls of
    /// `func`; returns each chunk's job id and length. Nothing stays submitted on an error.
    pub(super) fn submit_all<T: Serialize>(
        &self,
        func: FnRef,
        items: &[T],
        chunk: Option<usize>,
    ) -> Result<Vec<(u64, usize)>, SubmitError> {
        let chunk = chunk
            .unwrap_or_else(|| self.default_chunksize(items.len()))
            .max(1);
        let mut ids = Vec::with_capacity(items.len().div_ceil(chunk));
        for part in items.chunks(chunk) {
            let submitted =
                encode_args(part).and_then(|args| self.submit(func, part.len() as u32, args));
            match submitted {
                Ok(id) => ids.push((id, part.len())),
                Err(e) => {
                    self.abandon(ids.iter().map(|j| j.0));
                    return Err(e);
                }
            }
        }
        Ok(ids)
    }

    /// Submits `items` in chunks of `func` calls and collects the results in order.
    pub(super) fn run_all<T: Serialize, R: DeserializeOwned>(
        &self,
        func: FnRef,
        items: Vec<T>,
        chunk: Option<usize>,
    ) -> Result<Vec<R>, PoolError> {
        let n = items.len();
        let ids = self.submit_all(func, &items, chunk)?;
        drop(items);
        #[cfg(feature = "progress")]
        let bar = self.progress.then(|| {
            let bar = indicatif::ProgressBar::new(n as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} items, {per_sec}, eta {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let mut out = Vec::with_capacity(n);
        for (k, &(id, len)) in ids.iter().enumerate() {
            // No deadline: only a vanished job (the pool was dropped) ends the wait early.
            let outcome = self
                .wait_any(&[id], None, true)
                .map_or(Outcome::Failed(TaskError::Terminated), |(_, o)| o);
            #[cfg(feature = "progress")]
            if let Some(bar) = &bar {
                bar.inc(len as u64);
                let r = self.shared.lock().restarts;
                let lost = r.died + r.timed_out + r.cancelled;
                if lost > 0 {
                    bar.set_message(format!("({lost} workers lost, replaced)"));
                }
            }
            if let Err(e) = super::results::push_outcomes::<R>(outcome, len, &mut out) {
                self.abandon(ids[k + 1..].iter().map(|j| j.0));
                return Err(e.into());
            }
        }
        #[cfg(feature = "progress")]
        if let Some(bar) = bar {
            bar.finish();
        }
        Ok(out)
    }

    /// Applies `f` to every item, in parallel; results in input order. The first failed
    /// item's error is returned (the remaining tasks are abandoned). For per-item outcomes use
    /// [`imap`](Pool::imap).
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run_all(FnRef::new(f), items.into_iter().collect(), None)
    }

    /// As [`map`](Pool::map) with `chunksize` items per task for this call (Python's
    /// `map(f, items, chunksize)`), whatever the pool's default.
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run_all(FnRef::new(f), items.into_iter().collect(), Some(chunksize))
    }

    /// Starts [`map`](Pool::map) and returns at once (Python's `map_async`): the
    /// [`MapResult`] gives the results in input order when they are all in.
    ///
    /// ```
    /// let pool = mproc_pool::Pool::builder().processes(2).build()?;
    /// let squares = pool.map_async(|x: u64| x * x, 0..100)?;
    /// // ... other work while the workers compute ...
    /// assert_eq!(squares.get()?[99], 9801);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<MapResult<R>, SubmitError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let ids = self.submit_all(FnRef::new(f), &items, None)?;
        Ok(MapResult::new(Arc::clone(&self.shared), ids))
    }

    /// As [`map`](Pool::map) for a two-argument function over pairs (Python's `starmap`;
    /// for more arguments, take a tuple in `map`).
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.run_all(FnRef::pair(f), items.into_iter().collect(), None)
    }

    /// As [`starmap`](Pool::starmap), returning at once (Python's `starmap_async`).
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<MapResult<R>, SubmitError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<(A, B)> = items.into_iter().collect();
        let ids = self.submit_all(FnRef::pair(f), &items, None)?;
        Ok(MapResult::new(Arc::clone(&self.shared), ids))
    }

    /// Lazily applies `f` to the items, yielding each item's result in input order. Input is
    /// pulled only as results are consumed (at most `2 × processes` chunks ahead), so an
    /// endless iterator works. Each item fails alone.
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, items: I) -> Imap<'_, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, FnRef::new(f), items.into_iter(), true)
    }

    /// As [`imap`](Pool::imap), yielding results in the order they finish.
    pub fn imap_unordered<A, R, I>(&self, f: fn(A) -> R, items: I) -> Imap<'_, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, FnRef::new(f), items.into_iter(), false)
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    pub fn apply<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        Ok(self.apply_async(f, arg)?.get()?)
    }

    /// Starts `f(arg)` in a worker; the [`AsyncResult`] gives the result later.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<AsyncResult<R>, SubmitError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let id = self.submit(FnRef::new(f), 1, encode_args(&[arg])?)?;
        Ok(AsyncResult::new(Arc::clone(&self.shared), id))
    }
}
