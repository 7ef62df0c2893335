//! The error type of the Azure clients and its classification predicates.
//!
//! Classification is by HTTP status and by the service's error code (Graph and ARM
//! `error.code`, Entra `AADSTS` numbers), never by free text, except where Graph uses a
//! generic code and only a stable message fragment tells cases apart (documented at each
//! predicate). No variant ever holds a secret: messages come from the services' error
//! bodies, which never echo credentials, and from this crate's own wording.

use std::fmt;
use std::time::Duration;

/// Which remote service produced a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// The Entra ID token endpoint (`{authority}/{tenant}/oauth2/v2.0/token`).
    Token,
    /// A managed-identity endpoint (VM IMDS, Azure Arc, App Service).
    ManagedIdentity,
    /// Microsoft Graph.
    Graph,
    /// Azure Resource Manager.
    Arm,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Token => "Entra ID token endpoint",
            Service::ManagedIdentity => "managed identity endpoint",
            Service::Graph => "Microsoft Graph",
            Service::Arm => "Azure Resource Manager",
        })
    }
}

/// An error response from a service: status, error code, message and request id.
#[derive(Clone, Debug)]
pub struct ServiceError {
    /// What the client was doing, e.g. `create role assignment`.
    pub operation: String,
    /// The service that answered.
    pub service: Service,
    /// HTTP status code.
    pub status: u16,
    /// The service's error code: Graph/ARM `error.code`; for the token endpoint
    /// `AADSTS<n>` when the body carries `error_codes`, else the OAuth `error` field.
    pub code: Option<String>,
    /// Codes found in Graph/ARM `error.details[].code` (e.g. `NoBackingApplicationObject`).
    pub detail_codes: Vec<String>,
    /// The service's message (Entra `error_description`, Graph/ARM `error.message`).
    pub message: String,
    /// The request id the service assigned (`request-id`, `x-ms-request-id`, `trace_id`).
    pub request_id: Option<String>,
    /// The delay the service asked for (`Retry-After` and friends), if any.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} returned HTTP {}",
            self.operation, self.service, self.status
        )?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// Errors of the Azure clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// The service answered with an error status.
    #[error("{0}")]
    Service(Box<ServiceError>),

    /// The request could not be sent or its response not read.
    #[error("{operation}: request to {service} failed: {detail}")]
    Transport {
        /// What the client was doing.
        operation: String,
        /// The service that was called.
        service: Service,
        /// True when the connection was never established (safe to replay any request).
        connect: bool,
        /// The error and its causes, joined with `: ` (no URL).
        detail: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },

    /// The call's deadline passed before it could complete.
    #[error("{operation}: deadline exceeded{}", last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    DeadlineExceeded {
        /// What the client was doing.
        operation: String,
        /// The last error seen before the deadline, if any.
        last: Option<Box<AzureError>>,
    },

    /// Obtaining a token failed for a reason other than an error response
    /// (bad local configuration, unreadable Arc key file, SDK error).
    #[error("{operation}: {message}")]
    Credential {
        /// What the client was doing.
        operation: String,
        /// Description (never contains a secret).
        message: String,
    },

    /// Invalid settings (cloud name, endpoint URL, missing tenant, ...).
    #[error("{0}")]
    Config(String),

    /// An invalid argument given by the caller.
    #[error("{operation}: {message}")]
    InvalidInput {
        /// What the client was doing.
        operation: String,
        /// What is wrong.
        message: String,
    },

    /// A success response that could not be understood.
    #[error("{operation}: unexpected response from {service}: {message}")]
    InvalidResponse {
        /// What the client was doing.
        operation: String,
        /// The service that answered.
        service: Service,
        /// What is wrong with it.
        message: String,
    },

    /// A lookup by name found nothing.
    #[error("no {kind} found with name '{name}'")]
    NoMatch {
        /// `group` or `role definition`.
        kind: &'static str,
        /// The name looked up.
        name: String,
    },

    /// A lookup by name found more than one object.
    #[error("multiple matches ({count}) found for {kind} name '{name}'")]
    MultipleMatches {
        /// `group` or `role definition`.
        kind: &'static str,
        /// The name looked up.
        name: String,
        /// How many matched.
        count: usize,
    },
}

