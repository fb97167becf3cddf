//! Segments across real processes and in real /dev/shm: sharing, every typed error, ownership
//! and cleanup. Each test uses its own names, bounds its children with a deadline, and unlinks
//! what it creates.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mproc_segment::{
    FORMAT_VERSION, HEADER_LEN, Kind, Segment, SegmentError, SegmentOptions, TypeTag,
};
use mproc_testkit::{Exit, fork_child, shm_entries, unique_name};
use rustix::fs::ftruncate;

mod common;
use common::*;

#[test]
fn child_opens_by_name_and_writes_parent_reads() {
    let name = unique_name("seg-child-writes");
    let seg = Segment::create_for::<u64>(&name, Kind::ARRAY, 1024).unwrap();
    let child_name = name.clone();
    let child = fork_child(move || {
        let seg = match Segment::open_for::<u64>(&child_name, Kind::ARRAY) {
            Ok(s) => s,
            Err(_) => return 2,
        };
        let cells: &[AtomicU64] = seg.view_slice(0, 1024).unwrap();
        for (i, c) in cells.iter().enumerate() {
            c.store(i as u64 * 3 + 1, Ordering::Relaxed);
        }
        0
    });
    child.assert_success();
    let cells: &[AtomicU64] = seg.view_slice(0, 1024).unwrap();
    for (i, c) in cells.iter().enumerate() {
        assert_eq!(c.load(Ordering::Relaxed), i as u64 * 3 + 1);
    }
    let header = seg.header().unwrap();
    assert_eq!(header.kind, Kind::ARRAY);
    assert_eq!(header.capacity, 1024);
    assert_eq!(header.creator.pid, std::process::id());
    drop(seg);
    assert!(shm_entries(&name).is_empty(), "creator's drop unlinks");
}

#[test]
fn anonymous_segment_is_shared_through_fork_and_leaves_nothing_in_dev_shm() {
    let before = shm_entries("mproc-anonymous");
    let seg = Segment::anonymous(4096).unwrap();
    assert!(seg.name().is_none());
    let counter: &AtomicU64 = seg.view(64).unwrap();
    counter.store(41, Ordering::SeqCst);
    let child = fork_child(|| {
        let c: &AtomicU64 = seg.view(64).unwrap();
        if c.fetch_add(1, Ordering::SeqCst) == 41 {
            0
        } else {
            3
        }
    });
    child.assert_success();
    assert_eq!(counter.load(Ordering::SeqCst), 42);
    assert_eq!(shm_entries("mproc-anonymous"), before);
}

