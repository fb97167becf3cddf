//! At-most-once queues ([`RedisQueueOptions::at_most_once`](crate::RedisQueueOptions::at_most_once)):
//! the messages live in a Redis list, and a `get` removes what it takes at once. There are no
//! leases and no acknowledgements: a consumer that dies after a `get` loses what it took, and
//! nothing is ever delivered twice. What a list costs the server is what a bare `LPUSH`/`RPOP`
//! loop costs it; an acknowledged queue (a stream with a consumer group) does more per message.
//!
//! Keys (`K` = `PREFIX:{NAME}`): `K:l`, the list, oldest first; `K:meta` and `K:room` as for
//! every queue. An element is `[tag length: 1 byte][HMAC tag][encoded value]`.

use redis::{Script, Value};

use crate::reply::{Entry, int_of};

/// One list element for a value and its tag (empty without an auth key).
pub(crate) fn frame(body: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + tag.len() + body.len());
    out.push(tag.len().min(255) as u8);
    out.extend_from_slice(&tag[..tag.len().min(255)]);
    out.extend_from_slice(body);
    out
}

/// An element as an entry (no id: list elements have none; delivered once). One whose
/// length byte runs past its end keeps all its bytes as the value and no tag: it then fails
/// the HMAC check or the decoding, and is refused.
pub(crate) fn unframe(raw: Vec<u8>) -> Entry {
    let n = raw.first().map_or(usize::MAX, |&n| usize::from(n));
    if n >= raw.len() {
        return Entry {
            id: String::new(),
            value: raw,
            tag: Vec::new(),
            deliveries: 1,
        };
    }
    Entry {
        id: String::new(),
        tag: raw[1..=n].to_vec(),
        value: raw[1 + n..].to_vec(),
        deliveries: 1,
    }
}

/// The elements of a `take_plain` or `BLPOP` reply.
pub(crate) fn entries(v: Value) -> Vec<Entry> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::BulkString(b) => Some(unframe(b)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a script's reply is the status `code`.
pub(crate) fn is(v: &Value, code: i64) -> bool {
    int_of(v) == Some(code)
}

/// Appends elements while there is room. KEYS: meta, list. ARGV: the elements. Returns how
/// many were added, -1 if closed, -2 if missing.
pub(crate) fn put() -> Script {
    crate::script!(Script::new(
        r"
local m = redis.call('HMGET', KEYS[1], 'cap', 'closed')
if not m[1] then return -2 end
if m[2] == '1' then return -1 end
local room = tonumber(m[1]) - redis.call('LLEN', KEYS[2])
local n = math.min(room, #ARGV)
for i = 1, n, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, n)))
end
return math.max(n, 0)
",
    ))
}

/// Takes up to ARGV[1] elements and pushes room tokens for them. KEYS: meta, list, room.
/// Returns the elements, -1 if closed and empty, -2 if missing, or an empty table.
pub(crate) fn take() -> Script {
    crate::script!(Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local got = redis.call('LPOP', KEYS[2], ARGV[1])
if got then
  redis.call('RPUSH', KEYS[3], #got)
  redis.call('LTRIM', KEYS[3], -64, -1)
  return got
end
if redis.call('HGET', KEYS[1], 'closed') == '1' then return -1 end
return {}
",
    ))
}

/// `{waiting, closed}`, or -2 if missing. KEYS: meta, list.
pub(crate) fn state() -> Script {
    crate::script!(Script::new(
        r"
local closed = redis.call('HGET', KEYS[1], 'closed')
if not closed then return -2 end
return {redis.call('LLEN', KEYS[2]), tonumber(closed)}
",
    ))
}
