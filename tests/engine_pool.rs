//! Warm credential pools (`pool_size`) through a real OpenBao with the emulator as Azure:
//! pooled reads hand out distinct, usable credentials with no Azure call; the pool refills;
//! a pool that cannot refill degrades to normal issuance with a warning; and role writes,
//! role deletion, configuration changes, `secrets disable` and `kill -9` of the plugin in
//! the middle of a refill leave nothing behind in Azure.

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

/// Writes role `name` (Reader on the subscription, membership of `vault-test-group-1`)
/// with `extra` fields.
fn write_role(bao: &Bao, emu: &Emulator, name: &str, extra: &[&str]) {
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let roles = json!([{"role_name": "Reader", "scope": format!("/subscriptions/{sub}")}]);
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

/// Service principals of engine-made applications (`vault-<uuid>`), and role assignments
/// and group memberships of principals the emulator did not seed.
fn leftovers(emu: &Emulator) -> (usize, usize, usize) {
    let state = emu.state();
    let vault_sps: Vec<String> = state["servicePrincipals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["displayName"]
                .as_str()
                .and_then(|n| n.strip_prefix("vault-"))
                .is_some_and(|rest| rest.len() == 36 && rest.matches('-').count() == 4)
        })
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect();
    let seeded: Vec<String> = state["servicePrincipals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .filter(|id| !vault_sps.contains(id))
        .chain(state["machineIdentity"]["id"].as_str().map(str::to_string))
        .collect();
    let assignments = state["roleAssignments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ra| {
            let p = ra["properties"]["principalId"].as_str().unwrap_or("");
            !seeded.iter().any(|s| s == p)
        })
        .count();
    let members = state["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| {
            m.as_str()
                .map(str::to_string)
                .or_else(|| m["id"].as_str().map(str::to_string))
        })
        .filter(|m| !seeded.contains(m))
        .count();
    (vault_sps.len(), assignments, members)
}

fn assert_nothing_left(emu: &Emulator, after: &str) {
    let apps = emu.vault_apps();
    assert!(apps.is_empty(), "{after}: applications left: {apps:?}");
    assert_eq!(
        leftovers(emu),
        (0, 0, 0),
        "{after}: (service principals, role assignments, memberships) left"
    );
}

fn await_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(done(), "timed out waiting until {what}");
}

fn status(bao: &Bao, role: &str) -> Value {
    bao.read(&format!("azure/pool/{role}")).ok().json()["data"].clone()
}

fn await_ready(bao: &Bao, role: &str, n: u64) {
    await_until(
        &format!("{n} pooled credentials of '{role}' are ready"),
        Duration::from_secs(60),
        || {
            let s = status(bao, role);
            s["ready"] == n && s["pending"] == 0
        },
    );
}

