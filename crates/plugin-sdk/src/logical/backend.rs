use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{LogicalError, Request, Response, Storage, SystemView};

/// What kind of backend the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    Secrets,
    Credential,
}

/// Path patterns with special treatment by the host (relative to the mount; a trailing `*`
/// makes a prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialPaths {
    pub root: Vec<String>,
    pub unauthenticated: Vec<String>,
    pub local_storage: Vec<String>,
    pub seal_wrap_storage: Vec<String>,
}

/// Everything a backend instance is created with.
#[derive(Clone)]
pub struct BackendConfig {
    /// Mount options plus `plugin_name`, `plugin_type`, `plugin_version`.
    pub config: HashMap<String, String>,
    /// The mount's backend UUID; empty during the host's registration probe.
    pub backend_uuid: String,
    pub storage: Arc<dyn Storage>,
    pub system_view: Arc<dyn SystemView>,
}

/// One backend instance (one mount).
#[async_trait]
pub trait Backend: Send + Sync {
    fn backend_type(&self) -> BackendType;
    fn special_paths(&self) -> SpecialPaths;
    /// Called once storage is writable, after the mount is set up.
    async fn initialize(&self) -> Result<(), LogicalError>;
    /// `Ok(None)`: no response (HTTP 204 for writes, 404 for reads).
    async fn handle_request(&self, req: Request) -> Result<Option<Response>, LogicalError>;
    /// `Ok(None)`: the path has no existence check; else whether the target exists.
    async fn handle_existence_check(&self, req: Request) -> Result<Option<bool>, LogicalError>;
    /// A storage key changed elsewhere (standby or replication): drop what is cached of it.
    async fn invalidate_key(&self, key: &str);
    /// The instance is going away: stop background work.
    async fn cleanup(&self);
}

/// Makes backend instances; one plugin process may hold several (one per mount).
#[async_trait]
pub trait Factory: Send + Sync {
    async fn create(&self, config: BackendConfig) -> Result<Arc<dyn Backend>, String>;
}
