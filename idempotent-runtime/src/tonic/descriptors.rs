//! The protobuf schema of the services, for fingerprints that do not depend
//! on how a message was encoded: two equal messages must fingerprint equal.
//!
//! Encodings of one message can differ. A `map` field's entries come in the
//! order its `HashMap` iterates, which differs between processes (and
//! between two maps in one), so a retry decoded by another process and
//! encoded again would not match. Fields may also come in any order. With a
//! message's descriptor (from the file descriptor set the service was built
//! from, the one its reflection serves), [`canonical`] rewrites the
//! encoding: fields in field-number order (repeated ones keeping their own
//! order), map entries sorted, nested messages likewise.
//!
//! Without a registered descriptor for a method, the encoding is taken as
//! it is, which is exact for messages without maps.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// What a field holds, as far as the canonical form cares.
#[derive(Clone, Debug)]
enum Field {
    /// A `map`: its entry message (fields 1 and 2).
    Map(String),
    /// A message: its full name.
    Message(String),
}

/// The messages and methods of the registered sets.
#[derive(Default)]
struct Index {
    /// Message full name (no leading dot) → its message-typed fields.
    messages: HashMap<String, HashMap<u32, Field>>,
    /// `/package.Service/Method` → the input message's full name.
    inputs: HashMap<String, String>,
}

fn index() -> &'static RwLock<Index> {
    static INDEX: OnceLock<RwLock<Index>> = OnceLock::new();
    INDEX.get_or_init(Default::default)
}

/// Registers the messages and services of a serialized `FileDescriptorSet`
/// (what `tonic-prost-build`'s `file_descriptor_set_path` writes, and
/// `tonic-reflection` serves), so that requests of their methods
/// fingerprint the same however their `map` fields were ordered. Register
/// it once at start-up, before serving.
///
/// ```
/// # let bytes: &[u8] = &[];
/// idempotent_runtime::tonic::register_file_descriptor_set(bytes).unwrap();
/// ```
pub fn register_file_descriptor_set(bytes: &[u8]) -> Result<(), prost::DecodeError> {
    let set = FileDescriptorSet::decode(bytes)?;
    let mut index = index().write().unwrap_or_else(|e| e.into_inner());
    for file in &set.file {
        let package = file.package.as_deref().unwrap_or_default();
        let prefix = if package.is_empty() {
            String::new()
        } else {
            format!("{package}.")
        };
        for message in &file.message_type {
            add_message(&mut index, &prefix, message);
        }
        for service in &file.service {
            let service_name = format!("{prefix}{}", service.name.as_deref().unwrap_or_default());
            for method in &service.method {
                let path = format!(
                    "/{service_name}/{}",
                    method.name.as_deref().unwrap_or_default()
                );
                let input = method
                    .input_type
                    .as_deref()
                    .unwrap_or_default()
                    .trim_start_matches('.')
                    .to_owned();
                index.inputs.insert(path, input);
            }
        }
    }
    Ok(())
}

fn add_message(index: &mut Index, prefix: &str, message: &DescriptorProto) {
    let name = format!("{prefix}{}", message.name.as_deref().unwrap_or_default());
    let maps: Vec<String> = message
        .nested_type
        .iter()
        .filter(|n| n.options.as_ref().and_then(|o| o.map_entry) == Some(true))
        .map(|n| format!(".{name}.{}", n.name.as_deref().unwrap_or_default()))
        .collect();
    let mut fields = HashMap::new();
    for f in &message.field {
        if f.r#type() != Type::Message {
            continue;
        }
        let type_name = f.type_name.as_deref().unwrap_or_default();
        let full = type_name.trim_start_matches('.').to_owned();
        let field = if maps.iter().any(|m| m == type_name) {
            Field::Map(full)
        } else {
            Field::Message(full)
        };
        fields.insert(
            u32::try_from(f.number.unwrap_or_default()).unwrap_or(0),
            field,
        );
    }
    let nested_prefix = format!("{name}.");
    for nested in &message.nested_type {
        add_message(index, &nested_prefix, nested);
    }
    index.messages.insert(name, fields);
}

