//! Warm pools (`pool_size`): credentials created and proven usable ahead of time, so that a
//! `creds` read hands one out with no Azure call.
//!
//! Each pooled credential has one storage entry, `pool/<role>/<id>` (seal-wrapped: it holds
//! the secret until handout), written *before* its Azure objects are created:
//!
//! - `pending`: being created. The entry names the application (or password) by its unique
//!   display name, so if the process dies the objects can be found and removed.
//! - `ready`: created and proven; holds the response `creds` returns and the lease's
//!   internal data.
//! - `draining`: to be deleted; never handed out again.
//!
//! A handout takes one `ready` entry under the role's lock and deletes it from storage
//! before answering, so two reads never get the same credential. Refills run in the
//! background, on nodes whose storage is writable only. Entries are tied to the role and the
//! configuration they were made for (a hash of each): a changed role or tenant makes them
//! stale, and stale or too-old entries are drained (their objects deleted in Azure, then the
//! entry removed), as are all entries when the mount is removed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::backend::AzureBackend;
use super::certificate::CredentialType;
use super::lease::SERVICE_PRINCIPAL;
use super::provision::{self, Readiness, PASSWORD_DISPLAY_NAME};
use super::store::{self, go_time, Config, Role};
use azure_clients::{AzureClient, AzureError, Deadline};
use vault_plugin_sdk::framework::secret_response;
use vault_plugin_sdk::logical::{
    LogicalError, Map, Request, Response, Storage, StorageEntry, StorageError,
};

/// Storage prefix of pool entries (seal-wrapped).
pub const POOL_PREFIX: &str = "pool/";
/// The largest `pool_size` of a role that makes a new application per credential.
pub const MAX_POOL_SIZE: u32 = 50;
/// The largest `pool_size` of a role whose credentials are passwords on one application.
pub const MAX_APP_POOL_SIZE: u32 = 10;

/// A refill's issuance must finish within this (like a `creds` read).
const REFILL_DEADLINE: Duration = Duration::from_secs(75);
/// How long a drain keeps trying to delete objects.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// How long the removal of a mount waits for refills in flight to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// A pending entry whose objects cannot be found is kept this long (a new object may not
/// yet be listed by Entra ID) before it counts as never created.
const PENDING_GRACE: chrono::Duration = chrono::Duration::minutes(2);
/// Refill back-off after a failure: doubles from the first to the last.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Credentials created at once by one refill.
const REFILL_PARALLELISM: u32 = 4;
/// Bounds of how old a pooled credential may grow before it is replaced.
const MIN_RECYCLE: Duration = Duration::from_secs(60);
const MAX_RECYCLE: Duration = Duration::from_secs(3600);
/// Where `secret_response` records the lease type in the internal data.
const SECRET_TYPE_KEY: &str = "secret_type";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Pending,
    Ready,
    Draining,
}

/// One pooled credential. Debug is not derived: it holds the secret.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    state: State,
    role: String,
    role_hash: String,
    config_hash: String,
    created: DateTime<Utc>,
    /// The application's (dynamic roles) or the password's (existing application) unique
    /// display name, chosen before creation.
    display_name: String,
    /// The existing application the password goes on; empty for dynamic roles.
    #[serde(default)]
    app_object_id: String,
    /// Scopes of the role's Azure roles and its group ids (to find a pending entry's role
    /// assignments and memberships).
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// Set once ready: the response and lease of the credential.
    #[serde(default)]
    lease_type: String,
    #[serde(default)]
    data: Map,
    #[serde(default)]
    internal: Map,
    #[serde(default)]
    key_end: Option<DateTime<Utc>>,
    #[serde(default)]
    ready_wait_ms: Option<u64>,
    #[serde(default)]
    max_ttl_cap_secs: Option<u64>,
    #[serde(default)]
    policy_warning: Option<String>,
}

impl Entry {
    /// How long after creation the entry is replaced instead of handed out: a tenth of the
    /// credential's life in Azure, within [`MIN_RECYCLE`] and [`MAX_RECYCLE`].
    fn fresh(&self, now: DateTime<Utc>) -> bool {
        let Some(end) = self.key_end else {
            return false;
        };
        let life = (end - self.created).to_std().unwrap_or(Duration::ZERO);
        let age = (now - self.created).to_std().unwrap_or(Duration::ZERO);
        age < recycle_after(life) && end > now
    }
}

/// The age at which a credential of life `life` is recycled.
fn recycle_after(life: Duration) -> Duration {
    (life / 10).clamp(MIN_RECYCLE, MAX_RECYCLE)
}

