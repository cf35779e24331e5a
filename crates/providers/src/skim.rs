//! A JSON answer read for its summary only: the few fields
//! [`Api::summarize`](crate::Api) reads, deserialized leniently (a field of
//! an unexpected type counts as absent, as `Value::as_str` and friends
//! would have it), the rest of the answer — its content, usually most of
//! it — skipped without being built. Skipping checks the JSON's structure
//! but, as serde_json's skipping does, not the fields it skips in full: a
//! lone surrogate escape, invalid UTF-8 or a number out of range there, or
//! nesting past 128, still gives a summary where a `Value` parse fails.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The fields of an answer (or of its nested `message`) a summary reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Answer {
    pub(crate) id: Text,
    pub(crate) model: Text,
    pub(crate) stop_reason: Text,
    pub(crate) status: Text,
    pub(crate) usage: Object<Usage>,
    pub(crate) choices: List<Object<Choice>>,
    pub(crate) message: Object<Box<Answer>>,
    pub(crate) response: Object<Box<Answer>>,
    pub(crate) delta: Object<Delta>,
    pub(crate) error: Object<ErrorBody>,
}

/// Token counts, in either API's words.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: Count,
    pub(crate) completion_tokens: Count,
    pub(crate) input_tokens: Count,
    pub(crate) output_tokens: Count,
}

/// A choice's finish reason.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Choice {
    pub(crate) finish_reason: Text,
}

/// A delta's stop reason.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Delta {
    pub(crate) stop_reason: Text,
}

/// An error body's type.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type")]
    pub(crate) kind: Text,
}

/// A field that may hold a string: whether it was there at all (with any
/// value, `null` included), and its text when it is a string.
#[derive(Debug, Default)]
pub(crate) struct Text {
    pub(crate) present: bool,
    pub(crate) value: Option<String>,
}

/// A whole number from 0 to `u64::MAX`, or `None` for any other JSON value.
#[derive(Debug, Default)]
pub(crate) struct Count(pub(crate) Option<u64>);

/// An object read as `T`, or `None` for any other JSON value.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) Option<T>);

/// An array read element by element, or `None` for any other JSON value.
#[derive(Debug)]
pub(crate) struct List<T>(pub(crate) Option<Vec<T>>);

impl<T> Default for Object<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// What every lenient reader does with the JSON values it does not take:
/// skip them, whole.
macro_rules! skip_the_rest {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

struct TextVisitor;

impl TextVisitor {
    fn other<E>(self) -> Result<Text, E> {
        Ok(Text {
            present: true,
            value: None,
        })
    }
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text {
            present: true,
            value: Some(v.to_owned()),
        })
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
        self.other()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
        self.other()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
        self.other()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
        self.other()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
        self.other()
    }
    fn visit_none<E: de::Error>(self) -> Result<Text, E> {
        self.other()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.other()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.other()
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        Ok(Count(Some(v)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Count(None))
    }
    skip_the_rest!();
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Object(Some(t)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Object<T>, E> {
        Ok(Object(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Object<T>, E> {
        Ok(Object(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Object<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Object(None))
    }
    skip_the_rest!();
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(PhantomData))
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(t) = seq.next_element::<T>()? {
            out.push(t);
        }
        Ok(List(Some(out)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<List<T>, E> {
        Ok(List(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<List<T>, E> {
        Ok(List(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<List<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(List(None))
    }
    skip_the_rest!();
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor(PhantomData))
    }
}
