//! The chunk codec: how a batch of arguments and its batch of outcomes are laid out as
//! bytes. Both sides of every pool request and of a `Process` use it, and nothing else
//! encodes them.
//!
//! Encodings are postcard's, byte vectors copied in one piece (`mproc_queue::codec`).
//!
//! - **Arguments** ([`encode_args`]): `count` postcard encodings of `A` (or `(A, B)` for
//!   `starmap`), back to back, with no length prefixes (postcard encodings delimit
//!   themselves).
//! - **Outcomes** ([`run_chunk`] writes them, [`decode_outcomes`] reads them): one postcard
//!   encoding of `Result<R, TaskError>` per argument, back to back, in argument order. An
//!   argument that cannot be decoded fails it and the rest of its chunk (their boundaries
//!   are lost); a result that cannot be encoded becomes an `Encode` error in its place.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{SubmitError, TaskError};

/// Appends the encoding of `value` to `out` (postcard's, byte vectors in one copy: see
/// `mproc_queue::codec`); on error `out` is left as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), TaskError> {
    let mark = out.len();
    match mproc_queue::codec::encode_into(value, out) {
        Ok(_) => Ok(()),
        Err(e) => {
            out.truncate(mark);
            Err(TaskError::Encode {
                message: e.to_string(),
            })
        }
    }
}

/// Encodes a chunk of arguments back to back.
pub(crate) fn encode_args<T: Serialize>(items: &[T]) -> Result<Vec<u8>, SubmitError> {
    let mut args = Vec::new();
    for item in items {
        encode_into(item, &mut args).map_err(|e| SubmitError::Encode {
            message: encode_message(e),
        })?;
    }
    Ok(args)
}

/// `count` copies of the outcome `Err(error)`: a whole chunk failed (its reply could not be
/// sent, say). An error of plain strings always encodes.
pub(crate) fn failed_outcomes(error: &TaskError, count: u32) -> Vec<u8> {
    let failed: Result<(), &TaskError> = Err(error);
    let mut body = Vec::new();
    for _ in 0..count {
        let _ = encode_into(&failed, &mut body);
    }
    body
}

/// The shared body of every invoker: decodes each argument with `take`, calls `f`, and
/// appends the encoded outcome. An argument that cannot be decoded fails, and so do the rest
/// of the chunk (their boundaries are lost).
pub(crate) fn run_chunk<A: DeserializeOwned, R: Serialize>(
    input: &[u8],
    count: u32,
    out: &mut Vec<u8>,
    f: impl Fn(A) -> R,
) -> u32 {
    let mut rest = input;
    let mut panics = 0;
    for _ in 0..count {
        let outcome: Result<R, TaskError> = match mproc_queue::codec::take_from_bytes::<A>(rest) {
            Ok((a, tail)) => {
                rest = tail;
                catch_unwind(AssertUnwindSafe(|| f(a))).map_err(|p| {
                    panics += 1;
                    TaskError::Panicked {
                        message: panic_message(p.as_ref()),
                    }
                })
            }
            Err(e) => {
                rest = &[];
                Err(TaskError::Encode {
                    message: format!("argument: {e}"),
                })
            }
        };
        if let Err(e) = encode_into(&outcome, out) {
            let failed: Result<R, TaskError> = Err(TaskError::Encode {
                message: format!("result: {}", encode_message(e)),
            });
            // An error of plain strings always encodes.
            let _ = encode_into(&failed, out);
        }
    }
    panics
}

/// The message of an encoding error, without the variant's own prefix.
pub(crate) fn encode_message(e: TaskError) -> String {
    match e {
        TaskError::Encode { message } => message,
        other => other.to_string(),
    }
}

/// Reads `count` outcomes written by an invoker; a malformed body fails the remaining items.
pub(crate) fn decode_outcomes<R: DeserializeOwned>(
    body: &[u8],
    count: usize,
) -> impl Iterator<Item = Result<R, TaskError>> + '_ {
    let mut rest = body;
    (0..count).map(move |_| {
        match mproc_queue::codec::take_from_bytes::<Result<R, TaskError>>(rest) {
            Ok((outcome, tail)) => {
                rest = tail;
                outcome
            }
            Err(e) => {
                rest = &[];
                Err(TaskError::Encode {
                    message: format!("result: {e}"),
                })
            }
        }
    })
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
