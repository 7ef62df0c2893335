//! `self-test`: whether the configured identity can do what each role needs, checked
//! without side effects, plus usage against Azure's limits (see [`super::usage`]).
//!
//! Sources: the tokens themselves (can the identity sign in to Graph and ARM), the `roles`
//! claim of the engine's Graph token (its Graph application permissions), ARM's permissions
//! API at each role scope (`actions`/`notActions`, wildcards matched as ARM does), and reads
//! (the application of an existing-application role). Creating or deleting anything to
//! find out is never done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::backend::AzureBackend;
use super::certificate::CredentialType;
use super::store::{self, Role};
use super::usage::{self, Usage};
use azure_clients::{permissions_allow, Deadline, Permission};
use vault_plugin_sdk::framework::{FieldData, HandlerResult, Path};
use vault_plugin_sdk::logical::{storage_writable, LogicalError, Request, Response};

const SELF_TEST_DEADLINE: Duration = Duration::from_secs(60);

const SYNOPSIS: &str =
    "Check the engine identity's permissions for every role, and usage against Azure limits.";
const DESCRIPTION: &str = "Reading this path changes nothing. For the configured identity it checks that it \
obtains Graph and ARM tokens; from the roles claim of its Graph token, that it holds the Graph application \
permissions each role needs (create applications and service principals, add passwords or key credentials, \
add group members, read the app management policy; static roles are checked like existing-application roles); from ARM's permissions API, that it may read role \
definitions and create and delete role assignments at each role's scopes; and that the application of each \
existing-application role can be read. Each role's capabilities are answered ok, missing (naming the missing \
permission) or unknown (with the reason), with a summary. The usage section counts role assignments in the \
subscription (limit 4000, or AZURE_ROLE_ASSIGNMENT_LIMIT), the tenant's directory objects against its quota, \
and credentials on each existing application; limits at 80% or more are also returned as warnings.";

const APP_WRITE: &[&str] = &["Application.ReadWrite.All", "Directory.ReadWrite.All"];
const OWNED_BY: &str = "Application.ReadWrite.OwnedBy";
const MEMBER_WRITE: &[&str] = &[
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const POLICY_READ: &[&str] = &[
    "Policy.Read.All",
    "Policy.Read.ApplicationConfiguration",
    "Policy.ReadWrite.ApplicationConfiguration",
];

const READ_DEFINITIONS: &str = "Microsoft.Authorization/roleDefinitions/read";
const WRITE_ASSIGNMENTS: &str = "Microsoft.Authorization/roleAssignments/write";
const DELETE_ASSIGNMENTS: &str = "Microsoft.Authorization/roleAssignments/delete";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new("self-test")
        .with_state(b)
        .read(
            AzureBackend::self_test_read,
            "Check the engine identity's permissions and usage against Azure limits.",
            "self-test",
        )
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

/// The answer for one capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The permission (as an operator would grant it) that is missing.
    Missing(String),
    /// Why it cannot be told.
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub capability: String,
    pub scope: Option<String>,
    pub status: Status,
    /// Issuance works without it (it only loses an early check): not counted as missing
    /// in the role's status or the summary's result.
    pub optional: bool,
}

impl Check {
    fn new(capability: &str, scope: Option<&str>, status: Status) -> Self {
        Check {
            capability: capability.to_string(),
            scope: scope.map(str::to_string),
            status,
            optional: false,
        }
    }

    fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"capability": self.capability});
        if let Some(s) = &self.scope {
            v["scope"] = json!(s);
        }
        if self.optional {
            v["optional"] = json!(true);
        }
        match &self.status {
            Status::Ok => v["status"] = json!("ok"),
            Status::Missing(p) => {
                v["status"] = json!("missing");
                v["missing"] = json!(p);
            }
            Status::Unknown(r) => {
                v["status"] = json!("unknown");
                v["reason"] = json!(r);
            }
        }
        v
    }
}

fn token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The object id (`oid`) of the principal a token was issued to.
pub fn token_oid(token: &str) -> Option<String> {
    token_claims(token)?
        .get("oid")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
}

/// The Graph application permissions of a token (`None`: no readable `roles` claim).
pub fn token_roles(token: &str) -> Option<Vec<String>> {
    let claims = token_claims(token)?;
    if claims.get("idtyp").and_then(Value::as_str) == Some("user") {
        return None;
    }
    Some(
        claims
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    )
}

