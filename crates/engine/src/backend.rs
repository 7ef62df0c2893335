//! The engine's per-mount state (the cached Azure client, per-application locks, the
//! pending root-password swap) and the backend it assembles from its paths.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::store::{self, Config};
use super::{lease, path_config, path_creds, path_roles, path_rotate_root, rollback};
use super::{
    path_rotate_role, path_static_creds, path_static_roles, static_rotation, static_store,
};
use azure_clients::{
    self, AssertionProvider, AzureClient, AzureClientOptions, AzureConfig, AzureError,
    AzureSettings, Deadline, NewPassword, PasswordCredential, SecretString,
};
use vault_plugin_sdk::framework::{Backend, BackendBuilder, BuildError, PeriodicFn};
use vault_plugin_sdk::logical::{
    storage_writable, BackendConfig, LogicalError, Request, SpecialPaths, Storage, SystemView,
    READ_ONLY_ERROR,
};

const BACKEND_HELP: &str =
    "The Azure secrets engine dynamically generates Azure service principals \
and passwords on existing applications, with role assignments and group memberships, and removes \
them when their lease ends.";

/// A client is rebuilt (new credential, new tokens) after this long, as the Go engine does.
pub(crate) const CLIENT_MAX_AGE: Duration = Duration::from_secs(30 * 60);

struct CachedClient {
    client: Arc<AzureClient>,
    built: Instant,
}

/// Where the engine reads its `AZURE_*` settings and endpoints (`SSL_CERT_FILE` too): the
/// process environment in the plugin, any lookup in tests.
pub type EnvSource = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// State shared by every path of one mount.
pub struct AzureBackend {
    pub(crate) system_view: Arc<dyn SystemView>,
    env: EnvSource,
    client: Mutex<Option<CachedClient>>,
    /// Serialises password changes per application object id within this process.
    app_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// A new root password waits to replace the old one (checked on each periodic tick;
    /// starts true so a swap pending before a restart is finished).
    pub(crate) root_swap_pending: AtomicBool,
    /// Who the current client signs in as (for the own-application guard).
    identity: super::identity::IdentityCache,
    /// The periodic reconciler's state.
    pub(crate) reconcile_state: super::reconcile::State,
    /// Usage against Azure limits, as last measured (self-test / periodic refresh).
    pub(crate) usage: std::sync::Mutex<super::path_self_test::UsageCache>,
    /// The warm credential pools (`pool_size`).
    pub(crate) pool: super::pool::PoolState,
    /// The last answer about the tenant's default app management policy.
    pub(crate) policy_cache: super::certificate::PolicyCache,
    /// Moves on whenever the configuration changes (a client built before is not cached).
    client_generation: std::sync::atomic::AtomicU64,
}

impl AzureBackend {
    /// The state of the mount `config` describes, with settings from the process
    /// environment.
    pub fn new(config: &BackendConfig) -> Arc<Self> {
        Self::with_env(config, Arc::new(azure_clients::process_env))
    }

