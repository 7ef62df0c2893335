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
use vault_plugin_sdk::framework::{
    secret_response, FieldData, FieldSchema, FieldType, HandlerResult, Path, PeriodicFn,
};
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

    fn backing_off(&self, role: &str) -> bool {
        locked(&self.health)
            .get(role)
            .and_then(|h| h.retry_at)
            .is_some_and(|t| Instant::now() < t)
    }

    fn last_error(&self, role: &str) -> Option<String> {
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

/// What a handout found.
pub enum Taken {
    /// A pooled credential, as `creds` returns it (before the request's metadata).
    Credential(Box<Response>),
    /// None: issue normally, with this warning.
    Empty(String),
}

/// Takes one ready credential of role `name` from its pool, then starts a refill.
pub async fn take(
    b: &Arc<AzureBackend>,
    storage: &Arc<dyn Storage>,
    name: &str,
    role: &Role,
) -> Taken {
    let taken = take_entry(b, storage.as_ref(), name, role).await;
    refill_soon(b, storage.clone(), name.to_string());
    match taken {
        Ok(Some(entry)) => match pooled_response(b, role, entry).await {
            Ok(resp) => Taken::Credential(Box::new(resp)),
            Err(e) => Taken::Empty(format!(
                "the credential pool of role '{name}' could not be used ({e}); this credential was issued directly"
            )),
        },
        Ok(None) => Taken::Empty(match b.pool.last_error(name) {
            Some(err) => format!(
                "the credential pool of role '{name}' is empty because refilling it fails (last error: {err}); \
                 this credential was issued directly"
            ),
            None => format!(
                "the credential pool of role '{name}' was empty; this credential was issued directly \
                 while the pool refills"
            ),
        }),
        Err(e) => {
            tracing::warn!(role = %name, error = %e, "cannot read the credential pool; issuing directly");
            Taken::Empty(format!(
                "the credential pool of role '{name}' could not be read ({e}); this credential was issued directly"
            ))
        }
    }
}

async fn take_entry(
    b: &AzureBackend,
    storage: &dyn Storage,
    name: &str,
    role: &Role,
) -> Result<Option<Entry>, LogicalError> {
    if b.pool.closed() {
        return Ok(None);
    }
    let config = store::get_config(storage).await?.unwrap_or_default();
    let (rh, ch) = (role_hash(role), config_hash(&config));
    let lock = b.pool.handout_lock(name);
    let _guard = lock.lock().await;
    let now = Utc::now();
    for key in role_keys(storage, name).await? {
        let Some(entry) = get_entry(storage, &key).await? else {
            continue;
        };
        if entry.state == State::Ready
            && entry.role_hash == rh
            && entry.config_hash == ch
            && entry.fresh(now)
        {
            storage.delete(&key).await?;
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// The response of a pooled credential: what an unpooled issuance returns, with the lease
/// capped at the credential's remaining life in Azure.
async fn pooled_response(
    b: &AzureBackend,
    role: &Role,
    entry: Entry,
) -> Result<Response, LogicalError> {
    let now = Utc::now();
    let remaining = entry
        .key_end
        .and_then(|end| (end - now).to_std().ok())
        .unwrap_or(Duration::ZERO);
    let (mut ttl, mut max_ttl) = super::path_creds::lease_ttls(role);
    if let Some(cap) = entry.max_ttl_cap_secs.map(Duration::from_secs) {
        ttl = if ttl.is_zero() { ttl } else { ttl.min(cap) };
        max_ttl = if max_ttl.is_zero() {
            cap
        } else {
            max_ttl.min(cap)
        };
    }
    max_ttl = if max_ttl.is_zero() {
        remaining
    } else {
        max_ttl.min(remaining)
    };
    if ttl.is_zero() {
        let default = b
            .system_view
            .default_lease_ttl()
            .await
            .map_err(|e| LogicalError::internal(e.to_string()))?;
        ttl = default.min(max_ttl);
    }
    ttl = ttl.min(max_ttl);
    let mut resp = secret_response(&entry.lease_type, entry.data, entry.internal);
    if let Some(secret) = resp.secret.as_mut() {
        secret.lease.ttl = ttl;
        secret.lease.max_ttl = max_ttl;
    }
    if let (Some(d), Some(ms)) = (resp.data.as_mut(), entry.ready_wait_ms) {
        d.insert("credential_ready_wait_ms".into(), json!(ms));
    }
    if let Some(w) = entry.policy_warning {
        resp.add_warning(w);
    }
    Ok(resp)
}

/// Starts a background refill of role `name`'s pool unless one is running, the mount is
/// going, or this node may not write.
pub fn refill_soon(b: &Arc<AzureBackend>, storage: Arc<dyn Storage>, name: String) {
    if b.pool.closed() {
        return;
    }
    {
        let mut running = locked(&b.pool.refilling);
        if let Some(again) = running.get_mut(&name) {
            *again = true;
            return;
        }
        running.insert(name.clone(), false);
    }
    let b = b.clone();
    tokio::spawn(async move {
        struct Done(Arc<AzureBackend>, String);
        impl Drop for Done {
            fn drop(&mut self) {
                locked(&self.0.pool.refilling).remove(&self.1);
            }
        }
        let _done = Done(b.clone(), name.clone());
        if !b.background_allowed().await {
            return;
        }
        loop {
            if let Err(e) = maintain(&b, storage.as_ref(), &name).await {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot drain stale entries; will retry");
            }
            refill(&b, storage.as_ref(), &name).await;
            let mut running = locked(&b.pool.refilling);
            match running.get_mut(&name) {
                Some(again) if *again && !b.pool.closed() => *again = false,
                _ => return,
            }
        }
    });
}

/// Tops the pool of `name` up to its size, a few credentials at a time, until full or a
/// creation fails (then backs off).
async fn refill(b: &Arc<AzureBackend>, storage: &dyn Storage, name: &str) {
    loop {
        if b.pool.closed() || b.pool.backing_off(name) {
            return;
        }
        let role = match store::get_role(storage, name).await {
            Ok(Some(r)) if r.pool_size > 0 => r,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot read the role");
                return;
            }
        };
        let config = match store::get_config(storage).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot read the configuration");
                return;
            }
        };
        let (rh, ch) = (role_hash(&role), config_hash(&config));
        let have = match count_live(b, storage, name, &rh, &ch).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot list entries");
                return;
            }
        };
        let missing = role.pool_size.saturating_sub(have);
        if missing == 0 {
            return;
        }
        let client = match b.client(storage).await {
            Ok(c) => c,
            Err(e) => {
                b.pool.record_failure(name, e.to_string());
                return;
            }
        };
        let batch = missing.min(REFILL_PARALLELISM);
        let results =
            join_all((0..batch).map(|_| fill_one(b, storage, &client, name, &role, &rh, &ch)))
                .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            tracing::warn!(role = %name, error = %e, "credential pool: refill failed; creds issues directly until it succeeds");
            b.pool.record_failure(name, e);
            return;
        }
        b.pool.record_success(name);
    }
}

