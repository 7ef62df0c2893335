//! The Entra ID token service: the v2.0 (and v1) client-credentials flow with a client
//! secret or a federated client assertion, plus OpenID metadata and instance discovery.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::auth;
use super::errors::AadError;
use super::jwt::constant_time_eq;
use super::keys::{parse_jwt, Jwt};
use super::replicas::{Replicas, TokenCall};
use super::state::{KeyCredential, Password};
use super::Shared;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(token_v2).fallback(post_only),
        )
        .route("/{tenant}/oauth2/token", post(token_v1).fallback(post_only))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/common/discovery/instance", get(instance_discovery))
        .route(
            "/cluster-issuer/.well-known/openid-configuration",
            get(cluster_openid_configuration),
        )
        .route("/cluster-issuer/openid/v1/jwks", get(cluster_jwks))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> Response {
    AadError::new(
        StatusCode::NOT_FOUND,
        "invalid_request",
        900_561,
        "The endpoint only accepts POST requests at /{tenant}/oauth2/v2.0/token.",
    )
    .into_response()
}

async fn post_only() -> Response {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900_561,
        "The endpoint only accepts POST requests.",
    )
    .into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V1,
    V2,
}

async fn token_v2(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_a_replica(&shared, &tenant, &headers, &body, Flavor::V2)
}

async fn token_v1(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_a_replica(&shared, &tenant, &headers, &body, Flavor::V1)
}

/// Answers a token request from a replica picked at random, and tells the request log
/// which one and for which client id.
fn on_a_replica(
    shared: &Shared,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    flavor: Flavor,
) -> Response {
    let replica = Replicas::pick(&shared.settings());
    let mut resp = issue(shared, tenant, headers, body, flavor, replica)
        .unwrap_or_else(IntoResponse::into_response);
    let client_id = parse_form(headers, body)
        .remove("client_id")
        .or_else(|| basic_credentials(headers).map(|(id, _)| id))
        .filter(|id| !id.is_empty());
    resp.extensions_mut()
        .insert(TokenCall { replica, client_id });
    resp
}

fn tenant_known(shared: &Shared, tenant: &str) -> bool {
    let d = shared.dir();
    tenant.eq_ignore_ascii_case(&d.tenant_id) || tenant.eq_ignore_ascii_case(&d.domain)
}

fn unknown_tenant(tenant: &str) -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

fn missing(param: &str) -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900_144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

fn bad_secret(client_id: &str) -> AadError {
    AadError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7_000_215,
        format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
        ),
    )
}

fn unknown_client(client_id: &str, tenant: &str) -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700_016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
}

fn parse_form(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
        .unwrap_or(false);
    let mut form = HashMap::new();
    if is_form {
        for (k, v) in url::form_urlencoded::parse(body) {
            form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    form
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(secret)))
}

