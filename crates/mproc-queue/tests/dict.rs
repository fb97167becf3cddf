//! `Dict` across real processes: the same answers as a `HashMap`, readers in other
//! processes that never see a torn or stale-then-fresh-then-stale value, a writer SIGKILLed
//! at every step of every kind of write (with a reader checking throughout), and a hostile
//! peer scribbling over the shared words.

use std::collections::HashMap;
use std::time::Duration;

use mproc_queue::dict::crash_points;
use mproc_queue::{BytesDict, Dict, DictError, DictOptions, PodQueue};
use mproc_segment::SegmentError;
use mproc_testkit::{
    Exit, Rng, fork_child, fork_in_pid_namespace, shm_entries, unique_name, with_deadline,
};
use proptest::prelude::*;

const LONG: Duration = Duration::from_secs(120);

/// A value that shows if it was torn or misplaced: its bytes are a function of the key, the
/// version and the index.
type Val = (u64, u64, Vec<u8>);

fn val(key: u64, version: u64, len: usize) -> Val {
    let body = (0..len)
        .map(|i| (key.wrapping_mul(31) ^ version.wrapping_mul(7) ^ i as u64) as u8)
        .collect();
    (key, version, body)
}

fn valid(key: u64, v: &Val) -> bool {
    v.0 == key && *v == val(key, v.1, v.2.len())
}

