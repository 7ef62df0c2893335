//! The write-ahead log: entries written before work that must be undone if it does not
//! finish, and removed when it did. Stored at `wal/<uuid>` as
//! `{"type": kind, "data": ..., "created_at": unix seconds}` (the Go SDK's layout).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::logical::{Storage, StorageEntry, StorageError};

/// Where entries are stored (list it as `local_storage` in the special paths).
pub const WAL_PREFIX: &str = "wal/";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
/// One entry of the log.
pub struct WalEntry {
    /// The entry's id (its key below [`WAL_PREFIX`]).
    #[serde(skip)]
    pub id: String,
    /// What kind of work it covers; decides how it is rolled back.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the rollback needs to undo the work.
    pub data: Value,
    /// When it was written (Unix seconds).
    pub created_at: i64,
}

/// Writes an entry and returns its id.
pub async fn put(storage: &dyn Storage, kind: &str, data: Value) -> Result<String, StorageError> {
    let id = uuid::Uuid::new_v4().to_string();
    let entry = WalEntry {
        id: id.clone(),
        kind: kind.to_string(),
        data,
        created_at: chrono::Utc::now().timestamp(),
    };
    storage
        .put(StorageEntry::json(format!("{WAL_PREFIX}{id}"), &entry)?)
        .await?;
    Ok(id)
}

/// Replaces the data of entry `id` (keeping its kind and creation time semantics: the
/// creation time is refreshed only if the entry is gone).
pub async fn update(
    storage: &dyn Storage,
    id: &str,
    kind: &str,
    data: Value,
) -> Result<(), StorageError> {
    let created_at = match get(storage, id).await? {
        Some(e) => e.created_at,
        None => chrono::Utc::now().timestamp(),
    };
    let entry = WalEntry {
        id: id.to_string(),
        kind: kind.to_string(),
        data,
        created_at,
    };
    storage
        .put(StorageEntry::json(format!("{WAL_PREFIX}{id}"), &entry)?)
        .await
}

/// Entry `id`, if it exists.
pub async fn get(storage: &dyn Storage, id: &str) -> Result<Option<WalEntry>, StorageError> {
    let Some(raw) = storage.get(&format!("{WAL_PREFIX}{id}")).await? else {
        return Ok(None);
    };
    let mut entry: WalEntry = raw.decode()?;
    entry.id = id.to_string();
    Ok(Some(entry))
}

/// Removes entry `id`.
pub async fn delete(storage: &dyn Storage, id: &str) -> Result<(), StorageError> {
    storage.delete(&format!("{WAL_PREFIX}{id}")).await
}

/// The ids of all entries.
pub async fn list(storage: &dyn Storage) -> Result<Vec<String>, StorageError> {
    storage.list(WAL_PREFIX).await
}

/// Deletes entry `id` once its work is done, logging a failure (the rollback then finds
/// nothing left to undo, or undoes it again harmlessly).
pub async fn forget(storage: &dyn Storage, id: &str) {
    if let Err(e) = delete(storage, id).await {
        tracing::warn!(wal_id = %id, error = %e, "cannot delete write-ahead-log entry");
    }
}

/// A string field of an entry's data; empty when absent or not a string.
pub fn data_str(data: &Value, key: &str) -> String {
    data.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::InmemStorage;

    #[tokio::test]
    async fn round_trip_in_go_layout() {
        let s = InmemStorage::new();
        let id = put(&s, "appCreate", serde_json::json!({"AppID": "x"}))
            .await
            .unwrap();
        let raw = s.get(&format!("wal/{id}")).await.unwrap().unwrap();
        let v: Value = serde_json::from_slice(&raw.value).unwrap();
        assert_eq!(v["type"], "appCreate");
        assert_eq!(v["data"]["AppID"], "x");
        assert!(v["created_at"].as_i64().unwrap() > 1_700_000_000);
        assert_eq!(list(&s).await.unwrap(), vec![id.clone()]);
        let e = get(&s, &id).await.unwrap().unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), (id.as_str(), "appCreate"));
        delete(&s, &id).await.unwrap();
        assert!(get(&s, &id).await.unwrap().is_none());
    }
}
