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
    assert!(rounds(&log.iter().collect::<Vec<_>>()) <= 4, "{log:#?}");

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
