//! [`BudgetExhausted`].

use std::error::Error as StdError;
use std::fmt;

use palisade_core::BoxError;

/// A retryable failure was not retried because the retry budget is spent.
///
/// Wraps the failure of the last attempt (its `source`), so
/// `palisade_core::ErrorKind::of` still tells what that failure was.
#[derive(Debug)]
pub struct BudgetExhausted {
    attempts: u32,
    source: BoxError,
}

impl BudgetExhausted {
    pub(crate) fn new(attempts: u32, source: BoxError) -> Self {
        Self { attempts, source }
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not retried: the retry budget is spent (too many retries across all callers recently) \
             after {} attempt(s); the upstream is failing broadly, back off: {}",
            self.attempts, self.source
        )
    }
}

impl StdError for BudgetExhausted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}
