//! [`TokenLimitLayer`]: tokens per minute, reserved from an estimate and
//! reconciled with the usage the upstream reports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use palisade_core::{BoxError, ParsedBody, tokens};
use palisade_providers::Api;
use palisade_providers::observe::{self, End, Summary, Watch, WatchedBody};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::bucket::Bucket;
use crate::future::ResponseFuture;
use crate::layer::{ConfigError, validate};
use crate::service::granted;

/// A tokens-per-minute limit for LLM calls.
///
/// Each call reserves its estimate — prompt tokens counted with a real
/// tokenizer plus its `max_tokens` ([`palisade_core::tokens::estimate`]),
/// from the body parsed once ([`ParsedBody`]; stored for the layers after
/// this one) — then, when the response body **ends**, the reservation is
/// reconciled with the `usage` the upstream reported (the JSON answer's, or
/// a stream's final events): the difference is refunded, or charged when
/// the call cost more (later calls then wait longer). A stream settles at
/// its **terminator** (`data: [DONE]`, `message_stop`), so a caller that
/// stops reading there settles too.
///
/// Without usage in the answer (an OpenAI stream without
/// `stream_options.include_usage`, a server that reports none), a complete
/// success settles at the prompt estimate plus what was seen of the output
/// — one token per stream event (providers send about one token per chunk),
/// or a quarter of the bytes of a JSON answer — never more than was
/// reserved. An error status that reports no usage is refunded whole
/// (providers do not bill it). A body that fails before its end (or
/// terminator) keeps its reservation: nothing says what it cost. A call
/// cancelled by its caller — its future dropped before the answer, or its
/// body dropped before its end (a hedged call's loser, a client that went
/// away) — settles at what it can have cost so far: the prompt estimate
/// plus the output seen (one token per stream event), at most what was
/// reserved; the rest of the reservation (the output it never produced)
/// is refunded.
///
/// Waiting, refusal and sharing work as in [`crate::RateLimitLayer`]: one
/// bucket shared by every clone; a call whose estimate exceeds the capacity
/// fails at once.
///
/// ```
/// use palisade_ratelimit::TokenLimitLayer;
/// use std::time::Duration;
///
/// let tpm = TokenLimitLayer::per_minute(200_000).unwrap().wait(Duration::from_secs(2));
/// assert_eq!(tpm.bucket().capacity(), 200_000);
/// ```
#[derive(Clone)]
pub struct TokenLimitLayer {
    bucket: Arc<Bucket>,
    max_wait: Duration,
    enabled: bool,
    /// The API answers are read as; `None`: by the request's path.
    api: Option<Api>,
}

impl fmt::Debug for TokenLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenLimitLayer")
            .field("bucket", &self.bucket)
            .field("max_wait", &self.max_wait)
            .field("enabled", &self.enabled)
            .field("api", &self.api)
            .finish()
    }
}

impl TokenLimitLayer {
    /// `tokens` per minute, with a burst of `tokens`; refuses at once.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for 0 tokens.
    pub fn per_minute(tokens: u64) -> Result<Self, ConfigError> {
        Self::try_new(tokens, tokens as f64 / 60.0)
    }

    /// A bucket of `capacity` tokens refilled at `per_second`. Builds the
    /// tokenizer now if nothing has (`palisade_core::tokens::warm_up`,
    /// tens of milliseconds once per process), so the first request does
    /// not wait for it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a zero capacity or a rate that is not positive.
    pub fn try_new(capacity: u64, per_second: f64) -> Result<Self, ConfigError> {
        validate(capacity, per_second)?;
        // The tokenizer is built now, not on the first request's path.
        palisade_core::tokens::warm_up();
        Ok(Self {
            bucket: Arc::new(Bucket::new(capacity, per_second)),
            max_wait: Duration::ZERO,
            enabled: true,
            api: None,
        })
    }

    /// No limit: calls pass straight through (for stacks that decide at run
    /// time, with one service type either way).
    pub fn off() -> Self {
        Self {
            bucket: Arc::new(Bucket::new(u64::MAX / 2, 1.0)),
            max_wait: Duration::ZERO,
            enabled: false,
            api: None,
        }
    }

    /// Waits up to `max_wait` for tokens (FIFO).
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Reads every answer's usage as `api`'s. A request carrying an [`Api`]
    /// in its extensions is read as that one (a service serving several
    /// APIs says so per call); else this one; else the one the request's
    /// path names ([`Api::from_path`]). When none names an API (an
    /// OpenAI-compatible server's own route), no API is assumed: the
    /// answer's usage is not read, and the call is settled as an answer
    /// without usage (the prompt's estimate plus what was seen of the
    /// output), as `palisade_trace::TraceLayer` reads nothing either.
    #[must_use]
    pub fn api(mut self, api: Api) -> Self {
        self.api = Some(api);
        self
    }

    /// Refuses at once when the tokens are not there (the default).
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.max_wait = Duration::ZERO;
        self
    }

    /// The shared bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }
}

impl<S> Layer<S> for TokenLimitLayer {
    type Service = TokenLimit<S>;

    fn layer(&self, inner: S) -> TokenLimit<S> {
        TokenLimit {
            inner,
            bucket: self.bucket.clone(),
            max_wait: self.max_wait,
            enabled: self.enabled,
            api: self.api,
        }
    }
}

/// The service [`TokenLimitLayer`] builds.
#[derive(Clone, Debug)]
pub struct TokenLimit<S> {
    inner: S,
    bucket: Arc<Bucket>,
    max_wait: Duration,
    enabled: bool,
    api: Option<Api>,
}