fn has_any(roles: &[String], any_of: &[&str]) -> bool {
    roles
        .iter()
        .any(|r| any_of.iter().any(|a| a.eq_ignore_ascii_case(r)))
}

/// A Graph capability answered from the token's roles: ok with any of `any_of`; missing
/// names the least privileged permission first.
fn graph_status(roles: Option<&[String]>, any_of: &[&str], least: &str) -> Status {
    let Some(roles) = roles else {
        return Status::Unknown(
            "the engine's Graph token has no readable roles claim (application permissions)".into(),
        );
    };
    if has_any(roles, any_of) {
        return Status::Ok;
    }
    Status::Missing(format!(
        "Microsoft Graph application permission {least} (admin consent granted)"
    ))
}

/// What the identity may do on an existing application, as read from Graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppAccess {
    /// Reading it.
    pub read: Status,
    /// Whether the identity owns it: checked only when Application.ReadWrite.OwnedBy is
    /// its only application write permission.
    pub owned: Option<Status>,
}

/// Whether Application.ReadWrite.OwnedBy is the only application write permission.
pub fn owned_by_only(roles: Option<&[String]>) -> bool {
    roles.is_some_and(|r| has_any(r, &[OWNED_BY]) && !has_any(r, APP_WRITE))
}

/// Application writes: on applications the engine creates itself, OwnedBy suffices (the
/// creator owns what it creates); on an existing application only with ownership.
fn app_write_status(
    roles: Option<&[String]>,
    existing_app: Option<(&str, Option<&AppAccess>)>,
) -> Status {
    let status = graph_status(
        roles,
        APP_WRITE,
        if existing_app.is_some() {
            "Application.ReadWrite.All (or Application.ReadWrite.OwnedBy as an owner of the application)"
        } else {
            "Application.ReadWrite.OwnedBy or Application.ReadWrite.All"
        },
    );
    match (status, roles) {
        (Status::Missing(_), Some(r)) if has_any(r, &[OWNED_BY]) => match existing_app {
            None => Status::Ok,
            Some((id, access)) => access.and_then(|a| a.owned.clone()).unwrap_or_else(|| {
                Status::Unknown(format!(
                    "only Application.ReadWrite.OwnedBy is granted: it suffices if the identity \
                     is an owner of application '{id}', which was not checked"
                ))
            }),
        },
        (s, _) => s,
    }
}

/// An ARM action at `scope`, from the permissions API's answer there.
fn arm_status(perms: &Result<Vec<Permission>, String>, action: &str, scope: &str) -> Status {
    match perms {
        Err(why) => Status::Unknown(why.clone()),
        Ok(p) if permissions_allow(p, action) => Status::Ok,
        Ok(_) => Status::Missing(format!(
            "Azure RBAC action {action} at or above scope '{scope}' (for example the role \
             {})",
            if action == READ_DEFINITIONS {
                "Reader"
            } else {
                "Role Based Access Control Administrator or User Access Administrator"
            }
        )),
    }
}

