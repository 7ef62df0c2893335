//! Access tokens: the [`TokenSource`] abstraction, its per-scope cache with single-flight
//! refresh, and the credential kinds (client secret, workload identity, managed identity).
//!
//! # Which code talks to Entra ID
//!
//! * Client credentials (secret or assertion): this crate's own v2.0 POST to
//!   `{authority}/{tenant}/oauth2/v2.0/token`, for every authority. `azure_identity`
//!   1.1.0-beta.1's `ClientSecretCredential` / `ClientAssertionCredential` were tried and
//!   rejected: they parse Entra's error body with a borrowed `&str` for
//!   `error_description`, which fails on every real error (the description always holds
//!   escaped `\r\n`), so the status and the AADSTS code are lost and "secret not yet
//!   valid" (AADSTS7000215) cannot be told from a bad tenant; they also refuse a plain-http
//!   loopback authority. The POST is small, uses this crate's reqwest client (so
//!   `SSL_CERT_FILE` is trusted) and its retries are bounded by the caller's deadline.
//! * Managed identity: `azure_identity`'s `ManagedIdentityCredential` (App Service, Azure
//!   Arc, VM IMDS), given this crate's reqwest client as transport. It picks its source from
//!   the **process** environment (`IDENTITY_ENDPOINT`, `IMDS_ENDPOINT`, `IDENTITY_HEADER`,
//!   `MSI_ENDPOINT`, the Arc agent binary). Its VM IMDS address is fixed at
//!   `169.254.169.254`; when `AZURE_POD_IDENTITY_AUTHORITY_HOST` (the Azure SDKs' IMDS
//!   override) is set, this crate does the IMDS
//!   `GET {base}/metadata/identity/oauth2/token` itself instead.
//!
//! The SDK credential object is built afresh for every token fetch, so this crate's cache
//! is the only cache: refresh timing and invalidation after a 401 are exact.

use super::cloud::Cloud;
use super::error::{is_retryable_status, AzureError, Service, ServiceError};
use super::http::parse_service_error;
use super::retry::{retry_after, sleep_within, Deadline, RetryPolicy};
use super::secret::SecretString;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use url::Url;

/// An access token and its expiry.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When it expires.
    pub expires_at: SystemTime,
}

/// A source of access tokens for scopes such as `https://graph.microsoft.com/.default`.
///
/// Implementations cache per scope and share one refresh among concurrent callers.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A valid token for `scope`, fetched or refreshed only when needed.
    async fn token(&self, scope: &str, deadline: Deadline) -> Result<AccessToken, AzureError>;

    /// Forgets the cached token of `scope` (called after a 401 from a service).
    fn invalidate(&self, scope: &str);

    /// Which credential kind backs this source (for logs).
    fn kind(&self) -> &'static str;
}

/// Supplies client assertions (signed JWTs) for workload identity federation.
///
/// The engine implements this with the host's identity-token RPC; [`FileAssertion`]
/// reads a projected token file (`AZURE_FEDERATED_TOKEN_FILE`).
#[async_trait]
pub trait AssertionProvider: Send + Sync {
    /// A fresh assertion. Called once per token fetch.
    async fn assertion(&self, deadline: Deadline) -> Result<SecretString, AzureError>;
}

/// Largest accepted assertion file.
const MAX_ASSERTION_BYTES: u64 = 64 * 1024;

/// Reads the client assertion from a file each time one is needed (Kubernetes rotates
/// projected service-account tokens in place).
#[derive(Clone, Debug)]
pub struct FileAssertion {
    path: PathBuf,
}

impl FileAssertion {
    /// An assertion read from `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileAssertion {
        FileAssertion { path: path.into() }
    }
}

