//! Rollback of write-ahead-log entries left by an issuance or rotation that did not finish
//! (a crash, a lost connection): run by the host's periodic rollback.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use super::backend::AzureBackend;
use super::provision::{self, persist, wal_str, WAL_ADD_PASSWORD, WAL_APP_CREATE, WAL_ROLE_ASSIGN};
use super::store::{self, go_time, AzureRole};
use azure_clients::{AzureClient, AzureError, Deadline, RetryPolicy};
use vault_plugin_sdk::framework::{wal_rollback_method, RollbackOutcome, WalRollbackFn};
use vault_plugin_sdk::logical::{LogicalError, Request};

/// Entries younger than this belong to work that may still be running.
pub const MIN_AGE: Duration = Duration::from_secs(600);
pub const WAL_ROTATE_ROOT: &str = "rotateRootCreds";

const ROLLBACK_DEADLINE: Duration = Duration::from_secs(60);

/// Added to the Azure client's per-attempt timeout to bound how late a request can land
/// after it was sent (the service may carry out a request whose client gave up on it).
pub const SETTLE_MARGIN: Duration = Duration::from_secs(30);
/// Overrides the settle window (seconds; 0 rolls back once more at the next tick).
pub const SETTLE_ENV: &str = "AZURE_ROLLBACK_SETTLE_SECONDS";

pub fn handler(b: &Arc<AzureBackend>) -> WalRollbackFn {
    wal_rollback_method(b, AzureBackend::rollback)
}

/// How long after a rollback a request sent by the entry's writer can still land: a creation
/// (an application POST, a role assignment PUT, an `addPassword`) that reaches Azure after
/// the rollback found nothing to delete, or deleted what was there. The writer sends nothing
/// new once its process is gone (the plugin exits with its host) or its work has ended (the
/// entry is `ended`, or ten minutes old), so what is still under way lands within one HTTP
/// attempt's timeout; the margin covers the service's own processing.
pub fn settle_window(env: impl Fn(&str) -> Option<String>) -> Duration {
    env(SETTLE_ENV)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_else(|| RetryPolicy::default().attempt_timeout + SETTLE_MARGIN)
}

/// True once the entry's objects are no longer worth chasing.
fn expired(data: &Value) -> bool {
    go_time::parse(&wal_str(data, "Expiration"))
        .ok()
        .flatten()
        .is_some_and(|t| Utc::now() > t)
}

impl AzureBackend {
    /// Rolls back one entry. Every kind that covers a creation in Azure settles (see
    /// [`settle_window`]): the framework keeps the entry and rolls it back once more when
    /// nothing its writer sent can land any more. Only the root rotation's entry, whose
    /// rollback also resets the configuration, is final at once.
    async fn rollback(
        self: Arc<Self>,
        req: Request,
        kind: String,
        data: Value,
    ) -> Result<RollbackOutcome, LogicalError> {
        let kind = kind.as_str();
        let settle = RollbackOutcome::Settle(settle_window(|k| self.env_value(k)));
        if kind == WAL_ROTATE_ROOT {
            self.rollback_rotate_root(&req, &data).await?;
            return Ok(RollbackOutcome::Done);
        }
        if kind == super::static_rotation::WAL_STATIC_PASSWORD
            || kind == super::static_rotation::WAL_STATIC_KEY
        {
            self.rollback_static_credential(req.storage.as_ref(), kind, &data)
                .await?;
            return Ok(settle);
        }
        if kind == super::certificate::WAL_ADD_KEY
            || kind == super::certificate::WAL_ROTATE_ROOT_CERT
        {
            return self
                .rollback_key_credential(&req, kind, &data, settle)
                .await;
        }
        if ![WAL_APP_CREATE, WAL_ROLE_ASSIGN, WAL_ADD_PASSWORD].contains(&kind) {
            return Err(LogicalError::internal(format!(
                "unknown rollback type {kind:?}"
            )));
        }
        let client = self.client(req.storage.as_ref()).await.map_err(|e| {
            tracing::warn!(kind, error = %e, "cannot build an Azure client for the rollback; will retry");
            e
        })?;
        let deadline = Deadline::after(ROLLBACK_DEADLINE);
        let outcome = match kind {
            WAL_APP_CREATE => rollback_app(&client, &data, deadline).await,
            WAL_ROLE_ASSIGN => rollback_role_assignments(&client, &data, deadline).await,
            _ => rollback_password(&client, &data, deadline).await,
        };
        match outcome {
            Ok(()) => {
                tracing::info!(kind, "rolled back an unfinished operation");
                Ok(settle)
            }
            Err(e) if expired(&data) => {
                tracing::warn!(kind, error = %e, "giving up rollback of an expired write-ahead-log entry");
                Ok(RollbackOutcome::Done)
            }
            Err(e) => Err(LogicalError::internal(e)),
        }
    }

