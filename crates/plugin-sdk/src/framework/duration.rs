//! Durations as Vault accepts them: whole seconds, or a Go duration string with an optional
//! `d` (days) unit, such as `90`, `"90"`, `"1h30m"`, `"2d"`.

use std::time::Duration;

/// The longest duration accepted: what Go's `time.Duration` holds (`i64::MAX` nanoseconds,
/// about 292 years), so that every duration fits the host's own types and any date
/// arithmetic done with it.
pub const MAX_DURATION_SECS: u64 = (i64::MAX as u64) / 1_000_000_000;

fn too_large(input: impl std::fmt::Display) -> String {
    format!("{input} is out of range (at most {MAX_DURATION_SECS} seconds, about 292 years)")
}

fn checked_secs(secs: u64, input: impl std::fmt::Display) -> Result<Duration, String> {
    if secs > MAX_DURATION_SECS {
        return Err(too_large(input));
    }
    Ok(Duration::from_secs(secs))
}

/// Parses a duration given as seconds or as a duration string.
pub fn parse_duration(input: &serde_json::Value) -> Result<Duration, String> {
    match input {
        serde_json::Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                checked_secs(secs, n)
            } else if let Some(f) = n.as_f64().filter(|f| *f >= 0.0 && f.is_finite()) {
                // A float at or above 2^64 never converts; `MAX_DURATION_SECS` is far below.
                if f.trunc() > MAX_DURATION_SECS as f64 {
                    return Err(too_large(n));
                }
                checked_secs(f.trunc() as u64, n)
            } else {
                Err(format!("{n} is not a non-negative number of seconds"))
            }
        }
        serde_json::Value::String(s) => parse_duration_str(s),
        serde_json::Value::Null => Ok(Duration::ZERO),
        other => Err(format!("{other} is not a duration")),
    }
}

fn parse_duration_str(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    if let Ok(secs) = s.parse::<u64>() {
        return checked_secs(secs, format!("{s:?}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but beyond u64.
        return Err(too_large(format!("{s:?}")));
    }
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?} is missing a unit (use s, m, h or d)"))?;
        if num_end == 0 {
            return Err(format!("{s:?} is not a valid duration"));
        }
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("{s:?} is not a valid duration"))?;
        if !value.is_finite() {
            return Err(too_large(format!("{s:?}")));
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            unit => {
                return Err(format!(
                    "{s:?} has an unknown unit {unit:?} (use s, m, h or d)"
                ))
            }
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > MAX_DURATION_SECS as f64 {
        return Err(too_large(format!("{s:?}")));
    }
    Duration::try_from_secs_f64(total).map_err(|_| too_large(format!("{s:?}")))
}

/// A duration as whole seconds, the way Vault returns durations in responses.
pub fn format_duration_seconds(d: Duration) -> u64 {
    d.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_seconds_and_strings() {
        let cases = [
            (json!(90), 90),
            (json!("90"), 90),
            (json!("90s"), 90),
            (json!("15m"), 900),
            (json!("1h30m"), 5400),
            (json!("2d"), 172_800),
            (json!("4380h"), 15_768_000),
            (json!("1.5h"), 5400),
            (json!(""), 0),
            (json!("0"), 0),
            (json!(12.9), 12),
        ];
        for (input, secs) in cases {
            assert_eq!(
                parse_duration(&input).unwrap(),
                Duration::from_secs(secs),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in [
            json!("abc"),
            json!("10x"),
            json!("-5s"),
            json!(-3),
            json!(true),
            json!("h"),
        ] {
            assert!(parse_duration(&input).is_err(), "{input}");
        }
    }

    #[test]
    fn out_of_range_values_are_errors_not_panics() {
        let huge: serde_json::Value = serde_json::from_str("18446744073709551616").unwrap();
        let big_int: serde_json::Value = serde_json::from_str("18446744073709551615").unwrap();
        for input in [
            json!(1e300),
            json!(-1e300),
            json!(1.8446744073709552e19),
            json!(-1),
            huge,
            big_int,
            json!(MAX_DURATION_SECS + 1),
            json!("18446744073709551616"),
            json!("99999999999999999999999999"),
            json!("99999999999999999h"),
            json!("1e300"),
            json!("NaN"),
            json!("nan"),
            json!("inf"),
            json!("+Inf"),
            json!("1e300s"),
            json!("9223372037s"),
            json!("106751992d"),
            json!("9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999h"),
        ] {
            let err = parse_duration(&input).unwrap_err();
            assert!(!err.is_empty(), "{input}");
        }
        assert_eq!(
            parse_duration(&json!(MAX_DURATION_SECS)).unwrap(),
            Duration::from_secs(MAX_DURATION_SECS)
        );
        assert_eq!(
            parse_duration(&json!("2562047h")).unwrap(),
            Duration::from_secs(2_562_047 * 3600)
        );
    }
}
