//! Microsoft Graph v1.0: applications, service principals, passwords, federated identity
//! credentials, groups and their members, deleted items.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::auth::{self, AuthFailure, Resource};
use super::errors::GraphError;
use super::filter::{self, Clause, Lit};
use super::jwt::Claims;
use super::paging;
use super::state::{settled, Application, DeletedObject, FederatedCredential, Password};
use super::Shared;

#[path = "graph_creds.rs"]
mod creds;

type GResult = Result<Response, GraphError>;

/// One compiled `$filter` clause.
type Check = Box<dyn Fn(&Value) -> bool>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

const APP_READ: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const APP_WRITE: &[&str] = &["Application.ReadWrite.All", "Directory.ReadWrite.All"];
/// Create applications and service principals, and read, update and delete those the
/// caller owns (it owns what it creates with this permission).
const OWNED_BY: &str = "Application.ReadWrite.OwnedBy";
const GROUP_READ: &[&str] = &[
    "Group.Read.All",
    "Group.ReadWrite.All",
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const GROUP_WRITE: &[&str] = &["Group.ReadWrite.All", "Directory.ReadWrite.All"];
const MEMBER_WRITE: &[&str] = &[
    "Group.ReadWrite.All",
    "GroupMember.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const ANY_READ: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

const MSA_AUDIENCES: [&str; 2] = [
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];
const AUDIENCES: [&str; 4] = [
    "AzureADMyOrg",
    "AzureADMultipleOrgs",
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];

/// Everything a handler needs about the request.
struct Req<'a> {
    shared: &'a Shared,
    claims: Claims,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Req<'_> {
    fn require(&self, any_of: &[&str]) -> Result<(), GraphError> {
        if self
            .claims
            .roles
            .iter()
            .any(|r| any_of.contains(&r.as_str()))
        {
            Ok(())
        } else {
            Err(GraphError::denied())
        }
    }

    fn has(&self, role: &str) -> bool {
        self.claims.roles.iter().any(|r| r == role)
    }

    /// `any_of`, or Application.ReadWrite.OwnedBy when the caller owns the application or
    /// service principal `key` (an unknown key is refused like a foreign one).
    fn require_app(&self, any_of: &[&str], owner: Owner, key: &str) -> Result<(), GraphError> {
        if self.require(any_of).is_ok() {
            return Ok(());
        }
        if self.has(OWNED_BY) {
            let id = match owner {
                Owner::App => find_app_id(self, key),
                Owner::Sp => find_sp_id(self, key),
            };
            if id.is_some_and(|id| self.shared.dir().owns(&id, &self.claims.oid)) {
                return Ok(());
            }
        }
        Err(GraphError::denied())
    }

    fn json_body(&self) -> Result<Map<String, Value>, GraphError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(GraphError::invalid_json()),
        }
    }

    fn base(&self) -> &str {
        &self.shared.urls.graph
    }

    fn context(&self, fragment: &str) -> String {
        format!("{}/v1.0/$metadata#{fragment}", self.base())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `applications(appId='x')` into `applications` and the key `appId=x`.
fn split_alt_key(seg: &str) -> Vec<String> {
    if let Some((coll, rest)) = seg.split_once('(') {
        if let Some(inner) = rest.strip_suffix(')') {
            let key = match inner.split_once('=') {
                Some((k, v)) => format!(
                    "{}={}",
                    k.trim(),
                    v.trim().trim_matches('\'').trim_matches('"')
                ),
                None => inner.trim().trim_matches('\'').to_string(),
            };
            return vec![coll.to_string(), key];
        }
    }
    vec![seg.to_string()]
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&shared, method, &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn auth_error(f: AuthFailure) -> GraphError {
    let msg = match f {
        AuthFailure::Missing => "Access token is empty.",
        AuthFailure::Malformed => "CompactToken parsing failed with error code: 80049217",
        AuthFailure::BadSignature => "Access token validation failure. Invalid signature.",
        AuthFailure::WrongAudience => "Access token validation failure. Invalid audience.",
        AuthFailure::WrongTenant => "Access token validation failure. Invalid issuer or signature.",
        AuthFailure::Expired { .. } => "Lifetime validation failed, the token is expired.",
        AuthFailure::NotYetValid => "Lifetime validation failed, the token is not yet valid.",
    };
    GraphError::unauthorized(msg)
}

async fn handle(
    shared: &Shared,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> GResult {
    let path = uri.path().to_string();
    // Only `organization` is served under beta (its `directorySizeQuota` is beta-only).
    let beta = path
        .strip_prefix("/beta/")
        .filter(|r| r.split('/').next() == Some("organization"));
    let Some(rest) = path.strip_prefix("/v1.0/").or(beta) else {
        let version = path.trim_start_matches('/').split('/').next().unwrap_or("");
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Invalid version: {version}"),
        ));
    };
    let claims = auth::validate(shared, headers, Resource::Graph).map_err(auth_error)?;
    if !shared
        .dir()
        .service_principals
        .contains_key(&claims.oid.to_ascii_lowercase())
    {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_IdentityNotFound",
            "The identity of the calling application could not be established.",
        ));
    }
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .flat_map(|s| split_alt_key(&s))
        .collect();
    let req = Req {
        shared,
        claims,
        method: method.clone(),
        path: path.clone(),
        query: paging::query_pairs(uri.query()),
        headers,
        body,
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.as_str();
    match (m, s.as_slice()) {
        ("GET", ["applications"]) => list_applications(&req),
        ("POST", ["applications"]) => create_application(&req),
        ("GET", ["applications", k]) => get_application(&req, k),
        ("PATCH", ["applications", k]) => patch_application(&req, k),
        ("DELETE", ["applications", k]) => delete_application(&req, k),
        ("POST", ["applications", k, "addPassword"]) => add_password(&req, Owner::App, k).await,
        ("POST", ["applications", k, "removePassword"]) => {
            remove_password(&req, Owner::App, k).await
        }
        ("GET", ["applications", k, "federatedIdentityCredentials"]) => list_fics(&req, k),
        ("POST", ["applications", k, "federatedIdentityCredentials"]) => create_fic(&req, k),
        ("GET", ["applications", k, "federatedIdentityCredentials", f]) => get_fic(&req, k, f),
        ("DELETE", ["applications", k, "federatedIdentityCredentials", f]) => {
            delete_fic(&req, k, f)
        }
        ("POST", ["applications", k, "addKey"]) => creds::add_key(&req, Owner::App, k),
        ("POST", ["applications", k, "removeKey"]) => creds::remove_key(&req, Owner::App, k),
        ("POST", ["servicePrincipals", k, "addKey"]) => creds::add_key(&req, Owner::Sp, k),
        ("POST", ["servicePrincipals", k, "removeKey"]) => creds::remove_key(&req, Owner::Sp, k),
        ("PATCH", ["servicePrincipals", k]) => creds::patch_service_principal(&req, k),
        ("GET", ["applications", k, "appManagementPolicies"]) => {
            creds::list_assigned(&req, Owner::App, k)
        }
        ("POST", ["applications", k, "appManagementPolicies", "$ref"]) => {
            creds::assign(&req, Owner::App, k)
        }
        ("DELETE", ["applications", k, "appManagementPolicies", p, "$ref"]) => {
            creds::unassign(&req, Owner::App, k, p)
        }
        ("GET", ["servicePrincipals", k, "appManagementPolicies"]) => {
            creds::list_assigned(&req, Owner::Sp, k)
        }
        ("POST", ["servicePrincipals", k, "appManagementPolicies", "$ref"]) => {
            creds::assign(&req, Owner::Sp, k)
        }
        ("DELETE", ["servicePrincipals", k, "appManagementPolicies", p, "$ref"]) => {
            creds::unassign(&req, Owner::Sp, k, p)
        }
        ("GET", ["policies", "defaultAppManagementPolicy"]) => creds::get_default_policy(&req),
        ("PATCH", ["policies", "defaultAppManagementPolicy"]) => creds::patch_default_policy(&req),
        ("GET", ["policies", "appManagementPolicies"]) => creds::list_policies(&req),
        ("POST", ["policies", "appManagementPolicies"]) => creds::create_policy(&req),
        ("GET", ["policies", "appManagementPolicies", id]) => creds::get_policy(&req, id),
        ("PATCH", ["policies", "appManagementPolicies", id]) => creds::patch_policy(&req, id),
        ("DELETE", ["policies", "appManagementPolicies", id]) => creds::delete_policy(&req, id),
        ("GET", ["policies", "appManagementPolicies", id, "appliesTo"]) => {
            creds::policy_applies_to(&req, id)
        }
        ("GET", ["servicePrincipals"]) => list_service_principals(&req),
        ("POST", ["servicePrincipals"]) => create_service_principal(&req),
        ("GET", ["servicePrincipals", k]) => get_service_principal(&req, k),
        ("GET", ["applications", k, "owners"]) => list_owners(&req, Owner::App, k),
        ("GET", ["servicePrincipals", k, "owners"]) => list_owners(&req, Owner::Sp, k),
        ("DELETE", ["servicePrincipals", k]) => delete_service_principal(&req, k),
        ("POST", ["servicePrincipals", k, "addPassword"]) => add_password(&req, Owner::Sp, k).await,
        ("POST", ["servicePrincipals", k, "removePassword"]) => {
            remove_password(&req, Owner::Sp, k).await
        }
        ("GET", ["directory", "deletedItems", t]) if t.starts_with("microsoft.graph.") => {
            list_deleted(&req, t)
        }
        ("GET", ["directory", "deletedItems", id]) => get_deleted(&req, id),
        ("DELETE", ["directory", "deletedItems", id]) => purge_deleted(&req, id),
        ("POST", ["directory", "deletedItems", id, "restore"]) => restore_deleted(&req, id),
        ("GET", ["groups"]) => list_groups(&req),
        ("POST", ["groups"]) => create_group(&req),
        ("GET", ["groups", id]) => get_group(&req, id),
        ("DELETE", ["groups", id]) => delete_group(&req, id),
        ("GET", ["groups", id, "members"]) => list_members(&req, id),
        ("POST", ["groups", id, "members", "$ref"]) => add_member(&req, id),
        ("DELETE", ["groups", id, "members", member, "$ref"]) => remove_member(&req, id, member),
        ("DELETE", ["groups", id, "members", member]) => delete_member_object(&req, id, member),
        ("GET", ["directoryObjects", id]) => get_directory_object(&req, id),
        ("GET", ["organization"]) => list_organization(&req, beta.is_some()),
        ("GET", ["organization", id]) => get_organization(&req, id, beta.is_some()),
        (_, [first, ..])
            if [
                "applications",
                "servicePrincipals",
                "groups",
                "directory",
                "directoryObjects",
                "policies",
                "organization",
            ]
            .contains(first)
                && s.len() <= 5 =>
        {
            Err(GraphError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                format!(
                    "Specified HTTP method '{}' is not allowed for the request target.",
                    req.method
                ),
            ))
        }
        (_, segs) => {
            let seg = segs.first().copied().unwrap_or("");
            Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Resource not found for the segment '{seg}'."),
            ))
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        ),
    );
    resp
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn entity(req: &Req, status: StatusCode, context: &str, mut v: Value) -> Response {
    if let Value::Object(m) = &mut v {
        let mut out = Map::new();
        out.insert("@odata.context".to_string(), json!(req.context(context)));
        out.extend(std::mem::take(m));
        v = Value::Object(out);
    }
    json_response(status, v)
}

