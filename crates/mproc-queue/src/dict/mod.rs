//! `Dict<K, V>`: a hash map in one shared-memory segment that many processes read and write
//! at once, and that stays consistent when a writer is SIGKILLed in the middle of a write
//! (Python's `Manager().dict()` without the manager process).
//!
//! Keys and values are serde types, stored as their postcard bytes (the [`codec`]
//! every queue uses); [`BytesDict`] is the same map over raw bytes. Reads take no lock;
//! writers take turns under a robust lock, write each new entry into a fresh block and link
//! it in with one 8-byte store. How that survives a writer's death, and how readers validate
//! what they copy, is in the `map` module's docs.
//!
//! # Capacity
//! The bucket table and the arena are sized at create ([`DictOptions`]) and do not grow: a
//! dict that is full fails an insert with [`DictError::Full`] and loses nothing. Growing by
//! re-mapping would need every process, readers included, to notice a new size and map it
//! before following any offset past its old end — a check on every hop of every lock-free
//! read, and a segment that can only grow while a reader holds the old mapping. Size the
//! arena for the peak instead: untouched pages of a shared mapping cost no memory.
//! Before it reports `Full`, an insert coalesces the free space (a rebuild), so churn of
//! different sizes does not fragment the arena into `Full`.

mod map;

use std::borrow::{Borrow, Cow};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;

use mproc_segment::{Kind, Segment, SegmentError, SegmentOptions, TypeTag};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use map::{Map, SetError};

#[cfg(feature = "crash-points")]
pub use map::crash_points;
pub use map::{ByteEntry, DictStats, hash_key};

/// Entries a dict is sized for unless set.
pub const DEFAULT_ENTRIES: usize = 1024;
/// Arena bytes per entry a dict gets unless its size is set.
pub const DEFAULT_BYTES_PER_ENTRY: usize = 256;

/// What a repair did: after a writer's death ([`DictError::OwnerDied`]) or on finding the
/// structure broken ([`DictError::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    /// Entries in the dict after the repair.
    pub entries: u64,
    /// Bytes that were neither in an entry nor free (a block the dead writer had taken but
    /// not linked in, or unlinked but not yet freed), free again.
    pub reclaimed_bytes: u64,
    /// Chains cut where they went wrong (0 after a writer's death: only a scribbled
    /// structure has any). The entries past a cut are lost.
    pub dropped: u64,
    /// Whether the free lists were found broken and rebuilt (also 0 after a death in most
    /// cases: the rebuild is done anyway).
    pub free_lists_rebuilt: bool,
}

/// Errors of a [`Dict`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DictError {
    /// A writer died in the middle of a write. The dict is repaired (every key holds its
    /// old or its new value; space the writer held is free again) and this call did
    /// nothing: call it again. Reported once, to the process that repaired it.
    #[error("a writer died mid-write; the dict was repaired ({0:?}); retry the call")]
    OwnerDied(Repair),
    /// The dict's structure was found scribbled over (by a peer with a bug, or worse). It
    /// was repaired as far as it can be (see [`Repair::dropped`]) and this call did nothing.
    #[error("the dict's structure was corrupt and was repaired ({0:?}); retry the call")]
    Corrupt(Repair),
    /// No room for the entry in the arena, even after coalescing free space. Nothing
    /// changed.
    #[error("dict is full: no room for an entry of {size} bytes")]
    Full {
        /// The entry's size (key and value bytes plus a 32-byte head).
        size: usize,
    },
    /// The entry is larger than the whole arena could ever hold. Nothing changed.
    #[error("entry of {size} bytes exceeds the dict's largest block of {max} bytes")]
    TooLarge {
        /// The entry's size (bytes).
        size: usize,
        /// The largest block the arena has (bytes).
        max: u64,
    },
    /// A key or value could not be encoded.
    #[error("could not encode: {0}")]
    Encode(String),
    /// A stored value could not be decoded as `V` (a peer wrote another type under the same
    /// name, or scribbled over it).
    #[error("could not decode a stored value: {0}")]
    Decode(String),
    /// The writers' lock failed (for example: a closure given to `update` called a writing
    /// method of the same dict, which would deadlock).
    #[error("dict lock: {0}")]
    Lock(String),
}

