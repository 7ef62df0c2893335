//! The engine with Azure Arc managed identity instead of a client secret, storage written in
//! the Go engine's layout, and the rollback of a write-ahead-log entry left by a crash.

mod common;

use std::time::{Duration, Instant};

use common::{Bao, Emulator};
use serde_json::{json, Value};

/// The only folder azure_identity (and the real Arc agent) accepts for challenge files.
const ARC_TOKEN_DIR: &str = "/var/opt/azcmagent/tokens";

#[test]
fn azure_arc_managed_identity_instead_of_a_client_secret() {
    if std::fs::create_dir_all(ARC_TOKEN_DIR).is_err() {
        azure_emulator::testing::skip(
            "azure_arc_managed_identity_instead_of_a_client_secret",
            &format!("{ARC_TOKEN_DIR} cannot be created (run as root)"),
        );
        return;
    }
    let emu = Emulator::start(&["--arc-token-dir", ARC_TOKEN_DIR]);
    let mut env = emu.cloud_env();
    env.push(("IDENTITY_ENDPOINT".into(), emu.var("IDENTITY_ENDPOINT")));
    env.push(("IMDS_ENDPOINT".into(), emu.var("IMDS_ENDPOINT")));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bao = Bao::dev_with_env(&pairs);
    bao.register("azure");
    bao.enable("azure", "azure");
    // Tenant and subscription only: no client id, no secret.
    bao.write(
        "azure/config",
        &[
            &format!("tenant_id={}", emu.var("AZURE_TENANT_ID")),
            &format!("subscription_id={}", emu.var("AZURE_SUBSCRIPTION_ID")),
        ],
    )
    .ok();
    let roles = json!([{"role_name": "Reader", "scope": format!("/subscriptions/{}", emu.var("AZURE_SUBSCRIPTION_ID"))}]);
    bao.write("azure/roles/arc", &[&format!("azure_roles={roles}")])
        .ok();
    let creds = bao.read("azure/creds/arc").ok().json();
    assert!(creds["data"]["client_id"].is_string());
    // Every Azure call went through the Arc identity endpoint, none through a client secret.
    let reqs = emu.requests();
    assert!(
        reqs.iter()
            .any(|r| r["service"] == "arc" && r["status"] == 200),
        "{reqs:#?}"
    );
    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        creds["lease_id"].as_str().expect("lease"),
    ])
    .ok();
    assert!(emu.vault_apps().is_empty());
}

fn raw_put(bao: &Bao, key: &str, value: &Value) {
    bao.write(&format!("sys/raw/{key}"), &[&format!("value={value}")])
        .ok();
}

#[test]
fn storage_in_the_go_layout_is_read_and_its_wal_rolled_back() {
    let emu = Emulator::start(&[]);
    let env = emu.cloud_env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bao = Bao::persistent_with_env(&pairs);
    bao.register("azure");
    bao.enable("azure", "azure");
    let base = bao.mount_storage_base("azure/");
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");

    // `config` and a role exactly as the Go engine stores them (durations in nanoseconds).
    raw_put(
        &bao,
        &format!("{base}/config"),
        &json!({
            "subscription_id": sub, "tenant_id": emu.var("AZURE_TENANT_ID"),
            "client_id": emu.var("AZURE_CLIENT_ID"), "client_secret": emu.var("AZURE_CLIENT_SECRET"),
            "client_secret_key_id": "", "new_client_secret": "",
            "new_client_secret_created": "0001-01-01T00:00:00Z",
            "new_client_secret_expiration_date": "0001-01-01T00:00:00Z",
            "new_client_secret_key_id": "", "environment": "",
            "root_password_ttl": 15_768_000_000_000_000i64,
            "root_password_expiration_date": "0001-01-01T00:00:00Z",
            "identity_token_ttl": 0, "identity_token_audience": "", "rotation_schedule": "",
            "rotation_window": 0, "rotation_period": 0, "disable_automated_rotation": false,
            "rotation_policy": ""
        }),
    );
    raw_put(
        &bao,
        &format!("{base}/roles/legacy"),
        &json!({
            "credential_type": 0,
            "azure_roles": [{"role_name": "Reader",
                "role_id": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"),
                "scope": format!("/subscriptions/{sub}")}],
            "azure_groups": null, "application_id": "", "application_object_id": "",
            "sign_in_audience": "", "tags": null, "ttl": 3_600_000_000_000i64, "max_ttl": 7_200_000_000_000i64,
            "explicit_max_ttl": 0, "permanently_delete": false, "persist_app": false,
            "role_assignment_ids": null, "group_membership_ids": null, "sp_object_id": "",
            "managed_application_object_id": ""
        }),
    );
    // Storage changed behind the plugin's back (the plugin may have read it already at
    // initialization and caches what it read): a reload, as after a restore or a migration.
    bao.cli(&["plugin", "reload", "-plugin=azure"]).ok();
    let config = bao.read("azure/config").ok().json();
    assert_eq!(config["data"]["root_password_ttl"], 15_768_000);
    assert_eq!(config["data"]["subscription_id"], sub.as_str());
    let role = bao.read("azure/roles/legacy").ok().json();
    assert_eq!(role["data"]["ttl"], 3600);
    assert_eq!(role["data"]["max_ttl"], 7200);
    assert_eq!(role["data"]["azure_roles"][0]["role_name"], "Reader");
    let creds = bao.read("azure/creds/legacy").ok().json();
    assert_eq!(creds["lease_duration"], 3600);

    // A WAL entry a crashed Go engine left behind 15 minutes ago: the periodic rollback
    // (about once a minute) deletes the application it covers.
    let (object_id, app_id) = emu.create_app("vault-crashed-issuance", false);
    let created_at = chrono::Utc::now().timestamp() - 15 * 60;
    raw_put(
        &bao,
        &format!("{base}/wal/0b7e2f7c-6f3e-4d43-9a8f-1f1f1f1f1f1f"),
        &json!({"type": "appCreate", "created_at": created_at,
                "data": {"AppID": app_id, "AppObjID": object_id,
                         "Expiration": (chrono::Utc::now() + chrono::Duration::hours(23)).to_rfc3339()}}),
    );
    bao.cli(&["plugin", "reload", "-plugin=azure"]).ok();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let gone = emu.state()["applications"]
            .as_array()
            .expect("apps")
            .iter()
            .all(|a| a["id"] != object_id.as_str());
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollback did not remove the application"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // The entry is gone too.
    let wal = bao.list_keys(&format!("sys/raw/{base}/wal/"));
    assert!(wal.is_empty(), "{wal:?}");
    assert!(
        !bao.log_text().contains("rollback: error"),
        "rollback errors in the server log"
    );
}
