//! The Azure secrets engine for OpenBao and Vault, built on `vault-plugin-sdk` and `azure-clients`.

mod backend;
mod certificate;
mod lease;
mod path_config;
mod path_creds;
mod path_roles;
mod path_rotate_root;
pub mod provision;
mod rollback;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;

pub use backend::AzureBackend;

use vault_plugin_sdk::logical::{Backend, BackendConfig, Factory};

/// Makes one engine instance per mount.
pub struct AzureFactory;

#[async_trait]
impl Factory for AzureFactory {
    async fn create(&self, config: BackendConfig) -> Result<Arc<dyn Backend>, String> {
        let state = AzureBackend::new(&config);
        Ok(Arc::new(state.build(&config)?))
    }
}
