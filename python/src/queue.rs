//! Queues: a `ByteQueue` (messages of bytes, read and written in place through memoryviews)
//! and a `JoinableQueue` of bytes. The Python half frames and pickles the messages.

use std::time::Duration;

use mproc_queue::{ByteQueue, GetError, JoinableQueue, PutError, QueueOptions};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::{deadline, segment_error, view, waiting};

create_exception!(
    _native,
    Closed,
    PyValueError,
    "The queue was closed for every user (a Rust peer's `close`, or `ByteQueue.close`): \
     `put` fails, and `get` fails once what was left is drained."
);

/// The tags whose body is handed over as a (writable) `bytearray`: `A` (a `bytearray`) and
/// `O` (a pickle with out-of-band buffers, which become writable views of it).
const BYTEARRAY_TAGS: [u8; 2] = [b'A', b'O'];
/// The tags mproc's Python queues write (`mproc._codec`); `C` is also a Rust `CborQueue`'s.
const TAGS: [u8; 5] = [b'B', b'A', b'P', b'O', b'C'];

/// A message copied into a new Python object (see `ByteQueue.get`).
fn copy_out(py: Python<'_>, msg: &[u8], tagged: bool) -> Py<PyAny> {
    if !tagged {
        return PyBytes::new(py, msg).into_any().unbind();
    }
    match msg.split_first() {
        Some((&tag, body)) if TAGS.contains(&tag) => {
            let body = if BYTEARRAY_TAGS.contains(&tag) {
                PyByteArray::new(py, body).into_any()
            } else {
                PyBytes::new(py, body).into_any()
            };
            (tag, body)
                .into_pyobject(py)
                .map_or_else(|_| py.None(), |t| t.into_any().unbind())
        }
        _ => (-1i32, PyBytes::new(py, msg))
            .into_pyobject(py)
            .map_or_else(|_| py.None(), |t| t.into_any().unbind()),
    }
}

/// What a put that did not succeed ran into, as the Python exception (`None`: full or timed
/// out, which the Python half raises as `queue.Full`).
fn put_failed<T>(e: PutError<T>) -> Option<PyErr> {
    match e {
        PutError::Full(_) | PutError::Timeout(_) => None,
        PutError::Closed(_) => Some(Closed::new_err("queue is closed")),
        other => Some(PyValueError::new_err(other.to_string())),
    }
}

/// What a get that did not succeed ran into (`None`: empty or timed out: `queue.Empty`).
fn get_failed(e: GetError) -> Option<PyErr> {
    match e {
        GetError::Empty | GetError::Timeout => None,
        GetError::Closed => Some(Closed::new_err("queue is closed and drained")),
        other => Some(PyRuntimeError::new_err(other.to_string())),
    }
}

/// A slice-long step's outcome: done, an error, or nothing yet (try again).
fn settle<R, E>(r: Result<R, E>, failed: impl Fn(E) -> Option<PyErr>) -> Option<PyResult<R>> {
    match r {
        Ok(v) => Some(Ok(v)),
        Err(e) => failed(e).map(Err),
    }
}

/// A queue of byte messages in shared memory (mproc's `ByteQueue`): what `mproc.Queue`,
/// `SimpleQueue` and `ByteQueue` are made of. A Rust process opens the same name as a
/// `mproc_queue::ByteQueue`.
#[pyclass(module = "mproc._native", frozen, name = "ByteQueue")]
pub struct NativeByteQueue {
    q: ByteQueue,
    name: String,
}

#[pymethods]
impl NativeByteQueue {
    /// Creates the named queue (a stale one of a dead creator is reclaimed).
    #[staticmethod]
    #[pyo3(signature = (name, capacity, arena_bytes=None))]
    fn create(name: &str, capacity: usize, arena_bytes: Option<usize>) -> PyResult<Self> {
        let mut opts = QueueOptions::new().capacity(capacity.max(1));
        if let Some(b) = arena_bytes {
            opts = opts.arena_bytes(b);
        }
        let q = opts.create_bytes(name).map_err(segment_error)?;
        Ok(NativeByteQueue {
            q,
            name: name.to_owned(),
        })
    }

