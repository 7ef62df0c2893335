//! Optional token-bucket throttling of Graph and ARM writes (off by default).

use std::time::Instant;

/// One token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Outcome of asking a bucket for one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Allowed; this many whole tokens are left.
    Allowed(u64),
    /// Refused; a token will be available after this many seconds.
    Throttled(f64),
}

impl Bucket {
    pub fn full(burst: u64) -> Self {
        Bucket {
            tokens: burst as f64,
            last: Instant::now(),
        }
    }

    /// Refills at `rate` tokens per second up to `burst`, then takes one token if it can.
    pub fn take(&mut self, rate: f64, burst: u64, now: Instant) -> Take {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let cap = (burst.max(1)) as f64;
        self.tokens = (self.tokens + elapsed * rate).min(cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Allowed(self.tokens.floor() as u64)
        } else {
            Take::Throttled((1.0 - self.tokens) / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2);
        b.last = t0;
        assert_eq!(b.take(1.0, 2, t0), Take::Allowed(1));
        assert_eq!(b.take(1.0, 2, t0), Take::Allowed(0));
        match b.take(1.0, 2, t0) {
            Take::Throttled(wait) => assert!((wait - 1.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            b.take(1.0, 2, t0 + Duration::from_secs(1)),
            Take::Allowed(0)
        );
    }
}
