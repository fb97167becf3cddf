//! Locks, semaphores, events, conditions and barriers (mproc-sync's), named so that any
//! process, Rust or Python, opens them.

use mproc_sync::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, LockError, RLock, RawLock, Semaphore,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::{OwnerDied, deadline, segment_error, waiting};

/// The `create(name, ...)` / `open(name)` / `name` every primitive has.
macro_rules! named {
    ($ty:ident, $inner:ty, ($($arg:ident: $argty:ty),*)) => {
        #[pymethods]
        impl $ty {
            /// Creates the named object (a stale one of a dead creator is reclaimed).
            #[staticmethod]
            fn create(name: &str $(, $arg: $argty)*) -> PyResult<Self> {
                Ok($ty {
                    inner: <$inner>::create(name $(, $arg)*).map_err(segment_error)?,
                    name: name.to_owned(),
                })
            }

            /// Opens the named object.
            #[staticmethod]
            fn open(name: &str) -> PyResult<Self> {
                Ok($ty {
                    inner: <$inner>::open(name).map_err(segment_error)?,
                    name: name.to_owned(),
                })
            }

            /// Its name.
            #[getter]
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}

/// What one attempt at a lock found.
enum Took {
    Yes,
    /// Taken, and its previous holder had died holding it.
    OwnerDied,
    /// Held by this very thread (a plain lock is not re-entrant).
    Deadlock,
}

/// Acquires `raw` (plain) and forgets the guard: `release` ends it. `Ok(false)` if it
/// stayed held. A dead holder's lock is taken, marked consistent, and reported with
/// `OwnerDied` (raised once).
pub(crate) fn acquire(
    py: Python<'_>,
    raw: &RawLock,
    block: bool,
    timeout: Option<f64>,
) -> PyResult<bool> {
    // An uncontended lock is taken without releasing the GIL (which costs more than the
    // lock itself).
    match raw.try_lock() {
        Ok(g) => {
            std::mem::forget(g);
            return Ok(true);
        }
        Err(LockError::WouldBlock) => {}
        Err(_) => {} // the slow path below reports it
    }
    let wait = deadline(block, timeout)?;
    let took = waiting(py, wait, |slice| {
        let got = if slice.is_zero() {
            raw.try_lock()
        } else {
            raw.lock_timeout(slice)
        };
        match got {
            Ok(g) => {
                std::mem::forget(g);
                Some(Ok(Took::Yes))
            }
            Err(LockError::OwnerDied(g)) => {
                g.make_consistent();
                std::mem::forget(g);
                Some(Ok(Took::OwnerDied))
            }
            Err(LockError::WouldBlock | LockError::Timeout) => None,
            Err(LockError::Os { errno, .. }) if errno == rustix_deadlk() => {
                Some(Ok(Took::Deadlock))
            }
            Err(e) => Some(Err(e.to_string())),
        }
    })?;
    match took {
        None => Ok(false),
        Some(Ok(Took::Yes)) => Ok(true),
        Some(Ok(Took::OwnerDied)) => Err(OwnerDied::new_err(
            "the lock's previous holder died holding it: the data it protects may be \
             half-updated. The lock is now held by this thread (release it when done).",
        )),
        Some(Ok(Took::Deadlock)) => match wait {
            None => Ok(false),
            // As multiprocessing: the lock stays held (by this thread) until the timeout.
            Some(Some(until)) => {
                waiting(py, Some(Some(until)), |slice| {
                    std::thread::sleep(slice);
                    None::<()>
                })?;
                Ok(false)
            }
            // multiprocessing would hang for good: say why instead.
            Some(None) => Err(PyRuntimeError::new_err(
                "this thread already holds the lock, which is not re-entrant (use RLock)",
            )),
        },
        Some(Err(e)) => Err(PyRuntimeError::new_err(e)),
    }
}

fn rustix_deadlk() -> mproc_segment::Errno {
    mproc_segment::Errno::DEADLK
}

/// Releases `raw`, held by this thread.
pub(crate) fn release(raw: &RawLock) -> PyResult<()> {
    raw.unlock()
        .map_err(|_| PyRuntimeError::new_err("release of a lock this thread does not hold"))
}

/// A robust, non-re-entrant lock (mproc-sync's `Lock`).
#[pyclass(module = "mproc._native", frozen, name = "Lock")]
pub struct NativeLock {
    inner: Lock,
    name: String,
}
named!(NativeLock, Lock, ());

#[pymethods]
impl NativeLock {
    /// Acquires; `False` if it stayed held (`block=False`, or `timeout` passed).
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        acquire(py, self.inner.raw(), block, timeout)
    }

    /// Releases (from the thread that acquired it).
    fn release(&self) -> PyResult<()> {
        release(self.inner.raw())
    }

    /// Whether some thread holds it now.
    fn locked(&self) -> bool {
        self.inner.raw().holder().is_some()
    }
}

/// A robust re-entrant lock (mproc-sync's `RLock`).
#[pyclass(module = "mproc._native", frozen, name = "RLock")]
pub struct NativeRLock {
    inner: RLock,
    name: String,
}
named!(NativeRLock, RLock, ());

#[pymethods]
impl NativeRLock {
    /// Acquires (again, if this thread holds it); `False` if it stayed held elsewhere.
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let wait = deadline(block, timeout)?;
        let r = waiting(py, wait, |slice| {
            let got = if slice.is_zero() {
                self.inner.try_acquire()
            } else {
                self.inner.acquire_timeout(slice)
            };
            match got {
                Ok(()) => Some(Ok(false)),
                Err(LockError::OwnerDied(())) => {
                    self.inner.make_consistent();
                    Some(Ok(true))
                }
                Err(LockError::WouldBlock | LockError::Timeout) => None,
                Err(e) => Some(Err(e.to_string())),
            }
        })?;
        match r {
            None => Ok(false),
            Some(Ok(false)) => Ok(true),
            Some(Ok(true)) => Err(OwnerDied::new_err(
                "the lock's previous holder died holding it: the data it protects may be \
                 half-updated. The lock is now held by this thread (release it when done).",
            )),
            Some(Err(e)) => Err(PyRuntimeError::new_err(e)),
        }
    }

    /// Releases one level.
    fn release(&self) -> PyResult<()> {
        self.inner
            .release()
            .map_err(|_| PyRuntimeError::new_err("cannot release un-acquired lock"))
    }
}