fn issue(
    shared: &Shared,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    flavor: Flavor,
    replica: usize,
) -> Result<Response, AadError> {
    if !tenant_known(shared, tenant) {
        return Err(unknown_tenant(tenant));
    }
    let form = parse_form(headers, body);
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let basic = basic_credentials(headers);
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("client_id"))?;
    let client_secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.as_ref().map(|(_, s)| s.clone()));

    // The requested resource.
    let requested = match flavor {
        Flavor::V2 => {
            let scope = form.get("scope").ok_or_else(|| missing("scope"))?;
            let scopes: Vec<&str> = scope.split_whitespace().collect();
            let invalid_scope = || {
                AadError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. Client credential flows must have exactly one scope value with /.default suffixed to the resource identifier."
                    ),
                )
            };
            match scopes.as_slice() {
                [one] => one
                    .strip_suffix("/.default")
                    .map(str::to_string)
                    .ok_or_else(invalid_scope)?,
                _ => return Err(invalid_scope()),
            }
        }
        Flavor::V1 => form
            .get("resource")
            .cloned()
            .ok_or_else(|| missing("resource"))?,
    };

    let settings = shared.settings();
    // What this replica has seen of each new object.
    let seen = |id: &str, created_at| shared.replicas.visible(&settings, id, created_at, replica);
    let d = shared.dir();
    let tenant_id = d.tenant_id.clone();
    let app = d
        .app_by_client_id(&client_id)
        .filter(|a| seen(&a.id, a.created_at))
        .ok_or_else(|| unknown_client(&client_id, &tenant_id))?;
    let sp = d
        .sp_by_client_id(&client_id)
        .filter(|s| seen(&s.id, s.created_at));

    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900_144,
                "The request body must contain the following parameter: 'client_assertion_type' with the value 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
            ));
        }
        let parsed = parse_jwt(assertion).ok_or_else(malformed_assertion)?;
        let (x5t, x5t_s256) = parsed.thumbprints();
        if x5t.is_some() || x5t_s256.is_some() {
            let keys: Vec<&KeyCredential> = app
                .keys
                .iter()
                .chain(sp.iter().flat_map(|s| s.keys.iter()))
                .filter(|k| seen(&k.key_id, k.added_at))
                .collect();
            let names = [tenant, d.tenant_id.as_str(), d.domain.as_str()];
            check_certificate_assertion(shared, &names, &client_id, &parsed, &keys)?;
        } else {
            check_assertion(shared, &parsed, &app.federated)?;
        }
    } else if let Some(secret) = client_secret.filter(|s| !s.is_empty()) {
        let passwords: Vec<&Password> = app
            .passwords
            .iter()
            .chain(sp.iter().flat_map(|s| s.passwords.iter()))
            .collect();
        let found = passwords
            .iter()
            .find(|p| constant_time_eq(p.secret.as_bytes(), secret.as_bytes()))
            .ok_or_else(|| bad_secret(&client_id))?;
        let now = settings.password_clock();
        if found.start > now {
            // Entra ID refuses a secret before its startDateTime as it does a wrong one.
            return Err(bad_secret(&client_id));
        }
        if found.end <= now {
            return Err(AadError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7_000_222,
                format!(
                    "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
                ),
            ));
        }
        if !seen(&found.key_id, found.added_at) {
            return Err(bad_secret(&client_id));
        }
    } else {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            7_000_216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        ));
    }

    let sp = sp.cloned().ok_or_else(|| {
        AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            7_000_229,
            format!(
                "The client application {client_id} is missing service principal in the tenant {tenant_id}."
            ),
        )
    })?;
    drop(d);

    let resource = auth::resolve_resource(&shared.urls, &requested).ok_or_else(|| {
        AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500_011,
            format!(
                "The resource principal named {requested} was not found in the tenant named {tenant_id}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    })?;
    let minted = auth::mint(shared, &tenant_id, &sp, resource, &requested);
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": minted.lifetime,
        "ext_expires_in": minted.lifetime,
        "access_token": minted.token,
    });
    if flavor == Flavor::V1 {
        body["expires_on"] = json!(minted.exp.to_string());
        body["not_before"] = json!(minted.iat.to_string());
        body["resource"] = json!(requested);
        body["expires_in"] = json!(minted.lifetime.to_string());
        body["ext_expires_in"] = json!(minted.lifetime.to_string());
    }
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn malformed_assertion() -> AadError {
    AadError::new(
        StatusCode::BAD_REQUEST,
        "invalid_client",
        50027,
        "JWT token is invalid or malformed.",
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn invalid_signature(reason: &str) -> AadError {
    AadError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        700_027,
        format!("Client assertion contains an invalid signature. [Reason - {reason}]"),
    )
}

fn check_lifetime(jwt: &Jwt) -> Result<(), AadError> {
    let now = chrono::Utc::now().timestamp();
    let exp = jwt.claim_i64("exp");
    let nbf = jwt.claim_i64("nbf").unwrap_or(0);
    match exp {
        Some(exp) if exp > now && nbf <= now + 300 => Ok(()),
        _ => Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700_024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {}.",
                exp.map(|e| e.to_string()).unwrap_or_else(|| "(missing)".to_string())
            ),
        )),
    }
}

