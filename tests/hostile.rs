//! Hostile segments: random and mutated headers, truncated and extended files, wrong magic,
//! version, kind and type, overflowing lengths — written straight into /dev/shm and opened
//! with every `open` of every type. Each open must return a typed error or a handle whose
//! geometry fits the file; none may crash, hang or read out of bounds (a crash or an
//! out-of-bounds read kills this test process; a hang trips the deadline).
//!
//! 10,000 cases per run (proptest), each opened 16 ways; queue templates hold messages
//! (inline, in the arena, and a chunk left mid-loan) and mutations reach the payload too.

use std::sync::OnceLock;
use std::time::Duration;

use mproc::prelude::*;
use mproc_testkit::{unique_name, with_deadline};
use proptest::prelude::*;

/// Offsets in the header (see mproc-segment's `RawHeader`).
const CREATOR_PID: usize = 12;
const CREATOR_START: usize = 72;
const LENGTH_FIELDS: std::ops::Range<usize> = 16..88;
/// Where the payload starts.
const PAYLOAD: usize = 256;

/// Valid segments of every kind, as bytes, whose recorded creator is a process that does not
/// exist, so that a header whose state is mutated to "initialising" reports a dead creator at
/// once instead of making the opener wait for it.
fn templates() -> &'static [Vec<u8>] {
    static T: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    T.get_or_init(|| {
        // Far above any pid_max, and still above it after any one byte is mutated below the
        // top one: the creator is dead at once instead of making openers wait for it.
        let dead_pid: u32 = 0x7FFF_FFF0;
        let grab = |name: &str| {
            let mut bytes = std::fs::read(format!("/dev/shm/{name}")).expect("read template");
            bytes[CREATOR_PID..CREATOR_PID + 4].copy_from_slice(&dead_pid.to_ne_bytes());
            bytes[CREATOR_START..CREATOR_START + 8].copy_from_slice(&1u64.to_ne_bytes());
            bytes
        };
        let n = |k: &str| unique_name(&format!("tmpl-{k}"));
        let mut out = Vec::new();
        let name = n("pod");
        let q = PodQueue::<u64>::create(&name, 4).unwrap();
        out.push(grab(&name));
        drop(q);
        // Queues with messages in them, inline and in the arena, so that mutations of the
        // payload hit live slots, chunk words, links and counters.
        let name = n("queue");
        let q: Queue<String> = QueueOptions::new()
            .capacity(4)
            .arena_bytes(4096)
            .create(&name)
            .unwrap();
        q.put("inline".into()).unwrap();
        q.put("x".repeat(700)).unwrap();
        out.push(grab(&name));
        drop(q);
        let name = n("bytes");
        let q = QueueOptions::new()
            .capacity(4)
            .arena_bytes(4096)
            .create_bytes(&name)
            .unwrap();
        q.put([1u8; 900]).unwrap();
        q.put([2u8; 20]).unwrap();
        let loan = q.loan(300).unwrap();
        std::mem::forget(loan); // a chunk left Writing, as a producer killed mid-loan leaves it
        out.push(grab(&name));
        drop(q);
        let name = n("array");
        let a = Array::<f64>::create(&name, 16).unwrap();
        out.push(grab(&name));
        drop(a);
        let name = n("value");
        let v = Value::<u32>::create(&name, 7).unwrap();
        out.push(grab(&name));
        drop(v);
        let name = n("atomic");
        let v = AtomicValue::<u32>::create(&name, 7).unwrap();
        out.push(grab(&name));
        drop(v);
        let name = n("lock");
        let l = Lock::create(&name).unwrap();
        out.push(grab(&name));
        drop(l);
        let name = n("event");
        let e = Event::create(&name).unwrap();
        out.push(grab(&name));
        drop(e);
        out
    })
}

/// Opens `name` every way there is; touches what an open returned within its own bounds.
fn open_every_way(name: &str) {
    let quick = || SegmentOptions::any().open_timeout(Duration::from_millis(5));
    let _ = quick().open(name);
    let _ = Segment::open_raw(name);
    let _ = SegmentOptions::new(Kind::ARRAY)
        .element::<u64>()
        .open_timeout(Duration::from_millis(5))
        .open(name);
    if let Ok(q) = PodQueue::<u64>::open(name) {
        let _ = (q.try_get(), q.len(), q.try_put(1));
    }
    if let Ok(q) = Queue::<String>::open(name) {
        for _ in 0..3 {
            let _ = (q.try_get(), q.len(), q.arena_used());
        }
        let _ = q.try_put("y".repeat(600));
        let _ = q.try_get();
    }
    if let Ok(q) = ByteQueue::open(name) {
        let _ = (q.try_get(), q.len(), q.is_full(), q.arena_used());
        if let Ok(m) = q.try_get_loan() {
            std::hint::black_box(m.iter().map(|&b| u64::from(b)).sum::<u64>());
        }
        let _ = q.try_put([3u8; 1000]);
        if let Ok(mut l) = q.try_loan(200) {
            l.fill(4);
            let _ = l.try_send();
        }
        let _ = (q.try_get(), q.try_get());
    }
    if let Ok(q) = JoinableQueue::<u32>::open(name) {
        let _ = q.try_get();
    }
    // Arrays and values: read every element without their lock. A hostile segment can hold
    // bytes that look like a lock held by a live process, and a blocking `lock()` then waits
    // as it would for a real holder (use the `*_timeout` forms with peers you do not trust).
    if let Ok(a) = Array::<f64>::open(name) {
        // SAFETY: this process alone has the file open; nothing writes it concurrently.
        let sum: f64 = unsafe { a.as_slice_unsync() }.iter().sum();
        std::hint::black_box(sum);
    }
    // A locked value is only opened (its lock may look held, see above); an atomic one read.
    let _ = Value::<u32>::open(name);
    if let Ok(v) = AtomicValue::<u32>::open(name) {
        let _ = v.load();
    }
    let _ = Lock::open(name);
    let _ = RLock::open(name);
    let _ = Event::open(name).map(|e| e.is_set());
    let _ = Semaphore::open(name);
    let _ = BoundedSemaphore::open(name);
    let _ = Barrier::open(name);
    let _ = Condition::open(name);
}

