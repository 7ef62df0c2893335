//! `rotate-root`: replace the engine's own client secret with one only Vault knows, and the
//! periodic work that finishes a pending swap and runs scheduled rotations.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::backend::{storage_failure, AzureBackend};
use super::path_config::DEFAULT_ROOT_PASSWORD_TTL;
use super::provision::{self, Readiness};
use super::rollback::WAL_ROTATE_ROOT;
use super::store::{self, Config};
use azure_clients::{Deadline, NewPassword, SecretString, DISPLAY_NAME_PREFIX};
use vault_plugin_sdk::framework::{
    periodic_method, wal, FieldData, HandlerResult, Path, PeriodicFn,
};
use vault_plugin_sdk::logical::{
    LogicalError, Operation, ReplicationState, Request, Response, Storage,
};

const DEADLINE: Duration = Duration::from_secs(75);
/// How long `rotate-root` waits for the new password to work before it leaves the swap to
/// the periodic check.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The periodic check's own bound.
const PERIODIC_READY_TIMEOUT: Duration = Duration::from_secs(10);

const SYNOPSIS: &str = "Attempt to rotate the root credentials used to communicate with Azure.";
const DESCRIPTION: &str = "This path will add a new password to the application the engine uses \
(the configured client_id), prove that it obtains a token, switch the engine to it, and then remove \
the passwords this engine made earlier. Passwords the engine did not make are left in place. The new \
password is never returned.";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new("rotate-root")
        .with_state(b)
        .on(
            Operation::Update,
            AzureBackend::rotate_root,
            "Rotate the engine's root credential.",
            "rotate-root",
        )
        .forwarded(&[Operation::Update])
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

pub fn periodic(b: &Arc<AzureBackend>) -> PeriodicFn {
    periodic_method(b, AzureBackend::periodic)
}

impl AzureBackend {
    async fn rotate_root(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        let storage = req.storage.as_ref();
        let config = store::get_config(storage)
            .await?
            .ok_or_else(|| LogicalError::internal("config is nil"))?;
        // The application is looked up in Azure before the WAL entry is written.
        self.ensure_writable().await?;
        if !config.client_certificate.is_empty() && config.client_secret.is_empty() {
            let ttl = if config.root_password_ttl.is_zero() {
                DEFAULT_ROOT_PASSWORD_TTL
            } else {
                config.root_password_ttl
            };
            let warnings = self
                .rotate_root_certificate(
                    storage,
                    config,
                    ttl,
                    READY_TIMEOUT,
                    Deadline::after(DEADLINE),
                )
                .await?;
            let resp = Response {
                warnings,
                ..Response::default()
            };
            return Ok(Some(resp).filter(|r| !r.warnings.is_empty()));
        }
        self.add_root_password(storage, config).await?;
        let mut resp = Response::default();
        match self.finish_root_swap(storage, READY_TIMEOUT).await? {
            Some(warnings) => resp.warnings = warnings,
            None => resp.add_warning(
                "the new root password does not obtain a token yet; the engine keeps using the \
                 current one and switches once the new one works (checked every minute)",
            ),
        }
        Ok(Some(resp).filter(|r| !r.warnings.is_empty()))
    }

