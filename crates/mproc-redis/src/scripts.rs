//! The Lua scripts: each queue, lock and value operation is one script, so it is one atomic
//! step on the server (no other client's command runs in between) and one round trip.
//!
//! Queue keys (`K` = `PREFIX:{NAME}`; the braces keep a queue's keys in one cluster slot):
//! - `K:s`: the stream of entries (fields `v`: the encoded value, `h`: its HMAC or empty),
//!   with one consumer group, `mproc`. Acknowledged entries are trimmed in whole stream nodes
//!   (`XTRIM MINID ~` below the oldest entry still needed), not deleted one by one: `XDEL`
//!   costs a scan of its node per entry, and was most of a batch's server time.
//! - `K:meta`: a hash: `kind`, `type`, `cap`, `lease_ms`, `auth`, `closed`, `version`, and
//!   `len`, the queue's occupancy (entries put and not yet acknowledged), which `put` checks
//!   against `cap`.
//! - `K:room`: a list of tokens pushed by acknowledgements, for `put`s waiting for room.
//! - `K:n`: unfinished tasks (joinable queues). `K:done`: a token when it reaches 0.

use redis::Script;

/// Lua functions the scripts that acknowledge share. `ack_owned` acknowledges the entries
/// `ARGV[first..last]` (every `step`-th, in id order: the client sorts them, and an id out
/// of order is at worst not acknowledged, so delivered again) that consumer `ARGV[2]` of
/// group `ARGV[1]` still holds in `stream` (one `XPENDING` over their id range, filtered by
/// consumer; no id is compared in Lua, which cost more than the commands), takes them
/// off the occupancy in `meta`, trims the stream below the oldest entry still needed, pushes
/// room tokens to `room`, and returns how many.
///
/// The trim is safe: entries are delivered in id order, so every entry older than both the
/// oldest pending one and the newest one just acknowledged was delivered and is no longer
/// pending, that is, acknowledged.
const ACK_OWNED: &str = r"
local function id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am or 0), tonumber(as or 0), tonumber(bm or 0), tonumber(bs or 0)
  return am < bm or (am == bm and as < bs)
end
local function owned(stream, first, last, step)
  local want, n, hi = {}, 0, nil
  for i = first, last, step do
    want[ARGV[i]] = true
    n = n + 1
    hi = ARGV[i]
  end
  local mine = {}
  if n == 0 then return mine end
  local p = redis.call('XPENDING', stream, ARGV[1], ARGV[first], hi, n * 4 + 16, ARGV[2])
  for _, e in ipairs(p) do
    if want[e[1]] then table.insert(mine, e[1]) end
  end
  return mine
