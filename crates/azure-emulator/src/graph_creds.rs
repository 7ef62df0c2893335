//! Microsoft Graph v1.0: key credentials (certificates) of applications and service
//! principals (`keyCredentials` on create and PATCH, `addKey`/`removeKey` with a
//! proof-of-possession JWT), and app management policies (the tenant default, assignable
//! policies and their assignment). A child module of `graph`.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::super::keys::{decode_key, parse_certificate, parse_jwt};
use super::super::policy::{self, CredentialKind, DEFAULT_POLICY_ID};
use super::super::state::{new_id, Directory, KeyCredential};
use super::{
    entity, find_app_id, find_sp_id, invalid_value, json_response, key_display, no_content,
    GResult, Owner, Req, APP_READ, APP_WRITE,
};
use crate::errors::GraphError;

const POLICY_READ: &[&str] = &[
    "Policy.Read.All",
    "Policy.Read.ApplicationConfiguration",
    "Policy.ReadWrite.ApplicationConfiguration",
];
const POLICY_WRITE: &[&str] = &["Policy.ReadWrite.ApplicationConfiguration"];

/// The audience of proof-of-possession tokens (the legacy Azure AD Graph application id).
pub const PROOF_AUDIENCE: &str = "00000002-0000-0000-c000-000000000000";

fn entity_name(owner: Owner) -> &'static str {
    match owner {
        Owner::App => "Application",
        Owner::Sp => "ServicePrincipal",
    }
}

fn find_id(req: &Req, owner: Owner, key: &str) -> Result<String, GraphError> {
    match owner {
        Owner::App => find_app_id(req, key),
        Owner::Sp => find_sp_id(req, key),
    }
    .ok_or_else(|| GraphError::not_found(key_display(key)))
}

/// What policy checks and proofs need of an object: its keys, assigned policy, creation
/// time and, for the caller check, its application id.
struct Meta {
    keys: Vec<KeyCredential>,
    policy: Option<String>,
    created: DateTime<Utc>,
    app_id: String,
}

fn meta(d: &Directory, owner: Owner, id: &str) -> Option<Meta> {
    match owner {
        Owner::App => d.applications.get(id).map(|a| Meta {
            keys: a.keys.clone(),
            policy: a.policy.clone(),
            created: a.created,
            app_id: a.app_id.clone(),
        }),
        Owner::Sp => d.service_principals.get(id).map(|s| Meta {
            keys: s.keys.clone(),
            policy: s.policy.clone(),
            created: s.created,
            app_id: s.app_id.clone(),
        }),
    }
}

fn keys_mut<'d>(
    d: &'d mut Directory,
    owner: Owner,
    id: &str,
) -> Option<&'d mut Vec<KeyCredential>> {
    match owner {
        Owner::App => d.applications.get_mut(id).map(|a| &mut a.keys),
        Owner::Sp => d.service_principals.get_mut(id).map(|s| &mut s.keys),
    }
}

fn parse_time(v: Option<&Value>, prop: &str) -> Result<Option<DateTime<Utc>>, GraphError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| invalid_value(prop, "KeyCredential")),
        Some(_) => Err(invalid_value(prop, "KeyCredential")),
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Parses one keyCredential. An entry naming the `keyId` of an existing credential without
/// a `key` keeps that credential as it is (PATCH sends the collection back).
pub(super) fn parse_key_credential(
    v: &Value,
    existing: &[KeyCredential],
) -> Result<KeyCredential, GraphError> {
    let Value::Object(m) = v else {
        return Err(invalid_value("keyCredentials", "KeyCredential"));
    };
    let key_id = match m.get("keyId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => Some(s.to_ascii_lowercase()),
        Some(_) => return Err(invalid_value("keyId", "KeyCredential")),
    };
    let key_text = match m.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid_value("key", "KeyCredential")),
    };
    if let (Some(id), None) = (&key_id, key_text) {
        return existing
            .iter()
            .find(|k| &k.key_id == id)
            .cloned()
            .ok_or_else(|| invalid_value("key", "KeyCredential"));
    }
    let key_type = m.get("type").and_then(Value::as_str).unwrap_or("");
    if key_type != "AsymmetricX509Cert" {
        return Err(invalid_value("type", "KeyCredential"));
    }
    let usage = m.get("usage").and_then(Value::as_str).unwrap_or("");
    if usage != "Verify" {
        return Err(invalid_value("usage", "KeyCredential"));
    }
    let der = key_text
        .and_then(decode_key)
        .ok_or_else(|| invalid_value("key", "KeyCredential"))?;
    let cert = parse_certificate(&der).ok_or_else(|| {
        GraphError::bad_request("Invalid value specified for property 'key' of resource 'KeyCredential': not an X.509 certificate.")
    })?;
    let start = parse_time(m.get("startDateTime"), "startDateTime")?.unwrap_or(cert.not_before);
    let end = parse_time(m.get("endDateTime"), "endDateTime")?.unwrap_or(cert.not_after);
    if end <= start || start < cert.not_before || end > cert.not_after {
        return Err(GraphError::bad_request(
            "Key credential end date is invalid: the startDateTime and endDateTime of a key credential must lie within the certificate's validity period.",
        ));
    }
    let custom_key_identifier = match m.get("customKeyIdentifier") {
        None | Some(Value::Null) => cert.sha1.clone(),
        Some(Value::String(s)) => hex_decode(s)
            .or_else(|| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(s).ok()
            })
            .ok_or_else(|| invalid_value("customKeyIdentifier", "KeyCredential"))?,
        Some(_) => return Err(invalid_value("customKeyIdentifier", "KeyCredential")),
    };
    let display_name = match m.get("displayName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.chars().take(90).collect()),
        Some(_) => return Err(invalid_value("displayName", "KeyCredential")),
    };
    Ok(KeyCredential {
        key_id: key_id.unwrap_or_else(new_id),
        display_name,
        custom_key_identifier,
        key_type: key_type.to_string(),
        usage: usage.to_string(),
        cert,
        start,
        end,
        added_at: Some(std::time::Instant::now()),
    })
}

