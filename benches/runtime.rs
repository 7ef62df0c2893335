//! Runtime figures, written to `bench-results/runtime.json` (run with `make bench`):
//! - time from exec to the handshake line,
//! - resident memory of the idle plugin process serving a mount,
//! - latency of a storage-only read through the plugin (`azure/config`, answered from the
//!   plugin's cache) against a builtin `kv` read on the same OpenBao server in the same run,
//!   and of a read through the SDK's example plugin (`examples/kv-plugin`: one storage call
//!   back into the host per read),
//! - CPU per request of the server and of the plugin, from which the floor follows: the
//!   latency of a plugin read whose plugin took no time at all (the host's own cost of sending
//!   a request to a plugin: two gRPC calls, OpenBao 2.7 sends `resolve-path` before each).
//!   The plugins' CPU is read to the nanosecond from `/proc/<pid>/task/*/schedstat`, in
//!   blocks that alternate between the paths, so that a machine that speeds up or slows
//!   down during the run weighs on all of them alike.
//!
//! `BASELINE_PLUGIN=<path of another build of the plugin>` mounts that build beside this one
//! (at `baseline/`) and measures both in the same alternating blocks: `plugin_cpu_vs_baseline`
//! is this build's CPU per read over the other's (how the "half" of issue 12 is measured
//! against the build the issue was filed on; see `docs/benchmarks/notes.md`).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::Bao;
use serde_json::{json, Value};
use support::{cpu_seconds, cpu_seconds_fine, ms_since, rss_kib, Api};

const ROUNDS: usize = 10;
const PER_ROUND: usize = 100;
/// CPU is measured over this many blocks per path, alternating, of `CPU_BLOCK` reads each.
const CPU_BLOCKS: usize = 10;
const CPU_BLOCK: usize = 300;

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
            let elapsed = ms_since(start);
            assert!(line.starts_with("1|5|unix|"), "{line}");
            let _ = child.kill();
            let _ = child.wait();
            elapsed
        })
        .collect()
}

async fn read_latencies(api: &Api, path: &str, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let reply = api.get(path).await;
        assert!(reply.ok(), "{path}: {} {}", reply.status, reply.body);
        out.push(ms_since(start));
    }
    out
}

/// The process of the plugin registered as `name` (its command is `<plugin dir>/<name>`).
fn plugin_pid(bao: &Bao, name: &str) -> u32 {
    let cmd = bao.plugin_dir.join(name);
    bao.plugin_pids()
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).next() == Some(cmd.as_os_str().as_encoded_bytes()))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no process for plugin {name}"))
}

fn median(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(0.0)
}

/// Mounts the registered Azure plugin `plugin` at `mount` and writes its `config` (no Azure
/// call: the reads measured are answered from the plugin's cache).
fn mount_azure(bao: &Bao, plugin: &str, mount: &str) {
    bao.register(plugin);
    bao.enable(mount, plugin);
    bao.write(
        &format!("{mount}/config"),
        &["tenant_id=t", "subscription_id=s", "client_id=c"],
    )
    .ok();
}

