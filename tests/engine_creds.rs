//! Issuing credentials through a real OpenBao with the emulator as Azure: both kinds of
//! role, renew, revoke, explicit_max_ttl, permanently_delete, the proof that a credential
//! works before it is returned, concurrency of the issuance, faults at every step (nothing
//! left behind), a cancelled request, and rotate-root.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bao_with_emulator, Bao, Emulator};
use serde_json::{json, Value};

fn write_json(dir: &std::path::Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).expect("write json");
    format!("@{}", path.display())
}

/// Writes role `name` with Reader on the subscription, Contributor on `vault-rg` and
/// membership of `vault-test-group-1`, plus `extra` fields.
fn write_dynamic_role(bao: &Bao, emu: &Emulator, name: &str, extra: &[&str]) {
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let roles = json!([
        {"role_name": "Reader", "scope": format!("/subscriptions/{sub}")},
        {"role_name": "Contributor", "scope": format!("/subscriptions/{sub}/resourceGroups/vault-rg")}
    ]);
    let groups = json!([{"group_name": "vault-test-group-1"}]);
    let roles_arg = format!(
        "azure_roles={}",
        write_json(bao.dir.path(), "roles.json", &roles)
    );
    let groups_arg = format!(
        "azure_groups={}",
        write_json(bao.dir.path(), "groups.json", &groups)
    );
    let mut args = vec![roles_arg.as_str(), groups_arg.as_str()];
    args.extend_from_slice(extra);
    bao.write(&format!("azure/roles/{name}"), &args).ok();
}

fn sp_ids_of(state: &Value, app_id: &str) -> Vec<String> {
    state["servicePrincipals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["appId"] == app_id)
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect()
}

fn assignments_of(state: &Value, principal: &str) -> Vec<Value> {
    state["roleAssignments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ra| ra["properties"]["principalId"] == principal)
        .cloned()
        .collect()
}

fn group_members(state: &Value, group: &str) -> Vec<String> {
    state["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["displayName"] == group)
        .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| {
            m.as_str()
                .map(str::to_string)
                .or_else(|| m["id"].as_str().map(str::to_string))
        })
        .collect()
}

/// Role assignments whose principal is not one the emulator seeded.
fn non_seeded_assignments(state: &Value) -> usize {
    let seeded: Vec<&str> = state["servicePrincipals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            !p["displayName"]
                .as_str()
                .unwrap_or("")
                .starts_with("vault-")
        })
        .filter_map(|p| p["id"].as_str())
        .collect();
    state["roleAssignments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ra| {
            let p = ra["properties"]["principalId"].as_str().unwrap_or("");
            !seeded.contains(&p) && p != state["machineIdentity"]["id"].as_str().unwrap_or("-")
        })
        .count()
}

