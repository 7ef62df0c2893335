//! `roles/<name>` and `roles/`: the role definitions credentials are issued from.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::backend::{storage_failure, AzureBackend};
use super::provision::{self, PrincipalSpec};
use super::store::{self, AzureGroup, AzureRole, Role, DEFAULT_CREDENTIAL_READY_TIMEOUT};
use super::validate::{self, shown};
use azure_clients::{AzureClient, AzureError, Deadline, NewApplication};
use vault_plugin_sdk::framework::{
    handler, FieldData, FieldSchema, FieldType, HandlerResult, OperationHandler, Path,
};
use vault_plugin_sdk::logical::{LogicalError, Map, Operation, Request, Response};

/// Time allowed for the Azure calls of one request.
const AZURE_TIMEOUT: Duration = Duration::from_secs(60);

/// Lifetime of the service-principal password made with a persisted application. Nobody
/// ever sees it (credentials are passwords on the application), so it only needs to exist.
const PERSISTED_SP_PASSWORD_TTL: Duration = Duration::from_secs(3600);

/// The values `sign_in_audience` accepts (case-sensitive).
const SIGN_IN_AUDIENCES: [&str; 4] = [
    "AzureADMyOrg",
    "AzureADMultipleOrgs",
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];

const MAX_TAG_LEN: usize = 256;

const NOTHING_TO_ISSUE: &str =
    "either azure_roles, azure_groups or application_object_id must be provided";

const SYNOPSIS: &str = "Manage the Vault roles used to generate Azure credentials.";
const DESCRIPTION: &str = "A role decides what credentials `creds/<role>` issues. With \
azure_roles and/or azure_groups, each request makes a new application and service principal \
with those role assignments and group memberships. With application_object_id, each request \
adds a password to that existing application. With persist_app, the role owns one application \
(made when the role is written, deleted with the role) and each request adds a password to it. \
azure_roles is a JSON list of {\"role_name\", \"role_id\", \"scope\"}; azure_groups a JSON list \
of {\"group_name\", \"object_id\"}. Names are resolved to ids when the role is written.";
const LIST_SYNOPSIS: &str = "List existing roles.";
const LIST_DESCRIPTION: &str = "List the names of the roles of this mount.";

/// The pattern of a role name.
pub const NAME_PATTERN: &str = r"\w(([\w.-]+)?\w)?";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new(format!("roles/(?P<name>{NAME_PATTERN})"))
        .fields(role_fields())
        .with_state(b)
        .read(AzureBackend::role_read, "Read a role.", "read-role")
        .write(
            AzureBackend::role_write,
            "Create or update a role.",
            "write-role",
        )
        .delete(AzureBackend::role_delete, "Delete a role.", "delete-role")
        .exists(AzureBackend::role_exists)
        .forwarded(&[Operation::Create, Operation::Update, Operation::Delete])
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

pub fn list_path(_b: &Arc<AzureBackend>) -> Path {
    Path::new("roles/?")
        .operation(
            Operation::List,
            OperationHandler::new(
                handler(|req, _| async move {
                    let keys = req.storage.list(store::ROLES_PREFIX).await?;
                    Ok(Some(Response::list(keys)))
                }),
                "List the roles.",
                "list-roles",
            ),
        )
        .help(LIST_SYNOPSIS, LIST_DESCRIPTION)
}

/// Tags as stored: trimmed, empties dropped, de-duplicated, sorted; then checked.
pub fn normalize_tags(tags: Vec<String>) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = tags
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    for tag in &tags {
        if tag.len() > MAX_TAG_LEN {
            return Err(
                "individual tag size must be between 1 and 256 characters (inclusive)".into(),
            );
        }
        if tag.chars().any(char::is_whitespace) {
            return Err("whitespaces are not allowed in tags".into());
        }
    }
    Ok(tags)
}

/// Decodes the first JSON value of `raw` (trailing text is ignored, as the Go engine's
/// decoder does); `null` means none.
fn parse_json_list<T: DeserializeOwned>(raw: &str) -> Result<Option<Vec<T>>, String> {
    match serde_json::Deserializer::from_str(raw)
        .into_iter::<Option<Vec<T>>>()
        .next()
    {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no JSON value found".into()),
    }
}

pub fn parse_azure_roles(raw: &str) -> Result<Option<Vec<AzureRole>>, LogicalError> {
    parse_json_list(raw).map_err(|e| {
        LogicalError::bad_request(format!("error parsing azure_roles '{}': {e}", shown(raw)))
    })
}