/// `keyCredentials` of a create or PATCH body (`None` when absent).
pub(super) fn keys_from_body(
    body: &Map<String, Value>,
    existing: &[KeyCredential],
) -> Result<Option<Vec<KeyCredential>>, GraphError> {
    let list = match body.get("keyCredentials") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid_value("keyCredentials", "Application")),
    };
    let mut out: Vec<KeyCredential> = Vec::new();
    for v in list {
        let k = parse_key_credential(v, existing)?;
        if out.iter().any(|o| o.key_id == k.key_id) {
            return Err(GraphError::bad_request(format!(
                "Duplicate keyId '{}' in keyCredentials.",
                k.key_id
            )));
        }
        out.push(k);
    }
    Ok(Some(out))
}

/// Checks the credentials of `keys` that are not in `existing` against the policy in force.
pub(super) fn check_new_keys(
    d: &Directory,
    assigned: Option<&str>,
    is_application: bool,
    created: DateTime<Utc>,
    keys: &[KeyCredential],
    existing: &[KeyCredential],
) -> Result<(), GraphError> {
    for k in keys {
        if existing.iter().any(|e| e.key_id == k.key_id) {
            continue;
        }
        policy::check_credential(
            d,
            assigned,
            is_application,
            created,
            CredentialKind::Key,
            k.start,
            k.end,
        )?;
    }
    Ok(())
}

/// Checks a new password of the object `id` against the policy in force.
pub(super) fn check_password(
    req: &Req,
    owner: Owner,
    id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), GraphError> {
    let d = req.shared.dir();
    let m = meta(&d, owner, id).ok_or_else(|| GraphError::not_found(id))?;
    policy::check_credential(
        &d,
        m.policy.as_deref(),
        owner == Owner::App,
        m.created,
        CredentialKind::Password,
        start,
        end,
    )
}

/// Replaces an object's key credentials from a PATCH body; `Ok(false)` when the body has
/// no `keyCredentials`.
pub(super) fn patch_keys(
    req: &Req,
    owner: Owner,
    id: &str,
    body: &Map<String, Value>,
) -> Result<bool, GraphError> {
    let mut d = req.shared.dir();
    let m = meta(&d, owner, id).ok_or_else(|| GraphError::not_found(id))?;
    let Some(keys) = keys_from_body(body, &m.keys)? else {
        return Ok(false);
    };
    check_new_keys(
        &d,
        m.policy.as_deref(),
        owner == Owner::App,
        m.created,
        &keys,
        &m.keys,
    )?;
    if let Some(list) = keys_mut(&mut d, owner, id) {
        *list = keys;
    }
    Ok(true)
}

/// `PATCH /servicePrincipals/{id}`: only `keyCredentials` is modelled.
pub(super) fn patch_service_principal(req: &Req, key: &str) -> GResult {
    req.require(APP_WRITE)?;
    let body = req.json_body()?;
    let id = find_id(req, Owner::Sp, key)?;
    patch_keys(req, Owner::Sp, &id, &body)?;
    Ok(no_content())
}