impl<S, B, RB> Service<Request<B>> for TokenLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: AsRef<[u8]>,
    RB: Body<Data = Bytes>,
{
    type Response = Response<Reconciled<RB>>;
    type Error = BoxError;
    type Future = TokenFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !self.enabled {
            return TokenFuture {
                inner: ResponseFuture::calling(self.inner.call(req)),
                settle: None,
            };
        }
        let estimate = match ParsedBody::get_or_parse(&mut req) {
            Ok(p) => tokens::estimate(&p),
            Err(_) => tokens::TokenEstimate {
                prompt: (req.body().as_ref().len() as u64).div_ceil(tokens::BYTES_PER_TOKEN),
                max_output: 0,
            },
        };
        let cost = estimate.total().max(1);
        let api = req
            .extensions()
            .get::<Api>()
            .copied()
            .or(self.api)
            .or_else(|| Api::from_path(req.uri().path()));
        match self.bucket.acquire(cost, self.max_wait) {
            Err(refused) => TokenFuture {
                inner: ResponseFuture::refused(refused),
                settle: None,
            },
            Ok(grant) => TokenFuture {
                inner: granted(&self.bucket, grant, &mut self.inner, req),
                settle: Some(Settlement {
                    api,
                    bucket: self.bucket.clone(),
                    reserved: cost,
                    prompt: estimate.prompt,
                }),
            },
        }
    }
}

/// A reservation to reconcile.
#[derive(Debug)]
struct Settlement {
    /// The API called: where its answer's usage is (`None`: unnamed, its
    /// usage not read; settled as an answer without usage).
    api: Option<Api>,
    bucket: Arc<Bucket>,
    reserved: u64,
    /// The prompt part of the estimate (for answers without usage).
    prompt: u64,
}

impl Settlement {
    fn settle(mut self, used: u64) {
        let reserved = std::mem::take(&mut self.reserved);
        if reserved == 0 {
            return;
        }
        if used < reserved {
            self.bucket.refund(reserved - used);
        } else if used > reserved {
            self.bucket.charge(used - reserved);
        }
    }

    /// Kept whole: nothing says what the call cost.
    fn keep(mut self) {
        self.reserved = 0;
    }
}

impl Drop for Settlement {
    /// Dropped unsettled: the call was cancelled before its answer (its
    /// future dropped); it can have cost its prompt, not its output.
    fn drop(&mut self) {
        let reserved = std::mem::take(&mut self.reserved);
        if reserved > self.prompt {
            self.bucket.refund(reserved - self.prompt);
        }
    }
}

pin_project! {
    /// The future of [`TokenLimit`].
    pub struct TokenFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        inner: ResponseFuture<S, B>,
        settle: Option<Settlement>,
    }
}

impl<S, B> fmt::Debug for TokenFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFuture").finish_non_exhaustive()
    }
}

impl<S, B, RB> Future for TokenFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<Reconciled<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(res) => {
                let success = res.status().is_success();
                // Watched through the response's one observation: decoded
                // once, whichever layers watch it.
                Poll::Ready(Ok(match this.settle.take() {
                    Some(settlement) => observe::watch(
                        res,
                        settlement.api,
                        Settle {
                            settlement,
                            success,
                            bytes: 0,
                        },
                    ),
                    None => res.map(WatchedBody::unwatched),
                }))
            }
            Err(e) => {
                // The call never reached the upstream, or failed there
                // before answering: nothing was billed.
                if let Some(s) = this.settle.take() {
                    s.settle(0);
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

/// Settles a reservation when the answer is complete (see
/// [`WatchedBody`]: at a stream's terminator, or the body's end).
#[derive(Debug)]
pub struct Settle {
    settlement: Settlement,
    success: bool,
    /// Body bytes seen (the output guess for a JSON answer without usage).
    bytes: u64,
}

impl Watch for Settle {
    fn on_data(&mut self, data: &Bytes) {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
    }

    fn on_end(&mut self, s: Summary, how: End) {
        // Take the settlement out: it settles once.
        let settlement = Settlement {
            api: self.settlement.api,
            bucket: self.settlement.bucket.clone(),
            reserved: std::mem::take(&mut self.settlement.reserved),
            prompt: self.settlement.prompt,
        };
        match how {
            End::Complete => {}
            // A failed body: nothing says what it cost; the reservation
            // stays.
            End::Failed => return settlement.keep(),
            // Cancelled mid-answer: the prompt and the output seen so far.
            _ => {
                let used = settlement.prompt.saturating_add(s.events);
                let used = used.min(settlement.reserved);
                return settlement.settle(used);
            }
        }
        let used = match (s.input_tokens, s.output_tokens) {
            // A success without usage: the prompt and what was seen of the
            // output, at most what was reserved.
            (None, None) if self.success => {
                let output = if s.events > 0 {
                    s.events
                } else {
                    self.bytes.div_ceil(tokens::BYTES_PER_TOKEN)
                };
                settlement
                    .prompt
                    .saturating_add(output)
                    .min(settlement.reserved)
            }
            // An error status reporting nothing is not billed.
            (None, None) => 0,
            (i, o) => i.unwrap_or(0).saturating_add(o.unwrap_or(0)),
        };
        settlement.settle(used);
    }
}

/// The response body of [`TokenLimit`]: settles the reservation when it
/// ends.
pub type Reconciled<B> = WatchedBody<B, Settle>;