/// Checks a certificate client assertion: the key credential named by `x5t` (SHA-1) or
/// `x5t#S256` must be registered and valid now, the RS256/PS256 signature must verify with
/// its public key, `aud` must be this tenant's token endpoint, `iss` = `sub` = the client
/// id, and the assertion must be within its lifetime.
fn check_certificate_assertion(
    shared: &Shared,
    tenant_names: &[&str],
    client_id: &str,
    jwt: &Jwt,
    keys: &[&KeyCredential],
) -> Result<(), AadError> {
    let (x5t, x5t_s256) = jwt.thumbprints();
    let shown = x5t
        .as_deref()
        .or(x5t_s256.as_deref())
        .map(hex)
        .unwrap_or_default();
    let key = keys
        .iter()
        .find(|k| {
            k.key_type == "AsymmetricX509Cert"
                && (x5t.as_deref() == Some(k.cert.sha1.as_slice())
                    || x5t_s256.as_deref() == Some(k.cert.sha256.as_slice()))
        })
        .ok_or_else(|| {
            invalid_signature(&format!(
                "The key was not found., Thumbprint of key used by client: '{shown}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'."
            ))
        })?;
    if !key.valid_at(chrono::Utc::now()) {
        return Err(invalid_signature(&format!(
            "The key used is expired., Thumbprint of key used by client: '{shown}'"
        )));
    }
    if !key.cert.rsa || key.cert.key_bits < 2048 {
        return Err(invalid_signature(&format!(
            "The key used is not an RSA key of at least 2048 bits: RSA key size {} is less than the minimum required 2048 bits.",
            key.cert.key_bits
        )));
    }
    if !jwt.verify_rsa(&key.cert.public_key) {
        return Err(invalid_signature(
            "The provided signature value did not match the expected signature value.",
        ));
    }
    let a = &shared.urls.authority;
    let valid_aud: Vec<String> = tenant_names
        .iter()
        .flat_map(|t| {
            [
                format!("{a}{t}/oauth2/v2.0/token"),
                format!("{a}{t}/oauth2/token"),
            ]
        })
        .collect();
    let auds = jwt.audiences();
    if !auds
        .iter()
        .any(|x| valid_aud.iter().any(|v| v.eq_ignore_ascii_case(x)))
    {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            50027,
            format!(
                "JWT token is invalid or malformed: the audience '{}' of the client assertion is not the token endpoint of this tenant.",
                auds.join(",")
            ),
        ));
    }
    let iss = jwt.claim_str("iss").unwrap_or("");
    if !iss.eq_ignore_ascii_case(client_id) {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700_021,
            format!("Client assertion application identifier '{iss}' doesn't match 'client_id' parameter '{client_id}'."),
        ));
    }
    if jwt.claim_str("sub") != Some(iss) {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            50048,
            "Subject does not match Issuer claim in the client assertion.",
        ));
    }
    check_lifetime(jwt)
}

/// Matches an external assertion against the application's federated credentials. An
/// assertion of the built-in cluster issuer must carry that issuer's signature; other
/// issuers cannot be reached from the emulator, so their signatures are not checked.
fn check_assertion(
    shared: &Shared,
    jwt: &Jwt,
    federated: &[super::state::FederatedCredential],
) -> Result<(), AadError> {
    let claims = &jwt.claims;
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let auds: Vec<String> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let matched = federated.iter().any(|f| {
        f.issuer == iss && f.subject == sub && auds.iter().any(|a| f.audiences.contains(a))
    });
    if iss == shared.cluster.issuer && !shared.cluster.verifies(jwt) {
        return Err(AadError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700_027,
            "Client assertion contains an invalid signature. [Reason - The key was not found in the issuer's JSON Web Key Set.]",
        ));
    }
    if !matched {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'.",
                auds.join(",")
            ),
        ));
    }
    check_lifetime(jwt)
}

async fn openid_configuration(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    if !tenant_known(&shared, &tenant) && !["common", "organizations"].contains(&tenant.as_str()) {
        return unknown_tenant(&tenant).into_response();
    }
    let a = &shared.urls.authority;
    Json(json!({
        "token_endpoint": format!("{a}{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{a}{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{a}{tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{a}{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{a}{tenant}/oauth2/v2.0/devicecode"),
        "end_session_endpoint": format!("{a}{tenant}/oauth2/v2.0/logout"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": shared.urls.graph.trim_start_matches("https://"),
    }))
    .into_response()
}

async fn instance_discovery(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = &shared.urls.authority;
    let host = a
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let tenant = q
        .get("authorization_endpoint")
        .and_then(|e| e.strip_prefix(a.as_str()))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("common")
        .to_string();
    Json(json!({
        "tenant_discovery_endpoint": format!("{a}{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }))
    .into_response()
}

async fn cluster_openid_configuration(State(shared): State<Arc<Shared>>) -> Response {
    let issuer = &shared.cluster.issuer;
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn cluster_jwks(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.cluster.jwks()).into_response()
}