/// A credential write refused by a tenant's app management policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyViolation {
    /// The credential type is blocked (e.g. `passwordAddition`).
    CredentialTypeNotAllowed {
        /// The policy named by Graph, if its message carried one.
        policy_id: Option<String>,
    },
    /// The credential outlives the policy's maximum lifetime.
    InvalidLifetime {
        /// The policy named by Graph, if its message carried one.
        policy_id: Option<String>,
    },
    /// Another restriction of the policy.
    Other {
        /// The policy named by Graph, if its message carried one.
        policy_id: Option<String>,
    },
}

/// Statuses worth another attempt for an idempotent request (Azure SDK defaults).
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

impl AzureError {
    /// A configuration error: the settings cannot work as given.
    pub fn config(message: impl Into<String>) -> Self {
        AzureError::Config(message.into())
    }

    pub(crate) fn transport(
        operation: impl Into<String>,
        service: Service,
        e: reqwest::Error,
    ) -> Self {
        let source = e.without_url();
        let mut detail = source.to_string();
        let mut cause = std::error::Error::source(&source);
        while let Some(c) = cause {
            let text = c.to_string();
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            cause = c.source();
        }
        AzureError::Transport {
            operation: operation.into(),
            service,
            connect: source.is_connect(),
            detail,
            source,
        }
    }

    pub(crate) fn credential(operation: impl Into<String>, message: impl Into<String>) -> Self {
        AzureError::Credential {
            operation: operation.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_input(operation: impl Into<String>, message: impl Into<String>) -> Self {
        AzureError::InvalidInput {
            operation: operation.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_response(
        operation: impl Into<String>,
        service: Service,
        message: impl Into<String>,
    ) -> Self {
        AzureError::InvalidResponse {
            operation: operation.into(),
            service,
            message: message.into(),
        }
    }

    pub(crate) fn deadline(operation: impl Into<String>, last: Option<AzureError>) -> Self {
        AzureError::DeadlineExceeded {
            operation: operation.into(),
            last: last.map(Box::new),
        }
    }

    /// The service error, looking through [`AzureError::DeadlineExceeded`] to its last error.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            AzureError::Service(e) => Some(e),
            AzureError::DeadlineExceeded { last: Some(e), .. } => e.service_error(),
            _ => None,
        }
    }

    /// HTTP status of the service's answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.service_error().map(|e| e.status)
    }

    /// The service's error code (`Request_ResourceNotFound`, `PrincipalNotFound`,
    /// `AADSTS7000215`, ...).
    pub fn code(&self) -> Option<&str> {
        self.service_error().and_then(|e| e.code.as_deref())
    }

    /// The service's message, or this error's own text.
    pub fn message(&self) -> String {
        match self.service_error() {
            Some(e) => e.message.clone(),
            None => self.to_string(),
        }
    }

    /// The request id the service assigned, if known.
    pub fn request_id(&self) -> Option<&str> {
        self.service_error().and_then(|e| e.request_id.as_deref())
    }

    fn has_code(&self, wanted: &str) -> bool {
        self.service_error().is_some_and(|e| {
            e.code.as_deref() == Some(wanted) || e.detail_codes.iter().any(|c| c == wanted)
        })
    }

    fn message_contains(&self, fragment: &str) -> bool {
        self.service_error()
            .is_some_and(|e| e.message.to_ascii_lowercase().contains(fragment))
    }

    /// The object does not exist: HTTP 404 (Graph `Request_ResourceNotFound`, ARM
    /// `RoleAssignmentNotFound`, `RoleDefinitionDoesNotExist`, ...) or a lookup by name
    /// that found nothing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AzureError::NoMatch { .. })
            || self.status() == Some(404)
            || self.has_code("Request_ResourceNotFound")
            || self.has_code("RoleDefinitionDoesNotExist")
    }

