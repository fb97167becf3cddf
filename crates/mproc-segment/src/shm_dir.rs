//! The shared-memory directory: publishing a fully built segment under its name in one step,
//! deciding whether an existing object may be trusted, and reading a header without mapping
//! anything (for tools that look at files other users may have planted).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, fstat};

use crate::Header;
use crate::SegmentError;
use crate::header::{HEADER_LEN, HeaderFields, MAGIC, RawHeader, STATE_READY};

/// Where glibc keeps POSIX shared-memory objects: `shm_open("/name")` is `/dev/shm/name`.
pub const SHM_DIR: &str = "/dev/shm";

/// The path of a `/name` (as `validate_name` returns it).
pub(crate) fn path_of(shm_name: &str) -> String {
    format!("{SHM_DIR}{shm_name}")
}

/// An unnamed file in the shared-memory directory (`O_TMPFILE`): built and initialised
/// there, it gets its name only when complete (see [`publish`]). `None` if the filesystem
/// does not support unnamed files (the caller falls back to creating by name).
pub(crate) fn unnamed(mode: u32) -> Result<Option<OwnedFd>, SegmentError> {
    match nix::fcntl::open(
        SHM_DIR,
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL | Errno::ENOENT) => Ok(None),
        Err(Errno::ENOSPC | Errno::EDQUOT) => Err(SegmentError::OutOfSpace { requested: 0 }),
        Err(e) => Err(SegmentError::io("open(O_TMPFILE)", e)),
    }
}

/// Gives the unnamed file `fd` the name `shm_name`, atomically and only if the name is free:
/// other processes see either no segment or a complete one. `Ok(false)` if linking through
/// `/proc/self/fd` is not possible here (no procfs): the caller falls back.
pub(crate) fn publish(fd: &OwnedFd, shm_name: &str, name: &str) -> Result<bool, SegmentError> {
    let from = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let to = path_of(shm_name);
    match nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        from.as_str(),
        nix::fcntl::AT_FDCWD,
        to.as_str(),
        AtFlags::AT_SYMLINK_FOLLOW,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) if !std::path::Path::new("/proc/self/fd").exists() => Ok(false),
        Err(e) => Err(SegmentError::from_open_errno("linkat", name, e)),
    }
}

/// Who owns an object and how it may be accessed: refused unless it belongs to this process's
/// effective user and nobody else may write it (`allow_foreign` lifts both rules).
pub(crate) fn check_owner(
    fd: &OwnedFd,
    name: &str,
    allow_foreign: bool,
) -> Result<(), SegmentError> {
    let st = fstat(fd).map_err(|e| SegmentError::io("fstat", e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(SegmentError::NotRegular { name: name.into() });
    }
    if allow_foreign {
        return Ok(());
    }
    let me = nix::unistd::geteuid().as_raw();
    let mode = st.st_mode & 0o7777;
    if st.st_uid != me || mode & 0o022 != 0 {
        return Err(SegmentError::Untrusted {
            name: name.into(),
            owner: st.st_uid,
            mode,
        });
    }
    Ok(())
}

/// A segment's header read with `pread`, without mapping the file: a truncated or hostile
/// file cannot fault the reader. For tools (`mproc ls`, `inspect`, `gc`).
#[derive(Debug)]
pub struct Peek {
    /// The validated header.
    pub header: Header,
    /// The object's owner.
    pub owner: u32,
    /// Its permission bits.
    pub mode: u32,
    /// Its device and inode (what a process's memory maps list).
    pub dev_ino: (u64, u64),
    file: std::fs::File,
}

impl Peek {
    /// Reads `buf.len()` bytes of the payload at `offset` (short if the file is shorter: the
    /// count read is returned).
    pub fn read_payload(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let at = self.header.payload_offset.saturating_add(offset);
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], at + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }
}

/// Why [`peek`] found no mproc header.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// Not a regular file (a directory, FIFO, socket, symlink or device planted there).
    #[error("not a regular file")]
    NotRegular,
    /// Cannot be opened or read.
    #[error("cannot be read: {0}")]
    Io(#[source] std::io::Error),
    /// A regular file that is not an mproc segment, or a damaged one.
    #[error(transparent)]
    Segment(SegmentError),
}

/// Reads the header of `/dev/shm/NAME` with `pread` after checking that it is a regular file
/// (opened without following a symlink and without blocking on a FIFO). Nothing is mapped.
/// A segment whose creator has not finished is `NotReady` (with whether its creator died).
pub fn peek(name: &str) -> Result<Peek, PeekError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::path::Path::new(SHM_DIR).join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => PeekError::NotRegular,
            _ => PeekError::Io(e),
        })?;
    peek_file(file)
}

