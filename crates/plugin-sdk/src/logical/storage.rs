use std::collections::BTreeMap;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::RwLock;

/// One stored value.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageEntry {
    /// The key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Ask the host to seal-wrap this entry (where it supports it).
    pub seal_wrap: bool,
}

impl std::fmt::Debug for StorageEntry {
    // Values hold secrets; show only their size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageEntry")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("seal_wrap", &self.seal_wrap)
            .finish()
    }
}

impl StorageEntry {
    /// An entry holding `value` at `key`.
    pub fn new(key: impl Into<String>, value: Vec<u8>) -> Self {
        Self {
            key: key.into(),
            value,
            seal_wrap: false,
        }
    }

    /// An entry holding `value` as JSON.
    pub fn json<T: serde::Serialize>(
        key: impl Into<String>,
        value: &T,
    ) -> Result<Self, StorageError> {
        let key = key.into();
        let bytes = serde_json::to_vec(value).map_err(|e| StorageError::Encode {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(key, bytes))
    }

    /// Decodes the value as JSON.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, StorageError> {
        serde_json::from_slice(&self.value).map_err(|e| StorageError::Decode {
            key: self.key.clone(),
            reason: e.to_string(),
        })
    }
}

/// The text of the host's error for a write to read-only storage (a standby, a performance
/// secondary). The host forwards a request to the active node when a backend's error
/// contains it, so it must reach the host unchanged.
pub const READ_ONLY_ERROR: &str = "cannot write to readonly storage";

#[derive(Debug, Clone, Error, PartialEq, Eq)]
/// A storage call that failed.
pub enum StorageError {
    /// The host refused a write because its storage is read-only here; the host's own text.
    #[error("{0}")]
    ReadOnly(String),
    /// The host refused or failed the call.
    #[error("storage {op} of {key:?} failed: {reason}")]
    Host {
        /// The call (`get`, `put`, ...).
        op: &'static str,
        /// The key it was for.
        key: String,
        /// What the host said.
        reason: String,
    },
    /// A stored value is not what the backend expects.
    #[error("cannot decode storage entry {key:?}: {reason}")]
    Decode {
        /// The key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A value cannot be encoded for storage.
    #[error("cannot encode storage entry {key:?}: {reason}")]
    Encode {
        /// The key.
        key: String,
        /// Why it does not encode.
        reason: String,
    },
}

impl StorageError {
    /// The host's error `reason` for `op` on `key`: [`StorageError::ReadOnly`] when it is the
    /// read-only refusal, kept word for word.
    pub fn from_host(op: &'static str, key: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        if reason.contains(READ_ONLY_ERROR) {
            Self::ReadOnly(reason)
        } else {
            Self::Host {
                op,
                key: key.to_string(),
                reason,
            }
        }
    }

    /// True for the host's read-only refusal.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Self::ReadOnly(_))
    }
}

/// A mount's private key/value storage.
#[async_trait]
pub trait Storage: Send + Sync {
    /// `None` when the key does not exist.
    async fn get(&self, key: &str) -> Result<Option<StorageEntry>, StorageError>;
    /// Writes an entry (replacing any value at its key).
    async fn put(&self, entry: StorageEntry) -> Result<(), StorageError>;
    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Names one level below `prefix`, relative to it; sub-folders end in `/`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
}

/// Storage in memory: for unit tests and tools.
#[derive(Default)]
pub struct InmemStorage {
    entries: RwLock<BTreeMap<String, StorageEntry>>,
}

impl InmemStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Storage for InmemStorage {
    async fn get(&self, key: &str) -> Result<Option<StorageEntry>, StorageError> {
        Ok(self.entries.read().await.get(key).cloned())
    }

    async fn put(&self, entry: StorageEntry) -> Result<(), StorageError> {
        self.entries.write().await.insert(entry.key.clone(), entry);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.entries.write().await.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let entries = self.entries.read().await;
        let mut out: Vec<String> = Vec::new();
        for key in entries.keys().filter(|k| k.starts_with(prefix)) {
            let rest = &key[prefix.len()..];
            let name = match rest.find('/') {
                Some(i) => &rest[..=i],
                None => rest,
            };
            if out.last().map(String::as_str) != Some(name) {
                out.push(name.to_string());
            }
        }
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inmem_lists_one_level() {
        let s = InmemStorage::new();
        for k in ["roles/a", "roles/b", "wal/x", "wal/y/z", "config"] {
            s.put(StorageEntry::new(k, vec![])).await.unwrap();
        }
        assert_eq!(s.list("").await.unwrap(), vec!["config", "roles/", "wal/"]);
        assert_eq!(s.list("wal/").await.unwrap(), vec!["x", "y/"]);
        s.delete("roles/a").await.unwrap();
        assert_eq!(s.list("roles/").await.unwrap(), vec!["b"]);
        assert!(s.get("roles/a").await.unwrap().is_none());
    }
}
