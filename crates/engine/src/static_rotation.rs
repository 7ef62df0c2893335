//! Rotation of static roles: a new password (or, for `credential_type=certificate`, a new
//! key pair and self-signed certificate registered as a key credential) on the role's
//! application, proven to obtain a token before it becomes current; the tenant's app
//! management policy checked first; the replaced one removed at once, after the grace period,
//! or at its own end date; rotations of one application serialised across roles and mounts of
//! this process; every credential covered by a write-ahead-log entry before it exists.
//!
//! The schedule lives in storage (`next_rotation`, `remove_after` of each role), so any
//! active node picks it up: on the host's periodic tick (about once a minute) and, for work
//! due within [`TIMER_HORIZON`], on an in-process timer armed after each change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::backend::AzureBackend;
use super::certificate::{self, CredentialType};
use super::provision::{self, wal_str, Readiness};
use super::static_store::{
    self, RetiredSecret, StaticRole, StaticSecret, DEFAULT_GRACE_PERIOD, MIN_END_MARGIN,
};
use super::store::{self, Config};
use super::{path_rotate_root, rollback};
use azure_clients::{AzureClient, Deadline, NewPassword, SecretString, DISPLAY_NAME_PREFIX};
use vault_plugin_sdk::framework::{wal, PeriodicFn};
use vault_plugin_sdk::logical::{LogicalError, Request, Storage, StorageEntry};

/// The WAL kind of a password about to be added to a static role's application; the rollback
/// removes only that password (found by its unique display name).
pub const WAL_STATIC_PASSWORD: &str = "staticRolePassword";

/// Prefix of the display names of static-role passwords (after `vault-`).
pub const STATIC_PASSWORD_PREFIX: &str = "vault-static-";

/// Bound of one rotation's Azure calls (inside the host's 90 s request timeout).
const ROTATE_DEADLINE: Duration = Duration::from_secs(75);
/// How long a new password may take to obtain a token before the rotation gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(45);
/// A WAL entry of a password whose process is gone is kept this long after its password was
/// removed, in case the interrupted `addPassword` lands late; the removal is repeated.
const ORPHAN_SETTLE: i64 = 120;
/// Work due within this long gets an in-process timer besides the periodic tick.
const TIMER_HORIZON: Duration = Duration::from_secs(600);

/// Replication states in which background work must not run (as for the root rotation).
const PERFORMANCE_SECONDARY: i32 = 64;
const DR_SECONDARY: i32 = 512;
const PERFORMANCE_STANDBY: i32 = 16384;

type Locks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// A storage key written before background work touches Azure: on a node whose storage is
/// read-only (a standby serving reads) the write fails and the work is skipped, whatever the
/// host reports as its replication state.
const PROBE_KEY: &str = "static-rotation-probe";

async fn probe_writable(storage: &dyn Storage) -> Result<(), LogicalError> {
    storage
        .put(StorageEntry::json(
            PROBE_KEY,
            &json!({"at": Utc::now().to_rfc3339()}),
        )?)
        .await?;
    Ok(())
}

/// Process-wide: one rotation of an application at a time, whichever role or mount asks.
static APP_LOCKS: LazyLock<Locks> = LazyLock::new(Locks::default);

/// Display names of passwords this process is adding right now (their WAL entries are live).
static IN_FLIGHT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

pub(crate) fn app_lock(object_id: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = APP_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks
        .entry(object_id.to_ascii_lowercase())
        .or_default()
        .clone()
}

/// Marks a display name as in flight for its lifetime.
struct InFlight(String);

