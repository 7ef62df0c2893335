//! Azure Resource Manager authorization: role definitions and role assignments
//! (API version 2022-04-01).
//!
//! Role definitions are looked up at the assignment's own scope, reduced to its
//! subscription, resource group or management group, so one mount can serve many
//! subscriptions. Role names match exactly (case-sensitive) and must match once.

use super::credential::TokenSource;
use super::error::{AzureError, Service};
use super::graph::DeleteOutcome;
use super::http::{
    join_path, lenient_datetime, null_default, odata_literal, same_origin, set_query, Replay,
    ServiceClient,
};
use super::retry::{sleep_within, Deadline, RetryPolicy};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use url::Url;

/// ARM API version for Microsoft.Authorization.
pub const API_VERSION: &str = "2022-04-01";

const MAX_PAGES: usize = 50;

/// A role definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleDefinition {
    /// Full id, e.g. `/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    pub id: String,
    /// The definition's GUID.
    pub name: String,
    /// Display name, e.g. `Reader`.
    pub role_name: String,
}

/// A role assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignment {
    /// Full id: `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub id: String,
    /// The assignment's GUID name.
    pub name: String,
    /// Scope.
    pub scope: String,
    /// Full role definition id.
    pub role_definition_id: String,
    /// Principal object id.
    pub principal_id: String,
    /// Free text set at creation (empty when none).
    pub description: String,
    /// When it was created.
    pub created_on: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct RawRoleDefinition {
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default)]
    properties: RawRoleDefinitionProps,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRoleDefinitionProps {
    #[serde(default, deserialize_with = "null_default")]
    role_name: String,
}

impl From<RawRoleDefinition> for RoleDefinition {
    fn from(r: RawRoleDefinition) -> Self {
        RoleDefinition {
            id: r.id,
            name: r.name,
            role_name: r.properties.role_name,
        }
    }
}

#[derive(Deserialize)]
struct RawRoleAssignment {
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default)]
    properties: RawRoleAssignmentProps,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRoleAssignmentProps {
    #[serde(default, deserialize_with = "null_default")]
    scope: String,
    #[serde(default, deserialize_with = "null_default")]
    role_definition_id: String,
    #[serde(default, deserialize_with = "null_default")]
    principal_id: String,
    #[serde(default, deserialize_with = "null_default")]
    description: String,
    #[serde(default, deserialize_with = "lenient_datetime")]
    created_on: Option<DateTime<Utc>>,
}

impl From<RawRoleAssignment> for RoleAssignment {
    fn from(r: RawRoleAssignment) -> Self {
        RoleAssignment {
            id: r.id,
            name: r.name,
            scope: r.properties.scope,
            role_definition_id: r.properties.role_definition_id,
            principal_id: r.properties.principal_id,
            description: r.properties.description,
            created_on: r.properties.created_on,
        }
    }
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "nextLink", default)]
    next_link: Option<String>,
}

/// The part of an assignment scope at which its role definition is looked up: the
/// management group, resource group or subscription it belongs to; the default
/// subscription for an empty scope; the scope itself otherwise (e.g. `/`).
pub fn role_definition_scope(scope: &str, default_subscription: &str) -> String {
    let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    let take = match segs.as_slice() {
        [] if scope.trim().is_empty() => return format!("/subscriptions/{default_subscription}"),
        [] => return "/".to_owned(),
        [s, _, rg, _, ..]
            if s.eq_ignore_ascii_case("subscriptions")
                && rg.eq_ignore_ascii_case("resourceGroups") =>
        {
            4
        }
        [s, _, ..] if s.eq_ignore_ascii_case("subscriptions") => 2,
        [p, ns, mg, _, ..]
            if p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.Management")
                && mg.eq_ignore_ascii_case("managementGroups") =>
        {
            4
        }
        _ => segs.len(),
    };
    format!("/{}", segs[..take].join("/"))
}

/// The one definition named `role_name` among `found`: names match case-insensitively (as
/// HashiCorp documents the lookup), and one exact-case match wins over others that differ
/// only in case. [`AzureError::NoMatch`] when none matches, [`AzureError::MultipleMatches`]
/// when the choice is ambiguous.
pub fn pick_role_definition(
    found: impl IntoIterator<Item = RoleDefinition>,
    role_name: &str,
) -> Result<RoleDefinition, AzureError> {
    let mut matches: Vec<RoleDefinition> = found
        .into_iter()
        .filter(|d| d.role_name.to_lowercase() == role_name.to_lowercase())
        .collect();
    if matches.len() > 1 {
        let exact: Vec<usize> = (0..matches.len())
            .filter(|&i| matches[i].role_name == role_name)
            .collect();
        if let [only] = exact.as_slice() {
            return Ok(matches.swap_remove(*only));
        }
    }
    match matches.len() {
        0 => Err(AzureError::NoMatch {
            kind: "role definition",
            name: role_name.to_owned(),
        }),
        1 => Ok(matches.remove(0)),
        count => Err(AzureError::MultipleMatches {
            kind: "role definition",
            name: role_name.to_owned(),
            count,
        }),
    }
}

