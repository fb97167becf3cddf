//! The encoding side: postcard's serializer, seen through [`Ser`], which hands every
//! contiguous run of bytes (`Vec<u8>`, `[u8]`, `Box<[u8]>`, wherever it sits in the value) to
//! postcard's `serialize_bytes` — one copy — instead of one `u8` at a time.
//!
//! serde serialises a `Vec<u8>` or `[u8]` with `collect_seq(&self)`; that is the one call
//! `Ser` changes. Everything else is forwarded unchanged, with the values inside compound
//! types wrapped again so that nested byte runs are found too. postcard writes a sequence of
//! `u8` and a byte string the same way (a varint length, then the bytes), so the output is
//! exactly postcard's.

use serde::Serialize;
use serde::ser::{
    SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

/// A serializer that forwards to `S`, sending byte runs as byte strings.
pub(crate) struct Ser<S>(pub(crate) S);

/// `T`, serialized through [`Ser`].
struct Fast<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Fast<'_, T> {
    #[inline]
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Ser(s))
    }
}

/// The bytes of a `collect_seq` argument that is a contiguous run of `u8`: `&[u8]` (what
/// `[u8]`, `Box<[u8]>` and `Cow<[u8]>` pass) or `&Vec<u8>`.
#[inline]
fn contiguous<'x, I>(iter: &'x I) -> Option<&'x [u8]> {
    let t = typeid::of::<I>();
    if t == typeid::of::<&[u8]>() {
        // SAFETY: `I` is `&'a [u8]` for some `'a` (type ids ignore lifetimes, and `[u8]` has
        // none of its own). `&'x I` being well-formed means `'a: 'x`, so reading it as
        // `&'x &'x [u8]` only shortens a lifetime.
        return Some(unsafe { *std::ptr::from_ref(iter).cast::<&'x [u8]>() });
    }
    if t == typeid::of::<&Vec<u8>>() {
        // SAFETY: as above, for `&'a Vec<u8>`.
        return Some(unsafe { *std::ptr::from_ref(iter).cast::<&'x Vec<u8>>() });
    }
    None
}

macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[inline]
        fn $name(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.0.$name($($arg),*)
        }
    )*};
}

impl<S: Serializer> Serializer for Ser<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Fast(value))
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Fast(value))
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Fast(value))
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Compound)
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Compound)
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Compound)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Compound)
    }

    #[inline]
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Compound)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
    }

    /// The one change: a contiguous run of bytes goes out as a byte string.
    #[inline]
    fn collect_seq<I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if let Some(bytes) = contiguous(&iter) {
            return self.0.serialize_bytes(bytes);
        }
        // serde's default, through `Ser` so the items are wrapped.
        let iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let mut seq = self.serialize_seq(len)?;
        for item in iter {
            seq.serialize_element(&item)?;
        }
        SerializeSeq::end(seq)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A compound serializer of `S`, whose elements, fields, keys and values go through [`Ser`].
pub(crate) struct Compound<C>(C);

/// One forwarding impl of a compound trait: `$method` takes the value (after any leading
/// `$arg`s) and sends it on wrapped in [`Fast`].
macro_rules! compound {
    ($trait:ident { $($method:ident($($arg:ident: $ty:ty),*);)* } $($skip:ident)?) => {
        impl<C: $trait> $trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            $(
                #[inline]
                fn $method<T: Serialize + ?Sized>(
                    &mut self,
                    $($arg: $ty,)*
                    value: &T,
                ) -> Result<(), C::Error> {
                    self.0.$method($($arg,)* &Fast(value))
                }
            )*
            $(
                fn $skip(&mut self, key: &'static str) -> Result<(), C::Error> {
                    self.0.$skip(key)
                }
            )?
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    };
}

compound!(SerializeSeq { serialize_element(); });
compound!(SerializeTuple { serialize_element(); });
compound!(SerializeTupleStruct { serialize_field(); });
compound!(SerializeTupleVariant { serialize_field(); });
compound!(SerializeMap { serialize_key(); serialize_value(); });
compound!(SerializeStruct { serialize_field(key: &'static str); } skip_field);
compound!(SerializeStructVariant { serialize_field(key: &'static str); } skip_field);
