//! Deadlines and the retry policy.
//!
//! Every public call takes a [`Deadline`]; no retry or wait ever sleeps past it. Two
//! layers of retry exist:
//!
//! * per HTTP request (in `http.rs`): 429 and 503 wait for `Retry-After` (or back off when
//!   it is absent); 408/500/502/504 and connection failures back off exponentially with
//!   jitter, for idempotent requests only (a non-idempotent POST is replayed only when the
//!   connection was never established or the service said 429/503, i.e. did not process it);
//! * per operation (in `graph.rs` / `arm.rs`): eventual-consistency errors right after a
//!   principal was created (`PrincipalNotFound`, `NoBackingApplicationObject`, a member
//!   that Graph does not see yet) are retried until [`RetryPolicy::propagation_timeout`]
//!   or the deadline, whichever comes first.

use rand::Rng;
use reqwest::header::HeaderMap;
use std::time::Duration;
use tokio::time::Instant;

/// The instant by which a call must be finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at an instant.
    pub fn at(instant: Instant) -> Deadline {
        Deadline(instant)
    }

    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout)
    }

    /// The instant.
    pub fn instant(&self) -> Instant {
        self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// True once the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of this deadline and `timeout` from now.
    pub fn capped(&self, timeout: Duration) -> Deadline {
        Deadline(self.0.min(Instant::now() + timeout))
    }
}

/// Retry and timeout settings. `Default` gives production values.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per HTTP request for transient failures (5xx, 408, connection errors).
    pub max_attempts: u32,
    /// Attempts per HTTP request while throttled (429, 503).
    pub max_throttled_attempts: u32,
    /// First back-off delay; doubles per attempt.
    pub initial_backoff: Duration,
    /// Largest back-off delay.
    pub max_backoff: Duration,
    /// Longest `Retry-After` the client will honour; a longer one ends the call with the
    /// throttling error.
    pub max_retry_after: Duration,
    /// Timeout of one HTTP attempt (also bounded by the deadline).
    pub attempt_timeout: Duration,
    /// How long eventual-consistency errors are retried after a create (the Go engine
    /// uses 80 s).
    pub propagation_timeout: Duration,
    /// First delay between propagation retries; doubles up to `propagation_max_delay`.
    pub propagation_initial_delay: Duration,
    /// Largest delay between propagation retries.
    pub propagation_max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_throttled_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(30),
            propagation_timeout: Duration::from_secs(80),
            propagation_initial_delay: Duration::from_millis(500),
            propagation_max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Exponential back-off with jitter for the `attempt`-th retry (1-based): a random
    /// duration between half and all of `initial_backoff * 2^(attempt-1)`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        jittered(
            self.initial_backoff,
            self.max_backoff,
            attempt.saturating_sub(1),
        )
    }

    /// Delay before the `attempt`-th propagation retry (1-based).
    pub fn propagation_delay(&self, attempt: u32) -> Duration {
        jittered(
            self.propagation_initial_delay,
            self.propagation_max_delay,
            attempt.saturating_sub(1),
        )
    }
}

fn jittered(initial: Duration, max: Duration, exponent: u32) -> Duration {
    let factor = 2u32.saturating_pow(exponent.min(16));
    let full = initial.saturating_mul(factor).min(max);
    let half = full / 2;
    let spread = full.saturating_sub(half).as_millis() as u64;
    let extra = if spread == 0 {
        0
    } else {
        rand::rng().random_range(0..=spread)
    };
    half + Duration::from_millis(extra)
}

/// The delay a response asks for: `retry-after-ms`, then `x-ms-retry-after-ms`
/// (milliseconds), then `Retry-After` (seconds, possibly fractional, or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = header_str(headers, name).and_then(|v| v.trim().parse::<f64>().ok()) {
            // An absurd value from the service must not panic the conversion.
            if let Ok(d) = Duration::try_from_secs_f64(ms / 1000.0) {
                return Some(d);
            }
        }
    }
    let value = header_str(headers, "retry-after")?.trim().to_owned();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let date = chrono::DateTime::parse_from_rfc2822(&value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Sleeps for `delay` unless that would end after `deadline`; returns false (without
/// sleeping) in that case.
pub(crate) async fn sleep_within(deadline: Deadline, delay: Duration) -> bool {
    if Instant::now() + delay >= deadline.instant() {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d10 = p.backoff(10);
            assert!(d10 >= Duration::from_millis(500) && d10 <= Duration::from_millis(1000));
            assert!(p.backoff(1000) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(2500)));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("1200"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1200)));
        h.insert("retry-after-ms", HeaderValue::from_static("300"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(300)));

        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);

        // Values no duration holds are ignored, not a panic.
        for (name, value) in [
            ("retry-after", "1e300"),
            ("retry-after", "-1"),
            ("retry-after", "NaN"),
            ("retry-after-ms", "1e300"),
            ("x-ms-retry-after-ms", "inf"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            assert_eq!(retry_after(&h), None, "{name}: {value}");
        }
    }

    #[tokio::test]
    async fn never_sleeps_past_the_deadline() {
        let d = Deadline::after(Duration::from_millis(50));
        let start = Instant::now();
        assert!(!sleep_within(d, Duration::from_secs(5)).await);
        assert!(start.elapsed() < Duration::from_millis(40));
        assert!(sleep_within(d, Duration::from_millis(1)).await);
        assert!(d.remaining() <= Duration::from_millis(50));
        assert!(d.capped(Duration::from_millis(1)) <= d);
    }
}
