//! Bodies: a replayable request body, the body parsed once, bounded reading.
//!
//! - [`RequestBody`] is the request body of a palisade stack: fully buffered,
//!   cloned by reference count (so the retry layer replays it without
//!   copying), and readable as bytes (so schema validation and token
//!   estimation can look at it). `http_body_util::Full<Bytes>` is replayable
//!   too, but hides its bytes.
//! - [`ParsedBody`] is the request extension that carries the JSON body parsed
//!   once: the first layer that needs the JSON parses it and inserts it; every
//!   later one (validation, token estimation, routing) reads it from there.
//! - [`collect_limited`] reads any body into memory under a size limit.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::error::{BodyTooLarge, BoxError, Rejected, Violation};

/// A fully buffered request body that clones without copying.
///
/// # Example
///
/// ```
/// use palisade_core::body::RequestBody;
///
/// let body = RequestBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#);
/// let again = body.clone(); // a reference count, not a copy
/// assert_eq!(again.as_bytes(), body.as_bytes());
/// ```
#[derive(Clone, Debug, Default)]
pub struct RequestBody {
    bytes: Bytes,
    /// Whether this instance has yielded its data frame yet.
    done: bool,
}

impl RequestBody {
    /// A body holding `bytes`.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            done: false,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A body holding `value` serialized as JSON.
    pub fn json(value: &Value) -> Self {
        // Serializing a `Value` into a Vec cannot fail.
        Self::new(serde_json::to_vec(value).unwrap_or_default())
    }

    /// A body holding any `Serialize` value as JSON: the request types of
    /// `palisade-providers`, or your own.
    ///
    /// ```
    /// use palisade_core::RequestBody;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Ask<'a> { model: &'a str, messages: Vec<Msg<'a>> }
    /// #[derive(serde::Serialize)]
    /// struct Msg<'a> { role: &'a str, content: &'a str }
    ///
    /// let body = RequestBody::to_json(&Ask {
    ///     model: "gpt-4o-mini",
    ///     messages: vec![Msg { role: "user", content: "hi" }],
    /// })?;
    /// assert_eq!(&body.as_bytes()[..], br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What `serde_json` reports when `value` cannot be JSON (a map with
    /// non-string keys, a `Serialize` impl that fails).
    pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(Self::new)
    }

    /// The whole body.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole body, by value.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl AsRef<[u8]> for RequestBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        Self::new(b)
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(b: Vec<u8>) -> Self {
        Self::new(b)
    }
}

impl From<String> for RequestBody {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&'static str> for RequestBody {
    fn from(s: &'static str) -> Self {
        Self::new(Bytes::from_static(s.as_bytes()))
    }
}