// ---------- listing, filtering, paging ----------

fn string_eq(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn lit_matches(field: Option<&Value>, lit: &Lit) -> bool {
    match (field, lit) {
        (Some(Value::String(f)), Lit::Str(v)) => string_eq(f, v),
        (Some(Value::Bool(f)), Lit::Bool(v)) => f == v,
        (None | Some(Value::Null), Lit::Null) => true,
        (Some(Value::Array(items)), Lit::Str(v)) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| string_eq(s, v))),
        _ => false,
    }
}

fn unsupported_query(prop: &str, entity: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        format!("Unsupported or invalid query filter clause specified for property '{prop}' of resource '{entity}'."),
    )
}

/// Applies `$filter`, `$count`, `$top`, `$skiptoken`, `$select` and renders a collection.
/// `items` hold at least the `filterable` properties of each object; `render` turns the
/// items of the returned page into full objects (so that large collections are not rendered
/// in full for every filtered read).
fn list_response(
    req: &Req,
    context: &str,
    entity_name: &str,
    filterable: &[&str],
    items: Vec<Value>,
    render: impl FnOnce(Vec<Value>) -> Vec<Value>,
) -> GResult {
    let advanced = req
        .headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
        && paging::param(&req.query, "$count").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut items = items;
    if let Some(f) = paging::param(&req.query, "$filter") {
        let parsed = filter::parse(f).map_err(|e| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Invalid filter clause: {e}"),
            )
        })?;
        let prop_ok = |p: &str| -> Result<String, GraphError> {
            filterable
                .iter()
                .find(|f| f.eq_ignore_ascii_case(p))
                .map(|f| f.to_string())
                .ok_or_else(|| unsupported_query(p, entity_name))
        };
        // Validate every clause up front.
        let mut checks: Vec<Check> = Vec::new();
        for c in &parsed.clauses {
            match c {
                Clause::Eq(p, v) => {
                    let p = prop_ok(p)?;
                    let v = v.clone();
                    checks.push(Box::new(move |o| lit_matches(o.get(&p), &v)));
                }
                Clause::In(p, vs) => {
                    let p = prop_ok(p)?;
                    let vs = vs.clone();
                    checks.push(Box::new(move |o| {
                        vs.iter().any(|v| lit_matches(o.get(&p), v))
                    }));
                }
                Clause::Ne(p, v) => {
                    let p = prop_ok(p)?;
                    if !advanced {
                        return Err(unsupported_query(&p, entity_name));
                    }
                    let v = v.clone();
                    checks.push(Box::new(move |o| !lit_matches(o.get(&p), &v)));
                }
                Clause::Func(name, args) if name == "startswith" || name == "endswith" => {
                    let (Some(Lit::Ident(p)), Some(Lit::Str(v))) = (args.first(), args.get(1))
                    else {
                        return Err(GraphError::new(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            format!("Invalid filter clause: {name} needs a property and a string"),
                        ));
                    };
                    let p = prop_ok(p)?;
                    if name == "endswith" && !advanced {
                        return Err(unsupported_query(&p, entity_name));
                    }
                    let v = v.to_lowercase();
                    let ends = name == "endswith";
                    checks.push(Box::new(move |o| {
                        o.get(&p).and_then(Value::as_str).is_some_and(|s| {
                            let s = s.to_lowercase();
                            if ends {
                                s.ends_with(&v)
                            } else {
                                s.starts_with(&v)
                            }
                        })
                    }));
                }
                Clause::Any(p, test) => {
                    let p = prop_ok(p)?;
                    let test = test.clone();
                    checks.push(Box::new(move |o| {
                        o.get(&p).and_then(Value::as_array).is_some_and(|items| {
                            items
                                .iter()
                                .any(|i| i.as_str().is_some_and(|s| test.matches(s)))
                        })
                    }));
                }
                Clause::Func(name, _) => {
                    return Err(GraphError::new(
                        StatusCode::BAD_REQUEST,
                        "Request_UnsupportedQuery",
                        format!("Unsupported query function '{name}'."),
                    ))
                }
            }
        }
        items.retain(|o| {
            if parsed.any {
                checks.iter().any(|c| c(o))
            } else {
                checks.iter().all(|c| c(o))
            }
        });
    }
    let total = items.len();
    let size = match paging::param(&req.query, "$top") {
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=999).contains(&n) => n,
            _ => {
                return Err(GraphError::bad_request(format!(
                    "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
                )))
            }
        },
        None => req.shared.settings().graph_page_size,
    };
    let offset = match paging::param(&req.query, "$skiptoken") {
        Some(t) => paging::decode_token(t)
            .ok_or_else(|| GraphError::bad_request("Invalid $skiptoken value."))?,
        None => 0,
    };
    let (page, next) = paging::page(items, offset, size);
    let page = render(page);
    let page: Vec<Value> = match paging::param(&req.query, "$select") {
        Some(sel) => {
            let wanted: Vec<String> = sel.split(',').map(|s| s.trim().to_string()).collect();
            page.into_iter()
                .map(|o| match o {
                    Value::Object(m) => Value::Object(
                        m.into_iter()
                            .filter(|(k, _)| {
                                k.starts_with("@odata")
                                    || wanted.iter().any(|w| w.eq_ignore_ascii_case(k))
                            })
                            .collect(),
                    ),
                    other => other,
                })
                .collect()
        }
        None => page,
    };
    let mut body = json!({"@odata.context": req.context(context)});
    if advanced {
        body["@odata.count"] = json!(total);
    }
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(paging::next_link(
            req.base(),
            &req.path,
            &req.query,
            "$skiptoken",
            next
        ));
    }
    body["value"] = Value::Array(page);
    Ok(json_response(StatusCode::OK, body))
}