pub fn parse_azure_groups(raw: &str) -> Result<Option<Vec<AzureGroup>>, LogicalError> {
    parse_json_list(raw).map_err(|e| {
        LogicalError::bad_request(format!("error parsing azure_groups '{}': {e}", shown(raw)))
    })
}

/// Checks the TTL rules of a role.
fn check_ttls(role: &Role) -> Result<(), LogicalError> {
    if !role.max_ttl.is_zero() && role.ttl > role.max_ttl {
        return Err(LogicalError::bad_request(
            "ttl cannot be greater than max_ttl",
        ));
    }
    if !role.explicit_max_ttl.is_zero() {
        if role.ttl > role.explicit_max_ttl {
            return Err(LogicalError::bad_request(
                "ttl cannot be greater than explicit_max_ttl",
            ));
        }
        if role.max_ttl > role.explicit_max_ttl {
            return Err(LogicalError::bad_request(
                "max_ttl cannot be greater than explicit_max_ttl",
            ));
        }
    }
    Ok(())
}

/// The response data of a role.
fn role_data(role: &Role) -> Map {
    let mut data = Map::new();
    data.insert("ttl".into(), json!(role.ttl.as_secs()));
    data.insert("max_ttl".into(), json!(role.max_ttl.as_secs()));
    data.insert(
        "explicit_max_ttl".into(),
        json!(role.explicit_max_ttl.as_secs()),
    );
    data.insert("azure_roles".into(), json!(role.azure_roles));
    data.insert("azure_groups".into(), json!(role.azure_groups));
    data.insert(
        "application_object_id".into(),
        json!(role.application_object_id),
    );
    data.insert("permanently_delete".into(), json!(role.permanently_delete));
    data.insert("persist_app".into(), json!(role.persist_app));
    data.insert("sign_in_audience".into(), json!(role.sign_in_audience));
    data.insert("tags".into(), json!(role.tags));
    // Shown only for certificates, so a password role reads back as the Go engine's does.
    let kind = super::certificate::CredentialType::of(role);
    if kind != super::certificate::CredentialType::Password {
        data.insert("credential_type".into(), json!(kind.as_str()));
    }
    data.insert(
        "credential_ready_timeout".into(),
        json!(role
            .credential_ready_timeout
            .unwrap_or(DEFAULT_CREDENTIAL_READY_TIMEOUT)
            .as_secs()),
    );
    data.insert(
        "metadata".into(),
        json!(role.metadata.clone().unwrap_or_default()),
    );
    // Shown only for pooled roles, so other roles read back as the Go engine's do.
    if role.pool_size > 0 {
        data.insert("pool_size".into(), json!(role.pool_size));
    }
    data
}

/// Resolves one Azure role to its definition: by `role_id` if given, else by exact
/// `role_name` at the role's own scope.
async fn resolve_role(
    client: &AzureClient,
    role: &AzureRole,
    deadline: Deadline,
) -> Result<AzureRole, LogicalError> {
    let def = if !role.role_id.is_empty() {
        client
            .arm()
            .get_role_definition(&role.role_id, deadline)
            .await
            .map_err(|e| {
                if e.is_not_found() || e.status() == Some(400) {
                    LogicalError::bad_request(format!(
                        "no role found for role_id: '{}'",
                        role.role_id
                    ))
                } else {
                    LogicalError::internal(format!("unable to lookup Azure role by id: {e}"))
                }
            })?
    } else {
        client
            .arm()
            .find_role_definition_by_name(&role.scope, &role.role_name, deadline)
            .await
            .map_err(|e| match e {
                AzureError::NoMatch { .. } => LogicalError::bad_request(format!(
                    "no role found for role_name: '{}' at scope '{}'",
                    role.role_name, role.scope
                )),
                AzureError::MultipleMatches { .. } => LogicalError::bad_request(format!(
                    "multiple matches found for role_name: '{}' at scope '{}'. Specify role by ID instead.",
                    role.role_name, role.scope
                )),
                // The scope does not exist or is malformed: the caller's mistake.
                e if matches!(e.status(), Some(400 | 404)) => LogicalError::bad_request(format!(
                    "unable to lookup Azure role by name at scope '{}': {e}",
                    role.scope
                )),
                e => LogicalError::internal(format!("unable to lookup Azure role by name: {e}")),
            })?
    };
    Ok(AzureRole {
        role_name: def.role_name,
        role_id: def.id,
        scope: role.scope.clone(),
    })
}

