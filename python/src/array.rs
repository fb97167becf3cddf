//! Shared arrays and values (mproc-array's `Array<T>` and `Value<T>`), typed by a
//! `multiprocessing` typecode. The Python half reads and writes them in place through ctypes
//! objects built on [`SharedArray::address`], which keep the handle (and so the mapping)
//! alive.

use mproc_array::{Array, AtomicValue, Value};
use mproc_sync::RawLock;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::sync::{acquire, release};
use crate::{OwnerDied, segment_error};

macro_rules! typecodes {
    ($($code:literal => $t:ty, $var:ident;)*) => {
        enum AnyArray {
            $($var(Array<$t>),)*
        }

        enum AnyValue {
            $($var(Value<$t>),)*
        }

        fn bad_code(code: &str) -> PyErr {
            PyValueError::new_err(format!(
                "bad typecode {code:?} (must be one of {})",
                [$($code),*].join(", ")
            ))
        }

        /// The size in bytes of one element of `code`.
        fn itemsize(code: &str) -> PyResult<usize> {
            match code {
                $($code => Ok(std::mem::size_of::<$t>()),)*
                _ => Err(bad_code(code)),
            }
        }

        impl AnyArray {
            fn make(code: &str, name: &str, len: Option<usize>) -> PyResult<AnyArray> {
                match code {
                    $($code => Ok(AnyArray::$var(match len {
                        Some(n) => Array::<$t>::create(name, n),
                        None => Array::<$t>::open(name),
                    }.map_err(segment_error)?)),)*
                    _ => Err(bad_code(code)),
                }
            }

            fn address(&self) -> usize {
                match self {
                    $(AnyArray::$var(a) => a.as_ptr() as usize,)*
                }
            }

            fn len(&self) -> usize {
                match self {
                    $(AnyArray::$var(a) => a.len(),)*
                }
            }

            fn raw_lock(&self) -> &RawLock {
                match self {
                    $(AnyArray::$var(a) => a.raw_lock(),)*
                }
            }
        }

        impl AnyValue {
            fn make(code: &str, name: &str, create: bool) -> PyResult<AnyValue> {
                match code {
                    $($code => Ok(AnyValue::$var(if create {
                        Value::<$t>::create(name, bytemuck::Zeroable::zeroed())
                    } else {
                        Value::<$t>::open(name)
                    }.map_err(segment_error)?)),)*
                    _ => Err(bad_code(code)),
                }
            }

            fn address(&self) -> usize {
                match self {
                    $(AnyValue::$var(v) => v.as_ptr() as usize,)*
                }
            }

            fn raw_lock(&self) -> &RawLock {
                match self {
                    $(AnyValue::$var(v) => v.raw_lock(),)*
                }
            }
        }
    };
}

typecodes! {
    "c" => u8, C;
    "b" => i8, I8;
    "B" => u8, U8;
    "h" => i16, I16;
    "H" => u16, U16;
    "i" => i32, I32;
    "I" => u32, U32;
    "l" => i64, L64;
    "L" => u64, UL64;
    "q" => i64, I64;
    "Q" => u64, U64;
    "f" => f32, F32;
    "d" => f64, F64;
}

/// A typed array in shared memory with a robust lock (a Rust process opens the same name as
/// `mproc_array::Array<T>`).
#[pyclass(module = "mproc._native", frozen, name = "SharedArray")]
pub struct SharedArray {
    inner: AnyArray,
    name: String,
    typecode: String,
}

#[pymethods]
impl SharedArray {
    /// Creates the named array of `len` zeroed elements.
    #[staticmethod]
    fn create(typecode: &str, name: &str, len: usize) -> PyResult<Self> {
        Ok(SharedArray {
            inner: AnyArray::make(typecode, name, Some(len))?,
            name: name.to_owned(),
            typecode: typecode.to_owned(),
        })
    }

