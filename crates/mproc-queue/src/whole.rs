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

/// The whole-message byte types. Each has no lifetime parameter, which is what makes the
/// casts below sound: `typeid` (like `TypeId`) ignores lifetimes, so two types with equal ids
/// are the same type up to lifetimes — and a type without any is then exactly itself.
trait Plain: Sized + 'static {
    /// The value's bytes.
    fn bytes(&self) -> &[u8];
    /// A value from bytes (`Err` if they do not make one: a `String` that is not UTF-8).
    fn from_bytes(bytes: Vec<u8>) -> Result<Self, String>;
}

impl Plain for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        Ok(bytes)
    }
}

impl Plain for String {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
    fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        String::from_utf8(bytes).map_err(|_| "message is not UTF-8".to_string())
    }
}

impl Plain for Box<[u8]> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        Ok(bytes.into_boxed_slice())
    }
}

/// `value` as a `U`, if `T` is `U`.
fn as_plain<T, U: Plain>(value: &T) -> Option<&U> {
    (typeid::of::<T>() == typeid::of::<U>()).then(|| {
        // SAFETY: `U` has no lifetime parameter and its id equals `T`'s, so `T` is `U`: the
        // same type, the same layout; the reference keeps `value`'s lifetime.
        unsafe { &*std::ptr::from_ref(value).cast::<U>() }
    })
}

/// `value` as a `T`, if `T` is `U` (else handed back).
fn into_t<T, U: Plain>(value: U) -> Result<T, U> {
    if typeid::of::<T>() != typeid::of::<U>() {
        return Err(value);
    }
    let value = std::mem::ManuallyDrop::new(value);
    // SAFETY: `T` is `U`, as in `as_plain`: the value moves bit for bit, and the original is
    // never dropped (`ManuallyDrop`), so it is owned exactly once.
    Ok(unsafe { std::mem::transmute_copy::<U, T>(&value) })
}

/// Whether `T` is a whole-message byte type. A constant per `T` after optimisation.
#[inline]
pub(crate) fn is_whole<T>() -> bool {
    let t = typeid::of::<T>();
    t == typeid::of::<Vec<u8>>() || t == typeid::of::<String>() || t == typeid::of::<Box<[u8]>>()
}

/// The bytes of `value` if `T` is a whole-message byte type.
pub(crate) fn bytes_of<T>(value: &T) -> Option<&[u8]> {
    as_plain::<T, Vec<u8>>(value)
        .map(Plain::bytes)
        .or_else(|| as_plain::<T, String>(value).map(Plain::bytes))
        .or_else(|| as_plain::<T, Box<[u8]>>(value).map(Plain::bytes))
}

/// `bytes` as a `T` of type `U`, if `T` is `U`.
fn make<T, U: Plain>(bytes: &[u8]) -> Option<Result<T, String>> {
    if typeid::of::<T>() != typeid::of::<U>() {
        return None;
    }
    match U::from_bytes(bytes.to_vec()) {
        Ok(u) => into_t::<T, U>(u).ok().map(Ok),
        Err(e) => Some(Err(e)),
    }
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

/// Decodes a whole-message byte type: `None` if `T` is not one.
pub(crate) fn decode<T>(message: &[u8]) -> Option<Result<T, String>> {
    if !is_whole::<T>() {
        return None;
    }
    let Some(bytes) = split(message) else {
        return Some(Err("malformed byte message".to_string()));
    };
    make::<T, Vec<u8>>(bytes)
        .or_else(|| make::<T, String>(bytes))
        .or_else(|| make::<T, Box<[u8]>>(bytes))
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
            let back: Vec<u8> = decode(&ours).unwrap().unwrap();
            assert_eq!(back, v);
        }
        let s = "héllo".to_string();
        let enc = postcard::to_allocvec(&s).unwrap();
        let back: String = decode(&enc).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(bytes_of(&s), Some(s.as_bytes()));
        let boxed: Box<[u8]> = vec![3u8; 500].into_boxed_slice();
        let enc = postcard::to_allocvec(&boxed).unwrap();
        let back: Box<[u8]> = decode(&enc).unwrap().unwrap();
        assert_eq!(back, boxed);
        assert_eq!(bytes_of(&boxed), Some(&boxed[..]));
    }

    #[test]
    fn other_types_are_not_whole() {
        assert!(is_whole::<Vec<u8>>() && is_whole::<String>() && is_whole::<Box<[u8]>>());
        assert!(!is_whole::<Vec<u16>>() && !is_whole::<(Vec<u8>,)>() && !is_whole::<&str>());
        assert_eq!(bytes_of(&vec![1u16]), None);
        assert_eq!(bytes_of(&"borrowed"), None);
        assert!(decode::<Vec<u16>>(&[1, 1]).is_none());
        assert!(decode::<&'static str>(&[1, b'a']).is_none());
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(split(&[]), None);
        assert_eq!(split(&[0x80; 11]), None);
        assert_eq!(split(&[5, 1, 2]), None, "shorter than its length");
        assert!(decode::<String>(&[2, 0xff, 0xfe]).unwrap().is_err());
        assert!(decode::<Vec<u8>>(&[5, 1]).unwrap().is_err());
    }
}