#[derive(Default)]
struct Health {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// In-memory state of the pools of one mount.
#[derive(Default)]
pub struct PoolState {
    storage: StdMutex<Option<Arc<dyn Storage>>>,
    handout: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Roles with a refill task running, and whether it must run again when done (the
    /// role, configuration or pool changed meanwhile).
    refilling: StdMutex<HashMap<String, bool>>,
    inflight: StdMutex<HashSet<String>>,
    health: StdMutex<HashMap<String, Health>>,
    closed: AtomicBool,
}

fn locked<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PoolState {
    /// Remembers the mount's storage (for the cleanup when the mount goes).
    pub fn set_storage(&self, storage: Arc<dyn Storage>) {
        *locked(&self.storage) = Some(storage);
    }

    fn handout_lock(&self, role: &str) -> Arc<Mutex<()>> {
        locked(&self.handout)
            .entry(role.to_string())
            .or_default()
            .clone()
    }

    fn is_inflight(&self, key: &str) -> bool {
        locked(&self.inflight).contains(key)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn record_failure(&self, role: &str, error: String) {
        let mut health = locked(&self.health);
        let h = health.entry(role.to_string()).or_default();
        h.failures = h.failures.saturating_add(1);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << h.failures.saturating_sub(1).min(10))
            .min(MAX_BACKOFF);
        h.retry_at = Some(Instant::now() + backoff);
        h.last_error = error;
    }

    fn record_success(&self, role: &str) {
        locked(&self.health).remove(role);
    }

    pub(crate) fn backing_off(&self, role: &str) -> bool {
        locked(&self.health)
            .get(role)
            .and_then(|h| h.retry_at)
            .is_some_and(|t| Instant::now() < t)
    }

    pub(crate) fn last_error(&self, role: &str) -> Option<String> {
        locked(&self.health).get(role).map(|h| h.last_error.clone())
    }
}

/// Removes `key` from the in-flight set when dropped.
struct Inflight<'a>(&'a PoolState, String);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        locked(&self.0.inflight).remove(&self.1);
    }
}

/// Checks a role's `pool_size` (400 naming the field).
pub fn check_pool_size(role: &Role, size: i64) -> Result<u32, LogicalError> {
    let bad = |m: String| Err(LogicalError::bad_request(m));
    if size < 0 {
        return bad(format!("pool_size must be 0 or more, got {size}"));
    }
    let size = u32::try_from(size).unwrap_or(u32::MAX);
    if size == 0 {
        return Ok(0);
    }
    if CredentialType::of(role) == CredentialType::Certificate {
        return bad("pool_size cannot be used with credential_type=certificate: only client secrets are pooled".into());
    }
    if !role.application_object_id.is_empty() || role.persist_app {
        if size > MAX_APP_POOL_SIZE {
            return bad(format!(
                "pool_size must be at most {MAX_APP_POOL_SIZE} on a role with application_object_id or \
                 persist_app, got {size}: each pooled credential is a password on that one application, \
                 and Entra ID limits how many passwords an application holds"
            ));
        }
    } else if size > MAX_POOL_SIZE {
        return bad(format!(
            "pool_size must be at most {MAX_POOL_SIZE}, got {size}"
        ));
    }
    Ok(size)
}

fn hex_digest(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a pooled credential was made for: the role as stored.
fn role_hash(role: &Role) -> String {
    hex_digest(&serde_json::to_vec(role).unwrap_or_default())
}

/// The configuration a pooled credential was made in: tenant, identity, cloud.
fn config_hash(config: &Config) -> String {
    hex_digest(
        format!(
            "{}\n{}\n{}\n{}",
            config.tenant_id, config.client_id, config.environment, config.subscription_id
        )
        .as_bytes(),
    )
}

fn entry_key(role: &str, id: &str) -> String {
    format!("{POOL_PREFIX}{role}/{id}")
}

async fn put_entry(storage: &dyn Storage, key: &str, entry: &Entry) -> Result<(), StorageError> {
    let mut e = StorageEntry::json(key, entry)?;
    e.seal_wrap = true;
    storage.put(e).await
}

async fn get_entry(storage: &dyn Storage, key: &str) -> Result<Option<Entry>, StorageError> {
    match storage.get(key).await? {
        Some(e) => e.decode().map(Some),
        None => Ok(None),
    }
}

/// Keys of the pool entries of `role`.
async fn role_keys(storage: &dyn Storage, role: &str) -> Result<Vec<String>, StorageError> {
    let prefix = format!("{POOL_PREFIX}{role}/");
    Ok(storage
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .map(|k| format!("{prefix}{k}"))
        .collect())
}

/// Names of the roles that have pool entries.
async fn pooled_roles(storage: &dyn Storage) -> Result<Vec<String>, StorageError> {
    Ok(storage
        .list(POOL_PREFIX)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_suffix('/').map(str::to_string))
        .collect())
}