/// The capabilities `role` needs, answered. `perms` holds the permissions API's answer per
/// scope (lower case); `app` what Graph said of an existing application.
pub fn role_checks(
    role: &Role,
    graph_roles: Option<&[String]>,
    perms: &HashMap<String, Result<Vec<Permission>, String>>,
    app: Option<&AppAccess>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let cert = CredentialType::of(role) == CredentialType::Certificate;
    let add = if cert {
        "add_key_credential"
    } else {
        "add_password"
    };
    if role.application_object_id.is_empty() {
        let s = app_write_status(graph_roles, None);
        out.push(Check::new("create_application", None, s.clone()));
        out.push(Check::new("create_service_principal", None, s.clone()));
        out.push(Check::new(add, None, s));
        for r in role.azure_roles.iter().flatten() {
            let scope = r.scope.trim();
            let unknown = Err("the scope was not checked".to_string());
            let p = perms.get(&scope.to_lowercase()).unwrap_or(&unknown);
            for (cap, action) in [
                ("read_role_definitions", READ_DEFINITIONS),
                ("create_role_assignments", WRITE_ASSIGNMENTS),
                ("delete_role_assignments", DELETE_ASSIGNMENTS),
            ] {
                out.push(Check::new(cap, Some(scope), arm_status(p, action, scope)));
            }
        }
        for g in role.azure_groups.iter().flatten() {
            let name = if g.group_name.is_empty() {
                &g.object_id
            } else {
                &g.group_name
            };
            out.push(Check::new(
                "add_group_members",
                Some(name),
                graph_status(graph_roles, MEMBER_WRITE, "GroupMember.ReadWrite.All"),
            ));
        }
    } else {
        let id = role.application_object_id.as_str();
        out.push(Check::new(
            "read_application",
            Some(id),
            app.map(|a| a.read.clone())
                .unwrap_or_else(|| Status::Unknown("not checked".into())),
        ));
        out.push(Check::new(
            add,
            Some(id),
            app_write_status(graph_roles, Some((id, app))),
        ));
    }
    // Without it the policy is not checked before the write; Azure still enforces it.
    out.push(
        Check::new(
            "read_app_management_policy",
            None,
            graph_status(graph_roles, POLICY_READ, "Policy.Read.All"),
        )
        .optional(),
    );
    out
}

fn overall(checks: &[Check]) -> &'static str {
    let required = || checks.iter().filter(|c| !c.optional);
    if required().any(|c| matches!(c.status, Status::Missing(_))) {
        "missing"
    } else if required().any(|c| matches!(c.status, Status::Unknown(_))) {
        "unknown"
    } else {
        "ok"
    }
}

fn failure(e: &azure_clients::AzureError) -> String {
    e.to_string()
}

