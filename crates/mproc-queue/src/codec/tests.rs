//! The codec writes postcard's bytes and reads them back, for byte runs in every position
//! serde can put them, and leaves everything else to postcard.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::*;

/// Encodes with both, compares the bytes, decodes with both, compares the values.
fn same_as_postcard<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let theirs = postcard::to_allocvec(value).unwrap();
    let mut ours = Vec::new();
    encode_into(value, &mut ours).unwrap();
    assert_eq!(ours, theirs, "bytes of {value:?}");
    assert_eq!(encoded_len(value).unwrap(), theirs.len());
    let mut buf = vec![0u8; theirs.len()];
    assert_eq!(encode_to_slice(value, &mut buf).unwrap(), &theirs[..]);
    let back: T = decode(&theirs).unwrap();
    assert_eq!(&back, value, "ours decoding postcard's bytes");
    let back: T = postcard::from_bytes(&ours).unwrap();
    assert_eq!(&back, value, "postcard decoding ours");
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Frame {
    id: u64,
    pixels: Vec<u8>,
    label: String,
    tail: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
enum Event {
    Tick,
    Blob(Vec<u8>),
    Pair(u8, Vec<u8>),
    Named { key: String, value: Box<[u8]> },
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Wrapper(Vec<u8>);

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Annotated {
    #[serde(with = "serde_bytes")]
    raw: Vec<u8>,
}

#[test]
fn byte_runs_anywhere_are_postcards_bytes() {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    same_as_postcard(&big);
    same_as_postcard(&Vec::<u8>::new());
    same_as_postcard(&big.clone().into_boxed_slice());
    same_as_postcard(&Frame {
        id: 9,
        pixels: big.clone(),
        label: "héllo".into(),
        tail: Some(vec![1, 2, 3]),
    });
    same_as_postcard(&Frame {
        id: 0,
        pixels: vec![],
        label: String::new(),
        tail: None,
    });
    for e in [
        Event::Tick,
        Event::Blob(big.clone()),
        Event::Pair(3, vec![9; 300]),
        Event::Named {
            key: "k".into(),
            value: vec![5; 200].into_boxed_slice(),
        },
    ] {
        same_as_postcard(&e);
    }
    same_as_postcard(&Wrapper(big.clone()));
    same_as_postcard(&Annotated { raw: big.clone() });
    same_as_postcard(&vec![vec![1u8, 2], vec![], big.clone()]);
    same_as_postcard(&(7u16, big.clone(), -3i64));
    let mut map = BTreeMap::new();
    map.insert("a".to_string(), vec![1u8; 10]);
    map.insert("b".to_string(), vec![]);
    same_as_postcard(&map);
    same_as_postcard(&Some(big));
}

#[test]
fn everything_else_is_postcards() {
    same_as_postcard(&vec![1u16, 300, 65_535]);
    same_as_postcard(&VecDeque::from(vec![1u8, 2, 3])); // not contiguous: element by element
    same_as_postcard(&[1u8, 2, 3, 4]); // an array is a tuple
    same_as_postcard(&(u128::MAX, i128::MIN, 1.5f64, 'ß', true, ()));
    same_as_postcard(&vec![Some(1i32), None, Some(-1)]);
    same_as_postcard(&"text".to_string());
}

#[test]
fn borrowed_byte_slices_encode_in_one_piece() {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        #[serde(borrow)]
        a: &'a [u8],
        b: std::borrow::Cow<'a, [u8]>,
    }
    let data = vec![4u8; 1000];
    let v = Borrowed {
        a: &data,
        b: std::borrow::Cow::Borrowed(&data[..10]),
    };
    let mut ours = Vec::new();
    encode_into(&v, &mut ours).unwrap();
    assert_eq!(ours, postcard::to_allocvec(&v).unwrap());
}

/// A field whose own deserializer reads a sequence of `u16` into a `Vec<u8>`: its visitor's
/// value is a `Vec<u8>` but it is not serde's, so it must get the sequence, not bytes.
fn narrow<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let wide: Vec<u16> = Vec::deserialize(d)?;
    Ok(wide.into_iter().map(|w| w as u8).collect())
}

