//! Queues: a `ByteQueue` (messages of bytes, read and written in place through memoryviews)
//! and a `JoinableQueue` of bytes. The Python half frames and pickles the messages.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mproc_queue::{ByteQueue, GetError, JoinableQueue, Loan, PutError, QueueOptions, ReadLoan};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::{deadline, segment_error, waiting};

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

/// A message `get_obj` leaves to the Python half (`mproc._codec.decode`): its tag (-1 for a
/// message of no known tag, whose `body` is then all of it) and body.
#[pyclass(module = "mproc._native", frozen, name = "Tagged")]
pub struct Tagged {
    #[pyo3(get)]
    tag: i32,
    #[pyo3(get)]
    body: Py<PyAny>,
}

/// `pickle.loads`, looked up once.
static LOADS: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// The object of a message read in place: `bytes`/`bytearray` bodies and pickles here,
/// everything else as a [`Tagged`].
fn decode_fast(py: Python<'_>, msg: &[u8]) -> PyResult<Py<PyAny>> {
    match msg.split_first() {
        Some((b'B', body)) => Ok(PyBytes::new(py, body).into_any().unbind()),
        Some((b'A', body)) => Ok(PyByteArray::new(py, body).into_any().unbind()),
        Some((b'P', body)) => {
            let loads = LOADS.get_or_try_init(py, || {
                py.import("pickle")?.getattr("loads").map(Bound::unbind)
            })?;
            loads
                .bind(py)
                .call1((PyBytes::new(py, body),))
                .map(Bound::unbind)
        }
        _ => {
            let t = copy_out(py, msg, true);
            let (tag, body): (i32, Py<PyAny>) = t.extract(py)?;
            Ok(Py::new(py, Tagged { tag, body })?.into_any())
        }
    }
}

