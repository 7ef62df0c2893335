//! The issuance fast path and the one-round revocation, through a real OpenBao: the critical
//! path is read from the emulator's request log (which calls overlapped, which waited for
//! which), never from wall-clock time.

mod common;

use common::{bao_with_emulator, Bao, Emulator};
use serde_json::{json, Value};

fn write_json(dir: &std::path::Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).expect("write json");
    format!("@{}", path.display())
}

/// Role `name` with four Azure roles and two groups, plus `extra` fields.
fn write_role(bao: &Bao, emu: &Emulator, name: &str, extra: &[&str]) {
    let sub = format!("/subscriptions/{}", emu.var("AZURE_SUBSCRIPTION_ID"));
    let rg = format!("{sub}/resourceGroups/vault-rg");
    let roles = json!([
        {"role_name": "Reader", "scope": sub},
        {"role_name": "Contributor", "scope": sub},
        {"role_name": "Reader", "scope": rg},
        {"role_name": "Contributor", "scope": rg},
    ]);
    let groups =
        json!([{"group_name": "vault-test-group-1"}, {"group_name": "vault-test-group-2"}]);
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

fn ms(call: &Value, key: &str) -> u64 {
    call[key].as_u64().expect("a time in the request log")
}

/// The longest chain of calls each of which started after the previous one finished: the
/// Azure round trips on the critical path.
fn rounds(calls: &[&Value]) -> usize {
    let mut sorted: Vec<&Value> = calls.to_vec();
    sorted.sort_by_key(|c| ms(c, "started_ms"));
    let mut depth = vec![0usize; sorted.len()];
    for i in 0..sorted.len() {
        depth[i] = 1
            + (0..i)
                .filter(|&j| ms(sorted[j], "finished_ms") <= ms(sorted[i], "started_ms"))
                .map(|j| depth[j])
                .max()
                .unwrap_or(0);
    }
    depth.into_iter().max().unwrap_or(0)
}

#[test]
fn through_openbao_an_issuance_takes_three_rounds_and_a_revocation_one() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "wide", &[]);
    // The first issuance fills the engine's token cache.
    let first = bao.read("azure/creds/wide").ok().json();
    emu.settings(json!({"latency_ms": 100, "password_write_ms": 0}));
    emu.clear_requests();
    let start = std::time::Instant::now();
    let creds = bao.read("azure/creds/wide").ok().json();
    let elapsed = start.elapsed();
    let log = emu.requests();
    // A figure for the record, never asserted.
    println!(
        "FIGURE creds read with 4 roles and 2 groups at 100 ms per Azure call: {} ms by the CLI, \
         {} ms from the first to the last Azure call",
        elapsed.as_millis(),
        log.iter().map(|c| ms(c, "finished_ms")).max().unwrap_or(0)
            - log.iter().map(|c| ms(c, "started_ms")).min().unwrap_or(0)
    );
    let client_id = creds["data"]["client_id"].as_str().expect("client_id");
    assert!(
        log.iter()
            .all(|c| c["client_id"] != emu.var("AZURE_CLIENT_ID").as_str()),
        "no token request for the engine itself: {log:#?}"
    );
    let writes_and_proof: Vec<&Value> = log.iter().filter(|c| c["method"] != "GET").collect();
    let proof = writes_and_proof
        .iter()
        .filter(|c| c["client_id"] == client_id)
        .count();
    assert!(proof >= 1, "the credential was proven: {log:#?}");
    assert_eq!(
        rounds(&writes_and_proof),
        3,
        "application; service principal and password; assignments, memberships and proof: {log:#?}"
    );
    // The tenant's policy, known from the first issuance, is read again beside the
    // application: three rounds from the first Azure call to the last.
    let policy_reads = log
        .iter()
        .filter(|c| {
            c["method"] == "GET"
                && c["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("defaultAppManagementPolicy"))
        })
        .count();
    assert_eq!(policy_reads, 1, "{log:#?}");
    assert_eq!(rounds(&log.iter().collect::<Vec<_>>()), 3, "{log:#?}");

    // One round per revocation: assignments, memberships and the application together.
    emu.clear_requests();
    let lease = creds["lease_id"].as_str().expect("lease");
    bao.cli(&["lease", "revoke", "-sync", lease]).ok();
    let log = emu.requests();
    let deletes = log.iter().filter(|c| c["method"] == "DELETE").count();
    assert_eq!(deletes, 4 + 2 + 1, "{log:#?}");
    assert_eq!(rounds(&log.iter().collect::<Vec<_>>()), 1, "{log:#?}");
    assert!(emu.vault_apps().iter().all(|a| a["appId"] != client_id));

    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        first["lease_id"].as_str().expect("lease"),
    ])
    .ok();
    assert!(emu.vault_apps().is_empty());
}