#[test]
fn dynamic_service_principal_lifecycle() {
    let emu = Emulator::start(&["--latency-ms", "20"]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(&bao, &emu, "dyn", &["ttl=1h", "max_ttl=2h"]);

    let creds = bao.read("azure/creds/dyn").ok().json();
    let client_id = creds["data"]["client_id"]
        .as_str()
        .expect("client_id")
        .to_string();
    let secret = creds["data"]["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_string();
    let lease_id = creds["lease_id"].as_str().expect("lease").to_string();
    assert_eq!(creds["lease_duration"], 3600);
    assert!(creds["renewable"].as_bool().unwrap_or(false));
    assert!(creds["data"]["credential_ready_wait_ms"].is_u64());

    // Usable when returned.
    assert_eq!(emu.token_status(&client_id, &secret), 200);

    // Everything exists in Azure: vault- application, SP, two role assignments (with
    // principalType), the group membership; the password ends at the max TTL, not in 10 years.
    let state = emu.state();
    let app = state["applications"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["appId"] == client_id.as_str())
        .expect("application")
        .clone();
    assert!(app["displayName"]
        .as_str()
        .unwrap_or("")
        .starts_with("vault-"));
    let sps = sp_ids_of(&state, &client_id);
    assert_eq!(sps.len(), 1);
    let ras = assignments_of(&state, &sps[0]);
    assert_eq!(ras.len(), 2, "{ras:?}");
    assert!(ras
        .iter()
        .all(|ra| ra["properties"]["principalType"] == "ServicePrincipal"));
    assert!(group_members(&state, "vault-test-group-1").contains(&sps[0]));
    // The password is on the application (added beside the service principal).
    let sp = state["applications"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["appId"] == client_id.as_str())
        .expect("app")
        .clone();
    let end = sp["passwordCredentials"][0]["endDateTime"]
        .as_str()
        .expect("end date");
    let end = chrono::DateTime::parse_from_rfc3339(end).expect("date");
    let life = end.signed_duration_since(chrono::Utc::now());
    assert!(
        life <= chrono::Duration::hours(2) && life > chrono::Duration::minutes(110),
        "{life}"
    );
    assert!(sp["passwordCredentials"][0]["displayName"]
        .as_str()
        .unwrap_or("")
        .starts_with("vault-"));

    // Renew within max_ttl.
    let renewed = bao
        .cli(&[
            "lease",
            "renew",
            "-format=json",
            "-increment=30m",
            &lease_id,
        ])
        .ok()
        .json();
    assert_eq!(renewed["lease_duration"], 1800);

    // Revoke removes everything.
    bao.cli(&["lease", "revoke", "-sync", &lease_id]).ok();
    let state = emu.state();
    assert!(state["applications"]
        .as_array()
        .expect("apps")
        .iter()
        .all(|a| a["appId"] != client_id.as_str()));
    assert!(sp_ids_of(&state, &client_id).is_empty());
    assert!(assignments_of(&state, &sps[0]).is_empty());
    assert!(!group_members(&state, "vault-test-group-1").contains(&sps[0]));
    // Not permanently deleted: it sits in deleted items.
    assert!(state["deletedItems"]
        .as_array()
        .expect("deleted")
        .iter()
        .any(|d| d["appId"] == client_id.as_str()));
    assert_eq!(
        emu.token_status(&client_id, &secret),
        400,
        "deleted application refuses tokens"
    );
}

#[test]
fn issuance_sends_password_roles_and_groups_together() {
    let emu = Emulator::start(&["--latency-ms", "100"]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(&bao, &emu, "par", &["credential_ready_timeout=0"]);
    emu.clear_requests();
    bao.read("azure/creds/par").ok();
    let reqs = emu.requests();
    let writes: Vec<&Value> = reqs
        .iter()
        .filter(|r| {
            let p = r["path"].as_str().unwrap_or("");
            (r["method"] == "PUT" && p.contains("roleAssignments"))
                || (r["method"] == "POST"
                    && (p.contains("addPassword") || p.contains("members/$ref")))
        })
        .collect();
    assert_eq!(writes.len(), 4, "{reqs:#?}");
    let latest_start = writes
        .iter()
        .filter_map(|r| r["started_ms"].as_u64())
        .max()
        .expect("start");
    let earliest_end = writes
        .iter()
        .filter_map(|r| r["finished_ms"].as_u64())
        .min()
        .expect("end");
    assert!(
        latest_start < earliest_end,
        "all four were in flight at once: {writes:#?}"
    );
}

#[test]
fn a_fresh_credential_is_returned_only_once_it_works() {
    let emu = Emulator::start(&["--credential-delay-ms", "3000"]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(&bao, &emu, "wait", &[]);
    let start = Instant::now();
    let creds = bao.read("azure/creds/wait").ok().json();
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert!(
        creds["data"]["credential_ready_wait_ms"]
            .as_u64()
            .unwrap_or(0)
            >= 2500,
        "{creds}"
    );
    let (id, secret) = (
        creds["data"]["client_id"].as_str().expect("id"),
        creds["data"]["client_secret"].as_str().expect("secret"),
    );
    assert_eq!(emu.token_status(id, secret), 200);

    // Turned off: returned at once, and Azure does not accept it yet.
    write_dynamic_role(&bao, &emu, "nowait", &["credential_ready_timeout=0"]);
    let creds = bao.read("azure/creds/nowait").ok().json();
    let (id, secret) = (
        creds["data"]["client_id"].as_str().expect("id"),
        creds["data"]["client_secret"].as_str().expect("secret"),
    );
    assert_ne!(emu.token_status(id, secret), 200);

    // A bound that runs out: returned with a warning.
    write_dynamic_role(&bao, &emu, "short", &["credential_ready_timeout=1s"]);
    let creds = bao.read("azure/creds/short").ok().json();
    let warnings = creds["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap_or("")
            .contains("did not yet obtain a token")),
        "{creds}"
    );
}

#[test]
fn a_fault_at_any_step_of_issuance_leaves_nothing_behind() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(&bao, &emu, "faulty", &["credential_ready_timeout=0"]);
    let steps = [
        ("POST", "/v1.0/applications"),
        ("POST", "/v1.0/servicePrincipals"),
        ("POST", "addPassword"),
        ("PUT", "roleAssignments"),
        ("POST", "members/$ref"),
    ];
    for (method, path) in steps {
        emu.add_fault(
            json!({"method": method, "path_contains": path, "status": 400, "times": 1000}),
        );
        let out = bao.read("azure/creds/faulty");
        assert_ne!(
            out.code, 0,
            "issuance must fail with a fault on {method} {path}"
        );
        emu.clear_faults();
        let apps = emu.vault_apps();
        assert!(
            apps.is_empty(),
            "after a fault on {method} {path}: {apps:?}"
        );
        assert_eq!(
            non_seeded_assignments(&emu.state()),
            0,
            "after a fault on {method} {path}"
        );
    }
    // And with the faults gone it works again.
    bao.read("azure/creds/faulty").ok();
    assert_eq!(emu.vault_apps().len(), 1);
}

#[test]
fn a_request_abandoned_by_its_client_is_finished_and_revoked() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(&bao, &emu, "gone", &["credential_ready_timeout=0"]);
    emu.settings(json!({"latency_ms": 800}));
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "1",
            "-H",
            &format!("X-Vault-Token: {}", bao.token),
        ])
        .arg(format!("{}/v1/azure/creds/gone", bao.addr))
        .output()
        .expect("curl");
    assert!(
        !out.status.success(),
        "the client gave up before the issuance finished"
    );
    // The plugin finishes on its own time, then revokes what no lease holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let state = emu.state();
        let created = emu
            .requests()
            .iter()
            .any(|r| r["method"] == "POST" && r["path"] == "/v1.0/applications");
        if created && emu.vault_apps().is_empty() && non_seeded_assignments(&state) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "objects left behind: {:?}",
            emu.vault_apps()
        );
    }
    let leases = bao.cli(&["list", "-format=json", "sys/leases/lookup/azure/creds/gone"]);
    assert!(
        leases.code != 0 || leases.json().as_array().is_none_or(|a| a.is_empty()),
        "{leases:?}"
    );
}

