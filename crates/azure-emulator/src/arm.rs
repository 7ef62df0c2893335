//! Azure Resource Manager: subscriptions, resource groups, role definitions and role
//! assignments (Microsoft.Authorization), with ARM's authorization model.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::auth::{self, AuthFailure, Resource};
use super::errors::ArmError;
use super::filter::{self, Clause, Lit};
use super::jwt::Claims;
use super::paging;
use super::roles;
use super::state::{settled, DeletedObject, Directory, RoleAssignment};
use super::Shared;

type AResult = Result<Response, ArmError>;

/// api-versions accepted for Microsoft.Authorization.
pub const AUTHORIZATION_API_VERSIONS: &[&str] = &[
    "2014-04-01-preview",
    "2015-06-01",
    "2015-07-01",
    "2017-05-01",
    "2018-01-01-preview",
    "2018-07-01",
    "2018-09-01-preview",
    "2019-08-01-preview",
    "2020-03-01-preview",
    "2020-04-01-preview",
    "2020-08-01-preview",
    "2020-10-01",
    "2020-10-01-preview",
    "2021-03-01-preview",
    "2021-04-01-preview",
    "2022-01-01-preview",
    "2022-04-01",
    "2022-05-01-preview",
];

const PRINCIPAL_TYPES: [&str; 5] = [
    "User",
    "Group",
    "ServicePrincipal",
    "ForeignGroup",
    "Device",
];

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_write = method != Method::GET && method != Method::HEAD;
    let mut resp = match handle(&shared, &method, &uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let (name, value) = if is_write {
        ("x-ms-ratelimit-remaining-subscription-writes", "1199")
    } else {
        ("x-ms-ratelimit-remaining-subscription-reads", "11999")
    };
    resp.headers_mut()
        .insert(name, HeaderValue::from_static(value));
    resp
}

fn auth_error(shared: &Shared, f: AuthFailure) -> ArmError {
    let (code, msg) = match f {
        AuthFailure::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
        ),
        AuthFailure::Malformed => (
            "InvalidAuthenticationToken",
            "The access token is invalid.".to_string(),
        ),
        AuthFailure::BadSignature => (
            "InvalidAuthenticationToken",
            "The access token is invalid.".to_string(),
        ),
        AuthFailure::WrongAudience => (
            "InvalidAuthenticationToken",
            format!(
                "The access token has been obtained for wrong audience or resource. It should exactly match with one of the allowed audiences '{}/','{}','https://management.core.windows.net/','https://management.azure.com/'.",
                shared.urls.arm, shared.urls.arm
            ),
        ),
        AuthFailure::WrongTenant => (
            "InvalidAuthenticationTokenTenant",
            "The access token is from the wrong issuer. It must match the tenant associated with this subscription.".to_string(),
        ),
        AuthFailure::Expired { exp, now } => {
            let f = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.format("%m/%d/%Y %H:%M:%S").to_string())
                    .unwrap_or_default()
            };
            (
                "ExpiredAuthenticationToken",
                format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                    f(exp),
                    f(now)
                ),
            )
        }
        AuthFailure::NotYetValid => (
            "InvalidAuthenticationToken",
            "The access token is not yet valid.".to_string(),
        ),
    };
    let tenant = shared.dir().tenant_id.clone();
    let mut e = ArmError::new(StatusCode::UNAUTHORIZED, code, msg.clone());
    e.www_authenticate = Some(format!(
        "Bearer authorization_uri=\"{}{tenant}\", error=\"invalid_token\", error_description=\"{}\"",
        shared.urls.authority,
        msg.replace('"', "'")
    ));
    e
}

fn bad_request_format() -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "BadRequestFormat",
        "The request was incorrectly formatted.",
    )
}

struct Req<'a> {
    shared: &'a Shared,
    claims: Claims,
    path: String,
    query: Vec<(String, String)>,
    body: &'a [u8],
}

fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> AResult {
    let claims =
        auth::validate(shared, headers, Resource::Arm).map_err(|f| auth_error(shared, f))?;
    let query = paging::query_pairs(uri.query());
    let Some(version) = paging::param(&query, "api-version").map(str::to_string) else {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let path = uri.path().trim_end_matches('/').to_string();
    let req = Req {
        shared,
        claims,
        path: uri.path().to_string(),
        query,
        body,
    };
    let lower = path.to_ascii_lowercase();
    const AUTHZ: &str = "/providers/microsoft.authorization/";
    if let Some(pos) = lower.rfind(AUTHZ) {
        if !AUTHORIZATION_API_VERSIONS.contains(&version.as_str()) {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{version}' is invalid. The supported versions are '{}'.",
                    AUTHORIZATION_API_VERSIONS.join(",")
                ),
            ));
        }
        let scope = &path[..pos];
        let rest: Vec<&str> = path[pos + AUTHZ.len()..].split('/').collect();
        let kind = rest
            .first()
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default();
        return match (method.as_str(), kind.as_str(), rest.get(1), rest.len()) {
            ("GET", "roleassignments", None, 1) => list_assignments(&req, scope),
            ("GET", "roleassignments", Some(name), 2) => get_assignment(&req, scope, name),
            ("PUT", "roleassignments", Some(name), 2) => put_assignment(&req, scope, name),
            ("DELETE", "roleassignments", Some(name), 2) => delete_assignment(&req, scope, name),
            ("GET", "roledefinitions", None, 1) => list_definitions(&req, scope),
            ("GET", "roledefinitions", Some(id), 2) => get_definition(&req, scope, id),
            ("GET", "permissions", None, 1) => list_permissions(&req, scope),
            (_, "roleassignments" | "roledefinitions" | "permissions", _, 1 | 2) => {
                Err(ArmError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("The requested method '{method}' is not allowed."),
                ))
            }
            _ => Err(invalid_resource_type(&path)),
        };
    }
    if !looks_like_version(&version) {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!("The api-version '{version}' is invalid."),
        ));
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let lsegs: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lsegs.iter().map(String::as_str).collect();
    match (method.as_str(), l.as_slice()) {
        ("GET", ["subscriptions"]) => list_subscriptions(&req),
        ("GET", ["subscriptions", _]) => get_subscription(&req, segs[1]),
        ("GET", ["subscriptions", _, "resourcegroups"]) => list_resource_groups(&req, segs[1]),
        ("GET", ["subscriptions", _, "resourcegroups", _]) => {
            get_resource_group(&req, segs[1], segs[3])
        }
        ("PUT", ["subscriptions", _, "resourcegroups", _]) => {
            put_resource_group(&req, segs[1], segs[3])
        }
        ("DELETE", ["subscriptions", _, "resourcegroups", _]) => {
            delete_resource_group(&req, segs[1], segs[3])
        }
        _ => Err(invalid_resource_type(&path)),
    }
}

fn looks_like_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn invalid_resource_type(path: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        format!("The resource type could not be found for the request path '{path}'."),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

// ---------- scopes ----------

#[derive(Debug, Clone, PartialEq, Eq)]
enum ScopeKind {
    Root,
    Subscription,
    ResourceGroup(String),
    Resource(String),
    ManagementGroup(String),
}

#[derive(Debug, Clone)]
struct Scope {
    /// As sent, with a leading `/` and no trailing one (empty for the root).
    text: String,
    sub: Option<String>,
    kind: ScopeKind,
}

fn parse_scope(raw: &str) -> Result<Scope, ArmError> {
    let segs: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    let text = if segs.is_empty() {
        String::new()
    } else {
        format!("/{}", segs.join("/"))
    };
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let kind = match segs.as_slice() {
        [] => ScopeKind::Root,
        [s, _] if eq(s, "subscriptions") => ScopeKind::Subscription,
        [s, _, r, rg] if eq(s, "subscriptions") && eq(r, "resourceGroups") => {
            ScopeKind::ResourceGroup(rg.to_string())
        }
        [s, _, r, rg, p, _ns, rest @ ..]
            if eq(s, "subscriptions")
                && eq(r, "resourceGroups")
                && eq(p, "providers")
                && !rest.is_empty()
                && rest.len() % 2 == 0 =>
        {
            ScopeKind::Resource(rg.to_string())
        }
        [p, ns, m, id]
            if eq(p, "providers")
                && eq(ns, "Microsoft.Management")
                && eq(m, "managementGroups") =>
        {
            ScopeKind::ManagementGroup(id.to_string())
        }
        _ => return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "MissingSubscription",
            "The request did not have a subscription or a valid tenant level resource provider.",
        )),
    };
    let sub = match kind {
        ScopeKind::Subscription | ScopeKind::ResourceGroup(_) | ScopeKind::Resource(_) => {
            segs.get(1).map(|s| s.to_string())
        }
        _ => None,
    };
    Ok(Scope { text, sub, kind })
}

