//! Creating and removing the Azure objects behind a credential, without orphans.
//!
//! Every object is covered by a write-ahead-log entry written *before* it is created (the
//! application by its unique display name, role assignments by their pre-chosen names), so a
//! crash at any point leaves something the rollback can find.
//!
//! The critical path of an issuance is three Azure round trips whatever the number of roles
//! and groups: (1) the application (a certificate rides in the create call); (2) its service
//! principal and the password on the application, together; (3) every role assignment, every
//! group membership and the readiness proof (one round of parallel token requests), together.
//! The tenant's policy is read beside round one when the mount knows a fresh answer (a
//! [`Gate`]; see `certificate::PolicyCheck`), and the periodic function keeps the engine's
//! client and tokens warm ([`periodic`]), so neither adds a round.
//! The credential is handed out only when all of them succeeded and the proof holds
//! (docs/readiness-proof.md). A failure undoes what was made before the error is returned.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::json;

use super::backend::{AzureBackend, CLIENT_MAX_AGE};
use super::inventory;
use super::store::{self, AzureGroup, AzureRole};
use azure_clients::{
    AzureClient, AzureError, ClientCertificate, Deadline, DeleteOutcome, NewApplication,
    NewKeyCredential, NewPassword, SecretString,
};
use std::sync::Arc;
use std::time::SystemTime;
use vault_plugin_sdk::framework::wal;
use vault_plugin_sdk::logical::storage_writable;
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

/// Token requests sent together in one round of the readiness proof: each lands on a
/// replica of Entra ID's directory of its own (a new credential reaches them one by one).
pub const PROOF_WIDTH: usize = 6;

/// Consecutive fully successful rounds the proof needs once it has seen a failure (the
/// credential is then known to be spreading); one round suffices when nothing ever failed.
pub const PROOF_ROUNDS_AFTER_FAILURE: u32 = 2;

/// The first wait after a failed round of the proof (when the service named none); doubles
/// up to [`PROOF_MAX_DELAY`]. Successful rounds follow each other without a wait.
const PROOF_FIRST_DELAY: Duration = Duration::from_millis(50);
const PROOF_MAX_DELAY: Duration = Duration::from_secs(1);

/// A check that runs beside round one (the application create) and decides, before round
/// two makes anything, whether the issuance goes on (the tenant's policy, see
/// `certificate::PolicyCheck`).
pub type Gate<'a> = futures::future::BoxFuture<'a, GateVerdict>;

/// What a [`Gate`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateVerdict {
    /// Go on; a password made in round two ends at `password_end` (`None`: as planned).
    Proceed { password_end: Option<DateTime<Utc>> },
    /// Undo round one and return [`ProvisionError::Stopped`].
    Stop,
}

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
    /// A password on the service principal (the Go engine's layout), added once the service
    /// principal exists: one round later than [`CredentialPlan::ApplicationPassword`].
    Password,
    /// A password on the application, added beside the service principal (round two): the
    /// credential of a dynamic issuance ([`create_principal`]).
    ApplicationPassword,
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
    #[error("the issuance was stopped by its check and undone")]
    Stopped,
}

impl ProvisionError {
    /// A creation failed in a way that it may still have been carried out (see
    /// [`AzureError::outcome_unknown`]): the object can appear after the undo looked for it.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ProvisionError::App(e)
            | ProvisionError::ServicePrincipal(e)
            | ProvisionError::Password(e)
            | ProvisionError::RoleAssignment(e)
            | ProvisionError::GroupMembership(e) => e.outcome_unknown(),
            ProvisionError::Wal(_) | ProvisionError::Stopped => false,
        }
    }
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
    create_principal_with(
        client,
        storage,
        spec,
        CredentialPlan::ApplicationPassword,
        deadline,
    )
    .await
}

/// Fetches the engine's own Graph and ARM tokens into the client's cache if they are missing
/// or due for refresh, so the calls of an issuance find them there. Failures are left to the
/// calls that need the token (they report them with context).
pub async fn warm_tokens(client: &AzureClient, deadline: Deadline) {
    fetch_tokens(client, deadline).await;
}