    /// Opens the named array; its element type must be `typecode`'s.
    #[staticmethod]
    fn open(typecode: &str, name: &str) -> PyResult<Self> {
        Ok(SharedArray {
            inner: AnyArray::make(typecode, name, None)?,
            name: name.to_owned(),
            typecode: typecode.to_owned(),
        })
    }

    /// The number of elements.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Bytes per element.
    #[getter]
    fn itemsize(&self) -> PyResult<usize> {
        itemsize(&self.typecode)
    }
}

/// One typed value in shared memory with a robust lock (`mproc_array::Value<T>` in Rust).
#[pyclass(module = "mproc._native", frozen, name = "SharedValue")]
pub struct SharedValue {
    inner: AnyValue,
    name: String,
    typecode: String,
}

#[pymethods]
impl SharedValue {
    /// Creates the named value, zeroed.
    #[staticmethod]
    fn create(typecode: &str, name: &str) -> PyResult<Self> {
        Ok(SharedValue {
            inner: AnyValue::make(typecode, name, true)?,
            name: name.to_owned(),
            typecode: typecode.to_owned(),
        })
    }

    /// Opens the named value; its type must be `typecode`'s.
    #[staticmethod]
    fn open(typecode: &str, name: &str) -> PyResult<Self> {
        Ok(SharedValue {
            inner: AnyValue::make(typecode, name, false)?,
            name: name.to_owned(),
            typecode: typecode.to_owned(),
        })
    }
}

/// What arrays and values both have: their memory's address, typecode, name and lock.
macro_rules! shared {
    ($ty:ident) => {
        #[pymethods]
        impl $ty {
            /// Where the data starts in this process (valid while this handle lives).
            #[getter]
            fn address(&self) -> usize {
                self.inner.address()
            }

            /// The typecode.
            #[getter]
            fn typecode(&self) -> &str {
                &self.typecode
            }

            /// The name.
            #[getter]
            fn name(&self) -> &str {
                &self.name
            }

            /// Acquires the lock that guards the data.
            #[pyo3(signature = (block=true, timeout=None))]
            fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
                acquire(py, self.inner.raw_lock(), block, timeout)
            }

            /// Releases the lock.
            fn release(&self) -> PyResult<()> {
                release(self.inner.raw_lock())
            }
        }
    };
}
shared!(SharedArray);
shared!(SharedValue);

macro_rules! atomic_typecodes {
    ($($code:literal => $t:ty, $var:ident;)*) => {
        /// An `AtomicValue` of the integer type of a typecode.
        enum AnyAtomic {
            $($var(AtomicValue<$t>),)*
        }

        fn bad_atomic_code(code: &str) -> PyErr {
            PyValueError::new_err(format!(
                "bad typecode {code:?} for an atomic value (must be one of the integer \
                 typecodes {})",
                [$($code),*].join(", ")
            ))
        }

        fn out_of_range(v: i128, code: &str) -> PyErr {
            pyo3::exceptions::PyOverflowError::new_err(format!(
                "{v} does not fit typecode {code:?}"
            ))
        }

        impl AnyAtomic {
            fn make(code: &str, name: &str, init: Option<i128>) -> PyResult<AnyAtomic> {
                match code {
                    $($code => Ok(AnyAtomic::$var(match init {
                        Some(v) => {
                            let v = <$t>::try_from(v).map_err(|_| out_of_range(v, code))?;
                            AtomicValue::<$t>::create(name, v)
                        }
                        None => AtomicValue::<$t>::open(name),
                    }.map_err(segment_error)?)),)*
                    _ => Err(bad_atomic_code(code)),
                }
            }

            fn load(&self) -> i128 {
                match self {
                    $(AnyAtomic::$var(a) => i128::from(a.load()),)*
                }
            }

            /// Runs `op` on the value with `v` (and `w`) converted to its type.
            fn apply(&self, code: &str, v: i128, w: i128, op: Op) -> PyResult<(bool, i128)> {
                match self {
                    $(AnyAtomic::$var(a) => {
                        let conv = |x: i128| <$t>::try_from(x).map_err(|_| out_of_range(x, code));
                        let v = conv(v)?;
                        Ok(match op {
                            Op::Store => { a.store(v); (true, 0) }
                            Op::Swap => (true, i128::from(a.swap(v))),
                            Op::Add => (true, i128::from(a.fetch_add(v))),
                            Op::Sub => (true, i128::from(a.fetch_sub(v))),
                            Op::Cas => match a.compare_exchange(v, conv(w)?) {
                                Ok(old) => (true, i128::from(old)),
                                Err(old) => (false, i128::from(old)),
                            },
                        })
                    })*
                }
            }
        }
    };
}