    /// Opens the named queue.
    #[staticmethod]
    fn open(name: &str) -> PyResult<Self> {
        let q = ByteQueue::open(name).map_err(segment_error)?;
        Ok(NativeByteQueue {
            q,
            name: name.to_owned(),
        })
    }

    /// Puts `data` (one copy). `False` if the queue stayed full (`block`, `timeout`).
    #[pyo3(signature = (data, block=true, timeout=None))]
    fn put_bytes(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let bytes = data.as_bytes();
        // Most puts find room: no GIL round trip for them.
        match self.q.try_put(bytes) {
            Ok(()) => return Ok(true),
            Err(e) => {
                if let Some(err) = put_failed(e) {
                    return Err(err);
                }
            }
        }
        let wait = deadline(block, timeout)?;
        if wait.is_none() {
            return Ok(false);
        }
        // `bytes` is immutable and `data` keeps it alive while the GIL is released.
        let r = waiting(py, wait, |slice| {
            settle(self.q.put_timeout(bytes, slice), put_failed)
        })?;
        r.transpose().map(|done| done.is_some())
    }

    /// Puts a message of `len` bytes written in place: `fill(view)` gets a writable
    /// memoryview of the message's memory, writes all of it and releases every view it made.
    /// `False` if the queue stayed full.
    #[pyo3(signature = (len, fill, block=true, timeout=None))]
    fn put_with(
        slf: &Bound<'_, Self>,
        len: usize,
        fill: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        let wait = deadline(block, timeout)?;
        let (owner, fill) = (slf.clone().unbind(), fill.clone().unbind());
        // A loan borrows the queue: it is taken and sent in one GIL-free closure, which takes
        // the GIL back to let Python fill it.
        let r = waiting(py, wait, |slice| {
            let loan = match me.q.loan_timeout(len, slice) {
                Ok(l) => l,
                Err(e) => return put_failed(e).map(Err),
            };
            let mut loan = loan;
            let filled = Python::attach(|py| -> PyResult<()> {
                // SAFETY: the loan's bytes are this process's alone until it is sent or
                // dropped, which happens below, after the view was released — or never, if
                // it was not (the handle is then kept alive for good).
                let v = unsafe { view::over(py, loan.as_mut_ptr(), loan.len(), true)? };
                let called = fill.bind(py).call1((&v,));
                match view::release(&v) {
                    Ok(()) => called.map(drop),
                    Err(e) => {
                        // Keep the mapping for the escaped view: leak a reference to the
                        // handle that owns it.
                        std::mem::forget(owner.clone_ref(py));
                        Err(e)
                    }
                }
            });
            if let Err(e) = filled {
                // Dropped unsent: nothing reaches the queue.
                return Some(Err(e));
            }
            let mut loan = Some(loan);
            loop {
                match loan.take()?.send_timeout(crate::SLICE) {
                    Ok(()) => return Some(Ok(())),
                    Err(PutError::Full(l) | PutError::Timeout(l)) => loan = Some(l),
                    Err(e) => return put_failed(e).map(Err),
                }
            }
        })?;
        r.transpose().map(|done| done.is_some())
    }

    /// Takes a message, copied once into a new Python object: `None` if the queue stayed
    /// empty. Untagged (`tagged=False`): `bytes`. Tagged (mproc's Python queues, see
    /// `mproc._codec`): `(tag, body)`, `body` a `bytearray` for the tags of `bytearray`
    /// and of pickles with out-of-band buffers (which become writable), `bytes` otherwise;
    /// `(-1, bytes)` holds a whole message of no known tag.
    #[pyo3(signature = (tagged, block=true, timeout=None))]
    fn get(
        &self,
        py: Python<'_>,
        tagged: bool,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let read = |loan: mproc_queue::ReadLoan<'_>| -> Py<PyAny> {
            Python::attach(|py| copy_out(py, &loan, tagged))
        };
        // Most gets find a message: no GIL round trip for them.
        match self.q.try_get_loan() {
            Ok(loan) => return Ok(Some(copy_out(py, &loan, tagged))),
            Err(e) => {
                if let Some(err) = get_failed(e) {
                    return Err(err);
                }
            }
        }
        let wait = deadline(block, timeout)?;
        if wait.is_none() {
            return Ok(None);
        }
        let got = waiting(py, wait, |slice| {
            settle(self.q.get_loan_timeout(slice), get_failed).map(|r| r.map(read))
        })?;
        got.transpose()
    }

    /// Closes the queue for every user (Rust's `close`).
    fn close(&self) {
        self.q.close()
    }

    /// Whether the queue was closed for every user.
    #[getter]
    fn closed(&self) -> bool {
        self.q.is_closed()
    }
}

