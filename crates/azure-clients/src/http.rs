//! HTTP plumbing: the reqwest client (trust store, loopback-http rule) and the
//! authenticated, retrying request sender shared by the Graph and ARM clients.

use super::credential::TokenSource;
use super::error::{is_retryable_status, AzureError, Service, ServiceError};
use super::retry::{retry_after, sleep_within, Deadline, RetryPolicy};
use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// Largest CA bundle read from `SSL_CERT_FILE`.
const MAX_CA_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;
/// Shortest wait after a 429/503, whatever `Retry-After` says.
const MIN_THROTTLE_DELAY: Duration = Duration::from_millis(100);
/// Longest service message kept in an error (bodies can be large HTML pages).
const MAX_MESSAGE_CHARS: usize = 1000;

/// Accepts `https://` URLs, and `http://` only when the host is a loopback address
/// (`127.0.0.0/8`, `::1`, `localhost`).
pub fn validate_endpoint(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url) => {}
        "http" => {
            return Err(format!(
                "plain http is only allowed for loopback addresses, not '{url}'"
            ))
        }
        other => return Err(format!("unsupported URL scheme '{other}' in '{url}'")),
    }
    if url.host().is_none() {
        return Err(format!("URL '{url}' has no host"));
    }
    Ok(())
}

/// True when the URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Builds the HTTP client used for Entra ID, Graph and ARM (and handed to azure_identity
/// as its transport).
///
/// TLS trusts the system roots plus every certificate in the PEM bundle `ca_bundle`
/// (normally the value of `SSL_CERT_FILE`; the system bundle is then also loaded
/// explicitly, because the platform loader would let `SSL_CERT_FILE` replace it). Redirects are not followed. Proxies come from
/// the usual `HTTPS_PROXY` / `NO_PROXY` variables.
pub fn build_http_client(ca_bundle: Option<&Path>) -> Result<reqwest::Client, AzureError> {
    builder(ca_bundle)?
        .build()
        .map_err(|e| AzureError::config(format!("cannot build the HTTP client: {e}")))
}

/// Like [`build_http_client`] but never uses a proxy (managed-identity endpoints must be
/// reached directly).
pub fn build_direct_http_client(ca_bundle: Option<&Path>) -> Result<reqwest::Client, AzureError> {
    builder(ca_bundle)?
        .no_proxy()
        .build()
        .map_err(|e| AzureError::config(format!("cannot build the HTTP client: {e}")))
}

/// Where Linux distributions keep the system CA bundle (OpenSSL's usual locations).
const SYSTEM_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system CA bundle, read explicitly: the platform verifier's loader replaces the
/// system store with `SSL_CERT_FILE` when that variable is set, but the contract here is
/// "system roots plus that bundle".
fn system_roots() -> Vec<reqwest::Certificate> {
    for path in SYSTEM_BUNDLES {
        let path = Path::new(path);
        if path.is_file() {
            match load_ca_bundle(path) {
                Ok(certs) => return certs,
                Err(e) => tracing::debug!(error = %e, "skipping system CA bundle"),
            }
        }
    }
    Vec::new()
}

fn builder(ca_bundle: Option<&Path>) -> Result<reqwest::ClientBuilder, AzureError> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!(
            "vault-plugin-secrets-azure/",
            env!("CARGO_PKG_VERSION")
        ))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_bundle {
        let extra = load_ca_bundle(path)?;
        b = b.tls_certs_merge(system_roots()).tls_certs_merge(extra);
    }
    Ok(b)
}

fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, AzureError> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| AzureError::config(format!("SSL_CERT_FILE '{shown}': {e}")))?;
    if meta.len() > MAX_CA_BUNDLE_BYTES {
        return Err(AzureError::config(format!(
            "SSL_CERT_FILE '{shown}' is larger than {MAX_CA_BUNDLE_BYTES} bytes"
        )));
    }
    let pem = std::fs::read(path)
        .map_err(|e| AzureError::config(format!("SSL_CERT_FILE '{shown}': {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        AzureError::config(format!(
            "SSL_CERT_FILE '{shown}' is not a PEM certificate bundle: {e}"
        ))
    })?;
    if certs.is_empty() {
        return Err(AzureError::config(format!(
            "SSL_CERT_FILE '{shown}' holds no certificate"
        )));
    }
    Ok(certs)
}

