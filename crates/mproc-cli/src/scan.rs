//! Reading /dev/shm and /proc without mapping anything: which entries are mproc segments (by
//! `pread` of their header), whose creators live and who holds them open (asked of the
//! kernel), and which processes this one can see mapping a segment (by device and inode). A file another user planted — truncated, huge, a FIFO, a symlink —
//! cannot fault or block the tool.

use mproc_segment::{Header, PeekError, SegmentError, peek};

/// What an entry of /dev/shm is.
#[derive(Debug)]
pub enum Status {
    /// An mproc segment with a valid header.
    Mproc(Header),
    /// It starts like an mproc segment but cannot be read (truncated, corrupt, never finished).
    Damaged(SegmentError),
    /// Something else (another program's shared memory).
    Foreign,
    /// Not a regular file (a directory, FIFO, socket, symlink or device).
    NotRegular,
    /// Cannot be opened (permissions) or read.
    Unreadable(String),
}

/// One entry of /dev/shm.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub status: Status,
    /// The creator recorded in the header is still running (asked of the kernel by its peer
    /// token; taken for alive when that cannot be asked).
    pub creator_alive: bool,
    /// Some process holds the segment open (the kernel's in-use lock; any pid namespace).
    pub in_use: bool,
    /// Owner uid, and whether it is the user running the tool.
    pub owner: Option<u32>,
}

impl Entry {
    /// Whether the entry belongs to the user running the tool.
    pub fn mine(&self) -> bool {
        self.owner == Some(rustix::process::geteuid().as_raw())
    }
}

/// The entries of /dev/shm whose name starts with `prefix`, sorted by name.
pub fn scan(prefix: &str) -> std::io::Result<Vec<Entry>> {
    let mut names: Vec<String> = std::fs::read_dir(mproc_segment::SHM_DIR)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names.into_iter().map(classify).collect())
}

/// Classifies one name (never mapping it).
pub fn classify(name: String) -> Entry {
    let meta = std::fs::symlink_metadata(format!("{}/{name}", mproc_segment::SHM_DIR)).ok();
    let owner = meta.as_ref().map(std::os::unix::fs::MetadataExt::uid);
    let mut liveness = (false, false);
    let status = match peek(&name) {
        Ok(p) => {
            liveness = (p.creator_alive != Some(false), p.in_use != Some(false));
            Status::Mproc(p.header)
        }
        Err(PeekError::NotRegular) => Status::NotRegular,
        Err(PeekError::Io(e)) => Status::Unreadable(e.to_string()),
        Err(PeekError::Segment(SegmentError::NotMproc { .. })) => Status::Foreign,
        Err(PeekError::Segment(e)) => Status::Damaged(e),
    };
    let (creator_alive, in_use) = liveness;
    Entry {
        name,
        status,
        creator_alive,
        in_use,
        owner,
    }
}

/// Pids of live processes that map the object with this device and inode, as far as this
/// process can see them (its own pid namespace, processes it may inspect): for display.
/// Decisions rest on the in-use lock ([`Entry::in_use`]).
pub fn mapped_by(dev_ino: (u64, u64)) -> Vec<u32> {
    mproc_segment::mapped_by(dev_ino)
}
