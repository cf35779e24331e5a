//! Breaker settings, checked once by [`BreakerBuilder::build`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::circuit::Transition;

/// What the failure rate is computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls (a ring buffer: O(1) per call, old outcomes
    /// evicted one by one).
    Count(usize),
    /// The calls of the last duration, in one-second buckets.
    Time(Duration),
}

type Hook = Arc<dyn Fn(Transition) + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) open_for: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) max_open_for: Duration,
    pub(crate) half_open_calls: u32,
    pub(crate) on_transition: Option<Hook>,
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<crate::fleet::FleetConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("failure_rate", &self.failure_rate)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("slow_call", &self.slow_call)
            .field("open_for", &self.open_for)
            .field("half_open_calls", &self.half_open_calls)
            .finish_non_exhaustive()?;
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            write!(f, " shared: {fleet:?}")?;
        }
        Ok(())
    }
}

impl Config {
    /// How long the circuit stays open after `trips` earlier trips in a row.
    pub(crate) fn open_duration(&self, trips: u32) -> Duration {
        let factor = self
            .open_multiplier
            .powi(i32::try_from(trips).unwrap_or(i32::MAX));
        let secs = self.open_for.as_secs_f64() * factor;
        if secs.is_finite() && secs < self.max_open_for.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max_open_for
        }
    }
}

/// The default failure rate over the window that opens the circuit.
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// The default window: this many latest calls.
pub const DEFAULT_WINDOW_CALLS: usize = 20;
/// The default number of calls in the window before the rate counts.
pub const DEFAULT_MINIMUM_CALLS: u32 = 10;
/// The default time the circuit stays open.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
/// The default number of probes let through when half-open.
pub const DEFAULT_HALF_OPEN_CALLS: u32 = 2;

/// Builds a [`BreakerLayer`](crate::BreakerLayer); every setting has a
/// default (the table on the crate docs; the `DEFAULT_*` constants, which
/// the preset stack and the gateway's config use too).
#[derive(Clone, Debug)]
pub struct BreakerBuilder {
    pub(crate) config: Config,
}

impl Default for BreakerBuilder {
    fn default() -> Self {
        Self {
            config: Config {
                name: None,
                failure_rate: Some(DEFAULT_FAILURE_RATE),
                consecutive_failures: None,
                window: Window::Count(DEFAULT_WINDOW_CALLS),
                minimum_calls: DEFAULT_MINIMUM_CALLS,
                slow_call: None,
                open_for: DEFAULT_OPEN_FOR,
                open_multiplier: 1.0,
                max_open_for: Duration::from_secs(300),
                half_open_calls: DEFAULT_HALF_OPEN_CALLS,
                on_transition: None,
                #[cfg(feature = "redis")]
                fleet: None,
            },
        }
    }
}

