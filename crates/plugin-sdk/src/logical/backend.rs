use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use super::{LogicalError, Operation, Request, Response, Storage, SystemView};

/// What kind of backend the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    /// A secrets engine.
    Secrets,
    /// An auth method.
    Credential,
}

/// Path patterns with special treatment by the host (relative to the mount; a trailing `*`
/// makes a prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialPaths {
    /// Paths that need a root token (or `sudo`).
    pub root: Vec<String>,
    /// Paths served without a token.
    pub unauthenticated: Vec<String>,
    /// Storage prefixes kept per cluster (not replicated), such as the write-ahead log.
    pub local_storage: Vec<String>,
    /// Storage keys the host seal-wraps where it supports it.
    pub seal_wrap_storage: Vec<String>,
}

/// Everything a backend instance is created with.
#[derive(Clone)]
pub struct BackendConfig {
    /// Mount options plus `plugin_name`, `plugin_type`, `plugin_version`.
    pub config: HashMap<String, String>,
    /// The mount's backend UUID; empty during the host's registration probe.
    pub backend_uuid: String,
    /// The mount's storage.
    pub storage: Arc<dyn Storage>,
    /// What the host tells the backend about the mount and the server.
    pub system_view: Arc<dyn SystemView>,
}

/// One backend instance (one mount).
#[async_trait]
pub trait Backend: Send + Sync {
    /// Secrets engine or auth method.
    fn backend_type(&self) -> BackendType;
    /// Paths and storage keys the host treats specially.
    fn special_paths(&self) -> SpecialPaths;
    /// Called once storage is writable, after the mount is set up.
    async fn initialize(&self) -> Result<(), LogicalError>;
    /// `Ok(None)`: no response (HTTP 204 for writes, 404 for reads).
    async fn handle_request(&self, req: Request) -> Result<Option<Response>, LogicalError>;
    /// False when every request with `operation` is answered "unsupported operation"
    /// whatever its path and data: the runtime then answers so itself, without building the
    /// request (OpenBao 2.7 sends `resolve-path` before every request).
    fn handles(&self, operation: &Operation) -> bool {
        let _ = operation;
        true
    }
    /// `Ok(None)`: the path has no existence check; else whether the target exists.
    async fn handle_existence_check(&self, req: Request) -> Result<Option<bool>, LogicalError>;
    /// A storage key changed elsewhere (standby or replication): drop what is cached of it.
    async fn invalidate_key(&self, key: &str);
    /// The instance is going away: stop background work.
    async fn cleanup(&self);
}

/// Why a [`Factory`] could not make a backend instance; the host fails the mount with its
/// text.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FactoryError {
    /// The backend's declaration is invalid (for example a path pattern that does not
    /// compile); made from the framework's `BuildError`.
    #[error("{0}")]
    Build(String),
    /// The mount's configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Makes backend instances; one plugin process may hold several (one per mount).
#[async_trait]
pub trait Factory: Send + Sync {
    /// A new backend instance for the mount `config` describes.
    async fn create(&self, config: BackendConfig) -> Result<Arc<dyn Backend>, FactoryError>;
}
