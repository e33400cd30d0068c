//! A wrapper for personal data (names, national ids, birth dates, document numbers).
//!
//! Its `Debug` and `Display` print a fixed placeholder, so a `tracing` field, a `{:?}` in an error
//! message or a panic message cannot carry the value by accident. The value is reachable only through
//! [`Personal::expose`] (a deliberate, greppable act) or through serialization, which the gateway uses
//! only to answer the caller who sent or owns the data.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Personal data that must never reach a log, a span, a metric or an error message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Personal<T>(T);

impl<T> Personal<T> {
    /// Wraps a value as personal data.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself; call only where it must leave the process (a provider request, the owner's
    /// own answer).
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value; same rule as [`Personal::expose`].
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Personal(<redacted>)")
    }
}

impl<T> fmt::Display for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

impl<T: utoipa::PartialSchema> utoipa::PartialSchema for Personal<T> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        T::schema()
    }
}

impl<T: utoipa::ToSchema> utoipa::ToSchema for Personal<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let id = Personal::new("12345678-9".to_string());
        assert!(!format!("{id:?}").contains("12345678"));
        assert!(!format!("{id}").contains("12345678"));
        assert_eq!(id.expose(), "12345678-9");
    }

    #[test]
    fn serde_round_trips_the_plain_value() {
        let id: Personal<String> = serde_json::from_str("\"Juan\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"Juan\"");
    }
}