fn check_scope_exists(d: &Directory, scope: &Scope) -> Result<(), ArmError> {
    if let Some(sub) = &scope.sub {
        if !sub.eq_ignore_ascii_case(&d.subscription_id) {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{sub}' could not be found."),
            ));
        }
    }
    match &scope.kind {
        ScopeKind::ResourceGroup(rg) | ScopeKind::Resource(rg)
            if !d.resource_groups.contains_key(&rg.to_ascii_lowercase()) =>
        {
            Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{rg}' could not be found."),
            ))
        }
        ScopeKind::ManagementGroup(id)
            if !d
                .management_groups
                .iter()
                .any(|m| m.eq_ignore_ascii_case(id)) =>
        {
            Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ManagementGroupNotFound",
                format!("The management group '{id}' could not be found."),
            ))
        }
        _ => Ok(()),
    }
}

/// True when scope `outer` is `inner` or one of its ancestors.
fn at_or_above(outer: &str, inner: &str) -> bool {
    let o = outer.trim_end_matches('/').to_ascii_lowercase();
    let i = inner.trim_end_matches('/').to_ascii_lowercase();
    o.is_empty() || i == o || i.starts_with(&format!("{o}/"))
}

/// The principals whose assignments apply to `oid`: itself and its groups.
fn principal_set(d: &Directory, oid: &str) -> Vec<String> {
    let oid = oid.to_ascii_lowercase();
    let mut set = vec![oid.clone()];
    set.extend(
        d.groups
            .values()
            .filter(|g| g.members.contains(&oid))
            .map(|g| g.id.clone()),
    );
    set
}

fn authorize(req: &Req, d: &Directory, action: &str, scope: &Scope) -> Result<(), ArmError> {
    let principals = principal_set(d, &req.claims.oid);
    let allowed = d.role_assignments.values().any(|ra| {
        principals.contains(&ra.principal_id.to_ascii_lowercase())
            && at_or_above(&ra.scope, &scope.text)
            && roles::by_guid(&ra.role_guid).is_some_and(|r| r.allows(action))
    });
    if allowed {
        return Ok(());
    }
    let shown_scope = if scope.text.is_empty() {
        "/"
    } else {
        &scope.text
    };
    Err(ArmError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{shown_scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            req.claims.appid, req.claims.oid
        ),
    ))
}

fn list_page(req: &Req, items: Vec<Value>) -> AResult {
    let offset = match paging::param(&req.query, "$skipToken") {
        Some(t) => paging::decode_token(t).ok_or_else(|| {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidSkipToken",
                "The skip token is not valid.",
            )
        })?,
        None => 0,
    };
    let size = req.shared.settings().arm_page_size;
    let (page, next) = paging::page(items, offset, size);
    let mut body = json!({ "value": page });
    if let Some(n) = next {
        body["nextLink"] = json!(paging::next_link(
            &req.shared.urls.arm,
            &req.path,
            &req.query,
            "$skipToken",
            n
        ));
    }
    Ok(json_response(StatusCode::OK, body))
}

fn parse_filter(req: &Req) -> Result<Vec<Clause>, ArmError> {
    match paging::param(&req.query, "$filter") {
        None => Ok(Vec::new()),
        Some(f) => {
            let parsed = filter::parse(f).map_err(|e| {
                ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidFilterInQueryString",
                    format!("The filter '{f}' is not supported: {e}."),
                )
            })?;
            if parsed.any && parsed.clauses.len() > 1 {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidFilterInQueryString",
                    format!("The filter '{f}' is not supported: 'or' is not supported."),
                ));
            }
            Ok(parsed.clauses)
        }
    }
}

