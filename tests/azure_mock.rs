//! Azure clients against a tiny in-process plain-http loopback server: the code paths the
//! https emulator cannot reach (this crate's own v2.0 token POST for a plain-http loopback
//! authority, the VM IMDS override, workload identity over that POST).

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use azure_clients::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Counters {
    token: AtomicUsize,
    imds: AtomicUsize,
    graph: AtomicUsize,
    arm_put: AtomicUsize,
    arm_get: AtomicUsize,
}

/// PUT role assignment: `PrincipalNotFound` twice (replication lag), then created.
async fn arm_put(
    State(c): State<Arc<Counters>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let n = c.arm_put.fetch_add(1, Ordering::SeqCst) + 1;
    if body["properties"]["principalType"] != "ServicePrincipal" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error":{"code":"BadRequestFormat","message":"no principalType"}})),
        )
            .into_response();
    }
    if n <= 2 {
        return (
            StatusCode::BAD_REQUEST,
            [("x-ms-request-id", "arm-req-1")],
            Json(json!({"error":{"code":"PrincipalNotFound","message":"Principal p does not exist in the directory t."}})),
        )
            .into_response();
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "id": format!("/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/{name}"),
            "name": name,
            "properties": {
                "roleDefinitionId": body["properties"]["roleDefinitionId"],
                "principalId": body["properties"]["principalId"],
                "principalType": "ServicePrincipal",
                "scope": "/subscriptions/sub-1"
            }
        })),
    )
        .into_response()
}

/// GET role definition: the first call says the token expired.
async fn arm_get(State(c): State<Arc<Counters>>) -> Response {
    if c.arm_get.fetch_add(1, Ordering::SeqCst) == 0 {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error":{"code":"ExpiredAuthenticationToken","message":"The access token expiry UTC time is earlier than current UTC time."}})),
        )
            .into_response();
    }
    Json(json!({"id":"/providers/Microsoft.Authorization/roleDefinitions/r1","name":"r1","properties":{"roleName":"Reader"}}))
        .into_response()
}

async fn token(
    State(c): State<Arc<Counters>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    c.token.fetch_add(1, Ordering::SeqCst);
    let ok_secret = form.get("client_secret").map(String::as_str) == Some("good-secret");
    let ok_assertion = form.get("client_assertion").map(String::as_str) == Some("jwt-from-file")
        && form.get("client_assertion_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    let scope_ok = form.get("scope").is_some_and(|s| s.ends_with("/.default"));
    if form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && scope_ok
        && (ok_secret || ok_assertion)
    {
        let n = c.token.load(Ordering::SeqCst);
        return Json(json!({"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":format!("tok-{n}")}))
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [("x-ms-request-id", "req-token-1")],
        Json(json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t\r\nCorrelation ID: c",
            "error_codes": [7000215],
            "trace_id": "t",
        })),
    )
        .into_response()
}