/// The canonical encoding of `encoded`, a request of the method at `path`:
/// `None` when no descriptor of that method is registered (the caller takes
/// the encoding as it is), or when the bytes do not parse as protobuf.
pub(crate) fn canonical<'a>(path: &str, encoded: &'a [u8]) -> Option<Cow<'a, [u8]>> {
    let index = index().read().unwrap_or_else(|e| e.into_inner());
    let input = index.inputs.get(path)?;
    let mut out = Vec::with_capacity(encoded.len());
    message(&index, input, encoded, &mut out)?;
    Some(Cow::Owned(out))
}

/// Whether any descriptor of `path` is registered.
pub(crate) fn knows(path: &str) -> bool {
    let index = index().read().unwrap_or_else(|e| e.into_inner());
    index.inputs.contains_key(path)
}

/// One field as encoded: its number, and its tag and value bytes.
struct Raw<'a> {
    number: u32,
    wire: u8,
    /// The tag and the value, as found.
    whole: &'a [u8],
    /// The value alone (for length-delimited: its contents).
    value: &'a [u8],
}

/// Writes `bytes`, a message `name`, canonically to `out`.
fn message(index: &Index, name: &str, bytes: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut fields = parse(bytes)?;
    // Stable: repeated fields keep their order among themselves.
    fields.sort_by_key(|f| f.number);
    let known = index.messages.get(name);
    let mut i = 0;
    while i < fields.len() {
        let number = fields[i].number;
        let end = i + fields[i..]
            .iter()
            .take_while(|f| f.number == number)
            .count();
        match known.and_then(|k| k.get(&number)) {
            Some(Field::Map(entry)) if fields[i..end].iter().all(|f| f.wire == 2) => {
                let mut entries = Vec::with_capacity(end - i);
                for f in &fields[i..end] {
                    let mut e = Vec::with_capacity(f.value.len());
                    message(index, entry, f.value, &mut e)?;
                    entries.push(e);
                }
                entries.sort_unstable();
                for e in entries {
                    put_length_delimited(out, number, &e);
                }
            }
            Some(Field::Message(nested)) if fields[i..end].iter().all(|f| f.wire == 2) => {
                for f in &fields[i..end] {
                    let mut m = Vec::with_capacity(f.value.len());
                    message(index, nested, f.value, &mut m)?;
                    put_length_delimited(out, number, &m);
                }
            }
            _ => {
                for f in &fields[i..end] {
                    out.extend_from_slice(f.whole);
                }
            }
        }
        i = end;
    }
    Some(())
}

