//! Functions as data. A task names its function by the function's offset from a base symbol
//! of this binary (how `procspawn` does it). Offsets survive `fork` trivially and `exec` of
//! the same binary because the loader moves the whole image by one constant; so the fork and
//! spawn start methods share one task encoding.
//!
//! Each task carries two offsets: the user's `fn(A) -> R` and a monomorphised *invoker*
//! (`invoke::<A, R>`) that knows how to decode `A`, call the function, catch a panic and
//! encode `R`. Both come from one generic instantiation in [`FnRef::new`], which is what makes
//! calling through them sound.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::TaskError;

/// Calls the function at `func` on the encoded argument; returns the encoded result.
type Invoker = fn(usize, &[u8]) -> Result<Vec<u8>, TaskError>;

/// The anchor every offset is measured from. Never called; only its address matters.
#[inline(never)]
fn base_symbol() {}

/// A second anchor: its offset from [`base_symbol`] identifies the binary's layout, so a
/// child that is not the same binary (it was rebuilt between start and exec) is refused
/// instead of jumping to a wrong address.
#[inline(never)]
fn check_symbol() {}

fn base() -> usize {
    base_symbol as fn() as usize
}

/// The layout fingerprint of this binary (see [`check_symbol`]).
pub(crate) fn layout_check() -> i64 {
    (check_symbol as fn() as usize).wrapping_sub(base()) as i64
}

/// A function of this binary, as offsets that mean the same in every process running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FnRef {
    invoker: i64,
    func: i64,
}

fn offset(addr: usize) -> i64 {
    addr.wrapping_sub(base()) as i64
}

fn address(offset: i64) -> usize {
    base().wrapping_add(offset as usize)
}

impl FnRef {
    /// `f`, callable with an encoded `A`.
    pub(crate) fn new<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> FnRef {
        let invoker: Invoker = invoke::<A, R>;
        FnRef {
            invoker: offset(invoker as usize),
            func: offset(f as usize),
        }
    }

    /// `f`, callable with an encoded `(A, B)` (for `starmap`).
    pub(crate) fn pair<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
        f: fn(A, B) -> R,
    ) -> FnRef {
        let invoker: Invoker = invoke_pair::<A, B, R>;
        FnRef {
            invoker: offset(invoker as usize),
            func: offset(f as usize),
        }
    }

    /// Calls the function on an encoded argument.
    ///
    /// # Safety
    /// `self` must come from [`FnRef::new`] or [`FnRef::pair`] in a process running this same
    /// binary (checked for spawned children with [`layout_check`]). Pool workers receive
    /// `FnRef`s only through their own anonymous queues, which only the pool's processes can
    /// reach.
    pub(crate) unsafe fn call(&self, arg: &[u8]) -> Result<Vec<u8>, TaskError> {
        let addr = address(self.invoker);
        // SAFETY: by the caller's contract `addr` is the address of an `Invoker` of this
        // binary (an `invoke::<A, R>` instantiation), relocated to this process's load address.
        let invoker: Invoker = unsafe { std::mem::transmute::<*const (), Invoker>(addr as _) };
        invoker(address(self.func), arg)
    }
}

/// Turns a panic payload into its message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

fn decode<A: DeserializeOwned>(arg: &[u8]) -> Result<A, TaskError> {
    postcard::from_bytes(arg).map_err(|e| TaskError::Encode {
        message: format!("argument: {e}"),
    })
}

fn run<R: Serialize>(f: impl FnOnce() -> R) -> Result<Vec<u8>, TaskError> {
    let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| TaskError::Panicked {
        message: panic_message(p.as_ref()),
    })?;
    postcard::to_allocvec(&r).map_err(|e| TaskError::Encode {
        message: format!("result: {e}"),
    })
}

fn invoke<A: DeserializeOwned, R: Serialize>(
    func: usize,
    arg: &[u8],
) -> Result<Vec<u8>, TaskError> {
    // SAFETY: `FnRef::new::<A, R>` paired this invoker with the address of an `fn(A) -> R`
    // (see `FnRef::call`'s contract), so `func` is such a function in this process.
    let f = unsafe { std::mem::transmute::<*const (), fn(A) -> R>(func as _) };
    let a: A = decode(arg)?;
    run(move || f(a))
}

fn invoke_pair<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    func: usize,
    arg: &[u8],
) -> Result<Vec<u8>, TaskError> {
    // SAFETY: `FnRef::pair::<A, B, R>` paired this invoker with the address of an
    // `fn(A, B) -> R`, so `func` is such a function in this process.
    let f = unsafe { std::mem::transmute::<*const (), fn(A, B) -> R>(func as _) };
    let (a, b): (A, B) = decode(arg)?;
    run(move || f(a, b))
}

/// Encodes a task argument.
pub(crate) fn encode<A: Serialize>(arg: &A) -> Result<Vec<u8>, TaskError> {
    postcard::to_allocvec(arg).map_err(|e| TaskError::Encode {
        message: format!("argument: {e}"),
    })
}

/// Decodes a task result.
pub(crate) fn decode_result<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, TaskError> {
    postcard::from_bytes(bytes).map_err(|e| TaskError::Encode {
        message: format!("result: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn a_function_round_trips_through_its_offsets() {
        let f = FnRef::new(square);
        let bytes = postcard::to_allocvec(&f).unwrap();
        let f: FnRef = postcard::from_bytes(&bytes).unwrap();
        // SAFETY: made by FnRef::new in this process.
        let out = unsafe { f.call(&encode(&7u64).unwrap()) }.unwrap();
        assert_eq!(decode_result::<u64>(&out).unwrap(), 49);
    }

    #[test]
    fn panics_and_bad_arguments_become_task_errors() {
        let f = FnRef::new(|x: u32| -> u32 {
            if x == 0 {
                panic!("zero is not allowed");
            }
            x
        });
        // SAFETY: made by FnRef::new in this process.
        let r = unsafe { f.call(&encode(&0u32).unwrap()) };
        assert_eq!(
            r,
            Err(TaskError::Panicked {
                message: "zero is not allowed".into()
            })
        );
        // An empty buffer is not a valid u32.
        // SAFETY: as above.
        let r = unsafe { f.call(&[]) };
        assert!(matches!(r, Err(TaskError::Encode { .. })), "{r:?}");
    }
}