/// [`warm_tokens`], returning when the first of the two tokens expires (`None`: one could
/// not be had).
async fn fetch_tokens(client: &AzureClient, deadline: Deadline) -> Option<SystemTime> {
    let cloud = &client.settings().cloud;
    let (graph, arm) = (cloud.graph_scope(), cloud.arm_scope());
    let tokens = client.token_source();
    let (g, a) = tokio::join!(tokens.token(&graph, deadline), tokens.token(&arm, deadline));
    let mut first: Option<SystemTime> = None;
    for (scope, r) in [(graph.as_str(), g), (arm.as_str(), a)] {
        match r {
            Ok(t) => first = Some(first.map_or(t.expires_at, |f| f.min(t.expires_at))),
            Err(e) => {
                tracing::debug!(scope, error = %e, "cannot warm the token cache");
                return None;
            }
        }
    }
    first
}

/// How far ahead of need the periodic function renews the engine's client and tokens: the
/// host ticks about once a minute, and two ticks' worth tolerates a late one.
const WARM_AHEAD: Duration = Duration::from_secs(120);

/// A request fetches a cached token again once less than this is left of it (the token
/// cache refreshes at the smaller of five minutes and half the token's life).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long the periodic function waits for the token service.
const WARM_DEADLINE: Duration = Duration::from_secs(30);

impl AzureBackend {
    /// On the node that issues (storage writable, not a standby), the engine's client and
    /// tokens are made ready for the next issuances ([`AzureBackend::keep_warm`]).
    pub(crate) async fn keep_warm_where_writable(&self, storage: &dyn Storage) {
        if self.background_allowed().await
            && matches!(storage_writable(self.system_view.as_ref()).await, Ok(true))
        {
            self.keep_warm(storage).await;
        }
    }

    /// Keeps the engine's client and its Graph and ARM tokens ready on a mount with roles,
    /// so that no issuance waits for a token: tokens missing or due are fetched; a client that would age out
    /// (`CLIENT_MAX_AGE`), or whose tokens would come due, before the next tick is replaced
    /// now by a new one whose tokens are already in its cache (requests keep using the old
    /// one meanwhile).
    pub(crate) async fn keep_warm(&self, storage: &dyn Storage) {
        // The generation is taken before the configuration is read: a config write in
        // between keeps the client built from the old one out of the cache.
        let (cached, generation) = self.cached_client().await;
        let config = match store::get_config(storage).await {
            Ok(Some(c)) => c,
            _ => return,
        };
        // Only a mount with roles issues on request; static roles rotate in the background.
        if !matches!(storage.list(store::ROLES_PREFIX).await, Ok(roles) if !roles.is_empty()) {
            return;
        }
        let deadline = Deadline::after(WARM_DEADLINE);
        if let Some((client, age)) = cached {
            if age + WARM_AHEAD < CLIENT_MAX_AGE {
                let lasts = |until: SystemTime| {
                    until
                        .duration_since(SystemTime::now())
                        .is_ok_and(|left| left > TOKEN_REFRESH_MARGIN + WARM_AHEAD)
                };
                match fetch_tokens(&client, deadline).await {
                    // Still good at the next tick, or failing (the requests report why).
                    Some(until) if lasts(until) => return,
                    None => return,
                    Some(_) => {}
                }
            }
        }
        let client = match self.build_client(&config) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::debug!(error = %e, "cannot build a client to warm");
                return;
            }
        };
        if fetch_tokens(&client, deadline).await.is_some() {
            self.replace_client(client, generation).await;
            tracing::debug!("renewed the engine's Azure client and tokens ahead of need");
        }
    }
}

/// [`create_principal`] with the credential `plan` chooses.
pub async fn create_principal_with(
    client: &AzureClient,
    storage: &dyn Storage,
    spec: PrincipalSpec<'_>,
    plan: CredentialPlan,
    deadline: Deadline,
) -> Result<Principal, ProvisionError> {
    create_principal_gated(client, storage, spec, plan, None, deadline).await
}

