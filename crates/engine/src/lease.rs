//! The two lease types and their renew and revoke: `service_principal` (a dynamic
//! application and service principal) and `static_service_principal` (a password on an
//! existing or persisted application). Internal data keeps the Go engine's keys, so leases
//! issued by the Go engine renew and revoke here.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::backend::AzureBackend;
use super::provision;
use super::store::{self, go_time};
use azure_clients::{AzureClient, AzureError, Deadline, DeleteOutcome};
use vault_plugin_sdk::framework::{method, FieldData, HandlerFn, HandlerResult, SecretType};
use vault_plugin_sdk::logical::{LogicalError, Map, Request, Response, Secret};

pub const SERVICE_PRINCIPAL: &str = "service_principal";
pub const STATIC_SERVICE_PRINCIPAL: &str = "static_service_principal";

const REVOKE_DEADLINE: Duration = Duration::from_secs(60);
/// What the Go engine assumed for leases issued before it recorded `key_end_date`.
const LEGACY_KEY_LIFETIME: chrono::Duration = chrono::Duration::hours(87_600);

use vault_plugin_sdk::gocompat::format_time as rfc3339;

/// Internal data of a `service_principal` lease.
pub struct ServicePrincipalLease {
    pub app_object_id: String,
    pub sp_object_id: String,
    /// `None` when the role had no Azure roles (stored as JSON null, as the Go engine does).
    pub role_assignment_ids: Option<Vec<String>>,
    pub group_membership_ids: Vec<String>,
    pub role: String,
    pub permanently_delete: bool,
    pub key_end_date: DateTime<Utc>,
}

impl ServicePrincipalLease {
    pub fn to_map(&self) -> Map {
        let v = json!({
            "app_object_id": self.app_object_id,
            "sp_object_id": self.sp_object_id,
            "role_assignment_ids": self.role_assignment_ids,
            "group_membership_ids": self.group_membership_ids,
            "role": self.role,
            "permanently_delete": self.permanently_delete,
            "key_end_date": rfc3339(self.key_end_date),
        });
        vault_plugin_sdk::framework::object(v)
    }
}

/// Internal data of a `static_service_principal` lease.
pub struct StaticLease {
    pub app_object_id: String,
    pub key_id: String,
    pub key_end_date: DateTime<Utc>,
    pub role: String,
}

impl StaticLease {
    pub fn to_map(&self) -> Map {
        vault_plugin_sdk::framework::object(json!({
            "app_object_id": self.app_object_id,
            "key_id": self.key_id,
            "key_end_date": rfc3339(self.key_end_date),
            "role": self.role,
        }))
    }
}

