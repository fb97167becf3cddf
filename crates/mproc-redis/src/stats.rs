//! What `mproc ls`, `top` and `metrics` show of the queues on a server.

use redis::{Script, Value};

use crate::conn::{COMMAND_TIMEOUT, Redis};
use crate::error::RedisError;
use crate::reply::{int_of, string_of};

/// KEYS: meta, stream, list. The queue's numbers, or false if it has no meta hash. An
/// at-most-once queue (a list) counts what it holds; it keeps no totals.
fn stats_script() -> Script {
    Script::new(
        r"
local m = redis.call('HMGET', KEYS[1], 'kind', 'type', 'cap', 'closed', 'len')
if not m[1] then return false end
if m[1] == 'plain' then return {m[1], m[2], m[3], m[4], redis.call('LLEN', KEYS[3]), 0, 0, 0} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {m[1], m[2], m[3], m[4], 0, 0, 0, 0} end
local len = tonumber(m[5]) or 0
local pend = redis.call('XPENDING', KEYS[2], 'mproc')[1]
local added, read = 0, 0
local info = redis.call('XINFO', 'STREAM', KEYS[2])
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then added = info[i + 1] end
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
  local name, er = nil, 0
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'entries-read' then er = g[i + 1] end
  end
  if name == 'mproc' and er then read = er end
end
return {m[1], m[2], m[3], m[4], len, pend, added, read}
",
    )
}

/// A queue on the server, as [`Redis::queue_stats`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's name.
    pub name: String,
    /// `queue`, `joinable`, or `plain` (at most once).
    pub kind: String,
    /// The message type's name.
    pub type_name: String,
    /// How many messages it holds at most.
    pub capacity: u64,
    /// Messages waiting to be taken.
    pub waiting: u64,
    /// Messages taken and not yet acknowledged (leased to consumers).
    pub leased: u64,
    /// Whether it was closed.
    pub closed: bool,
    /// Messages ever put (the stream's `entries-added`; 0 for an at-most-once queue).
    pub added: u64,
    /// Messages ever delivered for the first time (the group's `entries-read`; 0 for an
    /// at-most-once queue).
    pub read: u64,
}

impl Redis {
    /// Every queue under this connection's prefix whose name starts with `prefix`, sorted
    /// by name, with its numbers. A queue deleted meanwhile is left out.
    pub fn queue_stats(&self, prefix: &str) -> Result<Vec<QueueStats>, RedisError> {
        let pattern = format!("{}*:meta", self.key("", "").trim_end_matches("}:"));
        let unavailable = |reason| RedisError::Unavailable { reason };
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(COMMAND_TIMEOUT, |c| {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query(c)
                })
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out = Vec::new();
        for key in keys {
            let Some(name) = key
                .split_once('{')
                .and_then(|(_, rest)| rest.rsplit_once("}:meta"))
                .map(|(n, _)| n.to_string())
            else {
                continue;
            };
            if !name.starts_with(prefix) {
                continue;
            }
            let (meta, stream) = (self.key(&name, "meta"), self.key(&name, "s"));
            let list = self.key(&name, "l");
            let v: Value = self
                .run(COMMAND_TIMEOUT, |c| {
                    stats_script().key(&meta).key(&stream).key(&list).invoke(c)
                })
                .map_err(unavailable)?;
            let Value::Array(a) = v else { continue };
            let s = |i: usize| a.get(i).and_then(string_of).unwrap_or_default();
            let n = |i: usize| a.get(i).and_then(int_of).unwrap_or(0).max(0) as u64;
            if s(1).is_empty() {
                // Locks, events and values have no meta hash; anything else is foreign.
                continue;
            }
            out.push(QueueStats {
                name,
                kind: s(0),
                type_name: s(1),
                capacity: s(2).parse().unwrap_or(0),
                closed: s(3) == "1",
                waiting: n(4).saturating_sub(n(5)),
                leased: n(5),
                added: n(6),
                read: n(7),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
