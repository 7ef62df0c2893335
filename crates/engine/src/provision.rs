//! Creating and removing the Azure objects behind a credential, without orphans.
//!
//! Every object is covered by a write-ahead-log entry written *before* it is created (the
//! application by its unique display name, role assignments by their pre-chosen names), so a
//! crash at any point leaves something the rollback can find. After the service principal
//! exists, its password, every role assignment and every group membership go out together:
//! about three Azure round trips whatever the number of roles and groups. A failure undoes
//! what was made before the error is returned.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::json;

use super::inventory;
use super::store::{AzureGroup, AzureRole};
use azure_clients::{
    AzureClient, AzureError, ClientCertificate, Deadline, DeleteOutcome, NewApplication,
    NewKeyCredential, NewPassword, SecretString,
};
use std::sync::Arc;
use vault_plugin_sdk::framework::wal;
use vault_plugin_sdk::logical::{LogicalError, Storage, StorageError};

pub const WAL_APP_CREATE: &str = "appCreate";
pub const WAL_ROLE_ASSIGN: &str = "appRoleAssign";
pub const WAL_ADD_PASSWORD: &str = "addPassword";

/// Display name of passwords the engine adds (the marker of engine-made passwords).
pub const PASSWORD_DISPLAY_NAME: &str = "vault-plugin-secrets-azure";

/// How long a WAL entry's objects are worth chasing.
const WAL_EXPIRATION: chrono::Duration = chrono::Duration::hours(24);

/// How long a 404 on an object created moments ago is retried before it counts as gone
/// (Entra ID gives no read-your-writes guarantee).
const FRESH_OBJECT_SETTLE: Duration = Duration::from_secs(10);

/// The undo of a failed issuance keeps going, through throttling, at least this long after
/// the issuance's own deadline passed (within the host's request timeout).
const UNDO_GRACE: Duration = Duration::from_secs(12);

/// The first delay between undo attempts when the service named none; doubles up to
/// [`UNDO_MAX_DELAY`].
const UNDO_FIRST_DELAY: Duration = Duration::from_millis(200);
const UNDO_MAX_DELAY: Duration = Duration::from_secs(5);

/// How many consecutive token requests must succeed before a new secret counts as usable
/// (Entra ID replicates a new secret to its token servers one by one).
const READY_SUCCESSES: u32 = 3;

/// What to create.
pub struct PrincipalSpec<'a> {
    pub app: NewApplication,
    pub roles: &'a [AzureRole],
    pub groups: &'a [AzureGroup],
    pub password_end: DateTime<Utc>,
    /// Wait at most this long for the new password to work (`None`: don't wait).
    pub ready_timeout: Option<Duration>,
}

/// The credential a new principal gets.
pub enum CredentialPlan {
    /// A password on the service principal (the Go engine's behaviour).
    Password,
    /// A certificate registered on the application in the create call itself; `proof` is
    /// its key, used to prove the certificate obtains a token.
    Certificate {
        key: NewKeyCredential,
        proof: Arc<ClientCertificate>,
    },
    /// No credential (a persisted role's application whose credentials come later).
    Nothing,
}

/// A created application, its service principal, password, role assignments and group
/// memberships.
pub struct Principal {
    pub app_object_id: String,
    pub app_id: String,
    pub sp_object_id: String,
    pub secret: SecretString,
    pub key_id: String,
    pub key_end: DateTime<Utc>,
    /// Full ARM ids, in role order.
    pub role_assignment_ids: Vec<String>,
    pub group_ids: Vec<String>,
    pub readiness: Readiness,
}

/// Whether a new secret was proven to work before it was returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    NotChecked,
    Ready {
        waited: Duration,
    },
    TimedOut {
        waited: Duration,
        last_error: String,
    },
}

