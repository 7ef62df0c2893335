//! Password-free credentials: RSA key pairs and self-signed certificates for issued
//! principals (role `credential_type=certificate`), the tenant's app management policy
//! (blocked passwords, maximum lifetimes), and rotation of the engine's own certificate.
//!
//! A private key of a dynamic credential exists only in the `creds` response that hands it
//! out: it is never stored (not in lease internal data, not in a WAL entry) and never logged.
//! The engine's own certificate key is part of its config (write-only, seal-wrapped), like
//! `client_secret`; a certificate static role's key is part of its seal-wrapped role record
//! (see `static_store`), like a static password, since every read hands out the same one.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::backend::AzureBackend;
use super::lease::{self, SERVICE_PRINCIPAL, STATIC_SERVICE_PRINCIPAL};
use super::provision::{
    self, CredentialPlan, Gate, GateVerdict, PrincipalSpec, ProvisionError, Readiness,
};
use super::store::{self, Role};
use azure_clients::{
    AzureClient, AzureError, ClientCertificate, CredentialPolicy, Deadline, DeleteOutcome,
    NewKeyCredential, PolicyViolation, SecretString,
};
use vault_plugin_sdk::framework::{secret_response, wal};
use vault_plugin_sdk::logical::{LogicalError, Map, Request, Response, Storage};

/// WAL kind of a key credential about to be added to an existing application.
pub const WAL_ADD_KEY: &str = "addKeyCredential";
/// WAL kind of a root certificate about to be added by `rotate-root`.
pub const WAL_ROTATE_ROOT_CERT: &str = "rotateRootCertificate";

/// Display name prefix of key credentials the engine registers.
pub const KEY_DISPLAY_NAME: &str = "vault-plugin-secrets-azure";

/// Stored value of `credential_type` for certificates (the Go engine stores 0 for its
/// only kind, the password).
const STORED_CERTIFICATE: i64 = 1;

/// A role's credential type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialType {
    Password,
    Certificate,
}

impl CredentialType {
    /// From the stored role field (0, the Go engine's value, is a password).
    pub fn of(role: &Role) -> CredentialType {
        if role.credential_type == STORED_CERTIFICATE {
            CredentialType::Certificate
        } else {
            CredentialType::Password
        }
    }

    /// The stored role field.
    pub fn stored(self) -> i64 {
        match self {
            CredentialType::Password => 0,
            CredentialType::Certificate => STORED_CERTIFICATE,
        }
    }

    /// Parses the API value (`password` or `certificate`).
    pub fn parse(value: &str) -> Result<CredentialType, LogicalError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "password" => Ok(CredentialType::Password),
            "certificate" => Ok(CredentialType::Certificate),
            other => Err(LogicalError::bad_request(format!(
                "credential_type: '{other}' is not a credential type; use 'password' or 'certificate'"
            ))),
        }
    }

    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::Password => "password",
            CredentialType::Certificate => "certificate",
        }
    }
}

/// A fresh key pair and its self-signed certificate. `Debug` shows the thumbprint only.
pub struct GeneratedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8). Only ever put in a response.
    pub key_pem: SecretString,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The certificate with its key, for client assertions and proofs.
    pub credential: Arc<ClientCertificate>,
    /// Validity of the certificate (whole seconds).
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl std::fmt::Debug for GeneratedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCertificate")
            .field("thumbprint", &self.credential.thumbprint_hex())
            .finish_non_exhaustive()
    }
}

impl GeneratedCertificate {
    /// The key credential that registers this certificate (`start`/`end` = its validity).
    pub fn key_credential(&self, display_name: &str) -> NewKeyCredential {
        NewKeyCredential {
            certificate_der: self.cert_der.clone(),
            display_name: Some(display_name.to_string()),
            start: Some(self.not_before),
            end: Some(self.not_after),
        }
    }
}

fn crypto_error(what: &str) -> LogicalError {
    LogicalError::internal(format!("error generating the certificate: {what}"))
}

