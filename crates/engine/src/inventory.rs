//! The record of every application the engine made, for the reconciler.
//!
//! * The mount's identity: a random id kept at [`MOUNT_ID_KEY`] from the first issuance on.
//!   Every application the engine creates carries the tag [`mount_tag`] of it, and every role
//!   assignment made with it a description naming the mount and the application
//!   ([`role_assignment_description`]). The id lives in the mount's storage, so a storage
//!   restore keeps it; it is local storage (never replicated), so two clusters sharing a
//!   replicated mount never claim each other's objects.
//! * One entry per application at `inventory/apps/<object id>`, written right after the
//!   application exists and while its write-ahead-log entry still covers it (so there is no
//!   moment when the application is covered by neither), removed when its lease is revoked,
//!   marked `revoke_requested` when a revoke or the issuance failed (nothing live can use it
//!   any more: the host may have force-revoked the lease and forgotten it).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use vault_plugin_sdk::logical::{Storage, StorageEntry, StorageError};

/// The prefix of everything the inventory stores (local storage: see the module doc).
pub const INVENTORY_PREFIX: &str = "inventory/";
/// Where the mount's identity is kept.
pub const MOUNT_ID_KEY: &str = "inventory/mount-id";
/// Where the application entries are kept.
pub const APPS_PREFIX: &str = "inventory/apps/";
/// The tag of an application made by a mount is this plus the mount's id.
pub const MOUNT_TAG_PREFIX: &str = "vault-plugin-secrets-azure:mount:";

/// The tag every application of mount `mount_id` carries.
pub fn mount_tag(mount_id: &str) -> String {
    format!("{MOUNT_TAG_PREFIX}{mount_id}")
}

/// The description of a role assignment made for application `app_object_id` by the mount
/// tagged `tag`. ARM keeps it (up to 2,048 characters) and returns it in listings. The
/// lease id is not known to the engine when it makes the assignment (the host assigns it
/// afterwards), so the description names the application instead.
pub fn role_assignment_description(tag: &str, app_object_id: &str) -> String {
    format!("{tag} app:{app_object_id}")
}

/// The mount tag and application object id a description of [`role_assignment_description`]
/// names; `None` for any other text.
pub fn parse_role_assignment_description(text: &str) -> Option<(&str, &str)> {
    let (tag, app) = text.split_once(" app:")?;
    if !tag.starts_with(MOUNT_TAG_PREFIX) || tag.len() == MOUNT_TAG_PREFIX.len() || app.is_empty() {
        return None;
    }
    Some((tag, app))
}

/// One application the engine made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AppEntry {
    pub app_object_id: String,
    pub app_id: String,
    pub display_name: String,
    /// Full ids of the role assignments made for it.
    pub role_assignment_ids: Vec<String>,
    pub created: Option<DateTime<Utc>>,
    /// The latest a lease of it can end: the end of its credential in Azure (a lease
    /// renewal never goes past it).
    pub expires: Option<DateTime<Utc>>,
    /// When a revoke of its lease (or its own issuance) failed: no live credential stands
    /// on it any more.
    pub revoke_requested: Option<DateTime<Utc>>,
}

/// Serialises the creation of the mount id within this process.
static MOUNT_ID_LOCK: Mutex<()> = Mutex::const_new(());

/// The mount's id, if one was made.
pub async fn mount_id(storage: &dyn Storage) -> Result<Option<String>, StorageError> {
    Ok(match storage.get(MOUNT_ID_KEY).await? {
        Some(e) => {
            Some(String::from_utf8_lossy(&e.value).trim().to_string()).filter(|s| !s.is_empty())
        }
        None => None,
    })
}

