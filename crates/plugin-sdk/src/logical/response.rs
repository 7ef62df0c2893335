use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Map;

/// Lease settings of a secret, as the host stores them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseOptions {
    /// How long the lease lasts from now (zero: the mount's default).
    pub ttl: Duration,
    /// The longest the lease may last from its issue time (zero: the mount's maximum).
    pub max_ttl: Duration,
    /// Whether the lease may be renewed.
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
    /// Lease settings.
    pub lease: LeaseOptions,
    /// Data only the backend sees, kept by the host with the lease.
    pub internal_data: Map,
    /// Set by the host on revoke.
    pub lease_id: String,
}

/// An entity alias: how an identity from an auth method maps to an entity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alias {
    /// The accessor of the auth method's mount (set by the host).
    pub mount_accessor: String,
    /// The name the auth method knows the identity by.
    pub name: String,
    /// Metadata kept on the alias.
    pub metadata: HashMap<String, String>,
}

/// The kind of token an [`Auth`] asks for (the Go SDK's `logical.TokenType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenType {
    /// The mount's or the host's default.
    #[default]
    Default,
    /// A service token.
    Service,
    /// A batch token.
    Batch,
}

impl TokenType {
    /// The number the host's wire format uses.
    pub fn as_u32(self) -> u32 {
        match self {
            Self::Default => 0,
            Self::Service => 1,
            Self::Batch => 2,
        }
    }
}

/// The result of a login: what the host makes a token from (the Go SDK's `logical.Auth`).
/// Auth methods return it in [`Response::auth`]; the token fields are set by the host.
#[derive(Clone, Default, PartialEq)]
pub struct Auth {
    /// Lease settings of the token.
    pub lease: LeaseOptions,
    /// Data only the backend sees, handed back on renew.
    pub internal_data: Map,
    /// Shown in the token's display name.
    pub display_name: String,
    /// Policies of the token.
    pub policies: Vec<String>,
    /// Policies from the token (as opposed to identity).
    pub token_policies: Vec<String>,
    /// Policies that come from identity.
    pub identity_policies: Vec<String>,
    /// Metadata attached to the token and audit log.
    pub metadata: HashMap<String, String>,
    /// The token (set by the host).
    pub client_token: String,
    /// The token's accessor (set by the host).
    pub accessor: String,
    /// A periodic token's period.
    pub period: Duration,
    /// How many uses the token has (0: unlimited).
    pub num_uses: i64,
    /// The entity the token belongs to (set by the host).
    pub entity_id: String,
    /// The identity's alias in this auth method.
    pub alias: Option<Alias>,
    /// Group aliases of the identity.
    pub group_aliases: Vec<Alias>,
    /// CIDR blocks the token is bound to.
    pub bound_cidrs: Vec<String>,
    /// A hard cap on the token's life.
    pub explicit_max_ttl: Duration,
    /// Service or batch token.
    pub token_type: TokenType,
    /// Leave the `default` policy out.
    pub no_default_policy: bool,
}

impl std::fmt::Debug for Auth {
    // The client token and internal data are secrets; never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("display_name", &self.display_name)
            .field("policies", &self.policies)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A response to the host. `data` of `None` is sent as JSON `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// The body returned to the caller.
    pub data: Option<Map>,
    /// A secret with a lease (credentials the host revokes when the lease ends).
    pub secret: Option<Secret>,
    /// A login result the host makes a token from (auth methods).
    pub auth: Option<Auth>,
    /// Warnings shown to the caller.
    pub warnings: Vec<String>,
    /// An address to redirect the caller to.
    pub redirect: String,
}

impl Response {
    /// A response with `data` as its body.
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

    /// Adds a warning shown to the caller.
    pub fn add_warning(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}