fn unsupported_filter(req: &Req) -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidFilterInQueryString",
        format!(
            "The filter '{}' is not supported.",
            paging::param(&req.query, "$filter").unwrap_or("")
        ),
    )
}

// ---------- role definitions ----------

/// The scope must exist, and below the root the caller needs the right to read role
/// definitions there.
fn check_definition_read(req: &Req, scope: &Scope) -> Result<(), ArmError> {
    let d = req.shared.dir();
    check_scope_exists(&d, scope)?;
    if scope.kind != ScopeKind::Root {
        authorize(
            req,
            &d,
            "Microsoft.Authorization/roleDefinitions/read",
            scope,
        )?;
    }
    Ok(())
}

/// `GET {scope}/providers/Microsoft.Authorization/permissions`: the caller's own effective
/// permissions at `scope`, one entry per role assignment that applies there (directly or
/// through a group, at the scope or above), computed from the same role definitions that
/// [`authorize`] enforces. Any authenticated caller may ask about itself.
fn list_permissions(req: &Req, raw_scope: &str) -> AResult {
    let scope = parse_scope(raw_scope)?;
    let d = req.shared.dir();
    check_scope_exists(&d, &scope)?;
    let principals = principal_set(&d, &req.claims.oid);
    let mut ras: Vec<&RoleAssignment> = d
        .role_assignments
        .values()
        .filter(|ra| {
            principals.contains(&ra.principal_id.to_ascii_lowercase())
                && at_or_above(&ra.scope, &scope.text)
        })
        .collect();
    ras.sort_by_key(|ra| ra.seq);
    let items: Vec<Value> = ras
        .iter()
        .filter_map(|ra| roles::by_guid(&ra.role_guid))
        .map(|r| {
            json!({
                "actions": r.actions,
                "notActions": r.not_actions,
                "dataActions": r.data_actions,
                "notDataActions": [],
            })
        })
        .collect();
    drop(d);
    list_page(req, items)
}

fn list_definitions(req: &Req, raw_scope: &str) -> AResult {
    let scope = parse_scope(raw_scope)?;
    check_definition_read(req, &scope)?;
    let clauses = parse_filter(req)?;
    let mut defs: Vec<&roles::RoleDef> = roles::BUILT_IN.iter().collect();
    for c in &clauses {
        match c {
            Clause::Eq(p, Lit::Str(v)) if p.eq_ignore_ascii_case("roleName") => {
                defs.retain(|r| r.name.eq_ignore_ascii_case(v));
            }
            Clause::Eq(p, Lit::Str(v)) if p.eq_ignore_ascii_case("type") => {
                let builtin = v.eq_ignore_ascii_case("BuiltInRole");
                if !builtin && !v.eq_ignore_ascii_case("CustomRole") {
                    return Err(unsupported_filter(req));
                }
                if !builtin {
                    defs.clear();
                }
            }
            _ => return Err(unsupported_filter(req)),
        }
    }
    let sub = scope.sub.clone();
    let items = defs.iter().map(|r| r.to_json(sub.as_deref())).collect();
    list_page(req, items)
}

fn get_definition(req: &Req, raw_scope: &str, id: &str) -> AResult {
    let scope = parse_scope(raw_scope)?;
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRoleDefinitionId",
            format!("The role definition ID '{id}' is not valid."),
        ));
    }
    check_definition_read(req, &scope)?;
    let def = roles::by_guid(id).ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                id.replace('-', "")
            ),
        )
    })?;
    Ok(json_response(
        StatusCode::OK,
        def.to_json(scope.sub.as_deref()),
    ))
}

// ---------- role assignments ----------