// ---------- applications ----------

/// Resolves an application key (object id or `appId=…`). Objects younger than the
/// `read_delay_ms` setting are not found yet (no read-your-writes in Entra ID).
fn find_app_id(req: &Req, key: &str) -> Option<String> {
    let delay = std::time::Duration::from_millis(req.shared.settings().read_delay_ms);
    let d = req.shared.dir();
    let app = if let Some(app_id) = key.strip_prefix("appId=") {
        d.app_by_client_id(app_id)
    } else {
        d.applications.get(&key.to_ascii_lowercase())
    };
    app.filter(|a| settled(a.created_at, delay))
        .map(|a| a.id.clone())
}

/// Resolves a service principal key, like [`find_app_id`].
fn find_sp_id(req: &Req, key: &str) -> Option<String> {
    let delay = std::time::Duration::from_millis(req.shared.settings().read_delay_ms);
    let d = req.shared.dir();
    let sp = if let Some(app_id) = key.strip_prefix("appId=") {
        d.sp_by_client_id(app_id)
    } else {
        d.service_principals.get(&key.to_ascii_lowercase())
    };
    sp.filter(|s| settled(s.created_at, delay))
        .map(|s| s.id.clone())
}

fn key_display(key: &str) -> &str {
    key.strip_prefix("appId=").unwrap_or(key)
}

fn list_applications(req: &Req) -> GResult {
    req.require(APP_READ)?;
    let items = {
        let d = req.shared.dir();
        let mut apps: Vec<&Application> = d.applications.values().collect();
        apps.sort_by_key(|a| a.seq);
        apps.iter()
            .map(|a| {
                json!({"id": a.id, "appId": a.app_id, "displayName": a.display_name,
                    "signInAudience": a.sign_in_audience, "tags": a.tags, "publisherDomain": d.domain})
            })
            .collect()
    };
    list_response(
        req,
        "applications",
        "Application",
        &[
            "id",
            "appId",
            "displayName",
            "signInAudience",
            "tags",
            "publisherDomain",
        ],
        items,
        |page| {
            let d = req.shared.dir();
            full_objects(page, |id| {
                d.applications.get(id).map(|a| a.to_json(&d.domain))
            })
        },
    )
}