/// The trailing GUID of a role definition id (lower-cased), for comparisons.
pub fn role_definition_guid(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase()
}

/// Azure Resource Manager client.
pub struct ArmClient {
    svc: ServiceClient,
    base: Url,
    subscription_id: String,
}

impl ArmClient {
    /// A client for `arm_endpoint` (tokens for `<arm_endpoint>/.default`); empty scopes
    /// mean `/subscriptions/{subscription_id}`.
    pub fn new(
        arm_endpoint: &Url,
        subscription_id: &str,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        policy: RetryPolicy,
    ) -> Result<ArmClient, AzureError> {
        let root = arm_endpoint.as_str().trim_end_matches('/').to_owned();
        let base = Url::parse(&root)
            .map_err(|e| AzureError::config(format!("invalid ARM endpoint '{root}': {e}")))?;
        Ok(ArmClient {
            svc: ServiceClient {
                http,
                tokens,
                scope: format!("{root}/.default"),
                service: Service::Arm,
                policy,
            },
            base,
            subscription_id: subscription_id.to_owned(),
        })
    }

    /// The configured subscription.
    pub fn subscription_id(&self) -> &str {
        &self.subscription_id
    }

    fn url(&self, path: &str, filter: Option<&str>) -> Result<Url, AzureError> {
        let mut url = join_path(&self.base, path)?;
        match filter {
            Some(f) => set_query(&mut url, &[("api-version", API_VERSION), ("$filter", f)]),
            None => set_query(&mut url, &[("api-version", API_VERSION)]),
        }
        Ok(url)
    }