/// Options of a new [`Dict`] or [`BytesDict`]: how many entries and how many bytes.
#[derive(Debug, Clone, Default)]
pub struct DictOptions {
    entries: Option<usize>,
    bytes: Option<usize>,
    type_name: Option<String>,
}

impl DictOptions {
    /// Default options: 1024 entries, 256 arena bytes per entry.
    pub fn new() -> DictOptions {
        DictOptions::default()
    }

    /// How many entries the dict is sized for: the bucket table gets this many buckets
    /// (rounded up to a power of two), and, unless [`bytes`](Self::bytes) is set, the arena
    /// 256 bytes per entry. More entries fit if the arena has room; lookups slow down as
    /// chains grow past one entry per bucket.
    pub fn entries(mut self, n: usize) -> Self {
        self.entries = Some(n);
        self
    }

    /// The arena's size in bytes: every entry takes a block of 64 bytes × a power of two
    /// holding its key, its value and a 32-byte head.
    pub fn bytes(mut self, n: usize) -> Self {
        self.bytes = Some(n);
        self
    }

    /// The type name stored in the segment and checked on open, instead of the key and
    /// value types' `std::any::type_name` (for processes built separately).
    pub fn type_name(mut self, name: impl Into<String>) -> Self {
        self.type_name = Some(name.into());
        self
    }

    fn tag<K, V>(&self) -> TypeTag {
        let name = self.type_name.clone().unwrap_or_else(|| {
            format!(
                "dict:{}=>{}",
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            )
        });
        TypeTag::named::<(K, V)>(name)
    }

    fn make(&self, name: Option<&str>, tag: TypeTag) -> Result<Map, SegmentError> {
        let entries = self.entries.unwrap_or(DEFAULT_ENTRIES);
        let bytes = self
            .bytes
            .unwrap_or_else(|| entries.saturating_mul(DEFAULT_BYTES_PER_ENTRY));
        let geo = map::Geometry::new(entries, bytes)?;
        let len = usize::try_from(geo.payload_len()).map_err(|_| SegmentError::InvalidSize {
            reason: "dict too large",
        })?;
        let opts = SegmentOptions::new(Kind::DICT)
            .type_tag(tag)
            .capacity(geo.buckets)
            .payload_len(len);
        let init = |seg: &Segment| Map::init(seg, geo);
        let seg = match name {
            Some(n) => opts.create_with(n, init)?,
            None => opts.anonymous_with(init)?,
        };
        Map::wrap(seg)
    }

    /// Creates a named dict.
    pub fn create<K, V>(&self, name: &str) -> Result<Dict<K, V>, SegmentError> {
        Ok(Dict::from_map(self.make(Some(name), self.tag::<K, V>())?))
    }

    /// Makes an anonymous dict (shared with children by fork, or by descriptor).
    pub fn anonymous<K, V>(&self) -> Result<Dict<K, V>, SegmentError> {
        Ok(Dict::from_map(self.make(None, self.tag::<K, V>())?))
    }

    /// Opens a named dict, checking the key and value types (or the name set with
    /// [`type_name`](Self::type_name)).
    pub fn open<K, V>(&self, name: &str) -> Result<Dict<K, V>, SegmentError> {
        let opts = SegmentOptions::new(Kind::DICT).type_tag(self.tag::<K, V>());
        Ok(Dict::from_map(Map::wrap(opts.open(name)?)?))
    }

    /// Creates a named [`BytesDict`].
    pub fn create_bytes(&self, name: &str) -> Result<BytesDict, SegmentError> {
        Ok(BytesDict {
            map: self.make(Some(name), self.bytes_tag())?,
        })
    }