/// What a put that did not succeed ran into, as the Python exception (`None`: full or timed
/// out, which the Python half raises as `queue.Full`).
fn put_failed<T>(e: PutError<T>) -> Option<PyErr> {
    match e {
        PutError::Full(_) | PutError::Timeout(_) => None,
        PutError::Closed(_) => Some(Closed::new_err("queue is closed")),
        e @ PutError::OutOfSpace { .. } => Some(crate::no_space(e.to_string())),
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

impl NativeByteQueue {
    /// `put_bytes` of any bytes the caller keeps alive and unchanged while the GIL is
    /// released.
    fn put_bytes_inner(
        &self,
        py: Python<'_>,
        bytes: &[u8],
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
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
        // The caller keeps `bytes` alive and unchanged while the GIL is released.
        let r = waiting(py, wait, |slice| {
            settle(self.q.put_timeout(bytes, slice), put_failed)
        })?;
        r.transpose().map(|done| done.is_some())
    }
}

/// The largest message `put_tagged` frames on the stack.
const SMALL: usize = 256;

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
        self.put_bytes_inner(py, data.as_bytes(), block, timeout)
    }

    /// Puts the message `tag` + `data` (one copy, straight into the queue's memory: no
    /// joined `bytes` is made first). `False` if the queue stayed full.
    #[pyo3(signature = (tag, data, block=true, timeout=None))]
    fn put_tagged(
        &self,
        py: Python<'_>,
        tag: u8,
        data: &Bound<'_, PyBytes>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let body = data.as_bytes();
        let len = body.len() + 1;
        if len <= SMALL {
            // Small enough for the stack: framed there, put as one message.
            let mut buf = [0u8; SMALL];
            buf[0] = tag;
            buf[1..len].copy_from_slice(body);
            return self.put_bytes_inner(py, &buf[..len], block, timeout);
        }
        let write = |loan: &mut Loan<'_>| {
            loan[0] = tag;
            loan[1..].copy_from_slice(body);
        };
        // Most puts find room: no GIL round trip for them.
        let mut held = match self.q.try_loan(len) {
            Ok(mut loan) => {
                write(&mut loan);
                match loan.try_send() {
                    Ok(()) => return Ok(true),
                    Err(PutError::Full(l)) => Some(l),
                    Err(e) => return put_failed(e).map_or(Ok(false), Err),
                }
            }
            Err(e) => {
                if let Some(err) = put_failed(e) {
                    return Err(err);
                }
                None
            }
        };
        let wait = deadline(block, timeout)?;
        if wait.is_none() {
            return Ok(false);
        }
        // `body` is immutable and `data` keeps it alive while the GIL is released.
        let r = waiting(py, wait, |slice| {
            let loan = match held.take() {
                Some(l) => l,
                None => match self.q.loan_timeout(len, slice) {
                    Ok(mut l) => {
                        write(&mut l);
                        l
                    }
                    Err(e) => return put_failed(e).map(Err),
                },
            };
            send_step(loan, slice, &mut held)
        })?;
        r.transpose().map(|done| done.is_some())
    }

    /// Lends `len` bytes of the queue's memory to write a message in place: a [`NativeLoan`]
    /// (`None` if no room came before the deadline). Its `send` waits for a slot until the
    /// same deadline.
    #[pyo3(signature = (len, block=true, timeout=None))]
    fn loan(
        slf: &Bound<'_, Self>,
        len: usize,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Option<NativeLoan>> {
        let me = slf.get();
        let wait = deadline(block, timeout)?;
        let got = waiting(slf.py(), wait, |slice| {
            settle(me.q.loan_timeout(len, slice), put_failed)
        })?;
        let Some(loan) = got.transpose()? else {
            return Ok(None);
        };
        // SAFETY: the loan borrows `me.q`, which lives in the Python object `slf` (frozen:
        // never moved or mutated) that the `NativeLoan` keeps alive in `_queue`, a field
        // dropped after `loan`; the loan never leaves the `NativeLoan`.
        let loan = unsafe { std::mem::transmute::<Loan<'_>, Loan<'static>>(loan) };
        let mut loan = loan;
        Ok(Some(NativeLoan {
            address: loan.as_mut_ptr() as usize,
            len,
            until: wait.flatten(),
            block,
            loan: Mutex::new(Some(loan)),
            _queue: slf.clone().unbind(),
        }))
    }

    /// Takes a message to read in place: a [`NativeReadLoan`] (`None` if the queue stayed
    /// empty). The message's memory is held until the loan is released.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_loan(
        slf: &Bound<'_, Self>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Option<NativeReadLoan>> {
        let me = slf.get();
        let got = match me.q.try_get_loan() {
            Ok(loan) => Some(loan),
            Err(e) => {
                if let Some(err) = get_failed(e) {
                    return Err(err);
                }
                let wait = deadline(block, timeout)?;
                if wait.is_none() {
                    return Ok(None);
                }
                let got = waiting(slf.py(), wait, |slice| {
                    settle(me.q.get_loan_timeout(slice), get_failed)
                })?;
                got.transpose()?
            }
        };
        let Some(loan) = got else {
            return Ok(None);
        };
        // SAFETY: as in `loan`: the queue outlives the loan (`_queue`, dropped after it).
        let loan = unsafe { std::mem::transmute::<ReadLoan<'_>, ReadLoan<'static>>(loan) };
        Ok(Some(NativeReadLoan {
            address: loan.as_ptr() as usize,
            len: loan.len(),
            loan: Mutex::new(Some(loan)),
            _queue: slf.clone().unbind(),
        }))
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

    /// Takes a message of mproc's Python queues and returns its object: `bytes` and
    /// `bytearray` messages as they are, pickles unpickled; any other message as a
    /// [`Tagged`] for the Python half to decode. Raises `queue.Empty` if none came.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_obj(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let got = match self.q.try_get_loan() {
            Ok(loan) => Some(decode_fast(py, &loan)),
            Err(e) => {
                if let Some(err) = get_failed(e) {
                    return Err(err);
                }
                let wait = deadline(block, timeout)?;
                if wait.is_some() {
                    // The loan is copied out (with the GIL) before it is dropped.
                    let got = waiting(py, wait, |slice| {
                        settle(self.q.get_loan_timeout(slice), get_failed)
                            .map(|r| r.map(|loan| Python::attach(|py| decode_fast(py, &loan))))
                    })?;
                    got.transpose()?
                } else {
                    None
                }
            }
        };
        match got {
            Some(r) => r,
            None => Err(PyErr::from_type(
                py.import("queue")?.getattr("Empty")?.cast_into()?,
                (),
            )),
        }
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