fn list_assignments(req: &Req, raw_scope: &str) -> AResult {
    let scope = parse_scope(raw_scope)?;
    let clauses = parse_filter(req)?;
    let d = req.shared.dir();
    check_scope_exists(&d, &scope)?;
    authorize(
        req,
        &d,
        "Microsoft.Authorization/roleAssignments/read",
        &scope,
    )?;
    let mut at_scope_only = false;
    let mut principal: Option<String> = None;
    let mut assigned_to: Option<Vec<String>> = None;
    for c in &clauses {
        match c {
            Clause::Func(name, args) if name == "atscope" && args.is_empty() => {
                at_scope_only = true
            }
            Clause::Func(name, args) if name == "assignedto" => match args.as_slice() {
                [Lit::Str(id)] => assigned_to = Some(principal_set(&d, id)),
                _ => return Err(unsupported_filter(req)),
            },
            Clause::Eq(p, Lit::Str(v)) if p.eq_ignore_ascii_case("principalId") => {
                principal = Some(v.to_ascii_lowercase())
            }
            _ => return Err(unsupported_filter(req)),
        }
    }
    let mut ras: Vec<&RoleAssignment> = d
        .role_assignments
        .values()
        .filter(|ra| {
            let above = at_or_above(&ra.scope, &scope.text);
            let below = at_or_above(&scope.text, &ra.scope);
            let in_scope = if at_scope_only { above } else { above || below };
            let pid = ra.principal_id.to_ascii_lowercase();
            in_scope
                && principal.as_ref().is_none_or(|p| *p == pid)
                && assigned_to.as_ref().is_none_or(|set| set.contains(&pid))
        })
        .collect();
    ras.sort_by_key(|r| r.seq);
    let items = ras.iter().map(|r| r.to_json(&d.subscription_id)).collect();
    drop(d);
    list_page(req, items)
}

fn not_found_assignment(name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "RoleAssignmentNotFound",
        format!("The role assignment '{name}' is not found."),
    )
}

fn same_scope(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

fn get_assignment(req: &Req, raw_scope: &str, name: &str) -> AResult {
    let scope = parse_scope(raw_scope)?;
    let d = req.shared.dir();
    check_scope_exists(&d, &scope)?;
    authorize(
        req,
        &d,
        "Microsoft.Authorization/roleAssignments/read",
        &scope,
    )?;
    let read_delay = std::time::Duration::from_millis(req.shared.settings().read_delay_ms);
    let ra = d
        .role_assignments
        .get(&name.to_ascii_lowercase())
        .filter(|ra| same_scope(&ra.scope, &scope.text) && settled(ra.created_at, read_delay))
        .ok_or_else(|| not_found_assignment(name))?;
    Ok(json_response(
        StatusCode::OK,
        ra.to_json(&d.subscription_id),
    ))
}

fn role_guid_from_id(id: &str, sub: &str) -> Result<String, ArmError> {
    let invalid = || {
        ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRoleDefinitionId",
            format!("The role definition ID '{id}' is not valid."),
        )
    };
    let lower = id.trim_end_matches('/').to_ascii_lowercase();
    const MARK: &str = "/providers/microsoft.authorization/roledefinitions/";
    let pos = lower.rfind(MARK).ok_or_else(invalid)?;
    let guid = &lower[pos + MARK.len()..];
    if guid.len() != 36 || uuid::Uuid::parse_str(guid).is_err() {
        return Err(invalid());
    }
    let prefix = &lower[..pos];
    if !prefix.is_empty() {
        let segs: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            ["subscriptions", s, ..] if *s == sub.to_ascii_lowercase() => {}
            ["subscriptions", _, ..] => {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "RoleDefinitionDoesNotExist",
                    format!(
                        "The specified role definition with ID '{}' does not exist.",
                        guid.replace('-', "")
                    ),
                ))
            }
            ["providers", "microsoft.management", "managementgroups", _] => {}
            _ => return Err(invalid()),
        }
    }
    if roles::by_guid(guid).is_none() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                guid.replace('-', "")
            ),
        ));
    }
    Ok(guid.to_string())
}