    /// Adds the new root password and records it as pending in the config.
    async fn add_root_password(
        &self,
        storage: &dyn Storage,
        mut config: Config,
    ) -> Result<(), LogicalError> {
        let client = self.client(storage).await?;
        let deadline = Deadline::after(DEADLINE);
        let app = client
            .graph()
            .find_application_by_app_id(&config.client_id, deadline)
            .await
            .map_err(|e| LogicalError::internal(e.to_string()))?
            .ok_or_else(|| LogicalError::internal("no application found"))?;
        let ttl = if config.root_password_ttl.is_zero() {
            DEFAULT_ROOT_PASSWORD_TTL
        } else {
            config.root_password_ttl
        };
        let end =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(182));
        let display_name = format!("{DISPLAY_NAME_PREFIX}{}", uuid::Uuid::new_v4());
        let wal_id = wal::put(
            storage,
            WAL_ROTATE_ROOT,
            json!({"AppObjID": app.id, "DisplayName": display_name,
                   "Expiration": (Utc::now() + chrono::Duration::hours(24)).to_rfc3339()}),
        )
        .await
        .map_err(|e| storage_failure("error writing WAL", e))?;
        let password = self
            .add_app_password(
                &client,
                storage,
                &wal_id,
                &app.id,
                &NewPassword {
                    display_name: Some(display_name.clone()),
                    start: None,
                    end: Some(end),
                },
                deadline,
            )
            .await
            .map_err(|e| LogicalError::internal(format!("failed to add new password: {e}")))?;
        let secret = password.secret_text.clone().ok_or_else(|| {
            LogicalError::internal("failed to add new password: Graph returned no secret text")
        })?;
        config.new_client_secret = secret.expose().to_string();
        config.new_client_secret_created = Some(Utc::now());
        config.new_client_secret_expiration_date = Some(password.end_date_time.unwrap_or(end));
        config.new_client_secret_key_id = password.key_id.clone();
        store::put_config(storage, &config)
            .await
            .map_err(|e| storage_failure("failed to save new configuration", e))?;
        self.set_swap_pending(true);
        provision::forget_wal(storage, &wal_id).await;
        Ok(())
    }

    /// Switches to the pending root password once it is proven to work, then removes the
    /// passwords this engine made before. `Ok(None)`: not usable yet (still pending);
    /// `Ok(Some(warnings))`: switched.
    async fn finish_root_swap(
        &self,
        storage: &dyn Storage,
        bound: Duration,
    ) -> Result<Option<Vec<String>>, LogicalError> {
        let Some(mut config) = store::get_config(storage).await? else {
            self.set_swap_pending(false);
            return Ok(Some(Vec::new()));
        };
        if config.new_client_secret.is_empty() {
            self.set_swap_pending(false);
            return Ok(Some(Vec::new()));
        }
        let new_secret = SecretString::new(config.new_client_secret.clone());
        let client = self.client(storage).await?;
        let ready = provision::wait_until_usable(
            &client,
            &config.client_id,
            &new_secret,
            Deadline::after(bound),
        )
        .await;
        if !matches!(ready, Readiness::Ready { .. }) {
            return Ok(None);
        }
        let old_key = std::mem::take(&mut config.client_secret_key_id);
        config.client_secret = std::mem::take(&mut config.new_client_secret);
        config.client_secret_key_id = std::mem::take(&mut config.new_client_secret_key_id);
        config.root_password_expiration_date = config.new_client_secret_expiration_date;
        config.new_client_secret_created = None;
        store::put_config(storage, &config).await?;
        self.reset_client().await;
        self.set_swap_pending(false);
        tracing::info!("root credential rotated");

        // Clean up with the new credential: remove passwords this engine made earlier.
        let mut warnings = Vec::new();
        let client = self.client(storage).await?;
        let deadline = Deadline::after(DEADLINE);
        let app = client
            .graph()
            .find_application_by_app_id(&config.client_id, deadline)
            .await
            .map_err(|e| LogicalError::internal(e.to_string()))?;
        if let Some(app) = app {
            let lock = self.app_lock(&app.id);
            let _guard = lock.lock().await;
            let mut foreign_old = old_key.is_empty();
            for p in &app.password_credentials {
                if p.key_id == config.client_secret_key_id {
                    continue;
                }
                let ours = p
                    .display_name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(DISPLAY_NAME_PREFIX));
                if p.key_id == old_key && !ours {
                    foreign_old = true;
                }
                if !ours {
                    continue;
                }
                if let Err(e) = client
                    .graph()
                    .remove_application_password(&app.id, &p.key_id, deadline)
                    .await
                {
                    warnings.push(format!(
                        "could not remove the old root password {}: {e}",
                        p.key_id
                    ));
                }
            }
            if foreign_old {
                warnings.push(
                    "passwords on the root application that this engine did not create were left in \
                     place; remove the one you configured the engine with once nothing else uses it"
                        .to_string(),
                );
            }
        }
        Ok(Some(warnings))
    }

    async fn periodic(self: Arc<Self>, req: Request) -> Result<(), LogicalError> {
        let state = ReplicationState(self.system_view.replication_state().await.unwrap_or(0));
        let local = self.system_view.local_mount().await.unwrap_or(false);
        if !state.writes_allowed(local) {
            return Ok(());
        }
        let storage = req.storage.as_ref();
        if self.swap_pending() {
            self.finish_root_swap(storage, PERIODIC_READY_TIMEOUT)
                .await?;
        }
        self.scheduled_rotation(storage).await
    }

    /// Rotates the root credential when its schedule (`rotation_period` or
    /// `rotation_schedule`) says so; done by the plugin itself, so it works on OpenBao too.
    async fn scheduled_rotation(&self, storage: &dyn Storage) -> Result<(), LogicalError> {
        let Some(config) = store::get_config(storage).await? else {
            return Ok(());
        };
        if config.disable_automated_rotation || !config.new_client_secret.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let last = config.last_rotation_time.unwrap_or(now);
        let due = if !config.rotation_period.is_zero() {
            now >= last
                + chrono::Duration::from_std(config.rotation_period)
                    .unwrap_or(chrono::Duration::MAX)
        } else if !config.rotation_schedule.is_empty() {
            let Ok(cron) = config.rotation_schedule.parse::<croner::Cron>() else {
                return Ok(());
            };
            match cron.find_next_occurrence(&last, false) {
                Ok(next) => {
                    let window = chrono::Duration::from_std(config.rotation_window)
                        .unwrap_or(chrono::Duration::zero());
                    now >= next && (window.is_zero() || now <= next + window)
                }
                Err(_) => false,
            }
        } else {
            false
        };
        if !due {
            return Ok(());
        }
        tracing::info!("scheduled root credential rotation");
        let mut updated = config.clone();
        updated.last_rotation_time = Some(now);
        store::put_config(storage, &updated).await?;
        if !updated.client_certificate.is_empty() && updated.client_secret.is_empty() {
            let ttl = if updated.root_password_ttl.is_zero() {
                DEFAULT_ROOT_PASSWORD_TTL
            } else {
                updated.root_password_ttl
            };
            let warnings = self
                .rotate_root_certificate(
                    storage,
                    updated,
                    ttl,
                    PERIODIC_READY_TIMEOUT,
                    Deadline::after(DEADLINE),
                )
                .await?;
            for w in warnings {
                tracing::warn!(warning = %w, "scheduled root certificate rotation");
            }
            return Ok(());
        }
        self.add_root_password(storage, updated).await?;
        self.finish_root_swap(storage, PERIODIC_READY_TIMEOUT)
            .await?;
        Ok(())
    }
}
