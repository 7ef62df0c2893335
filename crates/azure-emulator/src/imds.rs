//! The VM Instance Metadata Service managed-identity endpoint, and helpers shared with Arc.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::auth::{self, Resource};
use super::errors::MiError;
use super::paging::{param, query_pairs};
use super::state::ServicePrincipal;
use super::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(token))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> Response {
    MiError::new(StatusCode::NOT_FOUND, "not_found", "No such endpoint.").into_response()
}

/// `Metadata: true` is required (an SSRF guard).
pub fn check_metadata_header(headers: &HeaderMap, error: &str) -> Result<(), MiError> {
    match headers.get("metadata").and_then(|v| v.to_str().ok()) {
        Some("true") => Ok(()),
        _ => Err(MiError::new(
            StatusCode::BAD_REQUEST,
            error,
            "Required metadata header not specified",
        )),
    }
}

/// Maps a v1 resource to a resource, or the `invalid_resource` error.
pub fn resolve_mi_resource(shared: &Shared, resource: &str) -> Result<Resource, MiError> {
    auth::resolve_resource(&shared.urls, resource).ok_or_else(|| {
        let tenant = shared.dir().tenant_id.clone();
        MiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    })
}

/// The managed-identity token body: every value a string.
pub fn mi_token_response(
    shared: &Shared,
    tenant: &str,
    sp: &ServicePrincipal,
    resource: Resource,
    resource_text: &str,
) -> Value {
    let minted = auth::mint(shared, tenant, sp, resource, resource_text);
    json!({
        "access_token": minted.token,
        "refresh_token": "",
        "expires_in": minted.lifetime.to_string(),
        "expires_on": minted.exp.to_string(),
        "ext_expires_in": minted.lifetime.to_string(),
        "not_before": minted.iat.to_string(),
        "resource": resource_text,
        "token_type": "Bearer",
        "client_id": sp.app_id,
    })
}

pub fn json_ok(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
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
    check_metadata_header(headers, "bad_request_102")?;
    let query = query_pairs(raw);
    if param(&query, "api-version").is_none_or(str::is_empty) {
        return Err(MiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing.",
        ));
    }
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
    let selectors: Vec<(&str, &str)> = ["client_id", "object_id", "msi_res_id"]
        .into_iter()
        .filter_map(|k| param(&query, k).map(|v| (k, v)))
        .collect();
    if selectors.len() > 1 {
        return Err(MiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Only one of client_id, object_id and msi_res_id may be given.",
        ));
    }
    let identity_not_found = || {
        MiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        )
    };
    let (sp, tenant) = {
        let d = shared.dir();
        let mut candidates: Vec<(ServicePrincipal, String)> = Vec::new();
        if let Some(sp) = d.service_principals.get(&d.machine_sp_id) {
            let res = sp.alternative_names.get(1).cloned().unwrap_or_default();
            candidates.push((sp.clone(), res));
        }
        for (id, res) in &d.user_assigned {
            if let Some(sp) = d.service_principals.get(id) {
                candidates.push((sp.clone(), res.clone()));
            }
        }
        let chosen = match selectors.first() {
            None => candidates.first().map(|(s, _)| s.clone()),
            Some((kind, value)) => candidates
                .iter()
                .find(|(s, res)| match *kind {
                    "client_id" => s.app_id.eq_ignore_ascii_case(value),
                    "object_id" => s.id.eq_ignore_ascii_case(value),
                    _ => res.eq_ignore_ascii_case(value),
                })
                .map(|(s, _)| s.clone()),
        };
        (chosen.ok_or_else(identity_not_found)?, d.tenant_id.clone())
    };
    let resource = resolve_mi_resource(shared, &resource_text)?;
    Ok(json_ok(mi_token_response(
        shared,
        &tenant,
        &sp,
        resource,
        &resource_text,
    )))
}
