//! Go's JSON shapes, for plugins that replace a Go plugin and must read and write its
//! storage unchanged: `time.Duration` as integer nanoseconds, `time.Time` as RFC 3339 with
//! nanoseconds (the zero time `0001-01-01T00:00:00Z` meaning "unset"), and the text forms
//! Vault answers with.
//!
//! Use the serde modules with `#[serde(with = "...")]`:
//!
//! ```
//! use std::time::Duration;
//! use chrono::{DateTime, Utc};
//! use vault_plugin_sdk::gocompat::{go_duration, go_time};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Entry {
//!     #[serde(with = "go_duration")]
//!     ttl: Duration,
//!     #[serde(with = "go_time")]
//!     expires: Option<DateTime<Utc>>,
//! }
//!
//! let e: Entry = serde_json::from_str(
//!     r#"{"ttl": 3600000000000, "expires": "0001-01-01T00:00:00Z"}"#,
//! ).unwrap();
//! assert_eq!(e.ttl, Duration::from_secs(3600));
//! assert!(e.expires.is_none());
//! ```

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// Go `time.Duration` in JSON: integer nanoseconds (null reads as zero).
pub mod go_duration {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as integer nanoseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Reads integer nanoseconds; null and negative values read as zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ns = Option::<i64>::deserialize(d)?.unwrap_or(0);
        Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
    }
}

/// An optional Go `time.Duration` in JSON: integer nanoseconds, `None` when absent or null.
/// Pair with `skip_serializing_if = "Option::is_none"` so that an unset value is omitted.
pub mod go_duration_opt {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as nanoseconds and `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => go_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads nanoseconds or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?
            .map(|ns| Duration::from_nanos(u64::try_from(ns).unwrap_or(0))))
    }
}

/// Go `time.Time` in JSON: RFC 3339 with nanoseconds; the zero time means "unset".
pub mod go_time {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Go's zero `time.Time` as it marshals it.
    pub const ZERO: &str = "0001-01-01T00:00:00Z";

    /// Writes `Some(t)` as RFC 3339 and `None` as Go's zero time.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_time(*t)),
            None => s.serialize_str(ZERO),
        }
    }

    /// Reads RFC 3339; empty, null and the zero time read as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// Parses a time as Go marshals it; empty and the zero time are `None`.
    pub fn parse(text: &str) -> Result<Option<DateTime<Utc>>, TimeError> {
        if text.is_empty() || text.starts_with("0001-01-01T00:00:00") {
            return Ok(None);
        }
        DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| TimeError {
                text: text.to_string(),
                reason: e.to_string(),
            })
    }
}

/// A time that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {text:?}: {reason}")]
pub struct TimeError {
    /// The text given.
    pub text: String,
    /// Why it does not parse.
    pub reason: String,
}

/// A time as Go's `time.Time` marshals it in UTC: RFC 3339 with as many fractional digits
/// as needed and a `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A duration as Go's `time.Duration.String()` writes it (`1h30m0s`, `1.5s`, `0s`), the form
/// Vault shows in some responses.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, div));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = fraction(
        u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `value / div` with the fraction's trailing zeros dropped.
fn fraction(value: u128, div: u128) -> String {
    let whole = value / div;
    let rest = value % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let frac = format!("{rest:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug, Default)]
    #[serde(default)]
    struct Shapes {
        #[serde(with = "go_duration")]
        ttl: Duration,
        #[serde(with = "go_duration_opt", skip_serializing_if = "Option::is_none")]
        wait: Option<Duration>,
        #[serde(with = "go_time")]
        at: Option<DateTime<Utc>>,
    }

    #[test]
    fn reads_and_writes_gos_json_shapes() {
        let go = r#"{"ttl":1500000000,"wait":null,"at":"2027-05-23T10:00:00.123456789Z"}"#;
        let v: Shapes = serde_json::from_str(go).unwrap();
        assert_eq!(v.ttl, Duration::from_millis(1500));
        assert_eq!(v.wait, None);
        assert_eq!(v.at.unwrap().timestamp_subsec_nanos(), 123_456_789);
        let back = serde_json::to_value(&v).unwrap();
        assert_eq!(back["ttl"], 1_500_000_000i64);
        assert!(back.get("wait").is_none());
        assert_eq!(back["at"], "2027-05-23T10:00:00.123456789Z");
        let zero: Shapes =
            serde_json::from_str(r#"{"ttl":null,"at":"0001-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!((zero.ttl, zero.at), (Duration::ZERO, None));
        assert_eq!(serde_json::to_value(&zero).unwrap()["at"], go_time::ZERO);
        assert!(go_time::parse("yesterday").is_err());
    }

    #[test]
    fn formats_durations_as_go_does() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_secs(4380 * 3600), "4380h0m0s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_go_duration(d), text, "{d:?}");
        }
    }
}