    /// Makes an anonymous [`BytesDict`].
    pub fn anonymous_bytes(&self) -> Result<BytesDict, SegmentError> {
        Ok(BytesDict {
            map: self.make(None, self.bytes_tag())?,
        })
    }

    /// Opens a named [`BytesDict`].
    pub fn open_bytes(&self, name: &str) -> Result<BytesDict, SegmentError> {
        let opts = SegmentOptions::new(Kind::DICT).type_tag(self.bytes_tag());
        Ok(BytesDict {
            map: Map::wrap(opts.open(name)?)?,
        })
    }

    fn bytes_tag(&self) -> TypeTag {
        TypeTag::named::<u8>(
            self.type_name
                .clone()
                .unwrap_or_else(|| "dict:bytes".to_string()),
        )
    }
}

thread_local! {
    /// A value's bytes between the copy out of shared memory and the decode.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer (this thread's, or a new one if a decode re-entered).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// Runs `f` on the encoding of `value` (on the stack when it is short).
fn with_encoded<T: Serialize + ?Sized, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, DictError> {
    let mut stack = [0u8; 128];
    match codec::encode_to_slice(value, &mut stack) {
        Ok(bytes) => Ok(f(bytes)),
        Err(postcard::Error::SerializeBufferFull) => {
            let mut heap = Vec::new();
            codec::encode_into(value, &mut heap).map_err(|e| DictError::Encode(e.to_string()))?;
            Ok(f(&heap))
        }
        Err(e) => Err(DictError::Encode(e.to_string())),
    }
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, DictError> {
    codec::decode(bytes).map_err(|e| DictError::Decode(e.to_string()))
}

/// A map from byte strings to byte strings in shared memory: [`Dict`] without the
/// encoding (for keys and values already in bytes, and for other languages' bindings).
///
/// ```
/// let d = mproc_queue::BytesDict::new()?;
/// d.insert(b"k", b"v")?;
/// assert_eq!(d.get(b"k")?, Some(b"v".to_vec()));
/// assert_eq!(d.remove(b"k")?, Some(b"v".to_vec()));
/// assert_eq!(d.get(b"k")?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BytesDict {
    map: Map,
}

impl BytesDict {
    /// An anonymous dict with the default options.
    pub fn new() -> Result<BytesDict, SegmentError> {
        DictOptions::new().anonymous_bytes()
    }

    /// Attaches through a file descriptor (an anonymous dict passed to an `exec`ed child).
    pub fn from_fd(fd: OwnedFd) -> Result<BytesDict, SegmentError> {
        let opts = SegmentOptions::new(Kind::DICT).type_tag(DictOptions::new().bytes_tag());
        Ok(BytesDict {
            map: Map::wrap(opts.from_fd(fd)?)?,
        })
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        self.map.segment()
    }

    /// The value of `key`, if any. Takes no lock.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DictError> {
        let mut out = Vec::new();
        Ok(self.map.get(key, &mut out)?.then_some(out))
    }

    /// Copies the value of `key` into `out` (reusing its allocation); `Ok(false)` if absent.
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, DictError> {
        self.map.get(key, out)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &[u8]) -> Result<bool, DictError> {
        with_scratch(|buf| self.map.get(key, buf))
    }

    /// Sets `key` to `value`, returning the old value.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, DictError> {
        self.write(key, Change::Set(Cow::Borrowed(value)))
    }

    /// Removes `key`, returning its value.
    pub fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DictError> {
        self.write(key, Change::Remove)
    }

    /// Sets `key` to `new` (`None`: removes it) only if its value is `current` now (`None`:
    /// absent). Whether it did.
    pub fn compare_and_swap(
        &self,
        key: &[u8],
        current: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, DictError> {
        let (_, swapped) = self.write_with(
            key,
            |old| {
                if old != current {
                    return (Change::Keep, false);
                }
                match new {
                    Some(n) => (Change::Set(Cow::Borrowed(n)), true),
                    None => (Change::Remove, true),
                }
            },
            false,
        )?;
        Ok(swapped)
    }

    /// Entries now (exact when no write is in flight).
    pub fn len(&self) -> usize {
        self.map.len() as usize
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), DictError> {
        let _guard = self.map.lock()?;
        self.map.clear();
        Ok(())
    }

    /// Every entry's key and value, as of one instant (copied under the writers' lock).
    pub fn items(&self) -> Result<Vec<ByteEntry>, DictError> {
        let guard = self.map.lock()?;
        self.map.entries().map_err(|_| self.map.broken(guard))
    }

    /// Space usage (walks the whole structure under the writers' lock).
    pub fn stats(&self) -> Result<DictStats, DictError> {
        let guard = self.map.lock()?;
        self.map.stats().map_err(|_| self.map.broken(guard))
    }

    /// Repairs the dict now if a writer died mid-write: `Ok(None)` if none did (the same
    /// repair the next write would do).
    pub fn repair(&self) -> Result<Option<Repair>, DictError> {
        match self.map.lock() {
            Ok(_) => Ok(None),
            Err(DictError::OwnerDied(r)) => Ok(Some(r)),
            Err(e) => Err(e),
        }
    }

    /// The core of every write: under the lock, finds `key`, hands its old value's bytes
    /// (if any) to `decide`, and writes what `decide` returns (`None`: remove). Returns the
    /// old value's bytes if `want_old`, and `decide`'s second result.
    pub(crate) fn write(
        &self,
        key: &[u8],
        change: Change<'_>,
    ) -> Result<Option<Vec<u8>>, DictError> {
        self.write_with(key, |_| (change, ()), true)
            .map(|(old, ())| old)
    }

    /// As [`write`](Self::write), with a second result from `decide`.
    pub(crate) fn write_with<'v, R>(
        &self,
        key: &[u8],
        decide: impl FnOnce(Option<&[u8]>) -> (Change<'v>, R),
        want_old: bool,
    ) -> Result<(Option<Vec<u8>>, R), DictError> {
        let guard = self.map.lock()?;
        let hash = hash_key(key);
        let found = match self.map.find(key, hash) {
            Ok(f) => f,
            Err(_) => return Err(self.map.broken(guard)),
        };
        let mut old = Vec::new();
        if let Some(p) = found
            && self.map.read_value(p.at, &mut old).is_err()
        {
            return Err(self.map.broken(guard));
        }
        let (change, r) = decide(found.is_some().then_some(&old[..]));
        let new = match change {
            Change::Keep => None,
            Change::Set(ref v) => Some(Some(&v[..])),
            Change::Remove => found.map(|_| None),
        };
        if let Some(new) = new {
            match self.map.set(key, new, found) {
                Ok(_) => {}
                Err(SetError::Broken) => return Err(self.map.broken(guard)),
                Err(SetError::Corrupt(r)) => {
                    drop(guard);
                    return Err(DictError::Corrupt(r));
                }
                Err(SetError::Full) => {
                    return Err(DictError::Full {
                        size: entry_size(key, new),
                    });
                }
                Err(SetError::TooLarge) => {
                    return Err(DictError::TooLarge {
                        size: entry_size(key, new),
                        max: self.map.geo.arena_len.min(64 << (map::CLASSES - 1)),
                    });
                }
            }
        }
        drop(guard);
        Ok((found.is_some().then_some(old).filter(|_| want_old), r))
    }
}

