//! The engine in process: its framework backend on in-memory storage and a test system view
//! (`vault_plugin_sdk::testing`), against the emulator library on loopback. Covers what is
//! slow to reach through OpenBao (rollback of every write-ahead-log kind, renewal caps,
//! scheduled root rotation, the caches) in milliseconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_clients::{
    AzureClient, AzureClientOptions, AzureConfig, AzureSettings, Deadline, NewApplication,
    NewPassword,
};
use azure_emulator::{Config as EmulatorConfig, Emulator};
use chrono::Utc;
use serde_json::{json, Value};
use vault_plugin_sdk::framework::{object, wal, Backend};
use vault_plugin_sdk::logical::{
    Backend as _, LogicalError, Operation, ReplicationState, Request, Response, Storage,
};
use vault_plugin_sdk::testing::{backend_config, TestSystemView};
use vault_plugin_secrets_azure::{store, AzureBackend};

const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

/// The emulator variables the engine reads from its environment: endpoints and CA only, so
/// that the identity comes from the stored `config`.
const ENDPOINT_VARS: [&str; 4] = [
    "AZURE_AUTHORITY_HOST",
    "AZURE_GRAPH_ENDPOINT",
    "AZURE_RESOURCE_MANAGER_ENDPOINT",
    "SSL_CERT_FILE",
];

struct Fixture {
    emu: Option<Emulator>,
    env: HashMap<String, String>,
    backend: Backend,
    /// The storage under the backend's cache (what another node would write).
    raw_storage: Arc<dyn Storage>,
    system_view: Arc<TestSystemView>,
    /// The emulator's root identity, to look at Azure from outside the engine.
    azure: AzureClient,
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
    async fn start() -> Fixture {
        Self::start_with_env(&[]).await
    }

