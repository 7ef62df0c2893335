//! The Azure secrets engine for OpenBao and Vault, built on `vault-plugin-sdk` and `azure-clients`.

mod backend;
mod certificate;
mod identity;
mod inventory;
mod lease;
mod path_config;
mod path_creds;
pub mod path_pool;
mod path_reconcile;
mod path_roles;
mod path_rotate_role;
mod path_rotate_root;
mod path_self_test;
mod path_static_creds;
mod path_static_roles;
pub mod pool;
pub mod provision;
mod reconcile;
mod rollback;
mod static_rotation;
pub mod static_store;
pub mod store;
mod usage;
mod validate;

use std::sync::Arc;

use async_trait::async_trait;

pub use backend::{AzureBackend, EnvSource};
/// The environment variable that overrides how long a rolled-back write-ahead-log entry
/// waits for requests landing late (seconds; 0: until the next rollback tick).
pub use rollback::SETTLE_ENV as ROLLBACK_SETTLE_ENV;

use vault_plugin_sdk::logical::{Backend, BackendConfig, Factory, FactoryError};

/// Makes one engine instance per mount.
pub struct AzureFactory;

#[async_trait]
impl Factory for AzureFactory {
    async fn create(&self, config: BackendConfig) -> Result<Arc<dyn Backend>, FactoryError> {
        let state = AzureBackend::new(&config);
        Ok(Arc::new(state.build(&config)?))
    }
}