/// Whole seconds (certificates carry no fractions).
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Makes an RSA-2048 key pair and a self-signed certificate for `subject`, valid from
/// `not_before` to `not_after` (truncated to whole seconds).
pub fn generate(
    subject: &str,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<GeneratedCertificate, LogicalError> {
    let not_before = whole_seconds(not_before);
    let not_after = whole_seconds(not_after);
    if not_after <= not_before {
        return Err(LogicalError::bad_request(
            "the certificate would end before it starts: raise the role's ttl/max_ttl",
        ));
    }
    let key = RsaKeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| crypto_error("RSA key generation failed"))?;
    let pkcs8 = key
        .as_der()
        .map_err(|_| crypto_error("PKCS#8 encoding failed"))?;
    let signer = rcgen::KeyPair::try_from(pkcs8.as_ref())
        .map_err(|e| crypto_error(&format!("key import failed: {e}")))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| crypto_error(&e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, subject);
    params.distinguished_name = dn;
    let ts = |t: DateTime<Utc>| {
        time::OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|e| crypto_error(&e.to_string()))
    };
    params.not_before = ts(not_before)?;
    params.not_after = ts(not_after)?;
    let cert = params
        .self_signed(&signer)
        .map_err(|e| crypto_error(&e.to_string()))?;
    let cert_pem = cert.pem();
    let key_pem = SecretString::new(signer.serialize_pem());
    let credential = ClientCertificate::from_pem(&cert_pem, key_pem.expose())
        .map_err(|e| crypto_error(&e.to_string()))?;
    Ok(GeneratedCertificate {
        cert_pem,
        key_pem,
        cert_der: cert.der().to_vec(),
        credential: Arc::new(credential),
        not_before,
        not_after,
    })
}

/// Proves `credential` obtains a token for `app_id` several times in a row (fresh client
/// assertions, no cache), within `deadline`.
pub async fn wait_until_certificate_usable(
    client: &AzureClient,
    app_id: &str,
    credential: &Arc<ClientCertificate>,
    deadline: Deadline,
) -> Readiness {
    let settings = client.settings();
    let scope = settings.cloud.graph_scope();
    provision::prove_usable(deadline, || {
        azure_clients::verify_client_certificate(
            client.http(),
            &settings.cloud,
            &settings.tenant_id,
            app_id,
            credential,
            &scope,
            deadline,
        )
    })
    .await
}

// ---------------------------------------------------------------- tenant policies

/// What the app management policy in force does to a new credential.
#[derive(Debug, Default)]
pub struct PolicyOutcome {
    /// The end date to use (capped at the policy's maximum lifetime).
    pub end: Option<DateTime<Utc>>,
    /// The lease max TTL the cap allows, when it shortens the credential.
    pub max_ttl_cap: Option<Duration>,
    /// Why the credential is shorter than asked.
    pub warning: Option<String>,
}

fn policy_name(p: &CredentialPolicy) -> String {
    let id = p.policy_id.as_deref().unwrap_or("unknown");
    if p.is_tenant_default {
        format!("the tenant's default app management policy ('{id}', restrictions of applications)")
    } else {
        format!("app management policy '{id}' (assigned to the application)")
    }
}

/// What reading the app management policy in force answered.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyAnswer {
    /// The policy in force (`policy_id` `None`: no policy is in force).
    Policy(CredentialPolicy),
    /// The engine may not read policies (403/404): no early check; Graph still enforces.
    Unreadable,
}

/// Reads the policy in force for `app_object_id` (`None`: a new application), as it applies
/// to a credential made at `now`.
pub async fn read_policy(
    client: &AzureClient,
    app_object_id: Option<&str>,
    now: DateTime<Utc>,
    deadline: Deadline,
) -> Result<PolicyAnswer, LogicalError> {
    // A dynamic password goes on the new application (beside its service principal, to
    // save a round trip): the application restrictions apply, as to every other credential.
    match client
        .graph()
        .credential_policy(app_object_id, now, deadline)
        .await
    {
        Ok(p) => Ok(PolicyAnswer::Policy(p)),
        Err(e) if e.is_forbidden() || e.status() == Some(403) || e.status() == Some(404) => {
            tracing::debug!(error = %e, "cannot read the tenant's app management policies (needs Policy.Read.All); not applied before the write");
            Ok(PolicyAnswer::Unreadable)
        }
        Err(e) => Err(LogicalError::internal(format!(
            "error reading the tenant's app management policy: {e}"
        ))),
    }
}

