//! Functions as data. A task names its function by the function's offset from a base symbol
//! of this binary (how `procspawn` does it). Offsets survive `fork` trivially and `exec` of
//! the same binary because the loader moves the whole image by one constant; so the fork and
//! spawn start methods share one task encoding.
//!
//! Each task carries two offsets: the user's `fn(A) -> R` and a monomorphised *invoker*
//! (`invoke::<A, R>`) that knows how to decode `A`, call the function, catch a panic and
//! encode `R`. Both come from one generic instantiation in [`FnRef::new`], which is what makes
//! calling through them sound.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::run_chunk;

/// Runs the function at `func` over `count` arguments encoded back to back in `input`,
/// appending one encoded `Result<R, TaskError>` per argument to `out`; returns how many of the
/// calls panicked.
type Invoker = fn(usize, &[u8], u32, &mut Vec<u8>) -> u32;

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

    /// Calls the function on each of `count` arguments encoded back to back in `input`
    /// (see [`encode_into`](crate::codec::encode_into)); appends one encoded `Result<R, TaskError>` per argument to `out`
    /// and returns how many calls panicked.
    ///
    /// # Safety
    /// `self` must come from [`FnRef::new`] or [`FnRef::pair`] in a process running this same
    /// binary (checked for spawned children with [`layout_check`]). Pool workers receive
    /// `FnRef`s only through their own anonymous queues, which only the pool's processes can
    /// reach.
    pub(crate) unsafe fn call(&self, input: &[u8], count: u32, out: &mut Vec<u8>) -> u32 {
        let addr = address(self.invoker);
        // SAFETY: by the caller's contract `addr` is the address of an `Invoker` of this
        // binary (an `invoke::<A, R>` instantiation), relocated to this process's load address.
        let invoker: Invoker = unsafe { std::mem::transmute::<*const (), Invoker>(addr as _) };
        invoker(address(self.func), input, count, out)
    }
}

fn invoke<A: DeserializeOwned, R: Serialize>(
    func: usize,
    input: &[u8],
    count: u32,
    out: &mut Vec<u8>,
) -> u32 {
    // SAFETY: `FnRef::new::<A, R>` paired this invoker with the address of an `fn(A) -> R`
    // (see `FnRef::call`'s contract), so `func` is such a function in this process.
    let f = unsafe { std::mem::transmute::<*const (), fn(A) -> R>(func as _) };
    run_chunk(input, count, out, f)
}

fn invoke_pair<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    func: usize,
    input: &[u8],
    count: u32,
    out: &mut Vec<u8>,
) -> u32 {
    // SAFETY: `FnRef::pair::<A, B, R>` paired this invoker with the address of an
    // `fn(A, B) -> R`, so `func` is such a function in this process.
    let f = unsafe { std::mem::transmute::<*const (), fn(A, B) -> R>(func as _) };
    run_chunk(input, count, out, |(a, b): (A, B)| f(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskError;
    use crate::codec::{decode_outcomes, encode_into};

    fn run(f: FnRef, args: &[u32]) -> Vec<Result<u32, TaskError>> {
        let mut input = Vec::new();
        for a in args {
            encode_into(a, &mut input).unwrap();
        }
        let mut out = Vec::new();
        // SAFETY: made by FnRef::new in this process.
        unsafe { f.call(&input, args.len() as u32, &mut out) };
        decode_outcomes(&out, args.len()).collect()
    }

    #[test]
    fn a_function_round_trips_through_its_offsets() {
        let f = FnRef::new(|x: u32| x * x);
        let bytes = postcard::to_allocvec(&f).unwrap();
        let f: FnRef = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(run(f, &[7, 8]), [Ok(49), Ok(64)]);
    }

    #[test]
    fn panics_and_bad_arguments_become_task_errors() {
        let f = FnRef::new(|x: u32| -> u32 {
            if x == 0 {
                panic!("zero is not allowed");
            }
            x
        });
        assert_eq!(
            run(f, &[1, 0, 2]),
            [
                Ok(1),
                Err(TaskError::Panicked {
                    message: "zero is not allowed".into()
                }),
                Ok(2)
            ]
        );
        // An empty buffer holds no u32: every item of the chunk fails.
        let mut out = Vec::new();
        // SAFETY: as above.
        unsafe { f.call(&[], 2, &mut out) };
        let r: Vec<Result<u32, TaskError>> = decode_outcomes(&out, 2).collect();
        assert!(
            r.iter().all(|o| matches!(o, Err(TaskError::Encode { .. }))),
            "{r:?}"
        );
    }
}