/// Replaces each listed item by the full object `full` gives for its id (items whose object
/// is gone stay as listed).
fn full_objects(page: Vec<Value>, full: impl Fn(&str) -> Option<Value>) -> Vec<Value> {
    page.into_iter()
        .map(|item| {
            let expanded = item["id"].as_str().and_then(&full);
            expanded.unwrap_or(item)
        })
        .collect()
}

fn invalid_value(prop: &str, entity: &str) -> GraphError {
    GraphError::bad_request(format!(
        "Invalid value specified for property '{prop}' of resource '{entity}'."
    ))
}

fn parse_tags(v: Option<&Value>, entity: &str) -> Result<Vec<String>, GraphError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let mut tags: Vec<String> = Vec::new();
            for i in items {
                let Some(t) = i.as_str() else {
                    return Err(invalid_value("tags", entity));
                };
                if t.is_empty()
                    || t.chars().count() > 256
                    || t.chars().any(char::is_whitespace)
                    || tags.iter().any(|x| x.eq_ignore_ascii_case(t))
                {
                    return Err(invalid_value("tags", entity));
                }
                tags.push(t.to_string());
            }
            Ok(tags)
        }
        Some(_) => Err(invalid_value("tags", entity)),
    }
}

/// Refuses a new directory object once the tenant's quota is used up, as Entra ID does.
fn check_quota(req: &Req, d: &super::state::Directory) -> Result<(), GraphError> {
    if d.directory_objects_used() >= req.shared.settings().directory_quota {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "Directory_QuotaExceeded",
            "The directory object quota limit for the Tenant has been exceeded. Please ask your administrator to increase the quota limit or delete objects to reduce the used quota.",
        ));
    }
    Ok(())
}

const ORG_READ: &[&str] = &[
    "Organization.Read.All",
    "Organization.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// The tenant's `organization` object; `directorySizeQuota` only in the beta rendering.
fn organization_json(req: &Req, beta: bool) -> Value {
    let d = req.shared.dir();
    let mut v = json!({
        "id": d.tenant_id,
        "deletedDateTime": null,
        "displayName": "Azure Emulator",
        "tenantType": "AAD",
        "verifiedDomains": [{
            "capabilities": "Email, OfficeCommunicationsOnline",
            "isDefault": true,
            "isInitial": true,
            "name": d.domain,
            "type": "Managed"
        }],
    });
    if beta {
        v["directorySizeQuota"] = json!({
            "used": d.directory_objects_used(),
            "total": req.shared.settings().directory_quota,
        });
    }
    v
}

fn org_context(req: &Req, beta: bool) -> String {
    let version = if beta { "beta" } else { "v1.0" };
    format!("{}/{version}/$metadata#organization", req.base())
}

fn list_organization(req: &Req, beta: bool) -> GResult {
    req.require(ORG_READ)?;
    let body = json!({
        "@odata.context": org_context(req, beta),
        "value": [organization_json(req, beta)],
    });
    Ok(json_response(StatusCode::OK, body))
}

fn get_organization(req: &Req, id: &str, beta: bool) -> GResult {
    req.require(ORG_READ)?;
    let tenant = req.shared.dir().tenant_id.clone();
    if !id.eq_ignore_ascii_case(&tenant) {
        return Err(GraphError::not_found(id));
    }
    let mut body = organization_json(req, beta);
    body["@odata.context"] = json!(format!("{}/$entity", org_context(req, beta)));
    if let Some(sel) = paging::param(&req.query, "$select") {
        let keep: Vec<&str> = sel.split(',').map(str::trim).collect();
        if let Value::Object(m) = &mut body {
            m.retain(|k, _| k == "@odata.context" || k == "id" || keep.contains(&k.as_str()));
        }
    }
    Ok(json_response(StatusCode::OK, body))
}

fn create_application(req: &Req) -> GResult {
    let owned_by = req.require(APP_WRITE).is_err();
    if owned_by && !req.has(OWNED_BY) {
        return Err(GraphError::denied());
    }
    let body = req.json_body()?;
    let audience = match body.get("signInAudience") {
        None | Some(Value::Null) => "AzureADandPersonalMicrosoftAccount".to_string(),
        Some(Value::String(s)) if AUDIENCES.contains(&s.as_str()) => s.clone(),
        Some(_) => return Err(invalid_value("signInAudience", "Application")),
    };
    let name = match body.get("displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err(invalid_value("displayName", "Application")),
    };
    let max = if MSA_AUDIENCES.contains(&audience.as_str()) {
        90
    } else {
        120
    };
    if name.chars().count() > max {
        return Err(invalid_value("displayName", "Application"));
    }
    let tags = parse_tags(body.get("tags"), "Application")?;
    if body
        .get("passwordCredentials")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(GraphError::bad_request(
            "Property 'passwordCredentials' is read-only and cannot be set on create. Use addPassword.",
        ));
    }
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let keys = creds::keys_from_body(&body, &[])?.unwrap_or_default();
    let created = req.shared.settings().created_clock();
    let (json, id) = {
        let mut d = req.shared.dir();
        creds::check_new_keys(&d, None, true, Utc::now(), &keys, &[])?;
        check_quota(req, &d)?;
        let app = d.create_application(&name, &audience, tags, Some(std::time::Instant::now()));
        if let Some(a) = d.applications.get_mut(&app.id) {
            a.created = created;
            a.description = description;
            a.keys = keys;
            if owned_by {
                a.owners.push(req.claims.oid.to_ascii_lowercase());
            }
        }
        let app = d.applications.get(&app.id).cloned().unwrap_or(app);
        (app.to_json(&d.domain), app.id)
    };
    let mut resp = entity(req, StatusCode::CREATED, "applications/$entity", json);
    let loc = format!(
        "{}/v1.0/directoryObjects/{id}/Microsoft.DirectoryServices.Application",
        req.base()
    );
    if let Ok(v) = HeaderValue::from_str(&loc) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

fn get_application(req: &Req, key: &str) -> GResult {
    req.require_app(APP_READ, Owner::App, key)?;
    let id = find_app_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let d = req.shared.dir();
    let app = d
        .applications
        .get(&id)
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let json = creds::select_single(req, app.to_json(&d.domain), &app.keys);
    Ok(entity(req, StatusCode::OK, "applications/$entity", json))
}

fn patch_application(req: &Req, key: &str) -> GResult {
    req.require_app(APP_WRITE, Owner::App, key)?;
    let body = req.json_body()?;
    let id = find_app_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let tags = match body.get("tags") {
        Some(t) => Some(parse_tags(Some(t), "Application")?),
        None => None,
    };
    creds::patch_keys(req, Owner::App, &id, &body)?;
    let mut d = req.shared.dir();
    let app = d
        .applications
        .get_mut(&id)
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    if let Some(v) = body.get("displayName") {
        match v.as_str() {
            Some(s) if !s.trim().is_empty() && s.chars().count() <= 120 => {
                app.display_name = s.to_string()
            }
            _ => return Err(invalid_value("displayName", "Application")),
        }
    }
    if let Some(v) = body.get("signInAudience") {
        match v.as_str() {
            Some(s) if AUDIENCES.contains(&s) => app.sign_in_audience = s.to_string(),
            _ => return Err(invalid_value("signInAudience", "Application")),
        }
    }
    if let Some(v) = body.get("description") {
        app.description = v.as_str().map(str::to_string);
    }
    if let Some(t) = tags {
        app.tags = t;
    }
    Ok(no_content())
}

fn delete_application(req: &Req, key: &str) -> GResult {
    req.require_app(APP_WRITE, Owner::App, key)?;
    let id = find_app_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    if req.shared.dir().delete_application(&id) {
        Ok(no_content())
    } else {
        Err(GraphError::not_found(key_display(key)))
    }
}

// ---------- passwords ----------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    App,
    Sp,
}