#[test]
fn explicit_max_ttl_caps_the_lease_and_the_azure_password() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(
        &bao,
        &emu,
        "capped",
        &[
            "ttl=1h",
            "explicit_max_ttl=90m",
            "permanently_delete=true",
            "credential_ready_timeout=0",
        ],
    );
    let creds = bao.read("azure/creds/capped").ok().json();
    let client_id = creds["data"]["client_id"].as_str().expect("id").to_string();
    let state = emu.state();
    let sp = state["applications"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["appId"] == client_id.as_str())
        .expect("app")
        .clone();
    let end = chrono::DateTime::parse_from_rfc3339(
        sp["passwordCredentials"][0]["endDateTime"]
            .as_str()
            .expect("end"),
    )
    .expect("date");
    let life = end.signed_duration_since(chrono::Utc::now());
    assert!(
        life <= chrono::Duration::minutes(90) && life > chrono::Duration::minutes(85),
        "{life}"
    );
    let lease_id = creds["lease_id"].as_str().expect("lease");
    let renewed = bao
        .cli(&["lease", "renew", "-format=json", "-increment=3h", lease_id])
        .ok()
        .json();
    assert!(
        renewed["lease_duration"].as_u64().unwrap_or(0) <= 90 * 60,
        "{renewed}"
    );

    // permanently_delete: gone from deleted items too.
    bao.cli(&["lease", "revoke", "-sync", lease_id]).ok();
    let state = emu.state();
    assert!(
        state["deletedItems"]
            .as_array()
            .expect("deleted")
            .iter()
            .all(|d| d["appId"] != client_id.as_str()),
        "{}",
        state["deletedItems"]
    );
}