/// [`create_principal_with`], with `gate` running beside round one: when it says stop, the
/// application is deleted and nothing else is made; when it names a password end date, the
/// password of round two takes it.
pub async fn create_principal_gated(
    client: &AzureClient,
    storage: &dyn Storage,
    mut spec: PrincipalSpec<'_>,
    plan: CredentialPlan,
    gate: Option<Gate<'_>>,
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
    // Every WAL entry is written before the first Azure call: the concurrent steps below
    // never create an object that is not covered yet.
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
        match wal::put(
            storage,
            WAL_ROLE_ASSIGN,
            json!({"SpID": "", "AssignmentIDs": ra_names, "AzureRoles": spec.roles, "Expiration": expiration()}),
        )
        .await
        {
            Ok(id) => Some(id),
            Err(e) => {
                forget_wal(storage, &app_wal).await;
                return Err(wal_err(e));
            }
        }
    };
    let wal_ids: Vec<String> = std::iter::once(app_wal.clone())
        .chain(ra_wal.clone())
        .collect();

    let keys: Vec<NewKeyCredential> = match &plan {
        CredentialPlan::Certificate { key, .. } => vec![key.clone()],
        _ => Vec::new(),
    };
    // The ARM token is fetched (if it is not cached) while the application is created, so
    // the role assignments of round three do not wait for it.
    // The gate's check goes out beside the application too.
    let (created, (), verdict) = tokio::join!(
        client
            .graph()
            .create_application_with_keys(&spec.app, &keys, deadline),
        async {
            if !spec.roles.is_empty() {
                warm_tokens(client, deadline).await;
            }
        },
        async {
            match gate {
                Some(g) => g.await,
                None => GateVerdict::Proceed { password_end: None },
            }
        }
    );
    let app = match created {
        Ok(app) => app,
        Err(e) => {
            // The request may have created the application before it failed. If it may
            // still do so after the search below, the entries stay for the rollback, which
            // looks again once such a request can no longer land.
            let undo = undo_deadline(deadline);
            let undone = persist(undo, || delete_apps_named(client, &display_name, undo)).await;
            finish_wal(storage, &wal_ids, undone.is_ok() && !e.outcome_unknown()).await;
            return Err(match verdict {
                GateVerdict::Stop => ProvisionError::Stopped,
                GateVerdict::Proceed { .. } => ProvisionError::App(e),
            });
        }
    };
    if let GateVerdict::Proceed {
        password_end: Some(end),
    } = verdict
    {
        spec.password_end = end;
    }
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
    if verdict == GateVerdict::Stop {
        // Only the application exists (a certificate rides in it): it goes, nothing else
        // is made.
        inventory::mark_revoke_requested(storage, &app.id).await;
        let undo = undo_deadline(deadline);
        let undone = persist(undo, || delete_fresh_app(client, &app.id, undo)).await;
        finish_wal(storage, &wal_ids, undone.is_ok()).await;
        return Err(ProvisionError::Stopped);
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
            // One round: the assignments and the application (its service principal,
            // password and memberships go with it) are deleted together.
            let (undone_ras, undone_app) = tokio::join!(
                undo_role_assignments(client, &ra_ids, undo),
                persist(undo, || delete_fresh_app(client, &app.id, undo))
            );
            // A creation whose outcome is unknown may land after this undo: the entries
            // then stay for the rollback (see `rollback::settle_window`).
            finish_wal(
                storage,
                &wal_ids,
                undone_ras.is_empty() && undone_app.is_ok() && !e.outcome_unknown(),
            )
            .await;
            Err(e)
        }
    }
}

/// How far the service principal's side of an issuance got (the credential's side waits for
/// it before its proof, and stops when it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalStage {
    Pending,
    /// With the service principal's object id.
    Created(String),
    Failed,
}

