//! The write-ahead log: entries written before work that must be undone if it does not
//! finish, and removed when it did. Stored at `wal/<uuid>` as
//! `{"type": kind, "data": ..., "created_at": unix seconds}` (the Go SDK's layout), plus two
//! fields the Go SDK ignores when it reads the entry:
//!
//! * `writer`: the [`instance_id`] of the process that wrote it. A process's id is random
//!   and new at every start, so an entry whose writer differs from the running process was
//!   left by a process that is gone (a crash, a restart): nothing is still working on it;
//! * `ended`: the work it covers has ended without its undo completing; nothing is still
//!   working on it either.
//!
//! The rollback takes such entries at once instead of waiting for them to age.
//!
//! * `settle_until`: set by the rollback when it undid an entry's work but a request the
//!   writer sent may still land (a creation the service carries out after the undo looked):
//!   the entry stays until then and is rolled back once more before it goes (see
//!   [`RollbackOutcome::Settle`]).

use std::sync::OnceLock;
use std::time::Duration;

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
    /// The [`instance_id`] of the writing process; empty in entries of older writers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub writer: String,
    /// The covered work ended with its undo incomplete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// Unix seconds: the rollback undid the work once and rolls it back again from then on,
    /// when nothing the writer sent can land any more (0: not rolled back yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub settle_until: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What a rollback function made of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// The work is undone for good: the entry is removed.
    Done,
    /// The work is undone as far as can be seen now, but a request its writer sent may still
    /// land for up to this long (a creation that reaches the service after the undo looked
    /// for it). The entry is kept and rolled back once more when that time has passed; only
    /// then is it removed. A rollback that returns this again once the time has passed is
    /// final.
    Settle(Duration),
}

impl WalEntry {
    /// True when no running work can still own this entry: it was marked ended, or it was
    /// written by another (so finished) process.
    pub fn abandoned(&self) -> bool {
        self.ended || (!self.writer.is_empty() && self.writer != instance_id())
    }
}

/// This process's random id, recorded in the entries it writes.
pub fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// Writes an entry and returns its id.
pub async fn put(storage: &dyn Storage, kind: &str, data: Value) -> Result<String, StorageError> {
    let id = uuid::Uuid::new_v4().to_string();
    let entry = WalEntry {
        id: id.clone(),
        kind: kind.to_string(),
        data,
        created_at: chrono::Utc::now().timestamp(),
        writer: instance_id().to_string(),
        ended: false,
        settle_until: 0,
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
        writer: instance_id().to_string(),
        ended: false,
        settle_until: 0,
    };
    storage
        .put(StorageEntry::json(format!("{WAL_PREFIX}{id}"), &entry)?)
        .await
}

/// Marks entry `id` as [`WalEntry::ended`]: its work is over and its undo did not finish,
/// so the next rollback takes it without waiting. A missing entry is left missing.
pub async fn mark_ended(storage: &dyn Storage, id: &str) -> Result<(), StorageError> {
    change_entry(storage, id, |entry| entry.ended = true).await
}

/// Records that entry `id` was rolled back once and is rolled back again from `until` (Unix
/// seconds) on; a missing entry is left missing (its work was finished meanwhile).
pub async fn settle(storage: &dyn Storage, id: &str, until: i64) -> Result<(), StorageError> {
    change_entry(storage, id, |entry| entry.settle_until = until).await
}

/// Rewrites entry `id` changed by `change`; a missing entry is left missing.
async fn change_entry(
    storage: &dyn Storage,
    id: &str,
    change: impl FnOnce(&mut WalEntry),
) -> Result<(), StorageError> {
    let Some(mut entry) = get(storage, id).await? else {
        return Ok(());
    };
    change(&mut entry);
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

    #[tokio::test]
    async fn entries_record_their_writer_and_can_be_marked_ended() {
        let s = InmemStorage::new();
        let id = put(&s, "appCreate", serde_json::json!({})).await.unwrap();
        let raw: Value =
            serde_json::from_slice(&s.get(&format!("wal/{id}")).await.unwrap().unwrap().value)
                .unwrap();
        assert_eq!(raw["writer"], instance_id());
        assert!(raw.get("ended").is_none(), "{raw}");
        let e = get(&s, &id).await.unwrap().unwrap();
        assert!(!e.abandoned(), "an entry of this process's running work");

        mark_ended(&s, &id).await.unwrap();
        let e = get(&s, &id).await.unwrap().unwrap();
        assert!(e.ended && e.abandoned());
        assert_eq!(e.writer, instance_id());
        mark_ended(&s, "missing").await.unwrap();
        assert!(get(&s, "missing").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_settling_entry_keeps_its_time_and_the_go_layout() {
        let s = InmemStorage::new();
        let id = put(&s, "appRoleAssign", serde_json::json!({"SpID": "x"}))
            .await
            .unwrap();
        settle(&s, &id, 1_900_000_000).await.unwrap();
        let raw: Value =
            serde_json::from_slice(&s.get(&format!("wal/{id}")).await.unwrap().unwrap().value)
                .unwrap();
        assert_eq!(raw["settle_until"], 1_900_000_000);
        assert_eq!(raw["type"], "appRoleAssign", "{raw}");
        assert_eq!(raw["data"]["SpID"], "x", "{raw}");
        assert_eq!(
            get(&s, &id).await.unwrap().unwrap().settle_until,
            1_900_000_000
        );
        // Unset, the field is not written (the Go SDK's layout).
        let fresh = put(&s, "k", serde_json::json!({})).await.unwrap();
        let raw: Value =
            serde_json::from_slice(&s.get(&format!("wal/{fresh}")).await.unwrap().unwrap().value)
                .unwrap();
        assert!(raw.get("settle_until").is_none(), "{raw}");
        settle(&s, "missing", 1).await.unwrap();
        assert!(get(&s, "missing").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn entries_of_another_process_or_of_go_are_told_apart() {
        let s = InmemStorage::new();
        // The Go SDK's layout: no writer, no ended.
        s.put(StorageEntry::new(
            "wal/go",
            br#"{"type":"appCreate","data":{"AppID":""},"created_at":1700000000}"#.to_vec(),
        ))
        .await
        .unwrap();
        let go = get(&s, "go").await.unwrap().unwrap();
        assert!(!go.abandoned(), "without a writer, only age tells");
        s.put(StorageEntry::new(
            "wal/dead",
            br#"{"type":"appCreate","data":{},"created_at":1700000000,"writer":"a-dead-process"}"#
                .to_vec(),
        ))
        .await
        .unwrap();
        assert!(get(&s, "dead").await.unwrap().unwrap().abandoned());
    }
}
