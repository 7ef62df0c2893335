//! Error types: the process-level [`EmulatorError`] and the wire error shapes of each
//! emulated service (token service, Microsoft Graph, ARM, managed-identity endpoints).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{json, Value};

use super::server::current_request;

/// Errors that stop the emulator from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("invalid argument: {0}")]
    Args(String),
    #[error("i/o error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid seed file: {0}")]
    Seed(String),
    #[error("crypto provider unavailable: {0}")]
    Crypto(String),
}

impl EmulatorError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        EmulatorError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Which emulated service a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Token,
    Graph,
    Arm,
    Arc,
    Imds,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Token => "token",
            Service::Graph => "graph",
            Service::Arm => "arm",
            Service::Arc => "arc",
            Service::Imds => "imds",
        }
    }
}

fn status_or_500(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn set_retry_after(resp: &mut Response, retry_after: Option<u64>) {
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
}

/// Entra ID token-service error (`AADSTS` shape).
#[derive(Debug, Clone)]
pub struct AadError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl AadError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        text: impl Into<String>,
    ) -> Self {
        AadError {
            status,
            error,
            code,
            description: text.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for AadError {
    fn into_response(self) -> Response {
        let ctx = current_request();
        let now = Utc::now();
        let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            self.code,
            self.description,
            ctx.request_id,
            ctx.correlation_id,
            now.format("%Y-%m-%d %H:%M:%S%.3fZ")
        );
        let body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": ctx.request_id,
            "correlation_id": ctx.correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        let mut resp = json_response(self.status, body);
        set_retry_after(&mut resp, self.retry_after);
        resp
    }
}

/// Microsoft Graph error envelope.
#[derive(Debug, Clone)]
pub struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Vec<(String, String, String)>,
    pub retry_after: Option<u64>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn with_detail(mut self, code: &str, message: &str, target: &str) -> Self {
        self.details
            .push((code.to_string(), message.to_string(), target.to_string()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        GraphError::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    pub fn not_found(id: &str) -> Self {
        GraphError::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    pub fn denied() -> Self {
        GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    pub fn unauthorized(message: &str) -> Self {
        GraphError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }

    pub fn invalid_json() -> Self {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    }

    /// The generic error for an injected or otherwise status-only failure.
    pub fn for_status(status: u16, retry_after: Option<u64>) -> Self {
        let (code, message) = match status {
            400 => ("BadRequest", "The request is invalid."),
            401 => (
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            ),
            403 => (
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
            404 => (
                "Request_ResourceNotFound",
                "The requested resource does not exist.",
            ),
            409 => (
                "Request_MultipleObjectsWithSameKeyValue",
                "Another object with the same value for property exists.",
            ),
            429 => ("TooManyRequests", "Please retry again later."),
            502 => ("badGateway", "The service is unreachable."),
            503 => (
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry later.",
            ),
            504 => ("gatewayTimeout", "The request timed out."),
            _ => ("generalException", "An unexpected error occurred."),
        };
        let mut e = GraphError::new(status_or_500(status), code, message);
        e.retry_after = retry_after;
        e
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let ctx = current_request();
        let date = Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
        let mut inner = json!({
            "date": date,
            "request-id": ctx.request_id,
            "client-request-id": ctx.client_request_id,
        });
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            inner["code"] = json!("429");
            inner["status"] = json!("429");
            inner["message"] = json!("Please retry again later.");
        }
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "innerError": inner,
        });
        if !self.details.is_empty() {
            error["details"] = Value::Array(
                self.details
                    .iter()
                    .map(|(c, m, t)| json!({"code": c, "message": m, "target": t}))
                    .collect(),
            );
        }
        let mut resp = json_response(self.status, json!({ "error": error }));
        set_retry_after(&mut resp, self.retry_after);
        resp
    }
}

/// Azure Resource Manager error envelope.
#[derive(Debug, Clone)]
pub struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
    pub www_authenticate: Option<String>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ArmError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    pub fn for_status(status: u16, retry_after: Option<u64>) -> Self {
        let (code, message) = match status {
            400 => ("BadRequest".to_string(), "The request is invalid.".to_string()),
            401 => (
                "InvalidAuthenticationToken".to_string(),
                "The access token is invalid.".to_string(),
            ),
            403 => (
                "AuthorizationFailed".to_string(),
                "The client does not have authorization to perform this action.".to_string(),
            ),
            404 => ("NotFound".to_string(), "The resource was not found.".to_string()),
            409 => ("Conflict".to_string(), "The request conflicts with the state of the resource.".to_string()),
            429 => (
                "SubscriptionRequestsThrottled".to_string(),
                format!(
                    "Number of requests for the subscription exceeded. Please try again after '{}' seconds.",
                    retry_after.unwrap_or(1)
                ),
            ),
            502 => ("BadGateway".to_string(), "The gateway did not receive a response in time.".to_string()),
            503 => ("ServiceUnavailable".to_string(), "The service is temporarily unavailable. Please retry later.".to_string()),
            504 => ("GatewayTimeout".to_string(), "The gateway did not receive a response within the specified time period.".to_string()),
            _ => ("InternalServerError".to_string(), "An internal error occurred while processing the request.".to_string()),
        };
        let mut e = ArmError::new(status_or_500(status), &code, message);
        e.retry_after = retry_after;
        e
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = json_response(self.status, body);
        set_retry_after(&mut resp, self.retry_after);
        if let Some(challenge) = self.www_authenticate {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// Managed-identity endpoint error (`{"error", "error_description"}`).
#[derive(Debug, Clone)]
pub struct MiError {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl MiError {
    pub fn new(status: StatusCode, error: &str, description: impl Into<String>) -> Self {
        MiError {
            status,
            error: error.to_string(),
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn for_status(status: u16, retry_after: Option<u64>) -> Self {
        let (error, description) = match status {
            400 => ("invalid_request", "The request is invalid."),
            401 => ("unauthorized_client", "The request is not authorized."),
            404 => ("not_found", "The identity endpoint is being updated."),
            410 => (
                "gone",
                "The identity endpoint is being updated. Try again later.",
            ),
            429 => ("too_many_requests", "Too many requests."),
            _ => ("unknown", "Failed to get a token from Entra ID."),
        };
        let mut e = MiError::new(status_or_500(status), error, description);
        e.retry_after = retry_after;
        e
    }
}

impl IntoResponse for MiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut resp = json_response(self.status, body);
        set_retry_after(&mut resp, self.retry_after);
        resp
    }
}

/// Builds the response for an injected status fault, in the shape of `service`.
pub fn fault_response(service: Service, status: u16, retry_after: Option<u64>) -> Response {
    match service {
        Service::Token => {
            if status == 429 {
                let mut resp = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                set_retry_after(&mut resp, retry_after.or(Some(60)));
                return resp;
            }
            let (error, code, text): (&'static str, u32, &str) = match status {
                400 => ("invalid_request", 900144, "The request is invalid."),
                401 => ("invalid_client", 7000215, "Invalid client secret provided."),
                503 | 504 => (
                    "temporarily_unavailable",
                    90033,
                    "A transient error has occurred. Please try again.",
                ),
                _ => (
                    "server_error",
                    50000,
                    "There was an error issuing a token or an issue with our sign-in service.",
                ),
            };
            let mut e = AadError::new(status_or_500(status), error, code, text);
            e.retry_after = retry_after;
            e.into_response()
        }
        Service::Graph => GraphError::for_status(status, retry_after).into_response(),
        Service::Arm => ArmError::for_status(status, retry_after).into_response(),
        Service::Arc | Service::Imds => MiError::for_status(status, retry_after).into_response(),
    }
}
