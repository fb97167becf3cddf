//! The encoding a [`Queue`](crate::Queue) (and a pool's tasks and results) use: postcard's
//! bytes, with every byte vector copied in one piece.
//!
//! serde hands a `Vec<u8>` or `[u8]` to a serializer as a sequence of `u8`s, one call per
//! byte, and builds one back the same way, so through plain postcard a 64 KiB payload moved
//! at a few percent of memory speed. Here the serializer sends each such run as a byte string
//! and the deserializer reads one back in a single copy — a `Vec<u8>` field of a struct, an
//! enum's payload, an element of a `Vec<Vec<u8>>`, an `Option<Vec<u8>>` alike, with nothing
//! to annotate. postcard writes a byte string and a sequence of `u8` identically (a varint
//! length, then the bytes), so the bytes are exactly postcard's: either side may use plain
//! `postcard` and the other this module.
//!
//! `String` and `&str` were already copied in one piece, as are `serde_bytes` fields and
//! `bytes::Bytes` (which serialise as byte strings themselves).
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Frame {
//!     id: u64,
//!     pixels: Vec<u8>,
//! }
//! let frame = Frame { id: 7, pixels: vec![1; 4096] };
//! let mut bytes = Vec::new();
//! mproc_queue::codec::encode_into(&frame, &mut bytes)?;
//! assert_eq!(bytes, postcard::to_allocvec(&frame)?); // postcard's bytes
//! let back: Frame = mproc_queue::codec::decode(&bytes)?;
//! assert_eq!(back, frame);
//! # Ok::<(), postcard::Error>(())
//! ```

mod de;
mod ser;
mod small;

use serde::{Deserialize, Serialize};

use de::De;
use ser::Ser;

pub use postcard::Error;

/// postcard's output appended to a `Vec` (byte strings with one `extend_from_slice`).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline]
    fn try_push(&mut self, data: u8) -> Result<(), Error> {
        self.0.push(data);
        Ok(())
    }
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> Result<(), Error> {
        // postcard hands every integer over as a varint of 1 to 10 bytes: pushed one by one
        // they stay inline, where `extend_from_slice` called `memcpy` for each (a fifth of a
        // `Pool.map` caller's time went there, in `perf`).
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }
    fn finalize(self) -> Result<(), Error> {
        Ok(())
    }
}

/// Appends the encoding of `value` to `out` (on error, `out` may hold part of it).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    if small::encode(value, out) {
        return Ok(());
    }
    let mut s = postcard::Serializer {
        output: Append(out),
    };
    value.serialize(Ser(&mut s))
}

/// Encodes `value` into the start of `buf`, returning the part used
/// (`Error::SerializeBufferFull` if it does not fit).
pub fn encode_to_slice<'b, T: Serialize + ?Sized>(
    value: &T,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], Error> {
    if let Some(n) = small::encode_to_slice(value, buf) {
        return Ok(&mut buf[..n]);
    }
    let mut s = postcard::Serializer {
        output: postcard::ser_flavors::Slice::new(buf),
    };
    value.serialize(Ser(&mut s))?;
    postcard::ser_flavors::Flavor::finalize(s.output)
}

/// The number of bytes [`encode_into`] would append for `value` (counted, not written).
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, Error> {
    let mut s = postcard::Serializer {
        output: postcard::ser_flavors::Size::default(),
    };
    value.serialize(Ser(&mut s))?;
    postcard::ser_flavors::Flavor::finalize(s.output)
}

/// Decodes a `T` from the start of `bytes` and returns it with the bytes after it.
pub fn take_from_bytes<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, &'de [u8]), Error> {
    if let Some(done) = small::take(bytes) {
        return Ok(done);
    }
    let mut d = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(De(&mut d))?;
    Ok((value, d.finalize()?))
}

/// Decodes a `T` from `bytes` (bytes left after it are ignored, as postcard's `from_bytes`
/// does).
pub fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    take_from_bytes(bytes).map(|(value, _)| value)
}

#[cfg(test)]
mod tests;

thread_local! {
    /// Each thread's buffer that messages are encoded into before being copied to shared
    /// memory (reused: no allocation per message).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's encoding buffer (contents unspecified). A call made from
/// inside another's `f` (a `put` from inside a `Serialize` impl) gets a fresh buffer instead
/// of a borrow error.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}