#[derive(Deserialize, PartialEq, Debug)]
struct Narrowed {
    #[serde(deserialize_with = "narrow")]
    v: Vec<u8>,
}

#[test]
fn a_custom_visitor_of_vec_u8_gets_its_sequence() {
    struct Seq;
    impl<'de> serde::de::Visitor<'de> for Seq {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of u16")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(w) = s.next_element::<u16>()? {
                out.push(w as u8);
            }
            Ok(out)
        }
    }
    let bytes = postcard::to_allocvec(&vec![300u16, 2]).unwrap();
    let mut d = postcard::Deserializer::from_bytes(&bytes);
    let v = De(&mut d).deserialize_seq(Seq).unwrap();
    assert_eq!(v, vec![44, 2]);
    let n: Narrowed = decode(&postcard::to_allocvec(&(vec![258u16, 7],)).unwrap()).unwrap();
    assert_eq!(n, Narrowed { v: vec![2, 7] });
}

#[test]
fn malformed_input_is_an_error() {
    // A length past the end, for a top-level vector and for a field.
    assert!(decode::<Vec<u8>>(&[10, 1, 2]).is_err());
    assert!(decode::<Frame>(&[1, 200, 1, 0]).is_err());
    assert!(decode::<Frame>(&[]).is_err());
    // A varint that never ends.
    assert!(decode::<Vec<u8>>(&[0xff; 12]).is_err());
}

/// A serializer output that counts the one-byte writes (the element-by-element path).
struct CountPushes(usize, usize);

impl postcard::ser_flavors::Flavor for &mut CountPushes {
    type Output = ();
    fn try_push(&mut self, _: u8) -> Result<(), Error> {
        self.0 += 1;
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> Result<(), Error> {
        self.1 += data.len();
        Ok(())
    }
    fn finalize(self) -> Result<(), Error> {
        Ok(())
    }
}

/// A deserializer input that counts the one-byte reads.
struct CountPops<'de>(&'de [u8], std::rc::Rc<std::cell::Cell<usize>>);

