use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
/// A system-view call that failed.
pub enum SystemViewError {
    /// The host does not offer this call (for example OpenBao for identity tokens).
    #[error("the host does not support {0}")]
    Unsupported(&'static str),
    /// The host failed the call.
    #[error("system view call {call} failed: {reason}")]
    Host {
        /// The call.
        call: &'static str,
        /// What the host said.
        reason: String,
    },
}

/// Whether this node may write the mount's storage (and so do periodic and rollback work):
/// not on a standby or a DR secondary, and on a performance secondary only for a local
/// mount.
pub async fn storage_writable(view: &dyn SystemView) -> Result<bool, SystemViewError> {
    let state = super::ReplicationState(view.replication_state().await?);
    let local = state.is_performance_secondary() && view.local_mount().await?;
    Ok(state.writes_allowed(local))
}

/// The host's version as it reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginEnv {
    /// The server's version (`2.7.2`).
    pub vault_version: String,
    /// Its pre-release label, if any.
    pub vault_version_prerelease: String,
    /// Its build metadata, if any.
    pub vault_version_metadata: String,
}

/// What the host tells a backend about its mount and the server.
#[async_trait]
pub trait SystemView: Send + Sync {
    /// The mount's default lease TTL.
    async fn default_lease_ttl(&self) -> Result<Duration, SystemViewError>;
    /// The mount's maximum lease TTL.
    async fn max_lease_ttl(&self) -> Result<Duration, SystemViewError>;
    /// True while the mount is being removed.
    async fn tainted(&self) -> Result<bool, SystemViewError>;
    /// The replication state bit mask.
    async fn replication_state(&self) -> Result<i32, SystemViewError>;
    /// Whether the mount is local (not replicated to performance secondaries).
    async fn local_mount(&self) -> Result<bool, SystemViewError>;
    /// The server's version.
    async fn plugin_env(&self) -> Result<PluginEnv, SystemViewError>;
    /// A plugin identity token (workload identity federation); Vault Enterprise only.
    async fn generate_identity_token(
        &self,
        audience: &str,
        ttl: Duration,
    ) -> Result<(String, Duration), SystemViewError>;
}
