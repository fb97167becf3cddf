//! The shared-memory directory: publishing a fully built segment under its name in one step,
//! deciding whether an existing object may be trusted, and reading a header without mapping
//! anything (for tools that look at files other users may have planted).

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, fstat};
use rustix::io::Errno;

use crate::ofd::{self, Lock};

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
    match rustix::fs::open(
        SHM_DIR,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_bits_truncate(mode),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => Ok(None),
        Err(Errno::NOSPC | Errno::DQUOT) => Err(SegmentError::OutOfSpace { requested: 0 }),
        Err(e) => Err(SegmentError::io("open(O_TMPFILE)", e)),
    }
}

/// Gives the unnamed file `fd` the name `shm_name`, atomically and only if the name is free:
/// other processes see either no segment or a complete one. `Ok(false)` if linking through
/// `/proc/self/fd` is not possible here (no procfs): the caller falls back.
pub(crate) fn publish(fd: &OwnedFd, shm_name: &str, name: &str) -> Result<bool, SegmentError> {
    let from = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let to = path_of(shm_name);
    match rustix::fs::linkat(
        CWD,
        from.as_str(),
        CWD,
        to.as_str(),
        AtFlags::SYMLINK_FOLLOW,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) if !std::path::Path::new("/proc/self/fd").exists() => Ok(false),
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
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(SegmentError::NotRegular { name: name.into() });
    }
    if allow_foreign {
        return Ok(());
    }
    let me = rustix::process::geteuid().as_raw();
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
    /// Whether any process holds it open (the kernel's answer, in any pid namespace and
    /// whatever the holder's dumpability; `None` if it could not be asked).
    pub in_use: Option<bool>,
    /// Whether its creator still runs (asked by the creator's peer token in the owner's
    /// liveness roll; `None` if that could not be asked).
    pub creator_alive: Option<bool>,
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
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32)
        .open(&path)
        .map_err(|e| match Errno::from_io_error(&e) {
            Some(Errno::LOOP) => PeekError::NotRegular,
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
        // The creator holds the in-use lock from before it writes anything.
        let creator_dead = in_use(&file) == Some(false);
        return Err(seg(SegmentError::NotReady { creator_dead }));
    }
    let fields = HeaderFields::from_bytes(&raw[std::mem::offset_of!(RawHeader, fields)..]);
    let header = Header::from_fields(&fields, pid, meta.len()).map_err(seg)?;
    let creator_alive = match header.creator_peer {
        0 => Some(false),
        peer => crate::liveness::peer_alive_of_user(meta.uid(), peer),
    };
    Ok(Peek {
        in_use: in_use(&file),
        creator_alive,
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
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
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

/// How long an opener waits for a reclaimer's exclusive lock on the file it opened (a
/// reclaim holds it for microseconds; a hostile holder cannot make `open` wait longer than
/// its own timeout either).
const HOLD_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The byte of every segment file that its users lock: each handle holds a shared
/// (read) open-file-description lock on it for as long as it exists, and the kernel drops
/// it when the handle's descriptor closes — when the process dies, whatever its namespace
/// and however it dies. A forked child shares its parent's lock (it maps the segment too).
/// Reclaim and `gc` take an exclusive lock on it: they get it only when no handle anywhere
/// is open, and while they hold it no opener can start using the file.
const IN_USE_BYTE: u64 = 0;

/// Marks `fd`'s segment as in use by this handle (see [`IN_USE_BYTE`]), waiting a bounded
/// time while a reclaimer holds it.
pub(crate) fn hold(fd: &impl std::os::fd::AsFd) -> Result<(), SegmentError> {
    let deadline = std::time::Instant::now() + HOLD_WAIT;
    let fd = fd.as_fd().as_raw_fd();
    loop {
        match ofd::set(fd, Lock::Read, IN_USE_BYTE, 1) {
            Ok(()) => return Ok(()),
            Err(Errno::AGAIN | Errno::ACCESS) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            Err(Errno::AGAIN | Errno::ACCESS) => {
                return Err(SegmentError::NotReady {
                    creator_dead: false,
                });
            }
            Err(e) => return Err(SegmentError::io("fcntl(F_OFD_SETLK)", e)),
        }
    }
}

/// Whether any handle other than those sharing `fd`'s open file description holds the
/// segment open (`None` if the kernel could not be asked). Tools ask through a descriptor of
/// their own, so for them this is "is anyone using it".
pub fn in_use(fd: &impl std::os::fd::AsFd) -> Option<bool> {
    ofd::held_elsewhere(fd.as_fd().as_raw_fd(), IN_USE_BYTE, 1)
}

/// Takes the exclusive lock on `fd`'s in-use byte if nobody holds the segment: `true` if
/// taken (then nobody can start using it until `fd` is closed).
fn try_own(fd: &impl std::os::fd::AsFd) -> bool {
    ofd::set(fd.as_fd().as_raw_fd(), Lock::Write, IN_USE_BYTE, 1).is_ok()
}

/// Whether the file open as `fd` is still the one named `path` (same device and inode).
pub(crate) fn still_named(fd: &impl std::os::fd::AsFd, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ours) = fstat(fd) else {
        return false;
    };
    std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == (ours.st_dev, ours.st_ino))
}

/// Whether a segment nobody holds may be removed: its creator (asked by peer token, in any
/// pid namespace) is no longer alive, or it never finished being made. A segment kept with
/// `persist` by a creator that still runs is not stale.
fn creator_gone(peek: &Result<Peek, PeekError>, owner: u32) -> bool {
    match peek {
        Ok(p) => {
            let peer = p.header.creator_peer;
            peer == 0 || crate::liveness::peer_alive_of_user(owner, peer) == Some(false)
        }
        Err(PeekError::Segment(SegmentError::NotReady { .. })) => true,
        Err(_) => false,
    }
}

/// Removes the file `path` if it holds a *stale* mproc segment: no handle anywhere holds it
/// open (asked of the kernel through the in-use lock, not read from `/proc`) and its creator
/// is gone. `owner`: the uid the file must belong to (`None`: any, for root's `gc`). Returns
/// whether the name may now be free (`true`: removed, or gone meanwhile).
///
/// Race-free against openers: the remover holds the exclusive in-use lock from its check to
/// its unlink, so an opener that got the file meanwhile waits for its shared lock and then
/// finds the name no longer refers to its file (it opens again); one that gets its shared
/// lock first makes the remover's lock fail. Against other removers: only one gets the lock,
/// and the unlink happens only if the name still refers to that very file.
pub(crate) fn remove_if_stale(path: &str, owner: Option<u32>) -> bool {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return e.kind() == std::io::ErrorKind::NotFound,
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.file_type().is_file() || owner.is_some_and(|o| meta.uid() != o) {
        return false;
    }
    if owner.is_some() && meta.mode() & 0o022 != 0 {
        return false;
    }
    if !try_own(&file) {
        return false;
    }
    let Ok(dup) = file.try_clone() else {
        return false;
    };
    if !creator_gone(&peek_file(dup), meta.uid()) {
        return false;
    }
    if !still_named(&file, path) {
        // Replaced or removed meanwhile: the caller tries again.
        return true;
    }
    let removed = std::fs::remove_file(path).is_ok();
    drop(file);
    removed
}

/// Removes the name `shm_name` if it holds a stale segment of this user (see
/// [`remove_if_stale`]): what `create` does before giving up on a taken name.
pub(crate) fn reclaim_stale(shm_name: &str) -> bool {
    remove_if_stale(
        &path_of(shm_name),
        Some(rustix::process::geteuid().as_raw()),
    )
}

/// Removes `/dev/shm/NAME` if it is a stale mproc segment (nobody holds it open, its creator
/// is gone): what `mproc gc` does. Files of other users are removed only when the caller may
/// (root). Returns whether it was removed.
pub fn remove_stale(name: &str) -> bool {
    let path = std::path::Path::new(SHM_DIR).join(name);
    let Some(path) = path.to_str() else {
        return false;
    };
    std::fs::symlink_metadata(path).is_ok() && remove_if_stale(path, None) && {
        // `remove_if_stale` also says `true` for a name that vanished meanwhile.
        std::fs::symlink_metadata(path).is_err()
    }
}
