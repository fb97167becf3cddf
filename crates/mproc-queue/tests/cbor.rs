//! `CborQueue<T>`: the CBOR messages Python's `mproc.Queue` reads and writes, across
//! processes; the encoding pinned byte for byte; messages that are not CBOR of the type.

use std::collections::BTreeMap;
use std::time::Duration;

use mproc_queue::{ByteQueue, CborQueue, GetError, PutError, cbor};
use mproc_testkit::{fork_child, unique_name, with_deadline};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

const LONG: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle { r: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    delta: i64,
    name: String,
    tags: Vec<String>,
    score: f64,
    raw: ByteBuf,
    extra: Option<BTreeMap<String, i64>>,
    shape: Shape,
}

fn record(i: u64) -> Record {
    Record {
        id: i,
        delta: -(i as i64) * 1_000_003,
        name: format!("récord-{i}-ü"),
        tags: (0..i % 4).map(|t| format!("t{t}")).collect(),
        score: i as f64 / 7.0,
        raw: ByteBuf::from(vec![i as u8; (i % 300) as usize]),
        extra: (i % 3 == 0).then(|| BTreeMap::from([("k".to_string(), i as i64)])),
        shape: if i % 2 == 0 {
            Shape::Point
        } else {
            Shape::Circle { r: 0.5 }
        },
    }
}

#[test]
fn the_encoding_is_cbor_after_a_c_byte() {
    #[derive(Serialize)]
    struct Small {
        a: u8,
        b: Option<bool>,
        c: ByteBuf,
    }
    let mut out = Vec::new();
    let v = Small {
        a: 1,
        b: None,
        c: ByteBuf::from(vec![0xff]),
    };
    cbor::encode(&v, &mut out).unwrap();
    // 'C', map(3), "a" 1, "b" null, "c" bytes(1) ff: what RFC 8949 says, and what
    // Python's mproc decodes into {"a": 1, "b": None, "c": b"\xff"}.
    assert_eq!(
        out,
        [
            b'C', 0xa3, 0x61, b'a', 0x01, 0x61, b'b', 0xf6, 0x61, b'c', 0x41, 0xff
        ]
    );
    let mut out = Vec::new();
    cbor::encode(&(-1i64, 1.5f64, "é"), &mut out).unwrap();
    assert_eq!(
        out,
        [b'C', 0x83, 0x20, 0xf9, 0x3e, 0x00, 0x62, 0xc3, 0xa9],
        "array(3), -1, half-float 1.5, text(2) \"é\""
    );
}

#[test]
fn records_cross_processes_whole() {
    with_deadline(LONG, || {
        let name = unique_name("cbor-cross");
        let q = CborQueue::<Record>::create(&name, 64).unwrap();
        let n = name.clone();
        let child = fork_child(move || {
            let Ok(q) = CborQueue::<Record>::open(&n) else {
                return 1;
            };
            for i in 0..2000 {
                if q.put(record(i)).is_err() {
                    return 2;
                }
            }
            // One large message travels through the arena.
            let mut big = record(7);
            big.raw = ByteBuf::from(vec![7u8; 1 << 20]);
            i32::from(q.put(big).is_err()) * 3
        });
        for i in 0..2000 {
            assert_eq!(q.get_timeout(LONG).unwrap(), record(i));
        }
        let big = q.get_timeout(LONG).unwrap();
        assert_eq!(big.raw.len(), 1 << 20);
        child.assert_success();
        // A ByteQueue opens the same queue and sees the tagged bytes.
        let bytes = ByteQueue::open(&name).unwrap();
        q.put(record(1)).unwrap();
        let raw = bytes.get().unwrap();
        assert_eq!(raw[0], cbor::CBOR_TAG);
        assert_eq!(cbor::decode::<Record>(&raw).unwrap(), record(1));
    });
}

#[test]
fn a_message_that_is_not_cbor_of_the_type_is_unreadable_and_the_next_one_reads() {
    let bytes = ByteQueue::new(16).unwrap();
    let q = CborQueue::<(u32, String)>::from_byte_queue(bytes.try_clone().unwrap());
    let mut deep = vec![b'C'];
    deep.extend(std::iter::repeat_n(0x81u8, 100_000)); // arrays nested 100,000 deep
    deep.push(0x00);
    let bad: [&[u8]; 7] = [
        b"",
        b"P\x80\x05K\x01.",    // a pickle from Python's default codec
        b"Cxyz",               // not CBOR
        b"C\x82\x01",          // truncated
        b"C\x82\x01\x61a\x00", // a trailing byte
        b"C\xa1\x61a\x01",     // a map, not a (u32, String)
        &deep,
    ];
    for m in bad {
        bytes.put(m).unwrap();
        let mut good = Vec::new();
        cbor::encode(&(5u32, "five"), &mut good).unwrap();
        bytes.put(&good).unwrap();
        match q.try_get() {
            Err(GetError::Unreadable { reason }) => assert!(!reason.is_empty()),
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(q.try_get().unwrap(), (5, "five".to_string()));
    }
}

/// A value whose `Serialize` fails.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses"))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

#[test]
fn an_unencodable_value_comes_back_and_nothing_is_put() {
    let q = CborQueue::<Unencodable>::new(4).unwrap();
    assert!(matches!(
        q.put(Unencodable),
        Err(PutError::Unsendable {
            value: Unencodable,
            ..
        })
    ));
    assert!(q.is_empty());
}
