//! Where a message's bytes go: inline in its ring slot when they fit, else in the queue's
//! body arena with a reference in the slot. Shared by [`Queue`](crate::Queue),
//! [`ByteQueue`](crate::ByteQueue) and the loans.
//!
//! # Slot format
//! `len: u32 | kind: u32 | ...`:
//! - kind 0 (inline): `len` bytes of message follow;
//! - kind 2 (arena): `len == 16`, then the chunk's arena position (`u64`) and the body's
//!   byte length (`u64`);
//! - kind 3 (dropped): a producer found its chunk rewritten by a peer while linking it; the
//!   consumer reports the message as unreadable.
//!
//! Everything read from a slot is checked: lengths against the slot and the arena, the chunk
//! word against the ring position that references it (see [`Arena::linked`]).

use mproc_segment::liveness;

use crate::arena::Arena;
use crate::error::GetError;
use crate::raw::{RawQueue, ShmEntries};
use crate::wait::{Refused, Wait};

/// Bytes of the slot prefix (`len`, `kind`).
pub(crate) const PREFIX: usize = 8;
const INLINE: u32 = 0;
const ARENA: u32 = 2;
const DROPPED: u32 = 3;
/// Bytes of an arena reference after the prefix.
const REF: usize = 16;

/// Pops one message and hands its bytes to `read` (inline: the slot; arena: the chunk,
/// freed afterwards).
pub(crate) fn receive<R>(
    raw: &RawQueue,
    wait: Wait,
    mut read: impl FnMut(&[u8]) -> R,
) -> Result<R, GetError> {
    let take = |slot: &[u8], ring_pos: u64| match locate(raw, slot, ring_pos) {
        Ok(Located::Inline(body)) => Ok(read(body)),
        Ok(Located::Chunk { pos, word, len }) => {
            // SAFETY: `locate` checked that the chunk is Linked to our ring position (which
            // we hold Reading) and that `len` bytes from its start lie inside the arena;
            // nobody writes it until we free it below.
            let body = unsafe { std::slice::from_raw_parts(raw.chunk_ptr(pos), len) };
            let r = read(body);
            if let Some(arena) = raw.arena() {
                arena.free(pos, word);
            }
            Ok(r)
        }
        Err(e) => Err(e),
    };
    wait.pop(raw, take)?
        .map_err(|reason| GetError::Unreadable { reason })
}

/// Finds the bytes of the message in `slot` (held Reading at `ring_pos`).
pub(crate) fn locate<'s>(
    raw: &RawQueue,
    slot: &'s [u8],
    ring_pos: u64,
) -> Result<Located<'s>, String> {
    let malformed = || "slot holds a malformed message".to_string();
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(slot.get(at..at + 4)?.try_into().ok()?))
    };
    let (Some(len), Some(kind)) = (word(0), word(4)) else {
        return Err(malformed());
    };
    let body = PREFIX
        .checked_add(len as usize)
        .and_then(|end| slot.get(PREFIX..end))
        .ok_or_else(malformed)?;
    match kind {
        INLINE => Ok(Located::Inline(body)),
        ARENA if body.len() == REF => {
            let pos = u64::from_ne_bytes(body[..8].try_into().map_err(|_| malformed())?);
            let size = u64::from_ne_bytes(body[8..].try_into().map_err(|_| malformed())?);
            let size = usize::try_from(size).map_err(|_| malformed())?;
            let (Some(arena), Some(units)) = (raw.arena(), raw.units_for(size)) else {
                return Err(malformed());
            };
            match arena.linked(pos, units, ring_pos) {
                Some(word) => Ok(Located::Chunk {
                    pos,
                    word,
                    len: size,
                }),
                None => Err("message body missing from the arena (reclaimed or rewritten)".into()),
            }
        }
        DROPPED => Err("message body was rewritten by a peer before it was sent".into()),
        _ => Err(malformed()),
    }
}