/// Counts a password write in flight on one object; released on drop.
struct InFlight<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.shared.inflight();
        if let Some(n) = m.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

async fn begin_password_write<'a>(req: &Req<'a>, id: &str) -> Result<InFlight<'a>, GraphError> {
    let settings = req.shared.settings();
    {
        let mut m = req.shared.inflight();
        let n = m.entry(id.to_string()).or_insert(0);
        if *n >= settings.max_concurrent_password_writes {
            return Err(GraphError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Directory_ConcurrencyViolation",
                "Another update operation on this object is in progress. Concurrent updates to the same object are not allowed; retry the request later.",
            ));
        }
        *n += 1;
    }
    let guard = InFlight {
        shared: req.shared,
        id: id.to_string(),
    };
    if settings.password_write_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.password_write_ms)).await;
    }
    Ok(guard)
}

fn parse_time(v: Option<&Value>, prop: &str) -> Result<Option<DateTime<Utc>>, GraphError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| invalid_value(prop, "PasswordCredential")),
        Some(_) => Err(invalid_value(prop, "PasswordCredential")),
    }
}

async fn add_password(req: &Req<'_>, owner: Owner, key: &str) -> GResult {
    req.require_app(APP_WRITE, owner, key)?;
    let msa_limit = req.shared.settings().msa_app_password_limit;
    let credential_limit = req.shared.settings().object_credential_limit;
    let body = req.json_body()?;
    let cred = match body.get("passwordCredential") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid_value("passwordCredential", "PasswordCredential")),
    };
    let display_name = match cred.get("displayName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid_value("displayName", "PasswordCredential")),
    };
    let start = parse_time(cred.get("startDateTime"), "startDateTime")?.unwrap_or_else(Utc::now);
    let end = parse_time(cred.get("endDateTime"), "endDateTime")?
        .unwrap_or_else(|| start + chrono::Duration::days(730));
    if end <= start {
        return Err(invalid_value("endDateTime", "PasswordCredential"));
    }
    let id = match owner {
        Owner::App => find_app_id(req, key),
        Owner::Sp => find_sp_id(req, key),
    }
    .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let _guard = begin_password_write(req, &id).await?;
    creds::check_password(req, owner, &id, start, end)?;

    let password = Password::new(display_name, start, end);
    let mut d = req.shared.dir();
    let held = match owner {
        Owner::App => d
            .applications
            .get(&id)
            .map(|a| a.passwords.len() + a.keys.len()),
        Owner::Sp => d
            .service_principals
            .get(&id)
            .map(|p| p.passwords.len() + p.keys.len()),
    }
    .unwrap_or(0);
    let list = match owner {
        Owner::App => {
            let app = d
                .applications
                .get_mut(&id)
                .ok_or_else(|| GraphError::not_found(key_display(key)))?;
            if MSA_AUDIENCES.contains(&app.sign_in_audience.as_str())
                && msa_limit > 0
                && app.passwords.len() >= msa_limit
            {
                let msg = format!(
                    "Not allowed to add {} passwords. You can only add a maximum of {msa_limit} passwords.",
                    app.passwords.len() + 1
                );
                return Err(GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "TooManyAppPasswords",
                    msg.clone(),
                )
                .with_detail("TooManyAppPasswords", &msg, "passwordCredentials"));
            }
            &mut app.passwords
        }
        Owner::Sp => {
            &mut d
                .service_principals
                .get_mut(&id)
                .ok_or_else(|| GraphError::not_found(key_display(key)))?
                .passwords
        }
    };
    if held >= credential_limit {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "Directory_ResourceSizeExceeded",
            "The size of the object has exceeded its limit. Please reduce the number of values and retry your request.",
        ));
    }
    let json = password.to_json(true);
    list.push(password);
    drop(d);
    Ok(entity(
        req,
        StatusCode::OK,
        "microsoft.graph.passwordCredential",
        json,
    ))
}

async fn remove_password(req: &Req<'_>, owner: Owner, key: &str) -> GResult {
    req.require_app(APP_WRITE, owner, key)?;
    let body = req.json_body()?;
    let key_id = match body.get("keyId") {
        Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => s.to_ascii_lowercase(),
        _ => return Err(invalid_value("keyId", "PasswordCredential")),
    };
    let id = match owner {
        Owner::App => find_app_id(req, key),
        Owner::Sp => find_sp_id(req, key),
    }
    .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let _guard = begin_password_write(req, &id).await?;
    let mut d = req.shared.dir();
    let list = match owner {
        Owner::App => d.applications.get_mut(&id).map(|a| &mut a.passwords),
        Owner::Sp => d.service_principals.get_mut(&id).map(|s| &mut s.passwords),
    }
    .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let before = list.len();
    list.retain(|p| p.key_id != key_id);
    if list.len() == before {
        return Err(GraphError::bad_request(format!(
            "No password credential found with keyId '{key_id}'."
        )));
    }
    Ok(no_content())
}

// ---------- federated identity credentials ----------

