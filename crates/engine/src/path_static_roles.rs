//! `static-roles/<name>`, `static-roles/` and `static-roles/<name>/import`: roles that hand
//! out the secret of an existing application, rotated by the engine (Vault Enterprise's API).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::backend::AzureBackend;
use super::certificate::CredentialType;
use super::path_roles::NAME_PATTERN;
use super::static_rotation::{self, grace_for_output, When};
use super::static_store::{
    self, StaticRole, StaticSecret, DEFAULT_ROTATION_PERIOD, MIN_ROTATION_PERIOD,
    STATIC_ROLES_PREFIX,
};
use super::store;
use azure_clients::{Application, AzureClient, Deadline, SecretString};
use vault_plugin_sdk::framework::{
    handler, FieldData, FieldSchema, FieldType, HandlerResult, OperationHandler, Path,
};
use vault_plugin_sdk::logical::{LogicalError, Map, Operation, Request, Response, Storage};

const AZURE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an imported secret may take to prove it obtains a token.
const IMPORT_PROOF_TIMEOUT: Duration = Duration::from_secs(10);

const SYNOPSIS: &str =
    "Manage static roles: the secret of an existing application, rotated by the engine.";
const DESCRIPTION: &str = "A static role hands out one client secret of an existing application \
(application_object_id) through static-creds/<name> and rotates it every rotation_period (alias ttl): \
a new password is added and proven to obtain a token before it becomes current. With \
seamless_rotation the replaced secret keeps working for rotation_grace_period, otherwise it is \
removed as soon as the new one works; with keep_previous_until_expiry it is never removed before \
its own end date. Passwords end at rotation_period plus the grace period. Deleting a role removes \
from Azure only the passwords the engine made for it. With credential_type=certificate the role \
hands out a certificate and its private key instead: each rotation makes a new RSA key pair and \
self-signed certificate, registers it as a key credential on the application (its other \
credentials untouched) and proves it obtains a token with a client assertion; the private key is \
kept in the seal-wrapped role record so that every static-creds read returns the same one, and is \
never returned by a role read.";
const IMPORT_SYNOPSIS: &str = "Create a static role from an existing password of the application.";
const IMPORT_DESCRIPTION: &str = "Adopts the password secret_id of application_object_id. With \
client_secret, the secret must obtain a token before the role is stored; it is never returned by a \
role read. Unless skip_import_rotation is true the engine rotates it at once. Use \
static-roles/<name> for later updates.";

fn common_fields(path: Path) -> Path {
    path.field("name", FieldSchema::new(FieldType::LowerCaseString, "Name of the static role (lower-cased).").required())
        .field("application_object_id", FieldSchema::new(FieldType::String, "Object id of the existing application whose secret the role manages."))
        .field("rotation_period", FieldSchema::new(FieldType::DurationSecond, "How often the secret is rotated. Default 17520h (two years); at least 10s."))
        .field("ttl", FieldSchema::new(FieldType::DurationSecond, "Deprecated alias of rotation_period."))
        .field("metadata", FieldSchema::new(FieldType::KvPairs, "Metadata returned with the credentials: a map, key=value pairs or a JSON object."))
        .field("seamless_rotation", FieldSchema::new(FieldType::Bool, "Keep the replaced secret valid for rotation_grace_period. Default: the config's seamless_rotation (true)."))
        .field("rotation_grace_period", FieldSchema::new(FieldType::String, "How long a replaced secret keeps working (seconds or a duration string; -1: no overlap; 0: the default, the config's or 5m). At most half of rotation_period."))
        .field("keep_previous_until_expiry", FieldSchema::new(FieldType::Bool, "Never remove a replaced secret: it expires at its own end date (rotation_period plus the grace period after it was made)."))
        .field("skip_import_rotation", FieldSchema::new(FieldType::Bool, "Import: do not rotate the imported secret at once. On static-roles/<name>: deprecated alias of defer_initial_creds."))
        .field("secret_id", FieldSchema::new(FieldType::String, "Key id of the application password to import."))
        .field("client_secret", FieldSchema::new(FieldType::String, "The value of the imported password. Never returned.").sensitive())
        .field("credential_type", FieldSchema::new(FieldType::String, "password (default) or certificate: what the role hands out. Fixed when the role is created; import takes passwords only."))
}

