//! Waiting for results: `AsyncResult` (one task) and `Imap` (a lazy stream of chunks).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pool;
use super::state::{Outcome, abandon_job};
use super::wakeup::Shared;
use crate::call::FnRef;
use crate::codec::decode_outcomes;
use crate::{PoolError, SubmitError, TaskError, WaitError};

/// Decodes the `count` results of a finished job straight onto the end of `out`, stopping
/// at the first failed item (a failed job fails at its first).
pub(crate) fn push_outcomes<R: DeserializeOwned>(
    outcome: Outcome,
    count: usize,
    out: &mut Vec<R>,
) -> Result<(), TaskError> {
    match outcome {
        Outcome::Body(body) => {
            out.reserve(count);
            for r in decode_outcomes(&body, count) {
                out.push(r?);
            }
            Ok(())
        }
        Outcome::Failed(e) if count > 0 => Err(e),
        Outcome::Failed(_) => Ok(()),
    }
}

/// The `count` results of a finished job, decoded (a failed job fails every item).
pub(crate) fn outcome_items<R: DeserializeOwned>(
    outcome: Outcome,
    count: usize,
) -> Vec<Result<R, TaskError>> {
    match outcome {
        Outcome::Body(body) => decode_outcomes(&body, count).collect(),
        Outcome::Failed(e) => (0..count).map(|_| Err(e.clone())).collect(),
    }
}

/// The pending result of [`Pool::apply_async`] (Python's `AsyncResult`).
///
/// ```
/// use std::time::Duration;
/// use mproc_pool::Pool;
/// let pool = Pool::new(1)?;
/// let h = pool.apply_async(|n: u64| (1..=n).product::<u64>(), 10)?;
/// h.wait();
/// assert!(h.ready());
/// assert_eq!(h.get_timeout(Duration::from_secs(5))?, 3_628_800);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AsyncResult<R> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    /// Its waker's registration while polled as a future and not ready.
    pub(crate) registered: Option<u64>,
    _r: PhantomData<fn() -> R>,
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(shared: Arc<Shared>, id: u64) -> AsyncResult<R> {
        AsyncResult {
            shared,
            id,
            registered: None,
            _r: PhantomData,
        }
    }
}

impl<R> AsyncResult<R> {
    /// Gives this task a time limit (replacing the pool's `task_timeout`), counted from when
    /// its worker could start it: if it runs longer it fails with [`TaskError::Timeout`] and
    /// its worker is replaced. Returns `self` to chain after `apply_async`.
    pub fn timeout(self, limit: Duration) -> Self {
        let mut st = self.shared.lock();
        if let Some(job) = st.jobs.get_mut(&self.id) {
            job.limit = Some(limit);
        }
        drop(st);
        self
    }

    /// Cancels the task: one still queued is removed; a running one is stopped by killing its
    /// worker, which is replaced. Either way it fails with [`TaskError::Cancelled`] and no
    /// other task is affected. Returns false if it had already finished.
    pub fn cancel(&self) -> bool {
        let cancelled = self.shared.lock().cancel(self.id);
        self.shared.notify();
        cancelled
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the job and decodes its result; `None` if `deadline` passed first.
    pub(crate) fn outcome(&self, deadline: Option<Instant>) -> Option<Result<R, TaskError>> {
        let outcome = self
            .shared
            .wait_until(deadline, |st| match st.jobs.get(&self.id) {
                Some(job) => job.outcome.clone(),
                None => Some(Outcome::Failed(TaskError::Terminated)),
            })?;
        Some(
            outcome_items(outcome, 1)
                .pop()
                .unwrap_or(Err(TaskError::Terminated)),
        )
    }

    /// Waits for the task and returns its result (can be called again).
    pub fn get(&self) -> Result<R, TaskError> {
        // Without a deadline the wait ends only with an outcome.
        self.outcome(None).unwrap_or(Err(TaskError::Terminated))
    }

    /// As [`get`](AsyncResult::get), giving up with [`WaitError::Timeout`] after `timeout`
    /// (the task goes on; ask again later).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, WaitError> {
        match self.outcome(Some(Instant::now() + timeout)) {
            Some(r) => Ok(r?),
            None => Err(WaitError::Timeout),
        }
    }

    /// Waits until the task has finished (successfully or not).
    pub fn wait(&self) {
        let _ = self.outcome(None);
    }