/// Removes the file when dropped, so a failing case leaves nothing in /dev/shm.
struct Planted(String);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `bytes` as /dev/shm/NAME, opens it every way, removes it.
fn attack(tag: &str, bytes: &[u8]) {
    let name = unique_name(tag);
    let planted = Planted(format!("/dev/shm/{name}"));
    std::fs::write(&planted.0, bytes).unwrap();
    open_every_way(&name);
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite bytes anywhere in the header.
    Bytes(Vec<(usize, u8)>),
    /// Overwrite one 8-byte length/offset/capacity field with a chosen value.
    Field(usize, u64),
    /// Cut the file.
    Truncate(usize),
    /// Append garbage.
    Extend(Vec<u8>),
    /// Overwrite 8-byte words of the payload (ring and arena counters, slot and chunk words,
    /// links, geometry, message bytes) with chosen values.
    Payload(Vec<(usize, u64)>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = || {
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(u64::MAX),
            Just(u64::MAX / 2),
            Just(1 << 40),
            any::<u64>(),
            0u64..8192,
        ]
    };
    prop_oneof![
        prop::collection::vec((0usize..256, any::<u8>()), 1..8).prop_map(Mutation::Bytes),
        ((0usize..9), extreme()).prop_map(|(f, v)| Mutation::Field(LENGTH_FIELDS.start + f * 8, v)),
        // Not to 0 bytes: an empty file is a creator that has not sized it yet, which every
        // opener waits for (up to its open timeout); `an_empty_file_is_waited_for_then_refused`
        // covers that case once.
        (1usize..5000).prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..512).prop_map(Mutation::Extend),
        prop::collection::vec((0usize..1024, extreme()), 1..6).prop_map(Mutation::Payload),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Bytes(edits) => {
            for &(i, b) in edits {
                if i < bytes.len() {
                    bytes[i] = b;
                }
            }
        }
        Mutation::Field(off, v) => {
            if off + 8 <= bytes.len() {
                bytes[*off..off + 8].copy_from_slice(&v.to_ne_bytes());
            }
        }
        Mutation::Truncate(n) => bytes.truncate(*n),
        Mutation::Extend(extra) => bytes.extend_from_slice(extra),
        Mutation::Payload(words) => {
            for &(k, v) in words {
                let off = PAYLOAD + 8 * k;
                if off + 8 <= bytes.len() {
                    bytes[off..off + 8].copy_from_slice(&v.to_ne_bytes());
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 7_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_segments_are_refused_or_safe(t in 0usize..8, muts in prop::collection::vec(mutation(), 1..4)) {
        with_deadline(Duration::from_secs(120), || {
            let mut bytes = templates()[t].clone();
            for m in &muts {
                bytes = apply(bytes, m);
            }
            attack("hostile-mut", &bytes);
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_files_are_refused_or_safe(
        magic in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 1..2048),
    ) {
        with_deadline(Duration::from_secs(120), || {
            let mut bytes = Vec::new();
            if magic {
                bytes.extend_from_slice(&mproc::segment::MAGIC.to_ne_bytes());
            }
            bytes.extend_from_slice(&body);
            attack("hostile-rand", &bytes);
        });
    }
}

#[test]
fn unmodified_templates_open() {
    // The control: the templates themselves are valid (so the mutations test something).
    for (i, bytes) in templates().iter().enumerate() {
        let name = unique_name("hostile-ok");
        let path = format!("/dev/shm/{name}");
        std::fs::write(&path, bytes).unwrap();
        let r = SegmentOptions::any().open(&name);
        std::fs::remove_file(&path).unwrap();
        assert!(r.is_ok(), "template {i}: {r:?}");
    }
}

#[test]
fn an_empty_file_is_waited_for_then_refused() {
    // Length 0 is what an opener sees before the creator has sized the segment: it waits for
    // its open timeout, then reports NotReady — it never maps or reads anything.
    let name = unique_name("hostile-empty");
    let planted = Planted(format!("/dev/shm/{name}"));
    std::fs::write(&planted.0, b"").unwrap();
    let t = std::time::Instant::now();
    let r = SegmentOptions::any()
        .open_timeout(Duration::from_millis(50))
        .open(&name);
    assert!(
        matches!(
            r,
            Err(SegmentError::NotReady {
                creator_dead: false
            })
        ),
        "{r:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
}
