//! What the engine's in-process tests share: an emulator on loopback and the engine's
//! framework backend pointed at it (endpoints only: the identity comes from the stored
//! `config`), on in-memory storage with a test system view.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_clients::{AzureClient, AzureClientOptions, AzureConfig, AzureSettings, Deadline};
use azure_emulator::{Config as EmulatorConfig, Emulator};
use serde_json::{json, Value};
use vault_plugin_sdk::framework::{object, Backend};
use vault_plugin_sdk::logical::{
    Backend as _, BackendConfig, LogicalError, Operation, ReplicationState, Request, Response,
    Storage,
};
use vault_plugin_sdk::testing::{backend_config, TestSystemView};
use vault_plugin_secrets_azure::{AzureBackend, ROLLBACK_SETTLE_ENV as SETTLE_ENV};

/// Reader, a built-in Azure role.
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

/// The emulator variables the engine reads from its environment: endpoints and CA only, so
/// that the identity comes from the stored `config`.
const ENDPOINT_VARS: [&str; 4] = [
    "AZURE_AUTHORITY_HOST",
    "AZURE_GRAPH_ENDPOINT",
    "AZURE_RESOURCE_MANAGER_ENDPOINT",
    "SSL_CERT_FILE",
];

pub struct Fixture {
    emu: Option<Emulator>,
    /// Everything the emulator publishes, its root identity included.
    pub env: HashMap<String, String>,
    /// What the engine reads from its environment.
    pub engine_env: HashMap<String, String>,
    pub config: BackendConfig,
    pub backend: Backend,
    /// The storage under the backend's cache (what another node would write).
    pub raw_storage: Arc<dyn Storage>,
    pub system_view: Arc<TestSystemView>,
    /// The emulator's root identity, to look at Azure from outside the engine.
    pub azure: AzureClient,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(emu) = self.emu.take() {
            emu.shutdown();
        }
    }
}

impl Fixture {
    /// An emulator, the engine pointed at it, and `config` written with the emulator's root
    /// identity.
    pub async fn start() -> Fixture {
        Self::start_with_env(&[]).await
    }

    /// [`Fixture::start`] with `extra` in the engine's environment.
    pub async fn start_with_env(extra: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(EmulatorConfig {
            arc_token_dir: dir.path().join("tokens"),
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        let env: HashMap<String, String> = emu.env().iter().cloned().collect();
        // The rollback's second pass (for requests landing late) comes at the next tick,
        // not a minute later.
        let settle_at_next_tick = (SETTLE_ENV.to_string(), "0".to_string());
        let engine_env: HashMap<String, String> = ENDPOINT_VARS
            .iter()
            .map(|k| (k.to_string(), env[*k].clone()))
            .chain(std::iter::once(settle_at_next_tick))
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let system_view = Arc::new(TestSystemView::default());
        let config = backend_config(system_view.clone());
        let raw_storage = config.storage.clone();
        let backend = instance(&config, &engine_env);
        let lookup = |k: &str| env.get(k).cloned();
        let settings = AzureSettings::resolve(&AzureConfig::default(), &lookup).expect("settings");
        let azure = AzureClient::new(settings, AzureClientOptions::default()).expect("client");
        let f = Fixture {
            emu: Some(emu),
            env,
            engine_env,
            config,
            backend,
            raw_storage,
            system_view,
            azure,
            _dir: dir,
        };
        f.call(
            Operation::Create,
            "config",
            json!({
                "tenant_id": f.env["AZURE_TENANT_ID"],
                "subscription_id": f.env["AZURE_SUBSCRIPTION_ID"],
                "client_id": f.env["AZURE_CLIENT_ID"],
                "client_secret": f.env["AZURE_CLIENT_SECRET"],
            }),
        )
        .await
        .expect("write config");
        f
    }

    pub fn emulator(&self) -> &Emulator {
        self.emu
            .as_ref()
            .expect("the emulator runs until the fixture drops")
    }

    /// Another engine instance of the mount (another process, on another node) on the same
    /// storage.
    pub fn instance(&self) -> Backend {
        instance(&self.config, &self.engine_env)
    }

    pub fn request(&self, op: Operation, path: &str, data: Value) -> Request {
        Request::new(op, path, self.backend.storage()).with_data(object(data))
    }

    pub async fn call(
        &self,
        op: Operation,
        path: &str,
        data: Value,
    ) -> Result<Option<Response>, LogicalError> {
        self.backend
            .handle_request(self.request(op, path, data))
            .await
    }

    /// This node becomes a performance standby.
    pub fn standby(&self) {
        self.system_view
            .set_replication_state(ReplicationState::PERFORMANCE_STANDBY);
    }

    /// This node becomes the active node of an unreplicated cluster.
    pub fn active(&self) {
        self.system_view.set_replication_state(
            ReplicationState::PERFORMANCE_DISABLED | ReplicationState::DR_DISABLED,
        );
    }
}

fn instance(config: &BackendConfig, engine_env: &HashMap<String, String>) -> Backend {
    let env = engine_env.clone();
    AzureBackend::with_env(config, Arc::new(move |k: &str| env.get(k).cloned()))
        .build(config)
        .expect("build the backend")
}

pub fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}