fn list_fics(req: &Req, key: &str) -> GResult {
    req.require(APP_READ)?;
    let id = find_app_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let items = {
        let d = req.shared.dir();
        d.applications
            .get(&id)
            .map(|a| {
                a.federated
                    .iter()
                    .map(FederatedCredential::to_json)
                    .collect()
            })
            .unwrap_or_default()
    };
    list_response(
        req,
        &format!("applications('{id}')/federatedIdentityCredentials"),
        "FederatedIdentityCredential",
        &["name", "subject", "issuer"],
        items,
        |page| page,
    )
}

fn create_fic(req: &Req, key: &str) -> GResult {
    req.require(APP_WRITE)?;
    let body = req.json_body()?;
    let text = |k: &str| -> Result<String, GraphError> {
        match body.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(invalid_value(k, "FederatedIdentityCredential")),
        }
    };
    let name = text("name")?;
    let issuer = text("issuer")?;
    let subject = text("subject")?;
    let audiences: Vec<String> = match body.get("audiences") {
        Some(Value::Array(a)) if a.len() == 1 => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => return Err(invalid_value("audiences", "FederatedIdentityCredential")),
    };
    if audiences.len() != 1 {
        return Err(invalid_value("audiences", "FederatedIdentityCredential"));
    }
    let id = find_app_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let mut d = req.shared.dir();
    let app = d
        .applications
        .get_mut(&id)
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    if app
        .federated
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case(&name))
    {
        return Err(GraphError::new(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            format!("FederatedIdentityCredential with name {name} already exists."),
        ));
    }
    if app.federated.len() >= 20 {
        return Err(GraphError::bad_request(
            "Maximum number of 20 federated identity credentials per application reached.",
        ));
    }
    let fic = FederatedCredential {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        issuer,
        subject,
        audiences,
        description: body
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let json = fic.to_json();
    app.federated.push(fic);
    drop(d);
    Ok(entity(
        req,
        StatusCode::CREATED,
        &format!("applications('{id}')/federatedIdentityCredentials/$entity"),
        json,
    ))
}

fn find_fic(app: &Application, f: &str) -> Option<usize> {
    app.federated
        .iter()
        .position(|x| x.id.eq_ignore_ascii_case(f) || x.name.eq_ignore_ascii_case(f))
}

fn get_fic(req: &Req, key: &str, f: &str) -> GResult {
    req.require(APP_READ)?;
    let id = find_app_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let d = req.shared.dir();
    let app = d
        .applications
        .get(&id)
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let i = find_fic(app, f).ok_or_else(|| GraphError::not_found(f))?;
    let json = app.federated[i].to_json();
    drop(d);
    Ok(entity(
        req,
        StatusCode::OK,
        &format!("applications('{id}')/federatedIdentityCredentials/$entity"),
        json,
    ))
}

fn delete_fic(req: &Req, key: &str, f: &str) -> GResult {
    req.require(APP_WRITE)?;
    let id = find_app_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let mut d = req.shared.dir();
    let app = d
        .applications
        .get_mut(&id)
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let i = find_fic(app, f).ok_or_else(|| GraphError::not_found(f))?;
    app.federated.remove(i);
    Ok(no_content())
}

// ---------- service principals ----------

fn list_service_principals(req: &Req) -> GResult {
    req.require(APP_READ)?;
    let items = {
        let d = req.shared.dir();
        let mut sps: Vec<_> = d.service_principals.values().collect();
        sps.sort_by_key(|s| s.seq);
        sps.iter()
            .map(|s| {
                json!({"id": s.id, "appId": s.app_id, "displayName": s.display_name,
                    "servicePrincipalType": s.sp_type, "accountEnabled": true,
                    "servicePrincipalNames": [s.app_id], "tags": s.tags})
            })
            .collect()
    };
    list_response(
        req,
        "servicePrincipals",
        "ServicePrincipal",
        &[
            "id",
            "appId",
            "displayName",
            "servicePrincipalType",
            "accountEnabled",
            "servicePrincipalNames",
            "tags",
        ],
        items,
        |page| {
            let d = req.shared.dir();
            full_objects(page, |id| d.service_principals.get(id).map(|s| s.to_json()))
        },
    )
}

fn create_service_principal(req: &Req) -> GResult {
    let owned_by = req.require(APP_WRITE).is_err();
    let body = req.json_body()?;
    let app_id = match body.get("appId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid_value("appId", "ServicePrincipal")),
    };
    if owned_by {
        req.require_app(APP_WRITE, Owner::App, &format!("appId={app_id}"))?;
    }
    let propagation = req.shared.settings().propagation();
    let mut d = req.shared.dir();
    let app = d
        .app_by_client_id(&app_id)
        .filter(|a| settled(a.created_at, propagation))
        .cloned();
    let Some(app) = app else {
        let msg = format!(
            "The appId '{app_id}' of the service principal does not reference a valid application object."
        );
        return Err(GraphError::bad_request(msg.clone()).with_detail(
            "NoBackingApplicationObject",
            &msg,
            "appId",
        ));
    };
    check_quota(req, &d)?;
    if d.sp_by_client_id(&app_id).is_some() {
        return Err(GraphError::new(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            format!(
                "The service principal cannot be created, updated, or restored because the service principal name {app_id} is already in use."
            ),
        ));
    }
    let sp = d
        .create_service_principal(&app.id, Some(std::time::Instant::now()))
        .ok_or_else(|| GraphError::not_found(&app_id))?;
    if owned_by {
        if let Some(s) = d.service_principals.get_mut(&sp.id) {
            s.owners.push(req.claims.oid.to_ascii_lowercase());
        }
    }
    drop(d);
    Ok(entity(
        req,
        StatusCode::CREATED,
        "servicePrincipals/$entity",
        sp.to_json(),
    ))
}

fn get_service_principal(req: &Req, key: &str) -> GResult {
    req.require_app(APP_READ, Owner::Sp, key)?;
    let id = find_sp_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let json = req
        .shared
        .dir()
        .service_principals
        .get(&id)
        .map(|s| creds::select_single(req, s.to_json(), &s.keys))
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    Ok(entity(
        req,
        StatusCode::OK,
        "servicePrincipals/$entity",
        json,
    ))
}