async fn imds(State(c): State<Arc<Counters>>, headers: HeaderMap) -> Response {
    let n = c.imds.fetch_add(1, Ordering::SeqCst) + 1;
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return (StatusCode::BAD_REQUEST, Json(json!({"error":"bad_request_102","error_description":"Required metadata header not specified"}))).into_response();
    }
    if n == 1 {
        // IMDS "being updated": the client must retry.
        return StatusCode::GONE.into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Json(json!({
        "access_token": "tok-imds",
        "refresh_token": "",
        "expires_in": "86399",
        "expires_on": (now + 86399).to_string(),
        "not_before": now.to_string(),
        "resource": "x",
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn group(State(c): State<Arc<Counters>>, headers: HeaderMap) -> Response {
    c.graph.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !auth.starts_with("Bearer tok-") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error":{"code":"InvalidAuthenticationToken","message":"no"}})),
        )
            .into_response();
    }
    Json(json!({"id":"g1","displayName":"group one"})).into_response()
}

async fn start() -> (String, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/metadata/identity/oauth2/token", get(imds))
        .route("/v1.0/groups/{id}", get(group))
        .route(
            "/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/{name}",
            axum::routing::put(arm_put),
        )
        .route(
            "/providers/Microsoft.Authorization/roleDefinitions/r1",
            get(arm_get),
        )
        .with_state(counters.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), counters)
}

fn settings(base: &str, extra: &[(&str, &str)]) -> AzureSettings {
    let mut env: HashMap<String, String> = [
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_SUBSCRIPTION_ID", "sub-1"),
        ("AZURE_AUTHORITY_HOST", base),
        ("AZURE_GRAPH_ENDPOINT", base),
        ("AZURE_RESOURCE_MANAGER_ENDPOINT", base),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    AzureSettings::resolve(&AzureConfig::default(), &move |k: &str| env.get(k).cloned()).unwrap()
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

#[tokio::test]
async fn plain_http_loopback_authority_uses_own_token_post_and_caches() {
    let (base, c) = start().await;
    let s = settings(
        &base,
        &[
            ("AZURE_CLIENT_ID", "app-1"),
            ("AZURE_CLIENT_SECRET", "good-secret"),
        ],
    );
    assert_eq!(s.auth_method(), AuthMethod::ClientSecret);
    let client = AzureClient::new(s, AzureClientOptions::default()).unwrap();
    let mut calls = Vec::new();
    for _ in 0..10 {
        calls.push(client.graph().get_group("g1", deadline()));
    }
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().display_name, "group one");
    }
    assert_eq!(
        c.token.load(Ordering::SeqCst),
        1,
        "one token for ten concurrent calls"
    );
    assert_eq!(c.graph.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn wrong_secret_is_classified_and_not_leaked() {
    let (base, _c) = start().await;
    let s = settings(
        &base,
        &[
            ("AZURE_CLIENT_ID", "app-1"),
            ("AZURE_CLIENT_SECRET", "bad-secret-value"),
        ],
    );
    let client = AzureClient::new(s, AzureClientOptions::default()).unwrap();
    let err = client
        .graph()
        .get_group("g1", deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AADSTS7000215"));
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.request_id(), Some("req-token-1"));
    assert!(err.is_credential_not_yet_valid());
    let text = format!("{err} {err:?}");
    assert!(!text.contains("bad-secret-value"), "{text}");

    let err = client
        .verify_client_secret("app-1", &SecretString::new("another-bad-one"), deadline())
        .await
        .unwrap_err();
    assert!(err.is_credential_not_yet_valid());
    assert!(!format!("{err:?}").contains("another-bad-one"));
    client
        .verify_client_secret("app-1", &SecretString::new("good-secret"), deadline())
        .await
        .unwrap();
    // Waiting for a secret that never works stops at the deadline with the last error.
    let start = tokio::time::Instant::now();
    let err = client
        .wait_for_client_secret(
            "app-1",
            &SecretString::new("never"),
            Duration::from_millis(100),
            Deadline::after(Duration::from_millis(800)),
        )
        .await
        .unwrap_err();
    assert!(
        err.is_deadline_exceeded() && err.is_credential_not_yet_valid(),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn workload_identity_from_a_token_file() {
    let (base, c) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "jwt-from-file\n").unwrap();
    let s = settings(
        &base,
        &[
            ("AZURE_CLIENT_ID", "app-1"),
            ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ],
    );
    assert!(matches!(
        s.auth_method(),
        AuthMethod::WorkloadIdentityFile(_)
    ));
    let client = AzureClient::new(s, AzureClientOptions::default()).unwrap();
    client.graph().get_group("g1", deadline()).await.unwrap();
    assert_eq!(c.token.load(Ordering::SeqCst), 1);
}

struct StaticAssertion(&'static str, AtomicUsize);

#[async_trait::async_trait]
impl AssertionProvider for StaticAssertion {
    async fn assertion(&self, _deadline: Deadline) -> Result<SecretString, AzureError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(SecretString::new(self.0))
    }
}

#[tokio::test]
async fn workload_identity_from_a_callback() {
    let (base, _c) = start().await;
    let s = AzureSettings::resolve(
        &AzureConfig {
            client_id: "app-1".into(),
            identity_token_audience: "api://AzureADTokenExchange".into(),
            ..AzureConfig::default()
        },
        &{
            let base = base.clone();
            move |k: &str| match k {
                "AZURE_TENANT_ID" => Some("t".into()),
                "AZURE_SUBSCRIPTION_ID" => Some("s".into()),
                "AZURE_AUTHORITY_HOST" | "AZURE_GRAPH_ENDPOINT" => Some(base.clone()),
                _ => None,
            }
        },
    )
    .unwrap();
    assert_eq!(s.auth_method(), AuthMethod::WorkloadIdentityProvider);
    // Without a provider the build fails with a clear message.
    let err = AzureClient::new(s.clone(), AzureClientOptions::default()).unwrap_err();
    assert!(err.to_string().contains("identity tokens"), "{err}");

    let provider = Arc::new(StaticAssertion("jwt-from-file", AtomicUsize::new(0)));
    let client = AzureClient::new(
        s,
        AzureClientOptions {
            assertion_provider: Some(provider.clone()),
            ..AzureClientOptions::default()
        },
    )
    .unwrap();
    client.graph().get_group("g1", deadline()).await.unwrap();
    assert_eq!(provider.1.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn vm_imds_override_with_retry_on_410() {
    let (base, c) = start().await;
    let s = settings(&base, &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", &base)]);
    assert_eq!(s.auth_method(), AuthMethod::ManagedIdentity);
    let client = AzureClient::new(
        s,
        AzureClientOptions {
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            ..AzureClientOptions::default()
        },
    )
    .unwrap();
    client.graph().get_group("g1", deadline()).await.unwrap();
    client.graph().get_group("g1", deadline()).await.unwrap();
    assert_eq!(
        c.imds.load(Ordering::SeqCst),
        2,
        "one 410 then one token, then cached"
    );
}

#[tokio::test]
async fn principal_not_found_is_retried_and_expired_tokens_refreshed() {
    let (base, c) = start().await;
    let s = settings(
        &base,
        &[
            ("AZURE_CLIENT_ID", "app-1"),
            ("AZURE_CLIENT_SECRET", "good-secret"),
        ],
    );
    let client = AzureClient::new(
        s,
        AzureClientOptions {
            retry: RetryPolicy {
                propagation_initial_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            ..AzureClientOptions::default()
        },
    )
    .unwrap();
    let name = uuid::Uuid::new_v4().to_string();
    let ra = client
        .arm()
        .create_role_assignment(
            "",
            &name,
            "/providers/Microsoft.Authorization/roleDefinitions/r1",
            "p",
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(ra.name, name);
    assert_eq!(ra.scope, "/subscriptions/sub-1");
    assert_eq!(c.arm_put.load(Ordering::SeqCst), 3);

    // PrincipalNotFound past the deadline: the ARM error comes back, classified.
    c.arm_put.store(0, Ordering::SeqCst);
    let err = client
        .arm()
        .create_role_assignment(
            "/subscriptions/sub-1",
            &name,
            "/providers/Microsoft.Authorization/roleDefinitions/r1",
            "p",
            Deadline::after(Duration::from_millis(30)),
        )
        .await
        .unwrap_err();
    assert!(err.is_principal_not_found(), "{err}");
    assert_eq!(err.request_id(), Some("arm-req-1"));
    assert!(err.to_string().contains("PrincipalNotFound"), "{err}");

    // A 401 from ARM makes the client fetch a new token once.
    let tokens_before = c.token.load(Ordering::SeqCst);
    let rd = client
        .arm()
        .get_role_definition(
            "/providers/Microsoft.Authorization/roleDefinitions/r1",
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(rd.role_name, "Reader");
    assert_eq!(c.token.load(Ordering::SeqCst), tokens_before + 1);
    assert_eq!(c.arm_get.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_service_fails_with_a_readable_bounded_error() {
    let (base, _c) = start().await;
    // A port nobody listens on (bound then released).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let s = settings(
        &base,
        &[
            ("AZURE_CLIENT_ID", "app-1"),
            ("AZURE_CLIENT_SECRET", "good-secret"),
            ("AZURE_GRAPH_ENDPOINT", &closed),
        ],
    );
    let client = AzureClient::new(
        s,
        AzureClientOptions {
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            ..AzureClientOptions::default()
        },
    )
    .unwrap();
    let start = std::time::Instant::now();
    let err = client
        .graph()
        .get_group("g1", deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AzureError::Transport { connect: true, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(
        text.starts_with("get group: request to Microsoft Graph failed: "),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connect"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(5));
}
