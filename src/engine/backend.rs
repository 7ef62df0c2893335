//! The engine's per-mount state and the backend it assembles from its paths.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::path_config;
use crate::framework::{Backend, BackendBuilder};
use crate::logical::{BackendConfig, SpecialPaths, SystemView};

const BACKEND_HELP: &str =
    "The Azure secrets engine dynamically generates Azure service principals \
and passwords on existing applications, with role assignments and group memberships, and removes \
them when their lease ends.";

/// State shared by every path of one mount.
pub struct AzureBackend {
    pub(crate) system_view: Arc<dyn SystemView>,
    /// Bumped whenever the configuration changes, so cached clients are rebuilt.
    config_generation: Mutex<u64>,
}

impl AzureBackend {
    pub fn new(config: &BackendConfig) -> Arc<Self> {
        Arc::new(Self {
            system_view: config.system_view.clone(),
            config_generation: Mutex::new(0),
        })
    }

    /// Drops what was derived from the stored configuration.
    pub async fn reset_client(&self) {
        *self.config_generation.lock().await += 1;
    }

    /// The framework backend for this mount.
    pub fn build(self: &Arc<Self>, config: &BackendConfig) -> Result<Backend, String> {
        let invalidate = self.clone();
        BackendBuilder::new(BACKEND_HELP)
            .special_paths(SpecialPaths {
                seal_wrap_storage: vec!["config".into()],
                local_storage: vec!["wal/".into()],
                ..SpecialPaths::default()
            })
            .path(path_config::path(self))
            .on_invalidate(Arc::new(move |key: String| {
                let b = invalidate.clone();
                Box::pin(async move {
                    if key == super::store::CONFIG_KEY {
                        b.reset_client().await;
                    }
                })
            }))
            .build(config.storage.clone())
    }
}