/// `GET /applications/{id}/owners` (also service principals): the owning service
/// principals, as directory objects.
fn list_owners(req: &Req, owner: Owner, key: &str) -> GResult {
    req.require_app(APP_READ, owner, key)?;
    let id = match owner {
        Owner::App => find_app_id(req, key),
        Owner::Sp => find_sp_id(req, key),
    }
    .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let d = req.shared.dir();
    let owners = match owner {
        Owner::App => d.applications.get(&id).map(|a| a.owners.clone()),
        Owner::Sp => d.service_principals.get(&id).map(|s| s.owners.clone()),
    }
    .unwrap_or_default();
    let value: Vec<Value> = owners
        .iter()
        .filter_map(|o| d.service_principals.get(o))
        .map(|sp| {
            let mut v = sp.to_json();
            v["@odata.type"] = json!("#microsoft.graph.servicePrincipal");
            v
        })
        .collect();
    drop(d);
    Ok(json_response(
        StatusCode::OK,
        json!({"@odata.context": req.context("directoryObjects"), "value": value}),
    ))
}

fn delete_service_principal(req: &Req, key: &str) -> GResult {
    req.require_app(APP_WRITE, Owner::Sp, key)?;
    let id = find_sp_id(req, key).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    if req.shared.dir().delete_service_principal(&id) {
        Ok(no_content())
    } else {
        Err(GraphError::not_found(key_display(key)))
    }
}

// ---------- deleted items ----------

fn require_for_deleted(req: &Req, obj: &DeletedObject, write: bool) -> Result<(), GraphError> {
    match (obj, write) {
        (DeletedObject::Group(_), false) => req.require(GROUP_READ),
        (DeletedObject::Group(_), true) => req.require(GROUP_WRITE),
        (_, false) => req.require(APP_READ),
        (_, true) => req.require(APP_WRITE),
    }
}

fn list_deleted(req: &Req, type_name: &str) -> GResult {
    let wanted = match type_name {
        "microsoft.graph.application" => "#microsoft.graph.application",
        "microsoft.graph.servicePrincipal" => "#microsoft.graph.servicePrincipal",
        "microsoft.graph.group" => "#microsoft.graph.group",
        other => {
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Resource not found for the segment '{other}'."),
            ))
        }
    };
    if wanted == "#microsoft.graph.group" {
        req.require(GROUP_READ)?;
    } else {
        req.require(APP_READ)?;
    }
    let items = {
        let d = req.shared.dir();
        let mut all: Vec<&DeletedObject> = d
            .deleted
            .values()
            .filter(|o| o.odata_type() == wanted)
            .collect();
        all.sort_by_key(|o| o.seq());
        all.iter().map(|o| o.to_json(&d.domain)).collect()
    };
    let entity_name = &type_name["microsoft.graph.".len()..];
    list_response(
        req,
        &format!("directory/deletedItems/{type_name}"),
        entity_name,
        &["id", "appId", "displayName"],
        items,
        |page| page,
    )
}

fn get_deleted(req: &Req, id: &str) -> GResult {
    let d = req.shared.dir();
    let obj = d
        .deleted
        .get(&id.to_ascii_lowercase())
        .ok_or_else(|| GraphError::not_found(id))?;
    require_for_deleted(req, obj, false)?;
    let json = obj.to_json(&d.domain);
    drop(d);
    Ok(entity(
        req,
        StatusCode::OK,
        "directoryObjects/$entity",
        json,
    ))
}

fn purge_deleted(req: &Req, id: &str) -> GResult {
    let mut d = req.shared.dir();
    let key = id.to_ascii_lowercase();
    let obj = d
        .deleted
        .get(&key)
        .ok_or_else(|| GraphError::not_found(id))?;
    require_for_deleted(req, obj, true)?;
    d.deleted.remove(&key);
    Ok(no_content())
}

fn restore_deleted(req: &Req, id: &str) -> GResult {
    let mut d = req.shared.dir();
    let key = id.to_ascii_lowercase();
    let obj = d
        .deleted
        .get(&key)
        .ok_or_else(|| GraphError::not_found(id))?;
    require_for_deleted(req, obj, true)?;
    let Some(obj) = d.deleted.remove(&key) else {
        return Err(GraphError::not_found(id));
    };
    let json = match obj {
        DeletedObject::Application(mut a) => {
            a.deleted = None;
            let mut v = a.to_json(&d.domain);
            v["@odata.type"] = json!("#microsoft.graph.application");
            d.applications.insert(a.id.clone(), a);
            v
        }
        DeletedObject::ServicePrincipal(mut s) => {
            if d.app_by_client_id(&s.app_id).is_none() && s.sp_type == "Application" {
                let app_id = s.app_id.clone();
                d.deleted.insert(key, DeletedObject::ServicePrincipal(s));
                let msg = format!(
                    "The appId '{app_id}' of the service principal does not reference a valid application object."
                );
                return Err(GraphError::bad_request(msg.clone()).with_detail(
                    "NoBackingApplicationObject",
                    &msg,
                    "appId",
                ));
            }
            s.deleted = None;
            let mut v = s.to_json();
            v["@odata.type"] = json!("#microsoft.graph.servicePrincipal");
            d.service_principals.insert(s.id.clone(), s);
            v
        }
        DeletedObject::Group(mut g) => {
            g.deleted = None;
            let mut v = g.to_json();
            v["@odata.type"] = json!("#microsoft.graph.group");
            d.groups.insert(g.id.clone(), g);
            v
        }
    };
    drop(d);
    Ok(entity(
        req,
        StatusCode::OK,
        "directoryObjects/$entity",
        json,
    ))
}

// ---------- groups ----------

fn list_groups(req: &Req) -> GResult {
    req.require(GROUP_READ)?;
    let items = {
        let d = req.shared.dir();
        let mut gs: Vec<_> = d.groups.values().collect();
        gs.sort_by_key(|g| g.seq);
        gs.iter()
            .map(|g| {
                json!({"id": g.id, "displayName": g.display_name, "mailNickname": g.mail_nickname,
                    "securityEnabled": g.security_enabled, "mailEnabled": g.mail_enabled,
                    "groupTypes": g.group_types, "description": g.description})
            })
            .collect()
    };
    list_response(
        req,
        "groups",
        "Group",
        &[
            "id",
            "displayName",
            "mailNickname",
            "securityEnabled",
            "mailEnabled",
            "groupTypes",
            "description",
        ],
        items,
        |page| {
            let d = req.shared.dir();
            full_objects(page, |id| d.groups.get(id).map(|g| g.to_json()))
        },
    )
}