/// Resolves every Azure role (concurrently), reporting the first problem in list order.
async fn resolve_roles(
    client: &AzureClient,
    roles: &[AzureRole],
    deadline: Deadline,
) -> Result<Vec<AzureRole>, LogicalError> {
    let results = join_all(roles.iter().map(|r| resolve_role(client, r, deadline))).await;
    let mut seen = HashSet::new();
    let mut resolved = Vec::with_capacity(roles.len());
    for result in results {
        let role = result?;
        if !seen.insert((role.role_id.clone(), role.scope.clone())) {
            return Err(LogicalError::bad_request(format!(
                "duplicate role_id and scope: '{}', '{}'",
                role.role_id, role.scope
            )));
        }
        resolved.push(role);
    }
    Ok(resolved)
}

/// Resolves one group: by `object_id` if given, else by display name (exactly one match).
async fn resolve_group(
    client: &AzureClient,
    group: &AzureGroup,
    deadline: Deadline,
) -> Result<AzureGroup, LogicalError> {
    let found = if !group.object_id.is_empty() {
        client
            .graph()
            .get_group(&group.object_id, deadline)
            .await
            .map_err(|e| {
                // Graph answers 400 for an id that is not a GUID.
                if e.is_not_found() || e.status() == Some(400) {
                    LogicalError::bad_request(format!(
                        "no group found for object_id: '{}'",
                        group.object_id
                    ))
                } else {
                    LogicalError::internal(format!("unable to lookup Azure group: {e}"))
                }
            })?
    } else {
        client
            .graph()
            .find_group_by_name(&group.group_name, deadline)
            .await
            .map_err(|e| match e {
                AzureError::NoMatch { .. } => {
                    LogicalError::bad_request(format!("no group found for group_name: '{}'", group.group_name))
                }
                AzureError::MultipleMatches { .. } => LogicalError::bad_request(format!(
                    "multiple matches found for group_name: '{}'. Specify group by ObjectID instead.",
                    group.group_name
                )),
                e => LogicalError::internal(format!("unable to lookup Azure group: {e}")),
            })?
    };
    if found.id.is_empty() && found.display_name.is_empty() {
        return Err(LogicalError::bad_request(
            "could not find a group with that ID",
        ));
    }
    Ok(AzureGroup {
        group_name: found.display_name,
        object_id: found.id,
    })
}

/// Resolves every group (concurrently), reporting the first problem in list order.
async fn resolve_groups(
    client: &AzureClient,
    groups: &[AzureGroup],
    deadline: Deadline,
) -> Result<Vec<AzureGroup>, LogicalError> {
    let results = join_all(groups.iter().map(|g| resolve_group(client, g, deadline))).await;
    let mut seen = HashSet::new();
    let mut resolved = Vec::with_capacity(groups.len());
    for result in results {
        let group = result?;
        if !seen.insert(group.object_id.clone()) {
            return Err(LogicalError::bad_request(format!(
                "duplicate object_id '{}'",
                group.object_id
            )));
        }
        resolved.push(group);
    }
    Ok(resolved)
}

impl AzureBackend {
    async fn role_exists(
        self: Arc<Self>,
        req: Request,
        data: FieldData,
    ) -> Result<bool, LogicalError> {
        Ok(store::get_role(req.storage.as_ref(), &data.str("name")?)
            .await?
            .is_some())
    }

    async fn role_read(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let storage = req.storage.as_ref();
        if store::get_config(storage).await?.is_none() {
            return Err(LogicalError::internal("config is nil"));
        }
        Ok(store::get_role(storage, &data.str("name")?)
            .await?
            .map(|role| Response::with_data(role_data(&role))))
    }