fn put_length_delimited(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// The fields of an encoded message; `None` if it does not parse (groups,
/// the deprecated wire types 3 and 4, are not parsed either).
fn parse(mut bytes: &[u8]) -> Option<Vec<Raw<'_>>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let tag = varint(&mut bytes)?;
        let number = u32::try_from(tag >> 3).ok()?;
        let wire = (tag & 7) as u8;
        let value = match wire {
            0 => {
                let before = bytes;
                varint(&mut bytes)?;
                &before[..before.len() - bytes.len()]
            }
            1 => take(&mut bytes, 8)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                take(&mut bytes, len)?
            }
            5 => take(&mut bytes, 4)?,
            _ => return None,
        };
        let whole = &start[..start.len() - bytes.len()];
        fields.push(Raw {
            number,
            wire,
            whole,
            value,
        });
    }
    Some(fields)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Some(head)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;
    use prost_types::{
        field_descriptor_proto::Type, DescriptorProto, FieldDescriptorProto, FileDescriptorProto,
        FileDescriptorSet, MessageOptions, MethodDescriptorProto, ServiceDescriptorProto,
    };

    use super::*;

    /// `message Order { string id = 1; map<string, string> labels = 2; Line line = 3; }`,
    /// `message Line { map<string, int64> counts = 1; }`, and a service
    /// `test.v1.Orders/Place(Order)`.
    #[derive(Clone, PartialEq, Message)]
    struct Order {
        #[prost(string, tag = "1")]
        id: String,
        #[prost(map = "string, string", tag = "2")]
        labels: HashMap<String, String>,
        #[prost(message, optional, tag = "3")]
        line: Option<Line>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Line {
        #[prost(map = "string, int64", tag = "1")]
        counts: HashMap<String, i64>,
    }

    fn map_entry(name: &str, value: Type) -> DescriptorProto {
        DescriptorProto {
            name: Some(name.into()),
            field: vec![
                FieldDescriptorProto {
                    name: Some("key".into()),
                    number: Some(1),
                    r#type: Some(Type::String as i32),
                    ..Default::default()
                },
                FieldDescriptorProto {
                    name: Some("value".into()),
                    number: Some(2),
                    r#type: Some(value as i32),
                    ..Default::default()
                },
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn register() {
        let field =
            |name: &str, number: i32, ty: Type, type_name: Option<&str>| FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                r#type: Some(ty as i32),
                type_name: type_name.map(Into::into),
                ..Default::default()
            };
        let file = FileDescriptorProto {
            name: Some("test.proto".into()),
            package: Some("test.v1".into()),
            message_type: vec![
                DescriptorProto {
                    name: Some("Order".into()),
                    field: vec![
                        field("id", 1, Type::String, None),
                        field(
                            "labels",
                            2,
                            Type::Message,
                            Some(".test.v1.Order.LabelsEntry"),
                        ),
                        field("line", 3, Type::Message, Some(".test.v1.Line")),
                    ],
                    nested_type: vec![map_entry("LabelsEntry", Type::String)],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("Line".into()),
                    field: vec![field(
                        "counts",
                        1,
                        Type::Message,
                        Some(".test.v1.Line.CountsEntry"),
                    )],
                    nested_type: vec![map_entry("CountsEntry", Type::Int64)],
                    ..Default::default()
                },
            ],
            service: vec![ServiceDescriptorProto {
                name: Some("Orders".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Place".into()),
                    input_type: Some(".test.v1.Order".into()),
                    output_type: Some(".test.v1.Order".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let set = FileDescriptorSet { file: vec![file] };
        register_file_descriptor_set(&set.encode_to_vec()).unwrap();
    }

    fn order(labels: &[(&str, &str)], counts: &[(&str, i64)]) -> Order {
        Order {
            id: "o-1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            line: Some(Line {
                counts: counts.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
            }),
        }
    }

    const PATH: &str = "/test.v1.Orders/Place";

    #[test]
    fn equal_messages_with_maps_encode_equal() {
        register();
        let labels: Vec<(String, String)> = (0..16)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let counts = [("a", 1), ("b", 2), ("c", 3), ("d", 4)];
        let first = order(&labels, &counts).encode_to_vec();
        let canonical_first = canonical(PATH, &first).unwrap().into_owned();
        let mut raw_differs = false;
        for _ in 0..20 {
            // Each map its own seed: the raw encodings differ, the
            // canonical ones may not.
            let mut reversed = labels.clone();
            reversed.reverse();
            let again = order(&reversed, &counts).encode_to_vec();
            raw_differs |= again != first;
            assert_eq!(canonical(PATH, &again).unwrap(), canonical_first);
        }
        assert!(raw_differs, "the maps never iterated differently");
        // The canonical form still decodes to the same message.
        assert_eq!(
            Order::decode(&canonical_first[..]).unwrap(),
            order(&labels, &counts)
        );
    }

    #[test]
    fn different_messages_encode_apart() {
        register();
        let one = canonical(PATH, &order(&[("k", "v")], &[]).encode_to_vec())
            .unwrap()
            .into_owned();
        let other = canonical(PATH, &order(&[("k", "w")], &[]).encode_to_vec())
            .unwrap()
            .into_owned();
        assert_ne!(one, other);
        let nested = canonical(PATH, &order(&[("k", "v")], &[("a", 1)]).encode_to_vec())
            .unwrap()
            .into_owned();
        assert_ne!(one, nested);
    }

    #[test]
    fn unknown_methods_and_garbage_are_left_alone() {
        register();
        assert!(canonical("/test.v1.Orders/Unknown", b"\x0a\x01x").is_none());
        assert!(canonical(PATH, b"\x0a\x05x").is_none(), "truncated");
        assert!(canonical(PATH, b"\x0b").is_none(), "a group");
        assert!(knows(PATH));
    }
}