/// [`peek`] of a file already open.
fn peek_file(file: std::fs::File) -> Result<Peek, PeekError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(PeekError::Io)?;
    if !meta.file_type().is_file() {
        return Err(PeekError::NotRegular);
    }
    let mut raw = [0u8; HEADER_LEN];
    let n = {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < raw.len() {
            match file
                .read_at(&mut raw[done..], done as u64)
                .map_err(PeekError::Io)?
            {
                0 => break,
                k => done += k,
            }
        }
        done
    };
    let seg = |e| PeekError::Segment(e);
    if n < 8 {
        return Err(seg(SegmentError::Truncated {
            expected: HEADER_LEN as u64,
            found: meta.len(),
        }));
    }
    let magic = u64::from_ne_bytes(raw[0..8].try_into().unwrap_or_default());
    if magic != MAGIC {
        return Err(seg(SegmentError::NotMproc { found: magic }));
    }
    if n < HEADER_LEN {
        return Err(seg(SegmentError::Truncated {
            expected: HEADER_LEN as u64,
            found: meta.len(),
        }));
    }
    let state = u32::from_ne_bytes(raw[8..12].try_into().unwrap_or_default());
    let pid = u32::from_ne_bytes(raw[12..16].try_into().unwrap_or_default());
    if state != STATE_READY {
        let creator_dead = crate::ProcessId::of(pid).is_none();
        return Err(seg(SegmentError::NotReady { creator_dead }));
    }
    let fields = HeaderFields::from_bytes(&raw[std::mem::offset_of!(RawHeader, fields)..]);
    let header = Header::from_fields(&fields, pid, meta.len()).map_err(seg)?;
    Ok(Peek {
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
        dev_ino: (meta.dev(), meta.ino()),
        header,
        file,
    })
}

/// Pids of live processes that map the object with this device and inode (read from
/// `/proc/*/maps`, whose device and inode fields come before the path, so a name with spaces
/// or newlines cannot confuse it; processes this one may not inspect are skipped).
pub fn mapped_by(dev_ino: (u64, u64)) -> Vec<u32> {
    let (dev, ino) = dev_ino;
    let want_dev = format!(
        "{:02x}:{:02x}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
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
                maps.lines().any(|l| {
                    let mut f = l.split_ascii_whitespace();
                    let (dev_f, ino_f) = (f.nth(3), f.next());
                    dev_f.is_some_and(|d| d.eq_ignore_ascii_case(&want_dev))
                        && ino_f.and_then(|i| i.parse::<u64>().ok()) == Some(ino)
                })
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Removes the name `shm_name` if it holds a *stale* segment: one of this user's, not
/// writable by others, whose creator is dead (pid and start time) or died while creating it,
/// and that no live process maps — the rule `mproc gc` applies. Returns whether the name may
/// now be free (`true`: removed, or gone meanwhile: try creating again).
///
/// Creators racing to reclaim the same name cannot both remove something: the remover holds
/// an exclusive `flock` on the stale file, and unlinks only after checking that the name still
/// refers to that very file (device and inode); a creator that finds the lock taken backs off.
/// A live or mapped segment, a foreign file or another user's file is never touched.
/// How long a creator waits for another's reclaim lock on a stale name (see
/// [`reclaim_stale`]).
const RECLAIM_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) fn reclaim_stale(shm_name: &str) -> bool {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = path_of(shm_name);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return e.kind() == std::io::ErrorKind::NotFound,
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return false;
    }
    // The lock says "another creator is reclaiming it". It belongs to the open file, so a
    // process forked while some creator held it (in this process or another) holds it too
    // until it exits or closes the inherited fd: wait a little for it rather than report
    // the name taken at once. A real concurrent reclaim takes microseconds.
    let deadline = std::time::Instant::now() + RECLAIM_LOCK_WAIT;
    loop {
        // SAFETY: flock takes an fd we own and flags; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let dev_ino = (meta.dev(), meta.ino());
    // Read the header through a duplicate: `file` keeps the lock until we are done.
    let Ok(dup) = file.try_clone() else {
        return false;
    };
    let stale = match peek_file(dup) {
        Ok(p) => !p.header.creator.is_alive(),
        Err(PeekError::Segment(SegmentError::NotReady { creator_dead })) => creator_dead,
        Err(_) => false,
    };
    if !stale || !mapped_by(dev_ino).is_empty() {
        return false;
    }
    match std::fs::symlink_metadata(&path) {
        Ok(now) if (now.dev(), now.ino()) == dev_ino => std::fs::remove_file(&path).is_ok(),
        // Replaced or removed meanwhile: the caller tries again.
        _ => true,
    }
}
