use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SystemViewError {
    /// The host does not offer this call (for example OpenBao for identity tokens).
    #[error("the host does not support {0}")]
    Unsupported(&'static str),
    #[error("system view call {call} failed: {reason}")]
    Host { call: &'static str, reason: String },
}

/// Bits of [`SystemView::replication_state`] (the Go SDK's `consts.ReplicationState`).
pub mod replication {
    pub const PERFORMANCE_PRIMARY: i32 = 32;
    pub const PERFORMANCE_SECONDARY: i32 = 64;
    pub const DR_PRIMARY: i32 = 256;
    pub const DR_SECONDARY: i32 = 512;
    pub const PERFORMANCE_DISABLED: i32 = 4096;
    pub const DR_DISABLED: i32 = 8192;
    /// A standby that serves requests: Vault's performance standby, and every OpenBao 2.5+
    /// standby with standby reads on (its active node reports `PERFORMANCE_PRIMARY`).
    pub const PERFORMANCE_STANDBY: i32 = 16384;
}

/// Whether this node may write the mount's storage (and so do periodic and rollback work):
/// not on a standby or a DR secondary, and on a performance secondary only for a local
/// mount.
pub async fn storage_writable(view: &dyn SystemView) -> Result<bool, SystemViewError> {
    let state = view.replication_state().await?;
    if state & (replication::PERFORMANCE_STANDBY | replication::DR_SECONDARY) != 0 {
        return Ok(false);
    }
    if state & replication::PERFORMANCE_SECONDARY != 0 {
        return view.local_mount().await;
    }
    Ok(true)
}

/// The host's version as it reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginEnv {
    pub vault_version: String,
    pub vault_version_prerelease: String,
    pub vault_version_metadata: String,
}

/// What the host tells a backend about its mount and the server.
#[async_trait]
pub trait SystemView: Send + Sync {
    async fn default_lease_ttl(&self) -> Result<Duration, SystemViewError>;
    async fn max_lease_ttl(&self) -> Result<Duration, SystemViewError>;
    /// True while the mount is being removed.
    async fn tainted(&self) -> Result<bool, SystemViewError>;
    /// The replication state bit mask.
    async fn replication_state(&self) -> Result<i32, SystemViewError>;
    async fn local_mount(&self) -> Result<bool, SystemViewError>;
    async fn plugin_env(&self) -> Result<PluginEnv, SystemViewError>;
    /// A plugin identity token (workload identity federation); Vault Enterprise only.
    async fn generate_identity_token(
        &self,
        audience: &str,
        ttl: Duration,
    ) -> Result<(String, Duration), SystemViewError>;
}

/// A system view with fixed answers: for unit tests and tools.
#[derive(Debug, Clone)]
pub struct StaticSystemView {
    pub default_lease_ttl: Duration,
    pub max_lease_ttl: Duration,
}

impl Default for StaticSystemView {
    fn default() -> Self {
        Self {
            default_lease_ttl: Duration::from_secs(768 * 3600),
            max_lease_ttl: Duration::from_secs(768 * 3600),
        }
    }
}

#[async_trait]
impl SystemView for StaticSystemView {
    async fn default_lease_ttl(&self) -> Result<Duration, SystemViewError> {
        Ok(self.default_lease_ttl)
    }
    async fn max_lease_ttl(&self) -> Result<Duration, SystemViewError> {
        Ok(self.max_lease_ttl)
    }
    async fn tainted(&self) -> Result<bool, SystemViewError> {
        Ok(false)
    }
    async fn replication_state(&self) -> Result<i32, SystemViewError> {
        Ok(4096 | 8192)
    }
    async fn local_mount(&self) -> Result<bool, SystemViewError> {
        Ok(false)
    }
    async fn plugin_env(&self) -> Result<PluginEnv, SystemViewError> {
        Ok(PluginEnv::default())
    }
    async fn generate_identity_token(
        &self,
        _audience: &str,
        _ttl: Duration,
    ) -> Result<(String, Duration), SystemViewError> {
        Err(SystemViewError::Unsupported("plugin identity tokens"))
    }
}