fn malformed_proof() -> GraphError {
    GraphError::new(
        StatusCode::UNAUTHORIZED,
        "Authentication_MissingOrMalformed",
        "Access Token missing or malformed.",
    )
}

/// Verifies a proof-of-possession token for the object `object_id`: RS256 (or PS256),
/// signed by one of `keys` that is valid now (found by `x5t`/`x5t#S256`), `aud` the legacy
/// AAD Graph id, `iss` the object id, within its lifetime of at most 10 minutes.
fn verify_proof(proof: &str, object_id: &str, keys: &[KeyCredential]) -> Result<(), GraphError> {
    let now = Utc::now();
    if !keys.iter().any(|k| k.valid_at(now)) {
        return Err(GraphError::bad_request(
            "The object has no valid certificate credential to verify the proof with; add the first certificate with PATCH (keyCredentials).",
        ));
    }
    if proof.contains('=') {
        return Err(malformed_proof());
    }
    let jwt = parse_jwt(proof).ok_or_else(malformed_proof)?;
    let (sha1, sha256) = jwt.thumbprints();
    let key = keys
        .iter()
        .filter(|k| k.valid_at(now) && k.cert.rsa)
        .find(|k| {
            sha1.as_deref() == Some(k.cert.sha1.as_slice())
                || sha256.as_deref() == Some(k.cert.sha256.as_slice())
        })
        .ok_or_else(malformed_proof)?;
    if !jwt.verify_rsa(&key.cert.public_key) {
        return Err(malformed_proof());
    }
    if !jwt.audiences().iter().any(|a| a == PROOF_AUDIENCE)
        || !jwt
            .claim_str("iss")
            .is_some_and(|i| i.eq_ignore_ascii_case(object_id))
    {
        return Err(malformed_proof());
    }
    let t = now.timestamp();
    let (Some(nbf), Some(exp)) = (jwt.claim_i64("nbf"), jwt.claim_i64("exp")) else {
        return Err(malformed_proof());
    };
    if nbf > t + 300 || exp <= t || exp - nbf > 600 {
        return Err(malformed_proof());
    }
    Ok(())
}

/// The caller may roll the object's keys: it is the object itself (the proof is the
/// authorisation) or holds an application write permission.
fn caller_may_roll(
    req: &Req,
    owner: Owner,
    object_id: &str,
    app_id: &str,
) -> Result<(), GraphError> {
    let itself = match owner {
        Owner::App => req.claims.appid.eq_ignore_ascii_case(app_id),
        Owner::Sp => req.claims.oid.eq_ignore_ascii_case(object_id),
    };
    if itself {
        Ok(())
    } else {
        req.require(APP_WRITE)
    }
}

fn proof_of(body: &Map<String, Value>) -> Result<String, GraphError> {
    match body.get("proof") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(malformed_proof()),
    }
}

/// `POST /{applications|servicePrincipals}/{id}/addKey`.
pub(super) fn add_key(req: &Req, owner: Owner, key: &str) -> GResult {
    let body = req.json_body()?;
    let id = find_id(req, owner, key)?;
    let m = meta(&req.shared.dir(), owner, &id)
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    caller_may_roll(req, owner, &id, &m.app_id)?;
    let cred = match body.get("keyCredential") {
        Some(v @ Value::Object(c)) => {
            if c.get("keyId").is_some_and(|k| !k.is_null()) {
                return Err(invalid_value("keyId", "KeyCredential"));
            }
            parse_key_credential(v, &[])?
        }
        _ => return Err(invalid_value("keyCredential", "KeyCredential")),
    };
    if body.get("passwordCredential").is_some_and(|p| !p.is_null()) {
        return Err(GraphError::bad_request(
            "passwordCredential is only valid with a keyCredential of type X509CertAndPassword, which the emulator does not model.",
        ));
    }
    verify_proof(&proof_of(&body)?, &id, &m.keys)?;
    let mut d = req.shared.dir();
    policy::check_credential(
        &d,
        m.policy.as_deref(),
        owner == Owner::App,
        m.created,
        CredentialKind::Key,
        cred.start,
        cred.end,
    )?;
    let list =
        keys_mut(&mut d, owner, &id).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let json = cred.to_json(false);
    list.push(cred);
    drop(d);
    Ok(entity(
        req,
        StatusCode::OK,
        "microsoft.graph.keyCredential",
        json,
    ))
}