/// Space accounting holds: every arena byte is in an entry or free, and the counts agree.
fn assert_no_leak<K, V>(d: &Dict<K, V>)
where
    K: serde::Serialize + serde::de::DeserializeOwned,
    V: serde::Serialize + serde::de::DeserializeOwned,
{
    let s = d.stats().unwrap();
    assert_eq!(s.used_bytes + s.free_bytes, s.arena_bytes, "{s:?}");
    assert_eq!(s.entries as usize, d.len(), "{s:?}");
    assert_eq!(d.items().unwrap().len(), d.len());
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, usize),
    Remove(u8),
    Get(u8),
    Update(u8),
    Cas(u8, bool),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..40, 0usize..700).prop_map(|(k, n)| Op::Insert(k, n)),
        3 => (0u8..40).prop_map(Op::Remove),
        3 => (0u8..40).prop_map(Op::Get),
        2 => (0u8..40).prop_map(Op::Update),
        2 => (0u8..40, any::<bool>()).prop_map(|(k, b)| Op::Cas(k, b)),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every operation answers as `std`'s `HashMap` does; an insert that does not fit fails
    /// with `Full` and changes nothing; no byte of the arena is ever lost.
    #[test]
    fn answers_as_a_hashmap_does(ops in proptest::collection::vec(op(), 1..300)) {
        // A small arena: entries of up to ~750 bytes in 16 KiB, so `Full` and the
        // coalescing rebuild before it both happen.
        let d: Dict<u8, Vec<u8>> = DictOptions::new().entries(16).bytes(16 << 10).anonymous().unwrap();
        let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(k, n) => {
                    let v = vec![i as u8; n];
                    match d.insert(k, v.clone()) {
                        Ok(old) => prop_assert_eq!(old, model.insert(k, v)),
                        Err(DictError::Full { .. }) => {}
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Remove(k) => prop_assert_eq!(d.remove(&k).unwrap(), model.remove(&k)),
                Op::Get(k) => {
                    prop_assert_eq!(d.get(&k).unwrap(), model.get(&k).cloned());
                    prop_assert_eq!(d.contains_key(&k).unwrap(), model.contains_key(&k));
                }
                Op::Update(k) => {
                    let f = |v: Option<Vec<u8>>| match v {
                        Some(mut v) if v.len() % 2 == 0 => { v.push(1); Some(v) }
                        Some(_) => None,
                        None => Some(vec![9]),
                    };
                    let expect = f(model.get(&k).cloned());
                    match d.update(&k, f) {
                        Ok(new) => {
                            prop_assert_eq!(&new, &expect);
                            match expect {
                                Some(v) => { model.insert(k, v); }
                                None => { model.remove(&k); }
                            }
                        }
                        Err(DictError::Full { .. }) => {}
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Cas(k, right) => {
                    let now = model.get(&k).cloned();
                    let current = if right { now.clone() } else { Some(vec![0xee; 3]) };
                    let new = vec![i as u8; 5];
                    let got = d.compare_and_swap(&k, current.as_ref(), Some(&new)).unwrap();
                    if current == now {
                        prop_assert_eq!(got, Ok(()));
                        model.insert(k, new);
                    } else {
                        prop_assert_eq!(got, Err(now));
                    }
                }
                Op::Clear => {
                    d.clear().unwrap();
                    model.clear();
                }
            }
            prop_assert_eq!(d.len(), model.len());
        }
        let mut items = d.items().unwrap();
        items.sort();
        let mut expect: Vec<_> = model.into_iter().collect();
        expect.sort();
        prop_assert_eq!(items, expect);
        let s = d.stats().unwrap();
        prop_assert_eq!(s.used_bytes + s.free_bytes, s.arena_bytes);
    }
}

#[test]
fn churn_of_every_size_never_fragments_a_half_full_arena_into_full() {
    let d: Dict<u32, Vec<u8>> = DictOptions::new()
        .entries(64)
        .bytes(64 << 10)
        .anonymous()
        .unwrap();
    let mut rng = Rng(5);
    let mut live: HashMap<u32, usize> = HashMap::new();
    for i in 0..20_000u32 {
        let k = (rng.next_u64() % 48) as u32;
        let n: usize = [10, 100, 300, 900, 2000][(rng.next_u64() % 5) as usize];
        // At most 48 × 2 KiB blocks = 96 KiB… keep the live bytes under half the arena by
        // removing before inserting a big one when the sum would pass it.
        let used: usize = live.values().map(|&n| (n + 40).next_power_of_two()).sum();
        if used + (n + 40).next_power_of_two() > 28 << 10 {
            d.remove(&k).unwrap();
            live.remove(&k);
            continue;
        }
        d.insert(k, vec![i as u8; n])
            .unwrap_or_else(|e| panic!("insert {i} with {used} bytes live: {e}"));
        live.insert(k, n);
    }
    assert_no_leak(&d);
}

#[test]
fn readers_in_other_processes_never_see_a_torn_or_older_value() {
    with_deadline(LONG, || {
        const KEYS: u64 = 64;
        let d: Dict<u64, Val> = DictOptions::new()
            .entries(KEYS as usize)
            .bytes(64 << 10)
            .anonymous()
            .unwrap();
        for k in 0..KEYS {
            d.insert(k, val(k, 0, 8)).unwrap();
        }
        let readers: Vec<_> = (0..2)
            .map(|r| {
                fork_child(|| {
                    // Versions only go up (one writer), so a reader that sees a version go
                    // down saw a stale value after a fresh one.
                    let mut seen = vec![0u64; KEYS as usize];
                    let mut rng = Rng(r + 1);
                    loop {
                        let k = rng.next_u64() % KEYS;
                        match d.get(&k) {
                            Ok(Some(v)) if valid(k, &v) && v.1 >= seen[k as usize] => {
                                seen[k as usize] = v.1;
                            }
                            _ => return 1,
                        }
                        if d.contains_key(&u64::MAX).unwrap_or(false) {
                            return 0;
                        }
                    }
                })
            })
            .collect();
        let mut rng = Rng(9);
        for version in 1..40_000u64 {
            let k = rng.next_u64() % KEYS;
            // Sizes vary, so blocks come from free lists, splits and the bump pointer.
            let len = (rng.next_u64() % 400) as usize;
            d.insert(k, val(k, version, len)).unwrap();
        }
        d.insert(u64::MAX, val(u64::MAX, 0, 0)).unwrap();
        for mut r in readers {
            assert_eq!(r.wait_deadline(LONG).exit, Exit::Code(0));
        }
        assert_no_leak(&d);
    });
}

/// One kind of write, done on a dict set up the same way each round.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// Replaces a key's value (a block off a free list: readers' blocks rewritten).
    Replace,
    /// Adds a key (a block from the bump pointer).
    Add,
    /// Adds a key whose block is split off a larger free one.
    AddBySplit,
    /// Adds a key that only fits once free space is coalesced (the rebuild).
    AddByRebuild,
    Remove,
    Update,
    Clear,
    /// Repairs after another writer's death (a repair killed part way).
    Repair,
}

