//! [`Maybe`]: an optional field that remembers whether it was absent or null.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A field that may be absent, `null`, or a value — kept apart so that
/// deserializing and serializing again gives back the same JSON.
///
/// Use it with `#[serde(default, skip_serializing_if = "Maybe::is_absent")]`.
///
/// # Example
///
/// ```
/// use palisade_providers::Maybe;
///
/// let v: Maybe<String> = serde_json::from_str("null").unwrap();
/// assert!(v.is_null());
/// assert_eq!(v.get(), None);
/// assert_eq!(Maybe::Present(3).get(), Some(&3));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Maybe<T> {
    /// The field was not there.
    #[default]
    Absent,
    /// The field was `null`.
    Null,
    /// The field had a value.
    Present(T),
}

impl<T> Maybe<T> {
    /// The value, if present.
    pub fn get(&self) -> Option<&T> {
        match self {
            Self::Present(v) => Some(v),
            _ => None,
        }
    }

    /// The value, mutably, if present.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        match self {
            Self::Present(v) => Some(v),
            _ => None,
        }
    }

    /// The value, by value, if present.
    pub fn into_option(self) -> Option<T> {
        match self {
            Self::Present(v) => Some(v),
            _ => None,
        }
    }

    /// True when the field was not there (for `skip_serializing_if`).
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }

    /// True when the field was `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

impl<T> From<Option<T>> for Maybe<T> {
    fn from(o: Option<T>) -> Self {
        match o {
            Some(v) => Self::Present(v),
            None => Self::Absent,
        }
    }
}

impl<T: Serialize> Serialize for Maybe<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Absent fields are skipped by `skip_serializing_if`; if not, null.
            Self::Absent | Self::Null => s.serialize_none(),
            Self::Present(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Maybe<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Self::Present(v),
            None => Self::Null,
        })
    }
}