impl AzureBackend {
    async fn self_test_read(self: Arc<Self>, req: Request, _data: FieldData) -> HandlerResult {
        let storage = req.storage.as_ref();
        if store::get_config(storage).await?.is_none() {
            return Err(LogicalError::bad_request(
                "the engine is not configured: write config first",
            ));
        }
        let client = self.client(storage).await?;
        let deadline = Deadline::after(SELF_TEST_DEADLINE);
        // Static roles are checked as the existing-application roles they amount to.
        let mut roles = usage::stored_roles(storage).await;
        roles.extend(usage::stored_static_roles(storage).await);
        let settings = client.settings();

        let mut identity = Vec::new();
        let graph_token = client
            .token_source()
            .token(&settings.cloud.graph_scope(), deadline)
            .await;
        let graph_roles = match &graph_token {
            Ok(t) => {
                identity.push(Check::new("graph_token", None, Status::Ok));
                token_roles(t.token.expose())
            }
            Err(e) => {
                identity.push(Check::new(
                    "graph_token",
                    None,
                    Status::Missing(format!("a Microsoft Graph token: {}", failure(e))),
                ));
                None
            }
        };
        let arm_ok = match client
            .token_source()
            .token(&settings.cloud.arm_scope(), deadline)
            .await
        {
            Ok(_) => {
                identity.push(Check::new("arm_token", None, Status::Ok));
                true
            }
            Err(e) => {
                identity.push(Check::new(
                    "arm_token",
                    None,
                    Status::Missing(format!("an Azure Resource Manager token: {}", failure(&e))),
                ));
                false
            }
        };

        // ARM's permissions API, once per scope.
        let mut perms: HashMap<String, Result<Vec<Permission>, String>> = HashMap::new();
        for (_, role) in &roles {
            if !role.application_object_id.is_empty() {
                continue;
            }
            for r in role.azure_roles.iter().flatten() {
                let key = r.scope.trim().to_lowercase();
                if perms.contains_key(&key) {
                    continue;
                }
                let answer = if !arm_ok {
                    Err("no ARM token".to_string())
                } else {
                    client
                        .arm()
                        .list_permissions(r.scope.trim(), deadline)
                        .await
                        .map_err(|e| {
                            format!("ARM's permissions API answered an error: {}", failure(&e))
                        })
                };
                perms.insert(key, answer);
            }
        }
        // Existing applications: a read (no side effects).
        let own_oid = graph_token
            .as_ref()
            .ok()
            .and_then(|t| token_oid(t.token.expose()));
        let mut app_reads: HashMap<String, AppAccess> = HashMap::new();
        for (_, role) in &roles {
            let id = role.application_object_id.to_lowercase();
            if id.is_empty() || app_reads.contains_key(&id) {
                continue;
            }
            let read = match client.graph().get_application(&id, deadline).await {
                Ok(_) => Status::Ok,
                Err(e) if e.is_forbidden() => Status::Missing(
                    "Microsoft Graph application permission Application.Read.All or \
                     Application.ReadWrite.All (with only Application.ReadWrite.OwnedBy: \
                     ownership of the application)"
                        .into(),
                ),
                Err(e) if e.is_not_found() => {
                    Status::Unknown(format!("application '{id}' does not exist in the tenant"))
                }
                Err(e) => Status::Unknown(failure(&e)),
            };
            let owned = if owned_by_only(graph_roles.as_deref()) {
                let not_owner = || {
                    Status::Missing(format!(
                        "Application.ReadWrite.All, or ownership of application '{id}' \
                         (Application.ReadWrite.OwnedBy writes only owned applications)"
                    ))
                };
                Some(match &own_oid {
                    None => {
                        Status::Unknown("the engine's Graph token names no object id (oid)".into())
                    }
                    Some(oid) => match client
                        .graph()
                        .list_application_owner_ids(&id, deadline)
                        .await
                    {
                        Ok(owners) if owners.contains(oid) => Status::Ok,
                        Ok(_) => not_owner(),
                        // OwnedBy may not even read an application it does not own.
                        Err(e) if e.is_forbidden() => not_owner(),
                        Err(e) => Status::Unknown(format!(
                            "cannot read the owners of application '{id}': {}",
                            failure(&e)
                        )),
                    },
                })
            } else {
                None
            };
            app_reads.insert(id, AppAccess { read, owned });
        }

        let (mut ok, mut missing, mut unknown, mut optional_missing) = (0u64, 0u64, 0u64, 0u64);
        let mut tally = |checks: &[Check]| {
            for c in checks {
                match (&c.status, c.optional) {
                    (Status::Ok, _) => ok += 1,
                    (_, true) => optional_missing += 1,
                    (Status::Missing(_), false) => missing += 1,
                    (Status::Unknown(_), false) => unknown += 1,
                }
            }
        };
        tally(&identity);
        let mut roles_out = Map::new();
        let mut static_out = Map::new();
        let mut roles_missing = Vec::new();
        for (name, role) in &roles {
            let checks = role_checks(
                role,
                graph_roles.as_deref(),
                &perms,
                app_reads.get(&role.application_object_id.to_lowercase()),
            );
            tally(&checks);
            let status = overall(&checks);
            if status == "missing" {
                roles_missing.push(name.clone());
            }
            let entry = json!({
                "status": status,
                "capabilities": checks.iter().map(Check::to_json).collect::<Vec<_>>(),
            });
            match name.strip_prefix(super::static_store::STATIC_ROLES_PREFIX) {
                Some(short) => static_out.insert(short.to_string(), entry),
                None => roles_out.insert(name.clone(), entry),
            };
        }
        let result = if missing > 0 {
            "missing"
        } else if unknown > 0 {
            "unknown"
        } else {
            "ok"
        };

        let measured =
            usage::measure(&client, &roles, self.role_assignment_limit(), deadline).await;
        let warnings = measured.warnings();
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let usage_json = measured.to_json();
        self.store_usage(measured);

        let mut data = Map::new();
        data.insert(
            "summary".into(),
            json!({
                "result": result,
                "ok": ok,
                "missing": missing,
                "unknown": unknown,
                "optional_not_ok": optional_missing,
                "roles_with_missing_permissions": roles_missing,
            }),
        );
        data.insert(
            "identity".into(),
            json!({
                "client_id": settings.client_id,
                "graph_application_permissions": graph_roles,
                "capabilities": identity.iter().map(Check::to_json).collect::<Vec<_>>(),
            }),
        );
        data.insert("roles".into(), Value::Object(roles_out));
        data.insert("static_roles".into(), Value::Object(static_out));
        data.insert("usage".into(), usage_json);
        let mut resp = Response::with_data(data);
        for w in warnings {
            resp.add_warning(w);
        }
        Ok(Some(resp))
    }