/// What `SharedAtomic::apply` does.
#[derive(Clone, Copy)]
enum Op {
    Store,
    Swap,
    Add,
    Sub,
    Cas,
}

atomic_typecodes! {
    "b" => i8, I8;
    "B" => u8, U8;
    "h" => i16, I16;
    "H" => u16, U16;
    "i" => i32, I32;
    "I" => u32, U32;
    "l" => i64, L64;
    "L" => u64, UL64;
    "q" => i64, I64;
    "Q" => u64, U64;
}

/// One integer in shared memory, every access atomic and without a lock (mproc-array's
/// `AtomicValue<T>`; a Rust process opens the same name).
#[pyclass(module = "mproc._native", frozen, name = "SharedAtomic")]
pub struct SharedAtomic {
    inner: AnyAtomic,
    name: String,
    typecode: String,
}

#[pymethods]
impl SharedAtomic {
    /// Creates the named atomic value holding `value`.
    #[staticmethod]
    fn create(typecode: &str, name: &str, value: i128) -> PyResult<Self> {
        Ok(SharedAtomic {
            inner: AnyAtomic::make(typecode, name, Some(value))?,
            name: name.to_owned(),
            typecode: typecode.to_owned(),
        })
    }

    /// Opens the named atomic value; its type must be `typecode`'s.
    #[staticmethod]
    fn open(typecode: &str, name: &str) -> PyResult<Self> {
        Ok(SharedAtomic {
            inner: AnyAtomic::make(typecode, name, None)?,
            name: name.to_owned(),
            typecode: typecode.to_owned(),
        })
    }

    /// The typecode.
    #[getter]
    fn typecode(&self) -> &str {
        &self.typecode
    }

    /// The name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The value now.
    fn load(&self) -> i128 {
        self.inner.load()
    }

    /// Sets the value.
    fn store(&self, v: i128) -> PyResult<()> {
        self.inner
            .apply(&self.typecode, v, 0, Op::Store)
            .map(|_| ())
    }

    /// Sets the value; returns the one before.
    fn swap(&self, v: i128) -> PyResult<i128> {
        Ok(self.inner.apply(&self.typecode, v, 0, Op::Swap)?.1)
    }

    /// Adds `v` (wrapping around at the type's bounds); returns the value before.
    fn fetch_add(&self, v: i128) -> PyResult<i128> {
        Ok(self.inner.apply(&self.typecode, v, 0, Op::Add)?.1)
    }

    /// Subtracts `v` (wrapping around); returns the value before.
    fn fetch_sub(&self, v: i128) -> PyResult<i128> {
        Ok(self.inner.apply(&self.typecode, v, 0, Op::Sub)?.1)
    }

    /// Sets `new` if the value is `current`: `(whether it did, the value before)`.
    fn compare_exchange(&self, current: i128, new: i128) -> PyResult<(bool, i128)> {
        self.inner.apply(&self.typecode, current, new, Op::Cas)
    }
}

/// The handle whose lock a [`GuardLock`] is.
enum Guarded {
    Array(Py<SharedArray>),
    Value(Py<SharedValue>),
}