/// Entries of `name` that are or will be handed out: ready and current, or being created.
async fn count_live(
    b: &AzureBackend,
    storage: &dyn Storage,
    name: &str,
    rh: &str,
    ch: &str,
) -> Result<u32, StorageError> {
    let now = Utc::now();
    let mut n = 0u32;
    for key in role_keys(storage, name).await? {
        let Some(e) = get_entry(storage, &key).await? else {
            continue;
        };
        let live = match e.state {
            State::Pending => b.pool.is_inflight(&key),
            State::Ready => e.role_hash == rh && e.config_hash == ch && e.fresh(now),
            State::Draining => false,
        };
        n += u32::from(live);
    }
    Ok(n)
}

/// Creates one pooled credential: the entry first, then the objects (through the normal
/// issuance), then the entry made ready, unless the role or configuration changed meanwhile.
async fn fill_one(
    b: &Arc<AzureBackend>,
    storage: &dyn Storage,
    client: &Arc<AzureClient>,
    name: &str,
    role: &Role,
    rh: &str,
    ch: &str,
) -> Result<(), String> {
    let id = uuid::Uuid::new_v4().to_string();
    let key = entry_key(name, &id);
    let dynamic = role.application_object_id.is_empty();
    let app = role.new_application();
    let display_name = if dynamic {
        app.display_name.clone()
    } else {
        format!("{PASSWORD_DISPLAY_NAME}-{id}")
    };
    let mut entry = Entry {
        state: State::Pending,
        role: name.to_string(),
        role_hash: rh.to_string(),
        config_hash: ch.to_string(),
        created: Utc::now(),
        display_name: display_name.clone(),
        app_object_id: role.application_object_id.clone(),
        scopes: role
            .azure_roles
            .iter()
            .flatten()
            .map(|r| r.scope.clone())
            .collect(),
        groups: role
            .azure_groups
            .iter()
            .flatten()
            .map(|g| g.object_id.clone())
            .collect(),
        lease_type: String::new(),
        data: Map::new(),
        internal: Map::new(),
        key_end: None,
        ready_wait_ms: None,
        max_ttl_cap_secs: None,
        policy_warning: None,
    };
    locked(&b.pool.inflight).insert(key.clone());
    let _inflight = Inflight(&b.pool, key.clone());
    put_entry(storage, &key, &entry)
        .await
        .map_err(|e| format!("cannot store the pool entry: {e}"))?;

    let deadline = Deadline::after(REFILL_DEADLINE);
    let issued = async {
        if !dynamic {
            b.refuse_own_application(
                client,
                &role.application_id,
                &role.application_object_id,
                deadline,
            )
            .await?;
        }
        let now = Utc::now();
        let end = b.password_end(role, now).await?;
        let policy = b
            .credential_policy_for(client, role, now, end, deadline)
            .await?;
        let end = policy.end.unwrap_or(end);
        let (resp, readiness) = if dynamic {
            b.issue_service_principal(storage, client, name, role, app, end, deadline)
                .await?
        } else {
            b.issue_password(storage, client, name, role, display_name, end, deadline)
                .await?
        };
        Ok::<_, LogicalError>((resp, readiness, policy))
    }
    .await;
    let (resp, readiness, policy) = match issued {
        Ok(v) => v,
        Err(e) => {
            // The issuance undid its objects (or left them to its write-ahead log).
            forget(storage, &key).await;
            return Err(e.to_string());
        }
    };
    let secret = resp.secret.clone().unwrap_or_default();
    entry.lease_type = secret
        .internal_data
        .get(SECRET_TYPE_KEY)
        .and_then(Value::as_str)
        .unwrap_or(SERVICE_PRINCIPAL)
        .to_string();
    entry.internal = secret.internal_data;
    entry.data = resp.data.unwrap_or_default();
    entry.key_end = entry
        .internal
        .get("key_end_date")
        .and_then(Value::as_str)
        .and_then(|t| go_time::parse(t).ok().flatten());
    entry.ready_wait_ms = readiness.waited_ms();
    entry.max_ttl_cap_secs = policy.max_ttl_cap.map(|d| d.as_secs());
    entry.policy_warning = policy.warning;

    if let Readiness::TimedOut { last_error, .. } = &readiness {
        let err = format!("the new credential did not prove usable: {last_error}");
        discard(b, storage, client, &key, entry).await;
        return Err(err);
    }

    // Made ready under the handout lock, unless the role, configuration or mount changed.
    let lock = b.pool.handout_lock(name);
    let guard = lock.lock().await;
    let current = store::get_role(storage, name).await.ok().flatten();
    let config = store::get_config(storage).await.ok().flatten();
    let still = !b.pool.closed()
        && current.as_ref().map(role_hash).as_deref() == Some(rh)
        && config.as_ref().map(config_hash).as_deref() == Some(ch);
    if !still {
        drop(guard);
        discard(b, storage, client, &key, entry).await;
        return Ok(());
    }
    entry.state = State::Ready;
    if let Err(e) = put_entry(storage, &key, &entry).await {
        drop(guard);
        let err = format!("cannot store the pooled credential: {e}");
        entry.state = State::Draining;
        discard(b, storage, client, &key, entry).await;
        return Err(err);
    }
    tracing::info!(role = %name, "credential pool: added a credential");
    Ok(())
}