const KEYS: u64 = 24;

/// The state each round starts from, with room in the right places for `w`.
fn setup(d: &Dict<u64, Val>, w: Write) {
    d.clear().unwrap();
    for k in 0..KEYS {
        d.insert(k, val(k, 1, 40)).unwrap();
    }
    match w {
        // Blocks of the replacement's size on the free list.
        Write::Replace => {
            d.insert(100, val(100, 1, 40)).unwrap();
            d.remove(&100).unwrap();
        }
        // The arena full but for one free 1 KiB block.
        Write::AddBySplit => {
            d.insert(101, val(101, 1, 900)).unwrap();
            fill(d);
            d.remove(&101).unwrap();
        }
        // The arena full, then 8 neighbouring 128-byte blocks freed: 1 KiB free, but no
        // free block of 512 bytes until they are coalesced.
        Write::AddByRebuild => {
            fill(d);
            for j in 1000..1008 {
                d.remove(&j).unwrap();
            }
        }
        _ => {}
    }
}

/// Fills the arena with 128-byte entries (keys from 1000, inserted one after the other, so
/// their blocks are neighbours).
fn fill(d: &Dict<u64, Val>) {
    let mut k = 1000;
    while d.insert(k, val(k, 1, 40)).is_ok() {
        k += 1;
    }
    assert!(k > 1010, "{k}");
}

/// Does `w` (in the child that may be killed at any step of it).
fn write(d: &Dict<u64, Val>, w: Write) -> Result<(), DictError> {
    match w {
        Write::Replace => d.insert(3, val(3, 2, 40)).map(drop),
        Write::Add => d.insert(50, val(50, 2, 40)).map(drop),
        Write::AddBySplit => d.insert(51, val(51, 2, 40)).map(drop),
        Write::AddByRebuild => d.insert(52, val(52, 2, 400)).map(drop),
        Write::Remove => d.remove(&3).map(drop),
        Write::Update => d
            .update(&3, |v| v.map(|v| val(3, 2, v.2.len() + 100)))
            .map(drop),
        Write::Clear => d.clear(),
        Write::Repair => d.repair().map(drop),
    }
}

/// Every key holds its old value or the one `w` writes (or is absent where `w` removes),
/// and nothing else changed.
fn check_old_or_new(d: &Dict<u64, Val>, w: Write) {
    for k in 0..KEYS {
        let got = d.get(&k).unwrap();
        let old = Some(val(k, 1, 40));
        let ok = match (w, k) {
            (Write::Clear, _) => got.is_none() || got == old,
            (Write::Replace, 3) => got == old || got == Some(val(3, 2, 40)),
            (Write::Remove, 3) => got == old || got.is_none(),
            (Write::Update, 3) => got == old || got == Some(val(3, 2, 140)),
            _ => got == old,
        };
        assert!(ok, "{w:?}: key {k} holds {got:?}");
    }
    for (k, new) in [(50, 40), (51, 40), (52, 400)] {
        let got = d.get(&k).unwrap();
        assert!(
            got.is_none() || got == Some(val(k, 2, new)),
            "{w:?}: {got:?}"
        );
    }
}