    /// The subscription's role assignment limit: `AZURE_ROLE_ASSIGNMENT_LIMIT` or 4000.
    pub(crate) fn role_assignment_limit(&self) -> u64 {
        self.env_value(usage::ROLE_ASSIGNMENT_LIMIT_ENV)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(usage::ROLE_ASSIGNMENT_LIMIT)
    }

    /// How often the periodic function measures usage: `AZURE_USAGE_REFRESH_SECONDS` or 15
    /// minutes.
    fn usage_refresh_every(&self) -> Duration {
        self.env_value(usage::REFRESH_EVERY_ENV)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(usage::REFRESH_EVERY)
    }

    fn store_usage(&self, measured: Usage) {
        let mut cache = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        cache.last_attempt = std::time::Instant::now();
        cache.usage = Some(measured);
    }

    /// Counts a credential just issued for `role` and returns the warnings (also logged)
    /// for the limits it draws on that are at 80% or more.
    pub(crate) fn usage_after_issue(&self, role_name: &str, role: &Role) -> Vec<String> {
        let mut cache = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let Some(u) = cache.usage.as_mut() else {
            return Vec::new();
        };
        u.note_issued(role);
        let warnings = u.warnings_for(role);
        for w in &warnings {
            tracing::warn!(role = %role_name, "{w}");
        }
        warnings
    }

    /// Measures usage again when it is due (every 15 minutes, on the active node only).
    pub(crate) async fn refresh_usage(&self, req: &Request) {
        let due = {
            let cache = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            cache.last_attempt.elapsed() >= self.usage_refresh_every()
        };
        if !due || !matches!(storage_writable(self.system_view.as_ref()).await, Ok(true)) {
            return;
        }
        {
            let mut cache = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            cache.last_attempt = std::time::Instant::now();
        }
        let storage = req.storage.as_ref();
        if !matches!(store::get_config(storage).await, Ok(Some(_))) {
            return;
        }
        let Ok(client) = self.client(storage).await else {
            return;
        };
        let mut roles = usage::stored_roles(storage).await;
        roles.extend(usage::stored_static_roles(storage).await);
        let measured = usage::measure(
            &client,
            &roles,
            self.role_assignment_limit(),
            Deadline::after(SELF_TEST_DEADLINE),
        )
        .await;
        for w in measured.warnings() {
            tracing::warn!("{w}");
        }
        self.store_usage(measured);
    }
}

/// The usage cache of a mount.
pub struct UsageCache {
    pub usage: Option<Usage>,
    /// When usage was last measured or tried (the mount's start before that).
    pub last_attempt: std::time::Instant,
}