/// A successful response, fully read.
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl ApiResponse {
    pub fn json<T: DeserializeOwned>(
        &self,
        operation: &str,
        service: Service,
    ) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            AzureError::invalid_response(operation, service, format!("cannot decode the body: {e}"))
        })
    }
}

/// Whether a request may be replayed after an ambiguous failure (response lost or 5xx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// GET, PUT with a caller-chosen name, DELETE: replay freely.
    Idempotent,
    /// Creates: replay only when the service certainly did not process the request.
    NotIdempotent,
}

/// Sends authenticated JSON requests to one service with the retry rules of `retry.rs`.
#[derive(Clone)]
pub(crate) struct ServiceClient {
    pub http: reqwest::Client,
    pub tokens: Arc<dyn TokenSource>,
    pub scope: String,
    pub service: Service,
    pub policy: RetryPolicy,
}

impl ServiceClient {
    /// Sends `method url` with an optional JSON body. Returns the response for 2xx; an
    /// [`AzureError`] otherwise, after the retries the policy allows.
    pub async fn send(
        &self,
        operation: &str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        replay: Replay,
        deadline: Deadline,
    ) -> Result<ApiResponse, AzureError> {
        let mut attempts = 0u32;
        let mut throttled = 0u32;
        let mut refreshed_token = false;
        let mut last: Option<AzureError> = None;
        loop {
            if deadline.is_expired() {
                return Err(AzureError::deadline(operation, last));
            }
            attempts += 1;
            let token = self.tokens.token(&self.scope, deadline).await?;
            let client_request_id = uuid::Uuid::new_v4().to_string();
            let timeout = deadline.remaining().min(self.policy.attempt_timeout);
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.token.expose())
                .header(ACCEPT, "application/json")
                .header("client-request-id", &client_request_id)
                .header("x-ms-client-request-id", &client_request_id)
                .timeout(timeout);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let started = tokio::time::Instant::now();
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    resp.bytes().await.map(|b| (status, headers, b))
                }
                Err(e) => Err(e),
            };
            let (status, headers, bytes) = match outcome {
                Ok(v) => v,
                Err(e) => {
                    let connect = e.is_connect();
                    tracing::debug!(
                        service = %self.service,
                        method = %method,
                        path = url.path(),
                        attempt = attempts,
                        error = %e,
                        "azure request failed"
                    );
                    let err = AzureError::transport(operation, self.service, e);
                    let may_replay = connect || replay == Replay::Idempotent;
                    if may_replay
                        && attempts < self.policy.max_attempts
                        && sleep_within(deadline, self.policy.backoff(attempts)).await
                    {
                        last = Some(err);
                        continue;
                    }
                    if deadline.is_expired() {
                        return Err(AzureError::deadline(operation, Some(err)));
                    }
                    return Err(err);
                }
            };
            let request_id = request_id_from_headers(&headers);
            tracing::debug!(
                service = %self.service,
                method = %method,
                path = url.path(),
                status = status.as_u16(),
                request_id = request_id.as_deref().unwrap_or(""),
                attempt = attempts,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "azure request"
            );
            if status.is_success() {
                return Ok(ApiResponse {
                    status: status.as_u16(),
                    body: bytes,
                });
            }
            let err = parse_service_error(operation, self.service, status, &headers, &bytes);
            let retry_delay = err.retry_after;
            let err = AzureError::Service(Box::new(err));

            if status == StatusCode::UNAUTHORIZED && !refreshed_token {
                // Expired or revoked token: fetch a new one once.
                refreshed_token = true;
                self.tokens.invalidate(&self.scope);
                last = Some(err);
                continue;
            }
            let code = status.as_u16();
            if code == 429 || code == 503 {
                throttled += 1;
                let delay = match retry_delay {
                    Some(d) if d > self.policy.max_retry_after => return Err(err),
                    // Never hammer a throttled service, even when told "0".
                    Some(d) => d.max(MIN_THROTTLE_DELAY),
                    None => self.policy.backoff(throttled),
                };
                if throttled < self.policy.max_throttled_attempts
                    && sleep_within(deadline, delay).await
                {
                    last = Some(err);
                    continue;
                }
                return Err(err);
            }
            if is_retryable_status(code) && replay == Replay::Idempotent {
                let delay = retry_delay.unwrap_or_else(|| self.policy.backoff(attempts));
                if attempts < self.policy.max_attempts
                    && delay <= self.policy.max_retry_after
                    && sleep_within(deadline, delay).await
                {
                    last = Some(err);
                    continue;
                }
            }
            return Err(err);
        }
    }
}