#[test]
fn a_writer_killed_at_every_step_leaves_each_key_old_or_new_and_leaks_nothing() {
    with_deadline(LONG * 2, || {
        let writes = [
            Write::Replace,
            Write::Add,
            Write::AddBySplit,
            Write::AddByRebuild,
            Write::Remove,
            Write::Update,
            Write::Clear,
            Write::Repair,
        ];
        for w in writes {
            let d: Dict<u64, Val> = DictOptions::new()
                .entries(32)
                .bytes(16 << 10)
                .anonymous()
                .unwrap();
            // A reader in another process checks every value it can reach, all along.
            let reader = fork_child(|| {
                let mut rng = Rng(7);
                loop {
                    let k = rng.next_u64() % (KEYS + 4);
                    match d.get(&k) {
                        Ok(Some(v)) if !valid(k, &v) => return 1,
                        Ok(_) | Err(DictError::OwnerDied(_)) => {}
                        Err(_) => return 2,
                    }
                    if let Ok(Some(_)) = d.get(&u64::MAX) {
                        return 0;
                    }
                }
            });
            let mut killed_at = 0;
            for step in 1.. {
                setup(&d, w);
                let repairs = d.stats().unwrap().repairs;
                if let Write::Repair = w {
                    // A writer dies holding the lock, so the next one has a repair to do.
                    let mut c = fork_child(|| {
                        crash_points::arm(3);
                        let _ = d.insert(60, val(60, 2, 40));
                        3
                    });
                    assert_eq!(c.wait_deadline(LONG).exit, Exit::Signaled(9));
                }
                let mut child = fork_child(|| {
                    crash_points::arm(step);
                    match write(&d, w) {
                        Ok(()) => 0,
                        Err(_) => 1,
                    }
                });
                let exit = child.wait_deadline(LONG).exit;
                match exit {
                    Exit::Signaled(9) => {
                        killed_at = step;
                        // Repaired once: here, or by the reader if it needed the lock.
                        if let Some(r) = d.repair().unwrap() {
                            assert_eq!(r.dropped, 0);
                        }
                        // (A repair killed part way counts only when it is done again.)
                        assert_eq!(d.stats().unwrap().repairs, repairs + 1, "{w:?} step {step}");
                    }
                    // Every step passed: the write finished.
                    Exit::Code(0) => break,
                    other => panic!("{w:?} step {step}: {other:?}"),
                }
                if let Write::Repair = w {
                    // The writer killed first may have linked its key in, or not.
                    let got = d.get(&60).unwrap();
                    assert!(got.is_none() || got == Some(val(60, 2, 40)));
                    let _ = d.remove(&60).unwrap();
                }
                check_old_or_new(&d, w);
                assert_no_leak(&d);
                // And the dict goes on working.
                d.insert(70, val(70, 1, 40)).unwrap();
                assert_eq!(d.remove(&70).unwrap(), Some(val(70, 1, 40)));
            }
            assert!(killed_at >= 3, "{w:?}: only {killed_at} steps");
            d.insert(u64::MAX, val(u64::MAX, 0, 0)).unwrap();
            let mut reader = reader;
            assert_eq!(reader.wait_deadline(LONG).exit, Exit::Code(0), "{w:?}");
        }
    });
}

#[test]
fn a_writer_killed_at_random_under_load_is_repaired_by_the_next_with_owner_died() {
    with_deadline(LONG, || {
        let d: Dict<u64, Val> = DictOptions::new()
            .entries(64)
            .bytes(32 << 10)
            .anonymous()
            .unwrap();
        let mut rng = Rng(3);
        let mut died = 0;
        for round in 0..20u64 {
            let (steps, seed) = (1 + rng.next_u64() % 2000, rng.next_u64());
            let mut child = fork_child(|| {
                crash_points::arm(steps);
                let mut rng = Rng(seed);
                for version in 0.. {
                    let k = rng.next_u64() % 64;
                    let r = match rng.next_u64() % 4 {
                        0 => d.remove(&k).map(drop),
                        _ => d
                            .insert(k, val(k, version, (rng.next_u64() % 300) as usize))
                            .map(drop),
                    };
                    match r {
                        Ok(()) | Err(DictError::Full { .. }) | Err(DictError::OwnerDied(_)) => {}
                        Err(_) => return 1,
                    }
                }
                0
            });
            assert_eq!(child.wait_deadline(LONG).exit, Exit::Signaled(9), "{round}");
            // The next writer finds the death: its call is not done, and it says so.
            match d.insert(999, val(999, round, 8)) {
                Err(DictError::OwnerDied(r)) => {
                    died += 1;
                    assert_eq!(r.entries as usize, d.len());
                }
                other => panic!("round {round}: {other:?}"),
            }
            d.insert(999, val(999, round, 8)).unwrap();
            for (k, v) in d.items().unwrap() {
                assert!(valid(k, &v), "{k}: {v:?}");
            }
            assert_no_leak(&d);
        }
        assert_eq!(died, 20);
    });
}