fn put_assignment(req: &Req, raw_scope: &str, name: &str) -> AResult {
    let scope = parse_scope(raw_scope)?;
    if name.len() != 36 || uuid::Uuid::parse_str(name).is_err() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
        ));
    }
    let settings = req.shared.settings();
    let mut d = req.shared.dir();
    authorize(
        req,
        &d,
        "Microsoft.Authorization/roleAssignments/write",
        &scope,
    )?;
    check_scope_exists(&d, &scope)?;
    if scope.kind == ScopeKind::Root {
        return Err(ArmError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "Role assignments at the root scope '/' need elevated access.",
        ));
    }
    let body: Value = serde_json::from_slice(req.body).map_err(|_| bad_request_format())?;
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(bad_request_format)?;
    let role_id = props
        .get("roleDefinitionId")
        .and_then(Value::as_str)
        .unwrap_or("");
    let role_guid = role_guid_from_id(role_id, &d.subscription_id)?;
    let principal_id = match props.get("principalId").and_then(Value::as_str) {
        Some(p) if p.len() == 36 && uuid::Uuid::parse_str(p).is_ok() => p.to_ascii_lowercase(),
        _ => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidPrincipalId",
                "A valid principal ID must be provided for role assignment.",
            ))
        }
    };
    let given_type = match props.get("principalType") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => {
            match PRINCIPAL_TYPES.iter().find(|p| p.eq_ignore_ascii_case(t)) {
                Some(p) => Some(p.to_string()),
                None => return Err(bad_request_format()),
            }
        }
        Some(_) => return Err(bad_request_format()),
    };
    let text_prop = |k: &str| props.get(k).and_then(Value::as_str).map(str::to_string);

    // Principal lookup, with replication delay.
    let actual_type = match d.object_kind(&principal_id) {
        Some("ServicePrincipal") => {
            let visible = d
                .service_principals
                .get(&principal_id)
                .is_some_and(|sp| settled(sp.created_at, settings.propagation()));
            if !visible && given_type.as_deref() != Some("ServicePrincipal") {
                None
            } else {
                Some("ServicePrincipal")
            }
        }
        Some("Group") => Some("Group"),
        // A service principal deleted moments ago: with `principalType` ARM looks nothing
        // up, so the assignment is made for a principal that no longer exists (Azure lists
        // it as "Identity not found"). A late PUT of a client that created the principal
        // and then lost track of it leaves such an orphan.
        _ if given_type.as_deref() == Some("ServicePrincipal")
            && matches!(
                d.deleted.get(&principal_id),
                Some(DeletedObject::ServicePrincipal(_))
            ) =>
        {
            Some("ServicePrincipal")
        }
        _ => None,
    };
    let Some(actual_type) = actual_type else {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "PrincipalNotFound",
            format!(
                "Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
                principal_id.replace('-', ""),
                d.tenant_id
            ),
        ));
    };
    if let Some(t) = &given_type {
        if t != actual_type {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "UnmatchedPrincipalType",
                format!(
                    "The PrincipalId '{}' has type '{actual_type}' , which is different from specified PrincipalType '{t}'.",
                    principal_id.replace('-', "")
                ),
            ));
        }
    }

    let key = name.to_ascii_lowercase();
    if let Some(existing) = d.role_assignments.get(&key) {
        if same_scope(&existing.scope, &scope.text)
            && existing.principal_id.eq_ignore_ascii_case(&principal_id)
            && existing.role_guid.eq_ignore_ascii_case(&role_guid)
        {
            return Ok(json_response(
                StatusCode::OK,
                existing.to_json(&d.subscription_id),
            ));
        }
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        ));
    }
    if let Some(dup) = d.role_assignments.values().find(|ra| {
        same_scope(&ra.scope, &scope.text)
            && ra.principal_id.eq_ignore_ascii_case(&principal_id)
            && ra.role_guid.eq_ignore_ascii_case(&role_guid)
    }) {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            format!(
                "The role assignment already exists. The ID of the existing role assignment is {}.",
                dup.name.replace('-', "")
            ),
        ));
    }
    let sub_scope = d.subscription_scope();
    let count = d
        .role_assignments
        .values()
        .filter(|ra| at_or_above(&sub_scope, &ra.scope))
        .count();
    if count >= settings.role_assignment_limit {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "RoleAssignmentLimitExceeded",
            format!(
                "No more role assignments can be created. The limit of {} role assignments for subscription '{}' has been reached.",
                settings.role_assignment_limit, d.subscription_id
            ),
        ));
    }
    let seq = d.next_seq();
    let ra = RoleAssignment {
        name: key.clone(),
        scope: scope.text.clone(),
        role_guid,
        principal_id,
        principal_type: given_type.unwrap_or_else(|| actual_type.to_string()),
        description: text_prop("description"),
        condition: text_prop("condition"),
        condition_version: text_prop("conditionVersion"),
        created: settings.created_clock(),
        created_by: Some(req.claims.oid.clone()),
        created_at: Some(std::time::Instant::now()),
        seq,
    };
    let json = ra.to_json(&d.subscription_id);
    d.role_assignments.insert(key, ra);
    Ok(json_response(StatusCode::CREATED, json))
}

