//! The reconciler under a real OpenBao (raft storage, `sys/raw` on) against the emulator:
//! orphans made on purpose (a force-revoked lease, a storage restore, a crash before the
//! host recorded the lease, role assignments a revoke could not remove, a Go-engine
//! leftover) are reported by the dry run, removed by a run and by the periodic pass, while
//! every live credential keeps working and objects of another mount or made by hand are
//! never touched.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::wait_for;
use common::{Bao, Emulator};
use serde_json::{json, Value};

/// A credential issued by `creds/dyn` of a mount.
struct Cred {
    lease_id: String,
    client_id: String,
    secret: String,
    app: String,
    sp: String,
}

fn issue(bao: &Bao, emu: &Emulator, mount: &str) -> Cred {
    let creds = bao.read(&format!("{mount}/creds/dyn")).ok().json();
    let client_id = creds["data"]["client_id"]
        .as_str()
        .expect("client_id")
        .to_string();
    let state = emu.state();
    let find = |kind: &str| {
        state[kind]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["appId"] == client_id.as_str())
            .and_then(|o| o["id"].as_str())
            .expect("object of the credential")
            .to_string()
    };
    Cred {
        lease_id: creds["lease_id"].as_str().expect("lease").to_string(),
        secret: creds["data"]["client_secret"]
            .as_str()
            .expect("secret")
            .to_string(),
        app: find("applications"),
        sp: find("servicePrincipals"),
        client_id,
    }
}

fn app_exists(emu: &Emulator, object_id: &str) -> bool {
    emu.state()["applications"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["id"] == object_id)
}

/// Ids of the role assignments of principal `sp`.
fn assignments_of(emu: &Emulator, sp: &str) -> Vec<String> {
    emu.state()["roleAssignments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ra| ra["properties"]["principalId"] == sp)
        .filter_map(|ra| ra["id"].as_str().map(str::to_string))
        .collect()
}

fn assert_works(emu: &Emulator, c: &Cred) {
    assert_eq!(
        emu.token_status(&c.client_id, &c.secret),
        200,
        "the live credential of {} stopped working",
        c.app
    );
}

/// Makes a role assignment (Reader on `scope`, no description) for `sp` as the root identity.
fn assign_reader(emu: &Emulator, scope: &str, sp: &str) -> String {
    let url = common::certs::token_url(emu);
    let token = Command::new("curl")
        .args(["-s", "--cacert", &emu.var("SSL_CERT_FILE"), &url])
        .args(["--data-urlencode", "grant_type=client_credentials"])
        .args([
            "--data-urlencode",
            &format!("client_id={}", emu.var("AZURE_CLIENT_ID")),
        ])
        .args([
            "--data-urlencode",
            &format!("client_secret={}", emu.var("AZURE_CLIENT_SECRET")),
        ])
        .args([
            "--data-urlencode",
            &format!(
                "scope={}/.default",
                emu.var("AZURE_RESOURCE_MANAGER_ENDPOINT")
            ),
        ])
        .output()
        .expect("curl");
    let token: Value = serde_json::from_slice(&token.stdout).expect("token JSON");
    let id = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let body = json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"),
        "principalId": sp}});
    let out = Command::new("curl")
        .args([
            "-s",
            "-f",
            "--cacert",
            &emu.var("SSL_CERT_FILE"),
            "-X",
            "PUT",
        ])
        .args([
            "-H",
            &format!(
                "Authorization: Bearer {}",
                token["access_token"].as_str().expect("token")
            ),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ])
        .arg(format!(
            "{}{id}?api-version=2022-04-01",
            emu.var("AZURE_RESOURCE_MANAGER_ENDPOINT")
        ))
        .output()
        .expect("curl");
    assert!(out.status.success(), "PUT {id} failed");
    id
}