impl BreakerBuilder {
    /// Names the breaker in logs (e.g. the upstream).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Trips when this share of the window's calls failed (0 < rate ≤ 1).
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }

    /// Turns the failure-rate policy off (keep only consecutive failures).
    #[must_use]
    pub fn no_failure_rate(mut self) -> Self {
        self.config.failure_rate = None;
        self
    }

    /// Also trips after this many failures in a row.
    #[must_use]
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// The window the failure rate is computed over.
    #[must_use]
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }

    /// No failure-rate trip before the window holds this many calls.
    #[must_use]
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// A call slower than this (headers to end of body) counts as a failure.
    #[must_use]
    pub fn slow_call(mut self, threshold: Duration) -> Self {
        self.config.slow_call = Some(threshold);
        self
    }

    /// How long the circuit stays open after a trip.
    #[must_use]
    pub fn open_for(mut self, d: Duration) -> Self {
        self.config.open_for = d;
        self
    }

    /// Each trip in a row multiplies the open time (≥ 1), up to `max`.
    #[must_use]
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.config.open_multiplier = multiplier;
        self.config.max_open_for = max;
        self
    }

    /// How many probes half-open lets through; all must succeed to close.
    #[must_use]
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.config.half_open_calls = n;
        self
    }

    /// Shares the circuit with every process whose breaker has the same
    /// `key` in the Redis at `url` (`redis://host:port/db`; feature
    /// `redis`): a trip in one opens it in all, and once the open time is
    /// over one process probes for the fleet. See the crate docs' section
    /// *Sharing a circuit through Redis*. Nothing connects before the first
    /// call; an invalid URL fails [`build`](Self::build).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn redis(mut self, url: &str, key: impl Into<String>) -> Self {
        self.config.fleet = Some(crate::fleet::FleetConfig {
            url: url.to_owned(),
            key: key.into(),
            poll: crate::fleet::DEFAULT_REDIS_POLL,
            lease: crate::fleet::DEFAULT_PROBE_LEASE,
            timeout: crate::fleet::DEFAULT_REDIS_TIMEOUT,
            on_error: None,
        });
        self
    }

    /// How often a shared circuit reads the fleet's state (default 250 ms):
    /// a trip elsewhere reaches this process within about this time.
    /// Without [`redis`](Self::redis), nothing.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn redis_poll(mut self, every: Duration) -> Self {
        if let Some(f) = &mut self.config.fleet {
            f.poll = every;
        }
        self
    }

    /// How long the probing process's lease lasts without renewal (default
    /// 10 s; renewed every poll while it probes; at least two polls with
    /// their timeout): a prober that dies is replaced after this long, and
    /// one that gets no call to probe with gives the lease up after half
    /// of it. Without [`redis`](Self::redis), nothing.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn probe_lease(mut self, lease: Duration) -> Self {
        if let Some(f) = &mut self.config.fleet {
            f.lease = lease;
        }
        self
    }

    /// The bound on connecting to Redis, and on each script (default
    /// 50 ms). Without [`redis`](Self::redis), nothing.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        if let Some(f) = &mut self.config.fleet {
            f.timeout = timeout;
        }
        self
    }

    /// Told the reason (never a password) each time Redis could not be
    /// asked, e.g. to count it. Without [`redis`](Self::redis), nothing.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn on_redis_error(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        if let Some(f) = &mut self.config.fleet {
            f.on_error = Some(Arc::new(hook));
        }
        self
    }

    /// Called on every transition (off the hot path).
    #[must_use]
    pub fn on_transition(mut self, hook: impl Fn(Transition) + Send + Sync + 'static) -> Self {
        self.config.on_transition = Some(Arc::new(hook));
        self
    }
}

/// A breaker setting was invalid; the message names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid circuit breaker setting: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn validate(c: &Config) -> Result<(), ConfigError> {
    let bad = |s: String| Err(ConfigError(s));
    if let Some(r) = c.failure_rate
        && (r.is_nan() || r <= 0.0 || r > 1.0)
    {
        return bad(format!(
            "failure_rate is {r}; it must be above 0 and at most 1"
        ));
    }
    if c.failure_rate.is_none() && c.consecutive_failures.is_none() {
        return bad("no trip policy: set failure_rate or consecutive_failures".to_owned());
    }
    if c.consecutive_failures == Some(0) {
        return bad("consecutive_failures is 0; it must be at least 1".to_owned());
    }
    match c.window {
        Window::Count(0) => return bad("the count window holds 0 calls; use at least 1".to_owned()),
        Window::Time(d) if d < Duration::from_secs(1) => {
            return bad(format!("the time window is {d:?}; use at least 1 s"));
        }
        Window::Time(d) if d > Duration::from_secs(3600) => {
            return bad(format!("the time window is {d:?}; use at most 1 h"));
        }
        _ => {}
    }
    if c.half_open_calls == 0 {
        return bad("half_open_calls is 0; at least one probe is needed to close".to_owned());
    }
    #[cfg(feature = "redis")]
    if let Some(f) = &c.fleet {
        if f.poll.is_zero() || f.timeout.is_zero() {
            return bad("redis_poll and redis_timeout must be above 0".to_owned());
        }
        let floor = (f.poll + f.timeout) * 2;
        if f.lease < floor {
            return bad(format!(
                "probe_lease is {:?}; it must be at least two polls with their Redis timeout ({floor:?}), or it lapses between renewals",
                f.lease
            ));
        }
    }
    // NaN fails this test too.
    if !c.open_multiplier.is_finite() || c.open_multiplier < 1.0 {
        return bad(format!(
            "the open-time multiplier is {}; it must be at least 1",
            c.open_multiplier
        ));
    }
    Ok(())
}