/// Every Azure object id held by pool entries, for a reconciler that must treat them as
/// live: applications, service principals and role assignments of dynamic roles (a
/// service principal's password lives and dies with it), and the application object id
/// and password key id of passwords on existing applications. Entries still being created
/// are named by [`pending_display_names`].
pub async fn pooled_object_ids(storage: &dyn Storage) -> Result<Vec<String>, StorageError> {
    let mut ids = Vec::new();
    for role in pooled_roles(storage).await? {
        for key in role_keys(storage, &role).await? {
            let Some(entry) = get_entry(storage, &key).await? else {
                continue;
            };
            if !entry.app_object_id.is_empty() {
                ids.push(entry.app_object_id.clone());
            }
            for k in ["app_object_id", "sp_object_id", "key_id"] {
                if let Some(v) = entry.internal.get(k).and_then(Value::as_str) {
                    ids.push(v.to_string());
                }
            }
            if let Some(a) = entry
                .internal
                .get("role_assignment_ids")
                .and_then(Value::as_array)
            {
                ids.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)));
            }
        }
    }
    ids.retain(|s| !s.is_empty());
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Display names of the applications (dynamic roles) or passwords (existing applications)
/// that pool entries are creating or may have created without recording their ids yet.
pub async fn pending_display_names(storage: &dyn Storage) -> Result<Vec<String>, StorageError> {
    let mut names = Vec::new();
    for role in pooled_roles(storage).await? {
        for key in role_keys(storage, &role).await? {
            if let Some(entry) = get_entry(storage, &key).await? {
                if entry.internal.is_empty() {
                    names.push(entry.display_name);
                }
            }
        }
    }
    Ok(names)
}

mod drain;
mod handout;
mod refill;

use drain::*;
pub use drain::{config_changing, role_changed};
pub use handout::{take, Taken};
pub use refill::refill_soon;

/// What a role's pool holds, by state (counts only, never a secret).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Ready to hand out: current (made for this role and configuration) and fresh.
    pub ready: u32,
    /// Being created.
    pub pending: u32,
    /// Ready but made for a previous role or configuration, or too old: replaced.
    pub stale: u32,
    /// Being deleted.
    pub draining: u32,
}

/// Counts the entries of role `name`'s pool by state.
pub async fn counts(storage: &dyn Storage, name: &str) -> Result<Counts, LogicalError> {
    let role = store::get_role(storage, name).await?;
    let config = store::get_config(storage).await?.unwrap_or_default();
    let rh = role.as_ref().map(role_hash).unwrap_or_default();
    let ch = config_hash(&config);
    let now = Utc::now();
    let mut c = Counts::default();
    for key in role_keys(storage, name).await? {
        let Some(e) = get_entry(storage, &key).await? else {
            continue;
        };
        match e.state {
            State::Pending => c.pending += 1,
            State::Draining => c.draining += 1,
            State::Ready if e.role_hash == rh && e.config_hash == ch && e.fresh(now) => {
                c.ready += 1
            }
            State::Ready => c.stale += 1,
        }
    }
    Ok(c)
}

/// The pools' share of the periodic function: on a mount being removed (the host's final
/// rollback), every pool is drained; otherwise every pool is maintained and refilled in the
/// background. Only on nodes that may write.
pub async fn periodic(b: &Arc<AzureBackend>, req: &Request) {
    if !b.background_allowed().await {
        return;
    }
    let storage = req.storage.clone();
    if b.system_view.tainted().await.unwrap_or(false) {
        close_and_drain(b, storage.as_ref()).await;
    } else {
        tick(b, storage).await;
    }
}

/// Starts maintenance and refill of every role that is pooled or has pool entries.
async fn tick(b: &Arc<AzureBackend>, storage: Arc<dyn Storage>) {
    let mut names: HashSet<String> = match pooled_roles(storage.as_ref()).await {
        Ok(n) => n.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "credential pool: cannot list pools");
            return;
        }
    };
    if let Ok(roles) = storage.list(store::ROLES_PREFIX).await {
        for name in roles.into_iter().filter(|n| !n.ends_with('/')) {
            if let Ok(Some(role)) = store::get_role(storage.as_ref(), &name).await {
                if role.pool_size > 0 {
                    names.insert(name);
                }
            }
        }
    }
    for name in names {
        refill_soon(b, storage.clone(), name);
    }
}