fn sp_of(emu: &Emulator, app_id: &str) -> String {
    emu.state()["servicePrincipals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["appId"] == app_id)
        .and_then(|s| s["id"].as_str())
        .expect("service principal")
        .to_string()
}

/// `(object id, reason)` of the applications a report lists, sorted.
fn listed_apps(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["applications"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["object_id"].as_str().unwrap_or_default().to_string(),
                a["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn listed_ras(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["role_assignments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default().to_string(),
                a["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

fn run(bao: &Bao, mount: &str, extra: &[&str]) -> Value {
    let mut args = vec!["write", "-format=json", "-force"];
    let path = format!("{mount}/reconcile");
    args.push(&path);
    args.extend_from_slice(extra);
    bao.cli(&args).ok().json()["data"].clone()
}

fn dry_run(bao: &Bao, mount: &str, extra: &[&str]) -> Value {
    let path = format!("{mount}/reconcile");
    let mut args = vec!["read", "-format=json", path.as_str()];
    args.extend_from_slice(extra);
    bao.cli(&args).ok().json()["data"].clone()
}

#[test]
fn orphans_are_reported_then_removed_while_live_credentials_keep_working() {
    let emu = Emulator::start(&[]);
    let env = emu.cloud_env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bao = Bao::persistent_with_env(&pairs);
    bao.register("azure");
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let rg = format!("/subscriptions/{sub}/resourceGroups/vault-rg");
    let roles = json!([{"role_name": "Reader", "scope": rg}]).to_string();
    for mount in ["azure", "other"] {
        bao.enable(mount, "azure");
        let mut args = emu.config_args();
        // The periodic pass stays off until the end of the test.
        args.push("reconcile_interval=0".into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        bao.write(&format!("{mount}/config"), &refs).ok();
        bao.write(
            &format!("{mount}/roles/dyn"),
            &[
                &format!("azure_roles={roles}"),
                "ttl=1h",
                "credential_ready_timeout=0",
            ],
        )
        .ok();
    }
    let base = bao.mount_storage_base("azure/");
    let other_base = bao.mount_storage_base("other/");
    let raw_delete = |key: &str| {
        bao.cli(&["delete", &format!("sys/raw/{key}")]).ok();
    };
    // Objects made from now on look two hours old to Azure: past the reconciler's grace.
    emu.settings(json!({"created_clock_offset_secs": -7200}));

    let live = issue(&bao, &emu, "azure");
    let live_other = issue(&bao, &emu, "other");

    // A lease force-revoked while Azure refused to delete its application.
    let forced = issue(&bao, &emu, "azure");
    emu.add_fault(json!({"method": "DELETE", "path_contains": format!("applications/{}", forced.app), "status": 403}));
    bao.cli(&["lease", "revoke", "-force", "-prefix", &forced.lease_id])
        .ok();
    emu.clear_faults();
    assert!(app_exists(&emu, &forced.app), "the forced revoke left it");

    // A storage restore to before an issuance: the lease and the inventory entry are gone.
    let restored = issue(&bao, &emu, "azure");
    raw_delete(&format!("{base}/inventory/apps/{}", restored.app));
    raw_delete(&format!("sys/expire/id/{}", restored.lease_id));
    let restored_ras = assignments_of(&emu, &restored.sp);
    assert_eq!(restored_ras.len(), 1);

    // A crash after the response, before the host recorded the lease: the inventory entry
    // exists, the lease does not.
    let narrow = issue(&bao, &emu, "azure");
    raw_delete(&format!("sys/expire/id/{}", narrow.lease_id));

    // A revoke that could not remove the role assignment (plugin#118): the application goes
    // in the same round, the revoke fails, the operator forces it, and the assignment stays
    // with a principal that no longer exists.
    let leaky = issue(&bao, &emu, "azure");
    let leaky_ras = assignments_of(&emu, &leaky.sp);
    assert_eq!(leaky_ras.len(), 1);
    emu.add_fault(json!({"method": "DELETE", "path_contains": "roleAssignments", "status": 403}));
    let refused = bao.cli(&["lease", "revoke", "-sync", &leaky.lease_id]);
    assert_ne!(
        refused.code, 0,
        "a revoke that leaves an assignment behind fails"
    );
    bao.cli(&["lease", "revoke", "-force", "-prefix", &leaky.lease_id])
        .ok();
    emu.clear_faults();
    assert!(!app_exists(&emu, &leaky.app));
    assert_eq!(assignments_of(&emu, &leaky.sp), leaky_ras);

    // Another mount's orphan: never this mount's business.
    let other_orphan = issue(&bao, &emu, "other");
    raw_delete(&format!("{other_base}/inventory/apps/{}", other_orphan.app));
    raw_delete(&format!("sys/expire/id/{}", other_orphan.lease_id));

    // An orphan made moments ago: within the grace period, an issuance may still be at work.
    emu.settings(json!({"created_clock_offset_secs": 0}));
    let fresh = issue(&bao, &emu, "azure");
    raw_delete(&format!("{base}/inventory/apps/{}", fresh.app));
    raw_delete(&format!("sys/expire/id/{}", fresh.lease_id));

    // Go-engine leftovers: `vault-<uuid4>` made 40 days ago (older than the mount's max
    // lease TTL), with a role assignment; a young one; one made by hand.
    emu.settings(json!({"created_clock_offset_secs": -40 * 86_400}));
    let (go_app, go_app_id) = emu.create_app(&format!("vault-{}", uuid::Uuid::new_v4()), true);
    let go_ra = assign_reader(&emu, &rg, &sp_of(&emu, &go_app_id));
    let (hand_made, _) = emu.create_app("vault-hand-made-tool", true);
    emu.settings(json!({"created_clock_offset_secs": -7200}));
    let (young_go, _) = emu.create_app(&format!("vault-{}", uuid::Uuid::new_v4()), true);

    // The dry run reports, and deletes nothing.
    let dry = dry_run(&bao, "azure", &[]);
    assert_eq!(
        listed_apps(&dry),
        sorted(vec![
            pair(&forced.app, "revoke_requested"),
            pair(&restored.app, "unrecorded"),
        ]),
        "{dry:#}"
    );
    assert_eq!(
        listed_ras(&dry),
        sorted(vec![
            pair(&restored_ras[0], "application_deleted"),
            pair(&leaky_ras[0], "principal_gone"),
        ]),
        "{dry:#}"
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["counts"],
        json!({"applications": 2, "role_assignments": 2})
    );
    assert_eq!(dry["kept"]["live_credential"], 2, "{dry:#}");
    assert_eq!(dry["kept"]["created_within_grace"], 1, "{dry:#}");
    assert!(app_exists(&emu, &forced.app) && app_exists(&emu, &restored.app));
    assert_eq!(assignments_of(&emu, &leaky.sp), leaky_ras);
    // With adoption, the old Go-style application (and its assignment) are added.
    let dry_adopt = dry_run(&bao, "azure", &["adopt_go_engine=true"]);
    assert!(
        listed_apps(&dry_adopt).contains(&pair(&go_app, "go_engine_leftover")),
        "{dry_adopt:#}"
    );
    assert_eq!(listed_apps(&dry_adopt).len(), 3, "{dry_adopt:#}");
    assert!(listed_ras(&dry_adopt).contains(&pair(&go_ra, "application_deleted")));
    // The other mount sees its own orphan.
    let other_dry = dry_run(&bao, "other", &[]);
    assert_eq!(
        listed_apps(&other_dry),
        vec![pair(&other_orphan.app, "unrecorded")],
        "{other_dry:#}"
    );

    // A run deletes exactly what the dry run listed.
    let done = run(&bao, "azure", &[]);
    assert_eq!(done["deleted_applications"], 2, "{done:#}");
    assert_eq!(done["deleted_role_assignments"], 2, "{done:#}");
    assert!(!app_exists(&emu, &forced.app));
    assert!(!app_exists(&emu, &restored.app));
    assert!(assignments_of(&emu, &restored.sp).is_empty());
    assert!(assignments_of(&emu, &leaky.sp).is_empty());
    for kept in [
        &live.app,
        &narrow.app,
        &fresh.app,
        &live_other.app,
        &other_orphan.app,
        &go_app,
        &hand_made,
        &young_go,
    ] {
        assert!(app_exists(&emu, kept), "{kept} was deleted");
    }
    assert_eq!(assignments_of(&emu, &live.sp).len(), 1);
    assert_works(&emu, &live);
    assert_works(&emu, &live_other);
    assert_works(&emu, &narrow);
    // Nothing left to do.
    assert_eq!(
        dry_run(&bao, "azure", &[])["counts"],
        json!({"applications": 0, "role_assignments": 0})
    );

    // Time passes for the credential whose lease was never recorded: once its recorded
    // expiry is more than the margin ago, it goes.
    let key = format!("{base}/inventory/apps/{}", narrow.app);
    let mut entry: Value = serde_json::from_str(
        bao.read(&format!("sys/raw/{key}")).ok().json()["data"]["value"]
            .as_str()
            .expect("inventory entry"),
    )
    .expect("entry JSON");
    assert!(entry["expires"].is_string(), "{entry}");
    entry["expires"] = json!((chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339());
    bao.write(&format!("sys/raw/{key}"), &[&format!("value={entry}")])
        .ok();
    // The plugin caches what it read; a reload makes it read storage again (as a restore
    // would).
    bao.cli(&["plugin", "reload", "-plugin=azure"]).ok();
    let done = run(&bao, "azure", &[]);
    assert_eq!(
        listed_apps(&done),
        vec![pair(&narrow.app, "expired")],
        "{done:#}"
    );
    assert!(!app_exists(&emu, &narrow.app));

    // Adoption removes the Go leftover and its assignment, and nothing else.
    let done = run(&bao, "azure", &["adopt_go_engine=true"]);
    assert_eq!(
        listed_apps(&done),
        vec![pair(&go_app, "go_engine_leftover")],
        "{done:#}"
    );
    assert!(!app_exists(&emu, &go_app));
    assert!(!emu.state()["roleAssignments"].to_string().contains(&go_ra));
    for kept in [
        &live.app,
        &live_other.app,
        &other_orphan.app,
        &hand_made,
        &young_go,
    ] {
        assert!(app_exists(&emu, kept), "{kept} was deleted");
    }
    assert_works(&emu, &live);
    assert_works(&emu, &live_other);

    // The periodic pass (on the active node, at the host's rollback tick) does the same.
    bao.write("azure/config", &["reconcile_interval=1s"]).ok();
    assert_eq!(
        bao.read("azure/config").ok().json()["data"]["reconcile_interval"],
        1
    );
    let forced2 = issue(&bao, &emu, "azure");
    emu.add_fault(json!({"method": "DELETE", "path_contains": format!("applications/{}", forced2.app), "status": 403}));
    bao.cli(&["lease", "revoke", "-force", "-prefix", &forced2.lease_id])
        .ok();
    emu.clear_faults();
    assert!(app_exists(&emu, &forced2.app));
    assert!(
        wait_for(Duration::from_secs(180), || {
            std::thread::sleep(Duration::from_millis(900));
            !app_exists(&emu, &forced2.app)
        }),
        "the periodic pass did not remove the orphan"
    );
    assert!(app_exists(&emu, &live.app));
    assert_works(&emu, &live);

    // A live credential's lease still revokes normally, and its inventory entry goes.
    bao.cli(&["lease", "revoke", "-sync", &live.lease_id]).ok();
    assert!(!app_exists(&emu, &live.app));
    let left = bao.list_keys(&format!("sys/raw/{base}/inventory/apps/"));
    assert!(left.iter().all(|k| !k.contains(&live.app)), "{left:?}");
}