#[test]
fn scribbled_shared_words_give_typed_results_never_a_panic_or_a_hang() {
    with_deadline(LONG, || {
        for round in 0..40u64 {
            let d: Dict<u64, Val> = DictOptions::new()
                .entries(32)
                .bytes(16 << 10)
                .anonymous()
                .unwrap();
            for k in 0..40 {
                d.insert(k, val(k, 1, (k * 7 % 200) as usize)).unwrap();
            }
            // In a child, so a panic or a crash shows as its exit; the deadline catches a hang.
            let mut child = fork_child(|| {
                let seg = d.segment();
                let words = seg.len() / 8;
                let mut rng = Rng(round * 1000 + 1);
                for i in 0..400u64 {
                    let w = (rng.next_u64() % words as u64) as usize;
                    // The writers' lock (bytes 128..176 of the header) is left alone: a peer
                    // that holds a lock forever blocks writers whatever the lock, and that is
                    // not what this checks.
                    if (16..22).contains(&w) {
                        continue;
                    }
                    let value = match rng.next_u64() % 5 {
                        0 => 0,
                        1 => u64::MAX,
                        2 => i,
                        // Plausible offsets and lengths are the nastiest values.
                        3 => (rng.next_u64() % seg.len() as u64) & !7,
                        _ => rng.next_u64(),
                    };
                    // SAFETY: in bounds (w < len / 8) and 8-aligned; the dict's shared words
                    // are only accessed atomically, so this is an ordinary racing store.
                    unsafe {
                        std::sync::atomic::AtomicU64::from_ptr(seg.as_ptr().cast::<u64>().add(w))
                            .store(value, std::sync::atomic::Ordering::Relaxed);
                    }
                    let k = rng.next_u64() % 48;
                    let _ = d.get(&k);
                    let _ = d.insert(k, val(k, i, (rng.next_u64() % 300) as usize));
                    let _ = d.remove(&(k + 1));
                    let _ = d.len();
                    if i % 16 == 0 {
                        let _ = d.items();
                        let _ = d.stats();
                        let _ = d.update(&k, |v| v);
                    }
                }
                // After the last repair the dict is whole again: writes work and no byte is
                // lost (entries past a cut chain may be gone).
                loop {
                    match d.insert(5000, val(5000, 1, 8)) {
                        Ok(_) => break,
                        Err(DictError::Corrupt(_)) | Err(DictError::OwnerDied(_)) => {}
                        Err(DictError::Full { .. }) => {
                            let _ = d.clear();
                        }
                        Err(_) => return 2,
                    }
                }
                // The first survey may find (and repair) what the insert did not walk: a
                // scribbled free list; the one after must find everything whole.
                for _ in 0..2 {
                    match d.stats() {
                        Ok(s) if s.used_bytes + s.free_bytes == s.arena_bytes => return 0,
                        Ok(_) => return 3,
                        Err(DictError::Corrupt(_)) => {}
                        Err(_) => return 4,
                    }
                }
                5
            });
            let r = child.wait_deadline(LONG);
            assert_eq!(r.exit, Exit::Code(0), "round {round}");
        }
    });
}