impl Readiness {
    /// Milliseconds waited, for the response.
    pub fn waited_ms(&self) -> Option<u64> {
        match self {
            Self::NotChecked => None,
            Self::Ready { waited } | Self::TimedOut { waited, .. } => {
                Some(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX))
            }
        }
    }

    /// The warning for a response, if the wait ran out.
    pub fn warning(&self) -> Option<String> {
        match self {
            Self::TimedOut { waited, last_error } => Some(format!(
                "the new credential did not yet obtain a token after {:.1}s (last answer: {last_error}); \
                 Entra ID may need more time to replicate it",
                waited.as_secs_f64()
            )),
            _ => None,
        }
    }
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("error writing WAL: {0}")]
    Wal(StorageError),
    #[error("error creating application: {0}")]
    App(AzureError),
    #[error("error creating service principal: {0}")]
    ServicePrincipal(AzureError),
    #[error("error creating password: {0}")]
    Password(AzureError),
    #[error("error while assigning roles: {0}")]
    RoleAssignment(AzureError),
    #[error("error while adding group membership: {0}")]
    GroupMembership(AzureError),
}

/// A failed provisioning as a request error; the host's read-only refusal of a WAL write
/// (a standby) is passed on word for word so the host forwards the request.
impl From<ProvisionError> for LogicalError {
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::Wal(s) if s.is_read_only() => LogicalError::from(s),
            other => LogicalError::internal(other.to_string()),
        }
    }
}

pub fn role_assignment_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        scope.trim_end_matches('/')
    )
}

/// The inventory entry of an application just made for `spec`.
fn inventory_entry(
    app: &azure_clients::Application,
    spec: &PrincipalSpec<'_>,
    ra_names: &[String],
) -> inventory::AppEntry {
    inventory::AppEntry {
        app_object_id: app.id.clone(),
        app_id: app.app_id.clone(),
        display_name: app.display_name.clone(),
        role_assignment_ids: spec
            .roles
            .iter()
            .zip(ra_names)
            .map(|(r, n)| role_assignment_id(&r.scope, n))
            .collect(),
        created: Some(Utc::now()),
        expires: Some(spec.password_end),
        revoke_requested: None,
    }
}