impl Default for UsageCache {
    fn default() -> Self {
        UsageCache {
            usage: None,
            last_attempt: std::time::Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AzureGroup, AzureRole};

    fn token(claims: Value) -> String {
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b(br#"{"alg":"HS256"}"#),
            b(claims.to_string().as_bytes())
        )
    }

    fn dynamic() -> Role {
        Role {
            azure_roles: Some(vec![AzureRole {
                role_name: "Reader".into(),
                role_id: String::new(),
                scope: "/subscriptions/s/resourceGroups/rg".into(),
            }]),
            azure_groups: Some(vec![AzureGroup {
                group_name: "g".into(),
                object_id: "id".into(),
            }]),
            ..Role::default()
        }
    }

    fn statuses(checks: &[Check]) -> Vec<(String, &'static str)> {
        checks
            .iter()
            .map(|c| {
                (
                    c.capability.clone(),
                    match c.status {
                        Status::Ok => "ok",
                        Status::Missing(_) => "missing",
                        Status::Unknown(_) => "unknown",
                    },
                )
            })
            .collect()
    }

    #[test]
    fn roles_claim() {
        assert_eq!(
            token_roles(&token(json!({"roles": ["A", "B"]}))),
            Some(vec!["A".to_string(), "B".to_string()])
        );
        assert_eq!(token_roles(&token(json!({}))), Some(vec![]));
        assert_eq!(token_roles("opaque"), None);
        assert_eq!(
            token_oid(&token(json!({"oid": "ABC"}))),
            Some("abc".to_string())
        );
    }

    #[test]
    fn dynamic_role_capabilities() {
        let mut perms = HashMap::new();
        let uaa = Permission {
            actions: vec!["*/read".into(), "Microsoft.Authorization/*".into()],
            ..Permission::default()
        };
        perms.insert(
            "/subscriptions/s/resourcegroups/rg".to_string(),
            Ok(vec![uaa]),
        );
        let all: Vec<String> = [
            "Application.ReadWrite.All",
            "GroupMember.ReadWrite.All",
            "Policy.Read.All",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let checks = role_checks(&dynamic(), Some(&all), &perms, None);
        assert_eq!(overall(&checks), "ok", "{checks:?}");
        assert_eq!(checks.len(), 3 + 3 + 1 + 1);

        // Contributor: assignments refused by notActions; nothing in Graph but OwnedBy.
        let contributor = Permission {
            actions: vec!["*".into()],
            not_actions: vec![
                "Microsoft.Authorization/*/Delete".into(),
                "Microsoft.Authorization/*/Write".into(),
            ],
            ..Permission::default()
        };
        perms.insert(
            "/subscriptions/s/resourcegroups/rg".to_string(),
            Ok(vec![contributor]),
        );
        let owned = vec!["Application.ReadWrite.OwnedBy".to_string()];
        let checks = role_checks(&dynamic(), Some(&owned), &perms, None);
        let s = statuses(&checks);
        assert_eq!(s[0], ("create_application".into(), "ok"));
        assert_eq!(s[3], ("read_role_definitions".into(), "ok"));
        assert_eq!(s[4], ("create_role_assignments".into(), "missing"));
        assert_eq!(s[5], ("delete_role_assignments".into(), "missing"));
        assert_eq!(s[6], ("add_group_members".into(), "missing"));
        assert_eq!(s[7], ("read_app_management_policy".into(), "missing"));
        match &checks[4].status {
            Status::Missing(p) => assert!(p.contains(WRITE_ASSIGNMENTS), "{p}"),
            other => panic!("{other:?}"),
        }
        match &checks[6].status {
            Status::Missing(p) => assert!(p.contains("GroupMember.ReadWrite.All"), "{p}"),
            other => panic!("{other:?}"),
        }

        // Nothing readable: unknown, with the reason.
        let checks = role_checks(&dynamic(), None, &HashMap::new(), None);
        assert_eq!(overall(&checks), "unknown");
    }

    #[test]
    fn existing_application_capabilities() {
        let role = Role {
            application_object_id: "app-obj".into(),
            application_id: "app".into(),
            ..Role::default()
        };
        let owned = vec![
            "Application.ReadWrite.OwnedBy".to_string(),
            "Policy.Read.All".to_string(),
        ];
        assert!(owned_by_only(Some(&owned)));
        let access = |owned: Option<Status>| AppAccess {
            read: Status::Ok,
            owned,
        };
        let checks = role_checks(&role, Some(&owned), &HashMap::new(), Some(&access(None)));
        assert_eq!(
            statuses(&checks),
            vec![
                ("read_application".into(), "ok"),
                ("add_password".into(), "unknown"),
                ("read_app_management_policy".into(), "ok"),
            ]
        );
        let checks = role_checks(
            &role,
            Some(&owned),
            &HashMap::new(),
            Some(&access(Some(Status::Ok))),
        );
        assert_eq!(overall(&checks), "ok");
        let checks = role_checks(
            &role,
            Some(&owned),
            &HashMap::new(),
            Some(&access(Some(Status::Missing("x".into())))),
        );
        assert_eq!(overall(&checks), "missing");
        let none: Vec<String> = Vec::new();
        assert!(!owned_by_only(Some(&none)));
        let checks = role_checks(&role, Some(&none), &HashMap::new(), Some(&access(None)));
        match &checks[1].status {
            Status::Missing(p) => assert!(p.contains("Application.ReadWrite.All"), "{p}"),
            other => panic!("{other:?}"),
        }
        // Without the policy read the role is still ok (optional).
        let all = vec!["Application.ReadWrite.All".to_string()];
        let checks = role_checks(&role, Some(&all), &HashMap::new(), Some(&access(None)));
        assert_eq!(
            statuses(&checks)[2],
            ("read_app_management_policy".into(), "missing")
        );
        assert_eq!(overall(&checks), "ok");
    }
}