    /// Waits up to `timeout`; true if the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.outcome(Some(Instant::now() + timeout)).is_some()
    }

    /// Whether the task has finished.
    pub fn ready(&self) -> bool {
        let st = self.shared.lock();
        st.jobs.get(&self.id).is_none_or(|j| j.outcome.is_some())
    }

    /// Whether the task has finished without error (false while it runs).
    pub fn successful(&self) -> bool {
        let st = self.shared.lock();
        st.jobs
            .get(&self.id)
            .and_then(|j| j.outcome.as_ref())
            .is_some_and(|o| match o {
                Outcome::Body(body) => decode_outcomes::<R>(body, 1).all(|r| r.is_ok()),
                Outcome::Failed(_) => false,
            })
    }
}

impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        if let Some(r) = self.registered.take() {
            self.shared.wakers.remove(r);
        }
        abandon_job(&mut self.shared.lock(), self.id);
    }
}

/// The results of a [`Pool::map_async`] or [`Pool::starmap_async`]: all of them, in input
/// order, once every task is done; the first failed item's error otherwise. Dropping it
/// abandons the tasks not yet collected.
#[derive(Debug)]
pub struct MapResult<R> {
    pub(crate) shared: Arc<Shared>,
    /// Each chunk's job id and length.
    ids: Vec<(u64, usize)>,
    /// Its waker's registration while polled as a future and not ready.
    pub(crate) registered: Option<u64>,
    _r: PhantomData<fn() -> R>,
}

impl<R> MapResult<R> {
    pub(crate) fn new(shared: Arc<Shared>, ids: Vec<(u64, usize)>) -> MapResult<R> {
        MapResult {
            shared,
            ids,
            registered: None,
            _r: PhantomData,
        }
    }

    /// Whether every task has finished (successfully or not).
    pub fn ready(&self) -> bool {
        let st = self.shared.lock();
        self.ids
            .iter()
            .all(|(id, _)| st.jobs.get(id).is_none_or(|j| j.outcome.is_some()))
    }

    /// Waits until every task has finished.
    pub fn wait(&self) {
        let _ = self.wait_deadline(None);
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Option<()> {
        self.shared.wait_until(deadline, |st| {
            self.ids
                .iter()
                .all(|(id, _)| st.jobs.get(id).is_none_or(|j| j.outcome.is_some()))
                .then_some(())
        })
    }
}

impl<R: DeserializeOwned> MapResult<R> {
    /// Every result in input order, or the first failure; `None` if `deadline` passed
    /// before they were all in.
    pub(crate) fn collect(&self, deadline: Option<Instant>) -> Option<Result<Vec<R>, TaskError>> {
        self.wait_deadline(deadline)?;
        Some(self.collected())
    }

