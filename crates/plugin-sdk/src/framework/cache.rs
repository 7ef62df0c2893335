//! A read cache in front of the host's storage. A mount is the only writer of its own
//! storage on the active node, so what it read or wrote stays valid until the host says
//! otherwise (`InvalidateKey`, on standbys and replicas). This keeps round trips to the host
//! off the hot path of reads.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::RwLock;

use crate::logical::{Storage, StorageEntry, StorageError};

/// Above this many cached keys the cache starts over (it also remembers misses, which a
/// caller can multiply at will).
const MAX_ENTRIES: usize = 4096;

/// What the cache knows, and when each key last began to change.
///
/// Every write, delete or invalidation takes a new sequence number and records it for its
/// key. A read that missed notes the sequence number before it asks the host, and keeps what
/// it read only if no change of that key began since: a value read before a write completed
/// can never overwrite the newer one.
#[derive(Default)]
struct State {
    entries: HashMap<String, Option<StorageEntry>>,
    /// The sequence number of the last change begun on each key.
    changed: HashMap<String, u64>,
    /// Changes of keys no longer in `changed` (forgotten when the cache started over) count
    /// as having begun at this sequence number.
    forgotten_at: u64,
    seq: u64,
}

impl State {
    fn begin_change(&mut self, key: &str) -> u64 {
        self.seq += 1;
        self.entries.remove(key);
        self.changed.insert(key.to_string(), self.seq);
        self.seq
    }

    fn last_change(&self, key: &str) -> u64 {
        self.changed.get(key).copied().unwrap_or(self.forgotten_at)
    }

    fn insert(&mut self, key: &str, value: Option<StorageEntry>) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(key) {
            self.entries.clear();
            self.changed.clear();
            self.forgotten_at = self.seq;
        }
        self.entries.insert(key.to_string(), value);
    }
}

/// A read cache in front of a mount's storage: remembers values and misses, drops a key
/// on write, delete and invalidation.
pub struct CachedStorage {
    inner: Arc<dyn Storage>,
    state: RwLock<State>,
}

impl CachedStorage {
    /// A cache in front of `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            state: RwLock::new(State::default()),
        }
    }

    /// Forgets `key`; the next read goes to the host (a read under way keeps its value to
    /// itself).
    pub async fn invalidate(&self, key: &str) {
        self.state.write().await.begin_change(key);
    }

    /// Forgets everything.
    pub async fn clear(&self) {
        let mut state = self.state.write().await;
        state.seq += 1;
        state.entries.clear();
        state.changed.clear();
        state.forgotten_at = state.seq;
    }

    /// Keeps what a read found, unless a change of `key` began after sequence `read_at`.
    async fn fill(&self, key: &str, value: Option<StorageEntry>, read_at: u64) {
        let mut state = self.state.write().await;
        if state.last_change(key) <= read_at {
            state.insert(key, value);
        }
    }

    /// Records what change `seq` stored, unless a later change of `key` has begun (whose
    /// own completion decides, or whose failure leaves the key to the host).
    async fn complete(&self, key: &str, value: Option<StorageEntry>, seq: u64) {
        let mut state = self.state.write().await;
        if state.last_change(key) == seq {
            state.insert(key, value);
        }
    }
}

#[async_trait]
impl Storage for CachedStorage {
    async fn get(&self, key: &str) -> Result<Option<StorageEntry>, StorageError> {
        let read_at = {
            let state = self.state.read().await;
            if let Some(hit) = state.entries.get(key) {
                return Ok(hit.clone());
            }
            state.seq
        };
        let value = self.inner.get(key).await?;
        self.fill(key, value.clone(), read_at).await;
        Ok(value)
    }

    async fn put(&self, entry: StorageEntry) -> Result<(), StorageError> {
        let key = entry.key.clone();
        // Forget first: if the write fails, the next read asks the host.
        let seq = self.state.write().await.begin_change(&key);
        self.inner.put(entry.clone()).await?;
        self.complete(&key, Some(entry), seq).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let seq = self.state.write().await.begin_change(key);
        self.inner.delete(key).await?;
        self.complete(key, None, seq).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::InmemStorage;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts reads that reach the inner storage.
    struct Counting {
        inner: InmemStorage,
        gets: AtomicUsize,
    }

    #[async_trait]
    impl Storage for Counting {
        async fn get(&self, key: &str) -> Result<Option<StorageEntry>, StorageError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn put(&self, entry: StorageEntry) -> Result<(), StorageError> {
            self.inner.put(entry).await
        }
        async fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
            self.inner.list(prefix).await
        }
    }

