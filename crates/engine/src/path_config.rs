//! `config`: the engine's own Azure identity and settings.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::backend::AzureBackend;
use super::store::{self, Config};
use vault_plugin_sdk::framework::{FieldData, FieldSchema, FieldType, HandlerResult, Path};
use vault_plugin_sdk::logical::{LogicalError, Map, Operation, Request, Response};

/// Default lifetime of a root password made by `rotate-root`.
pub const DEFAULT_ROOT_PASSWORD_TTL: Duration = Duration::from_secs(4380 * 3600);

const SYNOPSIS: &str = "Configure the Azure secrets engine with credentials and settings.";
const DESCRIPTION: &str =
    "The Azure secrets engine needs the tenant and subscription it manages and \
an identity to do so: a client id and secret, a managed identity (Azure VM or Azure Arc-enabled \
server), or workload identity federation. Environment variables AZURE_TENANT_ID, \
AZURE_SUBSCRIPTION_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_ENVIRONMENT take precedence \
over the stored values. The client secret is never returned by a read.";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new("config")
        .fields(config_fields())
        .with_state(b)
        .read(
            AzureBackend::config_read,
            "Read the engine configuration.",
            "read-configuration",
        )
        .write(
            AzureBackend::config_write,
            "Configure the engine.",
            "configure",
        )
        .delete(
            AzureBackend::config_delete,
            "Delete the engine configuration.",
            "delete-configuration",
        )
        .exists(AzureBackend::config_exists)
        .forwarded(&[Operation::Create, Operation::Update, Operation::Delete])
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

/// `environment` must name a supported cloud (case-insensitive); empty is not a name.
fn check_environment(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!(
            "environment: an empty name is not a cloud; supported clouds: {}",
            azure_clients::SUPPORTED_CLOUDS.join(", ")
        ));
    }
    azure_clients::Cloud::from_name(name)
        .map(|_| ())
        .map_err(|e| format!("environment: {e}"))
}

impl AzureBackend {
    async fn config_exists(
        self: Arc<Self>,
        req: Request,
        _: FieldData,
    ) -> Result<bool, LogicalError> {
        Ok(store::get_config(req.storage.as_ref()).await?.is_some())
    }