impl InFlight {
    fn new(name: &str) -> Self {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Self(name.to_string())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

fn in_flight(name: &str) -> bool {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(name)
}

/// The WAL kind of a key credential (certificate) about to be added to a certificate static
/// role's application; like [`WAL_STATIC_PASSWORD`], the rollback removes only that key
/// credential (found by its unique display name) unless the role references it.
pub const WAL_STATIC_KEY: &str = "staticRoleKeyCredential";

/// The inputs of a new credential for a rotation.
struct NewCredential<'a> {
    role_name: &'a str,
    role: &'a StaticRole,
    display_name: &'a str,
    now: DateTime<Utc>,
    /// The end date (the rotation period plus the grace, capped by the tenant's policy).
    end: DateTime<Utc>,
}

/// A credential added and proven, not yet current.
struct Added {
    secret: StaticSecret,
    wal_id: String,
}

fn wal_data(app: &str, display_name: &str, role: &str, now: DateTime<Utc>) -> Value {
    json!({"AppObjID": app, "DisplayName": display_name, "Role": role,
           "Expiration": (now + chrono::Duration::hours(24)).to_rfc3339()})
}

/// "password" or "certificate", for messages.
fn kind_name(role: &StaticRole) -> &'static str {
    if role.is_certificate() {
        "certificate"
    } else {
        "password"
    }
}

/// Removes one password or key credential of an application (already gone counts as done).
pub(crate) async fn remove_credential(
    client: &AzureClient,
    app: &str,
    key_id: &str,
    certificate: bool,
    deadline: Deadline,
) -> Result<(), azure_clients::AzureError> {
    if certificate {
        client
            .graph()
            .remove_application_key_credential(app, key_id, deadline)
            .await
            .map(|_| ())
    } else {
        client
            .graph()
            .remove_application_password(app, key_id, deadline)
            .await
            .map(|_| ())
    }
}

/// Takes an unused new credential back out; its WAL entry goes once it is gone (else the
/// rollback finishes the job).
async fn discard(
    client: &AzureClient,
    store: &dyn Storage,
    app: &str,
    key_id: &str,
    certificate: bool,
    wal_id: &str,
    deadline: Deadline,
) {
    match remove_credential(client, app, key_id, certificate, deadline).await {
        Ok(()) => provision::forget_wal(store, wal_id).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not remove an unused static-role credential; the rollback will")
        }
    }
}

/// What a role's rotation does with the replaced secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub seamless: bool,
    /// Zero: no overlap.
    pub grace: Duration,
}

pub fn policy(config: &Config, role: &StaticRole) -> Policy {
    let seamless = role
        .seamless_rotation
        .or(config.seamless_rotation)
        .unwrap_or(true);
    let mut grace = role
        .rotation_grace_period
        .or(config.rotation_grace_period)
        .unwrap_or(DEFAULT_GRACE_PERIOD);
    // An inherited grace never exceeds half the role's period (a role's own is checked on write).
    if !role.rotation_period.is_zero() {
        grace = grace.min(role.rotation_period / 2);
    }
    Policy { seamless, grace }
}