#[async_trait]
impl AssertionProvider for FileAssertion {
    async fn assertion(&self, _deadline: Deadline) -> Result<SecretString, AzureError> {
        let op = "read federated token file";
        let shown = self.path.display().to_string();
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| AzureError::credential(op, format!("'{shown}': {e}")))?;
        if meta.len() > MAX_ASSERTION_BYTES {
            return Err(AzureError::credential(
                op,
                format!("'{shown}' is larger than {MAX_ASSERTION_BYTES} bytes"),
            ));
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| AzureError::credential(op, format!("'{shown}': {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(AzureError::credential(op, format!("'{shown}' is empty")));
        }
        Ok(SecretString::new(text))
    }
}

/// How an application authenticates to the token endpoint.
#[derive(Clone)]
pub enum ClientCredential {
    /// A client secret.
    Secret(SecretString),
    /// A client assertion (workload identity federation).
    Assertion(Arc<dyn AssertionProvider>),
    /// A certificate: each token request carries a fresh client assertion signed with
    /// its key (`aud` = the token endpoint).
    Certificate(Arc<super::certificate::ClientCertificate>),
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredential::Secret(_) => f.write_str("Secret(<redacted>)"),
            ClientCredential::Assertion(_) => f.write_str("Assertion(..)"),
            ClientCredential::Certificate(c) => write!(f, "Certificate({})", c.thumbprint_hex()),
        }
    }
}

/// Fetches tokens without caching.
#[async_trait]
pub(crate) trait TokenFetcher: Send + Sync {
    async fn fetch(&self, scope: &str, deadline: Deadline) -> Result<AccessToken, AzureError>;
    fn kind(&self) -> &'static str;
}