impl From<&'static [u8]> for RequestBody {
    fn from(s: &'static [u8]) -> Self {
        Self::new(Bytes::from_static(s))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.done || this.bytes.is_empty() {
            this.done = true;
            return Poll::Ready(None);
        }
        this.done = true;
        Poll::Ready(Some(Ok(Frame::data(this.bytes.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.bytes.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::with_exact(self.bytes.len() as u64)
        }
    }
}

/// The request body parsed as JSON, once, shared by every layer.
///
/// Stored in the request's extensions; cloning is a reference count.
///
/// # Example
///
/// ```
/// use palisade_core::body::{ParsedBody, RequestBody};
///
/// let mut req = http::Request::new(RequestBody::from(
///     r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":64,"messages":[]}"#,
/// ));
/// let parsed = ParsedBody::get_or_parse(&mut req).unwrap();
/// assert_eq!(parsed.model(), Some("gpt-4o-mini"));
/// assert!(parsed.is_stream());
/// assert_eq!(parsed.max_tokens(), Some(64));
/// // A later layer finds it without parsing again.
/// assert!(ParsedBody::of(&req).is_some());
/// ```
#[derive(Clone, Debug)]
pub struct ParsedBody {
    value: Arc<Value>,
    len: usize,
}

impl ParsedBody {
    /// Parses `bytes` as JSON.
    ///
    /// # Errors
    ///
    /// [`Rejected`] naming the line and column when `bytes` is not JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, Rejected> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            Rejected::new(vec![Violation::new(
                "",
                format!("the body is not valid JSON: {e}"),
            )])
        })?;
        Ok(Self {
            value: Arc::new(value),
            len: bytes.len(),
        })
    }

    /// Wraps an already parsed value whose serialized form was `len` bytes.
    pub fn from_value(value: Value, len: usize) -> Self {
        Self {
            value: Arc::new(value),
            len,
        }
    }

    /// The parsed body stored in `req`'s extensions, if a layer parsed it.
    pub fn of<B>(req: &http::Request<B>) -> Option<&Self> {
        req.extensions().get::<Self>()
    }

    /// The parsed body of `req`: the stored one, or the body parsed now and
    /// stored for the layers after this one.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the body is not JSON (nothing is stored then).
    pub fn get_or_parse<B: AsRef<[u8]>>(req: &mut http::Request<B>) -> Result<Self, Rejected> {
        if let Some(p) = req.extensions().get::<Self>() {
            return Ok(p.clone());
        }
        let parsed = Self::parse(req.body().as_ref())?;
        req.extensions_mut().insert(parsed.clone());
        Ok(parsed)
    }

    /// The JSON value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The length of the body it was parsed from, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it was parsed from an empty body (never, for valid JSON).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The top-level `"model"` string.
    pub fn model(&self) -> Option<&str> {
        self.value.get("model")?.as_str()
    }

    /// The top-level `"stream"` flag (false when absent).
    pub fn is_stream(&self) -> bool {
        self.value
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The output budget: `max_completion_tokens` (OpenAI's current name) or
    /// `max_tokens` (Anthropic, older OpenAI).
    ///
    /// Any JSON number shape counts (`1000`, `1e3`, `1000.0`); one past
    /// `u64::MAX` (`1e300`, 2^64) saturates to `u64::MAX`, so a limit sees
    /// it as the huge request it is. Negative numbers and non-numbers are
    /// `None` (the schema or the provider refuses those).
    pub fn max_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| self.value.get(*k).and_then(number_as_u64))
    }
}

/// A JSON number as a whole `u64`, saturating; `None` for a negative or
/// non-number value.
fn number_as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0)
            // `as` saturates: 1e300 becomes u64::MAX; the fraction goes.
            .map(|f| f.ceil() as u64)
    })
}

/// What a first pass over a JSON body learns without building it: how many
/// values it holds and its top-level `"model"`.
///
/// Parsed into a [`Value`], a JSON body costs far more than its size when it
/// is made of many small values (a million one-word messages: ~25× in
/// `serde_json`'s maps). This pass allocates nothing per value and stops at
/// the first value over the limit, so a server can refuse such a body — and
/// route on its model — before paying for the parse.
///
/// ```
/// use palisade_core::body::{Shape, ShapeError};
///
/// let shape = Shape::scan(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#, 100).unwrap();
/// assert_eq!(shape.model.as_deref(), Some("m"));
/// assert_eq!(shape.values, 6);
/// assert!(matches!(Shape::scan(b"[1,2,3]", 3), Err(ShapeError::TooManyValues { limit: 3 })));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shape {
    /// JSON values, containers and object keys' values included (object
    /// keys themselves are not counted).
    pub values: u64,
    /// The top-level `"model"` string, when the body is an object that has
    /// one.
    pub model: Option<String>,
}

/// Why [`Shape::scan`] refused a body.
#[derive(Debug)]
pub enum ShapeError {
    /// The body holds more JSON values than `limit`.
    TooManyValues {
        /// The limit it went over.
        limit: u64,
    },
    /// The body is not JSON (or nests deeper than 128 levels).
    NotJson(Rejected),
}

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyValues { limit } => write!(
                f,
                "the body holds more than {limit} JSON values; send fewer messages or content parts"
            ),
            Self::NotJson(r) => r.fmt(f),
        }
    }
}

impl std::error::Error for ShapeError {}

