//! Revoke throughput, written to `bench-results/revoke.json` (run with `make bench`):
//! `bao lease revoke -prefix -sync azure/creds/bench` of 1,000 leases (one Azure role and one
//! group each) at 20 ms emulated Azure latency. The leases are issued with no latency first;
//! the CLI's client timeout is raised so that a slow revocation is measured, not cut off
//! (the CLI's default is 60 s, noted in the result).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::{bao_with_emulator, Emulator};
use serde_json::json;
use support::{ms_since, Api};

const LEASES: usize = 1000;
const LATENCY_MS: u64 = 20;
const ISSUE_CONCURRENCY: usize = 16;
const CLI_DEFAULT_TIMEOUT_S: f64 = 60.0;

fn main() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let api = Api::new(&bao.addr, &bao.token);
    let rt = support::runtime();
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let role = rt.block_on(api.post(
        "azure/roles/bench",
        &json!({
            "azure_roles": json!([{"role_name": "Reader", "scope": format!("/subscriptions/{sub}")}]).to_string(),
            "azure_groups": json!([{"group_name": "vault-test-group-1"}]).to_string(),
            "ttl": "1h",
        }),
    ));
    assert!(role.ok(), "role: {}", role.body);

    let start = Instant::now();
    let issued = rt.block_on(support::run_concurrently(LEASES, ISSUE_CONCURRENCY, |_| {
        let api = api.clone();
        async move { api.get("azure/creds/bench").await.ok() }
    }));
    let issue_s = start.elapsed().as_secs_f64();
    let ok = issued.iter().filter(|ok| **ok).count();
    assert_eq!(ok, LEASES, "every issuance succeeds");
    let apps_before = emu.vault_apps().len();
    println!("{LEASES} leases issued in {issue_s:.1} s");

    emu.settings(json!({ "latency_ms": LATENCY_MS }));
    emu.clear_requests();
    let start = Instant::now();
    let out = Command::new(common::bao_bin())
        .args(["lease", "revoke", "-prefix", "-sync", "azure/creds/bench"])
        .env("BAO_ADDR", &bao.addr)
        .env("BAO_TOKEN", &bao.token)
        .env("BAO_CLIENT_TIMEOUT", "900s")
        .stdin(Stdio::null())
        .output()
        .expect("bao lease revoke");
    let revoke_ms = ms_since(start);
    let succeeded = out.status.success();
    emu.settings(json!({ "latency_ms": 0 }));
    let requests = emu.requests();
    let deletes = requests.iter().filter(|r| r["method"] == "DELETE").count();
    let apps_after = emu.vault_apps().len();
    let revoke_s = revoke_ms / 1000.0;
    println!(
        "revoke -prefix -sync of {LEASES} leases: {revoke_s:.1} s ({}); {apps_after} apps left",
        if succeeded { "ok" } else { "failed" }
    );
    support::write_results(
        "revoke",
        &json!({
            "leases": LEASES,
            "per_lease": {"azure_roles": 1, "groups": 1},
            "emulated_latency_ms": LATENCY_MS,
            "issue_seconds_at_0_ms": issue_s,
            "revoke_prefix_sync": {
                "succeeded": succeeded,
                "seconds": revoke_s,
                "ms_per_lease": revoke_ms / LEASES as f64,
                "leases_per_second": LEASES as f64 / revoke_s.max(f64::EPSILON),
                "within_cli_default_timeout": revoke_s < CLI_DEFAULT_TIMEOUT_S,
                "stderr": String::from_utf8_lossy(&out.stderr).trim().chars().take(500).collect::<String>(),
            },
            "azure_calls": requests.len(),
            "azure_delete_calls": deletes,
            "engine_apps": {"before": apps_before, "after": apps_after},
        }),
    );
}