/// `POST /{applications|servicePrincipals}/{id}/removeKey`.
pub(super) fn remove_key(req: &Req, owner: Owner, key: &str) -> GResult {
    let body = req.json_body()?;
    let key_id = match body.get("keyId") {
        Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => s.to_ascii_lowercase(),
        _ => return Err(invalid_value("keyId", "KeyCredential")),
    };
    let id = find_id(req, owner, key)?;
    let m = meta(&req.shared.dir(), owner, &id)
        .ok_or_else(|| GraphError::not_found(key_display(key)))?;
    caller_may_roll(req, owner, &id, &m.app_id)?;
    verify_proof(&proof_of(&body)?, &id, &m.keys)?;
    let mut d = req.shared.dir();
    let list =
        keys_mut(&mut d, owner, &id).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let before = list.len();
    list.retain(|k| k.key_id != key_id);
    if list.len() == before {
        return Err(GraphError::bad_request(format!(
            "No key credential found with keyId '{key_id}'."
        )));
    }
    Ok(no_content())
}

/// Applies a single-object `$select` to `v`; `keyCredentials` then carry their `key`.
pub(super) fn select_single(req: &Req, mut v: Value, keys: &[KeyCredential]) -> Value {
    let Some(select) = super::paging::param(&req.query, "$select") else {
        return v;
    };
    let props: Vec<&str> = select.split(',').map(str::trim).collect();
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| k == "id" || props.iter().any(|p| p.eq_ignore_ascii_case(k)));
        if m.contains_key("keyCredentials") {
            m.insert(
                "keyCredentials".to_string(),
                Value::Array(keys.iter().map(|k| k.to_json(true)).collect()),
            );
        }
    }
    v
}

// ---------- app management policies ----------

fn default_policy_context(req: &Req) -> String {
    req.context("policies/defaultAppManagementPolicy/$entity")
}

pub(super) fn get_default_policy(req: &Req) -> GResult {
    req.require(POLICY_READ)?;
    let v = req.shared.dir().default_policy.clone();
    let mut out = Map::new();
    out.insert("@odata.context".into(), json!(default_policy_context(req)));
    if let Value::Object(m) = v {
        out.extend(m);
    }
    Ok(json_response(StatusCode::OK, Value::Object(out)))
}

pub(super) fn patch_default_policy(req: &Req) -> GResult {
    req.require(POLICY_WRITE)?;
    let body = req.json_body()?;
    let mut d = req.shared.dir();
    let mut updated = d.default_policy.clone();
    policy::apply_update(
        &mut updated,
        &body,
        &["applicationRestrictions", "servicePrincipalRestrictions"],
        "TenantAppManagementPolicy",
    )?;
    updated["id"] = json!(DEFAULT_POLICY_ID);
    d.default_policy = updated;
    Ok(no_content())
}

fn policy_context(req: &Req) -> String {
    req.context("policies/appManagementPolicies/$entity")
}