/// When the host cleans the instance up: on a mount being removed, every pool is drained
/// (after the final rollback, refills may have finished since); otherwise (seal, reload)
/// the pools stay for the next instance.
pub async fn cleanup(b: &AzureBackend) {
    let storage = locked(&b.pool.storage).clone();
    let Some(storage) = storage else {
        return;
    };
    if b.system_view.tainted().await.unwrap_or(false) && b.background_allowed().await {
        close_and_drain(b, storage.as_ref()).await;
    } else {
        b.pool.closed.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(created: DateTime<Utc>, end: DateTime<Utc>) -> Entry {
        Entry {
            state: State::Ready,
            role: "r".into(),
            role_hash: String::new(),
            config_hash: String::new(),
            created,
            display_name: "vault-x".into(),
            app_object_id: String::new(),
            scopes: Vec::new(),
            groups: Vec::new(),
            lease_type: SERVICE_PRINCIPAL.into(),
            data: Map::new(),
            internal: Map::new(),
            key_end: Some(end),
            ready_wait_ms: None,
            max_ttl_cap_secs: None,
            policy_warning: None,
        }
    }

    #[test]
    fn entries_are_recycled_after_a_tenth_of_their_life_within_bounds() {
        assert_eq!(
            recycle_after(Duration::from_secs(3600)),
            Duration::from_secs(360)
        );
        assert_eq!(recycle_after(Duration::from_secs(60)), MIN_RECYCLE);
        assert_eq!(recycle_after(Duration::from_secs(30 * 86400)), MAX_RECYCLE);
        let t0 = Utc::now();
        let e = entry(t0, t0 + chrono::Duration::hours(1));
        assert!(e.fresh(t0 + chrono::Duration::minutes(5)));
        assert!(!e.fresh(t0 + chrono::Duration::minutes(7)));
        let mut no_end = e.clone();
        no_end.key_end = None;
        assert!(!no_end.fresh(t0));
    }

    #[test]
    fn pool_size_limits_name_the_field() {
        let dynamic = Role::default();
        assert_eq!(check_pool_size(&dynamic, 0).unwrap(), 0);
        assert_eq!(check_pool_size(&dynamic, 50).unwrap(), 50);
        for (role, size) in [
            (dynamic.clone(), -1),
            (dynamic.clone(), 51),
            (
                Role {
                    application_object_id: "00000000-0000-0000-0000-000000000001".into(),
                    ..Role::default()
                },
                11,
            ),
            (
                Role {
                    persist_app: true,
                    ..Role::default()
                },
                11,
            ),
            (
                Role {
                    credential_type: CredentialType::Certificate.stored(),
                    ..Role::default()
                },
                1,
            ),
        ] {
            let e = check_pool_size(&role, size).unwrap_err();
            assert!(matches!(e, LogicalError::BadRequest(_)), "{e:?}");
            assert!(e.to_string().contains("pool_size"), "{e}");
        }
    }

    #[test]
    fn hashes_follow_the_role_and_the_tenant() {
        let a = Role::default();
        let b = Role {
            ttl: Duration::from_secs(5),
            ..Role::default()
        };
        assert_eq!(role_hash(&a), role_hash(&a.clone()));
        assert_ne!(role_hash(&a), role_hash(&b));
        let c1 = Config {
            tenant_id: "t1".into(),
            ..Config::default()
        };
        let c2 = Config {
            tenant_id: "t2".into(),
            ..Config::default()
        };
        let c3 = Config {
            tenant_id: "t1".into(),
            client_secret: "rotated".into(),
            ..Config::default()
        };
        assert_ne!(config_hash(&c1), config_hash(&c2));
        assert_eq!(
            config_hash(&c1),
            config_hash(&c3),
            "a root rotation keeps the pool"
        );
    }

    #[test]
    fn entries_never_print_or_lose_their_secret_in_storage_form() {
        let mut e = entry(Utc::now(), Utc::now());
        e.data.insert("client_secret".into(), json!("s3cret"));
        let stored = StorageEntry::json("pool/r/1", &e).unwrap();
        let back: Entry = stored.decode().unwrap();
        assert_eq!(back.data["client_secret"], "s3cret");
        assert_eq!(back.state, State::Ready);
    }
}
