//! The admin API (plain http): faults, settings, the request log and a state dump.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::faults::FaultRule;
use super::{Settings, Shared};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/settings", get(get_settings).post(post_settings))
        .route("/requests", get(list_requests).delete(clear_requests))
        .route("/state", get(state))
        .route("/cluster-issuer", get(cluster_issuer))
        .route("/cluster-issuer/token", axum::routing::post(cluster_token))
        .route(
            "/service-principals/{id}/graph-roles",
            axum::routing::put(put_graph_roles),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { bad(StatusCode::NOT_FOUND, "no such admin endpoint") })
        .with_state(shared)
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "faults": shared.faults().list() })).into_response()
}

/// Accepts one rule or an array of rules.
async fn add_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let rules: Vec<FaultRule> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => {
            match items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<FaultRule>, _>>()
            {
                Ok(r) => r,
                Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
            }
        }
        Ok(v @ Value::Object(_)) => match serde_json::from_value(v) {
            Ok(r) => vec![r],
            Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
        },
        _ => return bad(StatusCode::BAD_REQUEST, "expected a JSON object or array"),
    };
    for r in &rules {
        if let Err(e) = r.validate() {
            return bad(StatusCode::BAD_REQUEST, e);
        }
    }
    let mut faults = shared.faults();
    for r in rules {
        faults.add(r);
    }
    (
        StatusCode::CREATED,
        Json(json!({ "faults": faults.list() })),
    )
        .into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults().clear();
    StatusCode::NO_CONTENT
}

async fn get_settings(State(shared): State<Arc<Shared>>) -> Json<Settings> {
    Json(shared.settings())
}

fn as_u64(v: &Value, key: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("'{key}' must be a non-negative integer"))
}

fn apply(s: &mut Settings, key: &str, v: &Value) -> Result<(), String> {
    let to_usize = |n: u64| usize::try_from(n).map_err(|_| format!("'{key}' is too large"));
    match key {
        "latency_ms" => s.latency_ms = as_u64(v, key)?,
        "propagation_delay_ms" => s.propagation_delay_ms = as_u64(v, key)?,
        "credential_delay_ms" => s.credential_delay_ms = as_u64(v, key)?,
        "token_replicas" => {
            let n = to_usize(as_u64(v, key)?)?;
            if !(1..=super::MAX_TOKEN_REPLICAS).contains(&n) {
                return Err(format!(
                    "'token_replicas' must be between 1 and {}",
                    super::MAX_TOKEN_REPLICAS
                ));
            }
            s.token_replicas = n;
        }
        "replica_window_ms" => s.replica_window_ms = as_u64(v, key)?,
        "token_lifetime_secs" => {
            let n = as_u64(v, key)?;
            if n == 0 {
                return Err("'token_lifetime_secs' must be at least 1".to_string());
            }
            s.token_lifetime_secs = n;
        }
        "arc_realm_override" => match v {
            Value::Null => s.arc_realm_override = None,
            Value::String(p) => s.arc_realm_override = Some(p.clone()),
            _ => return Err("'arc_realm_override' must be a string or null".to_string()),
        },
        "graph_page_size" => {
            let n = to_usize(as_u64(v, key)?)?;
            if !(1..=999).contains(&n) {
                return Err("'graph_page_size' must be between 1 and 999".to_string());
            }
            s.graph_page_size = n;
        }
        "arm_page_size" => {
            let n = to_usize(as_u64(v, key)?)?;
            if n == 0 {
                return Err("'arm_page_size' must be at least 1".to_string());
            }
            s.arm_page_size = n;
        }
        "password_write_ms" => s.password_write_ms = as_u64(v, key)?,
        "max_concurrent_password_writes" => {
            let n = to_usize(as_u64(v, key)?)?;
            if n == 0 {
                return Err("'max_concurrent_password_writes' must be at least 1".to_string());
            }
            s.max_concurrent_password_writes = n;
        }
        "role_assignment_limit" => s.role_assignment_limit = to_usize(as_u64(v, key)?)?,
        "read_delay_ms" => s.read_delay_ms = as_u64(v, key)?,
        "graph_writes_per_sec" | "arm_writes_per_sec" => {
            let rate = v
                .as_f64()
                .filter(|r| r.is_finite() && *r >= 0.0)
                .ok_or_else(|| format!("'{key}' must be a non-negative number"))?;
            if key == "graph_writes_per_sec" {
                s.graph_writes_per_sec = rate;
            } else {
                s.arm_writes_per_sec = rate;
            }
        }
        "password_clock_offset_secs" => {
            s.password_clock_offset_secs = v
                .as_i64()
                .filter(|n| n.unsigned_abs() <= 100 * 365 * 86_400)
                .ok_or_else(|| {
                    format!(
                    "'{key}' must be an integer number of seconds (at most 100 years either way)"
                )
                })?
        }
        "created_clock_offset_secs" => {
            s.created_clock_offset_secs = v
                .as_i64()
                .filter(|n| n.unsigned_abs() <= 100 * 365 * 86_400)
                .ok_or_else(|| {
                    format!(
                    "'{key}' must be an integer number of seconds (at most 100 years either way)"
                )
                })?
        }
        "msa_app_password_limit" => s.msa_app_password_limit = to_usize(as_u64(v, key)?)?,
        "directory_quota" => s.directory_quota = to_usize(as_u64(v, key)?)?,
        "object_credential_limit" => {
            let n = to_usize(as_u64(v, key)?)?;
            if n == 0 {
                return Err("'object_credential_limit' must be at least 1".to_string());
            }
            s.object_credential_limit = n;
        }
        "graph_write_burst" => s.graph_write_burst = as_u64(v, key)?.max(1),
        "arm_write_burst" => s.arm_write_burst = as_u64(v, key)?.max(1),
        other => return Err(format!("unknown setting '{other}'")),
    }
    Ok(())
}

