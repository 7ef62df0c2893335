//! Test doubles for plugin authors: in-memory storage, a system view whose answers a test
//! sets (including the replication state, to test forwarding and periodic work), and a
//! [`BackendConfig`] made of them, so a backend's handlers run in process in milliseconds.
//!
//! ```
//! use std::sync::Arc;
//! use vault_plugin_sdk::testing::{backend_config, TestSystemView};
//!
//! let system_view = Arc::new(TestSystemView::default());
//! let config = backend_config(system_view.clone());
//! system_view.set_replication_state(vault_plugin_sdk::logical::ReplicationState::PERFORMANCE_STANDBY);
//! # let _ = config;
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

pub use crate::logical::InmemStorage;
use crate::logical::{BackendConfig, PluginEnv, ReplicationState, SystemView, SystemViewError};

/// A system view for tests: fixed lease TTLs (768 h, the host's defaults), a replication
/// state and local-mount flag the test can change, and no identity tokens.
pub struct TestSystemView {
    /// The mount's default lease TTL.
    pub default_lease_ttl: Duration,
    /// The mount's maximum lease TTL.
    pub max_lease_ttl: Duration,
    replication_state: AtomicI32,
    local_mount: AtomicBool,
    identity_token: Mutex<Option<String>>,
}

impl Default for TestSystemView {
    fn default() -> Self {
        Self {
            default_lease_ttl: Duration::from_secs(768 * 3600),
            max_lease_ttl: Duration::from_secs(768 * 3600),
            replication_state: AtomicI32::new(
                ReplicationState::PERFORMANCE_DISABLED | ReplicationState::DR_DISABLED,
            ),
            local_mount: AtomicBool::new(false),
            identity_token: Mutex::new(None),
        }
    }
}

impl TestSystemView {
    /// Sets the replication state bits (see [`ReplicationState`]).
    pub fn set_replication_state(&self, bits: i32) {
        self.replication_state.store(bits, Ordering::SeqCst);
    }

    /// Sets whether the mount is local (not replicated).
    pub fn set_local_mount(&self, local: bool) {
        self.local_mount.store(local, Ordering::SeqCst);
    }

    /// Makes [`SystemView::generate_identity_token`] return `token` (unsupported until set).
    pub fn set_identity_token(&self, token: impl Into<String>) {
        *self
            .identity_token
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(token.into());
    }
}

#[async_trait]
impl SystemView for TestSystemView {
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
        Ok(self.replication_state.load(Ordering::SeqCst))
    }
    async fn local_mount(&self) -> Result<bool, SystemViewError> {
        Ok(self.local_mount.load(Ordering::SeqCst))
    }
    async fn plugin_env(&self) -> Result<PluginEnv, SystemViewError> {
        Ok(PluginEnv::default())
    }
    async fn generate_identity_token(
        &self,
        _audience: &str,
        ttl: Duration,
    ) -> Result<(String, Duration), SystemViewError> {
        let token = self
            .identity_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        token
            .map(|t| (t, ttl))
            .ok_or(SystemViewError::Unsupported("plugin identity tokens"))
    }
}

/// A mount configuration with fresh in-memory storage and `system_view`.
pub fn backend_config(system_view: Arc<dyn SystemView>) -> BackendConfig {
    BackendConfig {
        config: HashMap::new(),
        backend_uuid: uuid::Uuid::new_v4().to_string(),
        storage: Arc::new(InmemStorage::new()),
        system_view,
    }
}
