//! The mount's initialization hook: the host initializes a mount when a node unseals or
//! becomes active and after a crashed plugin restarts; a node that may write then starts
//! its background work at once (a due static rotation, a pool refill) instead of at the
//! host's next rollback tick, and a standby does nothing.

use std::time::{Duration, Instant};

use azure_clients::{Deadline, NewApplication};
use chrono::Utc;
use serde_json::{json, Value};
use vault_plugin_sdk::framework::Backend;
use vault_plugin_sdk::logical::{Backend as _, Operation, Request};
use vault_plugin_secrets_azure::{pool, static_store, store};

mod support;

use support::{Fixture, READER};

impl Fixture {
    async fn static_role(&self, name: &str) -> static_store::StaticRole {
        static_store::get(self.config.storage.as_ref(), name)
            .await
            .expect("read static role")
            .expect("static role exists")
    }

    /// `ready` of `pool/<role>` as instance `backend` reads it.
    async fn pool_ready(backend: &Backend, role: &str) -> Value {
        let req = Request::new(Operation::Read, format!("pool/{role}"), backend.storage());
        let resp = backend
            .handle_request(req)
            .await
            .expect("pool status")
            .expect("a response");
        resp.data.expect("data")["ready"].clone()
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A static role whose rotation is due and a pooled role with an empty pool: initializing
/// the mount on a standby does nothing; initializing it on the active node, with no
/// rollback tick, rotates the static role and fills the pool. Initialize itself returns
/// before the work is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_starts_due_background_work_only_where_writes_belong() {
    let f = Fixture::start().await;
    let app = f
        .azure
        .graph()
        .create_application(
            &NewApplication::dynamic(),
            Deadline::after(Duration::from_secs(30)),
        )
        .await
        .expect("create application");
    f.azure
        .graph()
        .create_service_principal(&app.app_id, Deadline::after(Duration::from_secs(30)))
        .await
        .expect("create service principal");
    f.call(
        Operation::Create,
        "static-roles/sr",
        json!({"application_object_id": app.id, "rotation_period": "1h"}),
    )
    .await
    .expect("write static role");
    let first = f.static_role("sr").await;
    let first_keys = first.key_ids();
    assert!(!first_keys.is_empty(), "the role has its first secret");

    let scope = format!("/subscriptions/{}", f.env["AZURE_SUBSCRIPTION_ID"]);
    let roles = json!([{"role_id": format!(
        "{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    ), "scope": scope}]);

    f.call(
        Operation::Create,
        "roles/pooled",
        json!({"azure_roles": roles.to_string(), "ttl": "1h"}),
    )
    .await
    .expect("write role");

    // The instance that wrote all this goes away (its process killed with its node); in
    // storage, the role's pool is turned on and the static rotation comes due.
    f.backend.cleanup().await;
    let storage = f.config.storage.clone();
    let mut pooled = store::get_role(storage.as_ref(), "pooled")
        .await
        .expect("read role")
        .expect("role");
    pooled.pool_size = 2;
    store::put_role(storage.as_ref(), "pooled", &pooled)
        .await
        .expect("store role");
    let mut due = first.clone();
    due.next_rotation = Some(Utc::now() - chrono::Duration::seconds(5));
    static_store::put(storage.as_ref(), "sr", &due)
        .await
        .expect("make the rotation due");

    // A standby's instance is initialized.
    f.standby();
    let standby = f.instance();
    standby.initialize().await.expect("initialize on a standby");
    // Give a wrongly started background pass time to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        f.static_role("sr").await.key_ids(),
        first_keys,
        "a standby rotates nothing"
    );
    assert_eq!(
        Fixture::pool_ready(&standby, "pooled").await,
        json!(0),
        "a standby fills no pool"
    );
    assert!(
        pool::pooled_object_ids(storage.as_ref())
            .await
            .expect("list")
            .is_empty(),
        "a standby creates nothing"
    );

    // The node becomes active: the host unloads the standby's mount and initializes a new
    // instance; no rollback tick follows.
    standby.cleanup().await;
    f.active();
    let active = f.instance();
    let started = Instant::now();
    active.initialize().await.expect("initialize");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "initialize does not wait for the background work"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            f.static_role("sr").await.key_ids() != first_keys
        })
        .await,
        "the due rotation ran without a rollback tick"
    );
    let rotated = f.static_role("sr").await;
    assert!(
        rotated.next_rotation.is_some_and(|t| t > Utc::now()),
        "rescheduled"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            Fixture::pool_ready(&active, "pooled").await == json!(2)
        })
        .await,
        "the pool filled without a rollback tick"
    );
}