fn expiration() -> String {
    (Utc::now() + WAL_EXPIRATION).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Creates an application with a service principal, a password on it, every role
/// assignment and every group membership; undoes all of it on failure.
pub async fn create_principal(
    client: &AzureClient,
    storage: &dyn Storage,
    spec: PrincipalSpec<'_>,
    deadline: Deadline,
) -> Result<Principal, ProvisionError> {
    create_principal_with(client, storage, spec, CredentialPlan::Password, deadline).await
}

/// [`create_principal`] with the credential `plan` chooses.
pub async fn create_principal_with(
    client: &AzureClient,
    storage: &dyn Storage,
    mut spec: PrincipalSpec<'_>,
    plan: CredentialPlan,
    deadline: Deadline,
) -> Result<Principal, ProvisionError> {
    let wal_err = ProvisionError::Wal;
    // The mount's tag, for the reconciler (see `inventory`).
    let mount_id = inventory::mount_id_or_create(storage)
        .await
        .map_err(wal_err)?;
    spec.app.tags.push(inventory::mount_tag(&mount_id));
    let ra_names: Vec<String> = spec
        .roles
        .iter()
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let display_name = spec.app.display_name.clone();
    let app_wal = wal::put(
        storage,
        WAL_APP_CREATE,
        json!({"AppID": "", "AppObjID": "", "DisplayName": display_name, "Expiration": expiration()}),
    )
    .await
    .map_err(wal_err)?;
    let ra_wal = if spec.roles.is_empty() {
        None
    } else {
        Some(
            wal::put(
                storage,
                WAL_ROLE_ASSIGN,
                json!({"SpID": "", "AssignmentIDs": ra_names, "AzureRoles": spec.roles, "Expiration": expiration()}),
            )
            .await
            .map_err(wal_err)?,
        )
    };
    let wal_ids: Vec<String> = std::iter::once(app_wal.clone())
        .chain(ra_wal.clone())
        .collect();

    let keys: Vec<NewKeyCredential> = match &plan {
        CredentialPlan::Certificate { key, .. } => vec![key.clone()],
        _ => Vec::new(),
    };
    let app = match client
        .graph()
        .create_application_with_keys(&spec.app, &keys, deadline)
        .await
    {
        Ok(app) => app,
        Err(e) => {
            // The request may have created the application before it failed.
            let undo = undo_deadline(deadline);
            let undone = persist(undo, || delete_apps_named(client, &display_name, undo)).await;
            finish_wal(storage, &wal_ids, undone.is_ok()).await;
            return Err(ProvisionError::App(e));
        }
    };
    let app_wal_data = json!({"AppID": app.app_id, "AppObjID": app.id, "DisplayName": display_name, "Expiration": expiration()});
    let recorded = match wal::update(storage, &app_wal, WAL_APP_CREATE, app_wal_data).await {
        // Recorded while the WAL entry still covers the application.
        Ok(()) => inventory::record(storage, &inventory_entry(&app, &spec, &ra_names)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        let undo = undo_deadline(deadline);
        let undone = persist(undo, || delete_fresh_app(client, &app.id, undo)).await;
        finish_wal(storage, &wal_ids, undone.is_ok()).await;
        return Err(wal_err(e));
    }

    let created = provision_rest(client, &app, &spec, &plan, &ra_names, deadline).await;
    match created {
        Ok(mut principal) => {
            finish_wal(storage, &wal_ids, true).await;
            principal.app_object_id = app.id;
            principal.app_id = app.app_id;
            Ok(principal)
        }
        Err(e) => {
            // No credential was handed out: nothing live stands on the application.
            inventory::mark_revoke_requested(storage, &app.id).await;
            let ra_ids: Vec<String> = spec
                .roles
                .iter()
                .zip(&ra_names)
                .map(|(r, n)| role_assignment_id(&r.scope, n))
                .collect();
            let undo = undo_deadline(deadline);
            let undone_ras = undo_role_assignments(client, &ra_ids, undo).await;
            let undone_app = persist(undo, || delete_fresh_app(client, &app.id, undo)).await;
            finish_wal(
                storage,
                &wal_ids,
                undone_ras.is_empty() && undone_app.is_ok(),
            )
            .await;
            Err(e)
        }
    }
}

/// Service principal, then password + role assignments + group memberships together.
async fn provision_rest(
    client: &AzureClient,
    app: &azure_clients::Application,
    spec: &PrincipalSpec<'_>,
    plan: &CredentialPlan,
    ra_names: &[String],
    deadline: Deadline,
) -> Result<Principal, ProvisionError> {
    let app_id = app.app_id.as_str();
    let sp = client
        .graph()
        .create_service_principal(app_id, deadline)
        .await
        .map_err(ProvisionError::ServicePrincipal)?;
    let password = async {
        match plan {
            CredentialPlan::Password => {}
            CredentialPlan::Nothing => {
                return Ok((
                    String::new(),
                    spec.password_end,
                    SecretString::default(),
                    Readiness::NotChecked,
                ));
            }
            CredentialPlan::Certificate { key, proof } => {
                let key_id = app
                    .key_credentials
                    .iter()
                    .find(|k| k.display_name == key.display_name)
                    .or(app.key_credentials.first())
                    .map(|k| k.key_id.clone())
                    .unwrap_or_default();
                let readiness = match spec.ready_timeout {
                    Some(t) => {
                        super::certificate::wait_until_certificate_usable(
                            client,
                            app_id,
                            proof,
                            deadline.capped(t),
                        )
                        .await
                    }
                    None => Readiness::NotChecked,
                };
                return Ok((
                    key_id,
                    spec.password_end,
                    SecretString::default(),
                    readiness,
                ));
            }
        }
        let pw = client
            .graph()
            .add_service_principal_password(
                &sp.id,
                &NewPassword {
                    display_name: Some(PASSWORD_DISPLAY_NAME.to_string()),
                    start: Some(Utc::now()),
                    end: Some(spec.password_end),
                },
                deadline,
            )
            .await
            .map_err(ProvisionError::Password)?;
        let secret = pw.secret_text.clone().ok_or_else(|| {
            ProvisionError::Password(AzureError::config("Graph returned no secret text"))
        })?;
        let readiness = match spec.ready_timeout {
            Some(t) => wait_until_usable(client, app_id, &secret, deadline.capped(t)).await,
            None => Readiness::NotChecked,
        };
        let end = pw.end_date_time.unwrap_or(spec.password_end);
        Ok::<_, ProvisionError>((pw.key_id, end, secret, readiness))
    };
    let description = spec
        .app
        .tags
        .iter()
        .find(|t| t.starts_with(inventory::MOUNT_TAG_PREFIX))
        .map(|tag| inventory::role_assignment_description(tag, &app.id));
    let (password, assignments, memberships) = tokio::join!(
        password,
        assign_roles_described(
            client,
            &sp.id,
            spec.roles,
            ra_names,
            description.as_deref(),
            deadline
        ),
        add_memberships(client, &sp.id, spec.groups, deadline)
    );
    let role_assignment_ids = assignments?;
    let group_ids = memberships?;
    let (key_id, key_end, secret, readiness) = password?;
    Ok(Principal {
        app_object_id: String::new(),
        app_id: String::new(),
        sp_object_id: sp.id,
        secret,
        key_id,
        key_end,
        role_assignment_ids,
        group_ids,
        readiness,
    })
}

/// Creates every role assignment at once; returns their full ids in role order.
pub async fn assign_roles(
    client: &AzureClient,
    sp_id: &str,
    roles: &[AzureRole],
    names: &[String],
    deadline: Deadline,
) -> Result<Vec<String>, ProvisionError> {
    assign_roles_described(client, sp_id, roles, names, None, deadline).await
}

/// [`assign_roles`], each assignment with `description` (the reconciler's mark).
pub async fn assign_roles_described(
    client: &AzureClient,
    sp_id: &str,
    roles: &[AzureRole],
    names: &[String],
    description: Option<&str>,
    deadline: Deadline,
) -> Result<Vec<String>, ProvisionError> {
    let results = join_all(roles.iter().zip(names).map(|(role, name)| {
        client.arm().create_role_assignment_described(
            &role.scope,
            name,
            &role.role_id,
            sp_id,
            description,
            deadline,
        )
    }))
    .await;
    results
        .into_iter()
        .map(|r| r.map(|ra| ra.id).map_err(ProvisionError::RoleAssignment))
        .collect()
}

/// Adds the principal to every group at once; returns the group ids.
pub async fn add_memberships(
    client: &AzureClient,
    sp_id: &str,
    groups: &[AzureGroup],
    deadline: Deadline,
) -> Result<Vec<String>, ProvisionError> {
    let results = join_all(groups.iter().map(|g| {
        client
            .graph()
            .add_group_member(&g.object_id, sp_id, deadline)
    }))
    .await;
    for r in results {
        r.map_err(ProvisionError::GroupMembership)?;
    }
    Ok(groups.iter().map(|g| g.object_id.clone()).collect())
}

/// Deletes role assignments at once; returns the errors (already-gone ones are success).
pub async fn delete_role_assignments(
    client: &AzureClient,
    ids: &[String],
    deadline: Deadline,
) -> Vec<AzureError> {
    join_all(
        ids.iter()
            .map(|id| client.arm().delete_role_assignment(id, deadline)),
    )
    .await
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// Removes the principal from groups at once; returns the errors (non-members are success).
pub async fn remove_memberships(
    client: &AzureClient,
    sp_id: &str,
    group_ids: &[String],
    deadline: Deadline,
) -> Vec<AzureError> {
    join_all(
        group_ids
            .iter()
            .map(|g| client.graph().remove_group_member(g, sp_id, deadline)),
    )
    .await
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// Deletes an application (its service principal goes with it), then purges it from
/// deleted items when `permanently`. An application already gone counts as deleted.
pub async fn delete_app(
    client: &AzureClient,
    object_id: &str,
    permanently: bool,
    deadline: Deadline,
) -> Result<DeleteOutcome, AzureError> {
    delete_app_settled(client, object_id, permanently, Duration::ZERO, deadline).await
}

/// [`delete_app`] for an application created moments ago: Entra ID may still answer 404
/// for it, so a 404 is retried for up to [`FRESH_OBJECT_SETTLE`] before it counts as gone.
async fn delete_fresh_app(
    client: &AzureClient,
    object_id: &str,
    deadline: Deadline,
) -> Result<DeleteOutcome, AzureError> {
    delete_app_settled(client, object_id, true, FRESH_OBJECT_SETTLE, deadline).await
}

async fn delete_app_settled(
    client: &AzureClient,
    object_id: &str,
    permanently: bool,
    settle: Duration,
    deadline: Deadline,
) -> Result<DeleteOutcome, AzureError> {
    let outcome = client
        .graph()
        .delete_application_settled(object_id, settle, deadline)
        .await?;
    if permanently {
        client
            .graph()
            .permanently_delete(object_id, Duration::from_secs(10), deadline)
            .await?;
    }
    Ok(outcome)
}

/// Deletes (and purges) every application with this exact display name.
pub async fn delete_apps_named(
    client: &AzureClient,
    display_name: &str,
    deadline: Deadline,
) -> Result<(), AzureError> {
    let apps = client
        .graph()
        .find_applications_by_display_name(display_name, deadline)
        .await?;
    for app in apps.into_iter().filter(|a| a.display_name == display_name) {
        delete_app(client, &app.id, true, deadline).await?;
    }
    Ok(())
}

/// Proves `secret` obtains a token several times in a row, within `deadline`.
pub async fn wait_until_usable(
    client: &AzureClient,
    app_id: &str,
    secret: &SecretString,
    deadline: Deadline,
) -> Readiness {
    prove_usable(deadline, || {
        client.verify_client_secret(app_id, secret, deadline)
    })
    .await
}

/// Runs `attempt` (one token request with a new credential) until it has succeeded
/// [`READY_SUCCESSES`] times in a row, backing off after each failure, within `deadline`.
pub async fn prove_usable<F, Fut>(deadline: Deadline, mut attempt: F) -> Readiness
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AzureError>>,
{
    let start = std::time::Instant::now();
    let mut successes = 0;
    let mut delay = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        match attempt().await {
            Ok(()) => {
                successes += 1;
                if successes >= READY_SUCCESSES {
                    return Readiness::Ready {
                        waited: start.elapsed(),
                    };
                }
                delay = Duration::from_millis(100);
            }
            Err(e) => {
                successes = 0;
                last_error = e.message();
            }
        }
        if deadline.remaining() <= delay {
            return Readiness::TimedOut {
                waited: start.elapsed(),
                last_error: if last_error.is_empty() {
                    "too few consecutive successes".into()
                } else {
                    last_error
                },
            };
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The deadline of an undo: the issuance's, but never less than [`UNDO_GRACE`] from now.
fn undo_deadline(deadline: Deadline) -> Deadline {
    deadline.max(Deadline::after(UNDO_GRACE))
}

/// Runs `op` until it succeeds, fails for good, or `deadline` passes: throttling (429, 503)
/// and other transient failures are retried after the delay the service asked for
/// (`Retry-After`), or after a growing back-off when it named none. For undo work, which
/// must not give up while it still has time.
pub async fn persist<T, F, Fut>(deadline: Deadline, mut op: F) -> Result<T, AzureError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AzureError>>,
{
    let mut backoff = UNDO_FIRST_DELAY;
    loop {
        let err = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !err.is_retryable() {
            return Err(err);
        }
        let delay = err
            .service_error()
            .and_then(|s| s.retry_after)
            .unwrap_or(backoff)
            .max(Duration::from_millis(50));
        backoff = (backoff * 2).min(UNDO_MAX_DELAY);
        if deadline.remaining() <= delay {
            return Err(err);
        }
        tracing::debug!(error = %err, delay_ms = delay.as_millis() as u64, "undo throttled; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// Deletes role assignments at once, each retried through throttling within `deadline`;
/// returns the errors left.
pub async fn undo_role_assignments(
    client: &AzureClient,
    ids: &[String],
    deadline: Deadline,
) -> Vec<AzureError> {
    join_all(ids.iter().map(|id| {
        persist(deadline, move || {
            client.arm().delete_role_assignment(id, deadline)
        })
    }))
    .await
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// Removes WAL entries once their work is done or undone; otherwise marks them ended, so
/// the next rollback tick takes them without waiting for them to age.
async fn finish_wal(storage: &dyn Storage, ids: &[String], done: bool) {
    if !done {
        tracing::warn!(wal_ids = ?ids, "undo incomplete; the next rollback will finish it");
        abandon_wal(storage, ids).await;
        return;
    }
    for id in ids {
        if let Err(e) = wal::delete(storage, id).await {
            tracing::warn!(wal_id = %id, error = %e, "cannot delete write-ahead-log entry");
        }
    }
}

/// Marks WAL entries as ended (their work is over, their undo incomplete): the next
/// rollback tick takes them.
pub async fn abandon_wal(storage: &dyn Storage, ids: &[String]) {
    for id in ids {
        if let Err(e) = wal::mark_ended(storage, id).await {
            tracing::warn!(wal_id = %id, error = %e, "cannot mark write-ahead-log entry ended; the rollback takes it once it is old");
        }
    }
}

/// Writes a WAL entry for a password about to be added to an existing application; the
/// rollback removes passwords with this display name.
pub async fn wal_password(
    storage: &dyn Storage,
    app_object_id: &str,
    display_name: &str,
) -> Result<String, ProvisionError> {
    wal::put(
        storage,
        WAL_ADD_PASSWORD,
        json!({"AppObjID": app_object_id, "DisplayName": display_name, "Expiration": expiration()}),
    )
    .await
    .map_err(ProvisionError::Wal)
}

/// Reads a string field of WAL data.
pub use vault_plugin_sdk::framework::wal::data_str as wal_str;
/// Deletes a WAL entry, logging a failure (the rollback will then find nothing to undo).
pub use vault_plugin_sdk::framework::wal::forget as forget_wal;

#[cfg(test)]
mod tests {
    use super::*;
    use azure_clients::{Service, ServiceError};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn service_error(status: u16, retry_after: Option<Duration>) -> AzureError {
        AzureError::Service(Box::new(ServiceError {
            operation: "delete application".into(),
            service: Service::Graph,
            status,
            code: None,
            detail_codes: Vec::new(),
            message: String::new(),
            request_id: None,
            retry_after,
        }))
    }

    #[tokio::test]
    async fn undo_keeps_going_through_throttling_honouring_retry_after() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let out = persist(Deadline::after(Duration::from_secs(60)), || async {
            // Twenty 429s in a row: more than the HTTP layer's own retries.
            if calls.fetch_add(1, Ordering::SeqCst) < 20 {
                Err(service_error(429, Some(Duration::from_millis(60))))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 21);
        assert!(
            start.elapsed() >= Duration::from_millis(20 * 60),
            "each Retry-After was waited out"
        );
    }

    #[tokio::test]
    async fn undo_stops_at_its_deadline_and_on_final_errors() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let out: Result<(), _> = persist(Deadline::after(Duration::from_millis(500)), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(service_error(429, Some(Duration::from_millis(200))))
        })
        .await;
        assert!(out.unwrap_err().is_throttled());
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "never sleeps past it"
        );
        assert!(calls.load(Ordering::SeqCst) >= 2);

        let calls = AtomicU32::new(0);
        let out: Result<(), _> = persist(Deadline::after(Duration::from_secs(60)), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(service_error(403, None))
        })
        .await;
        assert!(out.unwrap_err().is_forbidden());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_read_only_wal_write_reaches_the_host_unchanged() {
        let host = "cannot write to readonly storage";
        let e = LogicalError::from(ProvisionError::Wal(StorageError::from_host(
            "put", "wal/x", host,
        )));
        assert_eq!(e, LogicalError::Internal(host.into()));
        let e = LogicalError::from(ProvisionError::Wal(StorageError::from_host(
            "put",
            "wal/x",
            "disk full",
        )));
        assert!(e.to_string().starts_with("error writing WAL: "), "{e}");
    }

    #[test]
    fn the_undo_gets_a_grace_period_past_a_spent_deadline() {
        let spent = Deadline::after(Duration::ZERO);
        assert!(undo_deadline(spent).remaining() > Duration::from_secs(10));
        let long = Deadline::after(Duration::from_secs(60));
        assert_eq!(undo_deadline(long), long);
    }
}