/// How long `bao lease revoke -prefix -sync` takes for many leases at 20 ms per Azure call.
/// A measurement, not a check of speed: run it by hand and read the figure it prints
/// (`FASTPATH_LEASES`, default 1000):
/// `cargo test --test engine_fastpath revoke_prefix -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement that takes minutes; run by hand"]
fn revoke_prefix_of_many_leases() {
    let count: usize = std::env::var("FASTPATH_LEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let sub = format!("/subscriptions/{}", emu.var("AZURE_SUBSCRIPTION_ID"));
    let roles = json!([{"role_name": "Reader", "scope": sub}]);
    let groups = json!([{"group_name": "vault-test-group-1"}]);
    let roles_arg = format!(
        "azure_roles={}",
        write_json(bao.dir.path(), "r.json", &roles)
    );
    let groups_arg = format!(
        "azure_groups={}",
        write_json(bao.dir.path(), "g.json", &groups)
    );
    bao.write(
        "azure/roles/many",
        &[
            &roles_arg,
            &groups_arg,
            "credential_ready_timeout=0",
            "ttl=24h",
        ],
    )
    .ok();

    // Issue through the HTTP API, a few at a time.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let issued = runtime.block_on(async {
        use futures::StreamExt;
        let http = reqwest::Client::new();
        let url = format!("{}/v1/azure/creds/many", bao.addr);
        futures::stream::iter(0..count)
            .map(|_| {
                let (http, url, token) = (http.clone(), url.clone(), bao.token.clone());
                async move {
                    let r = http
                        .get(&url)
                        .header("X-Vault-Token", token)
                        .send()
                        .await
                        .expect("issue");
                    assert!(r.status().is_success(), "{:?}", r.text().await);
                }
            })
            .buffer_unordered(8)
            .count()
            .await
    });
    assert_eq!(issued, count);
    assert_eq!(emu.vault_apps().len(), count);

    let latency: u64 = std::env::var("FASTPATH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    emu.settings(json!({ "latency_ms": latency }));
    emu.clear_requests();
    let start = std::time::Instant::now();
    let out = bao.cli(&["lease", "revoke", "-prefix", "-sync", "azure/creds/many"]);
    let elapsed = start.elapsed();
    let log = emu.requests();
    let (first, last) = (
        log.iter().map(|c| ms(c, "started_ms")).min().unwrap_or(0),
        log.iter().map(|c| ms(c, "finished_ms")).max().unwrap_or(0),
    );
    println!(
        "FIGURE revoke -prefix -sync of {count} leases at {latency} ms per call: {:.1} s by the CLI \
         (exit {}), {:.1} s from the first to the last Azure call, {} Azure calls, {} applications left",
        elapsed.as_secs_f64(),
        out.code,
        (last - first) as f64 / 1000.0,
        log.len(),
        emu.vault_apps().len()
    );
    if std::env::var_os("FASTPATH_DUMP").is_some() {
        let text = bao.log_text();
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(60)..] {
            println!("LOG {l}");
        }
        for c in &log {
            println!(
                "{} {} {} {} {}",
                ms(c, "started_ms"),
                ms(c, "finished_ms"),
                c["method"],
                c["status"],
                c["path"]
            );
        }
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(emu.vault_apps().is_empty());
}

/// Sets the tenant's default app management policy through Graph, as an administrator would.
fn set_default_policy(emu: &Emulator, restrictions: Value) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-f",
            "--cacert",
            &emu.var("SSL_CERT_FILE"),
            "-X",
            "PATCH",
        ])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", emu.root_graph_token()),
            "-H",
            "Content-Type: application/json",
            "-d",
            &json!({"isEnabled": true, "applicationRestrictions": restrictions}).to_string(),
        ])
        .arg(format!(
            "{}/v1.0/policies/defaultAppManagementPolicy",
            emu.var("AZURE_GRAPH_ENDPOINT")
        ))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn through_openbao_a_policy_change_is_honoured_on_the_very_next_issuance() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "wide", &[]);
    // The first issuance reads the policy (none in force) before anything is made.
    let first = bao.read("azure/creds/wide").ok().json();
    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        first["lease_id"].as_str().expect("lease"),
    ])
    .ok();

    // A one-day cap on passwords, set between two issuances: the next one still takes three
    // rounds, and its password and lease end within the day.
    set_default_policy(
        &emu,
        json!({"passwordCredentials": [{"restrictionType": "passwordLifetime", "maxLifetime": "P1D"}],
            "keyCredentials": []}),
    );
    emu.settings(json!({"latency_ms": 100, "password_write_ms": 0}));
    emu.clear_requests();
    let capped = bao.read("azure/creds/wide").ok().json();
    let log = emu.requests();
    emu.settings(json!({"latency_ms": 0}));
    assert_eq!(rounds(&log.iter().collect::<Vec<_>>()), 3, "{log:#?}");
    let lease = capped["lease_duration"].as_i64().expect("lease_duration");
    assert!(lease <= 86_400, "lease {lease}");
    let warnings = capped["warnings"].to_string();
    assert!(warnings.contains("1 days"), "{warnings}");
    let client_id = capped["data"]["client_id"].as_str().expect("client_id");
    let app = emu
        .vault_apps()
        .into_iter()
        .find(|a| a["appId"] == client_id)
        .expect("the application");
    let end = app["passwordCredentials"][0]["endDateTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("a password end date");
    assert!(
        end <= chrono::Utc::now() + chrono::Duration::days(1),
        "{end}"
    );
    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        capped["lease_id"].as_str().expect("lease"),
    ])
    .ok();

    // Passwords blocked: the very next issuance is refused with the policy named, no
    // password is attempted, and nothing is left in Azure.
    set_default_policy(
        &emu,
        json!({"passwordCredentials": [{"restrictionType": "passwordAddition", "maxLifetime": null}],
            "keyCredentials": []}),
    );
    emu.clear_requests();
    let refused = bao.read("azure/creds/wide");
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("Code: 400"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("blocks new password credentials"),
        "{}",
        refused.stderr
    );
    let log = emu.requests();
    assert!(
        log.iter().all(|c| !c["path"]
            .as_str()
            .is_some_and(|p| p.contains("addPassword") || p.contains("roleAssignments/"))),
        "{log:#?}"
    );
    assert!(emu.vault_apps().is_empty(), "{:#?}", emu.vault_apps());
}