fn request_id_from_headers(headers: &HeaderMap) -> Option<String> {
    ["request-id", "x-ms-request-id"]
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<serde_json::Value>,
    details: Option<serde_json::Value>,
    #[serde(rename = "innerError", alias = "innererror")]
    inner_error: Option<serde_json::Value>,
}

/// Parses a Graph or ARM error response (lenient: `message` may be a string or
/// `{"value": ...}`, `details` an array or a single object, the body may not be JSON).
pub(crate) fn parse_service_error(
    operation: &str,
    service: Service,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ServiceError {
    let mut err = ServiceError {
        operation: operation.to_owned(),
        service,
        status: status.as_u16(),
        code: None,
        detail_codes: Vec::new(),
        message: String::new(),
        request_id: request_id_from_headers(headers),
        retry_after: retry_after(headers),
    };
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error: Some(e) }) => {
            err.code = e.code;
            err.message = match e.message {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Object(o)) => o
                    .get("value")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            };
            let details = match e.details {
                Some(serde_json::Value::Array(a)) => a,
                Some(o @ serde_json::Value::Object(_)) => vec![o],
                _ => Vec::new(),
            };
            err.detail_codes = details
                .iter()
                .filter_map(|d| d.get("code").and_then(|c| c.as_str()).map(str::to_owned))
                .collect();
            if err.request_id.is_none() {
                err.request_id = e
                    .inner_error
                    .as_ref()
                    .and_then(|i| i.get("request-id"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
            }
        }
        _ => {
            err.message = String::from_utf8_lossy(body).trim().to_owned();
            if err.message.is_empty() {
                err.message = status.canonical_reason().unwrap_or_default().to_owned();
            }
        }
    }
    if err.message.chars().count() > MAX_MESSAGE_CHARS {
        err.message = err
            .message
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect::<String>()
            + "…";
    }
    err
}

/// Percent-encodes everything but RFC 3986 unreserved characters (spaces become `%20`).
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An OData string literal: single-quoted, inner quotes doubled.
pub(crate) fn odata_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `base` with the `/`-separated `path` appended segment by segment (each segment
/// percent-encoded, empty segments dropped, so duplicate slashes collapse).
pub(crate) fn join_path(base: &Url, path: &str) -> Result<Url, AzureError> {
    let mut url = base.clone();
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|_| AzureError::config(format!("'{base}' cannot be a base URL")))?;
        segs.pop_if_empty();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            segs.push(seg);
        }
    }
    Ok(url)
}

/// Sets the query to the given already-unencoded pairs (values percent-encoded here).
pub(crate) fn set_query(url: &mut Url, pairs: &[(&str, &str)]) {
    let q = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", k, encode_component(v)))
        .collect::<Vec<_>>()
        .join("&");
    url.set_query(Some(&q));
}

/// True when `next` may receive this service's bearer token: same scheme, host and port
/// as `base`.
pub(crate) fn same_origin(base: &Url, next: &Url) -> bool {
    base.scheme() == next.scheme()
        && base.host_str() == next.host_str()
        && base.port_or_known_default() == next.port_or_known_default()
}

