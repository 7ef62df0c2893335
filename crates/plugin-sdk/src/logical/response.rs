use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Map;

/// Lease settings of a secret, as the host stores them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseOptions {
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub renewable: bool,
    /// The increment a caller asked for (renew only).
    pub increment: Duration,
    /// When the lease was first issued (set by the host; absent on new secrets).
    pub issue_time: Option<DateTime<Utc>>,
}

/// A secret with a lease: returned by a read that issues credentials, handed back on renew
/// and revoke.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Secret {
    pub lease: LeaseOptions,
    /// Data only the backend sees, kept by the host with the lease.
    pub internal_data: Map,
    /// Set by the host on revoke.
    pub lease_id: String,
}

/// A response to the host. `data` of `None` is sent as JSON `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub data: Option<Map>,
    pub secret: Option<Secret>,
    pub warnings: Vec<String>,
    pub redirect: String,
}

impl Response {
    pub fn with_data(data: Map) -> Self {
        Self {
            data: Some(data),
            ..Self::default()
        }
    }

    /// An error response: the host answers HTTP 400 with `message` (the Go SDK's
    /// `logical.ErrorResponse`).
    pub fn error(message: impl Into<String>) -> Self {
        let mut data = Map::new();
        data.insert("error".into(), serde_json::Value::String(message.into()));
        Self::with_data(data)
    }

    /// A list response: `{"keys": [...]}`.
    pub fn list(keys: Vec<String>) -> Self {
        let mut data = Map::new();
        data.insert("keys".into(), serde_json::json!(keys));
        Self::with_data(data)
    }

    /// True when this is an error response made by [`Response::error`].
    pub fn is_error(&self) -> bool {
        self.data.as_ref().is_some_and(|d| {
            d.contains_key("error") && (d.len() == 1 || (d.len() == 2 && d.contains_key("data")))
        })
    }

    pub fn add_warning(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}
