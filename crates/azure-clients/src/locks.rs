//! Per-key async locks (one writer at a time per Graph object).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// A map of async mutexes created on demand and dropped once nobody holds or waits for
/// them.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds or waits for (only the map's reference is left).
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(key.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn serialises_per_key_only() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (l, i, m) = (locks.clone(), inside.clone(), max_inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = l.lock("app-1").await;
                let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                i.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another key is not blocked by app-1.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock("app-2")).await;
        assert!(other.is_ok());
        drop(other);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        let _g = locks.lock("app-3").await;
        assert_eq!(locks.len(), 1);
    }
}
