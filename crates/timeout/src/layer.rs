//! [`TimeoutLayer`]: which deadlines apply.

use std::time::Duration;

use tower_layer::Layer;

use crate::service::Timeout;

/// Applies first-byte, idle and total deadlines to calls and their bodies.
///
/// Every deadline is optional; a layer with none is a pass-through.
///
/// - **first byte**: from the first poll of the call until the response
///   headers arrive. Catches an upstream that accepts the request and never
///   answers.
/// - **idle**: the longest gap between two body frames — or, with
///   [`sse_aware`](Self::sse_aware), between two SSE events that carry data:
///   comment heartbeats and `ping` events then do not keep a dead stream
///   alive.
/// - **total**: the whole exchange, headers and streamed body included.
///
/// # Example
///
/// ```
/// use palisade_timeout::TimeoutLayer;
/// use std::time::Duration;
///
/// let layer = TimeoutLayer::new()
///     .first_byte(Duration::from_secs(30))
///     .idle(Duration::from_secs(15))
///     .sse_aware(true)
///     .total(Duration::from_secs(300));
/// # let _ = layer;
/// ```
///
/// # Clone
///
/// The layer is a small `Copy` value; it holds no shared state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeoutLayer {
    pub(crate) first_byte: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) total: Option<Duration>,
    pub(crate) sse_aware: bool,
}

impl TimeoutLayer {
    /// A layer with no deadline set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deadline for the response headers, counted from the first poll.
    #[must_use]
    pub fn first_byte(mut self, d: Duration) -> Self {
        self.first_byte = Some(d);
        self
    }

    /// Longest silence allowed inside the response body.
    #[must_use]
    pub fn idle(mut self, d: Duration) -> Self {
        self.idle = Some(d);
        self
    }

    /// Deadline for the whole exchange, body included.
    #[must_use]
    pub fn total(mut self, d: Duration) -> Self {
        self.total = Some(d);
        self
    }

    /// Counts only SSE events that carry data (and are not `ping`) as
    /// progress for the idle deadline, in a `text/event-stream` answer (any
    /// other answer progresses with every frame). Default: off (every frame
    /// counts).
    #[must_use]
    pub fn sse_aware(mut self, on: bool) -> Self {
        self.sse_aware = on;
        self
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, *self)
    }
}
