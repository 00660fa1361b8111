//! A canonical encoding of any serde value, for fingerprints: two equal
//! values encode to the same bytes, whichever process encodes them.
//!
//! JSON would not do: a `HashMap` serializes its entries in the order of its
//! hasher's random seed, which differs between processes (and between two
//! maps in one process), so one message redelivered to another consumer
//! would fingerprint differently and be refused as a reuse of its key. Here
//! a map's entries are sorted by their own encoding. Everything else keeps
//! its order, which serde fixes: struct fields as declared, sequences as
//! given.
//!
//! Every value starts with a tag byte, so that values of different shapes
//! never collide; lengths are prefixed. Type names (of structs, newtypes)
//! are left out, so that renaming a type does not change the fingerprints
//! of calls that are still being retried; field and variant names are kept,
//! since they are what the value means.

use serde::ser::{self, Serialize};

/// Encodes `value` canonically. Fails only where the value's own
/// `Serialize` fails.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    value.serialize(Encoder { out: &mut out })?;
    Ok(out)
}

/// A value's `Serialize` failed.
#[derive(Debug)]
pub(crate) struct Error(pub(crate) String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

mod tag {
    pub(super) const BOOL: u8 = 1;
    pub(super) const INT: u8 = 2;
    pub(super) const I128: u8 = 3;
    pub(super) const UINT: u8 = 4;
    pub(super) const U128: u8 = 5;
    pub(super) const FLOAT: u8 = 6;
    pub(super) const CHAR: u8 = 7;
    pub(super) const STR: u8 = 8;
    pub(super) const BYTES: u8 = 9;
    pub(super) const NONE: u8 = 10;
    pub(super) const SOME: u8 = 11;
    pub(super) const UNIT: u8 = 12;
    pub(super) const VARIANT: u8 = 13;
    pub(super) const SEQ: u8 = 14;
    pub(super) const MAP: u8 = 15;
    pub(super) const STRUCT: u8 = 16;
    pub(super) const END: u8 = 17;
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    fn bytes(&mut self, tag: u8, b: &[u8]) {
        self.out.push(tag);
        self.out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.out.extend_from_slice(b);
    }

    /// A variant's name, after its tag.
    fn variant(&mut self, name: &str) {
        self.bytes(tag::VARIANT, name.as_bytes());
    }
}

impl<'a> ser::Serializer for Encoder<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Seq<'a>;
    type SerializeStructVariant = Seq<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.extend_from_slice(&[tag::BOOL, u8::from(v)]);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.out.push(tag::INT);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.out.push(tag::I128);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.out.push(tag::UINT);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.out.push(tag::U128);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.out.push(tag::FLOAT);
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.out.push(tag::CHAR);
        self.out.extend_from_slice(&u32::from(v).to_le_bytes());
        Ok(())
    }
    fn serialize_str(mut self, v: &str) -> Result<(), Error> {
        self.bytes(tag::STR, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), Error> {
        self.bytes(tag::BYTES, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.out.push(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.out.push(tag::SOME);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push(tag::UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.variant(variant);
        self.out.push(tag::UNIT);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant(variant);
        value.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Error> {
        self.out.push(tag::SEQ);
        Ok(Seq { out: self.out })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'a>, Error> {
        self.variant(variant);
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a>, Error> {
        Ok(Map {
            out: self.out,
            entries: Vec::new(),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Seq<'a>, Error> {
        self.out.push(tag::STRUCT);
        Ok(Seq { out: self.out })
    }
    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'a>, Error> {
        self.variant(variant);
        self.serialize_struct("", len)
    }
}

/// A sequence, tuple or struct: its elements (struct fields after their
/// names) in order, then an end mark.
struct Seq<'a> {
    out: &'a mut Vec<u8>,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(Encoder {
            out: &mut *self.out,
        })
    }

    fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Error> {
        Encoder {
            out: &mut *self.out,
        }
        .bytes(tag::STR, name.as_bytes());
        self.element(value)
    }

    fn finish(self) -> Result<(), Error> {
        self.out.push(tag::END);
        Ok(())
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeStruct for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// A map: its entries encoded apart, then written sorted, so that the order
/// the map iterates in does not matter.
struct Map<'a> {
    out: &'a mut Vec<u8>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    key: Option<Vec<u8>>,
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(encode(key)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without its key".into()))?;
        self.entries.push((key, encode(value)?));
        Ok(())
    }
    fn end(mut self) -> Result<(), Error> {
        self.entries.sort_unstable();
        self.out.push(tag::MAP);
        self.out
            .extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (k, v) in &self.entries {
            self.out.extend_from_slice(k);
            self.out.extend_from_slice(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;
    use serde::Serialize;

    use super::encode;

    #[derive(Serialize)]
    struct Order {
        id: u64,
        lines: Vec<String>,
        labels: HashMap<String, String>,
        note: Option<String>,
    }

    fn order(labels: &[(&str, &str)]) -> Order {
        Order {
            id: 7,
            lines: vec!["a".into(), "b".into()],
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            note: None,
        }
    }

    #[test]
    fn maps_encode_alike_whatever_their_order() {
        // Many maps of the same entries: their iteration orders differ
        // (each has its own random seed), their encodings must not.
        let entries: Vec<(String, String)> = (0..20)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let first = encode(&entries.iter().cloned().collect::<HashMap<_, _>>()).unwrap();
        for _ in 0..20 {
            let again: HashMap<_, _> = entries.iter().rev().cloned().collect();
            assert_eq!(encode(&again).unwrap(), first);
        }
        // The same entries in a `BTreeMap`: the same value.
        let btree: BTreeMap<_, _> = entries.into_iter().collect();
        assert_eq!(encode(&btree).unwrap(), first);
    }

    #[test]
    fn what_differs_encodes_apart() {
        let a = encode(&order(&[("x", "1")])).unwrap();
        assert_eq!(a, encode(&order(&[("x", "1")])).unwrap());
        assert_ne!(a, encode(&order(&[("x", "2")])).unwrap());
        assert_ne!(a, encode(&order(&[("x", "1"), ("y", "1")])).unwrap());
        let mut reordered = order(&[("x", "1")]);
        reordered.lines.reverse();
        assert_ne!(a, encode(&reordered).unwrap(), "sequences keep their order");
        // Shapes never collide: a string and the bytes of it, none and unit,
        // a sequence split differently.
        assert_ne!(encode("ab").unwrap(), encode(&b"ab"[..]).unwrap());
        assert_ne!(encode(&None::<u8>).unwrap(), encode(&()).unwrap());
        assert_ne!(
            encode(&vec!["ab", "c"]).unwrap(),
            encode(&vec!["a", "bc"]).unwrap()
        );
        assert_ne!(encode(&1u64).unwrap(), encode(&1i64).unwrap());
    }

    #[derive(Serialize)]
    enum Event {
        Created { id: u64 },
        Deleted(u64),
    }

    #[test]
    fn variants_are_told_by_name() {
        assert_ne!(
            encode(&Event::Created { id: 1 }).unwrap(),
            encode(&Event::Deleted(1)).unwrap()
        );
    }

    proptest! {
        #[test]
        fn equal_maps_encode_equal(entries in proptest::collection::vec((".{0,8}", any::<u32>()), 0..30)) {
            let forward: HashMap<String, u32> = entries.iter().cloned().collect();
            let backward: HashMap<String, u32> = entries.iter().rev().cloned().collect();
            // Later duplicates win in each: compare the maps themselves.
            if forward == backward {
                prop_assert_eq!(encode(&forward).unwrap(), encode(&backward).unwrap());
            }
        }
    }
}
