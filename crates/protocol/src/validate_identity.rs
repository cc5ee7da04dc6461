//! What an error report needs (`message_id`, `sender`) from JSON that is not a valid envelope.
//!
//! Only those two fields are read; everything else goes through serde_json's skipper, which checks
//! the syntax without building anything. Reading the whole message into a `serde_json::Value`
//! instead cost a 64 KiB object of tiny keys 2.4 ms, ten times what skipping it costs
//! (RELIABILITY.md, "Hostile input").

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The fields of a refused message that can still be reported, when they are strings.
#[derive(Debug, Default)]
pub(super) struct Identity {
    pub(super) message_id: Option<String>,
    pub(super) sender: Option<String>,
}

/// Reads `bytes` as any JSON document; `Err` when it is not one (a syntax error, or the two
/// fields nested deeper than serde_json's recursion limit).
pub(super) fn read(bytes: &[u8]) -> Result<Identity, serde_json::Error> {
    Ok(match serde_json::from_slice::<Probe>(bytes)? {
        Probe::Object(identity) => identity,
        Probe::Text(_) | Probe::Other => Identity::default(),
    })
}

/// Any JSON value, as much of it as the report needs.
enum Probe {
    Text(String),
    Object(Identity),
    Other,
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ProbeVisitor)
    }
}

/// An object key: one of the two wanted fields or any other (compared, not allocated).
enum Key {
    MessageId,
    Sender,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "message_id" => Key::MessageId,
            "sender" => Key::Sender,
            _ => Key::Other,
        })
    }
}

struct ProbeVisitor;

impl<'de> Visitor<'de> for ProbeVisitor {
    type Value = Probe;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, text: &str) -> Result<Probe, E> {
        Ok(Probe::Text(text.to_string()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Probe, E> {
        Ok(Probe::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Probe, E> {
        Ok(Probe::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Probe, E> {
        Ok(Probe::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Probe, E> {
        Ok(Probe::Other)
    }

    fn visit_unit<E>(self) -> Result<Probe, E> {
        Ok(Probe::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Probe::Other)
    }

    /// The last of repeated keys wins, as it did when the message was read into a `Value`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut identity = Identity::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::MessageId => &mut identity.message_id,
                Key::Sender => &mut identity.sender,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = match map.next_value::<Probe>()? {
                Probe::Text(text) => Some(text),
                Probe::Object(_) | Probe::Other => None,
            };
        }
        Ok(Probe::Object(identity))
    }
}
