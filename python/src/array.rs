//! Shared arrays and values (mproc-array's `Array<T>` and `Value<T>`), typed by a
//! `multiprocessing` typecode. The Python half reads and writes them in place through ctypes
//! objects built on [`SharedArray::address`], which keep the handle (and so the mapping)
//! alive.

use mproc_array::{Array, Value};
use mproc_sync::RawLock;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::segment_error;
use crate::sync::{acquire, release};

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

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SharedArray>()?;
    m.add_class::<SharedValue>()?;
    Ok(())
}