/// Deserializes `null` or a missing field as `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Deserializes an ISO 8601 date-time leniently (RFC 3339, or without offset meaning
/// UTC); unparsable or null gives `None`.
pub(crate) fn lenient_datetime<'de, D>(
    d: D,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&chrono::Utc)));
    }
    Ok(
        chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn url_helpers() {
        assert_eq!(
            encode_component("roleName eq 'A b'"),
            "roleName%20eq%20%27A%20b%27"
        );
        assert_eq!(odata_literal("O'Brien"), "'O''Brien'");
        let base = Url::parse("https://127.0.0.1:1/v1.0").unwrap();
        let u = join_path(&base, "groups/g1/members/$ref").unwrap();
        assert_eq!(
            u.as_str(),
            "https://127.0.0.1:1/v1.0/groups/g1/members/$ref"
        );
        let arm = Url::parse("https://127.0.0.1:2").unwrap();
        let u = join_path(&arm, "//subscriptions/s//resourceGroups/a b/").unwrap();
        assert_eq!(
            u.as_str(),
            "https://127.0.0.1:2/subscriptions/s/resourceGroups/a%20b"
        );
        assert!(same_origin(
            &base,
            &Url::parse("https://127.0.0.1:1/x?$skiptoken=1").unwrap()
        ));
        assert!(!same_origin(
            &base,
            &Url::parse("https://evil.example/x").unwrap()
        ));
        assert!(!same_origin(
            &base,
            &Url::parse("http://127.0.0.1:1/x").unwrap()
        ));
    }

    #[test]
    fn endpoint_rule() {
        let ok = |s: &str| validate_endpoint(&Url::parse(s).unwrap()).is_ok();
        assert!(ok("https://graph.microsoft.com"));
        assert!(ok("http://127.0.0.1:8080"));
        assert!(ok("http://[::1]:8080"));
        assert!(ok("http://LOCALHOST:1"));
        assert!(!ok("http://169.254.169.254"));
        assert!(!ok("http://graph.microsoft.com"));
        assert!(!ok("file:///etc/passwd"));
    }

    #[test]
    fn parses_graph_error_envelope() {
        let mut h = HeaderMap::new();
        h.insert("request-id", HeaderValue::from_static("rid"));
        h.insert("retry-after", HeaderValue::from_static("3"));
        let body = br#"{"error":{"code":"Request_BadRequest","message":"The appId 'x' of the service principal does not reference a valid application object.","details":[{"code":"NoBackingApplicationObject","message":"m","target":"appId"}],"innerError":{"request-id":"inner"}}}"#;
        let e = parse_service_error(
            "create service principal",
            Service::Graph,
            StatusCode::BAD_REQUEST,
            &h,
            body,
        );
        assert_eq!(e.code.as_deref(), Some("Request_BadRequest"));
        assert_eq!(
            e.detail_codes,
            vec!["NoBackingApplicationObject".to_string()]
        );
        assert_eq!(e.request_id.as_deref(), Some("rid"));
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert!(AzureError::Service(Box::new(e)).is_no_backing_application());
    }

    #[test]
    fn parses_lenient_and_plain_bodies() {
        let h = HeaderMap::new();
        let body = br#"{"error":{"code":"X","message":{"lang":"en","value":"old style"},"details":{"code":"D"},"innerError":{"request-id":"inner"}}}"#;
        let e = parse_service_error("op", Service::Graph, StatusCode::BAD_REQUEST, &h, body);
        assert_eq!(e.message, "old style");
        assert_eq!(e.detail_codes, vec!["D".to_string()]);
        assert_eq!(e.request_id.as_deref(), Some("inner"));

        let e = parse_service_error(
            "op",
            Service::Token,
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            b"Too Many Requests",
        );
        assert_eq!(e.message, "Too Many Requests");
        assert_eq!(e.code, None);
        let e = parse_service_error("op", Service::Arm, StatusCode::BAD_GATEWAY, &h, b"");
        assert_eq!(e.message, "Bad Gateway");
    }

    #[test]
    fn ca_bundle_errors_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(build_http_client(Some(&missing)).is_err());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = build_http_client(Some(&junk)).unwrap_err().to_string();
        assert!(e.contains("SSL_CERT_FILE"), "{e}");
        assert!(build_http_client(None).is_ok());
    }
}
