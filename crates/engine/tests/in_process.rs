//! The engine in process: its framework backend on in-memory storage and a test system view
//! (`vault_plugin_sdk::testing`), against the emulator library on loopback. Covers what is
//! slow to reach through OpenBao (rollback of every write-ahead-log kind, renewal caps,
//! scheduled root rotation, the caches) in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use azure_clients::{AzureClient, NewApplication, NewPassword};
use chrono::Utc;
use serde_json::{json, Value};
use vault_plugin_sdk::framework::wal;
use vault_plugin_sdk::logical::{
    Backend as _, LogicalError, Operation, ReplicationState, Response, Storage, StorageEntry,
};
use vault_plugin_secrets_azure::{store, ROLLBACK_SETTLE_ENV as SETTLE_ENV};

mod support;

use support::{deadline, Fixture, READER};

impl Fixture {
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
        3,
        "undone; every entry but the root rotation's is kept for requests landing late"
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
    f.tick(true).await.expect("second rollback");
    assert_eq!(
        f.wal_count().await,
        0,
        "every entry rolled back again and removed"
    );
}

/// Writes a WAL entry as a plugin process that has since died wrote it (another `writer`),
/// so the next rollback tick takes it at once.
async fn put_dead_writers_entry(storage: &dyn Storage, kind: &str, data: Value) {
    let entry = json!({
        "type": kind,
        "data": data,
        "created_at": Utc::now().timestamp(),
        "writer": "a-plugin-process-that-was-killed",
    });
    storage
        .put(StorageEntry::json(format!("wal/{}", uuid::Uuid::new_v4()), &entry).expect("JSON"))
        .await
        .expect("WAL");
}

/// An issuance killed in its third round: its application and service principal exist, its
/// role assignment PUT is on its way to ARM. The rollback deletes the application (and so the
/// service principal) and finds no assignment; then the PUT lands, and ARM makes the
/// assignment although its principal is gone (`principalType` skips the lookup). The entry
/// must outlive that: its second rollback deletes the late assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_assignment_landing_after_the_rollback_is_deleted_before_the_entry_goes() {
    let f = Fixture::start().await;
    let storage = f.backend.storage();
    let graph = f.azure.graph();
    let app = graph
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .expect("create app");
    let sp = graph
        .create_service_principal(&app.app_id, deadline())
        .await
        .expect("create SP");
    let scope = f.subscription_scope();
    let reader = format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}");
    let ra_name = uuid::Uuid::new_v4().to_string();
    put_dead_writers_entry(
        storage.as_ref(),
        "appCreate",
        json!({"AppID": app.app_id, "AppObjID": app.id, "DisplayName": app.display_name,
               "Expiration": in_a_day()}),
    )
    .await;
    put_dead_writers_entry(
        storage.as_ref(),
        "appRoleAssign",
        json!({"SpID": "", "AssignmentIDs": [ra_name],
               "AzureRoles": [{"role_name": "Reader", "role_id": reader, "scope": scope}],
               "Expiration": in_a_day()}),
    )
    .await;

    f.tick(false).await.expect("rollback");
    let gone = graph.get_application(&app.id, deadline()).await;
    assert!(gone.as_ref().is_err_and(|e| e.is_not_found()), "{gone:?}");
    assert_eq!(
        f.wal_count().await,
        2,
        "rolled back, kept for late requests"
    );

    // The killed process's PUT lands now.
    let late = f
        .azure
        .arm()
        .create_role_assignment(&scope, &ra_name, &reader, &sp.id, deadline())
        .await
        .expect("ARM makes the assignment for a deleted principal");

    f.tick(false).await.expect("second rollback");
    let now = f
        .azure
        .arm()
        .get_role_assignment(&late.id, deadline())
        .await;
    assert!(now.as_ref().is_err_and(|e| e.is_not_found()), "{now:?}");
    assert_eq!(f.wal_count().await, 0, "the second rollback is final");
    let log = f.log();
    assert_eq!(
        calls(&log, "DELETE", &ra_name).len(),
        2,
        "one deletion per rollback: {log:?}"
    );
}