/// Rounds two and three. Two sides run together: the service principal, then its role
/// assignments and group memberships; and the credential (a password added to the
/// application at once, or to the service principal once it exists), then its readiness
/// proof as soon as the service principal exists.
/// Creation calls are never cancelled half-way (an object must not appear after its undo);
/// only the proof stops early when the other side failed.
async fn provision_rest(
    client: &AzureClient,
    app: &azure_clients::Application,
    spec: &PrincipalSpec<'_>,
    plan: &CredentialPlan,
    ra_names: &[String],
    deadline: Deadline,
) -> Result<Principal, ProvisionError> {
    let app_id = app.app_id.as_str();
    let (stage_tx, stage_rx) = tokio::sync::watch::channel(PrincipalStage::Pending);
    let (credential_failed_tx, credential_failed_rx) = tokio::sync::watch::channel(false);

    let description = spec
        .app
        .tags
        .iter()
        .find(|t| t.starts_with(inventory::MOUNT_TAG_PREFIX))
        .map(|tag| inventory::role_assignment_description(tag, &app.id));

    let principal_side = async {
        let sp = match client
            .graph()
            .create_service_principal(app_id, deadline)
            .await
        {
            Ok(sp) => sp,
            Err(e) => {
                stage_tx.send_replace(PrincipalStage::Failed);
                return Err(ProvisionError::ServicePrincipal(e));
            }
        };
        stage_tx.send_replace(PrincipalStage::Created(sp.id.clone()));
        if *credential_failed_rx.borrow() {
            // The issuance is lost: create nothing more.
            return Ok((sp.id, Vec::new(), Vec::new()));
        }
        let (assignments, memberships) = tokio::join!(
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
        match (assignments, memberships) {
            (Ok(ras), Ok(groups)) => Ok((sp.id, ras, groups)),
            (Err(e), _) | (_, Err(e)) => {
                stage_tx.send_replace(PrincipalStage::Failed);
                Err(e)
            }
        }
    };

    let credential_side = async {
        // The service principal's object id once it exists (`None`: it failed). A token
        // request needs it, and so does a password on it.
        let sp_created = || async {
            let mut stage = stage_rx.clone();
            let reached = match stage.wait_for(|s| *s != PrincipalStage::Pending).await {
                Ok(s) => match &*s {
                    PrincipalStage::Created(id) => Some(id.clone()),
                    _ => None,
                },
                Err(_) => None,
            };
            reached
        };
        let made = if matches!(plan, CredentialPlan::Password) {
            match sp_created().await {
                Some(sp_id) => add_sp_password(client, &sp_id, spec, deadline).await,
                None => {
                    return Ok((
                        String::new(),
                        spec.password_end,
                        SecretString::default(),
                        Readiness::NotChecked,
                    ))
                }
            }
        } else {
            add_credential(client, app, spec, plan, deadline).await
        };
        let (key_id, key_end, secret) = match made {
            Ok(m) => m,
            Err(e) => {
                credential_failed_tx.send_replace(true);
                return Err(e);
            }
        };
        if sp_created().await.is_none() || spec.ready_timeout.is_none() {
            return Ok((key_id, key_end, secret, Readiness::NotChecked));
        }
        let proof = async {
            match (plan, spec.ready_timeout) {
                (CredentialPlan::Password | CredentialPlan::ApplicationPassword, Some(t)) => {
                    wait_until_usable(client, app_id, &secret, deadline.capped(t)).await
                }
                (CredentialPlan::Certificate { proof, .. }, Some(t)) => {
                    super::certificate::wait_until_certificate_usable(
                        client,
                        app_id,
                        proof,
                        deadline.capped(t),
                    )
                    .await
                }
                _ => Readiness::NotChecked,
            }
        };
        let mut failed = stage_rx.clone();
        let readiness = tokio::select! {
            r = proof => r,
            // The other side failed: the proof is moot.
            _ = failed.wait_for(|s| *s == PrincipalStage::Failed) => Readiness::NotChecked,
        };
        Ok::<_, ProvisionError>((key_id, key_end, secret, readiness))
    };

    let (principal, credential) = tokio::join!(principal_side, credential_side);
    let (sp_object_id, role_assignment_ids, group_ids) = principal?;
    let (key_id, key_end, secret, readiness) = credential?;
    Ok(Principal {
        app_object_id: String::new(),
        app_id: String::new(),
        sp_object_id,
        secret,
        key_id,
        key_end,
        role_assignment_ids,
        group_ids,
        readiness,
    })
}

/// The credential of a new principal: a password added to the application (round two,
/// beside the service principal), or the certificate the create call registered.
async fn add_credential(
    client: &AzureClient,
    app: &azure_clients::Application,
    spec: &PrincipalSpec<'_>,
    plan: &CredentialPlan,
    deadline: Deadline,
) -> Result<(String, DateTime<Utc>, SecretString), ProvisionError> {
    match plan {
        CredentialPlan::Nothing => Ok((String::new(), spec.password_end, SecretString::default())),
        CredentialPlan::Certificate { key, .. } => {
            let key_id = app
                .key_credentials
                .iter()
                .find(|k| k.display_name == key.display_name)
                .or(app.key_credentials.first())
                .map(|k| k.key_id.clone())
                .unwrap_or_default();
            Ok((key_id, spec.password_end, SecretString::default()))
        }
        // Added by `provision_rest` once the service principal exists.
        CredentialPlan::Password => Ok((String::new(), spec.password_end, SecretString::default())),
        CredentialPlan::ApplicationPassword => {
            let pw = add_fresh_app_password(client, &app.id, &new_password(spec), deadline)
                .await
                .map_err(ProvisionError::Password)?;
            password_parts(pw, spec)
        }
    }
}

fn new_password(spec: &PrincipalSpec<'_>) -> NewPassword {
    NewPassword {
        display_name: Some(PASSWORD_DISPLAY_NAME.to_string()),
        start: Some(Utc::now()),
        end: Some(spec.password_end),
    }
}

fn password_parts(
    pw: azure_clients::PasswordCredential,
    spec: &PrincipalSpec<'_>,
) -> Result<(String, DateTime<Utc>, SecretString), ProvisionError> {
    let secret = pw.secret_text.clone().ok_or_else(|| {
        ProvisionError::Password(AzureError::config("Graph returned no secret text"))
    })?;
    Ok((
        pw.key_id,
        pw.end_date_time.unwrap_or(spec.password_end),
        secret,
    ))
}

/// A password on the new service principal ([`CredentialPlan::Password`]).
async fn add_sp_password(
    client: &AzureClient,
    sp_id: &str,
    spec: &PrincipalSpec<'_>,
    deadline: Deadline,
) -> Result<(String, DateTime<Utc>, SecretString), ProvisionError> {
    let pw = client
        .graph()
        .add_service_principal_password(sp_id, &new_password(spec), deadline)
        .await
        .map_err(ProvisionError::Password)?;
    password_parts(pw, spec)
}

/// `addPassword` on an application created moments ago: Entra ID may still answer 404 for
/// it (no read-your-writes), which is retried for up to [`FRESH_OBJECT_SETTLE`]. A 404 means
/// nothing was added, so the retry cannot add a second password.
async fn add_fresh_app_password(
    client: &AzureClient,
    app_object_id: &str,
    password: &NewPassword,
    deadline: Deadline,
) -> Result<azure_clients::PasswordCredential, AzureError> {
    let settle = deadline.capped(FRESH_OBJECT_SETTLE);
    let mut delay = Duration::from_millis(100);
    loop {
        match client
            .graph()
            .add_application_password(app_object_id, password, deadline)
            .await
        {
            Err(e) if e.status() == Some(404) && settle.remaining() > delay => {
                tracing::debug!(
                    app_object_id,
                    "new application not found yet; retrying addPassword"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
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

/// Proves `secret` obtains tokens from several replicas at once, within `deadline` (see
/// [`prove_usable`]).
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

/// The readiness proof of a new credential (docs/readiness-proof.md). `attempt` is one token
/// request with it. Rounds of [`PROOF_WIDTH`] requests go out together, so they sample
/// different replicas of the directory at the same moment; the credential is usable when
/// one round succeeds in full and nothing failed before, or, once a failure was seen (it is
/// still spreading), when [`PROOF_ROUNDS_AFTER_FAILURE`] consecutive rounds succeed in full.
/// Successful rounds follow each other at once; after a failed one the proof waits what
/// the service asked (`Retry-After`) or a short growing back-off. Gives up at `deadline`.
pub async fn prove_usable<F, Fut>(deadline: Deadline, mut attempt: F) -> Readiness
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AzureError>>,
{
    let start = std::time::Instant::now();
    let mut needed = 1;
    let mut streak = 0;
    let mut delay = PROOF_FIRST_DELAY;
    loop {
        let round = join_all((0..PROOF_WIDTH).map(|_| attempt())).await;
        let errors: Vec<AzureError> = round.into_iter().filter_map(Result::err).collect();
        let (wait, last_error) = match errors.first() {
            None => {
                streak += 1;
                if streak >= needed {
                    return Readiness::Ready {
                        waited: start.elapsed(),
                    };
                }
                continue;
            }
            Some(first) => {
                streak = 0;
                needed = PROOF_ROUNDS_AFTER_FAILURE;
                let asked = errors
                    .iter()
                    .filter_map(|e| e.service_error().and_then(|s| s.retry_after))
                    .max();
                let wait = asked.unwrap_or(delay);
                delay = (delay * 2).min(PROOF_MAX_DELAY);
                (wait, first.message())
            }
        };
        if deadline.remaining() <= wait {
            return Readiness::TimedOut {
                waited: start.elapsed(),
                last_error,
            };
        }
        tokio::time::sleep(wait).await;
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

/// Removes WAL entries once their work is done or undone for good; otherwise marks them
/// ended, so the next rollback tick takes them without waiting for them to age.
async fn finish_wal(storage: &dyn Storage, ids: &[String], done: bool) {
    if !done {
        tracing::warn!(wal_ids = ?ids, "undo incomplete, or a creation's outcome unknown; the next rollback will finish it");
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

    /// Runs the proof against a scripted token service: `fails(n)` says whether attempt
    /// `n` (0-based, in the order the attempts were made) fails. Returns the readiness and
    /// the number of attempts.
    async fn prove_with(
        deadline: Deadline,
        fails: impl Fn(u32) -> Option<AzureError>,
    ) -> (Readiness, u32) {
        let calls = AtomicU32::new(0);
        let readiness = prove_usable(deadline, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let outcome = fails(n);
            async move { outcome.map_or(Ok(()), Err) }
        })
        .await;
        (readiness, calls.load(Ordering::SeqCst))
    }

    fn refused() -> AzureError {
        AzureError::Service(Box::new(ServiceError {
            operation: "get token".into(),
            service: Service::Token,
            status: 401,
            code: Some("invalid_client".into()),
            detail_codes: Vec::new(),
            message: "AADSTS7000215: Invalid client secret provided.".into(),
            request_id: None,
            retry_after: None,
        }))
    }

    #[tokio::test]
    async fn one_full_round_proves_a_credential_that_never_failed() {
        let (r, calls) = prove_with(Deadline::after(Duration::from_secs(10)), |_| None).await;
        assert!(matches!(r, Readiness::Ready { .. }), "{r:?}");
        assert_eq!(calls, PROOF_WIDTH as u32, "one round, all together");
    }

    #[tokio::test]
    async fn after_a_failure_two_full_rounds_in_a_row_are_needed() {
        let w = PROOF_WIDTH as u32;
        // Round 1: one replica refuses. Round 2: all succeed. Round 3: one refuses again
        // (a lucky round 2 is not enough). Rounds 4 and 5: all succeed.
        let (r, calls) = prove_with(Deadline::after(Duration::from_secs(10)), |n| {
            (n == 3 || n == 2 * w + 1).then(refused)
        })
        .await;
        assert!(matches!(r, Readiness::Ready { .. }), "{r:?}");
        assert_eq!(calls, 5 * w);
    }

    #[tokio::test]
    async fn a_failed_round_waits_what_the_service_asked() {
        let start = std::time::Instant::now();
        let w = PROOF_WIDTH as u32;
        let (r, calls) = prove_with(Deadline::after(Duration::from_secs(10)), |n| {
            (n < w).then(|| service_error(429, Some(Duration::from_millis(300))))
        })
        .await;
        assert!(matches!(r, Readiness::Ready { .. }), "{r:?}");
        assert_eq!(calls, 3 * w);
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "Retry-After was honoured"
        );
    }

    #[tokio::test]
    async fn a_credential_that_keeps_failing_times_out_with_the_last_answer() {
        let (r, _) = prove_with(Deadline::after(Duration::from_millis(400)), |_| {
            Some(refused())
        })
        .await;
        match r {
            Readiness::TimedOut { last_error, .. } => {
                assert!(last_error.contains("AADSTS7000215"), "{last_error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_undo_gets_a_grace_period_past_a_spent_deadline() {
        let spent = Deadline::after(Duration::ZERO);
        assert!(undo_deadline(spent).remaining() > Duration::from_secs(10));
        let long = Deadline::after(Duration::from_secs(60));
        assert_eq!(undo_deadline(long), long);
    }
}