    /// The request may have been carried out although no success came back: the connection
    /// broke after it was sent (a timeout included), or the service answered 408, 500, 502 or
    /// 504 (a gateway gave up, the service may not have). A creation that failed so can still
    /// appear later; a deadline that passed during such an attempt counts too.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            AzureError::Transport { connect, .. } => !connect,
            AzureError::Service(e) => matches!(e.status, 408 | 500 | 502 | 504),
            AzureError::DeadlineExceeded { last: Some(e), .. } => e.outcome_unknown(),
            _ => false,
        }
    }

    /// A lookup by name found several objects.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, AzureError::MultipleMatches { .. })
    }

    /// Another attempt may succeed: connection failures, timeouts and statuses 408, 429,
    /// 500, 502, 503, 504.
    pub fn is_retryable(&self) -> bool {
        match self {
            AzureError::Transport { .. } => true,
            AzureError::Service(e) => is_retryable_status(e.status),
            _ => false,
        }
    }

    /// The service throttled the caller (HTTP 429).
    pub fn is_throttled(&self) -> bool {
        self.status() == Some(429)
    }

    /// The caller lacks permission (HTTP 403).
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    /// The call ran out of time.
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, AzureError::DeadlineExceeded { .. })
    }

    /// ARM does not (yet) know the principal: 400 `PrincipalNotFound`.
    pub fn is_principal_not_found(&self) -> bool {
        self.has_code("PrincipalNotFound")
    }

    /// Graph does not (yet) see the application behind a new service principal:
    /// `NoBackingApplicationObject` (in `error.details`).
    pub fn is_no_backing_application(&self) -> bool {
        self.has_code("NoBackingApplicationObject")
    }

    /// The object already exists: ARM `RoleAssignmentExists`, Graph
    /// `Request_MultipleObjectsWithSameKeyValue`, or a group member that is already there
    /// (Graph's generic `Request_BadRequest` with "added object references already exist").
    pub fn is_already_exists(&self) -> bool {
        self.has_code("RoleAssignmentExists")
            || self.has_code("Request_MultipleObjectsWithSameKeyValue")
            || (self.status() == Some(400)
                && self.message_contains("added object references already exist"))
    }

    /// The application cannot hold more passwords: `TooManyAppPasswords` or
    /// `Directory_ResourceSizeExceeded`.
    pub fn is_too_many_passwords(&self) -> bool {
        self.has_code("TooManyAppPasswords") || self.has_code("Directory_ResourceSizeExceeded")
    }

    /// A freshly registered certificate (or application) that Entra ID does not accept
    /// yet: `AADSTS700027` (key not found), `AADSTS700016` or `AADSTS7000229`. Worth
    /// retrying for a bounded time right after registering the key credential.
    pub fn is_certificate_not_yet_valid(&self) -> bool {
        self.service_error().is_some_and(|e| {
            e.service == Service::Token
                && matches!(
                    e.code.as_deref(),
                    Some("AADSTS700027" | "AADSTS700016" | "AADSTS7000229")
                )
        })
    }

    /// Graph refused a credential because of an app management policy
    /// (`CredentialTypeNotAllowedAsPerAppPolicy`, `CredentialInvalidLifetimeAsPerAppPolicy`,
    /// or another code whose message says "as per assigned policy").
    pub fn policy_violation(&self) -> Option<PolicyViolation> {
        let e = self.service_error()?;
        if e.service != Service::Graph {
            return None;
        }
        let policy_id = e
            .message
            .split("policy '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .map(str::to_owned);
        match e.code.as_deref() {
            Some("CredentialTypeNotAllowedAsPerAppPolicy") => {
                Some(PolicyViolation::CredentialTypeNotAllowed { policy_id })
            }
            Some("CredentialInvalidLifetimeAsPerAppPolicy") => {
                Some(PolicyViolation::InvalidLifetime { policy_id })
            }
            _ if e.message.contains("as per assigned policy") => {
                Some(PolicyViolation::Other { policy_id })
            }
            _ => None,
        }
    }

    /// A freshly made secret or application that Entra ID does not accept yet:
    /// `AADSTS7000215` (invalid secret), `AADSTS700016` (unknown application) or
    /// `AADSTS7000229` (application without a service principal yet). Worth retrying for a
    /// bounded time right after `addPassword` / application creation; the same codes mean
    /// a wrong secret or client id otherwise.
    pub fn is_credential_not_yet_valid(&self) -> bool {
        self.service_error().is_some_and(|e| {
            e.service == Service::Token
                && matches!(
                    e.code.as_deref(),
                    Some("AADSTS7000215" | "AADSTS700016" | "AADSTS7000229")
                )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(service: Service, status: u16, code: &str, message: &str) -> AzureError {
        AzureError::Service(Box::new(ServiceError {
            operation: "op".into(),
            service,
            status,
            code: Some(code.into()),
            detail_codes: vec![],
            message: message.into(),
            request_id: Some("rid-1".into()),
            retry_after: None,
        }))
    }

    #[test]
    fn display_carries_code_message_and_request_id() {
        let e = svc(
            Service::Arm,
            400,
            "PrincipalNotFound",
            "Principal x does not exist",
        );
        let text = e.to_string();
        assert!(text.contains("HTTP 400"), "{text}");
        assert!(text.contains("PrincipalNotFound"), "{text}");
        assert!(text.contains("Principal x does not exist"), "{text}");
        assert!(text.contains("rid-1"), "{text}");
        assert!(e.is_principal_not_found());
        assert!(!e.is_retryable());
        assert_eq!(e.code(), Some("PrincipalNotFound"));
        assert_eq!(e.request_id(), Some("rid-1"));
    }

    #[test]
    fn predicates() {
        assert!(svc(Service::Graph, 404, "Request_ResourceNotFound", "").is_not_found());
        assert!(svc(Service::Graph, 429, "TooManyRequests", "").is_retryable());
        assert!(svc(Service::Graph, 503, "x", "").is_retryable());
        assert!(!svc(Service::Graph, 403, "Authorization_RequestDenied", "").is_retryable());
        assert!(svc(Service::Arm, 409, "RoleAssignmentExists", "").is_already_exists());
        assert!(svc(
            Service::Graph,
            400,
            "Request_BadRequest",
            "One or more added object references already exist for the following modified properties: 'members'."
        )
        .is_already_exists());
        assert!(svc(Service::Token, 401, "AADSTS7000215", "").is_credential_not_yet_valid());
        assert!(svc(Service::Token, 400, "AADSTS700016", "").is_credential_not_yet_valid());
        assert!(!svc(Service::Token, 401, "AADSTS7000222", "").is_credential_not_yet_valid());
        assert!(!svc(Service::Graph, 401, "AADSTS7000215", "").is_credential_not_yet_valid());
        let wrapped =
            AzureError::deadline("op", Some(svc(Service::Arm, 400, "PrincipalNotFound", "")));
        assert!(wrapped.is_principal_not_found());
        assert!(wrapped.is_deadline_exceeded());
        assert!(AzureError::NoMatch {
            kind: "group",
            name: "g".into()
        }
        .is_not_found());
    }

    #[test]
    fn an_outcome_is_unknown_when_the_service_may_have_carried_the_request_out() {
        for status in [408, 500, 502, 504] {
            assert!(
                svc(Service::Arm, status, "", "").outcome_unknown(),
                "{status}"
            );
        }
        for status in [400, 403, 404, 409, 429, 503] {
            assert!(
                !svc(Service::Graph, status, "", "").outcome_unknown(),
                "{status}"
            );
        }
        assert!(AzureError::deadline("op", Some(svc(Service::Arm, 504, "", ""))).outcome_unknown());
        assert!(
            !AzureError::deadline("op", Some(svc(Service::Arm, 429, "", ""))).outcome_unknown()
        );
        assert!(
            !AzureError::deadline("op", None).outcome_unknown(),
            "never sent"
        );
        assert!(!AzureError::config("bad").outcome_unknown());
    }
}
