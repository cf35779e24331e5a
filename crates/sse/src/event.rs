//! [`Event`]: one dispatched server-sent event.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;

/// One event of a `text/event-stream`.
///
/// Fields are the stream's bytes, shared with the chunks they came from when
/// the event did not span chunks or lines (zero-copy), copied once otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    event: Option<Bytes>,
    data: Bytes,
    id: Option<Bytes>,
    retry: Option<Duration>,
}

impl Event {
    pub(crate) fn new(
        event: Option<Bytes>,
        data: Bytes,
        id: Option<Bytes>,
        retry: Option<Duration>,
    ) -> Self {
        Self {
            event,
            data,
            id,
            retry,
        }
    }

    /// The same event with `data` in place of its data (for a proxy that
    /// rewrites payloads: scrubbing a key out of them, say).
    ///
    /// ```
    /// # use palisade_sse::Decoder;
    /// let mut d = Decoder::new();
    /// d.push(bytes::Bytes::from_static(b"event: e\ndata: secret\n\n"));
    /// let ev = d.next_event().unwrap().unwrap();
    /// let clean = ev.with_data(bytes::Bytes::from_static(b"[REDACTED]"));
    /// assert_eq!((clean.event(), &clean.data()[..]), (Some("e"), &b"[REDACTED]"[..]));
    /// ```
    #[must_use]
    pub fn with_data(self, data: Bytes) -> Self {
        Self { data, ..self }
    }

    /// The `event` field; `None` for the default type (`message`) or when it
    /// is not UTF-8.
    pub fn event(&self) -> Option<&str> {
        self.event
            .as_deref()
            .and_then(|e| std::str::from_utf8(e).ok())
    }

    /// The type as the standard defines it: the `event` field, or `message`.
    pub fn event_type(&self) -> Cow<'_, str> {
        match &self.event {
            Some(e) if !e.is_empty() => String::from_utf8_lossy(e),
            _ => Cow::Borrowed("message"),
        }
    }

    /// Whether the `event` field is exactly `name`.
    pub fn is(&self, name: &str) -> bool {
        self.event.as_deref() == Some(name.as_bytes())
    }

    /// The data: its `data` lines joined with LF.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The data as text.
    ///
    /// # Errors
    ///
    /// When the data is not UTF-8.
    pub fn data_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.data)
    }

    /// The data as text, invalid UTF-8 replaced by U+FFFD (the standard's
    /// decoding).
    pub fn data_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }

    /// The last event id at dispatch (it persists across events).
    pub fn id(&self) -> Option<&Bytes> {
        self.id.as_ref()
    }

    /// Whether this is a provider's in-band error: `event: error`
    /// (Anthropic, OpenAI's Responses API), `event: response.failed` (the
    /// Responses API), or data that is a JSON object whose first key is
    /// `"error"` (chat completions' `data: {"error":…}`). The same rule as
    /// [`crate::EventScanner`]'s.
    pub fn is_inband_error(&self) -> bool {
        self.is("error") || self.is("response.failed") || is_error_json(&self.data)
    }

    /// A reconnection time set by a `retry` field since the previous event.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }
}

/// Whether `data` starts like `{"error"…`: the in-band error shape of
/// OpenAI-style streams.
pub(crate) fn is_error_json(data: &[u8]) -> bool {
    let json = data.trim_ascii_start();
    json.starts_with(b"{") && json[1..].trim_ascii_start().starts_with(b"\"error\"")
}