    async fn config_read(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        let config = store::get_config(req.storage.as_ref())
            .await?
            .unwrap_or_default();
        let mut data = Map::new();
        data.insert("subscription_id".into(), json!(config.subscription_id));
        data.insert("tenant_id".into(), json!(config.tenant_id));
        data.insert("client_id".into(), json!(config.client_id));
        data.insert("environment".into(), json!(config.environment));
        data.insert(
            "root_password_ttl".into(),
            json!(config.root_password_ttl.as_secs()),
        );
        if let Some(exp) = config.root_password_expiration_date {
            data.insert(
                "root_password_expiration_date".into(),
                json!(exp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            );
        }
        data.insert(
            "identity_token_audience".into(),
            json!(config.identity_token_audience),
        );
        data.insert(
            "identity_token_ttl".into(),
            json!(config.identity_token_ttl.as_secs()),
        );
        data.insert("rotation_schedule".into(), json!(config.rotation_schedule));
        data.insert(
            "rotation_window".into(),
            json!(config.rotation_window.as_secs()),
        );
        data.insert(
            "rotation_period".into(),
            json!(config.rotation_period.as_secs()),
        );
        data.insert(
            "disable_automated_rotation".into(),
            json!(config.disable_automated_rotation),
        );
        data.insert("rotation_policy".into(), json!(config.rotation_policy));
        data.insert(
            "seamless_rotation".into(),
            json!(config.seamless_rotation.unwrap_or(true)),
        );
        data.insert(
            "rotation_grace_period".into(),
            json!(super::static_rotation::grace_for_output(
                config.rotation_grace_period
            )),
        );
        data.insert(
            "reconcile_interval".into(),
            json!(super::reconcile::interval(&config).as_secs()),
        );
        if let Ok(c) = azure_clients::ClientCertificate::from_pem(
            &config.client_certificate,
            &config.client_certificate_key,
        ) {
            data.insert(
                "client_certificate_thumbprint".into(),
                json!(c.thumbprint_hex()),
            );
        }
        Ok(Some(Response::with_data(data)))
    }

    async fn config_write(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        if data.contains("password_policy") {
            return Err(LogicalError::bad_request(
                "password_policy is not supported: Microsoft Graph generates every client secret \
                 itself, so a Vault password policy cannot apply (the Go engine removed this field in v0.18.0)",
            ));
        }
        let storage = req.storage.clone();
        let stored = store::get_config(storage.as_ref()).await?;
        let previous = stored.clone();
        let creating = stored.is_none();
        if creating && req.operation == Operation::Update {
            return Err(LogicalError::internal(
                "config not found during update operation",
            ));
        }
        let mut config = stored.unwrap_or_default();

        for (field, slot) in [
            ("subscription_id", &mut config.subscription_id),
            ("tenant_id", &mut config.tenant_id),
            ("client_id", &mut config.client_id),
            ("client_secret", &mut config.client_secret),
        ] {
            if let Some(v) = data.str_ok(field)? {
                if field != "client_secret" {
                    super::validate::check_plain_id(field, &v)?;
                }
                *slot = v;
            }
        }
        for (field, slot) in [
            ("client_certificate", &mut config.client_certificate),
            ("client_certificate_key", &mut config.client_certificate_key),
        ] {
            if let Some(v) = data.str_ok(field)? {
                *slot = v;
            }
        }
        check_client_certificate(&config)?;
        let mut env_error = None;
        if let Some(env) = data.str_ok("environment")? {
            match check_environment(&env) {
                Ok(()) => config.environment = env,
                Err(e) => env_error = Some(e),
            }
        }
        match data.duration_ok("root_password_ttl")? {
            Some(ttl) => config.root_password_ttl = ttl,
            None if creating => config.root_password_ttl = DEFAULT_ROOT_PASSWORD_TTL,
            None => {}
        }
        if let Some(aud) = data.str_ok("identity_token_audience")? {
            config.identity_token_audience = aud;
        }
        if let Some(ttl) = data.duration_ok("identity_token_ttl")? {
            config.identity_token_ttl = ttl;
        }
        validate_rotation(&mut config, &data)?;
        if let Some(seamless) = data.bool_ok("seamless_rotation")? {
            config.seamless_rotation = Some(seamless);
        }
        if let Some(raw) = data.str_ok("rotation_grace_period")? {
            config.rotation_grace_period =
                crate::static_store::parse_grace(&raw).map_err(LogicalError::BadRequest)?;
        }
        if let Some(interval) = data.duration_ok("reconcile_interval")? {
            config.reconcile_interval = Some(interval);
        }

        if !config.identity_token_audience.is_empty() && !config.client_secret.is_empty() {
            return Err(LogicalError::bad_request(
                "only one of 'client_secret' or 'identity_token_audience' can be set",
            ));
        }
        if !config.identity_token_audience.is_empty() {
            self.check_identity_token(&config).await?;
        }
        if let Some(e) = env_error {
            return Err(LogicalError::BadRequest(e));
        }

        super::pool::config_changing(&self, &storage, previous.as_ref(), &config).await;
        store::put_config(storage.as_ref(), &config).await?;
        self.reset_client().await;

        if data.contains("use_microsoft_graph_api") {
            let mut resp = Response::default();
            resp.add_warning(
                "use_microsoft_graph_api is retired and ignored: Microsoft Graph is always used",
            );
            return Ok(Some(resp));
        }
        Ok(None)
    }

    async fn check_identity_token(&self, config: &Config) -> Result<(), LogicalError> {
        let ttl = if config.identity_token_ttl.is_zero() {
            Duration::from_secs(3600)
        } else {
            config.identity_token_ttl
        };
        match self
            .system_view
            .generate_identity_token(&config.identity_token_audience, ttl)
            .await
        {
            Ok(_) => Ok(()),
            Err(vault_plugin_sdk::logical::SystemViewError::Unsupported(_)) => Err(LogicalError::bad_request(
                "plugin workload identity not supported by this server: identity_token_audience needs \
                 a host that issues plugin identity tokens (Vault Enterprise); use client_secret or a \
                 managed identity instead",
            )),
            Err(e) => Err(LogicalError::internal(e.to_string())),
        }
    }

    async fn config_delete(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        req.storage.delete(store::CONFIG_KEY).await?;
        self.reset_client().await;
        Ok(None)
    }
}

/// Checks and applies the rotation fields (`rotation_schedule`, `rotation_window`,
/// `rotation_period`, `disable_automated_rotation`, `rotation_policy`).
fn validate_rotation(config: &mut Config, data: &FieldData) -> Result<(), LogicalError> {
    let schedule = data.str_ok("rotation_schedule")?;
    let window = data.duration_ok("rotation_window")?;
    let period = data.duration_ok("rotation_period")?;
    let new_schedule = schedule
        .clone()
        .unwrap_or_else(|| config.rotation_schedule.clone());
    let new_period = period.unwrap_or(config.rotation_period);
    let new_window = window.unwrap_or(config.rotation_window);
    if !new_schedule.is_empty() && !new_period.is_zero() {
        return Err(LogicalError::bad_request(
            "mutually exclusive fields rotation_schedule and rotation_period were both specified; only one of them can be provided",
        ));
    }
    if let Some(s) = schedule.as_deref().filter(|s| !s.is_empty()) {
        s.parse::<croner::Cron>().map_err(|e| {
            LogicalError::bad_request(format!("failed to parse provided rotation_schedule: {e}"))
        })?;
    }
    if !new_window.is_zero() && !new_period.is_zero() {
        return Err(LogicalError::bad_request(
            "rotation_window does not apply to period",
        ));
    }
    if window.is_some_and(|w| !w.is_zero()) && schedule.as_deref().unwrap_or("").is_empty() {
        return Err(LogicalError::bad_request(
            "cannot use rotation_window without rotation_schedule",
        ));
    }
    config.rotation_schedule = new_schedule;
    config.rotation_period = new_period;
    config.rotation_window = new_window;
    if let Some(d) = data.bool_ok("disable_automated_rotation")? {
        config.disable_automated_rotation = d;
    }
    if let Some(p) = data.str_ok("rotation_policy")? {
        config.rotation_policy = p;
    }
    // Scheduled rotation counts from when it was configured.
    if schedule.is_some() || period.is_some() {
        config.last_rotation_time = Some(chrono::Utc::now());
    }
    Ok(())
}

/// The path's fields.
fn config_fields() -> Vec<(&'static str, FieldSchema)> {
    vec![
        (
            "subscription_id",
            FieldSchema::new(
                FieldType::String,
                "The subscription id of the Azure account.",
            ),
        ),
        (
            "tenant_id",
            FieldSchema::new(
                FieldType::String,
                "The tenant id of the Azure Entra ID directory.",
            ),
        ),
        (
            "client_id",
            FieldSchema::new(
                FieldType::String,
                "The application (client) id of the engine's own identity.",
            ),
        ),
        (
            "client_secret",
            FieldSchema::new(
                FieldType::String,
                "The client secret of the engine's own identity. Never \
                 returned.",
            )
            .sensitive(),
        ),
        (
            "client_certificate",
            FieldSchema::new(
                FieldType::String,
                "PEM certificate of the engine's own identity: the engine signs \
                 in with client assertions signed by its key instead of a secret.",
            ),
        ),
        (
            "client_certificate_key",
            FieldSchema::new(
                FieldType::String,
                "PEM private key (PKCS#8 or PKCS#1, unencrypted, RSA 2048 bits \
                 or more) of client_certificate. Never returned.",
            )
            .sensitive(),
        ),
        (
            "environment",
            FieldSchema::new(
                FieldType::String,
                "The Azure cloud: AzurePublicCloud (default), \
                 AzureUSGovernmentCloud or AzureChinaCloud.",
            ),
        ),
        (
            "root_password_ttl",
            FieldSchema::new(
                FieldType::DurationSecond,
                "Lifetime of root passwords made by rotate-root. Default \
                 4380h (about six months).",
            )
            .default_value(15_768_000),
        ),
        (
            "identity_token_audience",
            FieldSchema::new(
                FieldType::String,
                "Audience of the plugin identity token, for workload identity \
                 federation.",
            ),
        ),
        (
            "identity_token_ttl",
            FieldSchema::new(
                FieldType::DurationSecond,
                "Lifetime of plugin identity tokens.",
            )
            .default_value(3600),
        ),
        (
            "rotation_schedule",
            FieldSchema::new(
                FieldType::String,
                "A cron schedule (five fields) on which the root credential \
                 is rotated.",
            ),
        ),
        (
            "rotation_window",
            FieldSchema::new(
                FieldType::DurationSecond,
                "How long after the scheduled time a missed rotation may \
                 still run.",
            ),
        ),
        (
            "rotation_period",
            FieldSchema::new(
                FieldType::DurationSecond,
                "Rotate the root credential every this long.",
            ),
        ),
        (
            "disable_automated_rotation",
            FieldSchema::new(FieldType::Bool, "Turn scheduled root rotation off."),
        ),
        (
            "rotation_policy",
            FieldSchema::new(
                FieldType::String,
                "Name of a rotation policy (informational).",
            ),
        ),
        (
            "seamless_rotation",
            FieldSchema::new(
                FieldType::Bool,
                "Default of static roles' seamless_rotation: keep a replaced \
                 secret valid for rotation_grace_period. Default true.",
            ),
        ),
        (
            "rotation_grace_period",
            FieldSchema::new(
                FieldType::String,
                "Default of static roles' rotation_grace_period: seconds or a \
                 duration string; -1 turns the overlap off, 0 restores the \
                 default (5m).",
            ),
        ),
        (
            "reconcile_interval",
            FieldSchema::new(
                FieldType::DurationSecond,
                "How often the reconciler looks for Azure objects of this mount that no \
                 credential accounts for and deletes them (seconds or a duration string; \
                 0 turns the periodic pass off). Default 1h.",
            ),
        ),
        (
            "use_microsoft_graph_api",
            FieldSchema::new(
                FieldType::Bool,
                "Retired: Microsoft Graph is always used. Accepted and \
                 ignored.",
            ),
        ),
        (
            "password_policy",
            FieldSchema::new(
                FieldType::String,
                "Retired: Microsoft Graph generates every secret. Not \
                 accepted.",
            ),
        ),
    ]
}

/// `client_certificate` and `client_certificate_key` go together, must belong to each other
/// and exclude `client_secret`.
fn check_client_certificate(config: &Config) -> Result<(), LogicalError> {
    let (cert, key) = (&config.client_certificate, &config.client_certificate_key);
    match (cert.trim().is_empty(), key.trim().is_empty()) {
        (true, true) => return Ok(()),
        (false, true) => {
            return Err(LogicalError::bad_request(
                "client_certificate_key is required with client_certificate",
            ))
        }
        (true, false) => {
            return Err(LogicalError::bad_request(
                "client_certificate is required with client_certificate_key",
            ))
        }
        (false, false) => {}
    }
    if !config.client_secret.is_empty() {
        return Err(LogicalError::bad_request(
            "only one of 'client_secret' or 'client_certificate' can be set",
        ));
    }
    azure_clients::ClientCertificate::from_pem(cert, key)
        .map(|_| ())
        .map_err(|e| LogicalError::bad_request(e.to_string()))
}