/// A joinable queue of byte messages (mproc's `JoinableQueue<Vec<u8>>`), the base of
/// `mproc.JoinableQueue`.
#[pyclass(module = "mproc._native", frozen, name = "JoinableQueue")]
pub struct NativeJoinable {
    q: JoinableQueue<Vec<u8>>,
    name: String,
}

#[pymethods]
impl NativeJoinable {
    /// Creates the named joinable queue.
    #[staticmethod]
    fn create(name: &str, capacity: usize) -> PyResult<Self> {
        let q = JoinableQueue::create(name, capacity.max(1)).map_err(segment_error)?;
        Ok(NativeJoinable {
            q,
            name: name.to_owned(),
        })
    }

    /// Opens the named joinable queue.
    #[staticmethod]
    fn open(name: &str) -> PyResult<Self> {
        let q = JoinableQueue::open(name).map_err(segment_error)?;
        Ok(NativeJoinable {
            q,
            name: name.to_owned(),
        })
    }

    /// Puts `data`; `False` if the queue stayed full.
    #[pyo3(signature = (data, block=true, timeout=None))]
    fn put_bytes(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let mut msg = Some(data.as_bytes().to_vec());
        let wait = deadline(block, timeout)?;
        let r = waiting(py, wait, |slice| {
            let m = msg.take()?;
            match self.q.put_timeout(m, slice.max(Duration::from_nanos(1))) {
                Ok(()) => Some(Ok(())),
                Err(PutError::Full(m) | PutError::Timeout(m)) => {
                    msg = Some(m);
                    None
                }
                Err(e) => put_failed(e).map(Err),
            }
        })?;
        r.transpose().map(|done| done.is_some())
    }

    /// Takes a message: `bytes`, or `None` if the queue stayed empty.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_bytes<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let wait = deadline(block, timeout)?;
        let got = waiting(py, wait, |slice| {
            let r = if slice.is_zero() {
                self.q.try_get()
            } else {
                self.q.get_timeout(slice)
            };
            settle(r, get_failed)
        })?;
        Ok(got.transpose()?.map(|v| PyBytes::new(py, &v)))
    }

    /// Reports one taken message processed; `ValueError` if called more often than
    /// messages were taken.
    fn task_done(&self) -> PyResult<()> {
        self.q
            .task_done()
            .map_err(|_| PyValueError::new_err("task_done() called too many times"))
    }

    /// Waits until every message put was reported done; `False` if `timeout` passed first.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let wait = deadline(true, timeout)?;
        let done = waiting(py, wait, |slice| self.q.join_timeout(slice).then_some(()))?;
        Ok(done.is_some())
    }

    /// Messages put and not yet reported done.
    fn unfinished_tasks(&self) -> u64 {
        self.q.unfinished_tasks()
    }

    /// Closes the queue for every user.
    fn close(&self) {
        self.q.close()
    }
}

/// The state accessors both queue classes have.
macro_rules! sizes {
    ($ty:ident) => {
        #[pymethods]
        impl $ty {
            /// The queue's name.
            #[getter]
            fn name(&self) -> &str {
                &self.name
            }

            /// Messages waiting now.
            fn qsize(&self) -> usize {
                self.q.len()
            }

            /// Whether no message waits now.
            fn empty(&self) -> bool {
                self.q.is_empty()
            }

            /// Whether every slot is taken now.
            fn full(&self) -> bool {
                self.q.is_full()
            }

            /// The number of slots.
            #[getter]
            fn capacity(&self) -> usize {
                self.q.capacity()
            }
        }
    };
}
sizes!(NativeByteQueue);
sizes!(NativeJoinable);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeByteQueue>()?;
    m.add_class::<NativeJoinable>()?;
    m.add("Closed", m.py().get_type::<Closed>())?;
    Ok(())
}
