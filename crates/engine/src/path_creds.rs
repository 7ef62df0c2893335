//! `creds/<role>`: issue a credential: a new service principal (dynamic roles) or a new
//! password on an existing or persisted application.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::backend::AzureBackend;
use super::certificate::{CredentialType, PolicyCheck, PolicyPlan};
use super::lease::{self, SERVICE_PRINCIPAL, STATIC_SERVICE_PRINCIPAL};
use super::provision::{
    self, CredentialPlan, Gate, GateVerdict, PrincipalSpec, Readiness, PASSWORD_DISPLAY_NAME,
};
use super::store::{self, Role};
use super::validate;
use azure_clients::{Deadline, NewApplication, NewPassword, DISPLAY_NAME_PREFIX};
use vault_plugin_sdk::framework::{
    secret_response, FieldData, FieldSchema, FieldType, HandlerResult, Path,
};
use vault_plugin_sdk::logical::{LogicalError, Map, Operation, Request, Response, Storage};

/// Issuance must finish inside the host's request timeout (90 s by default).
const ISSUE_DEADLINE: Duration = Duration::from_secs(75);

const SYNOPSIS: &str = "Request Service Principal credentials for a given Vault role.";
const DESCRIPTION: &str = "Reading this path issues a credential for the role: for a dynamic role, a new \
application and service principal (named vault-...) with the role's Azure role assignments and group \
memberships; for a role with application_object_id or persist_app, a new password on that application. \
The credential is returned once it has been proven to obtain a token (see the role's \
credential_ready_timeout), and is removed from Azure when its lease is revoked or expires.";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    let role = FieldSchema::new(FieldType::LowerCaseString, "Name of the Vault role.");
    Path::new(format!(
        "creds/(?P<role>{})",
        super::path_roles::NAME_PATTERN
    ))
    .field("role", role)
    .field(
        "metadata",
        FieldSchema::new(
            FieldType::KvPairs,
            "Request metadata (key=value pairs), returned merged under the role's metadata.",
        ),
    )
    .with_state(b)
    .read(
        AzureBackend::creds_read,
        "Request Service Principal credentials for a given Vault role.",
        "request-service-principal-credentials",
    )
    // Issuing writes the write-ahead log and creates objects in Azure: only the active
    // node of the primary cluster does it.
    .forwarded(&[Operation::Read])
    .help(SYNOPSIS, DESCRIPTION)
    .into_path()
}

/// Lease TTL and max TTL of a role's credentials (explicit_max_ttl caps max_ttl).
pub fn lease_ttls(role: &Role) -> (Duration, Duration) {
    let mut max_ttl = role.max_ttl;
    if !role.explicit_max_ttl.is_zero() && (max_ttl.is_zero() || role.explicit_max_ttl < max_ttl) {
        max_ttl = role.explicit_max_ttl;
    }
    (role.ttl, max_ttl)
}

/// Adds the request's metadata under the role's to a credential response.
fn add_metadata(resp: &mut Response, role: &Role, data: &FieldData) -> Result<(), LogicalError> {
    if let Some(d) = resp.data.as_mut() {
        let mut metadata = data.map_ok("metadata")?.unwrap_or_default();
        for (k, v) in role.metadata.iter().flatten() {
            metadata.insert(k.clone(), json!(v));
        }
        d.insert("metadata".into(), serde_json::Value::Object(metadata));
    }
    Ok(())
}