impl<'de> postcard::de_flavors::Flavor<'de> for CountPops<'de> {
    type Remainder = ();
    type Source = ();
    fn pop(&mut self) -> Result<u8, Error> {
        self.1.set(self.1.get() + 1);
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(Error::DeserializeUnexpectedEnd)?;
        self.0 = rest;
        Ok(b)
    }
    fn try_take_n(&mut self, n: usize) -> Result<&'de [u8], Error> {
        if n > self.0.len() {
            return Err(Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }
    fn finalize(self) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn byte_runs_are_one_copy_each_way() {
    let frame = Frame {
        id: 1,
        pixels: vec![7; 65_536],
        label: "x".into(),
        tail: Some(vec![1; 1000]),
    };
    let event = Event::Pair(1, vec![2; 5000]);
    let nested = vec![vec![3u8; 3000]; 4];
    let mut count = CountPushes(0, 0);
    let mut s = postcard::Serializer { output: &mut count };
    frame.serialize(Ser(&mut s)).unwrap();
    event.serialize(Ser(&mut s)).unwrap();
    nested.serialize(Ser(&mut s)).unwrap();
    assert!(count.0 < 32, "{} one-byte writes", count.0);
    assert!(count.1 >= 65_536 + 1000 + 5000 + 12_000);
    // Plain postcard writes the same bytes one at a time.
    let mut plain = CountPushes(0, 0);
    let mut s = postcard::Serializer { output: &mut plain };
    frame.serialize(&mut s).unwrap();
    assert!(plain.0 > 65_536);

    for bytes in [
        postcard::to_allocvec(&frame).unwrap(),
        postcard::to_allocvec(&event).unwrap(),
        postcard::to_allocvec(&nested).unwrap(),
    ] {
        let pops = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut d = postcard::Deserializer::from_flavor(CountPops(&bytes, pops.clone()));
        match bytes.len() {
            n if n > 60_000 => assert_eq!(Frame::deserialize(De(&mut d)).unwrap(), frame),
            n if n > 12_000 => assert_eq!(Vec::<Vec<u8>>::deserialize(De(&mut d)).unwrap(), nested),
            _ => assert_eq!(Event::deserialize(De(&mut d)).unwrap(), event),
        }
        assert!(pops.get() < 32, "{} one-byte reads", pops.get());
    }
}

#[test]
fn bytes_bytes_fields_are_one_copy_too() {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Packet {
        seq: u32,
        body: bytes::Bytes,
    }
    let p = Packet {
        seq: 3,
        body: bytes::Bytes::from(vec![9u8; 50_000]),
    };
    same_as_postcard(&p);
    let mut count = CountPushes(0, 0);
    let mut s = postcard::Serializer { output: &mut count };
    p.serialize(Ser(&mut s)).unwrap();
    assert!(count.0 < 16, "{} one-byte writes", count.0);
}

/// Whole integers take the short way (`small.rs`) below 2^14 and postcard's above: the bytes
/// and values are postcard's on both sides of every boundary, for every integer type it
/// writes as a varint.
#[test]
fn small_integers_are_postcards_bytes() {
    let edges: [i64; 14] = [
        0,
        1,
        63,
        64,
        127,
        128,
        8191,
        8192,
        16383,
        16384,
        65535,
        1 << 20,
        i32::MAX as i64,
        -1,
    ];
    for &e in &edges {
        for v in [e, -e, e.saturating_add(1), e.saturating_sub(1)] {
            same_as_postcard(&v);
            same_as_postcard(&(v as isize));
            same_as_postcard(&(v as i32));
            same_as_postcard(&(v as i16));
            same_as_postcard(&(v as u64));
            same_as_postcard(&(v as usize));
            same_as_postcard(&(v as u32));
            same_as_postcard(&(v as u16));
        }
    }
    for v in [u64::MAX, u64::MAX - 1, 1 << 63, 1 << 35] {
        same_as_postcard(&v);
    }
    for v in [i64::MIN, i64::MAX, i64::MIN + 1] {
        same_as_postcard(&v);
    }
    // Integers inside other values still go through postcard (and agree).
    same_as_postcard(&(5u64, -3i32, Some(200u16)));
}

/// Malformed or short input for a small integer is postcard's error, never a panic or a
/// value postcard would refuse; a non-canonical 2-byte form postcard accepts is accepted.
#[test]
fn small_integers_refuse_what_postcard_refuses() {
    let cases: [&[u8]; 7] = [
        &[],
        &[0x80],
        &[0xff, 0xff],
        &[0xff, 0xff, 0xff],
        &[0x80, 0x00],
        &[0xff, 0x7f, 9],
        &[0xff, 0xff, 0x03],
    ];
    for bytes in cases {
        macro_rules! agree {
            ($($t:ty),*) => {$(
                let ours = take_from_bytes::<$t>(bytes).map(|(v, rest)| (v, rest.to_vec()));
                let theirs = postcard::take_from_bytes::<$t>(bytes).map(|(v, rest)| (v, rest.to_vec()));
                assert_eq!(ours, theirs, "{} from {bytes:?}", stringify!($t));
            )*};
        }
        agree!(u16, u32, u64, usize, i16, i32, i64, isize);
    }
    // A buffer too small for the varint gets postcard's error, and an exact one the bytes.
    let mut one = [0u8; 1];
    assert_eq!(
        encode_to_slice(&300u64, &mut one),
        Err(Error::SerializeBufferFull)
    );
    let mut two = [0u8; 2];
    assert_eq!(encode_to_slice(&300u64, &mut two).unwrap(), &[0xac, 0x02]);
}
