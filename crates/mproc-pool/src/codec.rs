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
        if let Err(e) = encode_outcome(&outcome, out) {
            let failed: Result<R, TaskError> = Err(TaskError::Encode {
                message: format!("result: {}", encode_message(e)),
            });
            // An error of plain strings always encodes.
            let _ = encode_into(&failed, out);
        }
    }
    panics
}

/// Postcard's tags of `Result`'s variants (a varint of the variant's index: one byte).
const OK_TAG: u8 = 0;
const ERR_TAG: u8 = 1;

/// Appends one outcome: exactly postcard's encoding of the `Result`, written as its tag and
/// then its payload (serde's `Result` impl cost the workers of a trivial `map` 7 %, and its
/// nested return values the decoding caller a quarter, in `perf`). On error `out` is left as
/// it was.
fn encode_outcome<R: Serialize>(
    outcome: &Result<R, TaskError>,
    out: &mut Vec<u8>,
) -> Result<(), TaskError> {
    let mark = out.len();
    let done = match outcome {
        Ok(r) => {
            out.push(OK_TAG);
            encode_into(r, out)
        }
        Err(e) => {
            out.push(ERR_TAG);
            encode_into(e, out)
        }
    };
    if done.is_err() {
        out.truncate(mark);
    }
    done
}

/// Reads one outcome written by [`encode_outcome`] (or postcard's own `Result`), returning
/// the bytes after it.
fn take_outcome<R: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(Result<R, TaskError>, &[u8]), String> {
    match bytes.split_first() {
        Some((&OK_TAG, rest)) => mproc_queue::codec::take_from_bytes::<R>(rest)
            .map(|(r, rest)| (Ok(r), rest))
            .map_err(|e| e.to_string()),
        Some((&ERR_TAG, rest)) => mproc_queue::codec::take_from_bytes::<TaskError>(rest)
            .map(|(e, rest)| (Err(e), rest))
            .map_err(|e| e.to_string()),
        Some((tag, _)) => Err(format!("not an outcome (tag {tag})")),
        None => Err("the results end early".into()),
    }
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
    (0..count).map(move |_| match take_outcome::<R>(rest) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcomes written tag first are byte for byte postcard's `Result`, so either side
    /// may be the older build of a rolling upgrade.
    #[test]
    fn outcomes_are_postcards_results() {
        let cases: [Result<Vec<u8>, TaskError>; 3] = [
            Ok(vec![1, 2, 3]),
            Ok(vec![7; 300]),
            Err(TaskError::Panicked {
                message: "boom".into(),
            }),
        ];
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for c in &cases {
            encode_outcome(c, &mut ours).unwrap();
            theirs.extend(postcard::to_allocvec(c).unwrap());
        }
        assert_eq!(ours, theirs);
        let back: Vec<_> = decode_outcomes::<Vec<u8>>(&theirs, 3).collect();
        assert_eq!(back, cases);
    }

    /// A body that ends early or holds a tag no `Result` has fails that item and every item
    /// after it with an `Encode` error (their boundaries are lost); the items before stand.
    #[test]
    fn a_malformed_outcome_fails_it_and_the_rest() {
        let mut body = Vec::new();
        encode_outcome::<u64>(&Ok(5), &mut body).unwrap();
        let good = body.len();
        body.push(9);
        let r: Vec<_> = decode_outcomes::<u64>(&body, 3).collect();
        assert_eq!(r[0], Ok(5));
        assert!(
            matches!(&r[1], Err(TaskError::Encode { message }) if message.contains("tag 9")),
            "{r:?}"
        );
        assert!(matches!(&r[2], Err(TaskError::Encode { .. })), "{r:?}");
        let r: Vec<_> = decode_outcomes::<u64>(&body[..good], 2).collect();
        assert_eq!(r[0], Ok(5));
        assert!(
            matches!(&r[1], Err(TaskError::Encode { message }) if message.contains("end early")),
            "{r:?}"
        );
    }
}
