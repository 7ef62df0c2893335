//! Secret types: what a lease holds and how it is renewed and revoked.

use std::time::Duration;

use serde_json::Value;

use super::path::HandlerFn;
use crate::logical::{LeaseOptions, Map, Response, Secret};

/// The key in a secret's internal data that names its type.
pub const SECRET_TYPE_KEY: &str = "secret_type";

/// A kind of secret the backend issues, registered with
/// [`super::BackendBuilder::secret`]. The framework gives every secret of this type that a
/// handler issues its lease settings: renewable exactly when `renew` is set, and
/// `default_duration` when the handler sets no TTL.
#[derive(Clone)]
pub struct SecretType {
    /// The type's name, kept in each lease's internal data.
    pub name: String,
    /// Lease duration when the handler sets none (zero: the mount's default).
    pub default_duration: Duration,
    /// Extends a lease; `None` makes the type's leases non-renewable.
    pub renew: Option<HandlerFn>,
    /// Undoes what the lease stands for.
    pub revoke: HandlerFn,
}

impl SecretType {
    /// A response that issues a secret of this type with `data` for the caller and
    /// `internal` kept with the lease for renew and revoke.
    pub fn response(&self, data: Map, internal: Map) -> Response {
        let mut resp = secret_response(&self.name, data, internal);
        if let Some(s) = resp.secret.as_mut() {
            s.lease.ttl = self.default_duration;
            s.lease.renewable = self.renew.is_some();
        }
        resp
    }
}

/// A response issuing a secret of type `type_name` (the name a [`SecretType`] is registered
/// under). The framework completes its lease from the registered type when the handler
/// returns; a handler may set `ttl` and `max_ttl` itself.
pub fn secret_response(type_name: &str, data: Map, mut internal: Map) -> Response {
    internal.insert(SECRET_TYPE_KEY.into(), Value::String(type_name.to_string()));
    Response {
        data: Some(data),
        secret: Some(Secret {
            lease: LeaseOptions::default(),
            internal_data: internal,
            lease_id: String::new(),
        }),
        ..Response::default()
    }
}
