//! Whole values that are one small integer (`Queue<u64>`, a pool's `map(f, 0..n)` of `u64`s
//! and their results): postcard writes them as a varint of 1 or 2 bytes, here written and read
//! without postcard's general machinery, which cost a pool's caller a quarter of its time on
//! such items (`perf`). Only the 1- and 2-byte forms are handled; anything else goes to
//! postcard, so the bytes and the errors are postcard's exactly.

/// The integer types postcard writes as varints (signed ones zigzagged), by type id.
#[derive(Clone, Copy)]
enum Int {
    U16,
    U32,
    U64,
    Usize,
    I16,
    I32,
    I64,
    Isize,
}

#[inline]
fn int_of<T: ?Sized>() -> Option<Int> {
    let t = typeid::of::<T>();
    [
        (typeid::of::<u64>(), Int::U64),
        (typeid::of::<u32>(), Int::U32),
        (typeid::of::<usize>(), Int::Usize),
        (typeid::of::<i64>(), Int::I64),
        (typeid::of::<i32>(), Int::I32),
        (typeid::of::<isize>(), Int::Isize),
        (typeid::of::<u16>(), Int::U16),
        (typeid::of::<i16>(), Int::I16),
    ]
    .into_iter()
    .find_map(|(id, int)| (id == t).then_some(int))
}

#[inline]
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// `value` as a `V`, if `T` is `V`.
#[inline]
fn same<T: ?Sized, V: Copy>(value: &T) -> Option<V> {
    if typeid::of::<T>() != typeid::of::<V>() {
        return None;
    }
    // SAFETY: `T` is `V` (equal type ids; they ignore lifetimes, and the integers this is
    // called with have none), so the reference points to a valid, aligned `V`.
    Some(unsafe { *std::ptr::from_ref(value).cast::<V>() })
}

/// `value`'s varint (zigzagged if signed), if `T` is an integer type postcard writes as one.
#[inline]
fn varint_of<T: ?Sized>(value: &T) -> Option<u64> {
    Some(match int_of::<T>()? {
        Int::U16 => u64::from(same::<T, u16>(value)?),
        Int::U32 => u64::from(same::<T, u32>(value)?),
        Int::U64 => same::<T, u64>(value)?,
        Int::Usize => same::<T, usize>(value)? as u64,
        Int::I16 => zigzag(i64::from(same::<T, i16>(value)?)),
        Int::I32 => zigzag(i64::from(same::<T, i32>(value)?)),
        Int::I64 => zigzag(same::<T, i64>(value)?),
        Int::Isize => zigzag(same::<T, isize>(value)? as i64),
    })
}

/// postcard's bytes for `value` if it is an integer below 2^14 once zigzagged (a 1- or
/// 2-byte varint): the buffer and how many of its bytes are used.
#[inline]
fn short_varint<T: ?Sized>(value: &T) -> Option<([u8; 2], usize)> {
    match varint_of(value)? {
        v if v < 0x80 => Some(([v as u8, 0], 1)),
        v if v < 0x4000 => Some(([v as u8 | 0x80, (v >> 7) as u8], 2)),
        _ => None,
    }
}

/// Appends `value` if it is a small integer (see [`short_varint`]); `false`, appending
/// nothing, otherwise.
#[inline]
pub(super) fn encode<T: ?Sized>(value: &T, out: &mut Vec<u8>) -> bool {
    let Some((bytes, n)) = short_varint(value) else {
        return false;
    };
    out.extend_from_slice(&bytes[..n]);
    true
}

/// Writes `value` to the start of `buf` if it is a small integer and fits: how many bytes.
/// `None` (postcard decides, and reports a full buffer) otherwise.
#[inline]
pub(super) fn encode_to_slice<T: ?Sized>(value: &T, buf: &mut [u8]) -> Option<usize> {
    let (bytes, n) = short_varint(value)?;
    buf.get_mut(..n)?.copy_from_slice(&bytes[..n]);
    Some(n)
}

/// `bytes` read as a `T`, if `T` is an integer type postcard writes as a varint and `bytes`
/// starts with a 1- or 2-byte varint; with the bytes after it. `None` (postcard decides) for
/// anything else, including input that ends early.
#[inline]
pub(super) fn take<T>(bytes: &[u8]) -> Option<(T, &[u8])> {
    let int = int_of::<T>()?;
    let (v, rest) = match *bytes {
        [b0, ref rest @ ..] if b0 < 0x80 => (u64::from(b0), rest),
        [b0, b1, ref rest @ ..] if b1 < 0x80 => (u64::from(b0 & 0x7f) | u64::from(b1) << 7, rest),
        _ => return None,
    };
    // Every value of two varint bytes (< 2^14, or ±2^13 zigzagged) fits every type here.
    let value: T = match int {
        Int::U16 => cast(v as u16),
        Int::U32 => cast(v as u32),
        Int::U64 => cast(v),
        Int::Usize => cast(v as usize),
        Int::I16 => cast(unzigzag(v) as i16),
        Int::I32 => cast(unzigzag(v) as i32),
        Int::I64 => cast(unzigzag(v)),
        Int::Isize => cast(unzigzag(v) as isize),
    };
    Some((value, rest))
}

/// `v` as `T`, which the caller matched by type id to `V`.
#[inline]
fn cast<V: Copy, T>(v: V) -> T {
    debug_assert!(typeid::of::<V>() == typeid::of::<T>());
    // SAFETY: `take` only calls this with `V` the integer type `int_of::<T>()` matched, so
    // `T` is exactly `V` (an integer has no lifetime for the type id to ignore): the value is
    // copied bit for bit.
    unsafe { std::mem::transmute_copy::<V, T>(&v) }
}