impl Shape {
    /// Scans `bytes` (no value is built; strings are not copied unless they
    /// hold escapes), refusing at the first value past `max_values`.
    ///
    /// # Errors
    ///
    /// [`ShapeError::TooManyValues`] past `max_values`;
    /// [`ShapeError::NotJson`] naming the line and column when `bytes` is not
    /// JSON.
    pub fn scan(bytes: &[u8], max_values: u64) -> Result<Self, ShapeError> {
        let count = std::cell::Cell::new(0u64);
        let over = std::cell::Cell::new(false);
        let counter = shape::Counter {
            count: &count,
            over: &over,
            limit: max_values,
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let model = serde::de::DeserializeSeed::deserialize(shape::Top(counter), &mut de)
            .and_then(|m| de.end().map(|()| m));
        match model {
            Ok(model) => Ok(Self {
                values: count.get(),
                model,
            }),
            Err(_) if over.get() => Err(ShapeError::TooManyValues { limit: max_values }),
            Err(e) => Err(ShapeError::NotJson(Rejected::new(vec![Violation::new(
                "",
                format!("the body is not valid JSON: {e}"),
            )]))),
        }
    }
}

/// The visitors behind [`Shape::scan`].
mod shape {
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };

    /// Counts every value below it.
    #[derive(Clone, Copy)]
    pub(super) struct Counter<'c> {
        pub(super) count: &'c Cell<u64>,
        pub(super) over: &'c Cell<bool>,
        pub(super) limit: u64,
    }

    impl Counter<'_> {
        fn one<E: de::Error>(self) -> Result<(), E> {
            let n = self.count.get() + 1;
            self.count.set(n);
            if n > self.limit {
                self.over.set(true);
                return Err(E::custom("too many JSON values"));
            }
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Counter<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Counter<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            self.one()
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            self.one()
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            self.one()
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            self.one()
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            self.one()
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.one()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.one()?;
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.one()?;
            while map.next_key::<IgnoredAny>()?.is_some() {
                map.next_value_seed(self)?;
            }
            Ok(())
        }
    }

    /// The top level: counts like [`Counter`] and keeps `"model"`.
    pub(super) struct Top<'c>(pub(super) Counter<'c>);

    impl<'de> DeserializeSeed<'de> for Top<'_> {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Top<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.0.visit_bool(v).map(|()| None)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.0.visit_i64(v).map(|()| None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.0.visit_u64(v).map(|()| None)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.0.visit_f64(v).map(|()| None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.0.visit_str(v).map(|()| None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_unit().map(|()| None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            self.0.visit_seq(seq).map(|()| None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let counter = self.0;
            counter.one()?;
            let mut model = None;
            while let Some(key) = map.next_key::<Key>()? {
                if key.0 {
                    model = map.next_value_seed(Model(counter))?;
                } else {
                    map.next_value_seed(counter)?;
                }
            }
            Ok(model)
        }
    }

    /// An object key: whether it is `"model"` (not copied).
    struct Key(bool);

    impl<'de> de::Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object key")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                    Ok(Key(v == "model"))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// The `"model"` value: a string kept, anything else counted and
    /// dropped (the schema names that mistake).
    struct Model<'c>(Counter<'c>);

    impl<'de> DeserializeSeed<'de> for Model<'_> {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Model<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.0.one()?;
            Ok(Some(v.to_owned()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.0.visit_bool(v).map(|()| None)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.0.visit_i64(v).map(|()| None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.0.visit_u64(v).map(|()| None)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.0.visit_f64(v).map(|()| None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_unit().map(|()| None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            self.0.visit_seq(seq).map(|()| None)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            self.0.visit_map(map).map(|()| None)
        }
    }
}

/// Reads `body` to its end into one buffer of at most `limit` bytes.
///
/// A body whose `size_hint` already exceeds `limit` is refused without being
/// read.
///
/// # Errors
///
/// [`BodyTooLarge`] past `limit`; otherwise the body's own error, boxed.
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyTooLarge::new(limit).into());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(BodyTooLarge::new(limit).into())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn shape_counts_values_and_finds_the_top_level_model() {
        let body = br#"{"model":"m\u0031","messages":[{"role":"user","content":[{"type":"text","text":"a"}],"model":"inner"}],"n":1.5,"x":null,"y":true}"#;
        let shape = Shape::scan(body, 1000).unwrap();
        // object, model, messages array, message, role, content array,
        // part, type, text, inner model, n, x, y
        assert_eq!(shape.values, 13);
        assert_eq!(shape.model.as_deref(), Some("m1"));
        // An escaped key is still `model`.
        let shape = Shape::scan(br#"{"mod\u0065l":"k"}"#, 10).unwrap();
        assert_eq!(shape.model.as_deref(), Some("k"));
        // A model that is not a string: counted, not kept.
        let shape = Shape::scan(br#"{"model":[1,2,{"a":3}]}"#, 10).unwrap();
        assert_eq!((shape.values, shape.model), (6, None));
        assert_eq!(Shape::scan(b"[]", 1).unwrap().values, 1);
    }

    #[test]
    fn shape_stops_at_the_limit_and_names_bad_json() {
        assert_eq!(Shape::scan(b"[1,2,3]", 4).unwrap().values, 4);
        assert!(matches!(
            Shape::scan(b"[1,2,3]", 3),
            Err(ShapeError::TooManyValues { limit: 3 })
        ));
        // Values under `model` count too.
        assert!(matches!(
            Shape::scan(br#"{"model":[1,2,3,4]}"#, 4),
            Err(ShapeError::TooManyValues { .. })
        ));
        for bad in [&b"{"[..], b"[1,]", b"{} x", b"", b"\xff"] {
            let e = Shape::scan(bad, 100).unwrap_err();
            assert!(matches!(e, ShapeError::NotJson(_)), "{bad:?}: {e}");
            assert!(e.to_string().contains("not valid JSON"), "{e}");
        }
        // Nesting past serde_json's 128 levels is refused, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            Shape::scan(deep.as_bytes(), u64::MAX),
            Err(ShapeError::NotJson(_))
        ));
    }

    #[tokio::test]
    async fn request_body_replays_without_copying() {
        let body = RequestBody::from(String::from("hello"));
        let ptr = body.as_bytes().as_ptr();
        let copy = body.clone();
        assert_eq!(copy.as_bytes().as_ptr(), ptr, "clone shares the buffer");
        assert_eq!(body.size_hint().exact(), Some(5));
        let got = copy.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
        // The original is still whole.
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
        assert!(RequestBody::empty().is_end_stream());
    }

    #[test]
    fn parsed_once_and_stored() {
        let mut req = http::Request::new(RequestBody::from(
            r#"{"model":"m","max_completion_tokens":5,"max_tokens":9}"#,
        ));
        let a = ParsedBody::get_or_parse(&mut req).unwrap();
        let b = ParsedBody::get_or_parse(&mut req).unwrap();
        assert!(
            Arc::ptr_eq(&a.value, &b.value),
            "second call reuses the first parse"
        );
        assert_eq!(a.max_tokens(), Some(5));
        assert!(!a.is_stream());
    }

    #[test]
    fn invalid_json_is_rejected_with_position() {
        let mut req = http::Request::new(RequestBody::from(r#"{"model": }"#));
        let err = ParsedBody::get_or_parse(&mut req).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not valid JSON") && msg.contains("column"),
            "{msg}"
        );
        assert!(ParsedBody::of(&req).is_none());
    }

    #[test]
    fn numbers_keep_their_precision() {
        let p = ParsedBody::parse(br#"{"temperature":0.30000000000000004}"#).unwrap();
        let back = serde_json::to_string(p.value()).unwrap();
        assert_eq!(back, r#"{"temperature":0.30000000000000004}"#);
    }

    #[tokio::test]
    async fn collect_limited_enforces_the_limit() {
        let ok = collect_limited(Full::new(Bytes::from_static(b"12345")), 5)
            .await
            .unwrap();
        assert_eq!(&ok[..], b"12345");
        let err = collect_limited(Full::new(Bytes::from_static(b"123456")), 5)
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::InvalidRequest));
        assert!(err.is::<BodyTooLarge>());
    }

    /// A body of `n` 1 KiB frames with no size hint.
    struct Frames(usize);
    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[0u8; 1024])))))
        }
    }

    #[tokio::test]
    async fn collect_limited_stops_a_stream_without_size_hint() {
        let err = collect_limited(Frames(100), 10_000).await.unwrap_err();
        assert!(err.is::<BodyTooLarge>());
        let ok = collect_limited(Frames(9), 10_000).await.unwrap();
        assert_eq!(ok.len(), 9 * 1024);
    }
}