    fn scope_or_default(&self, scope: &str) -> String {
        if scope.trim().is_empty() {
            format!("/subscriptions/{}", self.subscription_id)
        } else {
            scope.to_owned()
        }
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        mut url: Url,
        deadline: Deadline,
    ) -> Result<Vec<T>, AzureError> {
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self
                .svc
                .send(
                    op,
                    Method::GET,
                    url.clone(),
                    None,
                    Replay::Idempotent,
                    deadline,
                )
                .await?
                .json(op, Service::Arm)?;
            out.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                Some(next) => {
                    let next = Url::parse(&next).map_err(|e| {
                        AzureError::invalid_response(op, Service::Arm, format!("bad nextLink: {e}"))
                    })?;
                    if !same_origin(&self.base, &next) {
                        return Err(AzureError::invalid_response(
                            op,
                            Service::Arm,
                            "nextLink points to another host",
                        ));
                    }
                    url = next;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// `GET {roleDefinitionId}`; 404 `RoleDefinitionDoesNotExist` when unknown.
    pub async fn get_role_definition(
        &self,
        role_definition_id: &str,
        deadline: Deadline,
    ) -> Result<RoleDefinition, AzureError> {
        let op = "get role definition";
        let url = self.url(role_definition_id, None)?;
        let raw: RawRoleDefinition = self
            .svc
            .send(op, Method::GET, url, None, Replay::Idempotent, deadline)
            .await?
            .json(op, Service::Arm)?;
        Ok(raw.into())
    }

    /// The role definition named `role_name` visible at `assignment_scope` (see
    /// [`role_definition_scope`]), matched as [`pick_role_definition`] does.
    pub async fn find_role_definition_by_name(
        &self,
        assignment_scope: &str,
        role_name: &str,
        deadline: Deadline,
    ) -> Result<RoleDefinition, AzureError> {
        let op = "find role definition by name";
        let scope = role_definition_scope(assignment_scope, &self.subscription_id);
        let filter = format!("roleName eq {}", odata_literal(role_name));
        let url = self.url(
            &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions"),
            Some(&filter),
        )?;
        let found: Vec<RawRoleDefinition> = self.list(op, url, deadline).await?;
        pick_role_definition(found.into_iter().map(RoleDefinition::from), role_name)
    }

    /// `PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}` with
    /// `principalType: ServicePrincipal`.
    ///
    /// `name` must be a GUID chosen by the caller (record it before calling: a replay with
    /// the same name is idempotent). `PrincipalNotFound` is retried within the propagation
    /// timeout. If an equal assignment already exists under another name (409
    /// `RoleAssignmentExists`), that existing assignment is returned: its `name` differs
    /// from the one requested, which tells the caller it does not own it.
    pub async fn create_role_assignment(
        &self,
        scope: &str,
        name: &str,
        role_definition_id: &str,
        principal_id: &str,
        deadline: Deadline,
    ) -> Result<RoleAssignment, AzureError> {
        self.create_role_assignment_described(
            scope,
            name,
            role_definition_id,
            principal_id,
            None,
            deadline,
        )
        .await
    }

    /// [`ArmClient::create_role_assignment`] with `properties.description` set (free text,
    /// at most 2,048 characters in ARM).
    pub async fn create_role_assignment_described(
        &self,
        scope: &str,
        name: &str,
        role_definition_id: &str,
        principal_id: &str,
        description: Option<&str>,
        deadline: Deadline,
    ) -> Result<RoleAssignment, AzureError> {
        let op = "create role assignment";
        if uuid::Uuid::parse_str(name).is_err() {
            return Err(AzureError::invalid_input(
                op,
                "the role assignment name must be a GUID",
            ));
        }
        let scope = self.scope_or_default(scope);
        let url = self.url(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            None,
        )?;
        let mut body = json!({
            "properties": {
                "roleDefinitionId": role_definition_id,
                "principalId": principal_id,
                "principalType": "ServicePrincipal",
            }
        });
        if let Some(d) = description {
            body["properties"]["description"] = json!(d);
        }
        let budget = deadline.capped(self.svc.policy.propagation_timeout);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self
                .svc
                .send(
                    op,
                    Method::PUT,
                    url.clone(),
                    Some(&body),
                    Replay::Idempotent,
                    deadline,
                )
                .await;
            match result {
                Ok(resp) => {
                    let raw: RawRoleAssignment = resp.json(op, Service::Arm)?;
                    return Ok(raw.into());
                }
                Err(e) if e.is_principal_not_found() => {
                    tracing::debug!(operation = op, attempt, "principal not yet known to ARM");
                    if !sleep_within(budget, self.svc.policy.propagation_delay(attempt)).await {
                        return Err(e);
                    }
                }
                Err(e) if e.code() == Some("RoleAssignmentExists") => {
                    let existing = self
                        .list_role_assignments_for_principal(&scope, principal_id, deadline)
                        .await?;
                    let wanted = role_definition_guid(role_definition_id);
                    return existing
                        .into_iter()
                        .find(|ra| {
                            ra.scope
                                .trim_end_matches('/')
                                .eq_ignore_ascii_case(scope.trim_end_matches('/'))
                                && role_definition_guid(&ra.role_definition_id) == wanted
                        })
                        .ok_or(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET {roleAssignmentId}`.
    pub async fn get_role_assignment(
        &self,
        id: &str,
        deadline: Deadline,
    ) -> Result<RoleAssignment, AzureError> {
        let op = "get role assignment";
        let url = self.url(id, None)?;
        let raw: RawRoleAssignment = self
            .svc
            .send(op, Method::GET, url, None, Replay::Idempotent, deadline)
            .await?
            .json(op, Service::Arm)?;
        Ok(raw.into())
    }

    /// `DELETE {roleAssignmentId}`: 200 → `Deleted`; 204 or 404 → `AlreadyGone`.
    pub async fn delete_role_assignment(
        &self,
        id: &str,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let op = "delete role assignment";
        let url = self.url(id, None)?;
        match self
            .svc
            .send(op, Method::DELETE, url, None, Replay::Idempotent, deadline)
            .await
        {
            Ok(r) if r.status == 204 => Ok(DeleteOutcome::AlreadyGone),
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(e) if e.status() == Some(404) => Ok(DeleteOutcome::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// Every role assignment at, above and below `scope` (empty: the configured
    /// subscription): `GET {scope}/providers/Microsoft.Authorization/roleAssignments`.
    pub async fn list_role_assignments(
        &self,
        scope: &str,
        deadline: Deadline,
    ) -> Result<Vec<RoleAssignment>, AzureError> {
        let op = "list role assignments";
        let scope = self.scope_or_default(scope);
        let url = self.url(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
            None,
        )?;
        let raw: Vec<RawRoleAssignment> = self.list(op, url, deadline).await?;
        Ok(raw.into_iter().map(RoleAssignment::from).collect())
    }

    /// Role assignments of a principal at, above and below `scope` (empty: the configured
    /// subscription): `GET {scope}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId eq '{id}'`.
    pub async fn list_role_assignments_for_principal(
        &self,
        scope: &str,
        principal_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<RoleAssignment>, AzureError> {
        let op = "list role assignments";
        let scope = self.scope_or_default(scope);
        let filter = format!("principalId eq {}", odata_literal(principal_id));
        let url = self.url(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
            Some(&filter),
        )?;
        let raw: Vec<RawRoleAssignment> = self.list(op, url, deadline).await?;
        Ok(raw.into_iter().map(RoleAssignment::from).collect())
    }

    /// The caller's own effective permissions at `scope` (empty: the configured
    /// subscription): `GET {scope}/providers/Microsoft.Authorization/permissions`, one entry
    /// per role assignment that applies there. Needs no role; nothing is changed.
    pub async fn list_permissions(
        &self,
        scope: &str,
        deadline: Deadline,
    ) -> Result<Vec<Permission>, AzureError> {
        let op = "list permissions";
        let scope = self.scope_or_default(scope);
        let url = self.url(
            &format!("{scope}/providers/Microsoft.Authorization/permissions"),
            None,
        )?;
        self.list(op, url, deadline).await
    }

    /// Role assignments that count against the subscription's limit: those at the
    /// subscription or below it (`GET /subscriptions/{id}/providers/Microsoft.Authorization/roleAssignments`
    /// lists inherited ones too; they are left out).
    pub async fn count_subscription_role_assignments(
        &self,
        deadline: Deadline,
    ) -> Result<usize, AzureError> {
        let op = "count role assignments";
        let scope = self.scope_or_default("");
        let url = self.url(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
            None,
        )?;
        let raw: Vec<RawRoleAssignment> = self.list(op, url, deadline).await?;
        let prefix = scope.to_ascii_lowercase();
        Ok(raw
            .iter()
            .filter(|r| {
                let s = r.properties.scope.to_ascii_lowercase();
                s == prefix || s.starts_with(&format!("{prefix}/"))
            })
            .count())
    }
}

/// One entry of ARM's permissions API: what one role assignment allows at a scope.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// Allowed control-plane actions (may hold `*` wildcards).
    #[serde(default, deserialize_with = "null_default")]
    pub actions: Vec<String>,
    /// Actions excluded from `actions` of this entry.
    #[serde(default, deserialize_with = "null_default")]
    pub not_actions: Vec<String>,
    /// Allowed data-plane actions.
    #[serde(default, deserialize_with = "null_default")]
    pub data_actions: Vec<String>,
    /// Data actions excluded from `data_actions`.
    #[serde(default, deserialize_with = "null_default")]
    pub not_data_actions: Vec<String>,
}

impl Permission {
    /// Whether this entry allows `action`: a pattern of `actions` matches it and none of
    /// `not_actions` does (case-insensitive; `*` matches any run of characters).
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|p| wildcard_match(p, action))
            && !self.not_actions.iter().any(|p| wildcard_match(p, action))
    }
}

/// Whether `action` is allowed by any entry of `permissions`, as ARM evaluates them.
pub fn permissions_allow(permissions: &[Permission], action: &str) -> bool {
    permissions.iter().any(|p| p.allows(action))
}

/// Case-insensitive match of an ARM action pattern, where `*` matches any run of characters.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // dp[j]: pattern prefix p[..i] matches text prefix t[..j].
    let mut dp = vec![false; t.len() + 1];
    dp[0] = true;
    for c in &p {
        let mut next = vec![false; t.len() + 1];
        if *c == '*' {
            let mut seen = false;
            for j in 0..=t.len() {
                seen |= dp[j];
                next[j] = seen;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = dp[j - 1] && t[j - 1] == *c;
            }
        }
        dp = next;
    }
    dp[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_wildcards_and_not_actions() {
        assert!(wildcard_match(
            "*",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(wildcard_match(
            "microsoft.authorization/*/WRITE",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(wildcard_match(
            "*/read",
            "Microsoft.Authorization/roleDefinitions/read"
        ));
        assert!(!wildcard_match(
            "*/read",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(!wildcard_match(
            "Microsoft.Authorization/roleAssignments/*",
            "Microsoft.Authorization/roleDefinitions/read"
        ));
        let contributor = Permission {
            actions: vec!["*".into()],
            not_actions: vec![
                "Microsoft.Authorization/*/Delete".into(),
                "Microsoft.Authorization/*/Write".into(),
            ],
            ..Permission::default()
        };
        assert!(!contributor.allows("Microsoft.Authorization/roleAssignments/write"));
        assert!(contributor.allows("Microsoft.Authorization/roleDefinitions/read"));
        let uaa = Permission {
            actions: vec!["*/read".into(), "Microsoft.Authorization/*".into()],
            ..Permission::default()
        };
        // A notAction of one entry does not take away what another entry allows.
        assert!(permissions_allow(
            &[contributor.clone(), uaa],
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(!permissions_allow(
            &[contributor],
            "Microsoft.Authorization/roleAssignments/delete"
        ));
        assert!(!permissions_allow(
            &[],
            "Microsoft.Authorization/roleDefinitions/read"
        ));
    }

    #[test]
    fn role_names_match_case_insensitively_exact_case_first() {
        let def = |name: &str, guid: &str| RoleDefinition {
            id: format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
            name: guid.to_owned(),
            role_name: name.to_owned(),
        };
        let pick =
            |defs: &[RoleDefinition], name: &str| pick_role_definition(defs.iter().cloned(), name);
        let reader = def("Reader", "1");
        assert_eq!(
            pick(std::slice::from_ref(&reader), "reader").unwrap(),
            reader
        );
        assert_eq!(
            pick(std::slice::from_ref(&reader), "READER").unwrap(),
            reader
        );
        assert_eq!(
            pick(std::slice::from_ref(&reader), "Reader").unwrap(),
            reader
        );
        assert!(matches!(
            pick(std::slice::from_ref(&reader), "Writer"),
            Err(AzureError::NoMatch { .. })
        ));
        // A custom role differing only in case: the exact spelling wins ...
        let custom = def("reader", "2");
        let both = [reader.clone(), custom.clone()];
        assert_eq!(pick(&both, "Reader").unwrap(), reader);
        assert_eq!(pick(&both, "reader").unwrap(), custom);
        // ... and a spelling matching neither exactly is ambiguous.
        assert!(matches!(
            pick(&both, "READER"),
            Err(AzureError::MultipleMatches { count: 2, .. })
        ));
        // Two definitions with the very same name stay ambiguous.
        assert!(matches!(
            pick(&[reader.clone(), def("Reader", "3")], "Reader"),
            Err(AzureError::MultipleMatches { .. })
        ));
    }

    #[test]
    fn lookup_scope_is_the_assignments_container() {
        let d = "sub0";
        assert_eq!(role_definition_scope("", d), "/subscriptions/sub0");
        assert_eq!(
            role_definition_scope("/subscriptions/s1", d),
            "/subscriptions/s1"
        );
        assert_eq!(
            role_definition_scope("subscriptions/s1/", d),
            "/subscriptions/s1"
        );
        assert_eq!(
            role_definition_scope(
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
                d
            ),
            "/subscriptions/s1/resourceGroups/rg"
        );
        assert_eq!(
            role_definition_scope("/subscriptions/s1/resourcegroups/rg", d),
            "/subscriptions/s1/resourcegroups/rg"
        );
        assert_eq!(
            role_definition_scope("/providers/Microsoft.Management/managementGroups/mg1", d),
            "/providers/Microsoft.Management/managementGroups/mg1"
        );
        assert_eq!(role_definition_scope("/", d), "/");
    }

    #[test]
    fn decodes_arm_objects() {
        let ra: RawRoleAssignment = serde_json::from_str(
            r#"{"id":"/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/n","name":"n","type":"x",
               "properties":{"roleDefinitionId":"/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/G",
               "principalId":"p","principalType":"ServicePrincipal","scope":"/subscriptions/s","condition":null}}"#,
        )
        .unwrap();
        let ra = RoleAssignment::from(ra);
        assert_eq!(ra.scope, "/subscriptions/s");
        assert_eq!(ra.description, "");
        assert_eq!(ra.created_on, None);
        let described: RawRoleAssignment = serde_json::from_str(
            r#"{"id":"i","name":"n","properties":{"description":"made by m",
               "createdOn":"2024-05-01T10:00:00.1234567Z"}}"#,
        )
        .unwrap();
        let described = RoleAssignment::from(described);
        assert_eq!(described.description, "made by m");
        assert_eq!(
            described.created_on.map(|t| t.timestamp()),
            Some(1_714_557_600)
        );
        assert_eq!(role_definition_guid(&ra.role_definition_id), "g");
        let rd: RawRoleDefinition = serde_json::from_str(
            r#"{"id":"/providers/Microsoft.Authorization/roleDefinitions/x","name":"x","properties":{"roleName":"Reader"}}"#,
        )
        .unwrap();
        assert_eq!(RoleDefinition::from(rd).role_name, "Reader");
    }
}