#[test]
fn passwords_on_an_existing_application() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (object_id, app_id) = emu.create_app("my-existing-app", true);
    bao.write(
        "azure/roles/existing",
        &[
            &format!("application_object_id={object_id}"),
            "ttl=1h",
            "max_ttl=1h",
        ],
    )
    .ok();
    let first = bao.read("azure/creds/existing").ok().json();
    let second = bao.read("azure/creds/existing").ok().json();
    assert_eq!(first["data"]["client_id"], app_id.as_str());
    for c in [&first, &second] {
        assert_eq!(
            emu.token_status(
                &app_id,
                c["data"]["client_secret"].as_str().expect("secret")
            ),
            200
        );
    }
    let passwords = |emu: &Emulator| -> Vec<Value> {
        emu.state()["applications"]
            .as_array()
            .expect("apps")
            .iter()
            .find(|a| a["id"] == object_id.as_str())
            .map(|a| {
                a["passwordCredentials"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    };
    let pw = passwords(&emu);
    assert_eq!(pw.len(), 2);
    assert!(pw.iter().all(|p| p["displayName"]
        .as_str()
        .unwrap_or("")
        .starts_with("vault-")));
    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        first["lease_id"].as_str().expect("lease"),
    ])
    .ok();
    assert_eq!(passwords(&emu).len(), 1);
    assert_eq!(
        emu.token_status(&app_id, first["data"]["client_secret"].as_str().expect("s")),
        401
    );
    // The application itself stays; revoking after it is gone still succeeds.
    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        "-prefix",
        "azure/creds/existing",
    ])
    .ok();
    assert!(passwords(&emu).is_empty());
}

#[test]
fn rotate_root_switches_to_a_secret_only_vault_knows() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(&bao, &emu, "afterrotate", &["credential_ready_timeout=0"]);
    let out = bao.cli(&["write", "-f", "azure/rotate-root"]).ok();
    // The configured secret was not made by the engine: it stays, with a warning.
    assert!(out.stderr.contains("did not create"), "{out:?}");
    let config = bao.read("azure/config").ok().json();
    assert!(
        config["data"]["root_password_expiration_date"].is_string(),
        "{config}"
    );
    // The engine works with its new secret.
    bao.read("azure/creds/afterrotate").ok();
    // A second rotation removes the first rotation's password (made by the engine).
    bao.cli(&["write", "-f", "azure/rotate-root"]).ok();
    let root = emu.state()["applications"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["appId"] == emu.var("AZURE_CLIENT_ID").as_str())
        .expect("root app")
        .clone();
    let names: Vec<&str> = root["passwordCredentials"]
        .as_array()
        .expect("pw")
        .iter()
        .filter_map(|p| p["displayName"].as_str())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("vault-")).count(),
        1,
        "{names:?}"
    );
    bao.read("azure/creds/afterrotate").ok();
}

#[test]
fn passwords_on_a_persisted_application() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_dynamic_role(
        &bao,
        &emu,
        "kept",
        &[
            "persist_app=true",
            "sign_in_audience=AzureADMyOrg",
            "ttl=1h",
        ],
    );
    let apps = emu.vault_apps();
    assert_eq!(apps.len(), 1, "one application for the role");
    let app_id = apps[0]["appId"].as_str().expect("appId").to_string();
    let mut leases = Vec::new();
    for _ in 0..3 {
        let creds = bao.read("azure/creds/kept").ok().json();
        assert_eq!(creds["data"]["client_id"], app_id.as_str());
        let secret = creds["data"]["client_secret"].as_str().expect("secret");
        assert_eq!(emu.token_status(&app_id, secret), 200);
        leases.push(creds["lease_id"].as_str().expect("lease").to_string());
    }
    assert_eq!(
        emu.vault_apps().len(),
        1,
        "credentials reuse the role's application"
    );
    bao.cli(&["lease", "revoke", "-sync", &leases[0]]).ok();
    let passwords = emu.vault_apps()[0]["passwordCredentials"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(passwords, 2);
    // Deleting the role deletes its application; the remaining leases still revoke cleanly.
    bao.cli(&["delete", "azure/roles/kept"]).ok();
    assert!(emu.vault_apps().is_empty());
    bao.cli(&["lease", "revoke", "-sync", "-prefix", "azure/creds/kept"])
        .ok();
}