    async fn role_write(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let storage = req.storage.clone();
        if store::get_config(storage.as_ref()).await?.is_none() {
            return Err(LogicalError::internal("config is nil"));
        }
        // Role names are resolved in Azure before the role is stored: not on a standby.
        self.ensure_writable().await?;
        let client = self.client(storage.as_ref()).await?;
        let deadline = Deadline::after(AZURE_TIMEOUT);

        // One write or delete of a role at a time (a persisted application is made once).
        let lock = self.app_lock(&format!("{}{name}", store::ROLES_PREFIX));
        let _guard = lock.lock().await;

        let stored = store::get_role(storage.as_ref(), &name).await?;
        let creating = stored.is_none();
        if creating && req.operation == Operation::Update {
            return Err(LogicalError::internal(
                "role entry not found during update operation",
            ));
        }
        let mut role = stored.unwrap_or_default();

        for (field, slot) in [
            ("ttl", &mut role.ttl),
            ("max_ttl", &mut role.max_ttl),
            ("explicit_max_ttl", &mut role.explicit_max_ttl),
        ] {
            if let Some(d) = data.duration_ok(field)? {
                *slot = d;
            }
        }
        check_ttls(&role)?;

        if let Some(p) = data.bool_ok("permanently_delete")? {
            role.permanently_delete = p;
        }
        if let Some(aud) = data.str_ok("sign_in_audience")? {
            if !SIGN_IN_AUDIENCES.contains(&aud.as_str()) {
                return Err(LogicalError::bad_request(format!(
                    "Invalid value for sign_in_audience field. Valid values are: {}",
                    SIGN_IN_AUDIENCES.join(", ")
                )));
            }
            role.sign_in_audience = aud;
        }
        if let Some(tags) = data.strings_ok("tags")? {
            role.tags = Some(normalize_tags(tags).map_err(LogicalError::BadRequest)?);
        }
        if let Some(t) = data.duration_ok("credential_ready_timeout")? {
            role.credential_ready_timeout = Some(t);
        }
        if let Some(m) = data.map_ok("metadata")? {
            role.metadata = Some(
                m.into_iter()
                    .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                    .collect(),
            );
        }
        if let Some(t) = data.str_ok("credential_type")? {
            role.credential_type = super::certificate::CredentialType::parse(&t)?.stored();
        }

        // Decoded and checked before any Azure call, so that bad input costs none.
        if let Some(raw) = data.str_ok("azure_roles")? {
            role.azure_roles = parse_azure_roles(&raw)?;
        }
        if let Some(raw) = data.str_ok("azure_groups")? {
            role.azure_groups = parse_azure_groups(&raw)?;
        }
        validate::check_azure_roles(role.azure_roles.as_deref().unwrap_or_default())?;
        validate::check_azure_groups(role.azure_groups.as_deref().unwrap_or_default())?;

        // The application of a persisted role is always the one the engine made for it.
        if let Some(p) = data.bool_ok("persist_app")? {
            if !p && role.persist_app && !role.managed_application_object_id.is_empty() {
                return Err(LogicalError::bad_request(
                    "persist_app cannot be turned off on a role that has a persisted application; \
                     delete the role to remove that application",
                ));
            }
            role.persist_app = p;
        }
        if let Some(id) = data.str_ok("application_object_id")? {
            if role.persist_app && !id.is_empty() && id != role.managed_application_object_id {
                return Err(LogicalError::bad_request(
                    "application_object_id cannot be given together with persist_app=true: \
                     the engine makes the role's application itself",
                ));
            }
            role.application_object_id = id;
        }
        if role.persist_app {
            role.application_object_id = role.managed_application_object_id.clone();
        }
        if !role.application_object_id.is_empty() {
            validate::check_object_id("application_object_id", &role.application_object_id)?;
            // The role's own persisted application may be purged on delete; an existing
            // application the role does not own may not.
            if role.permanently_delete && !role.persist_app {
                return Err(LogicalError::bad_request(
                    "permanently_delete must be false if application_object_id is provided",
                ));
            }
        }
        let no_roles = role.azure_roles.as_ref().is_none_or(Vec::is_empty);
        let no_groups = role.azure_groups.as_ref().is_none_or(Vec::is_empty);
        if role.application_object_id.is_empty() && no_roles && no_groups {
            return Err(LogicalError::bad_request(NOTHING_TO_ISSUE));
        }
        let pool_size = match data.get_ok("pool_size")? {
            Some(v) => v.as_i64().unwrap_or(-1),
            None => i64::from(role.pool_size),
        };
        role.pool_size = super::pool::check_pool_size(&role, pool_size)?;

        if role.application_object_id.is_empty() {
            role.application_id.clear();
        } else {
            self.check_application(&client, &mut role, deadline).await?;
        }

        if let Some(roles) = role.azure_roles.take() {
            role.azure_roles = Some(resolve_roles(&client, &roles, deadline).await?);
        }
        if let Some(groups) = role.azure_groups.take() {
            role.azure_groups = Some(resolve_groups(&client, &groups, deadline).await?);
        }

        if role.persist_app {
            self.provision_persisted(&client, &req, &name, &mut role, deadline)
                .await
                .map_err(|e| {
                    LogicalError::internal(format!("could not create persisted app: {e}"))
                })?;
        }

        store::put_role(storage.as_ref(), &name, &role)
            .await
            .map_err(|e| storage_failure("error storing role", e))?;
        // Pooled credentials of the previous role are drained; the pool refills.
        super::pool::role_changed(&self, storage, &name);
        Ok(None)
    }