impl AzureBackend {
    /// The Azure-side end date of a new password: `explicit_max_ttl` if set, else the
    /// lease's effective max TTL, so a password Vault forgets still expires in Azure.
    pub(crate) async fn password_end(
        &self,
        role: &Role,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LogicalError> {
        let life = if !role.explicit_max_ttl.is_zero() {
            role.explicit_max_ttl
        } else if !role.max_ttl.is_zero() {
            role.max_ttl
        } else {
            self.system_view
                .max_lease_ttl()
                .await
                .map_err(|e| LogicalError::internal(e.to_string()))?
        };
        let life = chrono::Duration::from_std(life).unwrap_or(chrono::Duration::days(3650));
        Ok(now + life)
    }

    async fn creds_read(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("role")?;
        let client = self.client(req.storage.as_ref()).await?;
        let role = store::get_role(req.storage.as_ref(), &name)
            .await?
            .ok_or_else(|| LogicalError::bad_request(format!("role '{name}' does not exist")))?;
        let deadline = Deadline::after(ISSUE_DEADLINE);
        // Stored roles are checked again before any Azure call: they may predate these
        // checks (or come from the Go engine's storage), and the configured identity may
        // have changed since the role was written.
        validate::check_azure_roles(role.azure_roles.as_deref().unwrap_or_default())
            .and_then(|()| {
                validate::check_azure_groups(role.azure_groups.as_deref().unwrap_or_default())
            })
            .map_err(|e| {
                LogicalError::bad_request(format!(
                    "role '{name}' cannot issue credentials: {e}; write the role again with valid values"
                ))
            })?;
        // A pooled credential first: no Azure call on this path.
        let mut pool_warning = None;
        if role.pool_size > 0 {
            match super::pool::take(&self, &req.storage, &name, &role).await {
                super::pool::Taken::Credential(mut resp) => {
                    add_metadata(&mut resp, &role, &data)?;
                    return Ok(Some(*resp));
                }
                super::pool::Taken::Empty(warning) => pool_warning = Some(warning),
            }
        }
        if !role.application_object_id.is_empty() {
            validate::check_object_id("application_object_id", &role.application_object_id)?;
            self.refuse_own_application(
                &client,
                &role.application_id,
                &role.application_object_id,
                deadline,
            )
            .await?;
        }
        let now = Utc::now();
        let end = self.password_end(&role, now).await?;
        let (ttl, max_ttl) = lease_ttls(&role);
        // The tenant's app management policy: read before any Azure object is made, or, for
        // a dynamic role whose mount knows a fresh answer, planned with that answer and read
        // again beside the first Azure call (docs/certificates.md).
        let (mut resp, readiness, policy) =
            match self.plan_policy(&client, &role, now, end, deadline).await? {
                PolicyPlan::Known(outcome) => {
                    let used = outcome.end.unwrap_or(end);
                    let (resp, readiness) = self
                        .issue(&req, &client, &name, &role, used, None, deadline)
                        .await?;
                    (resp, readiness, outcome)
                }
                PolicyPlan::Predicted {
                    outcome: predicted,
                    generation,
                } => {
                    let used = predicted.end.unwrap_or(end);
                    let kind = CredentialType::of(&role);
                    let check = PolicyCheck::new(kind, now, end, used, generation);
                    let gate = self.policy_gate(&client, &check, deadline);
                    let issued = self
                        .issue(&req, &client, &name, &role, used, Some(gate), deadline)
                        .await;
                    match (issued, check.take()) {
                        // A password was made after the check, under the policy it read.
                        (Ok((resp, readiness)), Some((Ok(fresh), _)))
                            if kind == CredentialType::Password =>
                        {
                            (resp, readiness, fresh)
                        }
                        (Ok((resp, readiness)), _) => (resp, readiness, predicted),
                        // The policy changed in a way that matters: round one was undone;
                        // answer as a read before it would have.
                        (Err(_), Some((fresh, GateVerdict::Stop))) => {
                            let outcome = fresh?;
                            let (resp, readiness) = self
                                .issue(
                                    &req,
                                    &client,
                                    &name,
                                    &role,
                                    outcome.end.unwrap_or(end),
                                    None,
                                    deadline,
                                )
                                .await?;
                            (resp, readiness, outcome)
                        }
                        (Err(e), _) => return Err(e),
                    }
                }
            };
        let (ttl, max_ttl) = match policy.max_ttl_cap {
            Some(cap) => (
                if ttl.is_zero() { ttl } else { ttl.min(cap) },
                if max_ttl.is_zero() {
                    cap
                } else {
                    max_ttl.min(cap)
                },
            ),
            None => (ttl, max_ttl),
        };
        if let Some(secret) = resp.secret.as_mut() {
            secret.lease.ttl = ttl;
            secret.lease.max_ttl = max_ttl;
        }
        add_metadata(&mut resp, &role, &data)?;
        if let (Some(d), Some(ms)) = (resp.data.as_mut(), readiness.waited_ms()) {
            d.insert("credential_ready_wait_ms".into(), json!(ms));
        }
        if let Some(w) = readiness.warning() {
            resp.add_warning(w);
        }
        if let Some(w) = policy.warning {
            resp.add_warning(w);
        }
        if let Some(w) = pool_warning {
            resp.add_warning(w);
        }
        for w in self.usage_after_issue(&name, &role) {
            resp.add_warning(w);
        }
        Ok(Some(resp))
    }

    /// The credential of `role` ending at `end` (before the tenant's policy has a say on
    /// a password made after `gate`): a certificate, a new service principal, or a password
    /// on the role's application.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        req: &Request,
        client: &azure_clients::AzureClient,
        name: &str,
        role: &Role,
        end: DateTime<Utc>,
        gate: Option<Gate<'_>>,
        deadline: Deadline,
    ) -> Result<(Response, Readiness), LogicalError> {
        if CredentialType::of(role) == CredentialType::Certificate {
            self.issue_certificate(req, client, name, role, end, gate, deadline)
                .await
        } else if role.application_object_id.is_empty() {
            let app = role.new_application();
            self.issue_service_principal_gated(
                req.storage.as_ref(),
                client,
                name,
                role,
                app,
                end,
                gate,
                deadline,
            )
            .await
        } else {
            // No round one to ride with: a check goes first.
            if let Some(gate) = gate {
                if gate.await == GateVerdict::Stop {
                    return Err(LogicalError::bad_request(
                        "the tenant's app management policy does not allow this credential",
                    ));
                }
            }
            let display_name = format!("{PASSWORD_DISPLAY_NAME}-{}", uuid::Uuid::new_v4());
            self.issue_password(
                req.storage.as_ref(),
                client,
                name,
                role,
                display_name,
                end,
                deadline,
            )
            .await
        }
    }