    fn collected(&self) -> Result<Vec<R>, TaskError> {
        let st = self.shared.lock();
        let mut out = Vec::new();
        for &(id, len) in &self.ids {
            let outcome = st
                .jobs
                .get(&id)
                .and_then(|j| j.outcome.clone())
                .unwrap_or(Outcome::Failed(TaskError::Terminated));
            for r in outcome_items::<R>(outcome, len) {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// Waits for every task and returns the results in input order (can be called again).
    pub fn get(&self) -> Result<Vec<R>, TaskError> {
        // Without a deadline the wait ends only when every task has an outcome.
        self.collect(None).unwrap_or(Err(TaskError::Terminated))
    }

    /// As [`get`](Self::get), giving up with [`WaitError::Timeout`] after `timeout` (the
    /// tasks go on; ask again later).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, WaitError> {
        match self.collect(Some(Instant::now() + timeout)) {
            Some(r) => Ok(r?),
            None => Err(WaitError::Timeout),
        }
    }
}

impl<R> Drop for MapResult<R> {
    fn drop(&mut self) {
        if let Some(r) = self.registered.take() {
            self.shared.wakers.remove(r);
        }
        let mut st = self.shared.lock();
        for &(id, _) in &self.ids {
            abandon_job(&mut st, id);
        }
    }
}

/// One submitted chunk of an [`Imap`], or a chunk that failed before submission.
#[derive(Debug)]
enum Slot {
    Job { id: u64, len: usize },
    Failed { error: SubmitError, len: usize },
}

/// The lazy iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: yields one
/// `Result<R, PoolError>` per input item: the task's outcome, or why its chunk could not be
/// submitted.
///
/// ```
/// use mproc_pool::Pool;
/// let pool = Pool::new(2)?;
/// // An endless input: only what is consumed (plus a bounded window) is ever computed.
/// let first: Vec<u64> = pool
///     .imap(|x: u64| x * 10, 0..)
///     .take(5)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(first, [0, 10, 20, 30, 40]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Imap<'p, I, R> {
    pub(crate) pool: &'p Pool,
    func: FnRef,
    input: I,
    chunksize: usize,
    window: VecDeque<Slot>,
    max_window: usize,
    ready: VecDeque<Result<R, PoolError>>,
    ordered: bool,
    exhausted: bool,
    /// Its waker's registration while polled as a stream and not ready.
    pub(crate) registered: Option<u64>,
}

// Nothing is pinned through an `Imap` (its items live in a `VecDeque` and are moved out).
impl<I: Unpin, R> Unpin for Imap<'_, I, R> {}

impl<'p, A, I, R> Imap<'p, I, R>
where
    A: Serialize,
    I: Iterator<Item = A>,
    R: DeserializeOwned,
{
    pub(crate) fn new(pool: &'p Pool, func: FnRef, input: I, ordered: bool) -> Self {
        Imap {
            pool,
            func,
            input,
            chunksize: pool.chunksize.unwrap_or(1),
            window: VecDeque::new(),
            max_window: 2 * pool.processes,
            ready: VecDeque::new(),
            ordered,
            exhausted: false,
            registered: None,
        }
    }

    /// Pulls input and submits chunks until the window is full or the input ends.
    fn fill(&mut self) {
        while !self.exhausted && self.window.len() < self.max_window {
            let chunk: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            let len = chunk.len();
            if len < self.chunksize {
                self.exhausted = true;
            }
            if len == 0 {
                break;
            }
            let slot = match crate::codec::encode_args(&chunk) {
                Err(error) => Slot::Failed { error, len },
                Ok(args) => match self.pool.submit(self.func, len as u32, args) {
                    Ok(id) => Slot::Job { id, len },
                    Err(error) => {
                        self.exhausted = true;
                        Slot::Failed { error, len }
                    }
                },
            };
            self.window.push_back(slot);
        }
    }

    fn collect_slot(&mut self, outcome: Outcome, len: usize) {
        self.ready
            .extend(outcome_items(outcome, len).into_iter().map(|r| Ok(r?)));
    }
}

impl<A, I, R> Iterator for Imap<'_, I, R>
where
    A: Serialize,
    I: Iterator<Item = A>,
    R: DeserializeOwned,
{
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance(None).unwrap_or(None)
    }
}

impl<A, I, R> Imap<'_, I, R>
where
    A: Serialize,
    I: Iterator<Item = A>,
    R: DeserializeOwned,
{
    /// The next item, waiting for it until `deadline` (`None`: as long as it takes);
    /// `Err(())` if the deadline passed first.
    pub(crate) fn advance(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Result<R, PoolError>>, ()> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            self.fill();
            if self.window.is_empty() {
                return Ok(None);
            }
            // A chunk that failed before submission is ready at once (in order, when it is
            // at the front; unordered, whenever).
            let failed = if self.ordered {
                matches!(self.window.front(), Some(Slot::Failed { .. })).then_some(0)
            } else {
                self.window
                    .iter()
                    .position(|s| matches!(s, Slot::Failed { .. }))
            };
            if let Some(i) = failed {
                if let Some(Slot::Failed { error, len }) = self.window.remove(i) {
                    self.ready
                        .extend((0..len).map(|_| Err(PoolError::Submit(error.clone()))));
                }
                continue;
            }
            let candidates: Vec<(u64, usize)> = self
                .window
                .iter()
                .take(if self.ordered { 1 } else { usize::MAX })
                .filter_map(|s| match s {
                    Slot::Job { id, len } => Some((*id, *len)),
                    Slot::Failed { .. } => None,
                })
                .collect();
            let ids: Vec<u64> = candidates.iter().map(|c| c.0).collect();
            let Some((i, outcome)) = self.pool.wait_any(&ids, deadline, true) else {
                return Err(());
            };
            let Some(&(id, len)) = candidates.get(i) else {
                return Err(());
            };
            self.window
                .retain(|s| !matches!(s, Slot::Job { id: j, .. } if *j == id));
            self.collect_slot(outcome, len);
        }
    }
}

impl<I, R> Drop for Imap<'_, I, R> {
    fn drop(&mut self) {
        if let Some(r) = self.registered.take() {
            self.pool.shared.wakers.remove(r);
        }
        let ids: Vec<u64> = self
            .window
            .iter()
            .filter_map(|s| match s {
                Slot::Job { id, .. } => Some(*id),
                Slot::Failed { .. } => None,
            })
            .collect();
        self.pool.abandon(ids);
    }
}