    /// Loads the role's application (to learn its client id) and checks the role may use it.
    async fn check_application(
        &self,
        client: &Arc<AzureClient>,
        role: &mut Role,
        deadline: Deadline,
    ) -> Result<(), LogicalError> {
        let app = client
            .graph()
            .get_application(&role.application_object_id, deadline)
            .await
            .map_err(|e| {
                let message = format!("error loading Application: {e}");
                // Graph answers 404 for an unknown id and 400 for one that is not a GUID.
                if e.is_not_found() || e.status() == Some(400) {
                    LogicalError::BadRequest(message)
                } else {
                    LogicalError::Internal(message)
                }
            })?;
        self.refuse_own_application(client, &app.app_id, &role.application_object_id, deadline)
            .await?;
        role.application_id = app.app_id;
        Ok(())
    }

    /// Makes the role's application on its first write; re-applies its role assignments
    /// and group memberships on later writes.
    async fn provision_persisted(
        &self,
        client: &AzureClient,
        req: &Request,
        name: &str,
        role: &mut Role,
        deadline: Deadline,
    ) -> Result<(), String> {
        let roles = role.azure_roles.clone().unwrap_or_default();
        let groups = role.azure_groups.clone().unwrap_or_default();
        if role.managed_application_object_id.is_empty() {
            let now = Utc::now();
            let app = NewApplication {
                sign_in_audience: Some(role.sign_in_audience.clone()).filter(|a| !a.is_empty()),
                tags: role.tags.clone().unwrap_or_default(),
                ..NewApplication::persisted(name, now)
            };
            // A certificate role's application gets no service principal password (a
            // tenant that blocks passwords would refuse it).
            let plan = if super::certificate::CredentialType::of(role)
                == super::certificate::CredentialType::Certificate
            {
                provision::CredentialPlan::Nothing
            } else {
                provision::CredentialPlan::Password
            };
            let principal = provision::create_principal_with(
                client,
                req.storage.as_ref(),
                PrincipalSpec {
                    app,
                    roles: &roles,
                    groups: &groups,
                    password_end: now + PERSISTED_SP_PASSWORD_TTL,
                    ready_timeout: None,
                },
                plan,
                deadline,
            )
            .await
            .map_err(|e| e.to_string())?;
            // The service principal's password is not used: dropped here.
            role.managed_application_object_id = principal.app_object_id.clone();
            role.application_object_id = principal.app_object_id;
            role.application_id = principal.app_id;
            role.sp_object_id = principal.sp_object_id;
            role.role_assignment_ids = Some(principal.role_assignment_ids);
            role.group_membership_ids = Some(principal.group_ids);
            return Ok(());
        }

        // Later write: replace the assignments and memberships of the role's principal.
        let sp = role.sp_object_id.clone();
        let old_ras = role.role_assignment_ids.clone().unwrap_or_default();
        let old_groups = role.group_membership_ids.clone().unwrap_or_default();
        let (ra_errors, group_errors) = tokio::join!(
            provision::delete_role_assignments(client, &old_ras, deadline),
            provision::remove_memberships(client, &sp, &old_groups, deadline)
        );
        for e in ra_errors.iter().chain(&group_errors) {
            tracing::warn!(role = %name, error = %e, "could not remove a previous assignment of a persisted app");
        }
        let names: Vec<String> = roles
            .iter()
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let (assigned, joined) = tokio::join!(
            provision::assign_roles(client, &sp, &roles, &names, deadline),
            provision::add_memberships(client, &sp, &groups, deadline)
        );
        match assigned.and_then(|ras| joined.map(|group_ids| (ras, group_ids))) {
            Ok((ras, group_ids)) => {
                role.role_assignment_ids = Some(ras);
                role.group_membership_ids = Some(group_ids);
                Ok(())
            }
            Err(e) => {
                // Undo what was made, so that a retry starts clean.
                let new_ras: Vec<String> = roles
                    .iter()
                    .zip(&names)
                    .map(|(r, n)| provision::role_assignment_id(&r.scope, n))
                    .collect();
                let new_groups: Vec<String> = groups.iter().map(|g| g.object_id.clone()).collect();
                let (ra_errors, group_errors) = tokio::join!(
                    provision::delete_role_assignments(client, &new_ras, deadline),
                    provision::remove_memberships(client, &sp, &new_groups, deadline)
                );
                for e in ra_errors.iter().chain(&group_errors) {
                    tracing::warn!(role = %name, error = %e, "could not undo an assignment of a persisted app");
                }
                Err(e.to_string())
            }
        }
    }