/// A grace period as read back: seconds, `-1` when the overlap is off.
pub fn grace_for_output(grace: Option<Duration>) -> i64 {
    match grace {
        None => DEFAULT_GRACE_PERIOD.as_secs() as i64,
        Some(d) if d.is_zero() => -1,
        Some(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The end date of a password made at `now`: the next rotation plus the grace (at least
/// [`MIN_END_MARGIN`], so a late tick never leaves the role without a working secret).
pub fn password_end(now: DateTime<Utc>, period: Duration, grace: Duration) -> DateTime<Utc> {
    now + chrono_of(period) + chrono_of(grace.max(MIN_END_MARGIN))
}

/// When rotation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Now (`rotate-role`, role creation, import).
    Now,
    /// Only if the schedule says so (background).
    IfDue,
    /// Only if the role has no secret yet (deferred creds on first read).
    IfNoSecret,
}

fn due(role: &StaticRole, now: DateTime<Utc>) -> bool {
    role.next_rotation.is_some_and(|t| t <= now)
}

fn retiree_due(r: &RetiredSecret, now: DateTime<Utc>) -> bool {
    match r.remove_after {
        Some(t) => t <= now,
        None => r.expiration.is_some_and(|t| t <= now),
    }
}

/// The outcome of a rotation (or of a skipped one).
pub struct Rotated {
    pub role: StaticRole,
    pub warnings: Vec<String>,
}

pub fn periodic(b: &Arc<AzureBackend>) -> PeriodicFn {
    let root = path_rotate_root::periodic(b);
    let b = b.clone();
    Arc::new(move |req: Request| {
        let (b, root) = (b.clone(), root.clone());
        Box::pin(async move {
            let root_result = root(req.clone()).await;
            if b.background_allowed().await {
                b.static_tick(&req.storage).await;
            }
            root_result
        })
    })
}

impl AzureBackend {
    /// False on nodes whose storage is not ours to write (standbys, secondaries).
    pub(crate) async fn background_allowed(&self) -> bool {
        let state = self.system_view.replication_state().await.unwrap_or(0);
        let local = self.system_view.local_mount().await.unwrap_or(false);
        !(state & (DR_SECONDARY | PERFORMANCE_STANDBY) != 0
            || (state & PERFORMANCE_SECONDARY != 0 && !local))
    }

    /// Background work of every static role: interrupted rotations, due rotations, due
    /// removals. Errors are logged; the next tick retries.
    pub(crate) async fn static_tick(self: &Arc<Self>, storage: &Arc<dyn Storage>) {
        if let Err(e) = self.sweep_static_wal(storage.as_ref()).await {
            tracing::warn!(error = %e, "static roles: cannot check interrupted rotations");
        }
        let names = match static_store::list(storage.as_ref()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "static roles: cannot list roles");
                return;
            }
        };
        for name in names {
            self.static_tick_role(storage, &name).await;
        }
    }

    async fn static_tick_role(self: &Arc<Self>, storage: &Arc<dyn Storage>, name: &str) {
        let role = match static_store::get(storage.as_ref(), name).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "static roles: cannot read role");
                return;
            }
        };
        let now = Utc::now();
        let result = if due(&role, now) {
            self.rotate_static(storage, name, When::IfDue)
                .await
                .map(|r| r.warnings)
        } else if role.retired.iter().any(|r| retiree_due(r, now)) {
            self.clean_static(storage, name).await
        } else {
            Ok(Vec::new())
        };
        match result {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!(role = %name, "static role: {w}");
                }
            }
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "static role background work failed")
            }
        }
    }

    /// Rotates static role `name` (see [`When`]), holding the role's and the application's
    /// locks. The role must exist.
    pub(crate) async fn rotate_static(
        self: &Arc<Self>,
        storage: &Arc<dyn Storage>,
        name: &str,
        when: When,
    ) -> Result<Rotated, LogicalError> {
        let role_lock = self.app_lock(&format!("{}{name}", static_store::STATIC_ROLES_PREFIX));
        let _role_guard = role_lock.lock().await;
        let role = static_store::get(storage.as_ref(), name)
            .await?
            .ok_or_else(|| {
                LogicalError::bad_request(format!("static role '{name}' does not exist"))
            })?;
        let skip = match when {
            When::Now => false,
            When::IfDue => !due(&role, Utc::now()),
            When::IfNoSecret => role.current.as_ref().is_some_and(StaticSecret::usable),
        };
        if skip {
            return Ok(Rotated {
                role,
                warnings: Vec::new(),
            });
        }
        self.rotate_static_locked(storage, name, role).await
    }

    /// The rotation itself; the caller holds the role's lock and passes the stored role.
    pub(crate) async fn rotate_static_locked(
        self: &Arc<Self>,
        storage: &Arc<dyn Storage>,
        name: &str,
        role: StaticRole,
    ) -> Result<Rotated, LogicalError> {
        let store = storage.as_ref();
        let app = role.application_object_id.clone();
        let lock = app_lock(&app);
        let _app_guard = lock.lock().await;

        let config = store::get_config(store).await?.unwrap_or_default();
        let policy = policy(&config, &role);
        let client = self.client(store).await?;
        let deadline = Deadline::after(ROTATE_DEADLINE);
        let now = Utc::now();
        let end = password_end(now, role.rotation_period, policy.grace);
        let certificate = role.is_certificate();
        // The tenant's app management policy: blocked passwords fail here, before anything is
        // made; a maximum lifetime shortens the credential and brings the next rotation forward.
        let kind = if certificate {
            CredentialType::Certificate
        } else {
            CredentialType::Password
        };
        let outcome =
            certificate::apply_policy(&client, Some(&app), kind, now, end, deadline).await?;
        let mut early_warnings: Vec<String> = outcome.warning.into_iter().collect();
        let (end, rotate_by) = match outcome.end {
            Some(capped) => {
                // Early enough that the replaced credential still covers the grace.
                let by = (capped - chrono_of(policy.grace.max(MIN_END_MARGIN)))
                    .max(now + chrono_of(MIN_END_MARGIN));
                early_warnings.push(format!(
                    "static role '{name}' rotates at {} instead of after its rotation_period",
                    by.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
                (capped, by)
            }
            None => (end, DateTime::<Utc>::MAX_UTC),
        };
        let display_name = format!("{STATIC_PASSWORD_PREFIX}{}", uuid::Uuid::new_v4());
        debug_assert!(display_name.starts_with(DISPLAY_NAME_PREFIX));
        let _flight = InFlight::new(&display_name);
        let new = NewCredential {
            role_name: name,
            role: &role,
            display_name: &display_name,
            now,
            end,
        };
        let added = if certificate {
            self.add_static_certificate(&client, store, new, deadline)
                .await?
        } else {
            self.add_static_password(&client, store, new, deadline)
                .await?
        };
        let Added {
            secret: new_secret,
            wal_id,
        } = added;
        let key_id = new_secret.key_id.clone();
        let mut updated = role.clone();
        // Only the secret just replaced keeps a grace period.
        for r in &mut updated.retired {
            if r.remove_after.is_some_and(|t| t > now) {
                r.remove_after = Some(now);
            }
        }
        if let Some(old) = updated.current.take() {
            let remove_after = if role.keep_previous_until_expiry {
                None
            } else if policy.seamless && !policy.grace.is_zero() {
                Some(now + chrono_of(policy.grace))
            } else {
                Some(now)
            };
            updated.retired.push(RetiredSecret {
                key_id: old.key_id,
                expiration: old.expiration,
                remove_after,
                engine_made: old.engine_made,
            });
        }
        updated.current = Some(new_secret);
        updated.last_rotation = Some(now);
        updated.next_rotation = Some(rotate_by.min(now + chrono_of(role.rotation_period)));
        if let Err(e) = static_store::put(store, name, &updated).await {
            discard(
                &client,
                store,
                &app,
                &key_id,
                certificate,
                &wal_id,
                deadline,
            )
            .await;
            return Err(LogicalError::internal(format!(
                "error rotating static role '{name}': cannot store the role: {e}"
            )));
        }
        provision::forget_wal(store, &wal_id).await;
        tracing::info!(role = %name, app_object_id = %app, key_id = %key_id, "rotated a static role");

        let warnings = self
            .remove_due(&client, store, name, &mut updated, deadline)
            .await;
        early_warnings.extend(warnings);
        let warnings = early_warnings;
        self.arm_timer(storage, name, &updated);
        Ok(Rotated {
            role: updated,
            warnings,
        })
    }

    /// Adds a password for a rotation, covered by a WAL entry, and proves it obtains a token.
    /// On failure nothing is left behind (or the WAL entry stays for the sweep).
    async fn add_static_password(
        &self,
        client: &AzureClient,
        store: &dyn Storage,
        new: NewCredential<'_>,
        deadline: Deadline,
    ) -> Result<Added, LogicalError> {
        let NewCredential {
            role_name: name,
            role,
            display_name,
            now,
            end,
            ..
        } = new;
        let app = role.application_object_id.as_str();
        // Written before the password exists; a storage error (a read-only standby) reaches
        // the host unchanged, so it can forward the request.
        let wal_id = wal::put(
            store,
            WAL_STATIC_PASSWORD,
            wal_data(app, display_name, name, now),
        )
        .await?;
        let added = client
            .graph()
            .add_application_password(
                app,
                &NewPassword {
                    display_name: Some(display_name.to_string()),
                    start: None,
                    end: Some(end),
                },
                deadline,
            )
            .await;
        let password = match added {
            Ok(p) => p,
            Err(e) => {
                if e.status().is_some_and(|s| (400..500).contains(&s)) {
                    // Refused outright: nothing was made.
                    provision::forget_wal(store, &wal_id).await;
                } else {
                    // It may exist (or land later): remove it by name; the WAL entry stays
                    // for the sweep, which repeats the removal once this process lets go.
                    let _ =
                        rollback::remove_passwords_named(client, app, display_name, None, deadline)
                            .await;
                }
                if let Some(refused) = certificate::policy_error(&e) {
                    return Err(refused);
                }
                return Err(if e.is_too_many_passwords() {
                    LogicalError::internal(format!(
                        "error rotating static role '{name}': application {app} has the maximum number of passwords"
                    ))
                } else {
                    LogicalError::internal(format!(
                        "error rotating static role '{name}': cannot add a password to application {app}: {e}"
                    ))
                });
            }
        };
        let failed = |reason: String| {
            let (key, wal) = (password.key_id.clone(), wal_id.clone());
            async move {
                discard(client, store, app, &key, false, &wal, deadline).await;
                LogicalError::internal(reason)
            }
        };
        let Some(secret) = password.secret_text.clone() else {
            return Err(failed(format!(
                "error rotating static role '{name}': Graph returned no secret text"
            ))
            .await);
        };
        let ready = provision::wait_until_usable(
            client,
            &role.application_id,
            &secret,
            deadline.capped(READY_TIMEOUT),
        )
        .await;
        if let Readiness::TimedOut { waited, last_error } = ready {
            return Err(failed(format!(
                "error rotating static role '{name}': the new password did not obtain a token within {:.0}s \
                 (last answer: {last_error}); it was removed and the current secret stays in use",
                waited.as_secs_f64()
            ))
            .await);
        }
        Ok(Added {
            secret: StaticSecret {
                key_id: password.key_id.clone(),
                client_secret: secret.expose().to_string(),
                expiration: Some(password.end_date_time.unwrap_or(end)),
                created: Some(now),
                engine_made: true,
                ..StaticSecret::default()
            },
            wal_id,
        })
    }

    /// Makes a key pair and a self-signed certificate for a rotation (its end capped by the
    /// tenant's app management policy), registers it as a key credential on the role's
    /// application (covered by a WAL entry, the other credentials untouched) and proves it
    /// obtains a token with a client assertion. On failure nothing is left behind (or the
    /// WAL entry stays for the sweep).
    async fn add_static_certificate(
        &self,
        client: &AzureClient,
        store: &dyn Storage,
        new: NewCredential<'_>,
        deadline: Deadline,
    ) -> Result<Added, LogicalError> {
        let NewCredential {
            role_name: name,
            role,
            display_name,
            now,
            end,
            ..
        } = new;
        let app = role.application_object_id.as_str();
        let generated = certificate::generate(display_name, now, end)?;
        let wal_id = wal::put(
            store,
            WAL_STATIC_KEY,
            wal_data(app, display_name, name, now),
        )
        .await?;
        let added = client
            .graph()
            .add_application_key_credential(app, &generated.key_credential(display_name), deadline)
            .await;
        let key = match added {
            Ok(k) => k,
            Err(e) => {
                if e.status().is_some_and(|s| (400..500).contains(&s)) {
                    provision::forget_wal(store, &wal_id).await;
                } else {
                    // It may exist: remove it by name; the WAL entry stays for the sweep.
                    let _ = certificate::rollback_key_credentials(
                        client,
                        &wal_data(app, display_name, name, now),
                        None,
                        deadline,
                    )
                    .await;
                }
                return Err(certificate::policy_error(&e).unwrap_or_else(|| {
                    LogicalError::internal(format!(
                        "error rotating static role '{name}': cannot add a certificate to application {app}: {e}"
                    ))
                }));
            }
        };
        let ready = certificate::wait_until_certificate_usable(
            client,
            &role.application_id,
            &generated.credential,
            deadline.capped(READY_TIMEOUT),
        )
        .await;
        if let Readiness::TimedOut { waited, last_error } = ready {
            discard(client, store, app, &key.key_id, true, &wal_id, deadline).await;
            return Err(LogicalError::internal(format!(
                "error rotating static role '{name}': the new certificate did not obtain a token within {:.0}s \
                 (last answer: {last_error}); it was removed and the current one stays in use",
                waited.as_secs_f64()
            )));
        }
        Ok(Added {
            secret: StaticSecret {
                key_id: key.key_id.clone(),
                expiration: Some(key.end_date_time.unwrap_or(generated.not_after)),
                created: Some(now),
                engine_made: true,
                certificate: generated.cert_pem.clone(),
                private_key: generated.key_pem.expose().to_string(),
                thumbprint: generated.credential.thumbprint_hex(),
                ..StaticSecret::default()
            },
            wal_id,
        })
    }

    /// Removes the role's replaced passwords whose time has come (role lock held).
    async fn clean_static(
        self: &Arc<Self>,
        storage: &Arc<dyn Storage>,
        name: &str,
    ) -> Result<Vec<String>, LogicalError> {
        let role_lock = self.app_lock(&format!("{}{name}", static_store::STATIC_ROLES_PREFIX));
        let _role_guard = role_lock.lock().await;
        let Some(mut role) = static_store::get(storage.as_ref(), name).await? else {
            return Ok(Vec::new());
        };
        probe_writable(storage.as_ref()).await?;
        let lock = app_lock(&role.application_object_id);
        let _app_guard = lock.lock().await;
        let client = self.client(storage.as_ref()).await?;
        let deadline = Deadline::after(ROTATE_DEADLINE);
        let warnings = self
            .remove_due(&client, storage.as_ref(), name, &mut role, deadline)
            .await;
        self.arm_timer(storage, name, &role);
        Ok(warnings)
    }

    /// Removes due retired passwords from Azure and from the role (stored if changed). The
    /// caller holds the role's and the application's locks.
    async fn remove_due(
        &self,
        client: &AzureClient,
        storage: &dyn Storage,
        name: &str,
        role: &mut StaticRole,
        deadline: Deadline,
    ) -> Vec<String> {
        let now = Utc::now();
        let mut warnings = Vec::new();
        let mut kept = Vec::new();
        let before = role.retired.len();
        for r in std::mem::take(&mut role.retired) {
            if !retiree_due(&r, now) {
                kept.push(r);
                continue;
            }
            match remove_credential(
                client,
                &role.application_object_id,
                &r.key_id,
                role.is_certificate(),
                deadline,
            )
            .await
            {
                Ok(()) => {
                    tracing::info!(role = %name, key_id = %r.key_id, "removed a replaced static-role credential")
                }
                Err(e) => {
                    warnings.push(format!(
                        "could not remove the replaced {} {} (retried later): {e}",
                        kind_name(role),
                        r.key_id
                    ));
                    kept.push(r);
                }
            }
        }
        role.retired = kept;
        if role.retired.len() != before {
            if let Err(e) = static_store::put(storage, name, role).await {
                warnings.push(format!(
                    "could not store the role after removing passwords: {e}"
                ));
            }
        }
        warnings
    }

    /// Runs the role's next due work on an in-process timer when it is near.
    pub(crate) fn arm_timer(
        self: &Arc<Self>,
        storage: &Arc<dyn Storage>,
        name: &str,
        role: &StaticRole,
    ) {
        let next = role
            .retired
            .iter()
            .filter_map(|r| r.remove_after.or(r.expiration))
            .chain(role.next_rotation)
            .min();
        let Some(next) = next else { return };
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if wait > TIMER_HORIZON {
            return;
        }
        let (b, storage, name) = (self.clone(), storage.clone(), name.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(wait + Duration::from_millis(250)).await;
            if b.background_allowed().await {
                b.static_tick_role(&storage, &name).await;
            }
        });
    }

    /// Rolls back the WAL entries of static-role passwords that no rotation of this process
    /// is adding: a crash, a restart or a failover interrupted them.
    pub(crate) async fn sweep_static_wal(&self, storage: &dyn Storage) -> Result<(), LogicalError> {
        let now = Utc::now().timestamp();
        let mut probed = false;
        for id in wal::list(storage).await? {
            let Some(entry) = wal::get(storage, &id).await? else {
                continue;
            };
            if !(entry.kind == WAL_STATIC_PASSWORD || entry.kind == WAL_STATIC_KEY)
                || in_flight(&wal_str(&entry.data, "DisplayName"))
            {
                continue;
            }
            if !probed {
                probe_writable(storage).await?;
                probed = true;
            }
            self.rollback_static_credential(storage, &entry.kind, &entry.data)
                .await?;
            if now - entry.created_at >= ORPHAN_SETTLE {
                wal::delete(storage, &id).await?;
            }
        }
        Ok(())
    }

    /// Removes the password a `staticRolePassword` entry (or the key credential a
    /// `staticRoleKeyCredential` entry) covers, unless its rotation finished (the role
    /// references it) or it is still being added by this process.
    pub(crate) async fn rollback_static_credential(
        &self,
        storage: &dyn Storage,
        kind: &str,
        data: &Value,
    ) -> Result<(), LogicalError> {
        let app = wal_str(data, "AppObjID");
        let display_name = wal_str(data, "DisplayName");
        if app.is_empty() || display_name.is_empty() || in_flight(&display_name) {
            return Ok(());
        }
        probe_writable(storage).await?;
        let lock = app_lock(&app);
        let _guard = lock.lock().await;
        let keep: HashSet<String> = match static_store::get(storage, &wal_str(data, "Role")).await?
        {
            Some(role) if role.application_object_id.eq_ignore_ascii_case(&app) => {
                role.key_ids().into_iter().collect()
            }
            _ => HashSet::new(),
        };
        let client = self.client(storage).await?;
        let deadline = Deadline::after(ROTATE_DEADLINE);
        if kind == WAL_STATIC_KEY {
            let keys = match client
                .graph()
                .list_application_key_credentials(&app, deadline)
                .await
            {
                Ok(k) => k,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(LogicalError::internal(e.to_string())),
            };
            for k in keys {
                if k.display_name.as_deref() == Some(display_name.as_str())
                    && !keep.contains(&k.key_id)
                {
                    client
                        .graph()
                        .remove_application_key_credential(&app, &k.key_id, deadline)
                        .await
                        .map_err(|e| LogicalError::internal(e.to_string()))?;
                    tracing::info!(key_id = %k.key_id, "removed the certificate of an interrupted static-role rotation");
                }
            }
            return Ok(());
        }
        let passwords = match client
            .graph()
            .list_application_passwords(&app, deadline)
            .await
        {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(LogicalError::internal(e.to_string())),
        };
        for p in passwords {
            if p.display_name.as_deref() == Some(display_name.as_str()) && !keep.contains(&p.key_id)
            {
                client
                    .graph()
                    .remove_application_password(&app, &p.key_id, deadline)
                    .await
                    .map_err(|e| LogicalError::internal(e.to_string()))?;
                tracing::info!(key_id = %p.key_id, "removed the password of an interrupted static-role rotation");
            }
        }
        Ok(())
    }

    /// Obtains an access token for `scope` with the role's current certificate (a client
    /// assertion signed with its key).
    pub(crate) async fn static_certificate_token(
        &self,
        storage: &dyn Storage,
        role: &StaticRole,
        current: &StaticSecret,
        scope: &str,
    ) -> Result<azure_clients::AccessToken, azure_clients::AzureError> {
        let client = self
            .client(storage)
            .await
            .map_err(|e| azure_clients::AzureError::config(e.to_string()))?;
        let credential =
            azure_clients::ClientCertificate::from_pem(&current.certificate, &current.private_key)?;
        client
            .client_certificate_token(
                &role.application_id,
                &Arc::new(credential),
                scope,
                Deadline::after(Duration::from_secs(30)),
            )
            .await
    }

    /// Obtains an access token for `scope` with the role's current secret.
    pub(crate) async fn static_token(
        &self,
        storage: &dyn Storage,
        role: &StaticRole,
        secret: &str,
        scope: &str,
    ) -> Result<azure_clients::AccessToken, azure_clients::AzureError> {
        let client = self
            .client(storage)
            .await
            .map_err(|e| azure_clients::AzureError::config(e.to_string()))?;
        client
            .client_secret_token(
                &role.application_id,
                &SecretString::new(secret.to_string()),
                scope,
                Deadline::after(Duration::from_secs(30)),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_inherits_from_config() {
        let mut config = Config::default();
        let mut role = StaticRole::default();
        assert_eq!(
            policy(&config, &role),
            Policy {
                seamless: true,
                grace: DEFAULT_GRACE_PERIOD
            }
        );
        config.seamless_rotation = Some(false);
        config.rotation_grace_period = Some(Duration::from_secs(60));
        assert_eq!(
            policy(&config, &role),
            Policy {
                seamless: false,
                grace: Duration::from_secs(60)
            }
        );
        role.seamless_rotation = Some(true);
        role.rotation_grace_period = Some(Duration::ZERO);
        assert_eq!(
            policy(&config, &role),
            Policy {
                seamless: true,
                grace: Duration::ZERO
            }
        );
        assert_eq!(grace_for_output(None), 300);
        assert_eq!(grace_for_output(Some(Duration::ZERO)), -1);
        assert_eq!(grace_for_output(Some(Duration::from_secs(90))), 90);
    }

    #[test]
    fn passwords_end_at_period_plus_grace() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            password_end(now, hour, Duration::from_secs(300)),
            now + chrono::Duration::seconds(3900)
        );
        // No grace: still one margin past the scheduled rotation.
        assert_eq!(
            password_end(now, hour, Duration::ZERO),
            now + chrono::Duration::seconds(3660)
        );
    }

    #[test]
    fn what_is_due() {
        let now = Utc::now();
        let past = now - chrono::Duration::seconds(1);
        let future = now + chrono::Duration::seconds(60);
        let r = |remove_after, expiration| RetiredSecret {
            remove_after,
            expiration,
            ..RetiredSecret::default()
        };
        assert!(retiree_due(&r(Some(past), Some(future)), now));
        assert!(!retiree_due(&r(Some(future), Some(past)), now));
        assert!(
            !retiree_due(&r(None, Some(future)), now),
            "kept until its end date"
        );
        assert!(retiree_due(&r(None, Some(past)), now));
        assert!(!retiree_due(&r(None, None), now));
        let mut role = StaticRole::default();
        assert!(!due(&role, now));
        role.next_rotation = Some(past);
        assert!(due(&role, now));
    }

    #[test]
    fn in_flight_marks_clear_on_drop() {
        let name = format!("{STATIC_PASSWORD_PREFIX}test-{}", uuid::Uuid::new_v4());
        {
            let _f = InFlight::new(&name);
            assert!(in_flight(&name));
        }
        assert!(!in_flight(&name));
    }

    #[tokio::test]
    async fn app_lock_is_process_wide_and_case_insensitive() {
        let a = app_lock("ABC");
        let _g = a.lock().await;
        let b = app_lock("abc");
        assert!(b.try_lock().is_err());
        assert!(app_lock("other").try_lock().is_ok());
    }
}
