//! [`BreakerLayer`] and [`BreakerHandle`].

use std::sync::Arc;
use std::time::Duration;

use palisade_core::classify::LlmClassifier;
use tower_layer::Layer;

use crate::circuit::{Circuit, State};
use crate::config::{BreakerBuilder, ConfigError, validate};
use crate::service::Breaker;

/// A circuit breaker for the services it wraps.
///
/// # Clone
///
/// The circuit is built once, by [`BreakerBuilder::build`]; every service
/// this layer makes, and every clone of the layer or of those services,
/// shares it. (tower-resilience's breaker makes a new circuit per `layer()`
/// call; tower has none.)
#[derive(Clone, Debug)]
pub struct BreakerLayer<C = LlmClassifier> {
    pub(crate) circuit: Arc<Circuit>,
    pub(crate) classifier: C,
}

impl BreakerLayer {
    /// A builder with the defaults.
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder::default()
    }
}

impl BreakerBuilder {
    /// Checks the settings and builds the layer with the default classifier.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid setting.
    pub fn build(self) -> Result<BreakerLayer, ConfigError> {
        validate(&self.config)?;
        #[cfg(feature = "redis")]
        let circuit = match &self.config.fleet {
            Some(f) => {
                let fleet = crate::fleet::Fleet::new(f).map_err(ConfigError)?;
                Circuit::shared(self.config, fleet)
            }
            None => Circuit::new(self.config),
        };
        #[cfg(not(feature = "redis"))]
        let circuit = Circuit::new(self.config);
        let circuit = Arc::new(circuit);
        // Built on a runtime: the fleet's state is read from now on, not
        // from the first call (which would otherwise pass an open fleet).
        #[cfg(feature = "redis")]
        if let Some(fleet) = &circuit.fleet {
            fleet.ensure_polling(&circuit);
        }
        Ok(BreakerLayer {
            circuit,
            classifier: LlmClassifier::new(),
        })
    }
}

impl<C> BreakerLayer<C> {
    /// Replaces what counts as a failure (default: `LlmClassifier`, which
    /// counts transport errors, timeouts, 5xx and 529, not 429 or other 4xx).
    pub fn classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            circuit: self.circuit,
            classifier,
        }
    }

    /// A handle on the circuit: its state, and forcing it.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            circuit: self.circuit.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Breaker<S, C> {
        Breaker::new(inner, self.circuit.clone(), self.classifier.clone())
    }
}

/// Reads and steers a circuit; cheap to clone.
#[derive(Clone, Debug)]
pub struct BreakerHandle {
    circuit: Arc<Circuit>,
}

impl BreakerHandle {
    /// The current state.
    pub fn state(&self) -> State {
        self.circuit.state()
    }

    /// How long a call would be refused from now, without taking a probe
    /// slot: `None` when one would be admitted (closed, open past its
    /// `open_for`, half-open with a probe slot free); `Some(remaining)` while
    /// open, `Some(ZERO)` when half-open with every probe out (refused until
    /// they report). A balancer asks this before picking a member.
    pub fn refuses_for(&self) -> Option<Duration> {
        self.circuit.refuses_for()
    }

    /// The calls and the failures in the current window.
    pub fn window(&self) -> (u64, u64) {
        self.circuit.window_counts()
    }

    /// Opens the circuit now (for the configured open time), whatever its
    /// state: e.g. to drain an upstream for maintenance. A circuit shared
    /// through Redis opens for the whole fleet.
    pub fn force_open(&self) {
        for from in [State::Closed, State::HalfOpen] {
            self.circuit.trip(from);
        }
    }

    /// Closes the circuit now, with a clean window (in this process only,
    /// for a circuit shared through Redis).
    pub fn force_closed(&self) {
        for from in [State::Open, State::HalfOpen] {
            let _ = self.circuit.close(from);
        }
    }
}