fn delete_assignment(req: &Req, raw_scope: &str, name: &str) -> AResult {
    let scope = parse_scope(raw_scope)?;
    let mut d = req.shared.dir();
    authorize(
        req,
        &d,
        "Microsoft.Authorization/roleAssignments/delete",
        &scope,
    )?;
    check_scope_exists(&d, &scope)?;
    let key = name.to_ascii_lowercase();
    let matches = d
        .role_assignments
        .get(&key)
        .is_some_and(|ra| same_scope(&ra.scope, &scope.text));
    if !matches {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let json = d
        .role_assignments
        .remove(&key)
        .map(|ra| ra.to_json(&d.subscription_id))
        .unwrap_or(Value::Null);
    Ok(json_response(StatusCode::OK, json))
}

// ---------- subscriptions and resource groups ----------

fn subscription_json(d: &Directory) -> Value {
    json!({
        "id": format!("/subscriptions/{}", d.subscription_id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": d.subscription_id,
        "tenantId": d.tenant_id,
        "displayName": d.subscription_name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off"
        }
    })
}

fn list_subscriptions(req: &Req) -> AResult {
    let d = req.shared.dir();
    let principals = principal_set(&d, &req.claims.oid);
    let sub_scope = d.subscription_scope();
    let visible = d.role_assignments.values().any(|ra| {
        principals.contains(&ra.principal_id.to_ascii_lowercase())
            && (at_or_above(&ra.scope, &sub_scope) || at_or_above(&sub_scope, &ra.scope))
    });
    let items = if visible {
        vec![subscription_json(&d)]
    } else {
        Vec::new()
    };
    drop(d);
    list_page(req, items)
}

fn get_subscription(req: &Req, sub: &str) -> AResult {
    let scope = parse_scope(&format!("/subscriptions/{sub}"))?;
    let d = req.shared.dir();
    check_scope_exists(&d, &scope)?;
    authorize(req, &d, "Microsoft.Resources/subscriptions/read", &scope)?;
    Ok(json_response(StatusCode::OK, subscription_json(&d)))
}

fn list_resource_groups(req: &Req, sub: &str) -> AResult {
    let scope = parse_scope(&format!("/subscriptions/{sub}"))?;
    let d = req.shared.dir();
    check_scope_exists(&d, &scope)?;
    authorize(
        req,
        &d,
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        &scope,
    )?;
    let mut rgs: Vec<_> = d.resource_groups.values().collect();
    rgs.sort_by_key(|r| r.seq);
    let items = rgs.iter().map(|r| r.to_json(&d.subscription_id)).collect();
    drop(d);
    list_page(req, items)
}

fn rg_not_found(rg: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceGroupNotFound",
        format!("Resource group '{rg}' could not be found."),
    )
}

fn get_resource_group(req: &Req, sub: &str, rg: &str) -> AResult {
    let scope = parse_scope(&format!("/subscriptions/{sub}/resourceGroups/{rg}"))?;
    let d = req.shared.dir();
    authorize(
        req,
        &d,
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        &scope,
    )?;
    check_scope_exists(&d, &scope)?;
    let json = d
        .resource_groups
        .get(&rg.to_ascii_lowercase())
        .map(|r| r.to_json(&d.subscription_id))
        .ok_or_else(|| rg_not_found(rg))?;
    Ok(json_response(StatusCode::OK, json))
}

fn valid_rg_name(rg: &str) -> bool {
    !rg.is_empty()
        && rg.chars().count() <= 90
        && !rg.ends_with('.')
        && rg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
}

