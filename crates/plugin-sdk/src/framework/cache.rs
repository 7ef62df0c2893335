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

/// A read cache in front of a mount's storage: remembers values and misses, drops a key
/// on write, delete and invalidation.
pub struct CachedStorage {
    inner: Arc<dyn Storage>,
    entries: RwLock<HashMap<String, Option<StorageEntry>>>,
}

impl CachedStorage {
    /// A cache in front of `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Forgets `key`; the next read goes to the host.
    pub async fn invalidate(&self, key: &str) {
        self.entries.write().await.remove(key);
    }

    /// Forgets everything.
    pub async fn clear(&self) {
        self.entries.write().await.clear();
    }

    async fn remember(&self, key: &str, value: Option<StorageEntry>) {
        let mut entries = self.entries.write().await;
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(key) {
            entries.clear();
        }
        entries.insert(key.to_string(), value);
    }
}

#[async_trait]
impl Storage for CachedStorage {
    async fn get(&self, key: &str) -> Result<Option<StorageEntry>, StorageError> {
        if let Some(hit) = self.entries.read().await.get(key) {
            return Ok(hit.clone());
        }
        let value = self.inner.get(key).await?;
        self.remember(key, value.clone()).await;
        Ok(value)
    }

    async fn put(&self, entry: StorageEntry) -> Result<(), StorageError> {
        let key = entry.key.clone();
        // Forget first: if the write fails, the next read asks the host.
        self.invalidate(&key).await;
        self.inner.put(entry.clone()).await?;
        self.remember(&key, Some(entry)).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.invalidate(key).await;
        self.inner.delete(key).await?;
        self.remember(key, None).await;
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
}