#[test]
fn named_dicts_check_kind_and_types_and_are_unlinked_by_their_creator() {
    let name = unique_name("dict");
    let d: Dict<String, u64> = Dict::create(&name).unwrap();
    d.insert("a".into(), 1).unwrap();
    let other: Dict<String, u64> = Dict::open(&name).unwrap();
    assert_eq!(other.get("a").unwrap(), Some(1));
    assert!(matches!(
        Dict::<String, i64>::open(&name),
        Err(SegmentError::TypeMismatch { .. })
    ));
    assert!(matches!(
        mproc_queue::PodQueue::<u64>::open(&name),
        Err(SegmentError::KindMismatch { .. })
    ));
    // Bytes and a user-chosen name.
    let named = unique_name("dict-named");
    let b = DictOptions::new()
        .type_name("app/v1")
        .create_bytes(&named)
        .unwrap();
    b.insert(b"x", b"y").unwrap();
    let again = DictOptions::new()
        .type_name("app/v1")
        .open_bytes(&named)
        .unwrap();
    assert_eq!(again.get(b"x").unwrap(), Some(b"y".to_vec()));
    assert!(DictOptions::new().open_bytes(&named).is_err());
    assert!(BytesDict::new().unwrap().get(b"x").unwrap().is_none());
    // Sizes out of range are refused before anything is made.
    assert!(DictOptions::new().bytes(0).anonymous::<u8, u8>().is_err());
    assert!(
        DictOptions::new()
            .entries(usize::MAX)
            .anonymous::<u8, u8>()
            .is_err()
    );
    // An entry that could never fit.
    let small: Dict<u8, Vec<u8>> = DictOptions::new().bytes(1024).anonymous().unwrap();
    assert!(matches!(
        small.insert(1, vec![0; 4096]),
        Err(DictError::TooLarge { .. })
    ));
    assert!(small.is_empty());
    drop((d, other, b, again));
    assert!(shm_entries(&name).is_empty() && shm_entries(&named).is_empty());
}

#[test]
fn writers_in_other_pid_namespaces_share_one_dict_and_their_deaths_are_repaired() {
    with_deadline(LONG, || {
        let name = unique_name("dict-ns");
        let d: Dict<u64, u64> = Dict::create(&name).unwrap();
        let done = PodQueue::<u64>::new(8).unwrap();
        // Two writers in their own pid namespaces count into the same keys.
        let writers: Vec<_> = (0..2)
            .map(|_| {
                fork_in_pid_namespace(false, || {
                    let d: Dict<u64, u64> = match Dict::open(&name) {
                        Ok(d) => d,
                        Err(_) => return 1,
                    };
                    for i in 0..2000u64 {
                        let k = i % 8;
                        loop {
                            match d.update(&k, |v| Some(v.unwrap_or(0) + 1)) {
                                Ok(_) => break,
                                Err(DictError::OwnerDied(_)) => continue,
                                Err(_) => return 2,
                            }
                        }
                    }
                    i32::from(done.put(1).is_err())
                })
            })
            .collect();
        for mut w in writers {
            assert_eq!(w.wait_deadline(LONG).exit, Exit::Code(0));
        }
        let total: u64 = (0..8).map(|k| d.get(&k).unwrap().unwrap_or(0)).sum();
        assert_eq!(total, 4000, "no increment lost");
        // A writer in another namespace killed holding the lock: its death is seen here,
        // whatever its pid means in this namespace.
        // (The writer is process 2 there: process 1 of a namespace cannot kill itself.)
        let mut victim = fork_in_pid_namespace(false, || {
            let d: Dict<u64, u64> = match Dict::open(&name) {
                Ok(d) => d,
                Err(_) => return 1,
            };
            let mut writer = fork_child(|| {
                crash_points::arm(2);
                let _ = d.insert(77, 77);
                3
            });
            match writer.wait_deadline(LONG).exit {
                Exit::Signaled(9) => 0,
                _ => 4,
            }
        });
        let exit = victim.wait_deadline(LONG).exit;
        assert_eq!(exit, Exit::Code(0));
        assert!(d.repair().unwrap().is_some(), "{exit:?}");
        assert_no_leak(&d);
    });
}