    async fn role_delete(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let storage = req.storage.clone();
        // A persisted application is deleted in Azure before the role: not on a standby.
        self.ensure_writable().await?;
        let lock = self.app_lock(&format!("{}{name}", store::ROLES_PREFIX));
        let _guard = lock.lock().await;
        let Some(role) = store::get_role(storage.as_ref(), &name).await? else {
            return Ok(None);
        };
        let mut warnings = Vec::new();
        if role.persist_app && !role.managed_application_object_id.is_empty() {
            let client = self
                .client(storage.as_ref())
                .await
                .map_err(|e| LogicalError::internal(format!("error during delete: {e}")))?;
            let deadline = Deadline::after(AZURE_TIMEOUT);
            let ras = role.role_assignment_ids.clone().unwrap_or_default();
            let groups = role.group_membership_ids.clone().unwrap_or_default();
            let (ra_errors, group_errors) = tokio::join!(
                provision::delete_role_assignments(client.as_ref(), &ras, deadline),
                provision::remove_memberships(
                    client.as_ref(),
                    &role.sp_object_id,
                    &groups,
                    deadline
                )
            );
            warnings.extend(
                ra_errors
                    .iter()
                    .map(|e| format!("error removing role assignment: {e}")),
            );
            warnings.extend(
                group_errors
                    .iter()
                    .map(|e| format!("error removing group membership: {e}")),
            );
            provision::delete_app(
                client.as_ref(),
                &role.managed_application_object_id,
                role.permanently_delete,
                deadline,
            )
            .await
            .map_err(|e| LogicalError::internal(format!("error deleting persisted app: {e}")))?;
        }
        storage
            .delete(&format!("{}{name}", store::ROLES_PREFIX))
            .await
            .map_err(|e| storage_failure("error deleting role", e))?;
        super::pool::role_changed(&self, storage, &name);
        if warnings.is_empty() {
            return Ok(None);
        }
        let mut resp = Response::default();
        for w in warnings {
            resp.add_warning(w);
        }
        Ok(Some(resp))
    }
}