fn main() {
    let handshake = handshake_times(30);

    let bao = Bao::dev();
    mount_azure(&bao, "azure", "azure");
    bao.cli(&["secrets", "enable", "-path=kv", "-version=1", "kv"])
        .ok();
    bao.write("kv/bench", &["value=x"]).ok();
    std::fs::copy(
        common::workspace_bin("vault-plugin-kv-example"),
        bao.plugin_dir.join("kv-example"),
    )
    .expect("copy the example plugin");
    bao.register("kv-example");
    bao.enable("example", "kv-example");
    bao.write("example/kv/bench", &["value=x"]).ok();
    let baseline = std::env::var_os("BASELINE_PLUGIN").map(std::path::PathBuf::from);
    if let Some(path) = &baseline {
        std::fs::copy(path, bao.plugin_dir.join("azure-baseline")).expect("copy the baseline");
        mount_azure(&bao, "azure-baseline", "baseline");
    }

    let api = Api::new(&bao.addr, &bao.token);
    let rt = support::runtime();
    rt.block_on(read_latencies(&api, "azure/config", 1));
    rt.block_on(read_latencies(&api, "example/kv/bench", 1));
    let pid = plugin_pid(&bao, "azure");
    let example_pid = plugin_pid(&bao, "kv-example");
    let rss_idle = rss_kib(pid);
    let baseline_pid = baseline.as_ref().map(|_| {
        rt.block_on(read_latencies(&api, "baseline/config", 1));
        plugin_pid(&bao, "azure-baseline")
    });

    let mut paths = vec![
        ("plugin_azure_config", "azure/config", pid),
        ("builtin_kv", "kv/bench", 0),
        ("example_plugin_kv", "example/kv/bench", example_pid),
    ];
    if let Some(baseline_pid) = baseline_pid {
        paths.push((
            "baseline_plugin_azure_config",
            "baseline/config",
            baseline_pid,
        ));
    }
    let (latency, cpu) = rt.block_on(async {
        // Warm up, then interleave rounds so all see the same machine state.
        for &(_, path, _) in &paths {
            read_latencies(&api, path, 200).await;
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        for _ in 0..ROUNDS {
            for (i, (_, path, _)) in paths.iter().enumerate() {
                samples[i].extend(read_latencies(&api, path, PER_ROUND).await);
            }
        }
        // Where the time goes: CPU per request of the server and of the plugin, in blocks
        // that alternate between the paths (the order reversed every other round).
        let server = bao.server_pid().unwrap_or(0);
        let plugin_cpu = |pid: u32| if pid == 0 { 0.0 } else { cpu_seconds_fine(pid) };
        let mut seconds = vec![(0.0f64, 0.0f64); paths.len()];
        for round in 0..CPU_BLOCKS {
            let mut order: Vec<usize> = (0..paths.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (_, path, plugin) = paths[i];
                let (s0, p0) = (cpu_seconds(server), plugin_cpu(plugin));
                read_latencies(&api, path, CPU_BLOCK).await;
                seconds[i].0 += cpu_seconds(server) - s0;
                seconds[i].1 += plugin_cpu(plugin) - p0;
            }
        }
        let per = |s: f64| s * 1000.0 / (CPU_BLOCKS * CPU_BLOCK) as f64;
        let mut cpu = serde_json::Map::new();
        for ((name, _, _), (server_s, plugin_s)) in paths.iter().zip(seconds) {
            cpu.insert(
                name.to_string(),
                json!({"server_cpu_ms_per_request": per(server_s),
                       "plugin_cpu_ms_per_request": per(plugin_s)}),
            );
        }
        (samples, cpu)
    });
    let rss_after = rss_kib(pid);
    let mut reads = serde_json::Map::new();
    for ((name, _, _), s) in paths.iter().zip(latency) {
        reads.insert(name.to_string(), support::summary(s));
    }
    let kv = median(&reads["builtin_kv"]);
    let plugin = median(&reads["plugin_azure_config"]);
    let plugin_cpu = cpu["plugin_azure_config"]["plugin_cpu_ms_per_request"]
        .as_f64()
        .unwrap_or(0.0);
    let server_extra = cpu["plugin_azure_config"]["server_cpu_ms_per_request"]
        .as_f64()
        .unwrap_or(0.0)
        - cpu["builtin_kv"]["server_cpu_ms_per_request"]
            .as_f64()
            .unwrap_or(0.0);
    // The plugin runs its requests on one thread, on the critical path of each read: a plugin
    // that took no time at all would answer this much sooner.
    let floor = (plugin - plugin_cpu).max(kv);
    let ratio = plugin / kv.max(f64::EPSILON);
    let example_ratio = median(&reads["example_plugin_kv"]) / kv.max(f64::EPSILON);
    println!("plugin read {plugin:.3} ms, kv {kv:.3} ms: {ratio:.2}x; floor {floor:.3} ms");
    let baseline_vs = baseline.as_ref().map(|path| {
        let theirs = cpu["baseline_plugin_azure_config"]["plugin_cpu_ms_per_request"]
            .as_f64()
            .unwrap_or(0.0);
        println!("plugin CPU per read {plugin_cpu:.4} ms, baseline {theirs:.4} ms");
        json!({
            "baseline": path
                .strip_prefix(common::root())
                .unwrap_or(path)
                .display()
                .to_string(),
            "ratio": plugin_cpu / theirs.max(f64::EPSILON),
            "baseline_read_over_kv": median(&reads["baseline_plugin_azure_config"]) / kv.max(f64::EPSILON),
        })
    });

    support::write_results(
        "runtime",
        &json!({
            "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "handshake_ms": support::summary(handshake),
            "plugin_rss_kib": {"idle_after_mount": rss_idle, "after_read_load": rss_after},
            "storage_read_ms": Value::Object(reads),
            "read_ratio": {
                "plugin_over_kv": ratio,
                "example_plugin_over_kv": example_ratio,
                "floor_ms": floor,
                "floor_over_kv": floor / kv.max(f64::EPSILON),
                "server_extra_cpu_ms_per_plugin_request": server_extra,
            },
            "cpu_per_request_ms": cpu,
            "plugin_cpu_vs_baseline": baseline_vs,
            "budgets": {"handshake_ms": 10.0, "idle_rss_kib": 10240, "read_ratio": 2.0},
        }),
    );
}
