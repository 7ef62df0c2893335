//! Issuance latency of `creds/<role>` for 1, 4 and 8 Azure roles at 100 ms emulated Azure
//! latency, and the emulator's request timeline of one issuance each, written to
//! `bench-results/issuance.json` (run with `make bench`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{bao_with_emulator, Emulator};
use serde_json::{json, Value};

const LATENCY_MS: u64 = 100;
const RUNS: usize = 5;
const ROLES: [&str; 4] = [
    "Reader",
    "Contributor",
    "User Access Administrator",
    "Owner",
];

fn role_json(emu: &Emulator, n: usize) -> Value {
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let scopes = [
        format!("/subscriptions/{sub}"),
        format!("/subscriptions/{sub}/resourceGroups/vault-rg"),
    ];
    let roles: Vec<Value> = (0..n)
        .map(|i| json!({"role_name": ROLES[i % ROLES.len()], "scope": scopes[i / ROLES.len()]}))
        .collect();
    Value::Array(roles)
}

fn main() {
    let mut results = serde_json::Map::new();
    for n in [1usize, 4, 8] {
        let emu = Emulator::start(&[]);
        let bao = bao_with_emulator(&emu);
        let file = bao.dir.path().join("roles.json");
        std::fs::write(&file, role_json(&emu, n).to_string()).expect("roles file");
        bao.write(
            "azure/roles/bench",
            &[
                &format!("azure_roles=@{}", file.display()),
                "azure_groups=[{\"group_name\":\"vault-test-group-1\"}]",
            ],
        )
        .ok();
        emu.settings(json!({"latency_ms": LATENCY_MS}));

        let mut samples = Vec::new();
        let mut timeline = Vec::new();
        for run in 0..RUNS {
            emu.clear_requests();
            let start = Instant::now();
            let creds = bao.read("azure/creds/bench").ok().json();
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
            if run == 0 {
                let reqs = emu.requests();
                let t0 = reqs
                    .iter()
                    .filter_map(|r| r["started_ms"].as_u64())
                    .min()
                    .unwrap_or(0);
                timeline = reqs
                    .iter()
                    .map(|r| {
                        json!({
                            "service": r["service"], "method": r["method"],
                            "path": r["path"].as_str().unwrap_or("").split('?').next().unwrap_or(""),
                            "status": r["status"],
                            "start_ms": r["started_ms"].as_u64().unwrap_or(0) - t0,
                            "end_ms": r["finished_ms"].as_u64().unwrap_or(0) - t0,
                        })
                    })
                    .collect();
            }
            bao.cli(&[
                "lease",
                "revoke",
                "-sync",
                creds["lease_id"].as_str().unwrap_or(""),
            ])
            .ok();
        }
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let token_calls = timeline.iter().filter(|r| r["service"] == "token").count();
        let api_calls = timeline.len() - token_calls;
        println!(
            "{n} roles: median {:.0} ms over {RUNS} issuances; {api_calls} API calls",
            samples[RUNS / 2]
        );
        results.insert(
            format!("{n}_roles"),
            json!({
                "azure_roles": n, "groups": 1, "runs": RUNS,
                "issuance_ms": {"median": samples[RUNS / 2], "min": samples[0], "max": samples[RUNS - 1]},
                "emulated_latency_ms": LATENCY_MS,
                "api_calls_first_issuance": api_calls,
                "timeline_first_issuance": timeline,
            }),
        );
    }
    let dir = common::root().join("bench-results");
    std::fs::create_dir_all(&dir).expect("dir");
    let out = serde_json::to_string_pretty(&Value::Object(results)).expect("json");
    std::fs::write(dir.join("issuance.json"), out).expect("write");
    println!("written to {}", dir.join("issuance.json").display());
}