/// Deletes a just-made entry's objects, then the entry (left for the next drain if the
/// deletion fails).
async fn discard(
    b: &AzureBackend,
    storage: &dyn Storage,
    client: &AzureClient,
    key: &str,
    entry: Entry,
) {
    let deadline = Deadline::after(DRAIN_DEADLINE);
    match delete_objects(b, client, &entry, true, deadline).await {
        Ok(true) => forget(storage, key).await,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(role = %entry.role, error = %e, "credential pool: cannot delete a discarded credential; the next drain retries");
            let mut entry = entry;
            entry.state = State::Draining;
            if let Err(e) = put_entry(storage, key, &entry).await {
                tracing::warn!(key, error = %e, "credential pool: cannot mark an entry draining; its display name still finds it");
            }
        }
    }
}

async fn forget(storage: &dyn Storage, key: &str) {
    if let Err(e) = storage.delete(key).await {
        tracing::warn!(key, error = %e, "credential pool: cannot delete an entry");
    }
}

/// Deletes the Azure objects of `entry`; `Ok(false)` when a pending entry's objects cannot
/// be found yet but may still appear.
async fn delete_objects(
    b: &AzureBackend,
    client: &AzureClient,
    entry: &Entry,
    fresh: bool,
    deadline: Deadline,
) -> Result<bool, AzureError> {
    let strs = |k: &str| -> Vec<String> {
        entry
            .internal
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let str_of = |k: &str| {
        entry
            .internal
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let settle = if fresh {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    if entry.internal.is_empty() {
        return recover_pending(b, client, entry, deadline).await;
    }
    if entry.lease_type == SERVICE_PRINCIPAL {
        let sp = str_of("sp_object_id");
        let ras = strs("role_assignment_ids");
        let groups = strs("group_membership_ids");
        let ra_errors = provision::undo_role_assignments(client, &ras, deadline).await;
        let group_errors = provision::remove_memberships(client, &sp, &groups, deadline).await;
        if let Some(e) = ra_errors.into_iter().chain(group_errors).next() {
            return Err(e);
        }
        let app = str_of("app_object_id");
        provision::persist(deadline, || async {
            client
                .graph()
                .delete_application_settled(&app, settle, deadline)
                .await?;
            client
                .graph()
                .permanently_delete(&app, Duration::from_secs(10), deadline)
                .await
        })
        .await?;
    } else {
        let app = str_of("app_object_id");
        let key_id = str_of("key_id");
        let lock = b.app_lock(&app);
        let _guard = lock.lock().await;
        provision::persist(deadline, || {
            client
                .graph()
                .remove_application_password(&app, &key_id, deadline)
        })
        .await
        .or_else(|e| {
            if e.is_not_found() {
                Ok(azure_clients::DeleteOutcome::AlreadyGone)
            } else {
                Err(e)
            }
        })?;
    }
    Ok(true)
}

/// Finds and deletes what a pending entry may have created (its process died): the
/// application with its display name, that application's role assignments at the role's
/// scopes and its memberships, or the password with its display name.
async fn recover_pending(
    b: &AzureBackend,
    client: &AzureClient,
    entry: &Entry,
    deadline: Deadline,
) -> Result<bool, AzureError> {
    let young = Utc::now() - entry.created < PENDING_GRACE;
    if !entry.app_object_id.is_empty() {
        let lock = b.app_lock(&entry.app_object_id);
        let _guard = lock.lock().await;
        let passwords = match client
            .graph()
            .list_application_passwords(&entry.app_object_id, deadline)
            .await
        {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(true),
            Err(e) => return Err(e),
        };
        let mine: Vec<_> = passwords
            .into_iter()
            .filter(|p| p.display_name.as_deref() == Some(entry.display_name.as_str()))
            .collect();
        if mine.is_empty() {
            return Ok(!young);
        }
        for p in mine {
            client
                .graph()
                .remove_application_password(&entry.app_object_id, &p.key_id, deadline)
                .await?;
        }
        return Ok(true);
    }
    let apps: Vec<_> = client
        .graph()
        .find_applications_by_display_name(&entry.display_name, deadline)
        .await?
        .into_iter()
        .filter(|a| a.display_name == entry.display_name)
        .collect();
    if apps.is_empty() {
        return Ok(!young);
    }
    for app in apps {
        if let Some(sp) = client
            .graph()
            .find_service_principal_by_app_id(&app.app_id, deadline)
            .await?
        {
            let mut ras = Vec::new();
            for scope in &entry.scopes {
                for ra in client
                    .arm()
                    .list_role_assignments_for_principal(scope, &sp.id, deadline)
                    .await?
                {
                    ras.push(ra.id);
                }
            }
            ras.sort();
            ras.dedup();
            if let Some(e) = provision::undo_role_assignments(client, &ras, deadline)
                .await
                .into_iter()
                .next()
            {
                return Err(e);
            }
            if let Some(e) = provision::remove_memberships(client, &sp.id, &entry.groups, deadline)
                .await
                .into_iter()
                .next()
            {
                return Err(e);
            }
        }
        provision::delete_app(client, &app.id, true, deadline).await?;
    }
    Ok(true)
}

/// Drains what must go from the pool of `name`: entries already draining, pending entries
/// whose creator is gone, and ready entries that are stale (role or configuration changed,
/// too old, role deleted or no longer pooled).
async fn maintain(b: &AzureBackend, storage: &dyn Storage, name: &str) -> Result<(), String> {
    let role = store::get_role(storage, name)
        .await
        .map_err(|e| e.to_string())?;
    let config = store::get_config(storage)
        .await
        .map_err(|e| e.to_string())?;
    let rh = role.as_ref().filter(|r| r.pool_size > 0).map(role_hash);
    let ch = config.as_ref().map(config_hash);
    let now = Utc::now();
    drain_role(b, storage, None, name, |e| {
        e.state == State::Pending
            || Some(&e.role_hash) != rh.as_ref()
            || Some(&e.config_hash) != ch.as_ref()
            || !e.fresh(now)
    })
    .await
}

/// Drains the entries of `name` that `doomed` picks (and those already draining); entries
/// being created by this process are left to their creator, which sees the change. With
/// `client`, the objects are deleted through it (the previous configuration's).
async fn drain_role(
    b: &AzureBackend,
    storage: &dyn Storage,
    client: Option<Arc<AzureClient>>,
    name: &str,
    doomed: impl Fn(&Entry) -> bool,
) -> Result<(), String> {
    let mut todo = Vec::new();
    {
        let lock = b.pool.handout_lock(name);
        let _guard = lock.lock().await;
        for key in role_keys(storage, name).await.map_err(|e| e.to_string())? {
            if b.pool.is_inflight(&key) {
                continue;
            }
            let Some(mut entry) = get_entry(storage, &key).await.map_err(|e| e.to_string())? else {
                continue;
            };
            if entry.state != State::Draining {
                if !doomed(&entry) {
                    continue;
                }
                entry.state = State::Draining;
                put_entry(storage, &key, &entry)
                    .await
                    .map_err(|e| format!("cannot mark a pool entry draining: {e}"))?;
            }
            todo.push((key, entry));
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let client = match client {
        Some(c) => c,
        None => b.client(storage).await.map_err(|e| e.to_string())?,
    };
    let deadline = Deadline::after(DRAIN_DEADLINE);
    let results = join_all(todo.iter().map(|(key, entry)| {
        let client = client.clone();
        async move {
            match delete_objects(b, &client, entry, false, deadline).await {
                Ok(true) => {
                    forget(storage, key).await;
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
    }))
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if let Some(e) = failed.first() {
        return Err(format!(
            "{} pooled credential(s) of role '{name}' not yet deleted: {e}",
            failed.len()
        ));
    }
    tracing::info!(role = %name, drained = todo.len(), "credential pool: drained entries");
    Ok(())
}

/// Drains every pool entry (all roles), through `client` when given.
async fn drain_all(
    b: &AzureBackend,
    storage: &dyn Storage,
    client: Option<Arc<AzureClient>>,
) -> Result<(), String> {
    let roles = pooled_roles(storage).await.map_err(|e| e.to_string())?;
    let results = join_all(
        roles
            .iter()
            .map(|r| drain_role(b, storage, client.clone(), r, |_| true)),
    )
    .await;
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// After a role write or delete: drains the role's stale entries and refills it.
pub fn role_changed(b: &Arc<AzureBackend>, storage: Arc<dyn Storage>, name: &str) {
    refill_soon(b, storage, name.to_string());
}

/// Before a configuration write that changes the tenant, the identity, its credentials or
/// the cloud: drains every pool with the current (previous) client, in the background.
pub async fn config_changing(
    b: &Arc<AzureBackend>,
    storage: &Arc<dyn Storage>,
    previous: Option<&Config>,
    next: &Config,
) {
    let Some(prev) = previous else {
        return;
    };
    let same = prev.tenant_id == next.tenant_id
        && prev.client_id == next.client_id
        && prev.client_secret == next.client_secret
        && prev.client_certificate == next.client_certificate
        && prev.environment == next.environment
        && prev.subscription_id == next.subscription_id;
    if same {
        return;
    }
    match pooled_roles(storage.as_ref()).await {
        Ok(roles) if roles.is_empty() => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "credential pool: cannot list pools before a configuration change");
            return;
        }
    }
    let client = match b.client(storage.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "credential pool: no client to drain pools before a configuration change");
            return;
        }
    };
    let (b, storage) = (b.clone(), storage.clone());
    tokio::spawn(async move {
        if let Err(e) = drain_all(&b, storage.as_ref(), Some(client)).await {
            tracing::warn!(error = %e, "credential pool: draining after a configuration change is incomplete; the periodic drain retries");
        }
        tick(&b, storage).await;
    });
}

/// The mount is going: no new refills; wait for those in flight; drain every pool.
async fn close_and_drain(b: &AzureBackend, storage: &dyn Storage) {
    b.pool.closed.store(true, Ordering::SeqCst);
    let waited = Instant::now();
    while !locked(&b.pool.inflight).is_empty() && waited.elapsed() < CLOSE_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Err(e) = drain_all(b, storage, None).await {
        tracing::warn!(error = %e, "credential pool: could not drain every pool while the mount is removed");
    }
}

/// The engine's periodic function with the pools' work added: on a mount being removed
/// (the host's final rollback), every pool is drained; otherwise every pool is maintained
/// and refilled in the background, on nodes that may write.
pub fn periodic(b: &Arc<AzureBackend>, inner: PeriodicFn) -> PeriodicFn {
    let b = b.clone();
    Arc::new(move |req: Request| {
        let (b, inner) = (b.clone(), inner.clone());
        Box::pin(async move {
            let result = inner(req.clone()).await;
            if b.background_allowed().await {
                let storage = req.storage.clone();
                if b.system_view.tainted().await.unwrap_or(false) {
                    close_and_drain(&b, storage.as_ref()).await;
                } else {
                    tick(&b, storage).await;
                }
            }
            result
        })
    })
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

/// `pool/<role>`: what the role's pool holds (counts only, never a secret).
pub fn status_path(b: &Arc<AzureBackend>) -> Path {
    Path::new(format!(
        "pool/(?P<role>{})",
        super::path_roles::NAME_PATTERN
    ))
    .field(
        "role",
        FieldSchema::new(FieldType::LowerCaseString, "Name of the role.").required(),
    )
    .with_state(b)
    .read(
        AzureBackend::pool_status,
        "Read the state of a role's credential pool.",
        "read-credential-pool",
    )
    .help(
        "The state of a role's credential pool.",
        "Counts of the role's pooled credentials: ready to hand out (current and fresh), being \
created, stale (made for a previous role or configuration, or too old; replaced in the \
background) and being deleted, with the last refill error while refills fail.",
    )
    .into_path()
}

impl AzureBackend {
    async fn pool_status(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("role")?;
        let storage = req.storage.as_ref();
        let role = store::get_role(storage, &name).await?;
        let config = store::get_config(storage).await?.unwrap_or_default();
        let rh = role.as_ref().map(role_hash).unwrap_or_default();
        let ch = config_hash(&config);
        let now = Utc::now();
        let (mut ready, mut pending, mut stale, mut draining) = (0u32, 0u32, 0u32, 0u32);
        for key in role_keys(storage, &name).await? {
            let Some(e) = get_entry(storage, &key).await? else {
                continue;
            };
            match e.state {
                State::Pending => pending += 1,
                State::Draining => draining += 1,
                State::Ready if e.role_hash == rh && e.config_hash == ch && e.fresh(now) => {
                    ready += 1
                }
                State::Ready => stale += 1,
            }
        }
        let mut out = Map::new();
        out.insert(
            "pool_size".into(),
            json!(role.as_ref().map_or(0, |r| r.pool_size)),
        );
        out.insert("ready".into(), json!(ready));
        out.insert("pending".into(), json!(pending));
        out.insert("stale".into(), json!(stale));
        out.insert("draining".into(), json!(draining));
        out.insert("refill_error".into(), json!(self.pool.last_error(&name)));
        out.insert(
            "refill_backing_off".into(),
            json!(self.pool.backing_off(&name)),
        );
        Ok(Some(Response::with_data(out)))
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