pub fn path(b: &Arc<AzureBackend>) -> Path {
    common_fields(Path::new(format!("static-roles/(?P<name>{NAME_PATTERN})")))
        .field(
            "defer_initial_creds",
            FieldSchema::new(
                FieldType::Bool,
                "Do not make a secret when the role is created: the first \
                 static-creds read makes it.",
            ),
        )
        .field(
            "expiration",
            FieldSchema::new(
                FieldType::String,
                "Deprecated (Vault 1.21 import): ignored, the end date is read \
                 from Azure.",
            ),
        )
        .with_state(b)
        .read(
            AzureBackend::static_role_read,
            "Read a static role.",
            "read-static-role",
        )
        .write(
            AzureBackend::static_role_write,
            "Create or update a static role.",
            "write-static-role",
        )
        .delete(
            AzureBackend::static_role_delete,
            "Delete a static role.",
            "delete-static-role",
        )
        .exists(AzureBackend::static_role_exists)
        .forwarded(&[Operation::Create, Operation::Update, Operation::Delete])
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

pub fn list_path(_b: &Arc<AzureBackend>) -> Path {
    Path::new("static-roles/?")
        .operation(
            Operation::List,
            OperationHandler::new(
                handler(|req, _| async move {
                    Ok(Some(Response::list(
                        static_store::list(req.storage.as_ref()).await?,
                    )))
                }),
                "List the static roles.",
                "list-static-roles",
            ),
        )
        .help(
            "List static roles.",
            "List the names of the static roles of this mount.",
        )
}

pub fn import_path(b: &Arc<AzureBackend>) -> Path {
    common_fields(Path::new(format!(
        "static-roles/(?P<name>{NAME_PATTERN})/import"
    )))
    .with_state(b)
    .write(
        AzureBackend::static_role_import,
        "Create a static role by importing a password.",
        "import-static-role",
    )
    .forwarded(&[Operation::Create, Operation::Update])
    .help(IMPORT_SYNOPSIS, IMPORT_DESCRIPTION)
    .into_path()
}

fn rfc3339(t: Option<chrono::DateTime<Utc>>) -> serde_json::Value {
    t.map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(serde_json::Value::Null)
}

/// The response data of a static role (never the secret).
fn static_role_data(role: &StaticRole, config: &store::Config) -> Map {
    let policy = static_rotation::policy(config, role);
    let mut data = Map::new();
    data.insert(
        "application_object_id".into(),
        json!(role.application_object_id),
    );
    data.insert("application_id".into(), json!(role.application_id));
    data.insert("credential_type".into(), json!(role.credential_type_name()));
    data.insert(
        "rotation_period".into(),
        json!(role.rotation_period.as_secs()),
    );
    data.insert("ttl".into(), json!(role.rotation_period.as_secs()));
    data.insert("metadata".into(), json!(role.metadata));
    data.insert(
        "defer_initial_creds".into(),
        json!(role.defer_initial_creds),
    );
    data.insert("seamless_rotation".into(), json!(policy.seamless));
    data.insert(
        "rotation_grace_period".into(),
        json!(grace_for_output(Some(policy.grace))),
    );
    data.insert(
        "keep_previous_until_expiry".into(),
        json!(role.keep_previous_until_expiry),
    );
    let current = role.current.as_ref();
    data.insert("secret_id".into(), json!(current.map(|c| c.key_id.clone())));
    if role.is_certificate() {
        data.insert(
            "thumbprint".into(),
            json!(current.map(|c| c.thumbprint.clone())),
        );
    }
    data.insert(
        "expiration".into(),
        rfc3339(current.and_then(|c| c.expiration)),
    );
    data.insert("last_rotation_time".into(), rfc3339(role.last_rotation));
    data.insert("next_rotation_time".into(), rfc3339(role.next_rotation));
    data.insert(
        "previous_secret_ids".into(),
        json!(role
            .retired
            .iter()
            .map(|r| r.key_id.clone())
            .collect::<Vec<_>>()),
    );
    data
}

/// `rotation_period` or its alias `ttl`; `None` when neither was given.
fn period_field(data: &FieldData) -> Result<Option<Duration>, LogicalError> {
    let period = data.duration_ok("rotation_period")?;
    let ttl = data.duration_ok("ttl")?;
    let chosen = match (period, ttl) {
        (Some(p), Some(t)) if p != t => return Err(LogicalError::bad_request(
            "rotation_period and ttl are the same setting (ttl is its deprecated name); give one",
        )),
        (p, t) => p.or(t),
    };
    match chosen {
        None => Ok(None),
        Some(d) if d.is_zero() => Ok(Some(DEFAULT_ROTATION_PERIOD)),
        Some(d) if d < MIN_ROTATION_PERIOD => Err(LogicalError::bad_request(format!(
            "rotation_period: {}s is too short; the minimum is {}s",
            d.as_secs(),
            MIN_ROTATION_PERIOD.as_secs()
        ))),
        Some(d) => Ok(Some(d)),
    }
}

/// Applies the fields shared by create, update and import.
fn apply_common(role: &mut StaticRole, data: &FieldData) -> Result<(), LogicalError> {
    if let Some(p) = period_field(data)? {
        role.rotation_period = p;
    }
    if role.rotation_period.is_zero() {
        role.rotation_period = DEFAULT_ROTATION_PERIOD;
    }
    if let Some(m) = data.map_ok("metadata")? {
        role.metadata = m
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect::<BTreeMap<_, _>>();
    }
    if let Some(s) = data.bool_ok("seamless_rotation")? {
        role.seamless_rotation = Some(s);
    }
    if let Some(raw) = data.str_ok("rotation_grace_period")? {
        role.rotation_grace_period =
            static_store::parse_grace(&raw).map_err(LogicalError::BadRequest)?;
    }
    if let Some(grace) = role.rotation_grace_period {
        if grace > role.rotation_period / 2 {
            return Err(LogicalError::bad_request(format!(
                "rotation_grace_period: {}s is more than half of rotation_period ({}s)",
                grace.as_secs(),
                role.rotation_period.as_secs()
            )));
        }
    }
    if let Some(k) = data.bool_ok("keep_previous_until_expiry")? {
        role.keep_previous_until_expiry = k;
    }
    Ok(())
}

/// `credential_type` as given: `Some(true)` for certificates, `None` when not given.
fn certificate_field(data: &FieldData) -> Result<Option<bool>, LogicalError> {
    match data.str_ok("credential_type")? {
        None => Ok(None),
        Some(raw) => Ok(Some(
            CredentialType::parse(&raw)? == CredentialType::Certificate,
        )),
    }
}

fn role_lock_key(name: &str) -> String {
    format!("{STATIC_ROLES_PREFIX}{name}")
}

impl AzureBackend {
    async fn static_role_exists(
        self: Arc<Self>,
        req: Request,
        data: FieldData,
    ) -> Result<bool, LogicalError> {
        Ok(static_store::get(req.storage.as_ref(), &data.str("name")?)
            .await?
            .is_some())
    }

    async fn static_role_read(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let storage = req.storage.as_ref();
        let Some(role) = static_store::get(storage, &data.str("name")?).await? else {
            return Ok(None);
        };
        let config = store::get_config(storage).await?.unwrap_or_default();
        Ok(Some(Response::with_data(static_role_data(&role, &config))))
    }

    /// Loads the application and checks a static role may manage it.
    async fn static_role_app(
        &self,
        client: &AzureClient,
        object_id: &str,
    ) -> Result<Application, LogicalError> {
        if object_id.trim().is_empty() {
            return Err(LogicalError::bad_request(
                "missing required field 'application_object_id'",
            ));
        }
        // The id goes into a Graph URL: anything but a GUID is refused before any call.
        super::validate::check_object_id("application_object_id", object_id)?;
        let app = client
            .graph()
            .get_application(object_id, Deadline::after(AZURE_TIMEOUT))
            .await
            .map_err(|e| {
                if e.is_not_found() || e.status() == Some(400) {
                    LogicalError::bad_request(format!(
                        "application_object_id '{object_id}': no application has this object id"
                    ))
                } else {
                    LogicalError::internal(format!("error loading application {object_id}: {e}"))
                }
            })?;
        let root_client_id = &client.settings().client_id;
        if !root_client_id.is_empty() && app.app_id.eq_ignore_ascii_case(root_client_id) {
            return Err(LogicalError::bad_request(format!(
                "application_object_id '{object_id}' is the application this engine itself signs in with; \
                 a static role may not hand out or rotate the engine's own credentials"
            )));
        }
        Ok(app)
    }

    async fn static_role_write(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let storage = req.storage.clone();
        let lock = self.app_lock(&role_lock_key(&name));
        let _guard = lock.lock().await;
        let stored = static_store::get(storage.as_ref(), &name).await?;
        let Some(mut role) = stored else {
            drop(_guard);
            if data.contains("secret_id") || data.contains("client_secret") {
                // Vault 1.21's import through the create endpoint.
                let skip = data.bool_ok("skip_import_rotation")?.unwrap_or(false)
                    || data.bool_ok("defer_initial_creds")?.unwrap_or(false);
                let mut resp = self.import(&req, &data, skip).await?.unwrap_or_default();
                resp.add_warning(
                    "importing through static-roles/<name> is deprecated: use static-roles/<name>/import",
                );
                return Ok(Some(resp));
            }
            return self.static_role_create(req, data).await;
        };

        // Update.
        if let Some(id) = data.str_ok("application_object_id")? {
            if !id.eq_ignore_ascii_case(&role.application_object_id) {
                return Err(LogicalError::bad_request(
                    "application_object_id cannot be changed: delete the static role and create it again",
                ));
            }
        }
        if let Some(certificate) = certificate_field(&data)? {
            if certificate != role.is_certificate() {
                return Err(LogicalError::bad_request(format!(
                    "credential_type cannot be changed (the role hands out {}s): delete the static role and create it again",
                    role.credential_type_name()
                )));
            }
        }
        if data.contains("secret_id") || data.contains("client_secret") {
            return Err(LogicalError::bad_request(
                "secret_id and client_secret can only be given when a static role is created: \
                 use static-roles/<name>/import, or rotate-role/<name> for a new secret",
            ));
        }
        let old_period = role.rotation_period;
        apply_common(&mut role, &data)?;
        if role.rotation_period != old_period {
            if let Some(last) = role.last_rotation {
                role.next_rotation = Some(
                    last + chrono::Duration::from_std(role.rotation_period)
                        .unwrap_or(chrono::Duration::MAX),
                );
            }
        }
        static_store::put(storage.as_ref(), &name, &role).await?;
        self.arm_timer(&storage, &name, &role);
        Ok(None)
    }

    async fn static_role_create(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let storage = req.storage.clone();
        let certificate = certificate_field(&data)?.unwrap_or(false);
        let client = self.client(storage.as_ref()).await?;
        let app = self
            .static_role_app(&client, &data.str("application_object_id")?)
            .await?;
        let mut role = StaticRole {
            application_object_id: app.id.clone(),
            application_id: app.app_id.clone(),
            credential_type: if certificate {
                static_store::CERTIFICATE.to_string()
            } else {
                String::new()
            },
            defer_initial_creds: data.bool_ok("defer_initial_creds")?.unwrap_or(false)
                || data.bool_ok("skip_import_rotation")?.unwrap_or(false),
            ..StaticRole::default()
        };
        apply_common(&mut role, &data)?;

        let lock = self.app_lock(&role_lock_key(&name));
        let _guard = lock.lock().await;
        if static_store::get(storage.as_ref(), &name).await?.is_some() {
            return Err(LogicalError::bad_request(format!(
                "static role '{name}' was created meanwhile; write again to update it"
            )));
        }
        static_store::put(storage.as_ref(), &name, &role).await?;
        if role.defer_initial_creds {
            return Ok(None);
        }
        match self.rotate_static_locked(&storage, &name, role).await {
            Ok(r) => Ok(warnings_response(r.warnings)),
            Err(e) => {
                // Nothing half-done: no role without its first secret.
                static_store::delete(storage.as_ref(), &name).await?;
                Err(e)
            }
        }
    }

    async fn static_role_import(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let skip = data.bool_ok("skip_import_rotation")?.unwrap_or(false);
        self.import(&req, &data, skip).await
    }

    async fn import(
        self: &Arc<Self>,
        req: &Request,
        data: &FieldData,
        skip_rotation: bool,
    ) -> HandlerResult {
        let name = data.str("name")?;
        let storage = req.storage.clone();
        if certificate_field(data)? == Some(true) {
            return Err(LogicalError::bad_request(
                "credential_type: import adopts an existing password only; to hand out certificates, \
                 create the role with static-roles/<name> and credential_type=certificate",
            ));
        }
        let secret_id = data.str("secret_id")?.trim().to_string();
        if secret_id.is_empty() {
            return Err(LogicalError::bad_request(
                "missing required field 'secret_id'",
            ));
        }
        if static_store::get(storage.as_ref(), &name).await?.is_some() {
            return Err(LogicalError::bad_request(format!(
                "static role '{name}' already exists: import creates a role; update it through static-roles/{name}"
            )));
        }
        let client = self.client(storage.as_ref()).await?;
        let app = self
            .static_role_app(&client, &data.str("application_object_id")?)
            .await?;
        let password = app
            .password_credentials
            .iter()
            .find(|p| p.key_id.eq_ignore_ascii_case(&secret_id))
            .ok_or_else(|| {
                LogicalError::bad_request(format!(
                    "secret_id '{secret_id}' is not a password of application {}",
                    app.id
                ))
            })?;
        let client_secret = data.str("client_secret")?;
        if !client_secret.is_empty() {
            client
                .wait_for_client_secret(
                    &app.app_id,
                    &SecretString::new(client_secret.clone()),
                    Duration::from_millis(500),
                    Deadline::after(IMPORT_PROOF_TIMEOUT),
                )
                .await
                .map_err(|e| {
                    LogicalError::bad_request(format!(
                        "client_secret does not obtain a token for application {} (secret_id '{secret_id}'): {}",
                        app.app_id,
                        e.message()
                    ))
                })?;
        }
        let mut role = StaticRole {
            application_object_id: app.id.clone(),
            application_id: app.app_id.clone(),
            ..StaticRole::default()
        };
        apply_common(&mut role, data)?;
        let now = Utc::now();
        role.current = Some(StaticSecret {
            key_id: password.key_id.clone(),
            client_secret: client_secret.clone(),
            expiration: password.end_date_time,
            created: password.start_date_time,
            engine_made: false,
            ..StaticSecret::default()
        });
        if !client_secret.is_empty() {
            // Rotate by the period, or before the imported secret ends, whichever is first.
            let policy = static_rotation::policy(
                &store::get_config(storage.as_ref())
                    .await?
                    .unwrap_or_default(),
                &role,
            );
            let by_period = now
                + chrono::Duration::from_std(role.rotation_period).unwrap_or(chrono::Duration::MAX);
            let margin = chrono::Duration::from_std(policy.grace.max(static_store::MIN_END_MARGIN))
                .unwrap_or(chrono::Duration::zero());
            role.next_rotation = Some(match password.end_date_time {
                Some(end) if end - margin < by_period => (end - margin).max(now),
                _ => by_period,
            });
            role.last_rotation = Some(now);
        }

        let lock = self.app_lock(&role_lock_key(&name));
        let _guard = lock.lock().await;
        if static_store::get(storage.as_ref(), &name).await?.is_some() {
            return Err(LogicalError::bad_request(format!(
                "static role '{name}' was created meanwhile"
            )));
        }
        static_store::put(storage.as_ref(), &name, &role).await?;
        if skip_rotation {
            self.arm_timer(&storage, &name, &role);
            return Ok(None);
        }
        match self.rotate_static_locked(&storage, &name, role).await {
            Ok(r) => Ok(warnings_response(r.warnings)),
            Err(e) => {
                static_store::delete(storage.as_ref(), &name).await?;
                Err(e)
            }
        }
    }

    async fn static_role_delete(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let storage = req.storage.clone();
        let lock = self.app_lock(&role_lock_key(&name));
        let _guard = lock.lock().await;
        let Some(role) = static_store::get(storage.as_ref(), &name).await? else {
            return Ok(None);
        };
        let (removed, left) = self.remove_role_passwords(storage.as_ref(), &role).await?;
        static_store::delete(storage.as_ref(), &name).await?;
        let mut data = Map::new();
        data.insert("removed_secret_ids".into(), json!(removed));
        data.insert("kept_secret_ids".into(), json!(left));
        let mut resp = Response::with_data(data);
        let (kind, others) = if role.is_certificate() {
            ("certificate", "certificates and passwords")
        } else {
            ("password", "passwords")
        };
        resp.add_warning(format!(
            "removed {} {kind}(s) this engine made for the role from application {}; \
             other {others} of the application were left in place{}",
            removed.len(),
            role.application_object_id,
            if left.is_empty() {
                String::new()
            } else {
                format!(" (including imported ones: {})", left.join(", "))
            }
        ));
        Ok(Some(resp))
    }

    /// Removes the passwords the engine made for `role`; returns (removed, left) key ids.
    /// A failure leaves the role in place so that a retry finishes the job.
    async fn remove_role_passwords(
        &self,
        storage: &dyn Storage,
        role: &StaticRole,
    ) -> Result<(Vec<String>, Vec<String>), LogicalError> {
        let made: Vec<String> = role
            .current
            .iter()
            .filter(|c| c.engine_made)
            .map(|c| c.key_id.clone())
            .chain(
                role.retired
                    .iter()
                    .filter(|r| r.engine_made)
                    .map(|r| r.key_id.clone()),
            )
            .collect();
        let left: Vec<String> = role
            .key_ids()
            .into_iter()
            .filter(|k| !made.contains(k))
            .collect();
        if made.is_empty() {
            return Ok((made, left));
        }
        let client = self.client(storage).await?;
        let deadline = Deadline::after(AZURE_TIMEOUT);
        let lock = static_rotation::app_lock(&role.application_object_id);
        let _app_guard = lock.lock().await;
        for key in &made {
            static_rotation::remove_credential(
                &client,
                &role.application_object_id,
                key,
                role.is_certificate(),
                deadline,
            )
            .await
            .map_err(|e| {
                LogicalError::internal(format!(
                    "error removing {} {key} from application {}: {e}; the static role was kept, delete it again",
                    role.credential_type_name(),
                    role.application_object_id
                ))
            })?;
        }
        Ok((made, left))
    }
}

/// `None` without warnings, else a response carrying them.
pub(crate) fn warnings_response(warnings: Vec<String>) -> Option<Response> {
    if warnings.is_empty() {
        return None;
    }
    Some(Response {
        warnings,
        ..Response::default()
    })
}

/// Used by `static-creds` for a deferred role's first secret.
pub(crate) async fn first_secret(
    b: &Arc<AzureBackend>,
    storage: &Arc<dyn Storage>,
    name: &str,
) -> Result<StaticRole, LogicalError> {
    Ok(b.rotate_static(storage, name, When::IfNoSecret).await?.role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Tree;
    use vault_plugin_sdk::framework::object;

    fn fields(raw: serde_json::Value) -> FieldData {
        let path = common_fields(Path::new("x"));
        FieldData::new(object(raw), Arc::new(path.fields))
    }

    #[test]
    fn period_aliases_and_limits() {
        assert_eq!(period_field(&fields(json!({}))).unwrap(), None);
        assert_eq!(
            period_field(&fields(json!({"ttl": "8760h"}))).unwrap(),
            Some(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(
            period_field(&fields(json!({"rotation_period": 60, "ttl": "1m"}))).unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            period_field(&fields(json!({"rotation_period": 0}))).unwrap(),
            Some(DEFAULT_ROTATION_PERIOD)
        );
        let e = period_field(&fields(json!({"rotation_period": 60, "ttl": 70}))).unwrap_err();
        assert!(matches!(e, LogicalError::BadRequest(m) if m.contains("ttl")));
        let e = period_field(&fields(json!({"rotation_period": 5}))).unwrap_err();
        assert!(matches!(e, LogicalError::BadRequest(m) if m.starts_with("rotation_period: ")));
    }

    #[test]
    fn common_fields_apply() {
        let mut role = StaticRole::default();
        apply_common(
            &mut role,
            &fields(
                json!({"metadata": "team=eng,env=dev", "rotation_grace_period": "-1",
                           "seamless_rotation": false, "keep_previous_until_expiry": true}),
            ),
        )
        .unwrap();
        assert_eq!(role.rotation_period, DEFAULT_ROTATION_PERIOD);
        assert_eq!(
            role.metadata,
            Tree::from([
                ("env".to_string(), "dev".to_string()),
                ("team".to_string(), "eng".to_string())
            ])
        );
        assert_eq!(role.rotation_grace_period, Some(Duration::ZERO));
        assert_eq!(role.seamless_rotation, Some(false));
        assert!(role.keep_previous_until_expiry);

        let mut role = StaticRole::default();
        let e = apply_common(
            &mut role,
            &fields(json!({"rotation_period": 60, "rotation_grace_period": 31})),
        )
        .unwrap_err();
        assert!(
            matches!(e, LogicalError::BadRequest(m) if m.starts_with("rotation_grace_period: 31s"))
        );
    }

    #[test]
    fn read_never_shows_the_secret() {
        let role = StaticRole {
            application_object_id: "obj".into(),
            rotation_period: Duration::from_secs(3600),
            current: Some(StaticSecret {
                key_id: "key".into(),
                client_secret: "s3cr3t-value".into(),
                ..StaticSecret::default()
            }),
            ..StaticRole::default()
        };
        let data = static_role_data(&role, &store::Config::default());
        let text = serde_json::Value::Object(data.clone()).to_string();
        assert!(!text.contains("s3cr3t-value"));
        assert_eq!(data["ttl"], 3600);
        assert_eq!(data["rotation_period"], 3600);
        assert_eq!(data["secret_id"], "key");
        assert_eq!(data["seamless_rotation"], true);
        assert_eq!(data["rotation_grace_period"], 300);
        assert_eq!(data["credential_type"], "password");

        let role = StaticRole {
            credential_type: static_store::CERTIFICATE.into(),
            current: Some(StaticSecret {
                key_id: "key".into(),
                certificate: "-----BEGIN CERTIFICATE-----".into(),
                private_key: "-----BEGIN PRIVATE KEY-----secret".into(),
                thumbprint: "AB12".into(),
                ..StaticSecret::default()
            }),
            ..StaticRole::default()
        };
        let data = static_role_data(&role, &store::Config::default());
        let text = serde_json::Value::Object(data.clone()).to_string();
        assert!(!text.contains("PRIVATE KEY"));
        assert_eq!(data["credential_type"], "certificate");
        assert_eq!(data["thumbprint"], "AB12");
    }

    #[test]
    fn credential_type_field() {
        assert_eq!(certificate_field(&fields(json!({}))).unwrap(), None);
        assert_eq!(
            certificate_field(&fields(json!({"credential_type": "certificate"}))).unwrap(),
            Some(true)
        );
        assert_eq!(
            certificate_field(&fields(json!({"credential_type": "password"}))).unwrap(),
            Some(false)
        );
        let e = certificate_field(&fields(json!({"credential_type": "pfx"}))).unwrap_err();
        assert!(matches!(e, LogicalError::BadRequest(m) if m.starts_with("credential_type: ")));
    }
}