/// A counting semaphore, optionally bounded.
#[pyclass(module = "mproc._native", frozen, name = "Semaphore")]
pub struct NativeSemaphore {
    inner: Semaphore,
    name: String,
}
named!(NativeSemaphore, Semaphore, (value: u32));

/// A semaphore whose value may not exceed its initial one.
#[pyclass(module = "mproc._native", frozen, name = "BoundedSemaphore")]
pub struct NativeBoundedSemaphore {
    inner: BoundedSemaphore,
    name: String,
}
named!(NativeBoundedSemaphore, BoundedSemaphore, (value: u32));

macro_rules! semaphore_methods {
    ($ty:ident, $release:expr) => {
        #[pymethods]
        impl $ty {
            /// Takes one unit; `False` if none came (`block=False`, or `timeout` passed).
            #[pyo3(signature = (block=true, timeout=None))]
            fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
                if self.inner.try_acquire() {
                    return Ok(true);
                }
                let wait = deadline(block, timeout)?;
                let got = waiting(py, wait, |slice| {
                    let took = if slice.is_zero() {
                        self.inner.try_acquire()
                    } else {
                        self.inner.acquire_timeout(slice)
                    };
                    took.then_some(())
                })?;
                Ok(got.is_some())
            }

            /// Gives one unit back.
            fn release(&self) -> PyResult<()> {
                #[allow(clippy::redundant_closure_call)]
                ($release)(&self.inner)
            }

            /// The current value.
            fn get_value(&self) -> u32 {
                self.inner.value()
            }
        }
    };
}
semaphore_methods!(NativeSemaphore, |s: &Semaphore| -> PyResult<()> {
    s.release();
    Ok(())
});
semaphore_methods!(
    NativeBoundedSemaphore,
    |s: &BoundedSemaphore| -> PyResult<()> {
        s.release()
            .map_err(|_| PyValueError::new_err("semaphore or lock released too many times"))
    }
);

/// An event flag.
#[pyclass(module = "mproc._native", frozen, name = "Event")]
pub struct NativeEvent {
    inner: Event,
    name: String,
}
named!(NativeEvent, Event, ());

#[pymethods]
impl NativeEvent {
    /// Sets the flag and wakes every waiter.
    fn set(&self) {
        self.inner.set()
    }

    /// Clears the flag.
    fn clear(&self) {
        self.inner.clear()
    }