/// The application POST of a killed issuance lands after the rollback searched for it by
/// name (its object id was never recorded): the entry's second rollback finds and deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_landing_after_the_rollback_searched_for_it_is_deleted() {
    let f = Fixture::start().await;
    let storage = f.backend.storage();
    let late = NewApplication::dynamic();
    put_dead_writers_entry(
        storage.as_ref(),
        "appCreate",
        json!({"AppID": "", "AppObjID": "", "DisplayName": late.display_name,
               "Expiration": in_a_day()}),
    )
    .await;
    f.tick(false).await.expect("rollback");
    assert_eq!(f.wal_count().await, 1, "nothing found yet; kept");

    let app = f
        .azure
        .graph()
        .create_application(&late, deadline())
        .await
        .expect("the late POST");
    f.tick(false).await.expect("second rollback");
    let gone = f.azure.graph().get_application(&app.id, deadline()).await;
    assert!(gone.as_ref().is_err_and(|e| e.is_not_found()), "{gone:?}");
    assert_eq!(f.wal_count().await, 0);
}

/// A settling entry is not rolled back again before its window has passed: with the default
/// window, a second tick right away leaves it alone (no Azure call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settling_entry_waits_for_its_window() {
    let f = Fixture::start_with_env(&[(SETTLE_ENV, "3600")]).await;
    let storage = f.backend.storage();
    let name = NewApplication::dynamic().display_name;
    put_dead_writers_entry(
        storage.as_ref(),
        "appCreate",
        json!({"AppID": "", "AppObjID": "", "DisplayName": name, "Expiration": in_a_day()}),
    )
    .await;
    f.tick(false).await.expect("rollback");
    f.shared().clear_requests();
    f.tick(false).await.expect("tick");
    assert_eq!(f.wal_count().await, 1);
    let log = f.log();
    assert!(
        calls(&log, "GET", &name).is_empty(),
        "no second search inside the window: {log:?}"
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
    let shared = f.emulator().shared();
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

// ------------------------------------------------------------------ the issuance fast path
//
// These tests read the critical path from the emulator's request log: with a fixed latency
// per call, calls that go out together overlap, and a call that waits for another starts
// after it finished. `rounds` counts the longest chain of such waits: the Azure round trips
// on the critical path. No wall-clock figure is asserted.

use azure_emulator::faults::{FaultRule, RequestRecord};

const GROUP: &str = r#"[{"group_name": "vault-test-group-1"}]"#;
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const USER_ACCESS_ADMIN: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";

impl Fixture {
    fn shared(&self) -> Arc<azure_emulator::Shared> {
        self.emulator().shared()
    }

    fn log(&self) -> Vec<RequestRecord> {
        self.shared().requests()
    }

    /// A role with six Azure roles (four at the subscription, two on a resource group) and
    /// two groups.
    async fn wide_role(&self, name: &str, extra: Value) {
        let sub = self.subscription_scope();
        let rg = format!("{sub}/resourceGroups/vault-rg");
        let def =
            |id: &str| format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{id}");
        let roles = json!([
            {"role_id": def(READER), "scope": sub},
            {"role_id": def(CONTRIBUTOR), "scope": sub},
            {"role_id": def(OWNER), "scope": sub},
            {"role_id": def(USER_ACCESS_ADMIN), "scope": sub},
            {"role_id": def(READER), "scope": rg},
            {"role_id": def(CONTRIBUTOR), "scope": rg},
        ]);
        let groups =
            json!([{"group_name": "vault-test-group-1"}, {"group_name": "vault-test-group-2"}]);
        let mut body =
            json!({"azure_roles": roles.to_string(), "azure_groups": groups.to_string()});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        self.call(Operation::Create, &format!("roles/{name}"), body)
            .await
            .expect("write role");
    }

    async fn issue(&self, role: &str) -> Response {
        self.call(Operation::Read, &format!("creds/{role}"), json!({}))
            .await
            .expect("issue")
            .expect("a response")
    }

    async fn revoke(
        &self,
        role: &str,
        issued: &Response,
    ) -> Result<Option<Response>, LogicalError> {
        let mut req = self.request(Operation::Revoke, &format!("creds/{role}"), json!({}));
        req.secret = issued.secret.clone();
        self.backend.handle_request(req).await
    }

    fn set_latency(&self, ms: u64) {
        self.shared().update_settings(|s| s.latency_ms = ms);
    }
}

/// The longest chain of calls each of which started after the previous one finished.
fn rounds(calls: &[&RequestRecord]) -> usize {
    let mut sorted: Vec<&RequestRecord> = calls.to_vec();
    sorted.sort_by_key(|c| c.started_ms);
    let mut depth = vec![0usize; sorted.len()];
    for i in 0..sorted.len() {
        let before = (0..i)
            .filter(|&j| sorted[j].finished_ms <= sorted[i].started_ms)
            .map(|j| depth[j])
            .max()
            .unwrap_or(0);
        depth[i] = before + 1;
    }
    depth.into_iter().max().unwrap_or(0)
}

/// Whether every call of `a` started before any call of `b` finished and vice versa: they
/// went out together.
fn together(a: &[&RequestRecord], b: &[&RequestRecord]) -> bool {
    let all: Vec<&&RequestRecord> = a.iter().chain(b).collect();
    let last_start = all.iter().map(|c| c.started_ms).max().unwrap_or(0);
    let first_end = all.iter().map(|c| c.finished_ms).min().unwrap_or(0);
    last_start < first_end
}

fn data_str(resp: &Response, key: &str) -> String {
    resp.data.as_ref().expect("data")[key]
        .as_str()
        .expect("a string")
        .to_string()
}

fn internal_str(resp: &Response, key: &str) -> String {
    resp.secret.as_ref().expect("a lease").internal_data[key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_makes_three_rounds_whatever_the_number_of_roles() {
    let f = Fixture::start().await;
    f.wide_role("wide", json!({})).await;
    // The first issuance fills the engine's token cache; the next finds it warm.
    let first = f.issue("wide").await;
    // A latency that separates the rounds well; password writes as fast as any other call.
    f.set_latency(100);
    f.shared().update_settings(|s| s.password_write_ms = 0);
    f.shared().clear_requests();
    let issued = f.issue("wide").await;
    let log = f.log();
    let client_id = data_str(&issued, "client_id");
    let root = f.env["AZURE_CLIENT_ID"].clone();

    assert!(
        log.iter()
            .all(|c| c.client_id.as_deref() != Some(root.as_str())),
        "no token request for the engine itself: {log:?}"
    );
    let proof: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| c.client_id.as_deref() == Some(client_id.as_str()))
        .collect();
    assert_eq!(
        proof.len(),
        vault_plugin_secrets_azure::provision::PROOF_WIDTH,
        "one round of token requests proved the credential: {log:?}"
    );
    let is =
        |c: &&RequestRecord, method: &str, part: &str| c.method == method && c.path.contains(part);
    let app: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| is(c, "POST", "/v1.0/applications") && !c.path.contains("addPassword"))
        .collect();
    let sp: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| is(c, "POST", "/v1.0/servicePrincipals"))
        .collect();
    let password: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| is(c, "POST", "/addPassword"))
        .collect();
    let assignments: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| is(c, "PUT", "roleAssignments"))
        .collect();
    let members: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| is(c, "POST", "/members/$ref"))
        .collect();
    assert_eq!(
        (
            app.len(),
            sp.len(),
            password.len(),
            assignments.len(),
            members.len()
        ),
        (1, 1, 1, 6, 2),
        "{log:?}"
    );
    assert!(
        together(&sp, &password),
        "the password goes on the application beside the service principal: {log:?}"
    );
    assert!(
        together(&assignments, &members) && together(&assignments, &proof),
        "assignments, memberships and the proof together: {log:?}"
    );
    let writes_and_proof: Vec<&RequestRecord> = app
        .iter()
        .chain(&sp)
        .chain(&password)
        .chain(&assignments)
        .chain(&members)
        .chain(&proof)
        .copied()
        .collect();
    assert_eq!(rounds(&writes_and_proof), 3, "{log:?}");
    // The tenant's policy, known from the first issuance, is read again beside the
    // application: everything from the read to the answer is three rounds.
    let policy: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| is(c, "GET", "defaultAppManagementPolicy"))
        .collect();
    assert_eq!(policy.len(), 1, "{log:?}");
    assert!(together(&policy, &app), "{log:?}");
    let all: Vec<&RequestRecord> = log.iter().collect();
    assert_eq!(rounds(&all), 3, "{log:?}");
    assert!(issued.warnings.is_empty(), "{:?}", issued.warnings);

    // The password is on the application (the lease deletes it with the application).
    let app_object_id = internal_str(&issued, "app_object_id");
    let passwords = f
        .azure
        .graph()
        .list_application_passwords(&app_object_id, deadline())
        .await
        .expect("list");
    assert_eq!(passwords.len(), 1);

    for resp in [&first, &issued] {
        f.revoke("wide", resp).await.expect("revoke");
    }
    assert_eq!(f.wal_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_one_round_and_finishes_what_it_can() {
    let f = Fixture::start().await;
    f.wide_role("wide", json!({})).await;
    let issued = f.issue("wide").await;
    f.set_latency(40);
    f.shared().clear_requests();
    assert_eq!(f.revoke("wide", &issued).await, Ok(None));
    let log = f.log();
    let deletes: Vec<&RequestRecord> = log.iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(
        deletes.len(),
        6 + 2 + 1,
        "assignments, memberships, application: {log:?}"
    );
    assert_eq!(
        rounds(&log.iter().collect::<Vec<_>>()),
        1,
        "one round: {log:?}"
    );
    let app_object_id = internal_str(&issued, "app_object_id");
    let gone = f
        .azure
        .graph()
        .get_application(&app_object_id, deadline())
        .await;
    assert!(gone.is_err_and(|e| e.is_not_found()));
    let dump = f.shared().dir().dump();
    assert!(
        dump["roleAssignments"]
            .as_array()
            .expect("assignments")
            .iter()
            .all(|ra| ra["properties"]["principalId"]
                != json!(internal_str(&issued, "sp_object_id"))),
        "every assignment went"
    );

    // Already gone counts as done.
    f.shared().clear_requests();
    assert_eq!(f.revoke("wide", &issued).await, Ok(None));
    assert!(
        f.log()
            .iter()
            .all(|c| c.status == 404 || c.status == 204 || c.status == 200 || c.status == 400),
        "{:?}",
        f.log()
    );

    // One failing deletion fails the revocation, after the others went; the retry finishes.
    let second = f.issue("wide").await;
    let ra_ids: Vec<String> = second.secret.as_ref().expect("lease").internal_data
        ["role_assignment_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    let failing = ra_ids[2].rsplit('/').next().expect("name").to_string();
    f.shared().faults().add(FaultRule {
        method: Some("DELETE".into()),
        path_contains: Some(failing.clone()),
        service: None,
        status: Some(500),
        retry_after_secs: None,
        times: None,
        drop: false,
        delay_ms: None,
    });
    f.shared().clear_requests();
    let err = f
        .revoke("wide", &second)
        .await
        .expect_err("the revocation fails");
    assert!(err.to_string().contains("error unassigning role"), "{err}");
    let app2 = internal_str(&second, "app_object_id");
    let log = f.log();
    assert!(
        log.iter()
            .any(|c| c.method == "DELETE" && c.path.contains(&app2) && c.status == 204),
        "the application went anyway: {log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|c| c.method == "DELETE"
                && c.path.contains("roleAssignments")
                && c.status == 200)
            .count(),
        5,
        "the other assignments went anyway: {log:?}"
    );
    f.shared().faults().clear();
    assert_eq!(
        f.revoke("wide", &second).await,
        Ok(None),
        "the host's retry finishes it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_deletion_purges_in_a_second_round() {
    let f = Fixture::start().await;
    f.wide_role("purged", json!({"permanently_delete": true}))
        .await;
    let issued = f.issue("purged").await;
    f.set_latency(40);
    f.shared().clear_requests();
    assert_eq!(f.revoke("purged", &issued).await, Ok(None));
    let log = f.log();
    let all: Vec<&RequestRecord> = log.iter().collect();
    assert_eq!(rounds(&all), 2, "{log:?}");
    let purges: Vec<&RequestRecord> = log
        .iter()
        .filter(|c| c.path.contains("deletedItems"))
        .collect();
    assert_eq!(
        purges.len(),
        2,
        "application and service principal: {log:?}"
    );
    let dump = f.shared().dir().dump();
    let app = internal_str(&issued, "app_object_id");
    let sp = internal_str(&issued, "sp_object_id");
    let deleted = dump["deletedItems"].to_string();
    assert!(
        !deleted.contains(&app) && !deleted.contains(&sp),
        "purged: {deleted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_never_hands_out_a_credential_some_replicas_refuse() {
    let f = Fixture::start().await;
    f.call(
        Operation::Create,
        "roles/bare",
        json!({"credential_ready_timeout": "30s", "azure_groups": GROUP}),
    )
    .await
    .expect("write role");
    // Two replicas; a new object reaches each at its own time within 1.5 s. A proof that
    // hands out after a few lucky requests is caught by the requests that follow.
    f.shared().update_settings(|s| {
        s.token_replicas = 2;
        s.replica_window_ms = 1500;
        s.latency_ms = 5;
    });
    for _ in 0..4 {
        let issued = f.issue("bare").await;
        assert!(issued.warnings.is_empty(), "{:?}", issued.warnings);
        let client_id = data_str(&issued, "client_id");
        let secret = azure_clients::SecretString::from(data_str(&issued, "client_secret"));
        for n in 0..10 {
            let r = f
                .azure
                .verify_client_secret(&client_id, &secret, deadline())
                .await;
            assert!(
                r.is_ok(),
                "token request {n} after the hand-out failed: {r:?}"
            );
        }
        f.revoke("bare", &issued).await.expect("revoke");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_goes_through_throttling_and_server_errors() {
    let f = Fixture::start().await;
    f.call(
        Operation::Create,
        "roles/bare",
        json!({ "azure_groups": GROUP }),
    )
    .await
    .expect("write role");
    let warm = f.issue("bare").await;
    f.revoke("bare", &warm).await.expect("revoke");
    let rule = |status: u16, retry_after_secs: Option<u64>| FaultRule {
        method: Some("POST".into()),
        path_contains: Some("/oauth2/".into()),
        service: Some("token".into()),
        status: Some(status),
        retry_after_secs,
        times: Some(3),
        drop: false,
        delay_ms: None,
    };
    f.shared().faults().add(rule(429, Some(1)));
    f.shared().faults().add(rule(503, None));
    f.shared().clear_requests();
    let issued = f.issue("bare").await;
    assert!(issued.warnings.is_empty(), "{:?}", issued.warnings);
    let log = f.log();
    assert!(
        log.iter().any(|c| c.status == 429) && log.iter().any(|c| c.status == 503),
        "{log:?}"
    );
    let client_id = data_str(&issued, "client_id");
    let secret = azure_clients::SecretString::from(data_str(&issued, "client_secret"));
    f.azure
        .verify_client_secret(&client_id, &secret, deadline())
        .await
        .expect("the credential works");
    f.revoke("bare", &issued).await.expect("revoke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_cut_off_during_the_proof_leaves_nothing_behind() {
    let f = Fixture::start().await;
    f.wide_role("wide", json!({"credential_ready_timeout": "60s"}))
        .await;
    // The credential stays invisible for a minute: the issuance is inside its proof when the
    // process "dies" (the request future is dropped, as a killed plugin would stop).
    let before = f.shared().dir().dump()["roleAssignments"]
        .as_array()
        .map(Vec::len);
    f.shared()
        .update_settings(|s| s.credential_delay_ms = 60_000);
    f.shared().clear_requests();
    let cut = tokio::time::timeout(Duration::from_secs(2), f.issue("wide")).await;
    assert!(cut.is_err(), "still proving");
    let log = f.log();
    assert!(
        log.iter().any(|c| c.service == "token"),
        "the proof had begun: {log:?}"
    );
    assert!(f.wal_count().await > 0, "the WAL covers what was made");
    f.shared().update_settings(|s| s.credential_delay_ms = 0);
    f.tick(true).await.expect("rollback");
    f.tick(true)
        .await
        .expect("second rollback, for requests landing late");
    assert_eq!(f.wal_count().await, 0);
    let dump = f.shared().dir().dump();
    let leftovers: Vec<&Value> = dump["applications"]
        .as_array()
        .expect("apps")
        .iter()
        .filter(|a| {
            a["displayName"]
                .as_str()
                .is_some_and(|n| n.starts_with("vault-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let after = dump["roleAssignments"].as_array().map(Vec::len);
    assert_eq!(
        after, before,
        "no assignment left: {}",
        dump["roleAssignments"]
    );
}

// ------------------------------------------------------------------ the tenant's policy on the fast path

impl Fixture {
    /// Sets the tenant's default app management policy (as a Graph PATCH would):
    /// `restrictions` for applications, or disabled when `None`.
    fn set_default_policy(&self, restrictions: Option<Value>) {
        let shared = self.shared();
        let mut dir = shared.dir();
        dir.default_policy["isEnabled"] = json!(restrictions.is_some());
        dir.default_policy["applicationRestrictions"] = restrictions
            .unwrap_or_else(|| json!({"passwordCredentials": [], "keyCredentials": []}));
    }

    /// Display names of the engine's applications left in the directory.
    fn vault_apps(&self) -> Vec<String> {
        let dump = self.shared().dir().dump();
        dump["applications"]
            .as_array()
            .expect("apps")
            .iter()
            .filter_map(|a| a["displayName"].as_str())
            .filter(|n| n.starts_with("vault-"))
            .map(str::to_string)
            .collect()
    }
}

fn calls<'a>(log: &'a [RequestRecord], method: &str, part: &str) -> Vec<&'a RequestRecord> {
    log.iter()
        .filter(|c| c.method == method && c.path.contains(part))
        .collect()
}

/// Creates of applications (not `addPassword`/`addKey` on one).
fn app_creates(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    log.iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/v1.0/applications"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_between_issuances_is_honoured_on_the_very_next_one() {
    let f = Fixture::start().await;
    f.wide_role("wide", json!({})).await;
    // The first issuance reads the policy (none is in force) before anything is made.
    let first = f.issue("wide").await;
    f.revoke("wide", &first).await.expect("revoke");

    // A one-day cap on passwords: the next issuance plans with the known answer, reads the
    // policy again beside the application and gives the password the shorter end date.
    f.set_default_policy(Some(json!({"passwordCredentials": [
        {"restrictionType": "passwordLifetime", "maxLifetime": "P1D"}], "keyCredentials": []})));
    // A latency that separates the rounds in the log.
    f.set_latency(50);
    f.shared().update_settings(|s| s.password_write_ms = 0);
    f.shared().clear_requests();
    let capped = f.issue("wide").await;
    f.set_latency(0);
    let log = f.log();
    let policy = calls(&log, "GET", "defaultAppManagementPolicy");
    assert_eq!(policy.len(), 1, "{log:?}");
    assert!(
        together(&policy, &app_creates(&log)),
        "the policy was read beside the application: {log:?}"
    );
    assert_eq!(app_creates(&log).len(), 1, "nothing was redone: {log:?}");
    let day = chrono::Duration::days(1);
    let app_object_id = internal_str(&capped, "app_object_id");
    let passwords = f
        .azure
        .graph()
        .list_application_passwords(&app_object_id, deadline())
        .await
        .expect("list");
    assert_eq!(passwords.len(), 1);
    let end = passwords[0].end_date_time.expect("an end date");
    assert!(end <= Utc::now() + day, "password ends {end}");
    let lease = &capped.secret.as_ref().expect("a lease").lease;
    assert!(lease.max_ttl <= Duration::from_secs(86_400), "{lease:?}");
    assert!(
        capped.warnings.iter().any(|w| w.contains("1 days")),
        "{:?}",
        capped.warnings
    );
    f.revoke("wide", &capped).await.expect("revoke");
    assert!(f.vault_apps().is_empty());

    // Passwords blocked: the very next issuance answers 400 as a read before anything would
    // have, adds no password, and leaves nothing in Azure.
    f.set_default_policy(Some(json!({"passwordCredentials": [
        {"restrictionType": "passwordAddition", "maxLifetime": null}], "keyCredentials": []})));
    f.shared().clear_requests();
    let refused = f
        .call(Operation::Read, "creds/wide", json!({}))
        .await
        .expect_err("passwords are blocked");
    let LogicalError::BadRequest(message) = &refused else {
        panic!("{refused:?}")
    };
    assert!(
        message.contains("blocks new password credentials")
            && message.contains("00000000-0000-0000-0000-000000000000"),
        "{message}"
    );
    let log = f.log();
    assert!(calls(&log, "POST", "addPassword").is_empty(), "{log:?}");
    assert!(calls(&log, "PUT", "roleAssignments").is_empty(), "{log:?}");
    assert!(
        calls(&log, "POST", "servicePrincipals").is_empty(),
        "{log:?}"
    );
    assert!(f.vault_apps().is_empty(), "{:?}", f.vault_apps());
    assert_eq!(f.wal_count().await, 0);

    // A known refusal is never trusted: the policy is read first, and nothing is written.
    f.shared().clear_requests();
    assert!(f
        .call(Operation::Read, "creds/wide", json!({}))
        .await
        .is_err());
    let log = f.log();
    assert!(
        log.iter()
            .all(|c| c.method == "GET" || c.service == "token"),
        "{log:?}"
    );
    // Unblocked again: issuance works at once.
    f.set_default_policy(None);
    let again = f.issue("wide").await;
    f.revoke("wide", &again).await.expect("revoke");
    assert!(f.vault_apps().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_made_under_a_stale_policy_is_undone_and_made_again() {
    let f = Fixture::start().await;
    f.wide_role(
        "cert",
        json!({"credential_type": "certificate", "ttl": "720h", "max_ttl": "720h"}),
    )
    .await;
    let first = f.issue("cert").await;
    f.revoke("cert", &first).await.expect("revoke");

    // The certificate rides in the application create, planned with the known answer (no
    // cap); the read beside it finds a one-day cap: the application goes, and the
    // certificate is made again under the cap.
    f.set_default_policy(Some(json!({"passwordCredentials": [], "keyCredentials": [
        {"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "P1D"}]})));
    f.shared().clear_requests();
    let capped = f.issue("cert").await;
    let log = f.log();
    assert_eq!(app_creates(&log).len(), 2, "made again: {log:?}");
    assert!(
        capped.warnings.iter().any(|w| w.contains("1 days")),
        "{:?}",
        capped.warnings
    );
    let lease = &capped.secret.as_ref().expect("a lease").lease;
    assert!(lease.max_ttl <= Duration::from_secs(86_400), "{lease:?}");
    let app_object_id = internal_str(&capped, "app_object_id");
    let dump = f.shared().dir().dump();
    let apps: Vec<&Value> = dump["applications"]
        .as_array()
        .expect("apps")
        .iter()
        .filter(|a| {
            a["displayName"]
                .as_str()
                .is_some_and(|n| n.starts_with("vault-"))
        })
        .collect();
    assert_eq!(
        apps.len(),
        1,
        "only the issued application is left: {apps:?}"
    );
    assert_eq!(apps[0]["id"], json!(app_object_id));
    let end = apps[0]["keyCredentials"][0]["endDateTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("an end date");
    assert!(
        end <= Utc::now() + chrono::Duration::days(1),
        "certificate ends {end}"
    );
    assert_eq!(f.wal_count().await, 0);
    f.revoke("cert", &capped).await.expect("revoke");
    assert!(f.vault_apps().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_token_expiry_the_periodic_tick_spares_the_issuance_a_token_request() {
    let f = Fixture::start().await;
    f.wide_role("wide", json!({})).await;
    // A first tick does the periodic work that is due at once (reconciler, usage), so the
    // tick below does only what is due after the tokens expired.
    f.tick(false).await.expect("tick");
    // Tokens that last a second: writing the config again drops the engine's client, and
    // the issuance fills the new one's cache with them.
    f.shared().update_settings(|s| s.token_lifetime_secs = 1);
    f.call(
        Operation::Update,
        "config",
        json!({"client_secret": f.env["AZURE_CLIENT_SECRET"]}),
    )
    .await
    .expect("write config");
    let first = f.issue("wide").await;
    f.shared().update_settings(|s| s.token_lifetime_secs = 3599);
    let root = f.env["AZURE_CLIENT_ID"].clone();
    let root_token_requests = |log: &[RequestRecord]| {
        log.iter()
            .filter(|c| c.service == "token" && c.client_id.as_deref() == Some(root.as_str()))
            .count()
    };
    // Wait out the tokens' second (no request can tell when they lapse).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // A performance standby issues nothing (its reads of creds are forwarded): it leaves the
    // tokens alone.
    f.system_view
        .set_replication_state(ReplicationState::PERFORMANCE_STANDBY);
    f.shared().clear_requests();
    f.tick(false).await.expect("tick on a standby");
    assert_eq!(root_token_requests(&f.log()), 0, "{:?}", f.log());
    f.system_view.set_replication_state(
        ReplicationState::PERFORMANCE_DISABLED | ReplicationState::DR_DISABLED,
    );
    f.shared().clear_requests();
    f.tick(false).await.expect("tick");
    assert!(
        root_token_requests(&f.log()) >= 1,
        "the tick renewed the tokens: {:?}",
        f.log()
    );
    f.shared().clear_requests();
    let issued = f.issue("wide").await;
    let log = f.log();
    assert_eq!(root_token_requests(&log), 0, "{log:?}");
    for resp in [&first, &issued] {
        f.revoke("wide", resp).await.expect("revoke");
    }
}

/// Every role assignment PUT is answered 504 until the issuance gives up: ARM may still carry
/// such a PUT out. The issuance undoes what it knows of, but leaves its WAL entries (marked
/// ended) to the rollback, which deletes again and keeps them until such a request can no
/// longer land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_failing_with_an_unknown_outcome_leaves_its_entries_to_the_rollback() {
    let f = Fixture::start().await;
    f.wide_role("wide", json!({"credential_ready_timeout": 0}))
        .await;
    f.shared().faults().add(FaultRule {
        method: Some("PUT".into()),
        path_contains: Some("roleAssignments".into()),
        service: Some("arm".into()),
        status: Some(504),
        retry_after_secs: None,
        times: None,
        drop: false,
        delay_ms: None,
    });
    let err = f
        .call(Operation::Read, "creds/wide", json!({}))
        .await
        .expect_err("the assignments fail");
    f.shared().faults().clear();
    assert!(err.to_string().contains("assigning roles"), "{err}");
    assert!(f.vault_apps().is_empty(), "undone at once");
    let storage = f.backend.storage();
    let ids = wal::list(storage.as_ref()).await.expect("list WAL");
    assert_eq!(ids.len(), 2, "the entries stay for the rollback");
    for id in &ids {
        let entry = wal::get(storage.as_ref(), id)
            .await
            .expect("read WAL")
            .expect("entry");
        assert!(entry.ended, "taken by the next tick: {entry:?}");
    }
    f.tick(false).await.expect("rollback");
    f.tick(false).await.expect("second rollback");
    assert_eq!(f.wal_count().await, 0);
    assert!(f.vault_apps().is_empty());
}