fn app_ids(emu: &Emulator) -> Vec<String> {
    let mut ids: Vec<String> = emu
        .vault_apps()
        .iter()
        .filter_map(|a| a["appId"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[test]
fn pooled_reads_are_distinct_usable_and_need_no_azure_call() {
    let emu = Emulator::start(&["--latency-ms", "20"]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "ci", &["ttl=1h", "max_ttl=2h", "pool_size=3"]);
    let role = bao.read("azure/roles/ci").ok().json();
    assert_eq!(role["data"]["pool_size"], 3);
    await_ready(&bao, "ci", 3);
    let pooled = app_ids(&emu);
    assert_eq!(pooled.len(), 3);

    // Azure refuses everything: pooled reads still answer, so they call nothing.
    emu.add_fault(json!({"status": 503}));
    emu.clear_requests();
    let reads: Vec<Value> = (0..3)
        .map(|_| {
            bao.cli(&["read", "-format=json", "azure/creds/ci", "metadata=job=42"])
                .ok()
                .json()
        })
        .collect();
    let during = emu.requests();
    // The refill the reads start fails at its first call and backs off; nothing else ran.
    assert!(
        during.iter().all(|r| r["status"] == 503),
        "only failing refill calls: {during:?}"
    );
    let mut handed: Vec<String> = reads
        .iter()
        .map(|r| {
            r["data"]["client_id"]
                .as_str()
                .expect("client_id")
                .to_string()
        })
        .collect();
    handed.sort();
    assert_eq!(handed, pooled, "each pooled credential handed out once");
    for r in &reads {
        let d = &r["data"];
        let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "client_id",
                "client_secret",
                "credential_ready_wait_ms",
                "metadata"
            ],
            "the fields of an unpooled issuance"
        );
        assert_eq!(d["metadata"]["job"], "42");
        assert!(r["renewable"].as_bool().unwrap());
        let ttl = r["lease_duration"].as_u64().unwrap();
        assert!(ttl > 3500 && ttl <= 3600, "the role's ttl: {ttl}");
        assert!(r["warnings"].is_null(), "{r}");
    }

    // Empty pool and Azure down: the read fails like an unpooled one, and the refill
    // records its failure and backs off.
    let empty = bao.read("azure/creds/ci");
    assert_ne!(empty.code, 0, "{empty:?}");
    await_until(
        "the failing refill is recorded",
        Duration::from_secs(60),
        || {
            let s = status(&bao, "ci");
            s["ready"] == 0
                && s["refill_backing_off"] == true
                && s["refill_error"].as_str().is_some_and(|e| !e.is_empty())
        },
    );
    // Azure back, the refill still backing off: the read is issued directly, with a
    // warning saying why.
    emu.clear_faults();
    let direct = bao
        .cli(&["read", "-format=json", "azure/creds/ci"])
        .ok()
        .json();
    let warnings = direct["warnings"].to_string();
    assert!(
        warnings.contains("pool of role 'ci' is empty because refilling it fails"),
        "{direct}"
    );
    for r in &reads {
        assert_eq!(
            emu.token_status(
                r["data"]["client_id"].as_str().unwrap(),
                r["data"]["client_secret"].as_str().unwrap()
            ),
            200,
            "a pooled credential works"
        );
    }
    // Once the back-off ends, the pool refills.
    await_until(
        "the pool refills after its back-off",
        Duration::from_secs(60),
        || {
            // Each read starts a refill when none runs; the back-off decides.
            let s = status(&bao, "ci");
            if s["ready"] == 3 {
                return true;
            }
            if s["refill_backing_off"] == false && s["pending"] == 0 && s["ready"] == 0 {
                let c = bao
                    .cli(&["read", "-format=json", "azure/creds/ci"])
                    .ok()
                    .json();
                let lease = c["lease_id"].as_str().unwrap().to_string();
                bao.cli(&["lease", "revoke", "-sync", &lease]).ok();
            }
            false
        },
    );

    // A pooled lease renews and revokes like any other.
    let lease = reads[0]["lease_id"].as_str().unwrap();
    bao.cli(&["lease", "renew", lease]).ok();
    bao.cli(&["lease", "revoke", "-sync", lease]).ok();
    assert!(!app_ids(&emu).contains(&reads[0]["data"]["client_id"].as_str().unwrap().to_string()));
}

#[test]
fn pool_size_is_checked() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    for (extra, says) in [
        ("pool_size=51", "pool_size must be at most 50"),
        ("pool_size=-1", "pool_size must be 0 or more"),
    ] {
        let sub = emu.var("AZURE_SUBSCRIPTION_ID");
        let roles = json!([{"role_name": "Reader", "scope": format!("/subscriptions/{sub}")}]);
        let arg = format!(
            "azure_roles={}",
            write_json(bao.dir.path(), "r.json", &roles)
        );
        let out = bao.write("azure/roles/bad", &[&arg, extra]);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(says), "{out:?}");
        assert!(out.stderr.contains("Code: 400"), "{out:?}");
    }
    let (object_id, _) = emu.create_app("existing-for-pool", true);
    let out = bao.write(
        "azure/roles/app",
        &[
            &format!("application_object_id={object_id}"),
            "pool_size=11",
        ],
    );
    assert!(
        out.stderr
            .contains("pool_size must be at most 10 on a role with application_object_id"),
        "{out:?}"
    );
}