    /// A new application `app` with its service principal, password, role assignments
    /// and group memberships, as the response `creds` returns.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn issue_service_principal(
        &self,
        storage: &dyn Storage,
        client: &azure_clients::AzureClient,
        name: &str,
        role: &Role,
        app: NewApplication,
        end: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<(Response, Readiness), LogicalError> {
        self.issue_service_principal_gated(storage, client, name, role, app, end, None, deadline)
            .await
    }

    /// [`AzureBackend::issue_service_principal`] with `gate` beside round one (see
    /// [`provision::create_principal_gated`]).
    #[allow(clippy::too_many_arguments)]
    async fn issue_service_principal_gated(
        &self,
        storage: &dyn Storage,
        client: &azure_clients::AzureClient,
        name: &str,
        role: &Role,
        app: NewApplication,
        end: DateTime<Utc>,
        gate: Option<Gate<'_>>,
        deadline: Deadline,
    ) -> Result<(Response, Readiness), LogicalError> {
        let roles = role.azure_roles.clone().unwrap_or_default();
        let groups = role.azure_groups.clone().unwrap_or_default();
        let principal = provision::create_principal_gated(
            client,
            storage,
            PrincipalSpec {
                app,
                roles: &roles,
                groups: &groups,
                password_end: end,
                ready_timeout: role.ready_timeout(),
            },
            CredentialPlan::ApplicationPassword,
            gate,
            deadline,
        )
        .await
        .map_err(super::certificate::provision_failure)?;
        tracing::info!(role = %name, app_id = %principal.app_id, "issued a service principal");

        let mut data = Map::new();
        data.insert("client_id".into(), json!(principal.app_id));
        data.insert("client_secret".into(), json!(principal.secret.expose()));
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
        Ok((
            secret_response(SERVICE_PRINCIPAL, data, internal.to_map()),
            principal.readiness,
        ))
    }

    /// A new password named `display_name` on the role's application, as the response
    /// `creds` returns.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn issue_password(
        &self,
        storage: &dyn Storage,
        client: &azure_clients::AzureClient,
        name: &str,
        role: &Role,
        display_name: String,
        end: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<(Response, Readiness), LogicalError> {
        let app_object_id = role.application_object_id.clone();
        debug_assert!(display_name.starts_with(DISPLAY_NAME_PREFIX));
        let wal_id = provision::wal_password(storage, &app_object_id, &display_name)
            .await
            .map_err(LogicalError::from)?;
        let password = self
            .add_app_password(client, storage, &wal_id, &app_object_id, &NewPassword { display_name: Some(display_name.clone()), start: None, end: Some(end) }, deadline)
            .await
            .map_err(|e| {
                if let Some(policy) = super::certificate::policy_error(&e) {
                    policy
                } else if e.is_too_many_passwords() {
                    LogicalError::internal(
                        "error updating credentials: maximum number of Application passwords reached",
                    )
                } else {
                    LogicalError::internal(format!("error updating credentials: {e}"))
                }
            })?;
        provision::forget_wal(storage, &wal_id).await;
        let secret = password.secret_text.clone().ok_or_else(|| {
            LogicalError::internal("error updating credentials: Graph returned no secret text")
        })?;
        let readiness = match role.ready_timeout() {
            Some(t) => {
                provision::wait_until_usable(
                    client,
                    &role.application_id,
                    &secret,
                    deadline.capped(t),
                )
                .await
            }
            None => Readiness::NotChecked,
        };
        tracing::info!(role = %name, app_object_id = %app_object_id, "issued a password on an existing application");
        let mut data = Map::new();
        data.insert("client_id".into(), json!(role.application_id));
        data.insert("client_secret".into(), json!(secret.expose()));
        let internal = lease::StaticLease {
            app_object_id,
            key_id: password.key_id,
            key_end_date: password.end_date_time.unwrap_or(end),
            role: name.to_string(),
        };
        Ok((
            secret_response(STATIC_SERVICE_PRINCIPAL, data, internal.to_map()),
            readiness,
        ))
    }
}