    #[tokio::test]
    async fn reads_are_served_from_cache_until_invalidated() {
        let inner = Arc::new(Counting {
            inner: InmemStorage::new(),
            gets: AtomicUsize::new(0),
        });
        let cache = CachedStorage::new(inner.clone());
        cache
            .put(StorageEntry::new("config", b"1".to_vec()))
            .await
            .unwrap();
        assert_eq!(cache.get("config").await.unwrap().unwrap().value, b"1");
        assert!(cache.get("missing").await.unwrap().is_none());
        assert!(cache.get("missing").await.unwrap().is_none());
        assert_eq!(
            inner.gets.load(Ordering::SeqCst),
            1,
            "one miss, then cached"
        );

        // Someone else changes the key; the host invalidates it.
        inner
            .inner
            .put(StorageEntry::new("config", b"2".to_vec()))
            .await
            .unwrap();
        assert_eq!(cache.get("config").await.unwrap().unwrap().value, b"1");
        cache.invalidate("config").await;
        assert_eq!(cache.get("config").await.unwrap().unwrap().value, b"2");

        cache.delete("config").await.unwrap();
        assert!(cache.get("config").await.unwrap().is_none());
    }

    /// A storage whose reads of one key stop after reading, until released.
    struct Paused {
        inner: InmemStorage,
        key: &'static str,
        read_done: tokio::sync::Notify,
        release: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl Storage for Paused {
        async fn get(&self, key: &str) -> Result<Option<StorageEntry>, StorageError> {
            let value = self.inner.get(key).await?;
            if key == self.key {
                self.read_done.notify_one();
                let permit = self
                    .release
                    .acquire()
                    .await
                    .map_err(|e| StorageError::Host {
                        op: "get",
                        key: key.to_string(),
                        reason: e.to_string(),
                    })?;
                permit.forget();
            }
            Ok(value)
        }
        async fn put(&self, entry: StorageEntry) -> Result<(), StorageError> {
            self.inner.put(entry).await
        }
        async fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
            self.inner.list(prefix).await
        }
    }

    /// A read that misses, then a change that completes while that read is under way: the
    /// read answers what it saw, but the cache keeps the change.
    async fn stale_read_races(
        change: impl for<'a> Fn(&'a CachedStorage) -> futures::future::BoxFuture<'a, ()>,
    ) -> Option<StorageEntry> {
        let inner = Arc::new(Paused {
            inner: InmemStorage::new(),
            key: "roles/r",
            read_done: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        });
        inner
            .inner
            .put(StorageEntry::new("roles/r", b"old".to_vec()))
            .await
            .unwrap();
        let cache = Arc::new(CachedStorage::new(inner.clone()));
        let reader = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get("roles/r").await })
        };
        inner.read_done.notified().await;
        change(&cache).await;
        inner.release.add_permits(1);
        let seen = reader.await.unwrap().unwrap();
        assert_eq!(
            seen.unwrap().value,
            b"old",
            "the racing read saw the old value"
        );
        // Later reads must not be served the old value from the cache.
        inner.release.add_permits(16);
        cache.get("roles/r").await.unwrap()
    }

    #[tokio::test]
    async fn a_read_racing_a_delete_does_not_bring_the_value_back() {
        let after =
            stale_read_races(|c| Box::pin(async move { c.delete("roles/r").await.unwrap() })).await;
        assert!(after.is_none(), "deleted value resurrected: {after:?}");
    }

    #[tokio::test]
    async fn a_read_racing_a_put_does_not_overwrite_it() {
        let after = stale_read_races(|c| {
            Box::pin(async move {
                c.put(StorageEntry::new("roles/r", b"new".to_vec()))
                    .await
                    .unwrap()
            })
        })
        .await;
        assert_eq!(after.unwrap().value, b"new");
    }

    #[tokio::test]
    async fn a_read_racing_an_invalidation_is_not_kept() {
        let after = stale_read_races(|c| {
            Box::pin(async move {
                // Another node changed the key; the host tells this one.
                c.inner
                    .put(StorageEntry::new("roles/r", b"new".to_vec()))
                    .await
                    .unwrap();
                c.invalidate("roles/r").await;
            })
        })
        .await;
        assert_eq!(after.unwrap().value, b"new");
    }
}
