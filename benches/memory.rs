//! The plugin's resident memory over 10,000 issuances at no emulated Azure latency, sampled
//! from `/proc/<pid>/status` every few hundred issuances, written to
//! `bench-results/memory.json` (run with `make bench`). `BENCH_ISSUANCES` overrides the count.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use common::{bao_with_emulator, Emulator};
use serde_json::json;
use support::Api;

const ISSUANCES: usize = 10_000;
const SAMPLES: usize = 40;
const CONCURRENCY: usize = 16;

fn main() {
    let total: usize = std::env::var("BENCH_ISSUANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ISSUANCES);
    let step = (total / SAMPLES).max(1);
    let emu = Emulator::start(&[]);
    // One role assignment per issuance: above the emulator's default per-subscription limit.
    emu.settings(json!({ "role_assignment_limit": total + 100 }));
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
    let pid = *bao.plugin_pids().first().expect("plugin process");

    let mut samples = vec![json!({"issuances": 0, "rss_kib": support::rss_kib(pid)})];
    let mut failed = 0;
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let batch = step.min(total - done);
        let oks = rt.block_on(support::run_concurrently(batch, CONCURRENCY, |_| {
            let api = api.clone();
            async move { api.get("azure/creds/bench").await.ok() }
        }));
        failed += oks.iter().filter(|ok| !**ok).count();
        done += batch;
        let rss = support::rss_kib(pid);
        samples.push(
            json!({"issuances": done, "rss_kib": rss, "elapsed_s": start.elapsed().as_secs_f64()}),
        );
        println!("{done} issuances: plugin RSS {rss} KiB");
    }
    let first = samples[0]["rss_kib"].as_u64().unwrap_or(0);
    let peak = samples
        .iter()
        .filter_map(|s| s["rss_kib"].as_u64())
        .max()
        .unwrap_or(0);
    let last = samples
        .last()
        .and_then(|s| s["rss_kib"].as_u64())
        .unwrap_or(0);
    support::write_results(
        "memory",
        &json!({
            "issuances": total,
            "failed": failed,
            "concurrency": CONCURRENCY,
            "emulated_latency_ms": 0,
            "per_issuance": {"azure_roles": 1, "groups": 1},
            "seconds": start.elapsed().as_secs_f64(),
            "rss_kib": {"start": first, "peak": peak, "end": last},
            "samples": samples,
        }),
    );
}