/// One slice of a blocking loan send: done, an error, or nothing yet (the loan is back in
/// `held` for the next slice).
fn send_step<'q>(
    loan: Loan<'q>,
    slice: Duration,
    held: &mut Option<Loan<'q>>,
) -> Option<PyResult<()>> {
    match loan.send_timeout(slice) {
        Ok(()) => Some(Ok(())),
        Err(PutError::Full(l) | PutError::Timeout(l)) => {
            *held = Some(l);
            None
        }
        Err(e) => put_failed(e).map(Err),
    }
}

/// Locks a loan's cell (a panic while it was held leaves nothing half-done: take it anyway).
fn cell<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `len` bytes of a queue's memory lent to this process to write one message in place
/// (`ByteQueue.loan`). The Python half wraps `address` in a ctypes object whose memoryviews
/// it hands out, and calls `send` only once no view of it is left (`mproc._loans`).
/// Dropped unsent, its memory is freed.
#[pyclass(module = "mproc._native", frozen, name = "Loan")]
pub struct NativeLoan {
    address: usize,
    len: usize,
    /// The deadline of the `loan` call, which `send` keeps to.
    until: Option<Instant>,
    block: bool,
    loan: Mutex<Option<Loan<'static>>>,
    /// The queue the loan borrows: declared after `loan`, so dropped after it.
    _queue: Py<NativeByteQueue>,
}

#[pymethods]
impl NativeLoan {
    /// Where the lent bytes are, in this process.
    #[getter]
    fn address(&self) -> usize {
        self.address
    }

    /// How many bytes are lent.
    #[getter]
    fn len(&self) -> usize {
        self.len
    }

    /// Enqueues the message, waiting for a slot until the deadline of the `loan` call.
    /// `False` if none came (the loan is kept: `send` again, or `drop`); `ValueError` if the
    /// loan was already sent or dropped.
    fn send(&self, py: Python<'_>) -> PyResult<bool> {
        let mut held = cell(&self.loan).take();
        if held.is_none() {
            return Err(PyValueError::new_err(
                "the loan was already sent or dropped",
            ));
        }
        let wait = if self.block { Some(self.until) } else { None };
        let r = waiting(py, wait, |slice| send_step(held.take()?, slice, &mut held));
        // Not sent (no slot came, or Ctrl-C): the loan stays this handle's.
        *cell(&self.loan) = held;
        r?.transpose().map(|done| done.is_some())
    }

    /// Frees the lent memory unsent (nothing reaches the queue). Does nothing once sent.
    fn drop(&self) {
        drop(cell(&self.loan).take());
    }
}

/// A message held in the queue's memory for this process to read in place
/// (`ByteQueue.get_loan`), until `release` (or until the object is dropped).
#[pyclass(module = "mproc._native", frozen, name = "ReadLoan")]
pub struct NativeReadLoan {
    address: usize,
    len: usize,
    loan: Mutex<Option<ReadLoan<'static>>>,
    /// The queue the loan borrows: declared after `loan`, so dropped after it.
    _queue: Py<NativeByteQueue>,
}

#[pymethods]
impl NativeReadLoan {
    /// Where the message's bytes are, in this process.
    #[getter]
    fn address(&self) -> usize {
        self.address
    }

    /// The message's length.
    #[getter]
    fn len(&self) -> usize {
        self.len
    }

    /// Frees the message's memory (the queue may reuse it at once).
    fn release(&self) {
        drop(cell(&self.loan).take());
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
    #[pyo3(signature = (name, capacity, arena_bytes=None))]
    fn create(name: &str, capacity: usize, arena_bytes: Option<usize>) -> PyResult<Self> {
        let mut opts = QueueOptions::new().capacity(capacity.max(1));
        if let Some(b) = arena_bytes {
            opts = opts.arena_bytes(b);
        }
        let q = JoinableQueue::create_with(name, opts).map_err(segment_error)?;
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
    m.add_class::<NativeLoan>()?;
    m.add_class::<Tagged>()?;
    m.add_class::<NativeReadLoan>()?;
    m.add("Closed", m.py().get_type::<Closed>())?;
    Ok(())
}
