//! Messages that are a whole byte sequence — `Queue<Vec<u8>>`, `Queue<String>`,
//! `Queue<Box<[u8]>>` — copied in
//! one piece each way instead of through serde's element-by-element path.
//!
//! serde hands a `Vec<u8>` to a serializer as a sequence of `u8`s, one call per byte, and
//! builds one on the way back the same way: postcard then moves bytes several times slower
//! than memory (`Queue<Vec<u8>>` of 64 KiB ran at 0.07× a `ByteQueue`). When the message
//! type *is* one of these (asked with [`typeid::of`], which compares types without needing
//! `T: 'static`), the queue writes what postcard would write — the length as a varint, then
//! the bytes — with one `memcpy`, and reads it back with one. The bytes on the wire are
//! postcard's, so either side may use either path.
//!
//! Byte sequences *inside* a larger message still go through serde (mark such fields
//! `#[serde(with = "serde_bytes")]`, which postcard copies in one piece).

/// Which whole-message byte type a queue carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whole {
    /// `Vec<u8>`.
    Bytes,
    /// `String` (UTF-8 checked on the way in).
    Text,
    /// `Box<[u8]>`.
    Boxed,
}

/// Whether `T` is a whole-message byte type. A constant per `T` after optimisation.
#[inline]
pub(crate) fn kind<T>() -> Option<Whole> {
    let t = typeid::of::<T>();
    if t == typeid::of::<Vec<u8>>() {
        Some(Whole::Bytes)
    } else if t == typeid::of::<String>() {
        Some(Whole::Text)
    } else if t == typeid::of::<Box<[u8]>>() {
        Some(Whole::Boxed)
    } else {
        None
    }
}

/// The bytes of `value`, which is of the type `kind` names.
///
/// # Safety
/// `kind` must be `kind::<T>()` (so `T` is `Vec<u8>` or `String`).
pub(crate) unsafe fn bytes_of<T>(value: &T, kind: Whole) -> &[u8] {
    match kind {
        // SAFETY: `T` is `Vec<u8>` (the caller's contract): the same type, so the same layout.
        Whole::Bytes => unsafe { &*std::ptr::from_ref(value).cast::<Vec<u8>>() },
        // SAFETY: `T` is `String`, as above.
        Whole::Text => unsafe { &*std::ptr::from_ref(value).cast::<String>() }.as_bytes(),
        // SAFETY: `T` is `Box<[u8]>`, as above.
        Whole::Boxed => unsafe { &*std::ptr::from_ref(value).cast::<Box<[u8]>>() },
    }
}

/// A `T` made from `bytes` (already checked to be UTF-8 for `Text`).
///
/// # Safety
/// `kind` must be `kind::<T>()`.
unsafe fn from_vec<T>(bytes: Vec<u8>, kind: Whole) -> Result<T, String> {
    let value = match kind {
        Whole::Bytes => std::mem::ManuallyDrop::new(bytes),
        Whole::Text => {
            let s = String::from_utf8(bytes).map_err(|_| "message is not UTF-8".to_string())?;
            // SAFETY: `T` is `String`: hand the `String` itself over, moved bit for bit.
            return Ok(unsafe { std::mem::transmute_copy(&std::mem::ManuallyDrop::new(s)) });
        }
        Whole::Boxed => {
            let b = std::mem::ManuallyDrop::new(bytes.into_boxed_slice());
            // SAFETY: `T` is `Box<[u8]>`: moved bit for bit, the original never dropped.
            return Ok(unsafe { std::mem::transmute_copy(&b) });
        }
    };
    // SAFETY: `T` is `Vec<u8>`: the value is moved bit for bit (the original is never
    // dropped: `ManuallyDrop`).
    Ok(unsafe { std::mem::transmute_copy(&value) })
}

/// The varint postcard writes before a sequence's bytes: `out[..n]` for the returned `n`.
pub(crate) fn length_prefix(len: usize, out: &mut [u8; 10]) -> usize {
    let mut v = len as u64;
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[n] = byte;
            return n + 1;
        }
        out[n] = byte | 0x80;
        n += 1;
    }
}

/// The length and where the bytes start, read from a message's first bytes (postcard's
/// varint, at most 10 bytes); `None` if malformed or longer than what follows.
pub(crate) fn split(message: &[u8]) -> Option<&[u8]> {
    let mut len: u64 = 0;
    for (i, &b) in message.iter().take(10).enumerate() {
        len |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            let rest = &message[i + 1..];
            let len = usize::try_from(len).ok()?;
            return rest.get(..len);
        }
    }
    None
}

/// Decodes a whole-message byte type.
///
/// # Safety
/// `kind` must be `kind::<T>()`.
pub(crate) unsafe fn decode<T>(message: &[u8], kind: Whole) -> Result<T, String> {
    let bytes = split(message).ok_or_else(|| "malformed byte message".to_string())?;
    // SAFETY: the caller's contract.
    unsafe { from_vec(bytes.to_vec(), kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_and_bytes_are_postcards() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 20] {
            let v = vec![7u8; len];
            let mut pre = [0u8; 10];
            let n = length_prefix(len, &mut pre);
            let mut ours = pre[..n].to_vec();
            ours.extend_from_slice(&v);
            assert_eq!(ours, postcard::to_allocvec(&v).unwrap(), "len {len}");
            assert_eq!(split(&ours), Some(&v[..]));
            // SAFETY: `kind::<Vec<u8>>()` is `Bytes`.
            let back: Vec<u8> = unsafe { decode(&ours, Whole::Bytes) }.unwrap();
            assert_eq!(back, v);
        }
        let s = "héllo".to_string();
        let enc = postcard::to_allocvec(&s).unwrap();
        // SAFETY: `kind::<String>()` is `Text`.
        let back: String = unsafe { decode(&enc, Whole::Text) }.unwrap();
        assert_eq!(back, s);
        assert_eq!(kind::<Vec<u8>>(), Some(Whole::Bytes));
        assert_eq!(kind::<String>(), Some(Whole::Text));
        assert_eq!(kind::<Box<[u8]>>(), Some(Whole::Boxed));
        let boxed: Box<[u8]> = vec![3u8; 500].into_boxed_slice();
        let enc = postcard::to_allocvec(&boxed).unwrap();
        // SAFETY: `kind::<Box<[u8]>>()` is `Boxed`.
        let back: Box<[u8]> = unsafe { decode(&enc, Whole::Boxed) }.unwrap();
        assert_eq!(back, boxed);
        // SAFETY: as above.
        assert_eq!(unsafe { bytes_of(&boxed, Whole::Boxed) }, &boxed[..]);
        assert_eq!(kind::<Vec<u16>>(), None);
        assert_eq!(kind::<(Vec<u8>,)>(), None);
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(split(&[]), None);
        assert_eq!(split(&[0x80; 11]), None);
        assert_eq!(split(&[5, 1, 2]), None, "shorter than its length");
        // SAFETY: `kind::<String>()` is `Text`.
        assert!(unsafe { decode::<String>(&[2, 0xff, 0xfe], Whole::Text) }.is_err());
    }
}
