//! Segment naming rules.

use crate::SegmentError;

/// The longest name accepted, in bytes, not counting the optional leading `/`.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a segment name and returns it in the form `shm_open` takes (with a leading `/`).
///
/// A name may start with one `/` (Python's `SharedMemory` and the POSIX API both spell names
/// that way; `"jobs"` and `"/jobs"` are the same segment), must not contain any other `/` or a
/// NUL byte, must not be empty, `.` or `..`, and is at most [`MAX_NAME_LEN`] bytes long.
///
/// ```
/// use mproc_segment::validate_name;
/// assert_eq!(validate_name("jobs").unwrap(), "/jobs");
/// assert_eq!(validate_name("/jobs").unwrap(), "/jobs");
/// assert!(validate_name("a/b").is_err());
/// assert!(validate_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<String, SegmentError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let bad = |reason| SegmentError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if bare.is_empty() {
        return Err(bad("empty"));
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(bad("longer than 255 bytes"));
    }
    if bare.contains('/') {
        return Err(bad("contains '/' after the optional leading one"));
    }
    if bare.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if bare == "." || bare == ".." {
        return Err(bad("'.' and '..' are not segment names"));
    }
    Ok(format!("/{bare}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_name("a").unwrap(), "/a");
        assert!(validate_name("/").is_err());
        assert!(validate_name("//a").is_err());
        assert!(validate_name("a\0b").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert!(validate_name(&format!("/{}", "x".repeat(255))).is_ok());
        assert!(matches!(
            validate_name(&"x".repeat(256)),
            Err(SegmentError::InvalidName { .. })
        ));
    }
}