#[test]
fn typed_errors_on_open() {
    // NotFound
    let missing = unique_name("seg-missing");
    assert!(matches!(
        Segment::open(&missing),
        Err(SegmentError::NotFound { .. })
    ));
    assert!(matches!(
        Segment::unlink(&missing),
        Err(SegmentError::NotFound { .. })
    ));

    // AlreadyExists
    let name = unique_name("seg-exists");
    let seg = Segment::create(&name, 100).unwrap();
    assert!(matches!(
        Segment::create(&name, 100),
        Err(SegmentError::AlreadyExists { .. })
    ));
    // The failed create did not unlink the original.
    assert!(Segment::open(&name).is_ok());

    // KindMismatch and TypeMismatch
    let typed = unique_name("seg-typed");
    let _t = Segment::create_for::<u32>(&typed, Kind::QUEUE, 10).unwrap();
    match Segment::open_for::<u32>(&typed, Kind::ARRAY) {
        Err(SegmentError::KindMismatch { expected, found }) => {
            assert_eq!((expected, found), (Kind::ARRAY, Kind::QUEUE));
        }
        other => panic!("expected KindMismatch, got {other:?}"),
    }
    match Segment::open_for::<i32>(&typed, Kind::QUEUE) {
        Err(SegmentError::TypeMismatch { expected, found }) => {
            assert!(expected.contains("i32"), "{expected}");
            assert!(found.contains("u32"), "{found}");
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
    // Same size and alignment but a different user-chosen name is still a mismatch.
    let named = SegmentOptions::new(Kind::QUEUE).type_tag(TypeTag::named::<u32>("app::Tick/v2"));
    assert!(matches!(
        named.open(&typed),
        Err(SegmentError::TypeMismatch { .. })
    ));
    drop(seg);
}

#[test]
fn invalid_names_are_refused_before_any_system_call() {
    for bad in ["", "/", "a/b", "//x", "nul\0byte", ".."] {
        assert!(
            matches!(
                Segment::create(bad, 10),
                Err(SegmentError::InvalidName { .. })
            ),
            "{bad:?}"
        );
        assert!(matches!(
            Segment::open(bad),
            Err(SegmentError::InvalidName { .. })
        ));
    }
    let long = "x".repeat(256);
    assert!(matches!(
        Segment::create(&long, 10),
        Err(SegmentError::InvalidName { .. })
    ));
    assert!(matches!(
        Segment::create(&unique_name("zero"), 0),
        Err(SegmentError::InvalidSize { .. })
    ));
}

#[test]
fn foreign_and_truncated_files_are_refused() {
    // Foreign magic.
    let name = unique_name("seg-foreign");
    let _c = Cleanup(name.clone());
    let _fd = foreign(&name, &[0xAB; 4096]);
    assert!(matches!(
        Segment::open(&name),
        Err(SegmentError::NotMproc { found }) if found == u64::from_ne_bytes([0xAB; 8])
    ));
    // open_raw sees the bytes.
    let raw = Segment::open_raw(&name).unwrap();
    assert!(raw.header().is_none());
    assert_eq!(raw.len(), 4096);

    // A file shorter than any header.
    let short = unique_name("seg-short");
    let _c2 = Cleanup(short.clone());
    let _fd2 = foreign(&short, &[1; 10]);
    assert!(matches!(
        Segment::open(&short),
        Err(SegmentError::Truncated {
            expected: 256,
            found: 10
        })
    ));

    // A real segment cut short after creation: the header claims more than the file has.
    let cut = unique_name("seg-cut");
    let seg = Segment::create(&cut, 1 << 20).unwrap();
    ftruncate(&seg, 8192).unwrap();
    match Segment::open(&cut) {
        Err(SegmentError::Truncated { expected, found }) => {
            assert_eq!(found, 8192);
            assert_eq!(expected, (HEADER_LEN + (1 << 20)) as u64);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn wrong_format_version_is_refused() {
    let name = unique_name("seg-version");
    let seg = Segment::create(&name, 64).unwrap();
    let raw = Segment::open_raw(&name).unwrap();
    raw.write_bytes(16, &(FORMAT_VERSION + 1).to_ne_bytes())
        .unwrap();
    assert_eq!(
        Segment::open(&name).unwrap_err(),
        SegmentError::VersionMismatch {
            expected: FORMAT_VERSION,
            found: FORMAT_VERSION + 1
        }
    );
    // A header whose payload points outside the file is refused, not followed.
    raw.write_bytes(16, &FORMAT_VERSION.to_ne_bytes()).unwrap();
    raw.write_bytes(32, &u64::MAX.to_ne_bytes()).unwrap();
    assert!(matches!(
        Segment::open(&name),
        Err(SegmentError::CorruptHeader { .. })
    ));
    drop(seg);
}

#[test]
fn mode_is_0600_and_another_user_is_denied() {
    let name = unique_name("seg-mode");
    let seg = Segment::create(&name, 64).unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // The umask does not weaken or change an explicit mode.
    let shared = unique_name("seg-mode-0640");
    let seg2 = SegmentOptions::new(Kind::RAW)
        .payload_len(64)
        .mode(0o640)
        .create(&shared)
        .unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/{shared}")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);

    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: cannot switch to `nobody`; the uid check needs root");
        return;
    }
    let child_name = name.clone();
    let child = fork_child(move || {
        if !mproc_testkit::become_nobody() {
            return 4;
        }
        match Segment::open(&child_name) {
            Err(SegmentError::PermissionDenied { .. }) => 0,
            Ok(_) => 5,
            Err(_) => 6,
        }
    });
    child.assert_success();
    drop((seg, seg2));
}

#[test]
fn ownership_creator_unlinks_openers_and_forked_children_do_not() {
    let name = unique_name("seg-owner");
    let seg = Segment::create(&name, 64).unwrap();
    let opener = Segment::open(&name).unwrap();
    drop(opener);
    assert_eq!(
        shm_entries(&name).len(),
        1,
        "an opener's drop keeps the name"
    );

    // A forked child drops its inherited copy of the creator handle: the name stays.
    let child = fork_child(|| {
        // SAFETY: in the child this bitwise copy is the only value ever dropped: the child
        // `_exit`s without unwinding the parent's frames, so `seg` is not dropped twice.
        let inherited: Segment = unsafe { std::ptr::read(&seg) };
        drop(inherited);
        0
    });
    child.assert_success();
    assert_eq!(
        shm_entries(&name).len(),
        1,
        "a forked child's drop keeps the name"
    );

    drop(seg);
    assert!(shm_entries(&name).is_empty());

    // persist() keeps it; unlink removes it.
    let kept = unique_name("seg-persist");
    let mut seg = Segment::create(&kept, 64).unwrap();
    seg.persist();
    drop(seg);
    assert_eq!(shm_entries(&kept).len(), 1);
    Segment::unlink(&kept).unwrap();
    assert!(shm_entries(&kept).is_empty());
}

#[test]
fn a_panicking_owner_leaves_nothing_behind() {
    let name = unique_name("seg-panic");
    let in_process = std::panic::catch_unwind(|| {
        let _seg = Segment::create(&name, 4096).unwrap();
        panic!("owner panics while holding the segment");
    });
    assert!(in_process.is_err());
    assert!(shm_entries(&name).is_empty());

    // The same in a child process that dies of the panic.
    let name2 = unique_name("seg-panic-child");
    let n2 = name2.clone();
    let mut child = fork_child(move || {
        let _seg = Segment::create(&n2, 4096).unwrap();
        panic!("child owner panics");
    });
    assert_eq!(child.wait().exit, Exit::Code(mproc_testkit::PANIC_EXIT));
    assert!(shm_entries(&name2).is_empty());
}

#[test]
fn views_are_bounds_and_alignment_checked() {
    let seg = Segment::anonymous(64).unwrap();
    assert!(seg.view::<AtomicU64>(56).is_ok());
    assert!(matches!(
        seg.view::<AtomicU64>(64),
        Err(SegmentError::OutOfBounds { .. })
    ));
    assert!(matches!(
        seg.view::<AtomicU64>(4),
        Err(SegmentError::OutOfBounds { .. })
    ));
    assert!(seg.view_slice::<AtomicU32>(0, 16).is_ok());
    assert!(seg.view_slice::<AtomicU32>(0, 17).is_err());
    assert!(seg.view_slice::<AtomicU32>(0, usize::MAX).is_err());
    let mut buf = [0u8; 8];
    assert!(seg.read_bytes(60, &mut buf).is_err());
    assert!(seg.write_bytes(usize::MAX, &buf).is_err());
}

#[test]
fn open_or_create_creates_once() {
    let name = unique_name("seg-ooc");
    let a = Segment::open_or_create(&name, 128).unwrap();
    a.write_bytes(0, b"first").unwrap();
    let b = Segment::open_or_create(&name, 128).unwrap();
    let mut buf = [0u8; 5];
    b.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"first");
    assert_eq!(b.header().unwrap().creator, a.header().unwrap().creator);
    drop((a, b));
    assert!(shm_entries(&name).is_empty());
}

#[test]
fn payload_is_aligned_for_over_aligned_elements() {
    #[repr(C, align(512))]
    struct Big([u8; 512]);
    let seg = SegmentOptions::new(Kind::ARRAY)
        .element::<Big>()
        .capacity(2)
        .anonymous()
        .unwrap();
    assert_eq!(seg.payload_offset(), 512);
    assert_eq!(seg.as_ptr() as usize % 512, 0);
    assert_eq!(seg.len(), 1024);
}

#[test]
fn an_fd_that_cannot_be_mapped_shared_is_an_io_error_with_its_errno() {
    // A read-only fd of a regular file big enough for a header: mapping it read-write and
    // shared fails in mmap with EACCES, which must come back as Io { call, errno }.
    let path = std::env::temp_dir().join(unique_name("seg-readonly-file"));
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let err = SegmentOptions::any()
        .from_fd(OwnedFd::from(file))
        .unwrap_err();
    assert_eq!(
        err,
        SegmentError::Io {
            call: "mmap",
            errno: mproc_segment::Errno::ACCESS
        }
    );
}