/// What a write does with the key it found.
pub(crate) enum Change<'v> {
    /// Nothing.
    Keep,
    /// Sets it to these bytes.
    Set(Cow<'v, [u8]>),
    /// Removes it (nothing if absent).
    Remove,
}

fn entry_size(key: &[u8], value: Option<&[u8]>) -> usize {
    map::RECORD_HEAD as usize + key.len() + value.map_or(0, <[u8]>::len)
}

/// The key and value types a `Dict` is for (invariant in both, and `Send`/`Sync` whatever
/// they are: no `K` or `V` is kept).
type Types<K, V> = PhantomData<fn(K, V) -> (K, V)>;

/// A hash map in shared memory from `K` to `V` (serde types), for many processes at once;
/// Python's `Manager().dict()` without a manager process.
///
/// - Reads ([`get`](Self::get), [`contains_key`](Self::contains_key)) take no lock and
///   never see a half-written entry.
/// - Writes ([`insert`](Self::insert), [`remove`](Self::remove), [`update`](Self::update),
///   [`compare_and_swap`](Self::compare_and_swap), [`clear`](Self::clear)) take turns under
///   a robust lock and publish each change with one 8-byte store.
/// - A writer SIGKILLed at any instruction leaves each key at its old or its new value.
///   The next writer (or reader that needs the lock) repairs the dict, frees the space the
///   dead writer held, and is told so with [`DictError::OwnerDied`], its call not done:
///   call it again.
/// - [`items`](Self::items), [`keys`](Self::keys) and [`values`](Self::values) are a
///   snapshot of one instant.
///
/// Keys are compared by their encoding, so a key type must encode equal keys to equal
/// bytes (every type whose equality is that of its fields does; a `HashMap` key does not,
/// as its order varies). A borrowed form (`&str` for `String`) is looked up like the owned
/// one, as with `std`'s `HashMap`.
///
/// ```
/// use mproc_queue::Dict;
/// let d: Dict<String, u64> = Dict::new()?;
/// d.insert("apples".to_string(), 3)?;
/// d.update("apples", |n| Some(n.unwrap_or(0) + 2))?;
/// assert_eq!(d.get("apples")?, Some(5));
/// assert_eq!(d.compare_and_swap("pears", None, Some(&1))?, Ok(()));
/// assert_eq!(d.len(), 2);
/// let mut items = d.items()?;
/// items.sort();
/// assert_eq!(items, [("apples".to_string(), 5), ("pears".to_string(), 1)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Dict<K, V> {
    bytes: BytesDict,
    _t: Types<K, V>,
}