fn internal_str(secret: &Secret, key: &str) -> Option<String> {
    secret
        .internal_data
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn internal_strings(secret: &Secret, key: &str) -> Vec<String> {
    strings_at(&secret.internal_data, key)
}

/// The strings of the array at `key` of lease internal data (none when absent).
pub(crate) fn strings_at(data: &Map, key: &str) -> Vec<String> {
    data.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn secret_of(req: &Request) -> Result<Secret, LogicalError> {
    req.secret
        .clone()
        .ok_or_else(|| LogicalError::bad_request("request has no secret"))
}

pub fn service_principal(b: &Arc<AzureBackend>) -> SecretType {
    secret_type(
        SERVICE_PRINCIPAL,
        b,
        method(b, AzureBackend::revoke_service_principal),
    )
}

pub fn static_service_principal(b: &Arc<AzureBackend>) -> SecretType {
    secret_type(
        STATIC_SERVICE_PRINCIPAL,
        b,
        method(b, AzureBackend::revoke_static),
    )
}

/// Both lease types renew the same way and differ in how they are revoked. Issued leases
/// take their TTLs from the role; the registered type makes them renewable.
fn secret_type(name: &str, b: &Arc<AzureBackend>, revoke: HandlerFn) -> SecretType {
    SecretType {
        name: name.into(),
        default_duration: Duration::ZERO,
        renew: Some(method(b, AzureBackend::renew)),
        revoke,
    }
}

impl AzureBackend {
    /// Extends a lease within the role's TTLs and the password's remaining life in Azure.
    async fn renew(self: Arc<Self>, req: Request, _data: FieldData) -> HandlerResult {
        let mut secret = secret_of(&req)?;
        let role_name = internal_str(&secret, "role")
            .ok_or_else(|| LogicalError::internal("internal data 'role' not found"))?;
        let Some(role) = store::get_role(req.storage.as_ref(), &role_name).await? else {
            return Ok(None);
        };
        let key_end = match secret
            .internal_data
            .get("key_end_date")
            .and_then(Value::as_str)
        {
            Some(text) => go_time::parse(text)
                .map_err(|_| LogicalError::internal("cannot parse 'key_end_date' to timestamp"))?
                .ok_or_else(|| {
                    LogicalError::internal("cannot parse 'key_end_date' to timestamp")
                })?,
            None => {
                let end = secret.lease.issue_time.unwrap_or_else(Utc::now) + LEGACY_KEY_LIFETIME;
                secret
                    .internal_data
                    .insert("key_end_date".into(), json!(rfc3339(end)));
                end
            }
        };
        let remaining = (key_end - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        secret.lease.ttl = role.ttl.min(remaining);
        secret.lease.renewable = role.ttl < remaining;
        // The host caps the lease at issue time + max TTL. Unlike the Go engine, the cap also
        // holds explicit_max_ttl and the password's end in Azure, so a lease never outlives
        // the credential it stands for.
        let key_life = secret
            .lease
            .issue_time
            .and_then(|issued| (key_end - issued).to_std().ok())
            .unwrap_or(remaining);
        let (_, role_max) = super::path_creds::lease_ttls(&role);
        secret.lease.max_ttl = if role_max.is_zero() {
            key_life
        } else {
            role_max.min(key_life)
        };
        // The lease alone: the credential was handed out once, at issue.
        Ok(Some(Response {
            secret: Some(secret),
            ..Response::default()
        }))
    }

    async fn revoke_service_principal(
        self: Arc<Self>,
        req: Request,
        _: FieldData,
    ) -> HandlerResult {
        let secret = secret_of(&req)?;
        let app_object_id = internal_str(&secret, "app_object_id")
            .ok_or_else(|| LogicalError::internal("internal data 'app_object_id' not found"))?;
        let sp_object_id = internal_str(&secret, "sp_object_id").unwrap_or_default();
        let ra_ids = internal_strings(&secret, "role_assignment_ids");
        let group_ids = internal_strings(&secret, "group_membership_ids");
        let permanently = secret
            .internal_data
            .get("permanently_delete")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !group_ids.is_empty() && sp_object_id.is_empty() {
            return Err(LogicalError::internal(
                "internal data 'sp_object_id' not found",
            ));
        }
        let client = self
            .client(req.storage.as_ref())
            .await
            .map_err(|e| LogicalError::internal(format!("error during revoke: {e}")))?;
        let deadline = Deadline::after(REVOKE_DEADLINE);
        let failures = revoke_principal(
            &client,
            &app_object_id,
            &sp_object_id,
            &ra_ids,
            &group_ids,
            permanently,
            deadline,
        )
        .await;
        if failures.is_empty() {
            tracing::info!(app_object_id = %app_object_id, "revoked a service principal");
            super::inventory::forget(req.storage.as_ref(), &app_object_id).await;
            return Ok(None);
        }
        // The host may drop the lease anyway (a forced revoke): the reconciler finishes the
        // job.
        super::inventory::mark_revoke_requested(req.storage.as_ref(), &app_object_id).await;
        // Whatever could go went; the host retries the revocation for the rest (what is gone
        // by then counts as done).
        Err(LogicalError::internal(failures.join("; ")))
    }

    async fn revoke_static(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        let secret = secret_of(&req)?;
        let app_object_id = internal_str(&secret, "app_object_id")
            .ok_or_else(|| LogicalError::internal("internal data 'app_object_id' not found"))?;
        let client = self
            .client(req.storage.as_ref())
            .await
            .map_err(|e| LogicalError::internal(format!("error during revoke: {e}")))?;
        let key_id = internal_str(&secret, "key_id")
            .ok_or_else(|| LogicalError::internal("internal data 'key_id' not found"))?;
        let deadline = Deadline::after(REVOKE_DEADLINE);
        if internal_str(&secret, "credential_type").as_deref() == Some("certificate") {
            return self
                .revoke_key_credential(&client, &app_object_id, &key_id, deadline)
                .await
                .map(|()| None);
        }
        let lock = self.app_lock(&app_object_id);
        let _guard = lock.lock().await;
        match client
            .graph()
            .remove_application_password(&app_object_id, &key_id, deadline)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => {
                tracing::info!(app_object_id = %app_object_id, "application or password already gone; lease counts as revoked");
                Ok(None)
            }
            Err(e) => Err(LogicalError::internal(format!(
                "error removing credentials: {e}"
            ))),
        }
    }
}

/// How long a purge from deleted items retries a 404 right after this revocation deleted the
/// object (the deleted-items list may lag behind the delete).
const PURGE_SETTLE: Duration = Duration::from_secs(10);

/// Removes everything a `service_principal` lease stands for, in one round: every role
/// assignment, every group membership and the application (its service principal and
/// password go with it) are deleted together. Objects already gone count as done. With
/// `permanently`, a second round purges the application and the service principal from
/// deleted items together (a purge needs the soft delete before it). Returns one message per
/// failure, after every call went out.
pub async fn revoke_principal(
    client: &AzureClient,
    app_object_id: &str,
    sp_object_id: &str,
    ra_ids: &[String],
    group_ids: &[String],
    permanently: bool,
    deadline: Deadline,
) -> Vec<String> {
    let (ra_errors, group_errors, app) = tokio::join!(
        provision::delete_role_assignments(client, ra_ids, deadline),
        provision::remove_memberships(client, sp_object_id, group_ids, deadline),
        client.graph().delete_application(app_object_id, deadline)
    );
    let mut failures: Vec<String> = ra_errors
        .into_iter()
        .map(|e| format!("error unassigning role: {e}"))
        .chain(
            group_errors
                .into_iter()
                .map(|e| format!("error removing group membership: {e}")),
        )
        .collect();
    let deleted_now = match app {
        Ok(DeleteOutcome::Deleted) => true,
        Ok(DeleteOutcome::AlreadyGone) => {
            tracing::info!(app_object_id = %app_object_id, "application already gone; it counts as deleted");
            false
        }
        Err(e) => {
            failures.push(format!("error deleting application: {e}"));
            return failures;
        }
    };
    if permanently {
        // Right after this delete the items may not be listed yet: a 404 is retried a while.
        // An application gone before (an earlier attempt) was purged or is listed already.
        let settle = if deleted_now {
            PURGE_SETTLE
        } else {
            Duration::ZERO
        };
        let purge = |id: &str| {
            let id = id.to_string();
            async move {
                if id.is_empty() {
                    return Ok::<_, AzureError>(DeleteOutcome::AlreadyGone);
                }
                client
                    .graph()
                    .permanently_delete(&id, settle, deadline)
                    .await
            }
        };
        let (app, sp) = tokio::join!(purge(app_object_id), purge(sp_object_id));
        if let Err(e) = app {
            failures.push(format!("error permanently deleting application: {e}"));
        }
        if let Err(e) = sp {
            failures.push(format!("error permanently deleting service principal: {e}"));
        }
    }
    failures
}
