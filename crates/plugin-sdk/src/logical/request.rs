use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::{Map, Secret, Storage};

/// The operation a request asks for, as the host names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Create,
    Read,
    Update,
    Patch,
    Delete,
    List,
    Scan,
    Help,
    Header,
    Renew,
    Revoke,
    Rollback,
    ResolvePath,
    /// An operation this crate does not know; answered with "unsupported operation".
    Other(String),
}

impl Operation {
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
    pub id: String,
    pub operation: Operation,
    /// Path relative to the mount, without a leading slash; "" is the mount root.
    pub path: String,
    /// The request body (or query parameters) as a JSON object.
    pub data: Map,
    /// The stored secret, on renew and revoke.
    pub secret: Option<Secret>,
    pub client_token_accessor: String,
    pub display_name: String,
    /// Mount path with a trailing slash (`azure/`); empty on host-internal calls.
    pub mount_point: String,
    pub mount_type: String,
    pub entity_id: String,
    pub unauthenticated: bool,
    pub headers: HashMap<String, Vec<String>>,
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

    pub fn with_data(mut self, data: Map) -> Self {
        self.data = data;
        self
    }
}
