//! [`TraceLayer`] and its settings.

use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use opentelemetry::metrics::{Histogram, Meter};
use palisade_providers::Api;
use tower_layer::Layer;

use crate::context::TRACE_ID_HEADER;
use crate::service::Trace;

/// The GenAI client metrics.
#[derive(Clone, Debug)]
pub(crate) struct Instruments {
    pub(crate) duration: Histogram<f64>,
    pub(crate) tokens: Histogram<u64>,
    pub(crate) ttft: Histogram<f64>,
}

pub(crate) struct Config {
    pub(crate) enabled: bool,
    pub(crate) header: HeaderName,
    pub(crate) api: Option<Api>,
    pub(crate) metrics: Option<Instruments>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("header", &self.header)
            .field("api", &self.api)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// The trace layer; see the crate docs.
#[derive(Clone, Debug)]
pub struct TraceLayer {
    cfg: Arc<Config>,
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceLayer {
    /// `x-trace-id`, the API the request names in its extensions or else
    /// its path's ([`Api::from_path`]; for a path that names none, no API
    /// is assumed: the span has no operation or provider name and the
    /// answer's usage is not read — name it with [`api`](Self::api)), no
    /// metrics.
    pub fn new() -> Self {
        Self {
            cfg: Arc::new(Config {
                enabled: true,
                header: HeaderName::from_static(TRACE_ID_HEADER),
                api: None,
                metrics: None,
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Config)) -> Self {
        let c = &*self.cfg;
        let mut cfg = Config {
            enabled: c.enabled,
            header: c.header.clone(),
            api: c.api,
            metrics: c.metrics.clone(),
        };
        f(&mut cfg);
        Self { cfg: Arc::new(cfg) }
    }

    /// Turns the layer off (`false`): calls pass straight through, nothing
    /// is propagated or recorded. For stacks that decide at run time, with
    /// one service type either way.
    #[must_use]
    pub fn enabled(self, on: bool) -> Self {
        self.with(|c| c.enabled = on)
    }

    /// Uses `name` instead of `x-trace-id`.
    #[must_use]
    pub fn trace_id_header(self, name: HeaderName) -> Self {
        self.with(|c| c.header = name)
    }

    /// Names the API instead of inferring it from the path. A request that
    /// carries an [`Api`] in its extensions is traced as that one.
    #[must_use]
    pub fn api(self, api: Api) -> Self {
        self.with(|c| c.api = Some(api))
    }

    /// Records the GenAI client metrics with `meter`.
    #[must_use]
    pub fn metrics(self, meter: &Meter) -> Self {
        let instruments = Instruments {
            duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            tokens: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKENS.to_vec())
                .build(),
            ttft: meter
                .f64_histogram("gen_ai.client.operation.time_to_first_chunk")
                .with_unit("s")
                .with_description("Time to receive the first chunk of a streamed response")
                .with_boundaries(SECONDS.to_vec())
                .build(),
        };
        self.with(|c| c.metrics = Some(instruments))
    }
}

/// The bucket boundaries the GenAI semantic conventions advise for the
/// duration histograms (seconds); the SDK's defaults (0, 5, 10, … 10,000)
/// suit milliseconds.
const SECONDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// The boundaries the GenAI semantic conventions advise for
/// `gen_ai.client.token.usage`.
const TOKENS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace::new(inner, self.cfg.clone())
    }
}
