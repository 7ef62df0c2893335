//! Secret types: what a lease holds and how it is renewed and revoked.

use std::time::Duration;

use serde_json::Value;

use super::path::HandlerFn;
use crate::logical::{LeaseOptions, Map, Response, Secret};

/// The key in a secret's internal data that names its type.
pub const SECRET_TYPE_KEY: &str = "secret_type";

/// A kind of secret the backend issues.
#[derive(Clone)]
pub struct SecretType {
    pub name: String,
    /// Lease duration when the handler sets none.
    pub default_duration: Duration,
    pub renew: Option<HandlerFn>,
    pub revoke: HandlerFn,
}

impl SecretType {
    /// A response that issues a secret of this type with `data` for the caller and
    /// `internal` kept with the lease for renew and revoke.
    pub fn response(&self, data: Map, internal: Map) -> Response {
        let mut resp = secret_response(&self.name, self.renew.is_some(), data, internal);
        if let Some(s) = resp.secret.as_mut() {
            s.lease.ttl = self.default_duration;
        }
        resp
    }
}

/// A response issuing a secret of type `type_name` (the name a [`SecretType`] is registered
/// under), with a lease TTL left to the host's default.
pub fn secret_response(type_name: &str, renewable: bool, data: Map, mut internal: Map) -> Response {
    internal.insert(SECRET_TYPE_KEY.into(), Value::String(type_name.to_string()));
    Response {
        data: Some(data),
        secret: Some(Secret {
            lease: LeaseOptions {
                renewable,
                ..LeaseOptions::default()
            },
            internal_data: internal,
            lease_id: String::new(),
        }),
        ..Response::default()
    }
}