end
local function ack_owned(meta, stream, room, first, last, step)
  local mine = owned(stream, first, last, step)
  if #mine == 0 then return 0 end
  for i = 1, #mine, 1000 do
    local part = {unpack(mine, i, math.min(i + 999, #mine))}
    redis.call('XACK', stream, ARGV[1], unpack(part))
  end
  -- XPENDING lists in id order: the last is the newest.
  local newest = mine[#mine]
  local left = redis.call('HINCRBY', meta, 'len', -#mine)
  if left < 0 then redis.call('HSET', meta, 'len', 0) end
  local oldest = redis.call('XPENDING', stream, ARGV[1])[2]
  if oldest and id_less(oldest, newest) then newest = oldest end
  redis.call('XTRIM', stream, 'MINID', '~', newest)
  redis.call('RPUSH', room, #mine)
  redis.call('LTRIM', room, -64, -1)
  return #mine
end
local function count_done(n, done, k)
  local left = redis.call('DECRBY', n, k)
  if left <= 0 then
    redis.call('SET', n, 0)
    redis.call('DEL', done)
    redis.call('RPUSH', done, 1)
    redis.call('PEXPIRE', done, 1000)
  end
end
";

/// A script whose body calls `ack_owned`.
fn with_ack(body: &str) -> Script {
    Script::new(&format!("{ACK_OWNED}{body}"))
}

/// Creates a queue's keys unless its meta hash exists. KEYS: meta, stream (an at-most-once
/// queue, kind `plain`: its list, left empty). ARGV: kind, type,
/// cap, lease_ms, auth, version. Returns 1 if created, else the existing
/// `{kind, type, cap, lease_ms, auth, version}`.
pub(crate) fn create() -> Script {
    crate::script!(Script::new(
        r"
local m = redis.call('HMGET', KEYS[1], 'kind', 'type', 'cap', 'lease_ms', 'auth', 'version')
if m[1] then return m end
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'type', ARGV[2], 'cap', ARGV[3],
  'lease_ms', ARGV[4], 'auth', ARGV[5], 'closed', '0', 'version', ARGV[6], 'len', 0)
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DEL', KEYS[2]) end
if ARGV[1] ~= 'plain' then redis.call('XGROUP', 'CREATE', KEYS[2], 'mproc', '$', 'MKSTREAM') end
return 1
",
    ))
}

/// Appends entries while there is room. KEYS: meta, stream, n. ARGV: pairs of (value, mac).
/// Returns how many were added, -1 if the queue is closed, -2 if it does not exist.
pub(crate) fn put() -> Script {
    crate::script!(Script::new(
        r"
local m = redis.call('HMGET', KEYS[1], 'cap', 'closed', 'kind', 'len')
if not m[1] then return -2 end
if m[2] == '1' then return -1 end
local cap = tonumber(m[1])
local len = tonumber(m[4]) or 0
local n = 0
local i = 1
while i < #ARGV and len < cap do
  redis.call('XADD', KEYS[2], '*', 'v', ARGV[i], 'h', ARGV[i + 1])
  i = i + 2
  len = len + 1
  n = n + 1
end
if n > 0 then redis.call('HINCRBY', KEYS[1], 'len', n) end
if n > 0 and m[3] == 'joinable' then redis.call('INCRBY', KEYS[3], n) end
return n
",
    ))
}

/// Acknowledges (ARGV[3..]) the entries this consumer (ARGV[2]) still holds, then takes up to
/// ARGV[5] entries: first those whose lease (ARGV[4] ms) lapsed, then new ones. KEYS: meta,
/// stream, room. ARGV: group, consumer, lease_ms, count, ids to acknowledge...
/// Returns `{ {id, fields, deliveries}, ... }`, or -1 if closed and empty, -2 if missing,
/// or an empty table. A consumer runs it when it found nothing new, and at least every
/// quarter lease; otherwise it sends the ack script and an `XREADGROUP` of its own.
pub(crate) fn take() -> Script {
    crate::script!(with_ack(
        r"
ack_owned(KEYS[1], KEYS[2], KEYS[3], 5, #ARGV, 1)
local want = tonumber(ARGV[4])
local out = {}
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local c = redis.call('XAUTOCLAIM', KEYS[2], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', want)
for _, e in ipairs(c[2]) do
  if e and e[2] then
    local p = redis.call('XPENDING', KEYS[2], ARGV[1], e[1], e[1], 1)
    local n = 2
    if p[1] then n = p[1][4] end
    table.insert(out, {e[1], e[2], n})
  end
end
if #out < want then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want - #out,
    'STREAMS', KEYS[2], '>')
  if r then
    for _, e in ipairs(r[1][2]) do table.insert(out, {e[1], e[2], 1}) end
  end
end
if #out == 0 and redis.call('HGET', KEYS[1], 'closed') == '1'
   and (tonumber(redis.call('HGET', KEYS[1], 'len')) or 0) <= 0 then
  return -1
end
return out
",
    ))
}

/// Acknowledges entries this consumer holds; with `done` = '1', also counts each one done
/// (joinable queues). KEYS: meta, stream, room, n, done. ARGV: group, consumer, done, ids...
/// Returns how many were acknowledged (an entry whose lease lapsed and which another
/// consumer took is not this consumer's to acknowledge: it is skipped).
pub(crate) fn ack() -> Script {
    crate::script!(with_ack(
        r"
local acked = ack_owned(KEYS[1], KEYS[2], KEYS[3], 4, #ARGV, 1)
if acked > 0 and ARGV[3] == '1' then count_done(KEYS[4], KEYS[5], acked) end
return acked
",
    ))
}

/// Renews the leases of entries this consumer still holds (resets their idle time). KEYS:
/// stream. ARGV: group, consumer, ids... Returns the ids no longer held by this consumer.
pub(crate) fn renew() -> Script {
    crate::script!(Script::new(
        r"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
",
    ))
}

/// Messages waiting to be taken: the occupancy minus the entries leased out. KEYS:
/// meta, stream. Returns `{waiting, closed}`, or -2 if missing.
pub(crate) fn state() -> Script {
    crate::script!(Script::new(
        r"
local m = redis.call('HMGET', KEYS[1], 'closed', 'len')
if not m[1] then return -2 end
local p = redis.call('XPENDING', KEYS[2], 'mproc')
return {math.max((tonumber(m[2]) or 0) - p[1], 0), tonumber(m[1])}
",
    ))
}

/// Closes a queue and wakes its waiting producers. KEYS: meta, room. Returns 0 if missing.
pub(crate) fn close() -> Script {
    crate::script!(Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'closed', '1')
redis.call('RPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], -64, -1)
return 1
",
    ))
}

/// After a waiter took a wake-up token: if the condition still holds (ARGV[1] = `exists`:
/// KEYS[1] exists; `zero`: KEYS[1] is missing or 0), puts the token back in KEYS[2] for the
/// next waiter (for a second) and returns 1; else 0.
pub(crate) fn pass_on() -> Script {
    crate::script!(Script::new(
        r"
local holds
if ARGV[1] == 'exists' then
  holds = redis.call('EXISTS', KEYS[1]) == 1
else
  holds = (tonumber(redis.call('GET', KEYS[1]) or '0') or 0) <= 0
end
if not holds then return 0 end
redis.call('RPUSH', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], 1000)
return 1
",
    ))
}

/// Sets refused entries aside. KEYS: stream, dead, room, n, done, meta. ARGV: group, consumer,
/// then (id, value, mac, reason) for each. An entry this consumer still holds is copied to
/// the dead-letter stream (capped near 10,000) and acknowledged; a joinable queue
/// counts it done (it will never be processed). Returns how many.
pub(crate) fn dead_letter() -> Script {
    crate::script!(with_ack(
        r"
for i = 3, #ARGV, 4 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'id', ARGV[i], 'v', ARGV[i + 1],
      'h', ARGV[i + 2], 'reason', ARGV[i + 3])
  end
end
local moved = ack_owned(KEYS[6], KEYS[1], KEYS[3], 3, #ARGV, 4)
if moved > 0 and redis.call('EXISTS', KEYS[4]) == 1 then count_done(KEYS[4], KEYS[5], moved) end
return moved
",
    ))
}
