//! Durations as Vault accepts them: whole seconds, or a Go duration string with an optional
//! `d` (days) unit, such as `90`, `"90"`, `"1h30m"`, `"2d"`.

use std::time::Duration;

/// Parses a duration given as seconds or as a duration string.
pub fn parse_duration(input: &serde_json::Value) -> Result<Duration, String> {
    match input {
        serde_json::Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                Ok(Duration::from_secs(secs))
            } else if let Some(f) = n.as_f64().filter(|f| *f >= 0.0 && f.is_finite()) {
                Ok(Duration::from_secs_f64(f.trunc()))
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
        return Ok(Duration::from_secs(secs));
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
    if !total.is_finite() || total > 1e15 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(Duration::from_secs_f64(total))
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
}