/// The mount's id, made and stored on first use.
pub async fn mount_id_or_create(storage: &dyn Storage) -> Result<String, StorageError> {
    let _guard = MOUNT_ID_LOCK.lock().await;
    if let Some(id) = mount_id(storage).await? {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    storage
        .put(StorageEntry::new(MOUNT_ID_KEY, id.clone().into_bytes()))
        .await?;
    Ok(id)
}

fn key(app_object_id: &str) -> String {
    format!("{APPS_PREFIX}{}", app_object_id.to_ascii_lowercase())
}

/// Records an application.
pub async fn record(storage: &dyn Storage, entry: &AppEntry) -> Result<(), StorageError> {
    storage
        .put(StorageEntry::json(key(&entry.app_object_id), entry)?)
        .await
}

/// Forgets an application (its lease was revoked, or the reconciler found it gone). A
/// failure is logged: the reconciler prunes the entry once it sees the application gone.
pub async fn forget(storage: &dyn Storage, app_object_id: &str) {
    if let Err(e) = storage.delete(&key(app_object_id)).await {
        tracing::warn!(app_object_id, error = %e, "cannot remove an inventory entry; the reconciler prunes it later");
    }
}

/// Marks an application as no longer backing a live credential (its revoke or its
/// issuance failed). A failure is logged: the entry then ends at its expiry.
pub async fn mark_revoke_requested(storage: &dyn Storage, app_object_id: &str) {
    let marked = async {
        let Some(e) = storage.get(&key(app_object_id)).await? else {
            return Ok(());
        };
        let mut entry: AppEntry = e.decode()?;
        if entry.revoke_requested.is_none() {
            entry.revoke_requested = Some(Utc::now());
            record(storage, &entry).await?;
        }
        Ok::<(), StorageError>(())
    }
    .await;
    if let Err(e) = marked {
        tracing::warn!(app_object_id, error = %e, "cannot mark an inventory entry revoke-requested; it ends at its recorded expiry");
    }
}

/// Every entry, by lower-cased application object id.
pub async fn list(storage: &dyn Storage) -> Result<BTreeMap<String, AppEntry>, StorageError> {
    let mut out = BTreeMap::new();
    for k in storage.list(APPS_PREFIX).await? {
        if k.ends_with('/') {
            continue;
        }
        if let Some(e) = storage.get(&format!("{APPS_PREFIX}{k}")).await? {
            let entry: AppEntry = e.decode()?;
            out.insert(k.to_ascii_lowercase(), entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_plugin_sdk::logical::InmemStorage;

    #[test]
    fn descriptions_name_the_mount_and_the_application() {
        let tag = mount_tag("m1");
        let d = role_assignment_description(&tag, "app-1");
        assert_eq!(
            parse_role_assignment_description(&d),
            Some((tag.as_str(), "app-1"))
        );
        assert_eq!(parse_role_assignment_description("made by hand"), None);
        assert_eq!(
            parse_role_assignment_description("other:mount:x app:y"),
            None
        );
        assert_eq!(
            parse_role_assignment_description(&format!("{MOUNT_TAG_PREFIX} app:y")),
            None
        );
        assert_eq!(
            parse_role_assignment_description(&format!("{tag} app:")),
            None
        );
    }

    #[tokio::test]
    async fn the_mount_id_is_made_once_and_kept() {
        let s = InmemStorage::new();
        assert_eq!(mount_id(&s).await.unwrap(), None);
        let id = mount_id_or_create(&s).await.unwrap();
        assert_eq!(mount_id_or_create(&s).await.unwrap(), id);
        assert_eq!(mount_id(&s).await.unwrap(), Some(id));
    }

    #[tokio::test]
    async fn entries_are_recorded_marked_and_forgotten() {
        let s = InmemStorage::new();
        let entry = AppEntry {
            app_object_id: "ABC".into(),
            display_name: "vault-x".into(),
            ..AppEntry::default()
        };
        record(&s, &entry).await.unwrap();
        let all = list(&s).await.unwrap();
        assert_eq!(all.get("abc"), Some(&entry));
        mark_revoke_requested(&s, "abc").await;
        let marked = list(&s).await.unwrap()["abc"].revoke_requested;
        assert!(marked.is_some());
        // A second mark keeps the first time.
        mark_revoke_requested(&s, "ABC").await;
        assert_eq!(list(&s).await.unwrap()["abc"].revoke_requested, marked);
        // Marking an unknown application records nothing.
        mark_revoke_requested(&s, "nope").await;
        forget(&s, "Abc").await;
        assert!(list(&s).await.unwrap().is_empty());
    }
}
