use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::{Map, Secret, Storage};

/// The operation a request asks for, as the host names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Write to a path that does not exist yet (per the existence check).
    Create,
    /// Read.
    Read,
    /// Write to a path that exists (or has no existence check).
    Update,
    /// Partial update.
    Patch,
    /// Delete.
    Delete,
    /// List the keys below a path.
    List,
    /// List recursively.
    Scan,
    /// Help text and OpenAPI of a path or of the backend.
    Help,
    /// Response headers only.
    Header,
    /// Extend a secret's lease.
    Renew,
    /// End a secret's lease.
    Revoke,
    /// The host's periodic tick (write-ahead-log rollback and periodic work).
    Rollback,
    /// Ask which path serves a request (answered unsupported).
    ResolvePath,
    /// An operation this crate does not know; answered with "unsupported operation".
    Other(String),
}

impl Operation {
    /// The operation the host names `s`.
    pub fn parse(s: &str) -> Self {
        match s {
            "create" => Self::Create,
            "read" => Self::Read,
            "update" => Self::Update,
            "patch" => Self::Patch,
            "delete" => Self::Delete,
            "list" => Self::List,
            "scan" => Self::Scan,
            "help" => Self::Help,
            "header" => Self::Header,
            "renew" => Self::Renew,
            "revoke" => Self::Revoke,
            "rollback" => Self::Rollback,
            "resolve-path" => Self::ResolvePath,
            other => Self::Other(other.to_string()),
        }
    }

    /// The host's name of the operation.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Scan => "scan",
            Self::Help => "help",
            Self::Header => "header",
            Self::Renew => "renew",
            Self::Revoke => "revoke",
            Self::Rollback => "rollback",
            Self::ResolvePath => "resolve-path",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request from the host to a backend instance.
#[derive(Clone)]
pub struct Request {
    /// The request's id (for logs).
    pub id: String,
    /// What the request asks for.
    pub operation: Operation,
    /// Path relative to the mount, without a leading slash; "" is the mount root.
    pub path: String,
    /// The request body (or query parameters) as a JSON object.
    pub data: Map,
    /// The stored secret, on renew and revoke.
    pub secret: Option<Secret>,
    /// The accessor of the caller's token.
    pub client_token_accessor: String,
    /// The caller's token display name.
    pub display_name: String,
    /// Mount path with a trailing slash (`azure/`); empty on host-internal calls.
    pub mount_point: String,
    /// The mount's type (the plugin name it was enabled with).
    pub mount_type: String,
    /// The caller's identity entity.
    pub entity_id: String,
    /// The request came without a token (unauthenticated paths).
    pub unauthenticated: bool,
    /// HTTP headers the mount passes through.
    pub headers: HashMap<String, Vec<String>>,
    /// The caller's address.
    pub remote_addr: String,
    /// The mount's storage.
    pub storage: Arc<dyn Storage>,
}

impl fmt::Debug for Request {
    // Request data can hold secrets (client_secret); never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("fields", &self.data.keys().collect::<Vec<_>>())
            .field("mount_point", &self.mount_point)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request with the given operation, path and data on `storage`; other fields empty.
    pub fn new(operation: Operation, path: impl Into<String>, storage: Arc<dyn Storage>) -> Self {
        Self {
            id: String::new(),
            operation,
            path: path.into(),
            data: Map::new(),
            secret: None,
            client_token_accessor: String::new(),
            display_name: String::new(),
            mount_point: String::new(),
            mount_type: String::new(),
            entity_id: String::new(),
            unauthenticated: false,
            headers: HashMap::new(),
            remote_addr: String::new(),
            storage,
        }
    }

    /// The request with `data` as its body.
    pub fn with_data(mut self, data: Map) -> Self {
        self.data = data;
        self
    }
}