impl<K, V> Dict<K, V> {
    fn from_map(map: Map) -> Dict<K, V> {
        Dict {
            bytes: BytesDict { map },
            _t: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    /// An anonymous dict with the default options (1024 entries, 256 KiB), shared with
    /// children by fork.
    pub fn new() -> Result<Dict<K, V>, SegmentError> {
        DictOptions::new().anonymous()
    }

    /// Creates a named dict with the default options.
    pub fn create(name: &str) -> Result<Dict<K, V>, SegmentError> {
        DictOptions::new().create(name)
    }

    /// Opens a named dict, checking the key and value types.
    pub fn open(name: &str) -> Result<Dict<K, V>, SegmentError> {
        DictOptions::new().open(name)
    }

    /// Attaches through a file descriptor (an anonymous dict passed to an `exec`ed child),
    /// checking the key and value types.
    pub fn from_fd(fd: OwnedFd) -> Result<Dict<K, V>, SegmentError> {
        let opts = SegmentOptions::new(Kind::DICT).type_tag(DictOptions::new().tag::<K, V>());
        Ok(Dict::from_map(Map::wrap(opts.from_fd(fd)?)?))
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        self.bytes.segment()
    }

    /// The dict as bytes (keys and values in their postcard encoding).
    pub fn as_bytes(&self) -> &BytesDict {
        &self.bytes
    }

    /// The value of `key`, if any. Takes no lock.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>, DictError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        with_encoded(key, |k| {
            with_scratch(|buf| {
                if self.bytes.map.get(k, buf)? {
                    decode(buf).map(Some)
                } else {
                    Ok(None)
                }
            })
        })?
    }

    /// Whether `key` has a value. Takes no lock.
    pub fn contains_key<Q>(&self, key: &Q) -> Result<bool, DictError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        with_encoded(key, |k| self.bytes.contains_key(k))?
    }

    /// Sets `key` to `value`, returning the old value.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, DictError> {
        with_encoded(&key, |k| {
            with_encoded(&value, |v| {
                let old = self.bytes.write(k, Change::Set(Cow::Borrowed(v)))?;
                old.map(|o| decode(&o)).transpose()
            })?
        })?
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>, DictError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        with_encoded(key, |k| {
            let old = self.bytes.write(k, Change::Remove)?;
            old.map(|o| decode(&o)).transpose()
        })?
    }

    /// Replaces `key`'s value (or absence) with `f`'s result, atomically: no other write
    /// comes between the read and the write. `f` runs under the writers' lock (keep it
    /// short; it must not write to this dict). Returns the new value.
    pub fn update<Q>(
        &self,
        key: &Q,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<Option<V>, DictError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        with_encoded(key, |k| {
            let mut failure = None;
            let (_, new) = self.bytes.write_with(
                k,
                |old| {
                    let old = match old.map(decode::<V>).transpose() {
                        Ok(o) => o,
                        Err(e) => {
                            failure = Some(e);
                            return (Change::Keep, None);
                        }
                    };
                    let new = f(old);
                    let mut encoded = Vec::new();
                    if let Some(n) = &new
                        && let Err(e) = codec::encode_into(n, &mut encoded)
                    {
                        failure = Some(DictError::Encode(e.to_string()));
                        return (Change::Keep, None);
                    }
                    let change = match new {
                        Some(_) => Change::Set(Cow::Owned(encoded)),
                        None => Change::Remove,
                    };
                    (change, new)
                },
                false,
            )?;
            match failure {
                Some(e) => Err(e),
                None => Ok(new),
            }
        })?
    }

    /// Sets `key` to `new` (`None`: removes it) only if its value is `current` now (`None`:
    /// absent). `Ok(Ok(()))` if it did; `Ok(Err(actual))` with the value found if not.
    pub fn compare_and_swap<Q>(
        &self,
        key: &Q,
        current: Option<&V>,
        new: Option<&V>,
    ) -> Result<Result<(), Option<V>>, DictError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let mut cur = Vec::new();
        if let Some(c) = current {
            codec::encode_into(c, &mut cur).map_err(|e| DictError::Encode(e.to_string()))?;
        }
        let mut next = Vec::new();
        if let Some(n) = new {
            codec::encode_into(n, &mut next).map_err(|e| DictError::Encode(e.to_string()))?;
        }
        with_encoded(key, |k| {
            let (old, swapped) = self.bytes.write_with(
                k,
                |old| {
                    let matches = match (old, current) {
                        (None, None) => true,
                        (Some(o), Some(_)) => o == &cur[..],
                        _ => false,
                    };
                    match (matches, new) {
                        (true, Some(_)) => (Change::Set(Cow::Borrowed(&next[..])), true),
                        (true, None) => (Change::Remove, true),
                        (false, _) => (Change::Keep, false),
                    }
                },
                true,
            )?;
            if swapped {
                Ok(Ok(()))
            } else {
                old.map(|o| decode(&o)).transpose().map(Err)
            }
        })?
    }

    /// Entries now (exact when no write is in flight).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), DictError> {
        self.bytes.clear()
    }

    /// Every entry, as of one instant (the bytes are copied under the writers' lock, then
    /// decoded without it).
    pub fn items(&self) -> Result<Vec<(K, V)>, DictError> {
        self.bytes
            .items()?
            .iter()
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect()
    }

    /// Every key, as of one instant.
    pub fn keys(&self) -> Result<Vec<K>, DictError> {
        self.bytes.items()?.iter().map(|(k, _)| decode(k)).collect()
    }

    /// Every value, as of one instant.
    pub fn values(&self) -> Result<Vec<V>, DictError> {
        self.bytes.items()?.iter().map(|(_, v)| decode(v)).collect()
    }

    /// Space usage: entries, used and free bytes (see [`DictStats`]).
    pub fn stats(&self) -> Result<DictStats, DictError> {
        self.bytes.stats()
    }

    /// Repairs the dict now if a writer died mid-write (`Ok(None)` if none did).
    pub fn repair(&self) -> Result<Option<Repair>, DictError> {
        self.bytes.repair()
    }
}