    /// Whether the flag is set.
    fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    /// Waits until the flag is set; `False` if `timeout` passed first.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.inner.is_set() {
            return Ok(true);
        }
        let wait = deadline(true, timeout)?;
        let set = waiting(py, wait, |slice| {
            self.inner.wait_timeout(slice).then_some(())
        })?;
        Ok(set.is_some())
    }
}

/// A condition variable with its own robust lock.
#[pyclass(module = "mproc._native", frozen, name = "Condition")]
pub struct NativeCondition {
    inner: Condition,
    name: String,
}
named!(NativeCondition, Condition, ());

#[pymethods]
impl NativeCondition {
    /// Acquires the condition's lock.
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        acquire(py, self.inner.raw_lock(), block, timeout)
    }

    /// Releases the condition's lock.
    fn release(&self) -> PyResult<()> {
        release(self.inner.raw_lock())
    }

    /// Releases the lock (held by this thread), waits for a notification or `timeout`, and
    /// holds the lock again. `False` if `timeout` passed. Ctrl-C ends the wait (the lock is
    /// held again first).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = match deadline(true, timeout)? {
            Some(Some(d)) => Some(d.saturating_duration_since(std::time::Instant::now())),
            _ => None,
        };
        if self.inner.raw_lock().holder().is_none() {
            return Err(PyRuntimeError::new_err("cannot wait on un-acquired lock"));
        }
        let mut interrupted: Option<PyErr> = None;
        let r = py.detach(|| {
            self.inner
                .wait_held(timeout, || match Python::attach(|py| py.check_signals()) {
                    Ok(()) => false,
                    Err(e) => {
                        interrupted = Some(e);
                        true
                    }
                })
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        match r {
            Ok(notified) => Ok(notified),
            Err(LockError::OwnerDied(())) => {
                self.inner.raw_lock().make_consistent();
                Err(OwnerDied::new_err(
                    "the condition's lock was held by a process that died: the lock is now \
                     held by this thread",
                ))
            }
            Err(e) => Err(PyRuntimeError::new_err(e.to_string())),
        }
    }

    /// Wakes up to `n` waiters.
    #[pyo3(signature = (n=1))]
    fn notify(&self, n: usize) {
        for _ in 0..n {
            self.inner.notify_one();
        }
    }

    /// Wakes every waiter.
    fn notify_all(&self) {
        self.inner.notify_all()
    }
}

/// A barrier for a fixed number of parties.
#[pyclass(module = "mproc._native", frozen, name = "Barrier")]
pub struct NativeBarrier {
    inner: Barrier,
    name: String,
}
named!(NativeBarrier, Barrier, (parties: u32));

#[pymethods]
impl NativeBarrier {
    /// Waits for every party; returns this party's arrival index. Raises
    /// `threading.BrokenBarrierError` if the barrier is or becomes broken (a party's
    /// `timeout` passed, or `abort`).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<u32> {
        let wait = deadline(true, timeout)?;
        // Arrive once, then wait in slices, checking for signals between them: Ctrl-C
        // drops the arrival, which breaks the barrier (as an exception in
        // `threading.Barrier.wait` does), and so does a timeout.
        let mut arrival = self.inner.arrive_then();
        let r = waiting(py, wait, |slice| arrival.wait_timeout(slice))?;
        match r {
            Some(Ok(i)) => Ok(i),
            Some(Err(_)) | None => {
                arrival.give_up();
                let broken = py.import("threading")?.getattr("BrokenBarrierError")?;
                Err(PyErr::from_value(broken.call0()?))
            }
        }
    }

    /// Breaks the barrier: waiters and later `wait`s raise `BrokenBarrierError`.
    fn abort(&self) {
        self.inner.abort()
    }

    /// Makes a broken barrier usable again.
    fn reset(&self) {
        self.inner.reset()
    }

    /// How many parties it waits for.
    #[getter]
    fn parties(&self) -> u32 {
        self.inner.parties()
    }

    /// How many wait now.
    #[getter]
    fn n_waiting(&self) -> u32 {
        self.inner.n_waiting()
    }

    /// Whether it is broken.
    #[getter]
    fn broken(&self) -> bool {
        self.inner.is_broken()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeLock>()?;
    m.add_class::<NativeRLock>()?;
    m.add_class::<NativeSemaphore>()?;
    m.add_class::<NativeBoundedSemaphore>()?;
    m.add_class::<NativeEvent>()?;
    m.add_class::<NativeCondition>()?;
    m.add_class::<NativeBarrier>()?;
    Ok(())
}