fn create_group(req: &Req) -> GResult {
    req.require(GROUP_WRITE)?;
    let body = req.json_body()?;
    let name = match body.get("displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 256 => s.clone(),
        _ => return Err(invalid_value("displayName", "Group")),
    };
    let nick = match body.get("mailNickname") {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii() && !" @()\\[]\";:<>,".contains(c)) =>
        {
            s.clone()
        }
        _ => return Err(invalid_value("mailNickname", "Group")),
    };
    let (Some(mail_enabled), Some(security_enabled)) = (
        body.get("mailEnabled").and_then(Value::as_bool),
        body.get("securityEnabled").and_then(Value::as_bool),
    ) else {
        return Err(invalid_value("mailEnabled", "Group"));
    };
    let group_types: Vec<String> = body
        .get("groupTypes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let json = {
        let mut d = req.shared.dir();
        check_quota(req, &d)?;
        let g = d.create_group(&name, description);
        let Some(stored) = d.groups.get_mut(&g.id) else {
            return Err(GraphError::not_found(&g.id));
        };
        stored.mail_nickname = nick;
        stored.mail_enabled = mail_enabled;
        stored.security_enabled = security_enabled;
        stored.group_types = group_types;
        stored.to_json()
    };
    Ok(entity(req, StatusCode::CREATED, "groups/$entity", json))
}

fn get_group(req: &Req, id: &str) -> GResult {
    req.require(GROUP_READ)?;
    let json = req
        .shared
        .dir()
        .groups
        .get(&id.to_ascii_lowercase())
        .map(|g| g.to_json())
        .ok_or_else(|| GraphError::not_found(id))?;
    Ok(entity(req, StatusCode::OK, "groups/$entity", json))
}

fn delete_group(req: &Req, id: &str) -> GResult {
    req.require(GROUP_WRITE)?;
    if req.shared.dir().delete_group(&id.to_ascii_lowercase()) {
        Ok(no_content())
    } else {
        Err(GraphError::not_found(id))
    }
}

fn directory_object_json(d: &super::state::Directory, id: &str) -> Option<Value> {
    let id = id.to_ascii_lowercase();
    if let Some(s) = d.service_principals.get(&id) {
        let mut v = s.to_json();
        v["@odata.type"] = json!("#microsoft.graph.servicePrincipal");
        Some(v)
    } else if let Some(g) = d.groups.get(&id) {
        let mut v = g.to_json();
        v["@odata.type"] = json!("#microsoft.graph.group");
        Some(v)
    } else if let Some(a) = d.applications.get(&id) {
        let mut v = a.to_json(&d.domain);
        v["@odata.type"] = json!("#microsoft.graph.application");
        Some(v)
    } else {
        None
    }
}

fn list_members(req: &Req, id: &str) -> GResult {
    req.require(GROUP_READ)?;
    let items: Vec<Value> = {
        let d = req.shared.dir();
        let g = d
            .groups
            .get(&id.to_ascii_lowercase())
            .ok_or_else(|| GraphError::not_found(id))?;
        g.members
            .iter()
            .filter_map(|m| directory_object_json(&d, m))
            .collect()
    };
    list_response(
        req,
        "directoryObjects",
        "DirectoryObject",
        &["id", "displayName", "appId"],
        items,
        |page| page,
    )
}

fn add_member(req: &Req, id: &str) -> GResult {
    req.require(MEMBER_WRITE)?;
    let body = req.json_body()?;
    let bad_ref = || GraphError::bad_request("Invalid URL format specified in @odata.id.");
    let url = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(bad_ref)?;
    let parsed = url::Url::parse(url).map_err(|_| bad_ref())?;
    let segs: Vec<&str> = parsed
        .path_segments()
        .map(|s| s.filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    let member = match segs.as_slice() {
        [.., coll, m]
            if ["directoryObjects", "servicePrincipals", "groups", "users"].contains(coll)
                && uuid::Uuid::parse_str(m).is_ok() =>
        {
            m.to_ascii_lowercase()
        }
        _ => return Err(bad_ref()),
    };
    let propagation = req.shared.settings().propagation();
    let mut d = req.shared.dir();
    let gid = id.to_ascii_lowercase();
    if !d.groups.contains_key(&gid) {
        return Err(GraphError::not_found(id));
    }
    let visible = match d.service_principals.get(&member) {
        Some(sp) => settled(sp.created_at, propagation),
        None => d.groups.contains_key(&member) && member != gid,
    };
    if !visible {
        return Err(GraphError::not_found(&member));
    }
    let Some(group) = d.groups.get_mut(&gid) else {
        return Err(GraphError::not_found(id));
    };
    if group.members.contains(&member) {
        return Err(GraphError::bad_request(
            "One or more added object references already exist for the following modified properties: 'members'.",
        ));
    }
    group.members.push(member);
    Ok(no_content())
}

fn remove_member(req: &Req, id: &str, member: &str) -> GResult {
    req.require(MEMBER_WRITE)?;
    let mut d = req.shared.dir();
    let group = d
        .groups
        .get_mut(&id.to_ascii_lowercase())
        .ok_or_else(|| GraphError::not_found(id))?;
    let m = member.to_ascii_lowercase();
    let before = group.members.len();
    group.members.retain(|x| *x != m);
    if group.members.len() == before {
        return Err(GraphError::not_found(member));
    }
    Ok(no_content())
}

/// `DELETE /groups/{id}/members/{member}` without `$ref` deletes the member object itself.
fn delete_member_object(req: &Req, id: &str, member: &str) -> GResult {
    let m = member.to_ascii_lowercase();
    let kind = {
        let d = req.shared.dir();
        let g = d
            .groups
            .get(&id.to_ascii_lowercase())
            .ok_or_else(|| GraphError::not_found(id))?;
        if !g.members.contains(&m) {
            return Err(GraphError::not_found(member));
        }
        d.object_kind(&m)
    };
    match kind {
        Some("ServicePrincipal") => {
            req.require(APP_WRITE)?;
            req.shared.dir().delete_service_principal(&m);
        }
        Some("Group") => {
            req.require(GROUP_WRITE)?;
            req.shared.dir().delete_group(&m);
        }
        _ => return Err(GraphError::not_found(member)),
    }
    Ok(no_content())
}

fn get_directory_object(req: &Req, id: &str) -> GResult {
    req.require(ANY_READ)?;
    let json =
        directory_object_json(&req.shared.dir(), id).ok_or_else(|| GraphError::not_found(id))?;
    Ok(entity(
        req,
        StatusCode::OK,
        "directoryObjects/$entity",
        json,
    ))
}