fn policy_not_found(id: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

pub(super) fn list_policies(req: &Req) -> GResult {
    req.require(POLICY_READ)?;
    let items: Vec<Value> = req.shared.dir().policies.values().cloned().collect();
    Ok(json_response(
        StatusCode::OK,
        json!({"@odata.context": req.context("policies/appManagementPolicies"), "value": items}),
    ))
}

pub(super) fn create_policy(req: &Req) -> GResult {
    req.require(POLICY_WRITE)?;
    let body = req.json_body()?;
    if body
        .get("displayName")
        .and_then(Value::as_str)
        .is_none_or(|s| s.trim().is_empty())
    {
        return Err(invalid_value("displayName", "AppManagementPolicy"));
    }
    let id = new_id();
    let mut p = json!({
        "id": id,
        "displayName": null,
        "description": null,
        "isEnabled": true,
        "restrictions": {"passwordCredentials": [], "keyCredentials": []},
    });
    policy::apply_update(&mut p, &body, &["restrictions"], "AppManagementPolicy")?;
    req.shared.dir().policies.insert(id, p.clone());
    Ok(entity(
        req,
        StatusCode::CREATED,
        "policies/appManagementPolicies/$entity",
        p,
    ))
}

pub(super) fn get_policy(req: &Req, id: &str) -> GResult {
    req.require(POLICY_READ)?;
    let p = req
        .shared
        .dir()
        .policies
        .get(&id.to_ascii_lowercase())
        .cloned()
        .ok_or_else(|| policy_not_found(id))?;
    let mut out = Map::new();
    out.insert("@odata.context".into(), json!(policy_context(req)));
    if let Value::Object(m) = p {
        out.extend(m);
    }
    Ok(json_response(StatusCode::OK, Value::Object(out)))
}

pub(super) fn patch_policy(req: &Req, id: &str) -> GResult {
    req.require(POLICY_WRITE)?;
    let body = req.json_body()?;
    let mut d = req.shared.dir();
    let p = d
        .policies
        .get_mut(&id.to_ascii_lowercase())
        .ok_or_else(|| policy_not_found(id))?;
    let mut updated = p.clone();
    policy::apply_update(
        &mut updated,
        &body,
        &["restrictions"],
        "AppManagementPolicy",
    )?;
    *p = updated;
    Ok(no_content())
}

pub(super) fn delete_policy(req: &Req, id: &str) -> GResult {
    req.require(POLICY_WRITE)?;
    let id = id.to_ascii_lowercase();
    let mut d = req.shared.dir();
    if d.policies.remove(&id).is_none() {
        return Err(policy_not_found(&id));
    }
    for a in d.applications.values_mut() {
        if a.policy.as_deref() == Some(id.as_str()) {
            a.policy = None;
        }
    }
    for s in d.service_principals.values_mut() {
        if s.policy.as_deref() == Some(id.as_str()) {
            s.policy = None;
        }
    }
    Ok(no_content())
}

pub(super) fn policy_applies_to(req: &Req, id: &str) -> GResult {
    req.require(POLICY_READ)?;
    let id = id.to_ascii_lowercase();
    let d = req.shared.dir();
    if !d.policies.contains_key(&id) {
        return Err(policy_not_found(&id));
    }
    let mut items: Vec<Value> = Vec::new();
    for a in d
        .applications
        .values()
        .filter(|a| a.policy.as_deref() == Some(&id))
    {
        let mut v = a.to_json(&d.domain);
        v["@odata.type"] = json!("#microsoft.graph.application");
        items.push(v);
    }
    for s in d
        .service_principals
        .values()
        .filter(|s| s.policy.as_deref() == Some(&id))
    {
        let mut v = s.to_json();
        v["@odata.type"] = json!("#microsoft.graph.servicePrincipal");
        items.push(v);
    }
    drop(d);
    Ok(json_response(
        StatusCode::OK,
        json!({"@odata.context": req.context("directoryObjects"), "value": items}),
    ))
}

fn assigned_mut<'d>(
    d: &'d mut Directory,
    owner: Owner,
    id: &str,
) -> Option<&'d mut Option<String>> {
    match owner {
        Owner::App => d.applications.get_mut(id).map(|a| &mut a.policy),
        Owner::Sp => d.service_principals.get_mut(id).map(|s| &mut s.policy),
    }
}

/// `GET /{applications|servicePrincipals}/{id}/appManagementPolicies`.
pub(super) fn list_assigned(req: &Req, owner: Owner, key: &str) -> GResult {
    req.require(APP_READ)?;
    req.require(POLICY_READ)?;
    let id = find_id(req, owner, key)?;
    let d = req.shared.dir();
    let m = meta(&d, owner, &id).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    let items: Vec<Value> = m
        .policy
        .and_then(|p| d.policies.get(&p).cloned())
        .into_iter()
        .collect();
    drop(d);
    Ok(json_response(
        StatusCode::OK,
        json!({"@odata.context": req.context("appManagementPolicies"), "value": items}),
    ))
}

/// `POST /{applications|servicePrincipals}/{id}/appManagementPolicies/$ref`.
pub(super) fn assign(req: &Req, owner: Owner, key: &str) -> GResult {
    req.require(APP_READ)?;
    req.require(POLICY_WRITE)?;
    let body = req.json_body()?;
    let reference = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_value("@odata.id", entity_name(owner)))?;
    let policy_id = reference
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let id = find_id(req, owner, key)?;
    let mut d = req.shared.dir();
    if !d.policies.contains_key(&policy_id) {
        return Err(policy_not_found(&policy_id));
    }
    let slot =
        assigned_mut(&mut d, owner, &id).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    if slot.as_deref().is_some_and(|p| p != policy_id) {
        return Err(GraphError::bad_request(
            "A policy is already assigned to this object; only one app management policy can be assigned.",
        ));
    }
    *slot = Some(policy_id);
    Ok(no_content())
}

/// `DELETE /{applications|servicePrincipals}/{id}/appManagementPolicies/{policyId}/$ref`.
pub(super) fn unassign(req: &Req, owner: Owner, key: &str, policy_id: &str) -> GResult {
    req.require(APP_READ)?;
    req.require(POLICY_WRITE)?;
    let id = find_id(req, owner, key)?;
    let mut d = req.shared.dir();
    let slot =
        assigned_mut(&mut d, owner, &id).ok_or_else(|| GraphError::not_found(key_display(key)))?;
    if !slot
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(policy_id))
    {
        return Err(policy_not_found(policy_id));
    }
    *slot = None;
    Ok(no_content())
}