/// Sends `bytes` inline (the caller checked that they fit the slot).
pub(crate) fn send_inline(raw: &RawQueue, bytes: &[u8], wait: Wait) -> Result<(), Refused> {
    wait.push(raw, |slot, _| {
        slot[..4].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
        slot[4..8].copy_from_slice(&INLINE.to_ne_bytes());
        slot[PREFIX..PREFIX + bytes.len()].copy_from_slice(bytes);
    })
}

/// Bytes a message may have to travel inline.
pub(crate) fn inline_room(raw: &RawQueue) -> usize {
    raw.slot_size().saturating_sub(PREFIX)
}

/// Allocates an arena chunk for `size` bytes, waiting as `wait` says.
pub(crate) fn alloc_body(raw: &RawQueue, size: usize, wait: Wait) -> Result<u64, Refused> {
    let Some(units) = raw.units_for(size) else {
        return Err(Refused::TooLarge {
            max: raw.arena_bytes(),
        });
    };
    wait.alloc(raw, units)
}

/// Frees an arena chunk this process allocated and never sent.
pub(crate) fn free_unsent(raw: &RawQueue, pos: u64) {
    if let Some(arena) = raw.arena() {
        if let Some(w) = arena.writing(pos, liveness::me()) {
            arena.free(pos, w);
        }
    }
}

/// Sends a message whose `size` bytes `write` puts into an arena chunk.
pub(crate) fn send_arena(
    raw: &RawQueue,
    size: usize,
    wait: Wait,
    write: impl FnOnce(&mut [u8]) -> Result<(), String>,
) -> Result<(), Refused> {
    let pos = alloc_body(raw, size, wait)?;
    // SAFETY: the chunk at `pos` is ours (Writing(me), just allocated) and `size` bytes
    // from its start lie inside the arena (`units_for` and the allocator never let a chunk
    // wrap); nobody else reads or writes it until we link it.
    let body = unsafe { std::slice::from_raw_parts_mut(raw.chunk_ptr(pos), size) };
    if let Err(e) = write(body) {
        free_unsent(raw, pos);
        return Err(Refused::Unsendable(e));
    }
    link_chunk(raw, pos, size, wait, false)
}

/// Pushes a reference to chunk `pos` (ours, filled with `size` bytes) and hands the chunk
/// to the slot. If the push fails the chunk is freed, unless `keep` (a loan keeps it).
pub(crate) fn link_chunk(
    raw: &RawQueue,
    pos: u64,
    size: usize,
    wait: Wait,
    keep: bool,
) -> Result<(), Refused> {
    let me = liveness::me();
    let mut linked = false;
    let arena: Option<Arena<'_, ShmEntries<'_>>> = raw.arena();
    let r = wait.push(raw, |slot, ring_pos| {
        linked = arena.as_ref().is_some_and(|a| a.link(pos, me, ring_pos));
        let kind = if linked { ARENA } else { DROPPED };
        slot[..4].copy_from_slice(&(REF as u32).to_ne_bytes());
        slot[4..8].copy_from_slice(&kind.to_ne_bytes());
        slot[PREFIX..PREFIX + 8].copy_from_slice(&pos.to_ne_bytes());
        slot[PREFIX + 8..PREFIX + REF].copy_from_slice(&(size as u64).to_ne_bytes());
    });
    if r.is_err() && !keep {
        free_unsent(raw, pos);
    }
    match r {
        Ok(()) if !linked => Err(Refused::Unsendable(
            "arena chunk was rewritten by a peer before it was sent".into(),
        )),
        r => r,
    }
}

/// Where a message's bytes are.
pub(crate) enum Located<'s> {
    Inline(&'s [u8]),
    Chunk { pos: u64, word: u64, len: usize },
}

/// The smallest slot a message queue can have: the prefix and an arena reference.
pub(crate) const MIN_MESSAGE_SLOT: usize = PREFIX + REF;
