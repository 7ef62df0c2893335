//! The Azure Arc (himds) identity endpoint: the two-step `Basic realm=<key file>` challenge.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rand::RngCore;

use super::errors::MiError;
use super::imds::{check_metadata_header, mi_token_response, resolve_mi_resource};
use super::jwt::constant_time_eq;
use super::paging::{param, query_pairs};
use super::Shared;

/// How long an unanswered challenge file stays valid.
const KEY_LIFETIME: Duration = Duration::from_secs(300);

/// An outstanding challenge: the secret written into its `.key` file.
#[derive(Clone)]
pub struct ArcKey {
    pub secret: String,
    pub created: Instant,
}

impl std::fmt::Debug for ArcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcKey")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// api-versions the Arc agent accepts.
pub const ARC_API_VERSIONS: [&str; 4] = ["2019-08-15", "2019-11-01", "2020-06-01", "2021-02-01"];

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(token))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> Response {
    MiError::new(StatusCode::NOT_FOUND, "not_found", "No such endpoint.").into_response()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    match handle(&shared, raw.as_deref(), &headers) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn handle(shared: &Shared, raw: Option<&str>, headers: &HeaderMap) -> Result<Response, MiError> {
    let query = query_pairs(raw);
    let version = param(&query, "api-version").ok_or_else(|| {
        MiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing.",
        )
    })?;
    if !ARC_API_VERSIONS.contains(&version) {
        return Err(MiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "Invalid api-version '{version}'. Supported versions are {}.",
                ARC_API_VERSIONS.join(", ")
            ),
        ));
    }
    check_metadata_header(headers, "invalid_request")?;
    let resource_text = param(&query, "resource")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            MiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required query variable 'resource' is missing.",
            )
        })?
        .to_string();
    let resource = resolve_mi_resource(shared, &resource_text)?;

    // Arc offers the system-assigned identity only; a selector must name it.
    let (machine_sp, machine_res) = {
        let d = shared.dir();
        let sp = d.service_principals.get(&d.machine_sp_id).cloned();
        let res = sp
            .as_ref()
            .and_then(|s| s.alternative_names.get(1).cloned())
            .unwrap_or_default();
        (sp, res)
    };
    let machine_sp = machine_sp.ok_or_else(|| {
        MiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        )
    })?;
    let mut echo = Vec::new();
    for (name, expected) in [
        ("client_id", machine_sp.app_id.as_str()),
        ("object_id", machine_sp.id.as_str()),
        ("msi_res_id", machine_res.as_str()),
    ] {
        if let Some(v) = param(&query, name) {
            if !v.eq_ignore_ascii_case(expected) {
                return Err(MiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Identity not found",
                ));
            }
            echo.push((name, v.to_string()));
        }
    }

    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let Some(authz) = authz else {
        return challenge(shared);
    };
    let presented = match authz.split_once(' ') {
        Some((scheme, secret)) if scheme.eq_ignore_ascii_case("basic") => secret.trim(),
        _ => "",
    };
    // Find and consume the key in one step, so a secret works once even under races.
    let matched: Option<PathBuf> = {
        let mut keys = shared.arc_keys();
        let found = keys
            .iter()
            .find(|(_, key)| {
                !presented.is_empty()
                    && key.created.elapsed() < KEY_LIFETIME
                    && constant_time_eq(key.secret.as_bytes(), presented.as_bytes())
            })
            .map(|(p, _)| p.clone());
        if let Some(p) = &found {
            keys.remove(p);
        }
        found
    };
    let Some(path) = matched else {
        return Err(MiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "The challenge response in the Authorization header is not valid.",
        ));
    };
    let _ = std::fs::remove_file(&path);

    let tenant = shared.dir().tenant_id.clone();
    let mut body = mi_token_response(shared, &tenant, &machine_sp, resource, &resource_text);
    for (k, v) in echo {
        body[k] = serde_json::Value::String(v);
    }
    Ok(super::imds::json_ok(body))
}

/// Writes a fresh `.key` file and answers 401 naming it.
fn challenge(shared: &Shared) -> Result<Response, MiError> {
    let realm = match shared.settings().arc_realm_override {
        Some(p) => p,
        None => {
            let dir = shared.arc_dir.clone().ok_or_else(|| {
                MiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown",
                    "The agent's token directory is not available.",
                )
            })?;
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let path = dir.join(format!("{}.key", uuid::Uuid::new_v4()));
            write_key(&path, &secret).map_err(|e| {
                tracing::warn!(error = %e, "cannot write an Arc key file");
                MiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown",
                    "The agent could not write the challenge file.",
                )
            })?;
            let mut keys = shared.arc_keys();
            // Forget (and delete) challenges nobody answered in time.
            let stale: Vec<PathBuf> = keys
                .iter()
                .filter(|(_, k)| k.created.elapsed() >= KEY_LIFETIME)
                .map(|(p, _)| p.clone())
                .collect();
            for p in stale {
                keys.remove(&p);
                let _ = std::fs::remove_file(&p);
            }
            keys.insert(
                path.clone(),
                ArcKey {
                    secret,
                    created: Instant::now(),
                },
            );
            path.to_string_lossy().into_owned()
        }
    };
    let mut resp = MiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized_client",
        "Authorization is required. Read the file named in the WWW-Authenticate realm and retry with its contents.",
    )
    .into_response();
    let value = HeaderValue::from_str(&format!("Basic realm={realm}")).map_err(|_| {
        MiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown",
            "The challenge path is not a valid header value.",
        )
    })?;
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    Ok(resp)
}

fn write_key(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.flush()
}
