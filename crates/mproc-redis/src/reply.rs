//! Reading the server's replies. Anything of an unexpected shape (another client wrote
//! the keys) reads as "nothing there", never as a panic.

use redis::Value;

/// A stream entry as taken by a consumer.
#[derive(Debug)]
pub(crate) struct Entry {
    pub id: String,
    pub value: Vec<u8>,
    pub tag: Vec<u8>,
    /// How many times it was delivered, this time included.
    pub deliveries: u64,
}

pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn string_of(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An entry `[id, [field, value, ...]]`; `v` and `h` are the fields read.
fn entry_of(v: &Value, deliveries: u64) -> Option<Entry> {
    let Value::Array(parts) = v else { return None };
    let id = string_of(parts.first()?)?;
    let Value::Array(fields) = parts.get(1)? else {
        return None;
    };
    let (mut value, mut tag) = (None, Vec::new());
    for pair in fields.chunks(2) {
        if let [Value::BulkString(k), Value::BulkString(v)] = pair {
            match k.as_slice() {
                b"v" => value = Some(v.clone()),
                b"h" => tag = v.clone(),
                _ => {}
            }
        }
    }
    Some(Entry {
        id,
        value: value.unwrap_or_default(),
        tag,
        deliveries,
    })
}

/// The TAKE script's `{ {id, fields, deliveries}, ... }`.
pub(crate) fn parse_entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(t) = item else { return None };
            let n = t.get(2).and_then(int_of).unwrap_or(1).max(1) as u64;
            entry_of(&Value::Array(t.get(..2)?.to_vec()), n)
        })
        .collect()
}

/// An `XREADGROUP` reply: `[[stream, [entry, ...]]]` (or a map of stream to entries).
pub(crate) fn parse_read(v: &Value) -> Vec<Entry> {
    let streams: Vec<&Value> = match v {
        Value::Array(s) => s
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) => kv.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(_, e)| e).collect(),
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|e| match e {
            Value::Array(entries) => Some(entries),
            _ => None,
        })
        .flatten()
        .filter_map(|e| entry_of(e, 1))
        .collect()
}

/// An `XRANGE` of the dead-letter stream: entries with fields `id`, `v`, `reason`.
pub(crate) fn parse_dead(v: &Value) -> Vec<crate::queue::DeadLetter> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let Value::Array(fields) = parts.get(1)? else {
                return None;
            };
            let mut d = crate::queue::DeadLetter {
                id: String::new(),
                reason: String::new(),
                bytes: Vec::new(),
            };
            for pair in fields.chunks(2) {
                if let [Value::BulkString(k), Value::BulkString(val)] = pair {
                    match k.as_slice() {
                        b"id" => d.id = String::from_utf8_lossy(val).into_owned(),
                        b"reason" => d.reason = String::from_utf8_lossy(val).into_owned(),
                        b"v" => d.bytes = val.clone(),
                        _ => {}
                    }
                }
            }
            Some(d)
        })
        .collect()
}
