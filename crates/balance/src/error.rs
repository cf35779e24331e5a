//! Why a member cannot take a call, and the error when none can.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{CircuitOpen, RateLimited};

/// Why a member cannot take a call now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Why {
    /// Its circuit breaker is open (or half-open with every probe out).
    Open,
    /// The provider said its limit is spent: drained until the reset.
    Drained,
    /// Its own rate limit is reached (a [`Member::gate`](crate::Member::gate)
    /// of the user's).
    Limited,
    /// Something else a gate of the user's reports.
    Other,
}

/// A member that cannot take a call, why, and when it can again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    why: Why,
    back_in: Option<Duration>,
}

impl Unavailable {
    /// Unavailable for `why`, back in `back_in` (`None`: not known).
    pub fn new(why: Why, back_in: Option<Duration>) -> Self {
        Self { why, back_in }
    }

    /// Why.
    pub fn why(&self) -> Why {
        self.why
    }

    /// How long until it can take a call again, when known.
    pub fn back_in(&self) -> Option<Duration> {
        self.back_in
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.why {
            Why::Open => "its circuit is open",
            Why::Drained => "the provider's rate limit is spent",
            Why::Limited => "its own rate limit is reached",
            Why::Other => "a gate refuses",
        })?;
        match self.back_in {
            Some(d) if d.is_zero() => f.write_str(" (back when its probes report)"),
            Some(d) => write!(f, " (back in {d:?})"),
            None => Ok(()),
        }
    }
}

/// No member could take the call: each one and why, and when the first is
/// back.
///
/// Its [`source`](StdError::source) is a [`CircuitOpen`] when every member's
/// circuit is open, else a [`RateLimited`], each carrying the earliest time
/// back, so `palisade_core::ErrorKind` and the gateway treat it as that
/// (503 or 429, with `Retry-After`).
#[derive(Debug)]
pub struct NoMember {
    members: Vec<(Arc<str>, Unavailable)>,
    source: Box<dyn StdError + Send + Sync>,
}

impl NoMember {
    /// The error for these members, each with why it cannot take the call.
    pub fn new(members: Vec<(Arc<str>, Unavailable)>) -> Self {
        let earliest = members.iter().filter_map(|(_, u)| u.back_in).min();
        let all_open = members.iter().all(|(_, u)| u.why == Why::Open);
        let source: Box<dyn StdError + Send + Sync> = if all_open {
            Box::new(CircuitOpen::new(earliest.unwrap_or_default()))
        } else {
            Box::new(RateLimited::new(earliest))
        };
        Self { members, source }
    }

    /// Each member and why it could not take the call.
    pub fn members(&self) -> &[(Arc<str>, Unavailable)] {
        &self.members
    }

    /// How long until the first member is back, when any says.
    pub fn retry_after(&self) -> Option<Duration> {
        self.members.iter().filter_map(|(_, u)| u.back_in).min()
    }
}

impl fmt::Display for NoMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no member can take the call: ")?;
        for (i, (name, why)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`: {why}")?;
        }
        match self.retry_after() {
            Some(d) => write!(f, "; retry in {d:?}, or add members or capacity"),
            None => f.write_str("; none says when it is back: check the members' gates"),
        }
    }
}

impl StdError for NoMember {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// A balance that cannot be built, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid balance: {}", self.0)
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::ErrorKind;

    #[test]
    fn no_member_names_each_and_stands_for_the_right_kind() {
        let e = NoMember::new(vec![
            (
                "east".into(),
                Unavailable::new(Why::Drained, Some(Duration::from_secs(12))),
            ),
            (
                "west".into(),
                Unavailable::new(Why::Open, Some(Duration::from_secs(3))),
            ),
        ]);
        let text = e.to_string();
        assert!(
            text.contains("`east`: the provider's rate limit is spent (back in 12s)"),
            "{text}"
        );
        assert!(
            text.contains("`west`: its circuit is open (back in 3s)"),
            "{text}"
        );
        assert!(text.contains("retry in 3s"), "{text}");
        assert_eq!(ErrorKind::of(&e), Some(ErrorKind::RateLimited));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let open = NoMember::new(vec![(
            "a".into(),
            Unavailable::new(Why::Open, Some(Duration::from_secs(5))),
        )]);
        assert_eq!(ErrorKind::of(&open), Some(ErrorKind::CircuitOpen));
    }
}