    /// [`Fixture::start`] with `extra` in the engine's environment.
    async fn start_with_env(extra: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(EmulatorConfig {
            arc_token_dir: dir.path().join("tokens"),
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        let env: HashMap<String, String> = emu.env().iter().cloned().collect();
        let engine_env: HashMap<String, String> = ENDPOINT_VARS
            .iter()
            .map(|k| (k.to_string(), env[*k].clone()))
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let system_view = Arc::new(TestSystemView::default());
        let config = backend_config(system_view.clone());
        let raw_storage = config.storage.clone();
        let state =
            AzureBackend::with_env(&config, Arc::new(move |k: &str| engine_env.get(k).cloned()));
        let backend = state.build(&config).expect("build the backend");
        let lookup = |k: &str| env.get(k).cloned();
        let settings = AzureSettings::resolve(&AzureConfig::default(), &lookup).expect("settings");
        let azure = AzureClient::new(settings, AzureClientOptions::default()).expect("client");
        let f = Fixture {
            emu: Some(emu),
            env,
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

    fn request(&self, op: Operation, path: &str, data: Value) -> Request {
        Request::new(op, path, self.backend.storage()).with_data(object(data))
    }

    async fn call(
        &self,
        op: Operation,
        path: &str,
        data: Value,
    ) -> Result<Option<Response>, LogicalError> {
        self.backend
            .handle_request(self.request(op, path, data))
            .await
    }

    /// One rollback tick of the host; `immediate` also rolls back young entries.
    async fn tick(&self, immediate: bool) -> Result<Option<Response>, LogicalError> {
        self.call(Operation::Rollback, "", json!({ "immediate": immediate }))
            .await
    }

    fn subscription_scope(&self) -> String {
        format!("/subscriptions/{}", self.env["AZURE_SUBSCRIPTION_ID"])
    }

    async fn config(&self) -> store::Config {
        store::get_config(self.backend.storage().as_ref())
            .await
            .expect("read config")
            .expect("config exists")
    }

    async fn wal_count(&self) -> usize {
        wal::list(self.backend.storage().as_ref())
            .await
            .expect("list WAL")
            .len()
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

fn in_a_day() -> String {
    (Utc::now() + chrono::Duration::hours(24)).to_rfc3339()
}

fn vault_name() -> String {
    format!("vault-plugin-secrets-azure-{}", uuid::Uuid::new_v4())
}

async fn has_password_named(azure: &AzureClient, app: &str, name: &str) -> bool {
    azure
        .graph()
        .list_application_passwords(app, deadline())
        .await
        .expect("list passwords")
        .iter()
        .any(|p| p.display_name.as_deref() == Some(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_undoes_every_wal_kind() {
    let f = Fixture::start().await;
    let storage = f.backend.storage();
    let graph = f.azure.graph();

    // appCreate: an application whose issuance never finished.
    let orphan = graph
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .expect("create app");
    wal::put(
        storage.as_ref(),
        "appCreate",
        json!({"AppID": orphan.app_id, "AppObjID": orphan.id,
               "DisplayName": orphan.display_name, "Expiration": in_a_day()}),
    )
    .await
    .expect("WAL");

    // addPassword: a password added to an existing application.
    let existing = graph
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .expect("create app");
    let pw_name = vault_name();
    graph
        .add_application_password(
            &existing.id,
            &NewPassword {
                display_name: Some(pw_name.clone()),
                start: None,
                end: None,
            },
            deadline(),
        )
        .await
        .expect("add password");
    wal::put(
        storage.as_ref(),
        "addPassword",
        json!({"AppObjID": existing.id, "DisplayName": pw_name, "Expiration": in_a_day()}),
    )
    .await
    .expect("WAL");

    // appRoleAssign: a role assignment made for a principal whose issuance failed.
    let sp = graph
        .create_service_principal(&existing.app_id, deadline())
        .await
        .expect("create SP");
    let scope = f.subscription_scope();
    let reader = format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}");
    let ra_name = uuid::Uuid::new_v4().to_string();
    let ra = f
        .azure
        .arm()
        .create_role_assignment(&scope, &ra_name, &reader, &sp.id, deadline())
        .await
        .expect("assign role");
    wal::put(
        storage.as_ref(),
        "appRoleAssign",
        json!({"SpID": sp.id, "AssignmentIDs": [ra_name],
               "AzureRoles": [{"role_name": "Reader", "role_id": reader, "scope": scope}],
               "Expiration": in_a_day()}),
    )
    .await
    .expect("WAL");

    // rotateRootCreds: a root password added, the process gone before it was recorded.
    let root = graph
        .find_application_by_app_id(&f.env["AZURE_CLIENT_ID"], deadline())
        .await
        .expect("find root app")
        .expect("root app exists");
    let root_pw_name = format!("vault-{}", uuid::Uuid::new_v4());
    graph
        .add_application_password(
            &root.id,
            &NewPassword {
                display_name: Some(root_pw_name.clone()),
                start: None,
                end: None,
            },
            deadline(),
        )
        .await
        .expect("add root password");
    wal::put(
        storage.as_ref(),
        "rotateRootCreds",
        json!({"AppObjID": root.id, "DisplayName": root_pw_name, "Expiration": in_a_day()}),
    )
    .await
    .expect("WAL");

    assert_eq!(f.wal_count().await, 4);
    f.tick(false).await.expect("tick");
    assert_eq!(
        f.wal_count().await,
        4,
        "young entries belong to running work"
    );
    assert!(has_password_named(&f.azure, &existing.id, &pw_name).await);

    f.tick(true).await.expect("immediate rollback");
    assert_eq!(
        f.wal_count().await,
        0,
        "every entry rolled back and removed"
    );
    let gone = graph.get_application(&orphan.id, deadline()).await;
    assert!(gone.as_ref().is_err_and(|e| e.is_not_found()), "{gone:?}");
    assert!(!has_password_named(&f.azure, &existing.id, &pw_name).await);
    let ra_now = f.azure.arm().get_role_assignment(&ra.id, deadline()).await;
    assert!(
        ra_now.as_ref().is_err_and(|e| e.is_not_found()),
        "{ra_now:?}"
    );
    assert!(!has_password_named(&f.azure, &root.id, &root_pw_name).await);
    let config = f.config().await;
    assert!(config.new_client_secret.is_empty());
    assert_eq!(
        config.client_secret, f.env["AZURE_CLIENT_SECRET"],
        "root kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_is_capped_by_the_role_and_the_passwords_life() {
    let f = Fixture::start().await;
    let roles = json!([{"role_id": format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
        f.subscription_scope()
    ), "scope": f.subscription_scope()}]);
    f.call(
        Operation::Create,
        "roles/capped",
        json!({"azure_roles": roles.to_string(), "ttl": "1h", "max_ttl": "80m",
               "explicit_max_ttl": "90m", "credential_ready_timeout": 0}),
    )
    .await
    .expect("write role");

    let issued = f
        .call(Operation::Read, "creds/capped", json!({}))
        .await
        .expect("issue")
        .expect("a response");
    let secret = issued.secret.clone().expect("a lease");
    assert!(secret.lease.renewable, "from the registered secret type");
    assert_eq!(secret.lease.ttl, Duration::from_secs(3600));
    assert_eq!(
        secret.lease.max_ttl,
        Duration::from_secs(4800),
        "the role's max_ttl"
    );

    let renew = |mut s: vault_plugin_sdk::logical::Secret, key_end: chrono::DateTime<Utc>| {
        s.lease.issue_time = Some(Utc::now());
        s.internal_data.insert(
            "key_end_date".into(),
            json!(vault_plugin_sdk::gocompat::format_time(key_end)),
        );
        let mut req = f.request(Operation::Renew, "creds/capped", json!({}));
        req.secret = Some(s);
        f.backend.handle_request(req)
    };
    let fresh = renew(secret.clone(), Utc::now() + chrono::Duration::minutes(90))
        .await
        .expect("renew")
        .and_then(|r| r.secret)
        .expect("a lease");
    assert_eq!(fresh.lease.ttl, Duration::from_secs(3600));
    assert!(fresh.lease.renewable);
    assert_eq!(
        fresh.lease.max_ttl,
        Duration::from_secs(4800),
        "the role's cap"
    );

    let ending = renew(secret.clone(), Utc::now() + chrono::Duration::minutes(20))
        .await
        .expect("renew")
        .and_then(|r| r.secret)
        .expect("a lease");
    assert!(
        ending.lease.ttl <= Duration::from_secs(1200)
            && ending.lease.ttl > Duration::from_secs(1190),
        "the password's remaining life caps the TTL: {:?}",
        ending.lease.ttl
    );
    assert!(!ending.lease.renewable, "nothing left to renew into");
    assert!(
        ending.lease.max_ttl <= Duration::from_secs(1200),
        "the lease never outlives the password: {:?}",
        ending.lease.max_ttl
    );

    // Revoke removes the application from Azure.
    let app = secret.internal_data["app_object_id"]
        .as_str()
        .expect("app id")
        .to_string();
    let mut revoke = f.request(Operation::Revoke, "creds/capped", json!({}));
    revoke.secret = Some(secret);
    f.backend.handle_request(revoke).await.expect("revoke");
    let gone = f.azure.graph().get_application(&app, deadline()).await;
    assert!(gone.as_ref().is_err_and(|e| e.is_not_found()), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_runs_when_due_and_only_where_writes_belong() {
    let f = Fixture::start().await;
    f.call(
        Operation::Update,
        "config",
        json!({"rotation_period": "1h"}),
    )
    .await
    .expect("schedule rotation");
    let original = f.config().await;
    assert!(original.last_rotation_time.is_some());

    f.tick(false).await.expect("tick");
    assert_eq!(
        f.config().await.client_secret,
        original.client_secret,
        "not due yet"
    );

    let mut aged = original.clone();
    aged.last_rotation_time = Some(Utc::now() - chrono::Duration::hours(2));
    store::put_config(f.backend.storage().as_ref(), &aged)
        .await
        .expect("age the schedule");

    f.system_view
        .set_replication_state(ReplicationState::PERFORMANCE_STANDBY);
    f.tick(false).await.expect("tick on a standby");
    assert_eq!(
        f.config().await.client_secret,
        original.client_secret,
        "a performance standby leaves rotation to the active node"
    );

    f.system_view.set_replication_state(
        ReplicationState::PERFORMANCE_DISABLED | ReplicationState::DR_DISABLED,
    );
    f.tick(false).await.expect("tick");
    let rotated = f.config().await;
    assert_ne!(rotated.client_secret, original.client_secret, "rotated");
    assert!(!rotated.client_secret_key_id.is_empty());
    assert!(rotated.new_client_secret.is_empty(), "swap finished");
    assert!(rotated.last_rotation_time > aged.last_rotation_time);

    // The engine works with the new root secret.
    f.call(Operation::Update, "rotate-root", json!({}))
        .await
        .expect("rotate again with the rotated secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_follow_invalidation() {
    let f = Fixture::start().await;
    let role = |name: &str| {
        let roles = json!([{"role_id": format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
            f.subscription_scope()
        ), "scope": f.subscription_scope()}]);
        (
            format!("roles/{name}"),
            json!({"azure_roles": roles.to_string()}),
        )
    };
    let (path, body) = role("before");
    f.call(Operation::Create, &path, body)
        .await
        .expect("role write resolves roles in Azure");

    // Another node changes the config underneath (here: a secret Azure refuses).
    let mut changed = store::get_config(f.raw_storage.as_ref())
        .await
        .expect("read")
        .expect("config");
    changed.client_secret = "not-the-secret".into();
    store::put_config(f.raw_storage.as_ref(), &changed)
        .await
        .expect("write underneath");

    let read = f
        .call(Operation::Read, "config", json!({}))
        .await
        .expect("read")
        .expect("data");
    assert_eq!(
        read.data.expect("data")["client_id"],
        f.env["AZURE_CLIENT_ID"]
    );
    assert_eq!(
        f.config().await.client_secret,
        f.env["AZURE_CLIENT_SECRET"],
        "the storage cache still serves the old entry"
    );
    let (path, body) = role("cached");
    f.call(Operation::Create, &path, body)
        .await
        .expect("the cached Azure client still works");

    f.backend.invalidate_key(store::CONFIG_KEY).await;
    assert_eq!(f.config().await.client_secret, "not-the-secret");
    let (path, body) = role("after");
    let err = f.call(Operation::Create, &path, body).await;
    assert!(
        err.is_err(),
        "the client was rebuilt from the new config: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_performance_standby_are_forwarded() {
    let f = Fixture::start().await;
    f.system_view
        .set_replication_state(ReplicationState::PERFORMANCE_STANDBY);
    for (op, path) in [
        (Operation::Read, "creds/any"),
        (Operation::Update, "rotate-root"),
        (Operation::Update, "config"),
        (Operation::Create, "roles/any"),
        (Operation::Delete, "roles/any"),
    ] {
        let err = f.call(op.clone(), path, json!({})).await;
        assert_eq!(err, Err(LogicalError::ReadOnly), "{op} {path}");
    }
    let read = f.call(Operation::Read, "config", json!({})).await;
    assert!(read.is_ok(), "reads are served here: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_measured_periodically_on_the_active_node_only() {
    let f = Fixture::start_with_env(&[
        ("AZURE_USAGE_REFRESH_SECONDS", "0"),
        ("AZURE_ROLE_ASSIGNMENT_LIMIT", "4"),
    ])
    .await;
    let shared = f.emu.as_ref().expect("emulator").shared();
    shared.update_settings(|s| s.role_assignment_limit = 4);
    let roles = json!([{"role_name": "Reader", "scope": f.subscription_scope()}]).to_string();
    f.call(
        Operation::Create,
        "roles/r",
        json!({ "azure_roles": roles }),
    )
    .await
    .expect("write role");
    let counted = |shared: &azure_emulator::Shared| {
        shared
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path
                        .split('?')
                        .next()
                        .is_some_and(|p| p.ends_with("/roleAssignments"))
            })
            .count()
    };

    // A performance standby leaves measuring to the active node.
    f.system_view
        .set_replication_state(ReplicationState::PERFORMANCE_STANDBY);
    shared.clear_requests();
    f.tick(false).await.expect("tick on a standby");
    assert_eq!(counted(&shared), 0, "a standby measured usage");

    // The active node measures on its tick (2 seeded assignments of 4); each issuance moves
    // the count forward, and the one that reaches 80% warns.
    f.system_view.set_replication_state(
        ReplicationState::PERFORMANCE_DISABLED | ReplicationState::DR_DISABLED,
    );
    f.tick(false).await.expect("tick");
    assert_eq!(counted(&shared), 1, "the active node measured usage");
    let first = f
        .call(Operation::Read, "creds/r", json!({}))
        .await
        .expect("creds")
        .expect("response");
    assert!(first.warnings.is_empty(), "3 of 4: {:?}", first.warnings);
    let second = f
        .call(Operation::Read, "creds/r", json!({}))
        .await
        .expect("creds")
        .expect("response");
    assert!(
        second
            .warnings
            .iter()
            .any(|w| w.contains("4 of its 4 role assignments (100%)")),
        "{:?}",
        second.warnings
    );
}

/// Reads `pool/<role>`.
async fn pool_status(f: &Fixture, role: &str) -> Value {
    let resp = f
        .call(Operation::Read, &format!("pool/{role}"), json!({}))
        .await
        .expect("pool status")
        .expect("a response");
    Value::Object(resp.data.expect("data"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_fill_only_where_writes_belong_and_hand_out_within_the_roles_limits() {
    let f = Fixture::start().await;
    let roles = json!([{"role_id": format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
        f.subscription_scope()
    ), "scope": f.subscription_scope()}]);
    f.call(
        Operation::Create,
        "roles/pooled",
        json!({"azure_roles": roles.to_string(), "ttl": "1h", "max_ttl": "80m",
               "explicit_max_ttl": "90m"}),
    )
    .await
    .expect("write role");

    // Another node turns the pool on; this node is a performance standby.
    f.system_view
        .set_replication_state(ReplicationState::PERFORMANCE_STANDBY);
    let storage = f.backend.storage();
    let mut role = store::get_role(storage.as_ref(), "pooled")
        .await
        .expect("read role")
        .expect("role");
    role.pool_size = 2;
    store::put_role(f.raw_storage.as_ref(), "pooled", &role)
        .await
        .expect("store role");
    f.backend.invalidate_key("roles/pooled").await;
    for _ in 0..3 {
        f.tick(false).await.expect("tick on a standby");
    }
    let s = pool_status(&f, "pooled").await;
    assert_eq!(
        (s["ready"].clone(), s["pending"].clone()),
        (json!(0), json!(0))
    );
    assert!(
        vault_plugin_secrets_azure::pool::pooled_object_ids(f.raw_storage.as_ref())
            .await
            .expect("list")
            .is_empty(),
        "a standby creates nothing"
    );

    // The active node fills it.
    f.system_view.set_replication_state(
        ReplicationState::PERFORMANCE_DISABLED | ReplicationState::DR_DISABLED,
    );
    f.tick(false).await.expect("tick");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pool_status(&f, "pooled").await["ready"] != 2 {
        assert!(std::time::Instant::now() < deadline, "the pool fills");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = vault_plugin_secrets_azure::pool::pooled_object_ids(f.raw_storage.as_ref())
        .await
        .expect("list");
    // Two applications, two service principals (their passwords with them), two role
    // assignments.
    assert_eq!(held.len(), 6, "{held:?}");

    let issued = f
        .call(Operation::Read, "creds/pooled", json!({}))
        .await
        .expect("issue")
        .expect("a response");
    assert!(issued.warnings.is_empty(), "{:?}", issued.warnings);
    let secret = issued.secret.expect("a lease");
    let app = secret.internal_data["app_object_id"].as_str().unwrap();
    assert!(held.iter().any(|h| h == app), "handed out from the pool");
    assert_eq!(secret.lease.ttl, Duration::from_secs(3600));
    assert_eq!(secret.lease.max_ttl, Duration::from_secs(4800), "max_ttl");
    let key_end = vault_plugin_sdk::gocompat::go_time::parse(
        secret.internal_data["key_end_date"].as_str().unwrap(),
    )
    .unwrap()
    .unwrap();
    assert!(
        key_end <= Utc::now() + chrono::Duration::minutes(90),
        "valid in Azure no longer than an unpooled credential issued now"
    );
    assert!(
        key_end > Utc::now() + chrono::Duration::minutes(80),
        "outlives its lease"
    );
}