fn put_resource_group(req: &Req, sub: &str, rg: &str) -> AResult {
    let scope = parse_scope(&format!("/subscriptions/{sub}/resourceGroups/{rg}"))?;
    let mut d = req.shared.dir();
    authorize(
        req,
        &d,
        "Microsoft.Resources/subscriptions/resourceGroups/write",
        &scope,
    )?;
    check_scope_exists(
        &d,
        &Scope {
            text: format!("/subscriptions/{sub}"),
            sub: Some(sub.to_string()),
            kind: ScopeKind::Subscription,
        },
    )?;
    if !valid_rg_name(rg) {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidResourceGroup",
            format!("The provided resource group name '{rg}' has these invalid characters or is too long."),
        ));
    }
    let body: Value = serde_json::from_slice(req.body).map_err(|_| bad_request_format())?;
    let location = match body.get("location").and_then(Value::as_str) {
        Some(l) if !l.is_empty() => l.to_string(),
        _ => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "LocationRequired",
                "The location property is required for this definition.",
            ))
        }
    };
    let tags = body.get("tags").cloned().unwrap_or_else(|| json!({}));
    let key = rg.to_ascii_lowercase();
    let status = if let Some(existing) = d.resource_groups.get_mut(&key) {
        if !existing.location.eq_ignore_ascii_case(&location) {
            return Err(ArmError::new(
                StatusCode::CONFLICT,
                "InvalidResourceGroupLocation",
                format!(
                    "Invalid resource group location '{location}'. The Resource group already exists in location '{}'.",
                    existing.location
                ),
            ));
        }
        existing.tags = tags;
        StatusCode::OK
    } else {
        d.add_resource_group(rg, &location);
        if let Some(r) = d.resource_groups.get_mut(&key) {
            r.tags = tags;
        }
        StatusCode::CREATED
    };
    let json = d
        .resource_groups
        .get(&key)
        .map(|r| r.to_json(&d.subscription_id))
        .unwrap_or(Value::Null);
    Ok(json_response(status, json))
}

fn delete_resource_group(req: &Req, sub: &str, rg: &str) -> AResult {
    let scope = parse_scope(&format!("/subscriptions/{sub}/resourceGroups/{rg}"))?;
    let mut d = req.shared.dir();
    authorize(
        req,
        &d,
        "Microsoft.Resources/subscriptions/resourceGroups/delete",
        &scope,
    )?;
    check_scope_exists(&d, &scope)?;
    d.resource_groups.remove(&rg.to_ascii_lowercase());
    let text = scope.text.clone();
    d.role_assignments
        .retain(|_, ra| !at_or_above(&text, &ra.scope));
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(parse_scope("").unwrap().kind, ScopeKind::Root);
        assert_eq!(
            parse_scope("/subscriptions/x").unwrap().kind,
            ScopeKind::Subscription
        );
        assert_eq!(
            parse_scope("/subscriptions/x/resourcegroups/rg")
                .unwrap()
                .kind,
            ScopeKind::ResourceGroup("rg".into())
        );
        assert_eq!(
            parse_scope(
                "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa"
            )
            .unwrap()
            .kind,
            ScopeKind::Resource("rg".into())
        );
        assert!(parse_scope("/foo/bar").is_err());
        assert!(at_or_above(
            "/subscriptions/X",
            "/subscriptions/x/resourceGroups/a"
        ));
        assert!(!at_or_above(
            "/subscriptions/x/resourceGroups/a",
            "/subscriptions/x/resourceGroups/ab"
        ));
        assert!(at_or_above("", "/subscriptions/x"));
    }

    #[test]
    fn role_ids() {
        let sub = "00000000-0000-0000-0000-000000000001";
        let owner = format!(
            "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
            roles::OWNER
        );
        assert_eq!(role_guid_from_id(&owner, sub).unwrap(), roles::OWNER);
        let tenant_form = format!(
            "/providers/Microsoft.Authorization/roleDefinitions/{}",
            roles::OWNER
        );
        assert_eq!(role_guid_from_id(&tenant_form, sub).unwrap(), roles::OWNER);
        assert_eq!(
            role_guid_from_id("nope", sub).unwrap_err().code,
            "InvalidRoleDefinitionId"
        );
        let unknown = "/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-0000-0000-000000000000";
        assert_eq!(
            role_guid_from_id(unknown, sub).unwrap_err().code,
            "RoleDefinitionDoesNotExist"
        );
    }
}