    /// The state of a mount whose environment is `env` (tests pass the emulator's
    /// endpoints here instead of changing the process environment).
    pub fn with_env(config: &BackendConfig, env: EnvSource) -> Arc<Self> {
        Arc::new(Self {
            system_view: config.system_view.clone(),
            env,
            client: Mutex::new(None),
            app_locks: std::sync::Mutex::new(HashMap::new()),
            root_swap_pending: AtomicBool::new(true),
            identity: super::identity::IdentityCache::default(),
            reconcile_state: super::reconcile::State::default(),
            usage: std::sync::Mutex::default(),
            pool: super::pool::PoolState::default(),
            policy_cache: super::certificate::PolicyCache::default(),
            client_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// One setting of the engine's environment (`AZURE_*`).
    pub(crate) fn env_value(&self, key: &str) -> Option<String> {
        (self.env)(key)
    }

    /// Drops the cached client: the next call builds one from the stored configuration.
    pub async fn reset_client(&self) {
        {
            let mut cached = self.client.lock().await;
            self.client_generation.fetch_add(1, Ordering::SeqCst);
            *cached = None;
        }
        self.policy_cache.reset();
        self.identity.clear().await;
    }

    /// The cached client with its age, and the configuration generation (see
    /// [`AzureBackend::replace_client`]).
    pub(crate) async fn cached_client(&self) -> (Option<(Arc<AzureClient>, Duration)>, u64) {
        let cached = self.client.lock().await;
        (
            cached
                .as_ref()
                .map(|c| (c.client.clone(), c.built.elapsed())),
            self.client_generation.load(Ordering::SeqCst),
        )
    }

    /// Makes `client`, built from the configuration of `generation`, the cached one, unless
    /// the configuration changed since.
    pub(crate) async fn replace_client(&self, client: Arc<AzureClient>, generation: u64) {
        let mut cached = self.client.lock().await;
        if self.client_generation.load(Ordering::SeqCst) == generation {
            *cached = Some(CachedClient {
                client,
                built: Instant::now(),
            });
        }
    }

    /// Refuses (400) an application that is the engine's own identity: checked whenever a
    /// role is written with an application and before every password is added to one, so a
    /// role stored before `client_id` changed, or carried over from the Go engine, cannot
    /// hand out the engine's own credentials.
    pub(crate) async fn refuse_own_application(
        &self,
        client: &Arc<AzureClient>,
        app_id: &str,
        app_object_id: &str,
        deadline: Deadline,
    ) -> Result<(), LogicalError> {
        self.identity
            .get(client, deadline)
            .await?
            .refuse_own_application(app_id, app_object_id)
    }

    /// Who `client` signs in as.
    pub(crate) async fn own_identity_of(
        &self,
        client: &Arc<AzureClient>,
        deadline: Deadline,
    ) -> Result<super::identity::OwnIdentity, LogicalError> {
        self.identity.get(client, deadline).await
    }

    /// The Azure client for the current configuration (stored config merged with the
    /// `AZURE_*` environment). Building it does no network I/O.
    pub(crate) async fn client(
        &self,
        storage: &dyn Storage,
    ) -> Result<Arc<AzureClient>, LogicalError> {
        let mut cached = self.client.lock().await;
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.built.elapsed() < CLIENT_MAX_AGE)
        {
            return Ok(c.client.clone());
        }
        let config = store::get_config(storage).await?.unwrap_or_default();
        let client = Arc::new(
            self.build_client(&config)
                .map_err(|e| LogicalError::internal(e.to_string()))?,
        );
        *cached = Some(CachedClient {
            client: client.clone(),
            built: Instant::now(),
        });
        Ok(client)
    }

    /// A client from `config` (and the environment), not cached.
    pub(crate) fn build_client(&self, config: &Config) -> Result<AzureClient, AzureError> {
        let azure_config = AzureConfig {
            subscription_id: config.subscription_id.clone(),
            tenant_id: config.tenant_id.clone(),
            client_id: config.client_id.clone(),
            client_secret: SecretString::new(config.client_secret.clone()),
            environment: config.environment.clone(),
            identity_token_audience: config.identity_token_audience.clone(),
            identity_token_ttl: Some(config.identity_token_ttl).filter(|d| !d.is_zero()),
            client_certificate: config.client_certificate.clone(),
            client_certificate_key: SecretString::new(config.client_certificate_key.clone()),
        };
        let settings = AzureSettings::resolve(&azure_config, &*self.env)?;
        let assertion_provider: Option<Arc<dyn AssertionProvider>> =
            settings.identity_token_audience.clone().map(|audience| {
                Arc::new(HostIdentityToken {
                    system_view: self.system_view.clone(),
                    audience,
                    ttl: settings
                        .identity_token_ttl
                        .unwrap_or(Duration::from_secs(3600)),
                }) as Arc<dyn AssertionProvider>
            });
        AzureClient::new(
            settings,
            AzureClientOptions {
                assertion_provider,
                ..AzureClientOptions::default()
            },
        )
    }

    /// Refuses, with the host's read-only error (so the host forwards the request to the
    /// active node), work that would act on Azure before its first storage write, on a node
    /// whose storage is read-only (a standby). When the host cannot tell, the storage write
    /// itself decides.
    pub(crate) async fn ensure_writable(&self) -> Result<(), LogicalError> {
        match storage_writable(self.system_view.as_ref()).await {
            Ok(false) => Err(LogicalError::internal(READ_ONLY_ERROR)),
            Ok(true) | Err(_) => Ok(()),
        }
    }

    /// The lock that serialises password changes on application `object_id`.
    pub(crate) fn app_lock(&self, object_id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.app_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(object_id.to_string()).or_default().clone()
    }

    /// Adds `password` to application `app_object_id`, with
    /// the application's lock held. The caller wrote WAL entry `wal_id` for it first; if
    /// Azure refuses outright (4xx: nothing was created), the entry is removed here.
    pub(crate) async fn add_app_password(
        &self,
        client: &AzureClient,
        storage: &dyn Storage,
        wal_id: &str,
        app_object_id: &str,
        password: &NewPassword,
        deadline: Deadline,
    ) -> Result<PasswordCredential, AzureError> {
        let added = {
            let lock = self.app_lock(app_object_id);
            let _guard = lock.lock().await;
            client
                .graph()
                .add_application_password(app_object_id, password, deadline)
                .await
        };
        if let Err(e) = &added {
            if e.status().is_some_and(|s| (400..500).contains(&s)) {
                super::provision::forget_wal(storage, wal_id).await;
            } else {
                // The password may exist: the rollback removes it at its next tick.
                super::provision::abandon_wal(storage, &[wal_id.to_string()]).await;
            }
        }
        added
    }

    pub(crate) fn swap_pending(&self) -> bool {
        self.root_swap_pending.load(Ordering::SeqCst)
    }

    pub(crate) fn set_swap_pending(&self, pending: bool) {
        self.root_swap_pending.store(pending, Ordering::SeqCst);
    }

    /// The periodic function (the host's rollback tick): root and static-role rotations,
    /// then the engine's client and tokens kept warm, the warm pools, usage against Azure's limits and the reconciler. Each part
    /// decides for itself whether this node may do background work.
    fn background_work(self: &Arc<Self>) -> PeriodicFn {
        let rotations = static_rotation::periodic(self);
        let b = self.clone();
        Arc::new(move |req: Request| {
            let (b, rotations) = (b.clone(), rotations.clone());
            Box::pin(async move {
                let result = rotations(req.clone()).await;
                b.keep_warm_where_writable(req.storage.as_ref()).await;
                super::pool::periodic(&b, &req).await;
                b.refresh_usage(&req).await;
                b.reconcile_tick(req.storage.as_ref()).await;
                result
            })
        })
    }

    /// The framework backend for this mount.
    pub fn build(self: &Arc<Self>, config: &BackendConfig) -> Result<Backend, BuildError> {
        let invalidate = self.clone();
        let clean = self.clone();
        let background = self.background_work();
        let backend = BackendBuilder::new(BACKEND_HELP)
            .name("Azure secrets engine")
            .version(concat!("v", env!("CARGO_PKG_VERSION")))
            .special_paths(SpecialPaths {
                seal_wrap_storage: vec![
                    store::CONFIG_KEY.into(),
                    static_store::STATIC_ROLES_PREFIX.into(),
                    super::pool::POOL_PREFIX.into(),
                ],
                local_storage: vec![
                    vault_plugin_sdk::framework::wal::WAL_PREFIX.into(),
                    super::inventory::INVENTORY_PREFIX.into(),
                ],
                ..SpecialPaths::default()
            })
            .path(path_config::path(self))
            .path(path_roles::path(self))
            .path(path_roles::list_path(self))
            .path(path_creds::path(self))
            .path(super::path_pool::path(self))
            .path(path_rotate_root::path(self))
            .path(path_static_roles::path(self))
            .path(path_static_roles::list_path(self))
            .path(path_static_roles::import_path(self))
            .path(path_static_creds::path(self))
            .path(path_static_creds::token_path(self))
            .path(path_rotate_role::path(self))
            .path(super::path_reconcile::path(self))
            .path(super::path_self_test::path(self))
            .secret(lease::service_principal(self))
            .secret(lease::static_service_principal(self))
            .wal_rollback(rollback::handler(self), rollback::MIN_AGE)
            .periodic(background.clone())
            .on_initialize(kick_background(self, background))
            .on_cleanup(Arc::new(move || {
                let b = clean.clone();
                Box::pin(async move { super::pool::cleanup(&b).await })
            }))
            .on_invalidate(Arc::new(move |key: String| {
                let b = invalidate.clone();
                Box::pin(async move {
                    if key == store::CONFIG_KEY {
                        b.reset_client().await;
                    }
                })
            }))
            .build(config)?;
        self.pool.set_storage(backend.storage());
        Ok(backend)
    }
}

/// The mount's initialization hook: starts one pass of the background work (due or
/// interrupted static rotations, pool refills, root rotation, usage, reconciler) at once
/// instead of at the host's next rollback tick, up to a minute later. The host initializes
/// a mount on every node when it unseals, on a node that becomes active (after unloading
/// its standby mounts), and after restarting a crashed plugin; only a node whose storage
/// is writable does the work. Initialize returns at once: the host holds client requests
/// until every mount is initialized. (The hook has the signature of a periodic function.)
fn kick_background(b: &Arc<AzureBackend>, background: PeriodicFn) -> PeriodicFn {
    let b = b.clone();
    Arc::new(move |req: Request| {
        let (b, background) = (b.clone(), background.clone());
        Box::pin(async move {
            tokio::spawn(async move {
                let writable = storage_writable(b.system_view.as_ref()).await;
                if !matches!(writable, Ok(true)) || !b.background_allowed().await {
                    tracing::debug!(
                        "mount initialized on a node that may not write: no background work here"
                    );
                    return;
                }
                tracing::debug!("mount initialized: starting the background work now");
                if let Err(e) = background(req).await {
                    tracing::warn!(error = %e, "background work after initialization failed; the next rollback tick retries");
                }
            });
            Ok(())
        })
    })
}

/// Client assertions from the host's plugin identity tokens (workload identity federation).
struct HostIdentityToken {
    system_view: Arc<dyn SystemView>,
    audience: String,
    ttl: Duration,
}

#[async_trait]
impl AssertionProvider for HostIdentityToken {
    async fn assertion(&self, _deadline: Deadline) -> Result<SecretString, AzureError> {
        self.system_view
            .generate_identity_token(&self.audience, self.ttl)
            .await
            .map(|(token, _)| SecretString::new(token))
            .map_err(|e| {
                AzureError::config(format!(
                    "cannot get a plugin identity token from the host: {e}"
                ))
            })
    }
}

/// A storage failure as a request error with `context`; the host's read-only refusal is
/// passed on word for word, so the host recognises it and forwards the request.
pub(crate) fn storage_failure(context: &str, e: impl Into<LogicalError>) -> LogicalError {
    let e = e.into();
    if e.is_read_only() {
        e
    } else {
        LogicalError::internal(format!("{context}: {e}"))
    }
}