/// Applies a policy answer to a credential of `kind` made at `now` that would end at `end`.
/// Passwords blocked → 400; a maximum lifetime → `end` capped, with a warning.
pub fn judge_policy(
    answer: &PolicyAnswer,
    kind: CredentialType,
    now: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<PolicyOutcome, LogicalError> {
    let policy = match answer {
        PolicyAnswer::Policy(p) if p.policy_id.is_some() => p,
        _ => return Ok(PolicyOutcome::default()),
    };
    if kind == CredentialType::Password && policy.password_addition_blocked {
        return Err(LogicalError::bad_request(format!(
            "{} blocks new password credentials; set credential_type=certificate on this role to issue certificates instead",
            policy_name(policy)
        )));
    }
    let max = match kind {
        CredentialType::Password => policy.password_max_lifetime,
        CredentialType::Certificate => policy.key_max_lifetime,
    };
    let Some(max) = max.filter(|m| now + *m < end) else {
        return Ok(PolicyOutcome::default());
    };
    let capped = now + max;
    Ok(PolicyOutcome {
        end: Some(capped),
        max_ttl_cap: max.to_std().ok(),
        warning: Some(format!(
            "{} limits {} lifetimes to {}: the credential ends at {}, sooner than the lease would allow",
            policy_name(policy),
            kind.as_str(),
            human_duration(max),
            capped.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
    })
}

/// Reads the policy in force for `app_object_id` (`None`: a new application) and applies it
/// to a credential of `kind` that would end at `end` ([`judge_policy`]). A principal without
/// permission to read policies (403) gets no check (Graph still enforces).
pub async fn apply_policy(
    client: &AzureClient,
    app_object_id: Option<&str>,
    kind: CredentialType,
    now: DateTime<Utc>,
    end: DateTime<Utc>,
    deadline: Deadline,
) -> Result<PolicyOutcome, LogicalError> {
    let answer = read_policy(client, app_object_id, now, deadline).await?;
    judge_policy(&answer, kind, now, end)
}

/// How long the last answer about the tenant's default policy plans a dynamic issuance.
/// Every issuance planned with it reads the policy again beside its first Azure call and
/// undoes what that call made when the new answer contradicts the plan, so the window bounds
/// how often a plan can be wrong, never what a handed-out credential may violate.
pub const POLICY_FRESH_FOR: Duration = Duration::from_secs(300);

/// The last answer about the tenant's default app management policy (the one new
/// applications get), per mount and process.
#[derive(Default)]
pub struct PolicyCache {
    state: std::sync::Mutex<PolicyCacheState>,
}

#[derive(Default)]
struct PolicyCacheState {
    /// Moves on when the configuration changes: answers read before are not stored.
    generation: u64,
    last: Option<(std::time::Instant, PolicyAnswer)>,
}

impl PolicyCache {
    fn state(&self) -> std::sync::MutexGuard<'_, PolicyCacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation a read starting now stores its answer under.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// The answer to plan with, if one younger than [`POLICY_FRESH_FOR`] is known, and the
    /// generation to store the next answer under.
    pub fn fresh(&self) -> (u64, Option<PolicyAnswer>) {
        self.fresh_at(std::time::Instant::now())
    }

    fn fresh_at(&self, now: std::time::Instant) -> (u64, Option<PolicyAnswer>) {
        let state = self.state();
        let answer = state
            .last
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < POLICY_FRESH_FOR)
            .map(|(_, a)| a.clone());
        (state.generation, answer)
    }

    /// Keeps `answer`, read under `generation`, unless the configuration changed since.
    pub fn store(&self, generation: u64, answer: PolicyAnswer) {
        let mut state = self.state();
        if state.generation == generation {
            state.last = Some((std::time::Instant::now(), answer));
        }
    }

    /// Forgets the answer after a failed read: the next issuance reads first.
    pub fn forget(&self, generation: u64) {
        let mut state = self.state();
        if state.generation == generation {
            state.last = None;
        }
    }

    /// Forgets the answer and any read in flight (the configuration changed).
    pub fn reset(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.last = None;
    }
}

/// How an issuance learns the tenant's policy.
pub(crate) enum PolicyPlan {
    /// Read before any Azure object is made (or the role needs no policy of the tenant
    /// default).
    Known(PolicyOutcome),
    /// Predicted from a fresh cached answer; a read beside round one verifies it
    /// ([`AzureBackend::policy_gate`]).
    Predicted {
        outcome: PolicyOutcome,
        generation: u64,
    },
}

/// The verification of a predicted policy, shared between the gate that runs beside round
/// one and the issuance that reads its result afterwards.
pub(crate) struct PolicyCheck {
    kind: CredentialType,
    now: DateTime<Utc>,
    /// The end date the role asks for, before any policy.
    planned_end: DateTime<Utc>,
    /// The end date round one used (the prediction's).
    used_end: DateTime<Utc>,
    generation: u64,
    result: std::sync::Mutex<Option<(Result<PolicyOutcome, LogicalError>, GateVerdict)>>,
}

impl PolicyCheck {
    pub(crate) fn new(
        kind: CredentialType,
        now: DateTime<Utc>,
        planned_end: DateTime<Utc>,
        used_end: DateTime<Utc>,
        generation: u64,
    ) -> PolicyCheck {
        PolicyCheck {
            kind,
            now,
            planned_end,
            used_end,
            generation,
            result: std::sync::Mutex::new(None),
        }
    }

    /// What the read beside round one found and decided (`None`: it never ran).
    pub(crate) fn take(&self) -> Option<(Result<PolicyOutcome, LogicalError>, GateVerdict)> {
        self.result.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The verdict on a prediction, given what the policy says now. A password is made in
    /// round two, after the verdict: it takes the new end date whatever it is, and only a
    /// block stops the issuance. A certificate rode in round one: an end date later than
    /// the new policy allows stops it (a shorter one than needed is kept).
    fn verdict(&self, fresh: &Result<PolicyOutcome, LogicalError>) -> GateVerdict {
        match (fresh, self.kind) {
            (Err(_), _) => GateVerdict::Stop,
            (Ok(o), CredentialType::Password) => GateVerdict::Proceed {
                password_end: Some(o.end.unwrap_or(self.planned_end)),
            },
            (Ok(o), CredentialType::Certificate) => {
                if o.end.unwrap_or(self.planned_end) < self.used_end {
                    GateVerdict::Stop
                } else {
                    GateVerdict::Proceed { password_end: None }
                }
            }
        }
    }
}

fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs % 86_400 == 0 {
        format!("{} days", secs / 86_400)
    } else {
        format!("{}s", secs)
    }
}

/// A clear 400 for a credential Graph refused because of an app management policy.
pub fn policy_error(e: &AzureError) -> Option<LogicalError> {
    let named = |id: &Option<String>| match id {
        Some(id) => format!("app management policy '{id}'"),
        None => "the tenant's app management policy".to_string(),
    };
    Some(LogicalError::bad_request(match e.policy_violation()? {
        PolicyViolation::CredentialTypeNotAllowed { policy_id } => format!(
            "Azure refused the credential: {} does not allow this credential type; use credential_type=certificate",
            named(&policy_id)
        ),
        PolicyViolation::InvalidLifetime { policy_id } => format!(
            "Azure refused the credential: its lifetime exceeds the maximum of {}; lower the role's ttl, max_ttl or explicit_max_ttl",
            named(&policy_id)
        ),
        PolicyViolation::Other { policy_id } => format!(
            "Azure refused the credential because of {}: {}",
            named(&policy_id),
            e.message()
        ),
    }))
}

/// A provisioning failure as the client sees it (policy refusals are 400s).
pub fn provision_failure(e: ProvisionError) -> LogicalError {
    let azure = match &e {
        ProvisionError::App(a)
        | ProvisionError::ServicePrincipal(a)
        | ProvisionError::Password(a)
        | ProvisionError::RoleAssignment(a)
        | ProvisionError::GroupMembership(a) => Some(a),
        ProvisionError::Wal(_) | ProvisionError::Stopped => None,
    };
    azure
        .and_then(policy_error)
        .unwrap_or_else(|| LogicalError::from(e))
}

fn expiration() -> String {
    (Utc::now() + chrono::Duration::hours(24)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

// ---------------------------------------------------------------- issuing

impl AzureBackend {
    /// Reads and applies the tenant's policy for a new credential of `role` ending at `end`,
    /// before anything is made. The answer for a new application is kept for
    /// [`AzureBackend::plan_policy`].
    pub(crate) async fn credential_policy_for(
        &self,
        client: &AzureClient,
        role: &Role,
        now: DateTime<Utc>,
        end: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<PolicyOutcome, LogicalError> {
        let kind = CredentialType::of(role);
        if !role.application_object_id.is_empty() {
            let app = Some(role.application_object_id.as_str());
            return apply_policy(client, app, kind, now, end, deadline).await;
        }
        let generation = self.policy_cache.generation();
        let answer = self
            .read_default_policy(client, generation, now, deadline)
            .await?;
        judge_policy(&answer, kind, now, end)
    }

    /// Reads the policy a new application gets and keeps the answer under `generation` (a
    /// failed read forgets the kept one).
    async fn read_default_policy(
        &self,
        client: &AzureClient,
        generation: u64,
        now: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<PolicyAnswer, LogicalError> {
        let answer = read_policy(client, None, now, deadline).await;
        match &answer {
            Ok(a) => self.policy_cache.store(generation, a.clone()),
            Err(_) => self.policy_cache.forget(generation),
        }
        answer
    }

    /// How a new credential of `role` ending at `end` learns the tenant's policy: a dynamic
    /// role with a fresh cached answer that allows the credential plans with it (verified
    /// beside round one, see [`AzureBackend::policy_gate`]); otherwise the policy is read
    /// first. A cached refusal is never trusted: the policy is read again.
    pub(crate) async fn plan_policy(
        &self,
        client: &AzureClient,
        role: &Role,
        now: DateTime<Utc>,
        end: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<PolicyPlan, LogicalError> {
        if role.application_object_id.is_empty() {
            let (generation, cached) = self.policy_cache.fresh();
            if let Some(Ok(outcome)) =
                cached.map(|a| judge_policy(&a, CredentialType::of(role), now, end))
            {
                return Ok(PolicyPlan::Predicted {
                    outcome,
                    generation,
                });
            }
        }
        self.credential_policy_for(client, role, now, end, deadline)
            .await
            .map(PolicyPlan::Known)
    }

    /// The check that runs beside round one of an issuance planned with a cached answer:
    /// reads the policy again, keeps the answer, and decides whether the issuance goes on
    /// ([`PolicyCheck::verdict`]); `check` holds what it found.
    pub(crate) fn policy_gate<'a>(
        &'a self,
        client: &'a AzureClient,
        check: &'a PolicyCheck,
        deadline: Deadline,
    ) -> Gate<'a> {
        Box::pin(async move {
            let fresh = self
                .read_default_policy(client, check.generation, check.now, deadline)
                .await
                .and_then(|a| judge_policy(&a, check.kind, check.now, check.planned_end));
            let verdict = check.verdict(&fresh);
            if verdict == GateVerdict::Stop {
                tracing::info!("the tenant's app management policy no longer allows the planned credential, or could not be read; undoing the application and answering under the policy as read now");
            }
            *check.result.lock().unwrap_or_else(|p| p.into_inner()) = Some((fresh, verdict));
            verdict
        })
    }

    /// Issues a certificate credential: a new application (and service principal) with
    /// the certificate registered in the create call, or a new key credential on the
    /// role's existing or persisted application.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn issue_certificate(
        &self,
        req: &Request,
        client: &AzureClient,
        name: &str,
        role: &Role,
        end: DateTime<Utc>,
        gate: Option<Gate<'_>>,
        deadline: Deadline,
    ) -> Result<(Response, Readiness), LogicalError> {
        let now = Utc::now();
        let display_name = format!("{KEY_DISPLAY_NAME}-{}", uuid::Uuid::new_v4());
        let generated = generate(&display_name, now, end)?;
        let tenant_id = client.settings().tenant_id.clone();
        let mut data = Map::new();
        let (resp, readiness) = if role.application_object_id.is_empty() {
            let roles = role.azure_roles.clone().unwrap_or_default();
            let groups = role.azure_groups.clone().unwrap_or_default();
            let app = role.new_application();
            let principal = provision::create_principal_gated(
                client,
                req.storage.as_ref(),
                PrincipalSpec {
                    app,
                    roles: &roles,
                    groups: &groups,
                    password_end: generated.not_after,
                    ready_timeout: role.ready_timeout(),
                },
                CredentialPlan::Certificate {
                    key: generated.key_credential(&display_name),
                    proof: generated.credential.clone(),
                },
                gate,
                deadline,
            )
            .await
            .map_err(provision_failure)?;
            tracing::info!(role = %name, app_id = %principal.app_id, thumbprint = %generated.credential.thumbprint_hex(), "issued a service principal with a certificate");
            data.insert("client_id".into(), json!(principal.app_id));
            data.insert("key_id".into(), json!(principal.key_id));
            let internal = lease::ServicePrincipalLease {
                app_object_id: principal.app_object_id.clone(),
                sp_object_id: principal.sp_object_id.clone(),
                role_assignment_ids: if roles.is_empty() {
                    None
                } else {
                    Some(principal.role_assignment_ids.clone())
                },
                group_membership_ids: principal.group_ids.clone(),
                role: name.to_string(),
                permanently_delete: role.permanently_delete,
                key_end_date: principal.key_end,
            };
            let mut internal = internal.to_map();
            internal.insert("credential_type".into(), json!("certificate"));
            (
                secret_response(SERVICE_PRINCIPAL, Map::new(), internal),
                principal.readiness,
            )
        } else {
            // A check beside round one has no round one to ride with here: it goes first.
            if let Some(gate) = gate {
                if gate.await == GateVerdict::Stop {
                    return Err(LogicalError::bad_request(
                        "the tenant's app management policy does not allow this credential",
                    ));
                }
            }
            let app_object_id = role.application_object_id.clone();
            let storage = req.storage.as_ref();
            let wal_id = wal::put(
                storage,
                WAL_ADD_KEY,
                json!({"AppObjID": app_object_id, "DisplayName": display_name, "Expiration": expiration()}),
            )
            .await
            .map_err(|e| LogicalError::internal(format!("error writing WAL: {e}")))?;
            let added = {
                let lock = self.app_lock(&app_object_id);
                let _guard = lock.lock().await;
                client
                    .graph()
                    .add_application_key_credential(
                        &app_object_id,
                        &generated.key_credential(&display_name),
                        deadline,
                    )
                    .await
            };
            let key = match added {
                Ok(k) => k,
                Err(e) => {
                    if e.status().is_some_and(|s| (400..500).contains(&s)) {
                        provision::forget_wal(storage, &wal_id).await;
                    }
                    return Err(policy_error(&e).unwrap_or_else(|| {
                        LogicalError::internal(format!("error adding the certificate: {e}"))
                    }));
                }
            };
            provision::forget_wal(storage, &wal_id).await;
            let readiness = match role.ready_timeout() {
                Some(t) => {
                    wait_until_certificate_usable(
                        client,
                        &role.application_id,
                        &generated.credential,
                        deadline.capped(t),
                    )
                    .await
                }
                None => Readiness::NotChecked,
            };
            tracing::info!(role = %name, app_object_id = %app_object_id, thumbprint = %generated.credential.thumbprint_hex(), "issued a certificate on an existing application");
            data.insert("client_id".into(), json!(role.application_id));
            data.insert("key_id".into(), json!(key.key_id));
            let internal = lease::StaticLease {
                app_object_id,
                key_id: key.key_id.clone(),
                key_end_date: key.end_date_time.unwrap_or(generated.not_after),
                role: name.to_string(),
            };
            let mut internal = internal.to_map();
            internal.insert("credential_type".into(), json!("certificate"));
            (
                secret_response(STATIC_SERVICE_PRINCIPAL, Map::new(), internal),
                readiness,
            )
        };
        data.insert("certificate".into(), json!(generated.cert_pem));
        data.insert("private_key".into(), json!(generated.key_pem.expose()));
        data.insert(
            "thumbprint".into(),
            json!(generated.credential.thumbprint_hex()),
        );
        data.insert("tenant_id".into(), json!(tenant_id));
        let mut resp = resp;
        resp.data = Some(data);
        Ok((resp, readiness))
    }

    /// Revokes a certificate on an existing application: removes exactly that key
    /// credential, leaving every other credential in place.
    pub(crate) async fn revoke_key_credential(
        &self,
        client: &AzureClient,
        app_object_id: &str,
        key_id: &str,
        deadline: Deadline,
    ) -> Result<(), LogicalError> {
        let lock = self.app_lock(app_object_id);
        let _guard = lock.lock().await;
        match client
            .graph()
            .remove_application_key_credential(app_object_id, key_id, deadline)
            .await
        {
            Ok(DeleteOutcome::Deleted) => Ok(()),
            Ok(DeleteOutcome::AlreadyGone) => {
                tracing::info!(app_object_id = %app_object_id, "application or certificate already gone; lease counts as revoked");
                Ok(())
            }
            Err(e) => Err(LogicalError::internal(format!(
                "error removing the certificate: {e}"
            ))),
        }
    }

    /// `rotate-root` for an engine that signs in with a certificate: a new certificate is
    /// added with `addKey` (proof signed by the current one), proven to obtain a token,
    /// stored, and only then is the old one removed with `removeKey` (proof signed by the
    /// new one).
    pub(crate) async fn rotate_root_certificate(
        &self,
        storage: &dyn Storage,
        mut config: store::Config,
        ttl: Duration,
        ready_timeout: Duration,
        deadline: Deadline,
    ) -> Result<Vec<String>, LogicalError> {
        let client = self.client(storage).await?;
        let current =
            ClientCertificate::from_pem(&config.client_certificate, &config.client_certificate_key)
                .map_err(|e| {
                    LogicalError::internal(format!("the configured client certificate: {e}"))
                })?;
        let app = client
            .graph()
            .find_application_by_app_id(&config.client_id, deadline)
            .await
            .map_err(|e| LogicalError::internal(e.to_string()))?
            .ok_or_else(|| LogicalError::internal("no application found"))?;
        let now = Utc::now();
        let mut end = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(182));
        let mut warnings = Vec::new();
        let policy = apply_policy(
            &client,
            Some(&app.id),
            CredentialType::Certificate,
            now,
            end,
            deadline,
        )
        .await?;
        if let Some(capped) = policy.end {
            end = capped;
        }
        warnings.extend(policy.warning);
        let display_name = format!("{KEY_DISPLAY_NAME}-root-{}", uuid::Uuid::new_v4());
        let generated = generate(&display_name, now, end)?;
        let wal_id = wal::put(
            storage,
            WAL_ROTATE_ROOT_CERT,
            json!({"AppObjID": app.id, "DisplayName": display_name, "Expiration": expiration()}),
        )
        .await
        .map_err(|e| LogicalError::internal(format!("error writing WAL: {e}")))?;
        let proof = current
            .proof_of_possession(&app.id)
            .map_err(|e| LogicalError::internal(e.to_string()))?;
        let added = client
            .graph()
            .add_application_key_with_proof(
                &app.id,
                &generated.key_credential(&display_name),
                &proof,
                deadline,
            )
            .await;
        let new_key = match added {
            Ok(k) => k,
            Err(e) => {
                if e.status().is_some_and(|s| (400..500).contains(&s)) {
                    provision::forget_wal(storage, &wal_id).await;
                }
                return Err(policy_error(&e).unwrap_or_else(|| {
                    LogicalError::internal(format!("failed to add the new certificate: {e}"))
                }));
            }
        };
        let ready = wait_until_certificate_usable(
            &client,
            &config.client_id,
            &generated.credential,
            deadline.capped(ready_timeout),
        )
        .await;
        if let Some(w) = ready.warning() {
            // Not proven: take the new certificate back out and keep the current one.
            let undo = client
                .graph()
                .remove_application_key_with_proof(&app.id, &new_key.key_id, &proof, deadline)
                .await;
            if undo.is_ok() {
                provision::forget_wal(storage, &wal_id).await;
            }
            return Err(LogicalError::internal(format!(
                "the new root certificate was not used: {w}; the current one stays in place"
            )));
        }
        let old_der = current.certificate_der().to_vec();
        config.client_certificate = generated.cert_pem.clone();
        config.client_certificate_key = generated.key_pem.expose().to_string();
        config.root_password_expiration_date = Some(generated.not_after);
        store::put_config(storage, &config).await.map_err(|e| {
            LogicalError::internal(format!("failed to save new configuration: {e}"))
        })?;
        provision::forget_wal(storage, &wal_id).await;
        self.reset_client().await;
        tracing::info!(thumbprint = %generated.credential.thumbprint_hex(), "root certificate rotated");

        // The old certificate goes, with a proof signed by the new one.
        let old_key_id = client
            .graph()
            .list_application_key_credentials(&app.id, deadline)
            .await
            .map(|keys| {
                keys.into_iter()
                    .find(|k| {
                        k.key.as_deref().is_some_and(|b| {
                            use base64::Engine;
                            base64::engine::general_purpose::STANDARD
                                .decode(b)
                                .is_ok_and(|d| d == old_der)
                        })
                    })
                    .map(|k| k.key_id)
            });
        match old_key_id {
            Ok(Some(key_id)) => {
                let removed = match generated.credential.proof_of_possession(&app.id) {
                    Ok(proof) => client
                        .graph()
                        .remove_application_key_with_proof(&app.id, &key_id, &proof, deadline)
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = removed {
                    warnings.push(format!(
                        "could not remove the previous root certificate: {e}"
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => warnings.push(format!(
                "could not look up the previous root certificate to remove it: {e}"
            )),
        }
        Ok(warnings)
    }
}

/// Rollback of [`WAL_ADD_KEY`] and [`WAL_ROTATE_ROOT_CERT`]: removes the key credentials
/// with the entry's display name (except one whose certificate is `keep_der`).
pub(crate) async fn rollback_key_credentials(
    client: &AzureClient,
    data: &Value,
    keep_der: Option<&[u8]>,
    deadline: Deadline,
) -> Result<(), String> {
    let app = provision::wal_str(data, "AppObjID");
    let name = provision::wal_str(data, "DisplayName");
    if app.is_empty() || name.is_empty() {
        return Ok(());
    }
    let keys = match client
        .graph()
        .list_application_key_credentials(&app, deadline)
        .await
    {
        Ok(k) => k,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    for k in keys
        .into_iter()
        .filter(|k| k.display_name.as_deref() == Some(name.as_str()))
    {
        let is_kept = keep_der.is_some_and(|der| {
            use base64::Engine;
            k.key.as_deref().is_some_and(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .is_ok_and(|d| d == der)
            })
        });
        if is_kept {
            continue;
        }
        client
            .graph()
            .remove_application_key_credential(&app, &k.key_id, deadline)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_types() {
        assert_eq!(
            CredentialType::parse("password").unwrap(),
            CredentialType::Password
        );
        assert_eq!(
            CredentialType::parse("Certificate").unwrap(),
            CredentialType::Certificate
        );
        let e = CredentialType::parse("pfx").unwrap_err();
        assert!(e.to_string().contains("credential_type"), "{e}");
        let mut role = Role::default();
        assert_eq!(CredentialType::of(&role), CredentialType::Password);
        role.credential_type = CredentialType::Certificate.stored();
        assert_eq!(CredentialType::of(&role), CredentialType::Certificate);
    }

    fn policy(restrict: impl FnOnce(&mut CredentialPolicy)) -> PolicyAnswer {
        let mut p = CredentialPolicy {
            policy_id: Some("00000000-0000-0000-0000-000000000000".into()),
            is_tenant_default: true,
            ..CredentialPolicy::default()
        };
        restrict(&mut p);
        PolicyAnswer::Policy(p)
    }

    #[test]
    fn the_policy_cache_keeps_fresh_answers_of_the_current_configuration() {
        let cache = PolicyCache::default();
        assert_eq!(cache.fresh().1, None, "nothing known at first");
        let generation = cache.generation();
        cache.store(generation, PolicyAnswer::Unreadable);
        assert_eq!(cache.fresh(), (generation, Some(PolicyAnswer::Unreadable)));
        let later = std::time::Instant::now() + POLICY_FRESH_FOR;
        assert_eq!(cache.fresh_at(later).1, None, "stale after the window");

        // A failed read forgets the answer.
        cache.forget(generation);
        assert_eq!(cache.fresh().1, None);

        // A configuration change forgets it too, and an answer read before it is not kept.
        cache.store(generation, PolicyAnswer::Unreadable);
        cache.reset();
        assert_eq!(cache.fresh().1, None);
        cache.store(generation, PolicyAnswer::Unreadable);
        assert_eq!(cache.fresh().1, None, "a read from before the change");
        cache.forget(generation);
        cache.store(cache.generation(), policy(|_| {}));
        assert!(cache.fresh().1.is_some());
    }

    #[test]
    fn judging_a_policy() {
        let now = Utc::now();
        let end = now + chrono::Duration::days(30);
        let kinds = [CredentialType::Password, CredentialType::Certificate];
        for kind in kinds {
            let none = judge_policy(&PolicyAnswer::Unreadable, kind, now, end).unwrap();
            assert!(none.end.is_none() && none.warning.is_none());
            let disabled = PolicyAnswer::Policy(CredentialPolicy::default());
            assert!(judge_policy(&disabled, kind, now, end)
                .unwrap()
                .end
                .is_none());
        }
        let blocked = policy(|p| p.password_addition_blocked = true);
        let e = judge_policy(&blocked, CredentialType::Password, now, end).unwrap_err();
        assert!(matches!(e, LogicalError::BadRequest(_)), "{e:?}");
        assert!(judge_policy(&blocked, CredentialType::Certificate, now, end).is_ok());
        let capped = policy(|p| p.key_max_lifetime = Some(chrono::Duration::days(7)));
        let o = judge_policy(&capped, CredentialType::Certificate, now, end).unwrap();
        assert_eq!(o.end, Some(now + chrono::Duration::days(7)));
        assert_eq!(o.max_ttl_cap, Some(Duration::from_secs(7 * 86_400)));
        assert!(o.warning.unwrap().contains("7 days"));
        let o = judge_policy(&capped, CredentialType::Password, now, end).unwrap();
        assert!(o.end.is_none(), "a key cap leaves passwords alone");
    }

    #[test]
    fn a_prediction_is_stopped_only_when_the_new_policy_forbids_what_was_made() {
        let now = Utc::now();
        let planned = now + chrono::Duration::days(30);
        let week = now + chrono::Duration::days(7);
        let verdict = |kind, used, fresh: Result<PolicyOutcome, LogicalError>| {
            PolicyCheck::new(kind, now, planned, used, 0).verdict(&fresh)
        };
        let capped_at = |end| {
            Ok(PolicyOutcome {
                end: Some(end),
                ..PolicyOutcome::default()
            })
        };
        // Passwords are made after the verdict: they take the new end date, and only a
        // refusal (blocked, or the policy could not be read) stops them.
        assert_eq!(
            verdict(CredentialType::Password, planned, capped_at(week)),
            GateVerdict::Proceed {
                password_end: Some(week)
            }
        );
        assert_eq!(
            verdict(CredentialType::Password, week, Ok(PolicyOutcome::default())),
            GateVerdict::Proceed {
                password_end: Some(planned)
            }
        );
        assert_eq!(
            verdict(
                CredentialType::Password,
                planned,
                Err(LogicalError::bad_request("blocked"))
            ),
            GateVerdict::Stop
        );
        // A certificate was made in round one: a later end date than the new cap stops it;
        // an earlier one (the policy was loosened) is kept.
        assert_eq!(
            verdict(CredentialType::Certificate, planned, capped_at(week)),
            GateVerdict::Stop
        );
        assert_eq!(
            verdict(
                CredentialType::Certificate,
                week,
                Ok(PolicyOutcome::default())
            ),
            GateVerdict::Proceed { password_end: None }
        );
        assert_eq!(
            verdict(CredentialType::Certificate, week, capped_at(week)),
            GateVerdict::Proceed { password_end: None }
        );
    }

    #[test]
    fn generates_a_certificate_with_its_key() {
        let now = Utc::now();
        let g = generate("vault-test", now, now + chrono::Duration::days(90)).unwrap();
        assert!(g.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(g
            .key_pem
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(g.not_after - g.not_before, chrono::Duration::days(90));
        assert!(!format!("{g:?}").contains("PRIVATE"));
        assert_eq!(g.credential.thumbprint_hex().len(), 40);
        // The key is RSA of at least 2048 bits and belongs to the certificate.
        assert!(ClientCertificate::from_pem(&g.cert_pem, g.key_pem.expose()).is_ok());
        assert!(generate("x", now, now).is_err());
    }
}
