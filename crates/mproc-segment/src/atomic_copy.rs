//! Byte copies to and from shared memory made of relaxed atomic accesses: bytes up to the
//! first 8-aligned address one at a time, then 8 at a time, then the rest one at a time.
//! Plain `memcpy` would race (undefined behaviour) with any process or atomic view writing
//! the same bytes; these cannot.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// How many bytes from `addr` to the next multiple of 8, at most `len`.
fn head(addr: usize, len: usize) -> usize {
    (addr.next_multiple_of(8) - addr).min(len)
}

/// Reads `out.len()` bytes at `src`.
///
/// # Safety
/// `src..src + out.len()` must be valid for reads for the duration of the call and be
/// accessed by others only atomically or through these functions.
pub unsafe fn load(src: *const u8, out: &mut [u8]) {
    let len = out.len();
    let h = head(src as usize, len);
    let words = (len - h) / 8;
    for (i, b) in out.iter_mut().enumerate().take(h) {
        // SAFETY: in bounds (caller); AtomicU8 has the alignment of u8.
        *b = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
    }
    for w in 0..words {
        let at = h + 8 * w;
        // SAFETY: in bounds (caller); `src + at` is 8-aligned (past the head).
        let v =
            unsafe { AtomicU64::from_ptr(src.add(at).cast_mut().cast()) }.load(Ordering::Relaxed);
        out[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in out.iter_mut().enumerate().skip(h + 8 * words) {
        // SAFETY: as for the head.
        *b = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
    }
}

/// Writes `data` at `dst`.
///
/// # Safety
/// `dst..dst + data.len()` must be valid for writes for the duration of the call and be
/// accessed by others only atomically or through these functions.
pub unsafe fn store(dst: *const u8, data: &[u8]) {
    let len = data.len();
    let h = head(dst as usize, len);
    let words = (len - h) / 8;
    for (i, &b) in data.iter().enumerate().take(h) {
        // SAFETY: in bounds (caller); AtomicU8 has the alignment of u8.
        unsafe { AtomicU8::from_ptr(dst.add(i).cast_mut()) }.store(b, Ordering::Relaxed);
    }
    for w in 0..words {
        let at = h + 8 * w;
        let mut word = [0u8; 8];
        word.copy_from_slice(&data[at..at + 8]);
        // SAFETY: in bounds (caller); `dst + at` is 8-aligned (past the head).
        unsafe { AtomicU64::from_ptr(dst.add(at).cast_mut().cast()) }
            .store(u64::from_ne_bytes(word), Ordering::Relaxed);
    }
    for (i, &b) in data.iter().enumerate().skip(h + 8 * words) {
        // SAFETY: as for the head.
        unsafe { AtomicU8::from_ptr(dst.add(i).cast_mut()) }.store(b, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copies_every_length_at_every_alignment() {
        let mut mem = vec![0u64; 16];
        let base = mem.as_mut_ptr().cast::<u8>();
        for start in 0..9 {
            for len in 0..60 {
                let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7) + 1).collect();
                // SAFETY: start + len <= 69 < 128 bytes of `mem`, used only here.
                unsafe { super::store(base.add(start), &data) };
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { super::load(base.add(start), &mut back) };
                assert_eq!(back, data, "start {start} len {len}");
            }
        }
    }
}