async fn post_settings(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&body) else {
        return bad(StatusCode::BAD_REQUEST, "expected a JSON object");
    };
    // Validate on a copy so a bad field changes nothing.
    let mut candidate = shared.settings();
    for (k, v) in &m {
        if let Err(e) = apply(&mut candidate, k, v) {
            return bad(StatusCode::BAD_REQUEST, e);
        }
    }
    let updated = shared.update_settings(|s| {
        for (k, v) in &m {
            let _ = apply(s, k, v);
        }
    });
    Json(updated).into_response()
}

/// Replaces the Graph application permissions of a service principal: `{"roles": [...]}`.
/// Tokens issued afterwards carry them (a token already issued keeps its `roles`, as in
/// Entra ID).
async fn put_graph_roles(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let roles: Vec<String> = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("roles").and_then(Value::as_array) {
            Some(a) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "body must be {\"roles\": [strings]}",
                )
            }
        },
        Err(_) => return bad(StatusCode::BAD_REQUEST, "body must be JSON"),
    };
    let mut d = shared.dir();
    match d.service_principals.get_mut(&id.to_ascii_lowercase()) {
        Some(sp) => {
            sp.graph_roles = roles.clone();
            Json(json!({ "id": sp.id, "roles": roles })).into_response()
        }
        None => bad(
            StatusCode::NOT_FOUND,
            format!("no service principal '{id}'"),
        ),
    }
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.requests()).into_response()
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.clear_requests();
    StatusCode::NO_CONTENT
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.dir().dump()).into_response()
}

/// The built-in cluster issuer: its issuer URL and JSON Web Key Set.
async fn cluster_issuer(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({"issuer": shared.cluster.issuer, "jwks": shared.cluster.jwks()})).into_response()
}

/// Signs a projected service-account token (as a kubelet would for a pod on AKS):
/// `{"subject": "system:serviceaccount:ns:sa", "audience"?: "api://AzureADTokenExchange",
/// "lifetime_secs"?: 3600, "not_before_secs"?: 0}` → `{"token", "issuer"}`.
async fn cluster_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad(StatusCode::BAD_REQUEST, "body must be a JSON object"),
    };
    let Some(subject) = v.get("subject").and_then(Value::as_str) else {
        return bad(StatusCode::BAD_REQUEST, "subject is required");
    };
    let audience = v
        .get("audience")
        .and_then(Value::as_str)
        .unwrap_or("api://AzureADTokenExchange");
    let lifetime = v
        .get("lifetime_secs")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let not_before = v
        .get("not_before_secs")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "aud": [audience],
        "iss": shared.cluster.issuer,
        "sub": subject,
        "iat": now,
        "nbf": now + not_before,
        "exp": now + lifetime,
        "kubernetes.io": {"namespace": subject.split(':').nth(2).unwrap_or(""),
            "serviceaccount": {"name": subject.split(':').nth(3).unwrap_or("")}},
    });
    match shared.cluster.sign(&claims) {
        Ok(token) => Json(json!({"token": token, "issuer": shared.cluster.issuer})).into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