    /// Removes a key credential an interrupted issue or root rotation added (never the
    /// certificate the engine is configured with).
    async fn rollback_key_credential(
        &self,
        req: &Request,
        kind: &str,
        data: &Value,
        settle: RollbackOutcome,
    ) -> Result<RollbackOutcome, LogicalError> {
        let storage = req.storage.as_ref();
        let config = store::get_config(storage).await?.unwrap_or_default();
        let keep = azure_clients::ClientCertificate::from_pem(
            &config.client_certificate,
            &config.client_certificate_key,
        )
        .ok()
        .map(|c| c.certificate_der().to_vec());
        let client = self.client(storage).await?;
        let deadline = Deadline::after(ROLLBACK_DEADLINE);
        match super::certificate::rollback_key_credentials(&client, data, keep.as_deref(), deadline)
            .await
        {
            Ok(()) => {
                tracing::info!(kind, "rolled back an unfinished operation");
                Ok(settle)
            }
            Err(e) if expired(data) => {
                tracing::warn!(kind, error = %e, "giving up rollback of an expired write-ahead-log entry");
                Ok(RollbackOutcome::Done)
            }
            Err(e) => Err(LogicalError::internal(e)),
        }
    }

    async fn rollback_rotate_root(&self, req: &Request, data: &Value) -> Result<(), LogicalError> {
        let storage = req.storage.as_ref();
        let Some(mut config) = store::get_config(storage).await? else {
            return Ok(());
        };
        let app = wal_str(data, "AppObjID");
        if !app.is_empty() {
            // Remove the password the interrupted rotation made, unless it became the root
            // one. Without a client the entry stays for a later tick.
            let client = self.client(storage).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot build an Azure client to roll back an interrupted root rotation; will retry");
                e
            })?;
            let deadline = Deadline::after(ROLLBACK_DEADLINE);
            let name = wal_str(data, "DisplayName");
            persist(deadline, || {
                remove_passwords_named(
                    &client,
                    &app,
                    &name,
                    Some(&config.client_secret_key_id),
                    deadline,
                )
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot remove the password of an interrupted root rotation; will retry");
                LogicalError::internal(format!("rollback of root rotation: {e}"))
            })?;
        }
        config.new_client_secret.clear();
        config.new_client_secret_key_id.clear();
        config.new_client_secret_created = None;
        store::put_config(storage, &config).await?;
        self.reset_client().await;
        self.set_swap_pending(false);
        Ok(())
    }
}

async fn rollback_app(
    client: &AzureClient,
    data: &Value,
    deadline: Deadline,
) -> Result<(), String> {
    let object_id = wal_str(data, "AppObjID");
    if !object_id.is_empty() {
        return persist(deadline, || {
            provision::delete_app(client, &object_id, true, deadline)
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    }
    let name = wal_str(data, "DisplayName");
    if name.is_empty() {
        return Ok(());
    }
    persist(deadline, || {
        provision::delete_apps_named(client, &name, deadline)
    })
    .await
    .map_err(|e| e.to_string())
}

async fn rollback_role_assignments(
    client: &AzureClient,
    data: &Value,
    deadline: Deadline,
) -> Result<(), String> {
    let roles: Option<Vec<Option<AzureRole>>> =
        serde_json::from_value(data.get("AzureRoles").cloned().unwrap_or(Value::Null))
            .map_err(|e| e.to_string())?;
    let Some(roles) = roles else {
        return Ok(());
    };
    let names: Vec<String> = data
        .get("AssignmentIDs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut ids = Vec::new();
    for (role, name) in roles.iter().zip(&names) {
        let role = role.as_ref().ok_or_else(|| {
            format!(
                "azure role was nil for service principal: {}",
                wal_str(data, "SpID")
            )
        })?;
        ids.push(provision::role_assignment_id(&role.scope, name));
    }
    let errors = provision::undo_role_assignments(client, &ids, deadline).await;
    match errors.first() {
        None => Ok(()),
        Some(e) => Err(format!("rollback error unassigning role: {e}")),
    }
}

async fn rollback_password(
    client: &AzureClient,
    data: &Value,
    deadline: Deadline,
) -> Result<(), String> {
    let app = wal_str(data, "AppObjID");
    let name = wal_str(data, "DisplayName");
    persist(deadline, || {
        remove_passwords_named(client, &app, &name, None, deadline)
    })
    .await
    .map_err(|e| e.to_string())
}

/// Removes the passwords of application `app` whose display name is exactly `name`, except
/// the key `keep`. A missing application counts as done.
pub(crate) async fn remove_passwords_named(
    client: &AzureClient,
    app: &str,
    name: &str,
    keep: Option<&str>,
    deadline: Deadline,
) -> Result<(), AzureError> {
    if name.is_empty() {
        return Ok(());
    }
    let passwords = match client
        .graph()
        .list_application_passwords(app, deadline)
        .await
    {
        Ok(p) => p,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    for p in passwords {
        if p.display_name.as_deref() == Some(name) && Some(p.key_id.as_str()) != keep {
            client
                .graph()
                .remove_application_password(app, &p.key_id, deadline)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settle_window_outlasts_one_http_attempt_unless_overridden() {
        let default = settle_window(|_| None);
        assert_eq!(
            default,
            RetryPolicy::default().attempt_timeout + SETTLE_MARGIN
        );
        assert!(default > RetryPolicy::default().attempt_timeout);
        let set = |v: &'static str| move |k: &str| (k == SETTLE_ENV).then(|| v.to_string());
        assert_eq!(settle_window(set("0")), Duration::ZERO);
        assert_eq!(settle_window(set(" 5 ")), Duration::from_secs(5));
        assert_eq!(
            settle_window(set("soon")),
            default,
            "unparsable: the default"
        );
    }
}