/// The path's fields.
fn role_fields() -> Vec<(&'static str, FieldSchema)> {
    vec![
        (
            "name",
            FieldSchema::new(
                FieldType::LowerCaseString,
                "Name of the role (lower-cased).",
            )
            .required(),
        ),
        (
            "azure_roles",
            FieldSchema::new(
                FieldType::String,
                "JSON list of Azure roles to assign: [{\"role_name\", \
                 \"role_id\", \"scope\"}].",
            ),
        ),
        (
            "azure_groups",
            FieldSchema::new(
                FieldType::String,
                "JSON list of Entra ID groups to join: [{\"group_name\", \
                 \"object_id\"}].",
            ),
        ),
        (
            "application_object_id",
            FieldSchema::new(
                FieldType::String,
                "Object id of an existing application: credentials are \
                 passwords on it.",
            ),
        ),
        (
            "persist_app",
            FieldSchema::new(
                FieldType::Bool,
                "Make one application for the role, kept until the role is \
                 deleted.",
            ),
        ),
        (
            "ttl",
            FieldSchema::new(
                FieldType::DurationSecond,
                "Default lease duration of credentials. Default: the mount's.",
            ),
        ),
        (
            "max_ttl",
            FieldSchema::new(
                FieldType::DurationSecond,
                "Maximum lease duration of credentials. Default: the mount's.",
            ),
        ),
        (
            "explicit_max_ttl",
            FieldSchema::new(
                FieldType::DurationSecond,
                "Hard limit of a credential's life, also its end date in \
                 Azure.",
            ),
        ),
        (
            "permanently_delete",
            FieldSchema::new(
                FieldType::Bool,
                "Purge deleted applications from Entra ID's deleted items.",
            ),
        ),
        (
            "sign_in_audience",
            FieldSchema::new(
                FieldType::String,
                "signInAudience of the applications made: AzureADMyOrg, \
                 AzureADMultipleOrgs, AzureADandPersonalMicrosoftAccount or \
                 PersonalMicrosoftAccount.",
            ),
        ),
        (
            "tags",
            FieldSchema::new(
                FieldType::CommaStringSlice,
                "Tags of the applications made (comma-separated, no \
                 whitespace, 1 to 256 characters each).",
            ),
        ),
        (
            "metadata",
            FieldSchema::new(
                FieldType::KvPairs,
                "Metadata returned with every credential of the role (a map, \
                 key=value pairs or a JSON object).",
            ),
        ),
        (
            "credential_type",
            FieldSchema::new(
                FieldType::String,
                "What creds issues: 'password' (default, a client secret) or \
                 'certificate' (an RSA key pair and a self-signed certificate \
                 registered as a key credential).",
            ),
        ),
        (
            "credential_ready_timeout",
            FieldSchema::new(
                FieldType::DurationSecond,
                "How long creds waits for a new secret to obtain a token \
                 before returning it. Default 30s; 0 turns the wait off.",
            ),
        ),
        (
            "pool_size",
            FieldSchema::new(
                FieldType::Int,
                "How many credentials the engine keeps created and proven \
                 usable, to hand out with no Azure call. Default 0 (no pool); \
                 at most 50, or 10 with application_object_id or persist_app.",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalised() {
        let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize_tags(tags(&[
                " team:eng",
                "project:vault_test",
                "team:eng",
                "",
                "  "
            ]))
            .unwrap(),
            tags(&["project:vault_test", "team:eng"])
        );
        assert_eq!(normalize_tags(Vec::new()).unwrap(), Vec::<String>::new());
        assert_eq!(
            normalize_tags(tags(&["environment development"])).unwrap_err(),
            "whitespaces are not allowed in tags"
        );
        assert_eq!(
            normalize_tags(tags(&["a\tb"])).unwrap_err(),
            "whitespaces are not allowed in tags"
        );
        assert_eq!(
            normalize_tags(vec!["x".repeat(259)]).unwrap_err(),
            "individual tag size must be between 1 and 256 characters (inclusive)"
        );
        assert!(normalize_tags(vec!["x".repeat(256)]).is_ok());
    }

    #[test]
    fn parses_role_and_group_lists() {
        let roles = parse_azure_roles(
            r#"[{"role_name":"Reader","scope":"/subscriptions/s","extra":1},{"role_id":"/x/y"}] trailing"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0].role_name, "Reader");
        assert_eq!(roles[0].role_id, "");
        assert_eq!(roles[1].role_id, "/x/y");
        assert_eq!(roles[1].scope, "");
        assert_eq!(parse_azure_roles("null").unwrap(), None);
        assert_eq!(parse_azure_roles("[]").unwrap(), Some(Vec::new()));

        let groups =
            parse_azure_groups(r#"[{"group_name":"g"},{"object_id":"id","display_name":"x"}]"#)
                .unwrap()
                .unwrap();
        assert_eq!(groups[0].group_name, "g");
        assert_eq!(groups[1].object_id, "id");

        for bad in ["asdf", "", "{\"role_name\":\"x\"}", "[{\"role_name\":5}]"] {
            let err = parse_azure_roles(bad).unwrap_err();
            assert!(
                matches!(&err, LogicalError::BadRequest(m) if m.starts_with(&format!("error parsing azure_roles '{bad}': "))),
                "{err:?}"
            );
        }
        let err = parse_azure_groups("asdf").unwrap_err();
        assert!(
            matches!(&err, LogicalError::BadRequest(m) if m.starts_with("error parsing azure_groups 'asdf': ")),
            "{err:?}"
        );
    }

    #[test]
    fn ttl_rules() {
        let secs = |t: Option<u64>| Duration::from_secs(t.unwrap_or(0));
        let cases = [
            (Some(5), Some(10), None, true),
            (Some(5), None, None, true),
            (None, Some(10), None, true),
            (Some(100), Some(100), None, true),
            (Some(101), Some(100), None, false),
            (Some(101), Some(0), None, true),
            (Some(5), Some(10), Some(10), true),
            (Some(10), None, Some(5), false),
            (Some(10), Some(10), Some(5), false),
            (None, None, Some(10), true),
        ];
        for (ttl, max, explicit, ok) in cases {
            let role = Role {
                ttl: secs(ttl),
                max_ttl: secs(max),
                explicit_max_ttl: secs(explicit),
                ..Role::default()
            };
            assert_eq!(
                check_ttls(&role).is_ok(),
                ok,
                "{ttl:?} {max:?} {explicit:?}"
            );
        }
    }

    #[test]
    fn read_output_has_every_field() {
        let role = Role {
            azure_roles: Some(vec![AzureRole {
                role_name: "Reader".into(),
                role_id: "/r".into(),
                scope: "/s".into(),
            }]),
            ttl: Duration::from_secs(60),
            tags: Some(vec!["a:b".into()]),
            application_id: "hidden".into(),
            sp_object_id: "hidden".into(),
            ..Role::default()
        };
        let data = role_data(&role);
        assert_eq!(data["ttl"], 60);
        assert_eq!(data["azure_roles"][0]["role_name"], "Reader");
        assert_eq!(data["azure_groups"], serde_json::Value::Null);
        assert_eq!(data["tags"], json!(["a:b"]));
        assert_eq!(data["credential_ready_timeout"], 30);
        for hidden in [
            "application_id",
            "sp_object_id",
            "role_assignment_ids",
            "credential_type",
        ] {
            assert!(!data.contains_key(hidden), "{hidden}");
        }
    }

    #[test]
    fn a_role_stored_by_the_go_engine_reads_back() {
        let go = r#"{"credential_type":0,
            "azure_roles":[{"role_name":"Reader","role_id":"/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7","scope":"/subscriptions/s/resourceGroups/rg"}],
            "azure_groups":[{"group_name":"devs","object_id":"0b1f5e2c-0000-4000-8000-000000000001"}],
            "application_id":"11111111-0000-4000-8000-000000000001","application_object_id":"22222222-0000-4000-8000-000000000002",
            "sign_in_audience":"AzureADMyOrg","tags":["team:eng"],
            "ttl":3600000000000,"max_ttl":7200000000000,"explicit_max_ttl":86400000000000,
            "permanently_delete":true,"persist_app":true,
            "role_assignment_ids":["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/a"],
            "group_membership_ids":["0b1f5e2c-0000-4000-8000-000000000001"],
            "sp_object_id":"33333333-0000-4000-8000-000000000003",
            "managed_application_object_id":"22222222-0000-4000-8000-000000000002"}"#;
        let role: Role = serde_json::from_str(go).unwrap();
        let data = role_data(&role);
        assert_eq!(
            serde_json::Value::Object(data),
            json!({
                "ttl": 3600, "max_ttl": 7200, "explicit_max_ttl": 86400,
                "azure_roles": [{"role_name": "Reader", "role_id": "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", "scope": "/subscriptions/s/resourceGroups/rg"}],
                "azure_groups": [{"group_name": "devs", "object_id": "0b1f5e2c-0000-4000-8000-000000000001"}],
                "application_object_id": "22222222-0000-4000-8000-000000000002",
                "permanently_delete": true, "persist_app": true,
                "sign_in_audience": "AzureADMyOrg", "tags": ["team:eng"],
                "credential_ready_timeout": 30,
                "metadata": {}
            })
        );
        // Written back, it is the Go engine's layout, key for key.
        let original: serde_json::Value = serde_json::from_str(go).unwrap();
        assert_eq!(serde_json::to_value(&role).unwrap(), original);
    }

    #[tokio::test]
    async fn update_of_a_missing_role_is_an_internal_error() {
        use vault_plugin_sdk::logical::{Backend as _, BackendConfig, InmemStorage, Storage};
        use vault_plugin_sdk::testing::TestSystemView;

        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let config = BackendConfig {
            config: Default::default(),
            backend_uuid: "test".into(),
            storage: storage.clone(),
            system_view: Arc::new(TestSystemView::default()),
        };
        let backend = AzureBackend::new(&config).build(&config).unwrap();
        let request = |op| {
            Request::new(op, "roles/ghost", storage.clone()).with_data(
                vault_plugin_sdk::framework::object(
                    json!({"application_object_id": "00000000-0000-0000-0000-000000000000"}),
                ),
            )
        };
        let err = backend
            .handle_request(request(Operation::Update))
            .await
            .unwrap_err();
        assert_eq!(err, LogicalError::internal("config is nil"));

        // Through the backend's storage cache, as a handler would.
        store::put_config(
            backend.storage().as_ref(),
            &store::Config {
                tenant_id: "tenant".into(),
                subscription_id: "sub".into(),
                client_id: "client".into(),
                client_secret: "secret".into(),
                ..store::Config::default()
            },
        )
        .await
        .unwrap();
        let err = backend
            .handle_request(request(Operation::Update))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            LogicalError::internal("role entry not found during update operation")
        );
        assert!(store::get_role(storage.as_ref(), "ghost")
            .await
            .unwrap()
            .is_none());
    }
}