struct CachedToken {
    token: AccessToken,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// A [`TokenSource`] caching one token per scope. A token is refreshed once less than
/// `min(5 minutes, half its lifetime)` remains; concurrent callers of a scope wait for a
/// single fetch.
pub struct CachingTokenSource {
    fetcher: Box<dyn TokenFetcher>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl CachingTokenSource {
    pub(crate) fn new(fetcher: Box<dyn TokenFetcher>) -> CachingTokenSource {
        CachingTokenSource {
            fetcher,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, scope: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(scope.to_owned()).or_default().clone()
    }
}

/// When to refresh a token that expires at `expires_at`.
fn refresh_instant(expires_at: SystemTime) -> Instant {
    let lifetime = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let margin = (lifetime / 2).min(Duration::from_secs(300));
    Instant::now() + lifetime.saturating_sub(margin)
}

#[async_trait]
impl TokenSource for CachingTokenSource {
    async fn token(&self, scope: &str, deadline: Deadline) -> Result<AccessToken, AzureError> {
        let slot = self.slot(scope);
        let mut guard = tokio::time::timeout_at(deadline.instant(), slot.lock())
            .await
            .map_err(|_| AzureError::deadline(format!("get token for {scope}"), None))?;
        if let Some(cached) = guard.as_ref() {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        let token = self.fetcher.fetch(scope, deadline).await?;
        tracing::debug!(kind = self.fetcher.kind(), scope, "fetched access token");
        *guard = Some(CachedToken {
            refresh_at: refresh_instant(token.expires_at),
            token: token.clone(),
        });
        Ok(token)
    }

    fn invalidate(&self, scope: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(scope);
    }

    fn kind(&self) -> &'static str {
        self.fetcher.kind()
    }
}

// ---------------------------------------------------------------------------------------
// Entra ID client credentials (secret or assertion)

/// Fetches app tokens from `{authority}/{tenant}/oauth2/v2.0/token`.
pub(crate) struct EntraFetcher {
    pub cloud: Cloud,
    pub tenant_id: String,
    pub client_id: String,
    pub credential: ClientCredential,
    pub http: reqwest::Client,
    pub policy: RetryPolicy,
}

/// Attempts per token fetch for transient failures.
const TOKEN_ATTEMPTS: u32 = 3;

#[async_trait]
impl TokenFetcher for EntraFetcher {
    async fn fetch(&self, scope: &str, deadline: Deadline) -> Result<AccessToken, AzureError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result =
                tokio::time::timeout_at(deadline.instant(), self.fetch_once(scope, deadline))
                    .await
                    .unwrap_or_else(|_| Err(AzureError::deadline("get token", None)));
            match result {
                Ok(t) => return Ok(t),
                Err(e) if e.is_retryable() && attempt < TOKEN_ATTEMPTS => {
                    let delay = e
                        .service_error()
                        .and_then(|s| s.retry_after)
                        .unwrap_or_else(|| self.policy.backoff(attempt));
                    if delay > self.policy.max_retry_after || !sleep_within(deadline, delay).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self.credential {
            ClientCredential::Secret(_) => "client secret",
            ClientCredential::Assertion(_) => "workload identity",
            ClientCredential::Certificate(_) => "client certificate",
        }
    }
}

impl EntraFetcher {
    async fn fetch_once(&self, scope: &str, deadline: Deadline) -> Result<AccessToken, AzureError> {
        let op = "get token";
        let url = self.cloud.token_endpoint(&self.tenant_id)?;
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", scope.to_owned()),
        ];
        match &self.credential {
            ClientCredential::Secret(s) => form.push(("client_secret", s.expose().to_owned())),
            ClientCredential::Assertion(p) => {
                let a = p.assertion(deadline).await?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", a.expose().to_owned()));
            }
            ClientCredential::Certificate(c) => {
                let a = c.client_assertion(&self.client_id, url.as_str())?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", a.expose().to_owned()));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let resp = self
            .http
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .timeout(deadline.remaining().min(self.policy.attempt_timeout))
            .send()
            .await
            .map_err(|e| transport_error(op, Service::Token, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(op, Service::Token, e))?;
        tracing::debug!(
            service = "token",
            method = "POST",
            path = url.path(),
            status = status.as_u16(),
            "azure request"
        );
        if !status.is_success() {
            return Err(AzureError::Service(Box::new(parse_entra_error(
                op, status, &headers, &bytes,
            ))));
        }
        parse_token_response(op, Service::Token, &bytes)
    }
}

fn transport_error(operation: &str, service: Service, e: reqwest::Error) -> AzureError {
    AzureError::transport(operation, service, e)
}

fn sdk_token(t: azure_core::credentials::AccessToken) -> AccessToken {
    let secs = t.expires_on.unix_timestamp().max(0) as u64;
    AccessToken {
        token: SecretString::new(t.token.secret().to_owned()),
        expires_at: UNIX_EPOCH + Duration::from_secs(secs),
    }
}

/// Maps an azure_core error to an [`AzureError`], keeping status, Entra error codes and
/// request id when the chain holds an HTTP response. An unreadable Azure Arc key file gets
/// the hint to add the server's user to the `himds` group.
pub(crate) fn map_sdk_error(
    operation: &str,
    service: Service,
    err: azure_core::Error,
) -> AzureError {
    use azure_core::error::ErrorKind;

    let mut http: Option<ServiceError> = None;
    let mut permission_denied = false;
    let mut connection = false;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = current {
        if let Some(core) = e.downcast_ref::<azure_core::Error>() {
            match core.kind() {
                ErrorKind::HttpResponse {
                    status,
                    error_code,
                    raw_response,
                } if http.is_none() => {
                    let headers = raw_response.as_ref().map(|r| r.headers());
                    let header = |name: &'static str| {
                        headers.and_then(|h| {
                            h.get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                                name,
                            ))
                            .map(str::to_owned)
                        })
                    };
                    let code = error_code.as_ref().map(|c| {
                        let first = c.split(',').next().unwrap_or(c).trim();
                        if !first.is_empty() && first.chars().all(|ch| ch.is_ascii_digit()) {
                            format!("AADSTS{first}")
                        } else {
                            first.to_owned()
                        }
                    });
                    let retry = header("retry-after")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .and_then(|s| Duration::try_from_secs_f64(s).ok());
                    http = Some(ServiceError {
                        operation: operation.to_owned(),
                        service,
                        status: u16::from(*status),
                        code,
                        detail_codes: Vec::new(),
                        message: core.to_string().trim().to_owned(),
                        request_id: header("x-ms-request-id").or_else(|| header("request-id")),
                        retry_after: retry,
                    });
                }
                ErrorKind::Connection => connection = true,
                _ => {}
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                permission_denied = true;
            }
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            connection |= r.is_connect() || r.is_timeout() || r.is_request();
        }
        current = e.source();
    }
    if permission_denied {
        return AzureError::credential(
            operation,
            "cannot read the Azure Arc agent's key file (permission denied): add the user \
             running Vault/OpenBao to the local 'himds' group, then restart the server",
        );
    }
    if let Some(s) = http {
        return AzureError::Service(Box::new(s));
    }
    let message = err.to_string();
    if connection {
        // Transport problems are worth retrying; keep them classifiable as such.
        return AzureError::Service(Box::new(ServiceError {
            operation: operation.to_owned(),
            service,
            status: 503,
            code: Some("ConnectionFailed".into()),
            detail_codes: Vec::new(),
            message,
            request_id: None,
            retry_after: None,
        }));
    }
    AzureError::credential(operation, message)
}

#[derive(Deserialize)]
struct EntraError {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<i64>,
    trace_id: Option<String>,
}

fn parse_entra_error(
    operation: &str,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> ServiceError {
    match serde_json::from_slice::<EntraError>(body) {
        Ok(e) => ServiceError {
            operation: operation.to_owned(),
            service: Service::Token,
            status: status.as_u16(),
            code: e
                .error_codes
                .first()
                .map(|c| format!("AADSTS{c}"))
                .or(e.error),
            detail_codes: Vec::new(),
            message: e.error_description.unwrap_or_default(),
            request_id: headers
                .get("x-ms-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or(e.trace_id),
            retry_after: retry_after(headers),
        },
        Err(_) => parse_service_error(operation, Service::Token, status, headers, body),
    }
}

fn number_or_string<'de, D>(d: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(i64),
        Str(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        Some(NumOrStr::Num(n)) => Some(n),
        Some(NumOrStr::Str(s)) => s.trim().parse().ok(),
        None => None,
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<i64>,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_on: Option<i64>,
}

/// Parses a token response of the v2.0 endpoint or IMDS (numbers may be strings).
pub(crate) fn parse_token_response(
    operation: &str,
    service: Service,
    body: &[u8],
) -> Result<AccessToken, AzureError> {
    let t: TokenResponse = serde_json::from_slice(body).map_err(|_| {
        // The serde error could quote the body, which holds the token: keep it out.
        AzureError::invalid_response(operation, service, "the token response is not valid JSON")
    })?;
    let expires_at = match (t.expires_on, t.expires_in) {
        (Some(on), _) if on > 0 => UNIX_EPOCH + Duration::from_secs(on as u64),
        (_, Some(secs)) if secs > 0 => SystemTime::now() + Duration::from_secs(secs as u64),
        _ => {
            return Err(AzureError::invalid_response(
                operation,
                service,
                "the token response has neither expires_in nor expires_on",
            ))
        }
    };
    Ok(AccessToken {
        token: SecretString::new(t.access_token),
        expires_at,
    })
}

// ---------------------------------------------------------------------------------------
// Managed identity

/// The IMDS API version used for the override endpoint.
const IMDS_API_VERSION: &str = "2018-02-01";
/// Attempts per IMDS fetch (404/410/429/5xx are retried, as Microsoft documents).
const IMDS_ATTEMPTS: u32 = 5;

/// Managed identity through azure_identity (App Service, Arc, VM IMDS), or this crate's
/// IMDS GET when an override endpoint is configured.
pub(crate) struct ManagedIdentityFetcher {
    pub imds_override: Option<Url>,
    pub http: reqwest::Client,
    pub policy: RetryPolicy,
}

#[async_trait]
impl TokenFetcher for ManagedIdentityFetcher {
    async fn fetch(&self, scope: &str, deadline: Deadline) -> Result<AccessToken, AzureError> {
        match &self.imds_override {
            Some(base) => self.fetch_imds(base, scope, deadline).await,
            None => self.fetch_with_sdk(scope, deadline).await,
        }
    }

    fn kind(&self) -> &'static str {
        "managed identity"
    }
}

impl ManagedIdentityFetcher {
    async fn fetch_with_sdk(
        &self,
        scope: &str,
        deadline: Deadline,
    ) -> Result<AccessToken, AzureError> {
        let op = "get managed identity token";
        let options = azure_identity::ManagedIdentityCredentialOptions {
            client_options: azure_core::http::ClientOptions {
                transport: Some(azure_core::http::Transport::new(Arc::new(
                    self.http.clone(),
                ))),
                ..Default::default()
            },
            ..Default::default()
        };
        let cred = azure_identity::ManagedIdentityCredential::new(Some(options))
            .map_err(|e| map_sdk_error(op, Service::ManagedIdentity, e))?;
        // The SDK retries 404/410/429/5xx for up to 72 s; the deadline bounds it.
        match tokio::time::timeout_at(deadline.instant(), cred.get_token(&[scope], None)).await {
            Ok(Ok(t)) => Ok(sdk_token(t)),
            Ok(Err(e)) => Err(map_sdk_error(op, Service::ManagedIdentity, e)),
            Err(_) => Err(AzureError::deadline(op, None)),
        }
    }

    async fn fetch_imds(
        &self,
        base: &Url,
        scope: &str,
        deadline: Deadline,
    ) -> Result<AccessToken, AzureError> {
        let op = "get managed identity token";
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let mut url = base
            .join("metadata/identity/oauth2/token")
            .map_err(|e| AzureError::config(format!("invalid IMDS endpoint '{base}': {e}")))?;
        url.query_pairs_mut()
            .append_pair("api-version", IMDS_API_VERSION)
            .append_pair("resource", resource);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .get(url.clone())
                .header("Metadata", "true")
                .timeout(deadline.remaining().min(self.policy.attempt_timeout))
                .send()
                .await;
            let err = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let bytes = resp
                        .bytes()
                        .await
                        .map_err(|e| transport_error(op, Service::ManagedIdentity, e))?;
                    tracing::debug!(
                        service = "imds",
                        method = "GET",
                        path = url.path(),
                        status = status.as_u16(),
                        attempt,
                        "azure request"
                    );
                    if status.is_success() {
                        return parse_token_response(op, Service::ManagedIdentity, &bytes);
                    }
                    let mut e = parse_entra_error(op, status, &headers, &bytes);
                    e.service = Service::ManagedIdentity;
                    let retry = matches!(status.as_u16(), 404 | 410)
                        || is_retryable_status(status.as_u16())
                        || status.as_u16() >= 500;
                    (AzureError::Service(Box::new(e)), retry)
                }
                Err(e) => (transport_error(op, Service::ManagedIdentity, e), true),
            };
            let (err, retry) = err;
            if !retry || attempt >= IMDS_ATTEMPTS {
                return Err(err);
            }
            let delay = err
                .service_error()
                .and_then(|s| s.retry_after)
                .unwrap_or_else(|| self.policy.backoff(attempt));
            if !sleep_within(deadline, delay).await {
                return Err(AzureError::deadline(op, Some(err)));
            }
        }
    }
}

/// One uncached token request for `scope` as application `client_id` with `credential`.
/// Transient failures (5xx, 429, connection errors) are retried inside, within `deadline`.
async fn uncached_token(
    http: &reqwest::Client,
    cloud: &Cloud,
    tenant_id: &str,
    client_id: &str,
    credential: ClientCredential,
    scope: &str,
    deadline: Deadline,
) -> Result<AccessToken, AzureError> {
    let fetcher = EntraFetcher {
        cloud: cloud.clone(),
        tenant_id: tenant_id.to_owned(),
        client_id: client_id.to_owned(),
        credential,
        http: http.clone(),
        policy: RetryPolicy::default(),
    };
    fetcher.fetch(scope, deadline).await
}

/// Calls `verify` until it succeeds, fails for another reason than `not_yet_valid`, or
/// `deadline` passes (then the last error is returned inside
/// [`AzureError::DeadlineExceeded`], naming `operation`). Waits `poll` (with back-off and
/// jitter) between attempts.
async fn wait_until_valid<F, Fut>(
    operation: &str,
    not_yet_valid: fn(&AzureError) -> bool,
    poll: Duration,
    deadline: Deadline,
    mut verify: F,
) -> Result<(), AzureError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AzureError>>,
{
    let policy = RetryPolicy {
        initial_backoff: poll,
        max_backoff: poll * 4,
        ..RetryPolicy::default()
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match verify().await {
            Ok(()) => return Ok(()),
            Err(e) if not_yet_valid(&e) => {
                if !sleep_within(deadline, policy.backoff(attempt)).await {
                    return Err(AzureError::deadline(operation, Some(e)));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Requests a token with a client secret, bypassing every cache: the engine proves a new
/// secret works before handing it out.
///
/// Entra ID can refuse a secret (or application) made seconds ago; such a failure has
/// [`AzureError::is_credential_not_yet_valid`] (AADSTS7000215 / AADSTS700016) and is worth
/// retrying until a deadline (see [`wait_for_client_secret`]). Transient failures (5xx,
/// 429, connection errors) are retried inside, within `deadline`.
pub async fn verify_client_secret(
    http: &reqwest::Client,
    cloud: &Cloud,
    tenant_id: &str,
    client_id: &str,
    secret: &SecretString,
    scope: &str,
    deadline: Deadline,
) -> Result<(), AzureError> {
    let credential = ClientCredential::Secret(secret.clone());
    uncached_token(
        http, cloud, tenant_id, client_id, credential, scope, deadline,
    )
    .await
    .map(|_| ())
}

/// Requests an access token for `scope` with a client secret, bypassing every cache (the
/// engine hands such tokens out for static roles). Transient failures are retried inside,
/// within `deadline`.
pub async fn client_secret_token(
    http: &reqwest::Client,
    cloud: &Cloud,
    tenant_id: &str,
    client_id: &str,
    secret: &SecretString,
    scope: &str,
    deadline: Deadline,
) -> Result<AccessToken, AzureError> {
    let credential = ClientCredential::Secret(secret.clone());
    uncached_token(
        http, cloud, tenant_id, client_id, credential, scope, deadline,
    )
    .await
}

/// Requests an access token for `scope` with a client certificate (a freshly signed client
/// assertion), bypassing every cache (the engine hands such tokens out for static roles).
/// Transient failures are retried inside, within `deadline`.
pub async fn client_certificate_token(
    http: &reqwest::Client,
    cloud: &Cloud,
    tenant_id: &str,
    client_id: &str,
    certificate: &Arc<super::certificate::ClientCertificate>,
    scope: &str,
    deadline: Deadline,
) -> Result<AccessToken, AzureError> {
    let credential = ClientCredential::Certificate(certificate.clone());
    uncached_token(
        http, cloud, tenant_id, client_id, credential, scope, deadline,
    )
    .await
}

/// Calls [`verify_client_secret`] until it succeeds, fails for another reason than
/// "not yet valid", or `deadline` passes (then the last error is returned inside
/// [`AzureError::DeadlineExceeded`]). Waits `poll` (with jitter) between attempts.
#[allow(clippy::too_many_arguments)]
pub async fn wait_for_client_secret(
    http: &reqwest::Client,
    cloud: &Cloud,
    tenant_id: &str,
    client_id: &str,
    secret: &SecretString,
    scope: &str,
    poll: Duration,
    deadline: Deadline,
) -> Result<(), AzureError> {
    wait_until_valid(
        "verify client secret",
        AzureError::is_credential_not_yet_valid,
        poll,
        deadline,
        || verify_client_secret(http, cloud, tenant_id, client_id, secret, scope, deadline),
    )
    .await
}

/// Requests a token with a client certificate (a freshly signed client assertion),
/// bypassing every cache: the engine proves a new certificate works before handing it out.
/// Failures are classified like [`verify_client_secret`]'s.
pub async fn verify_client_certificate(
    http: &reqwest::Client,
    cloud: &Cloud,
    tenant_id: &str,
    client_id: &str,
    certificate: &Arc<super::certificate::ClientCertificate>,
    scope: &str,
    deadline: Deadline,
) -> Result<(), AzureError> {
    let credential = ClientCredential::Certificate(certificate.clone());
    uncached_token(
        http, cloud, tenant_id, client_id, credential, scope, deadline,
    )
    .await
    .map(|_| ())
}

/// Calls [`verify_client_certificate`] until it succeeds, fails for another reason than
/// "not yet valid" ([`AzureError::is_certificate_not_yet_valid`]), or `deadline` passes.
#[allow(clippy::too_many_arguments)]
pub async fn wait_for_client_certificate(
    http: &reqwest::Client,
    cloud: &Cloud,
    tenant_id: &str,
    client_id: &str,
    certificate: &Arc<super::certificate::ClientCertificate>,
    scope: &str,
    poll: Duration,
    deadline: Deadline,
) -> Result<(), AzureError> {
    wait_until_valid(
        "verify client certificate",
        AzureError::is_certificate_not_yet_valid,
        poll,
        deadline,
        || {
            verify_client_certificate(
                http,
                cloud,
                tenant_id,
                client_id,
                certificate,
                scope,
                deadline,
            )
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingFetcher {
        calls: AtomicUsize,
        lifetime: Duration,
    }

    #[async_trait]
    impl TokenFetcher for Arc<CountingFetcher> {
        async fn fetch(&self, scope: &str, _deadline: Deadline) -> Result<AccessToken, AzureError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(AccessToken {
                token: SecretString::new(format!("{scope}-{n}")),
                expires_at: SystemTime::now() + self.lifetime,
            })
        }
        fn kind(&self) -> &'static str {
            "test"
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_per_scope() {
        let f = Arc::new(CountingFetcher {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(3600),
        });
        let src = Arc::new(CachingTokenSource::new(Box::new(f.clone())));
        let deadline = Deadline::after(Duration::from_secs(5));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let s = src.clone();
            tasks.push(tokio::spawn(async move { s.token("a", deadline).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().token.expose(), "a-1");
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        src.token("b", deadline).await.unwrap();
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
        src.invalidate("a");
        assert_eq!(
            src.token("a", deadline).await.unwrap().token.expose(),
            "a-3"
        );
    }

    #[tokio::test]
    async fn short_lived_tokens_are_refreshed_at_half_life() {
        let f = Arc::new(CountingFetcher {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(2),
        });
        let src = CachingTokenSource::new(Box::new(f.clone()));
        let deadline = Deadline::after(Duration::from_secs(10));
        src.token("a", deadline).await.unwrap();
        src.token("a", deadline).await.unwrap();
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        src.token("a", deadline).await.unwrap();
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn token_response_typing() {
        let t = parse_token_response(
            "op",
            Service::Token,
            br#"{"access_token":"x","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert!(t.expires_at > SystemTime::now() + Duration::from_secs(3500));
        let t = parse_token_response(
            "op",
            Service::ManagedIdentity,
            br#"{"access_token":"x","expires_in":"86399","expires_on":"4102444800"}"#,
        )
        .unwrap();
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(4102444800));
        let e = parse_token_response("op", Service::Token, br#"{"access_token":"sekrit"}"#)
            .unwrap_err();
        assert!(!e.to_string().contains("sekrit"));
        let e = parse_token_response("op", Service::Token, br#"{"access_token":"sekrit","#)
            .unwrap_err();
        assert!(!e.to_string().contains("sekrit"));
    }

    #[test]
    fn entra_error_codes() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"trace_id":"tid"}"#;
        let e = parse_entra_error(
            "op",
            reqwest::StatusCode::UNAUTHORIZED,
            &reqwest::header::HeaderMap::new(),
            body,
        );
        assert_eq!(e.code.as_deref(), Some("AADSTS7000215"));
        assert_eq!(e.request_id.as_deref(), Some("tid"));
        assert!(AzureError::Service(Box::new(e)).is_credential_not_yet_valid());
    }

    #[tokio::test]
    async fn file_assertion_reads_trims_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  jwt.value.sig\n").unwrap();
        let d = Deadline::after(Duration::from_secs(1));
        assert_eq!(
            FileAssertion::new(&p).assertion(d).await.unwrap().expose(),
            "jwt.value.sig"
        );
        std::fs::write(&p, vec![b'a'; 70 * 1024]).unwrap();
        assert!(FileAssertion::new(&p).assertion(d).await.is_err());
        assert!(FileAssertion::new(dir.path().join("none"))
            .assertion(d)
            .await
            .is_err());
    }

    #[test]
    fn permission_denied_mentions_himds() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let inner: azure_core::Error = io.into();
        let outer = azure_core::Error::with_error(
            azure_core::error::ErrorKind::Credential,
            inner,
            "ManagedIdentityCredential authentication failed",
        );
        let e = map_sdk_error("op", Service::ManagedIdentity, outer).to_string();
        assert!(e.contains("himds"), "{e}");
    }
}