thread_local! {
    /// This thread's number in this process (never 0), for re-entrancy.
    static THREAD: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

fn this_thread() -> u64 {
    THREAD.with(|t| *t)
}

/// The lock of an `Array` or `Value` (`get_lock()`): re-entrant within a thread, like
/// multiprocessing's default `RLock`, so `with v.get_lock(): v.value += 1` works (the
/// accesses take it again). Every method is native: the lock's cost is mostly the call.
#[pyclass(module = "mproc._native", frozen, name = "GuardLock")]
pub struct GuardLock {
    handle: Guarded,
    /// The thread of this process that holds it (0: none), and how many times.
    owner: AtomicU64,
    depth: AtomicU64,
}

impl GuardLock {
    fn raw(&self) -> &RawLock {
        match &self.handle {
            Guarded::Array(a) => a.get().inner.raw_lock(),
            Guarded::Value(v) => v.get().inner.raw_lock(),
        }
    }

    /// Acquires (re-entrantly); `Ok(false)` if it stayed held. After `OwnerDied` the caller
    /// holds it.
    fn take(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let me = this_thread();
        if self.owner.load(Ordering::Relaxed) == me {
            self.depth.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let r = acquire(py, self.raw(), block, timeout);
        if matches!(r, Ok(true)) || r.as_ref().is_err_and(|e| e.is_instance_of::<OwnerDied>(py)) {
            self.owner.store(me, Ordering::Relaxed);
            self.depth.store(1, Ordering::Relaxed);
        }
        r
    }

    /// `take` for a `with` block or one access: after `OwnerDied`, lets go before raising
    /// (the block never runs, so it would never release).
    fn enter(&self, py: Python<'_>) -> PyResult<()> {
        match self.take(py, true, None) {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.is_instance_of::<OwnerDied>(py) {
                    self.give()?;
                }
                Err(e)
            }
        }
    }

    fn give(&self) -> PyResult<()> {
        if self.owner.load(Ordering::Relaxed) != this_thread() {
            return Err(PyRuntimeError::new_err("cannot release un-acquired lock"));
        }
        if self.depth.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.owner.store(0, Ordering::Relaxed);
            release(self.raw())?;
        }
        Ok(())
    }

    /// Runs `f` holding the lock.
    fn locked<R>(&self, py: Python<'_>, f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
        self.enter(py)?;
        let r = f();
        self.give()?;
        r
    }
}

#[pymethods]
impl GuardLock {
    /// The lock of array handle `h`.
    #[staticmethod]
    fn of_array(h: Py<SharedArray>) -> Self {
        GuardLock {
            handle: Guarded::Array(h),
            owner: AtomicU64::new(0),
            depth: AtomicU64::new(0),
        }
    }

    /// The lock of value handle `h`.
    #[staticmethod]
    fn of_value(h: Py<SharedValue>) -> Self {
        GuardLock {
            handle: Guarded::Value(h),
            owner: AtomicU64::new(0),
            depth: AtomicU64::new(0),
        }
    }

    /// Acquires; `False` if it could not (`block=False`, or `timeout` passed). Raises
    /// `OwnerDied` once if the previous holder died holding it (the caller then holds it).
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        self.take(py, block, timeout)
    }

    /// Releases one level (from the thread that acquired it).
    fn release(&self) -> PyResult<()> {
        self.give()
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.enter(py).map(|()| true)
    }

    fn __exit__(
        &self,
        _ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.give().map(|()| false)
    }

    /// `obj.<name>` read under the lock (a `Value`'s `value`).
    fn get_attr(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        name: &Bound<'_, PyString>,
    ) -> PyResult<Py<PyAny>> {
        self.locked(py, || obj.getattr(name).map(Bound::unbind))
    }

    /// `obj.<name> = value` under the lock.
    fn set_attr(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        name: &Bound<'_, PyString>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.locked(py, || obj.setattr(name, value))
    }

    /// `obj[key]` read under the lock (an `Array`'s items).
    fn get_item(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.locked(py, || obj.get_item(key).map(Bound::unbind))
    }

    /// `obj[key] = value` under the lock.
    fn set_item(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.locked(py, || obj.set_item(key, value))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GuardLock>()?;
    m.add_class::<SharedArray>()?;
    m.add_class::<SharedValue>()?;
    m.add_class::<SharedAtomic>()?;
    Ok(())
}
