//! Reading /dev/shm and /proc: which entries are mproc segments, whose creators live, and
//! which processes map a segment.

use std::time::Duration;

use mproc_segment::{Header, SegmentError, SegmentOptions};

/// What an entry of /dev/shm is.
#[derive(Debug)]
pub enum Status {
    /// An mproc segment with a valid header.
    Mproc(Header),
    /// It starts like an mproc segment but cannot be read (truncated, corrupt, never finished).
    Damaged(SegmentError),
    /// Something else (another program's shared memory).
    Foreign,
}

/// One entry of /dev/shm.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub status: Status,
    /// The creator recorded in the header is still running (same pid and start time).
    pub creator_alive: bool,
}

/// The entries of /dev/shm whose name starts with `prefix`, sorted by name.
pub fn scan(prefix: &str) -> std::io::Result<Vec<Entry>> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names.into_iter().map(classify).collect())
}

fn classify(name: String) -> Entry {
    // Opening validates magic, version, lengths; a creator still initialising gets a short
    // grace period, a dead one is reported as such.
    let opened = SegmentOptions::any()
        .open_timeout(Duration::from_millis(100))
        .open(&name);
    let status = match opened {
        Ok(seg) => match seg.header() {
            Some(h) => Status::Mproc(h.clone()),
            None => Status::Foreign,
        },
        Err(SegmentError::NotMproc { .. } | SegmentError::InvalidName { .. }) => Status::Foreign,
        Err(e) => Status::Damaged(e),
    };
    let creator_alive = match &status {
        Status::Mproc(h) => h.creator.is_alive(),
        _ => false,
    };
    Entry {
        name,
        status,
        creator_alive,
    }
}

/// Pids of live processes that map `/dev/shm/NAME` (read from /proc/*/maps; processes we may
/// not inspect are skipped).
pub fn mapped_by(name: &str) -> Vec<u32> {
    let path = format!("/dev/shm/{name}");
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
                maps.lines()
                    .any(|l| l.split_whitespace().nth(5) == Some(path.as_str()))
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}
