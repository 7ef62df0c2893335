//! The token service's replicas of the directory.
//!
//! Entra ID answers token requests from many replicas of the directory, and a new
//! application, service principal or credential reaches them one by one: Microsoft documents
//! that a new secret or application can be refused (AADSTS7000215, AADSTS700016) for a while
//! after it was created, and that retrying then succeeds. While a change spreads, some token
//! requests succeed and others fail, depending on the replica they land on.
//!
//! The model: `token_replicas` replicas; each token request lands on one chosen at random.
//! A new object (application, service principal, password, key) becomes visible on replica
//! `r` at `created + credential_delay + offset(object, r)`, where the offset is drawn once per
//! object and replica, uniformly in `[0, replica_window_ms]`. Visibility never goes back, and
//! objects present at start (seeded) are visible everywhere. With the defaults (one replica,
//! no window) this is the plain credential delay.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rand::Rng;

use super::Settings;

/// Attached to a token response: which replica answered and for which client id (the
/// request log records both).
#[derive(Debug, Clone)]
pub struct TokenCall {
    pub replica: usize,
    pub client_id: Option<String>,
}

/// The replica model of one emulator run (its salt makes the offsets differ between runs).
#[derive(Debug, Clone, Copy)]
pub struct Replicas {
    salt: u64,
}

impl Replicas {
    pub fn new() -> Self {
        Replicas {
            salt: rand::rng().random(),
        }
    }

    /// The replica a new token request lands on.
    pub fn pick(settings: &Settings) -> usize {
        let n = settings.token_replicas.max(1);
        if n == 1 {
            0
        } else {
            rand::rng().random_range(0..n)
        }
    }

    /// How long after its creation object `id` becomes visible on `replica`.
    pub fn visible_after(&self, settings: &Settings, id: &str, replica: usize) -> Duration {
        let window = settings.replica_window_ms;
        let offset = if window == 0 {
            0
        } else {
            let mut h = DefaultHasher::new();
            (self.salt, id, replica).hash(&mut h);
            h.finish() % (window + 1)
        };
        settings.credential_delay() + Duration::from_millis(offset)
    }

    /// Whether object `id`, created at `created_at` (`None`: seeded), is visible on `replica`.
    pub fn visible(
        &self,
        settings: &Settings,
        id: &str,
        created_at: Option<Instant>,
        replica: usize,
    ) -> bool {
        match created_at {
            None => true,
            Some(t) => t.elapsed() >= self.visible_after(settings, id, replica),
        }
    }

    /// How long after its creation object `id` is visible on every replica.
    pub fn everywhere_after(&self, settings: &Settings, id: &str) -> Duration {
        (0..settings.token_replicas.max(1))
            .map(|r| self.visible_after(settings, id, r))
            .max()
            .unwrap_or_default()
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(replicas: usize, window: u64, delay: u64) -> Settings {
        let mut s = Settings::from_config(&crate::Config::default());
        s.token_replicas = replicas;
        s.replica_window_ms = window;
        s.credential_delay_ms = delay;
        s
    }

    #[test]
    fn offsets_stay_in_the_window_and_differ_between_replicas() {
        let r = Replicas::new();
        let s = settings(8, 1000, 200);
        let mut seen = std::collections::HashSet::new();
        for replica in 0..8 {
            let d = r.visible_after(&s, "key-1", replica);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(1200));
            assert_eq!(d, r.visible_after(&s, "key-1", replica), "drawn once");
            seen.insert(d);
        }
        assert!(
            seen.len() > 1,
            "replicas see a new object at different times"
        );
        assert!(r.everywhere_after(&s, "key-1") >= r.visible_after(&s, "key-1", 3));
    }

    #[test]
    fn the_defaults_are_the_plain_credential_delay() {
        let r = Replicas::new();
        let s = settings(1, 0, 300);
        assert_eq!(Replicas::pick(&s), 0);
        assert_eq!(r.visible_after(&s, "x", 0), Duration::from_millis(300));
        assert!(r.visible(&s, "x", None, 0), "seeded objects are everywhere");
        assert!(!r.visible(&s, "x", Some(Instant::now()), 0));
    }
}
