//! Runtime figures, written to `bench-results/runtime.json` (run with `make bench`):
//! - time from exec to the handshake line,
//! - resident memory of the idle plugin process serving a mount,
//! - latency of a storage-only read through the plugin (`azure/config`) against a builtin
//!   `kv` read on the same OpenBao server in the same run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Bao;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<f64>) -> serde_json::Value {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    json!({
        "n": samples.len(),
        "median": percentile(&samples, 0.5),
        "p90": percentile(&samples, 0.9),
        "p99": percentile(&samples, 0.99),
        "min": samples[0],
    })
}

/// Exec to handshake line, in milliseconds.
fn handshake_times(runs: usize) -> Vec<f64> {
    let host = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let pem = host.cert.pem();
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut child = Command::new(common::plugin_bin())
                .env(
                    "VAULT_BACKEND_PLUGIN",
                    "6669da05-b1c8-4f49-97d9-c8e5bed98e20",
                )
                .env("PLUGIN_PROTOCOL_VERSIONS", "5")
                .env("PLUGIN_CLIENT_CERT", &pem)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn plugin");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("handshake line");
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            assert!(line.starts_with("1|5|unix|"), "{line}");
            let _ = child.kill();
            let _ = child.wait();
            elapsed
        })
        .collect()
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn read_latencies(client: &reqwest::Client, url: &str, token: &str, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let resp = client
            .get(url)
            .header("X-Vault-Token", token)
            .send()
            .await
            .expect("request");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let _ = resp.bytes().await.expect("body");
        out.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

fn main() {
    let handshake = handshake_times(30);

    let bao = Bao::dev();
    bao.register("azure");
    bao.enable("azure", "azure");
    bao.write(
        "azure/config",
        &["tenant_id=t", "subscription_id=s", "client_id=c"],
    )
    .ok();
    bao.cli(&["secrets", "enable", "-path=kv", "-version=1", "kv"])
        .ok();
    bao.write("kv/bench", &["value=x"]).ok();
    std::thread::sleep(Duration::from_secs(2));
    let pid = *bao.plugin_pids().first().expect("plugin process");
    let rss_idle = rss_kib(pid);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (plugin, kv, cpu) = runtime.block_on(async {
        let client = reqwest::Client::builder().build().expect("client");
        let plugin_url = format!("{}/v1/azure/config", bao.addr);
        let kv_url = format!("{}/v1/kv/bench", bao.addr);
        // Warm up, then interleave rounds so both see the same machine state.
        read_latencies(&client, &plugin_url, &bao.token, 200).await;
        read_latencies(&client, &kv_url, &bao.token, 200).await;
        let (mut p, mut k) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            p.extend(read_latencies(&client, &plugin_url, &bao.token, 100).await);
            k.extend(read_latencies(&client, &kv_url, &bao.token, 100).await);
        }
        // Where the time goes: CPU per request of the server and of the plugin.
        let server = bao.server_pid().unwrap_or(0);
        let mut cpu = serde_json::Map::new();
        for (name, url) in [
            ("plugin_azure_config", &plugin_url),
            ("builtin_kv", &kv_url),
        ] {
            let (s0, p0) = (cpu_seconds(server), cpu_seconds(pid));
            read_latencies(&client, url, &bao.token, 1000).await;
            cpu.insert(
                name.to_string(),
                json!({"server_cpu_ms_per_request": cpu_seconds(server) - s0,
                       "plugin_cpu_ms_per_request": cpu_seconds(pid) - p0}),
            );
        }
        (p, k, cpu)
    });
    let rss_after = rss_kib(pid);
    let plugin = summary(plugin);
    let kv = summary(kv);
    let ratio = plugin["median"].as_f64().unwrap_or(0.0) / kv["median"].as_f64().unwrap_or(1.0);

    let results = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "handshake_ms": summary(handshake),
        "plugin_rss_kib": {"idle_after_mount": rss_idle, "after_read_load": rss_after},
        "storage_read_ms": {"plugin_azure_config": plugin, "builtin_kv": kv, "median_ratio": ratio},
        "cpu_per_request_ms": cpu,
        "budgets": {"handshake_ms": 10.0, "idle_rss_kib": 10240, "read_ratio": 1.25},
    });
    let dir = common::root().join("bench-results");
    std::fs::create_dir_all(&dir).expect("bench-results dir");
    let file = dir.join("runtime.json");
    std::fs::write(&file, serde_json::to_string_pretty(&results).expect("json"))
        .expect("write results");
    println!("{}", serde_json::to_string_pretty(&results).expect("json"));
    println!("written to {}", file.display());
}