#[test]
fn draining_on_role_write_role_delete_config_change_and_disable() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "ci", &["pool_size=2"]);
    await_ready(&bao, "ci", 2);
    let first = app_ids(&emu);
    assert_eq!(first.len(), 2);

    // Any write of the role replaces its pool.
    bao.write("azure/roles/ci", &["ttl=30m"]).ok();
    await_ready(&bao, "ci", 2);
    await_until("the first pool is deleted", Duration::from_secs(30), || {
        let now = app_ids(&emu);
        now.len() == 2 && first.iter().all(|a| !now.contains(a))
    });
    let second = app_ids(&emu);

    // A new credential of the engine's identity: the pool goes and comes back.
    let root_app = emu.state()["applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appId"] == emu.var("AZURE_CLIENT_ID").as_str())
        .expect("root application")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pw = emu.graph_post(
        &format!("applications/{root_app}/addPassword"),
        &json!({"passwordCredential": {"displayName": "rotated-by-test"}}),
    );
    let secret = pw["secretText"].as_str().unwrap();
    bao.write("azure/config", &[&format!("client_secret={secret}")])
        .ok();
    await_ready(&bao, "ci", 2);
    await_until(
        "the pool made before the config change is deleted",
        Duration::from_secs(30),
        || {
            let now = app_ids(&emu);
            now.len() == 2 && second.iter().all(|a| !now.contains(a))
        },
    );

    // Deleting the role deletes its pool.
    bao.cli(&["delete", "azure/roles/ci"]).ok();
    await_until(
        "the role's pool is deleted",
        Duration::from_secs(30),
        || emu.vault_apps().is_empty(),
    );
    assert_nothing_left(&emu, "role delete");

    // Disabling the mount deletes every pool before it returns.
    write_role(&bao, &emu, "a", &["pool_size=2"]);
    write_role(&bao, &emu, "b", &["pool_size=1"]);
    await_ready(&bao, "a", 2);
    await_ready(&bao, "b", 1);
    assert_eq!(emu.vault_apps().len(), 3);
    bao.cli(&["secrets", "disable", "azure"]).ok();
    assert_nothing_left(&emu, "secrets disable");
}

#[test]
fn kill_9_in_the_middle_of_a_refill_leaves_nothing_behind() {
    // Each Azure call takes 400 ms, so each batch of the refill (4 credentials, then 2)
    // stays pending for seconds.
    let emu = Emulator::start(&["--latency-ms", "400"]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "ci", &["pool_size=6"]);
    // Some credentials exist in Azure and some are still being created: the refill is in its
    // middle. (Between two batches the mount reports none pending: wait for a batch.)
    await_until(
        "the refill has created applications and is creating more",
        Duration::from_secs(60),
        || !emu.vault_apps().is_empty() && status(&bao, "ci")["pending"].as_u64() > Some(0),
    );
    for pid in bao.plugin_pids() {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
    }
    assert!(
        !emu.vault_apps().is_empty(),
        "the kill left objects in Azure"
    );
    emu.settings(json!({"latency_ms": 0}));
    // The restarted plugin finds the unfinished entries and removes their objects: here,
    // deleting the role drains everything the pool ever made.
    await_until("the plugin answers again", Duration::from_secs(30), || {
        bao.read("azure/pool/ci").code == 0
    });
    bao.cli(&["delete", "azure/roles/ci"]).ok();
    await_until(
        "the interrupted refill's objects are deleted",
        Duration::from_secs(90),
        || emu.vault_apps().is_empty() && leftovers(&emu) == (0, 0, 0),
    );
    assert_eq!(status(&bao, "ci")["ready"], 0);
}

#[test]
fn passwords_on_an_existing_application_are_pooled_and_drained() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (object_id, app_id) = emu.create_app("pooled-existing", true);
    bao.write(
        "azure/roles/existing",
        &[
            &format!("application_object_id={object_id}"),
            "ttl=1h",
            "pool_size=2",
        ],
    )
    .ok();
    await_ready(&bao, "existing", 2);
    assert_eq!(common::app_passwords(&emu, &object_id).len(), 2);

    emu.add_fault(json!({"status": 503}));
    let c = bao
        .cli(&["read", "-format=json", "azure/creds/existing"])
        .ok()
        .json();
    emu.clear_faults();
    assert_eq!(c["data"]["client_id"], app_id.as_str());
    assert_eq!(
        emu.token_status(&app_id, c["data"]["client_secret"].as_str().unwrap()),
        200
    );
    // Deleting the role removes the pooled passwords; the handed-out one stays with its lease.
    bao.cli(&["delete", "azure/roles/existing"]).ok();
    await_until(
        "the pooled passwords are removed",
        Duration::from_secs(30),
        || common::app_passwords(&emu, &object_id).len() == 1,
    );
    assert_eq!(
        emu.token_status(&app_id, c["data"]["client_secret"].as_str().unwrap()),
        200,
        "the handed-out password still works"
    );
}
