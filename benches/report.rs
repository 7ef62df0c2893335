//! Writes `docs/benchmarks.md` and its plots (`docs/benchmarks/*.svg`) from the figures the
//! other benchmarks wrote to `bench-results/*.json` (run last by `make bench`). A part whose
//! figures are missing, or that could not run, says so instead of showing a number.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fmt::Write;

use serde_json::Value;
use support::svg::{BarChart, LineChart, Series};

fn load(name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(support::results_dir().join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn write_svg(name: &str, svg: &str) -> String {
    let dir = common::root().join("docs").join("benchmarks");
    std::fs::create_dir_all(&dir).expect("docs/benchmarks");
    std::fs::write(dir.join(name), svg).expect("write SVG");
    format!("benchmarks/{name}")
}

fn issuance(md: &mut String) {
    let _ = writeln!(
        md,
        "## Issuance latency against the number of Azure roles\n"
    );
    let Some(r) = load("issuance") else {
        let _ = writeln!(
            md,
            "_No figures: `bench-results/issuance.json` is missing._\n"
        );
        return;
    };
    let by = r["by_roles"].as_object().cloned().unwrap_or_default();
    let mut rows: Vec<&Value> = by.values().collect();
    rows.sort_by_key(|v| v["azure_roles"].as_u64().unwrap_or(0));
    let point = |v: &Value, who: &str| {
        (
            f(&v["azure_roles"]),
            f(&v[who]["issuance_ms"]["median"]) / 1000.0,
        )
    };
    let chart = LineChart {
        title: format!(
            "creds read, Azure at {} ms per call (median of {})",
            r["emulated_latency_ms"], r["runs_per_point"]
        ),
        x_label: "Azure roles (plus one group)".into(),
        y_label: "seconds".into(),
        series: vec![
            Series::new(
                "this engine (through OpenBao)",
                rows.iter().map(|v| point(v, "this_engine")).collect(),
            ),
            Series::new(
                "Go engine's call pattern (replayed)",
                rows.iter().map(|v| point(v, "go_pattern")).collect(),
            ),
        ],
    };
    let file = write_svg("issuance.svg", &chart.to_svg());
    let _ = writeln!(
        md,
        "Each point is the median of {} `creds` reads of a role with that many Azure roles and one \
         group, with the emulator adding {} ms to every Azure call. \"This engine\" is the plugin \
         under OpenBao, timed from the HTTP request to the answer, its readiness proof included. \
         The Go engine's pattern is replayed by the benchmark itself against the same emulator: \
         the REST calls of `createSPSecret` in hashicorp/vault-plugin-secrets-azure \
         `path_service_principal.go` (`createApp`, then `createSP` = create the service principal \
         and add its password, then `assignRoles` one role at a time, then \
         `addGroupMemberships` one group at a time, all in `client.go`), each in the Go engine's \
         retry loop, with tokens from a warm cache and without its four WAL storage calls \
         (sub-millisecond). The Go engine proves nothing before it answers; this engine's figure \
         includes the proof that the new secret obtains tokens.\n",
        r["runs_per_point"], r["emulated_latency_ms"]
    );
    let _ = writeln!(md, "![issuance latency]({file})\n");
    let _ = writeln!(
        md,
        "| Azure roles | this engine (s) | round trips | Go pattern (s) | round trips |\n| --- | --- | --- | --- | --- |"
    );
    for v in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {} | {:.2} | {} |",
            v["azure_roles"],
            f(&v["this_engine"]["issuance_ms"]["median"]) / 1000.0,
            v["this_engine"]["round_trips"],
            f(&v["go_pattern"]["issuance_ms"]["median"]) / 1000.0,
            v["go_pattern"]["round_trips"],
        );
    }
    let _ = writeln!(
        md,
        "\n\"Round trips\" is the longest chain of Azure calls in the emulator's log of the first \
         issuance in which each call started after the one before it ended: the round trips on \
         the critical path (token requests included; the first issuance of a mount also reads \
         the tenant policy before anything else, later ones beside the application; `bench-results/issuance.json` has the whole \
         timeline). With no replication delay in the emulator, the Go pattern never retries; \
         in Azure each `PrincipalNotFound` or `Request_ResourceNotFound` costs it 2 to 7 s more.\n"
    );
}

fn pool(md: &mut String) {
    let _ = writeln!(md, "## Pooled against unpooled `creds` reads\n");
    let Some(r) = load("pool") else {
        let _ = writeln!(md, "_No figures: `bench-results/pool.json` is missing._\n");
        return;
    };
    let unpooled = f(&r["unpooled"]["creds_read_ms"]["median"]);
    if r["pooled"]["ran"] != Value::Bool(true) {
        let _ = writeln!(
            md,
            "Not measured: {}. Unpooled reads at {} ms Azure latency: median {:.0} ms.\n",
            r["pooled"]["reason"]
                .as_str()
                .or(r["pooled"]["note"].as_str())
                .unwrap_or("the pooled part did not run"),
            r["emulated_latency_ms"],
            unpooled
        );
        return;
    }
    let pooled = &r["pooled"]["creds_read_ms"];
    let chart = BarChart {
        title: format!(
            "creds read, Azure at {} ms per call (median)",
            r["emulated_latency_ms"]
        ),
        value_label: "milliseconds".into(),
        bars: vec![
            ("unpooled".into(), unpooled),
            (
                format!("pooled (pool_size={})", r["pool_size"]),
                f(&pooled["median"]),
            ),
        ],
    };
    let file = write_svg("pool.svg", &chart.to_svg());
    let _ = writeln!(
        md,
        "A role with one Azure role and one group, Azure at {} ms per call. The pooled role has \
         `pool_size={}`; its reads are timed once the pool is full (its applications exist and \
         the emulator has been quiet for 1.5 s), {} reads per full pool, {} times.\n\n\
         ![pooled vs unpooled]({file})\n\n\
         | | median | p90 | max |\n| --- | --- | --- | --- |\n\
         | unpooled | {:.0} ms | {:.0} ms | {:.0} ms |\n| pooled | {:.1} ms | {:.1} ms | {:.1} ms |\n",
        r["emulated_latency_ms"],
        r["pool_size"],
        r["pooled"]["reads_per_round"],
        r["pooled"]["rounds"],
        unpooled,
        f(&r["unpooled"]["creds_read_ms"]["p90"]),
        f(&r["unpooled"]["creds_read_ms"]["max"]),
        f(&pooled["median"]),
        f(&pooled["p90"]),
        f(&pooled["max"]),
    );
}

fn revoke(md: &mut String) {
    let _ = writeln!(md, "## Revoke throughput\n");
    let Some(r) = load("revoke") else {
        let _ = writeln!(
            md,
            "_No figures: `bench-results/revoke.json` is missing._\n"
        );
        return;
    };
    let rv = &r["revoke_prefix_sync"];
    let chart = BarChart {
        title: format!(
            "lease revoke -prefix -sync of {} leases, Azure at {} ms per call",
            r["leases"], r["emulated_latency_ms"]
        ),
        value_label: "seconds".into(),
        bars: vec![
            ("this run".into(), f(&rv["seconds"])),
            ("goal".into(), 30.0),
            ("CLI default timeout".into(), 60.0),
        ],
    };
    let file = write_svg("revoke.svg", &chart.to_svg());
    let _ = writeln!(
        md,
        "`bao lease revoke -prefix -sync` of {} leases (each: one Azure role and one group), Azure \
         at {} ms per call; the leases are issued first with no latency, and the CLI's client \
         timeout is raised so a slow run is measured rather than cut off at 60 s.\n\n\
         ![revoke throughput]({file})\n\n\
         | | |\n| --- | --- |\n| revocation {} | {:.1} s ({:.1} ms per lease, {:.0} leases/s) |\n\
         | Azure calls during the revocation | {} ({} deletions) |\n\
         | engine-made applications before / after | {} / {} |\n",
        r["leases"],
        r["emulated_latency_ms"],
        if rv["succeeded"] == Value::Bool(true) {
            "succeeded"
        } else {
            "FAILED"
        },
        f(&rv["seconds"]),
        f(&rv["ms_per_lease"]),
        f(&rv["leases_per_second"]),
        r["azure_calls"],
        r["azure_delete_calls"],
        r["engine_apps"]["before"],
        r["engine_apps"]["after"],
    );
}

fn memory(md: &mut String) {
    let _ = writeln!(md, "## Plugin resident memory over issuances\n");
    let Some(r) = load("memory") else {
        let _ = writeln!(
            md,
            "_No figures: `bench-results/memory.json` is missing._\n"
        );
        return;
    };
    let points: Vec<(f64, f64)> = r["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (f(&s["issuances"]), f(&s["rss_kib"]) / 1024.0))
        .collect();
    let chart = LineChart {
        title: format!("plugin RSS over {} issuances", r["issuances"]),
        x_label: "issuances".into(),
        y_label: "MiB".into(),
        series: vec![Series::new("VmRSS of the plugin process", points)],
    };
    let file = write_svg("memory.svg", &chart.to_svg());
    let kib = |v: &Value| f(v) / 1024.0;
    let _ = writeln!(
        md,
        "{} issuances ({} in flight at a time; one Azure role and one group each; no Azure \
         latency; leases left to run), with `VmRSS` of the plugin process read from \
         `/proc/<pid>/status` after every {} issuances. {} failed; {:.0} s in all.\n\n\
         ![resident memory]({file})\n\n\
         | start | peak | end |\n| --- | --- | --- |\n| {:.1} MiB | {:.1} MiB | {:.1} MiB |\n",
        r["issuances"],
        r["concurrency"],
        r["samples"]
            .as_array()
            .and_then(|s| s.get(1))
            .map(|s| s["issuances"].clone())
            .unwrap_or(Value::Null),
        r["failed"],
        f(&r["seconds"]),
        kib(&r["rss_kib"]["start"]),
        kib(&r["rss_kib"]["peak"]),
        kib(&r["rss_kib"]["end"]),
    );
}

fn runtime(md: &mut String) {
    let _ = writeln!(md, "## Reads against builtin `kv`, and the floor\n");
    let Some(r) = load("runtime") else {
        let _ = writeln!(
            md,
            "_No figures: `bench-results/runtime.json` is missing._\n"
        );
        return;
    };
    let reads = &r["storage_read_ms"];
    let ratio = &r["read_ratio"];
    let kv = f(&reads["builtin_kv"]["median"]);
    let chart = BarChart {
        title: "read latency on one OpenBao server (median, ms)".into(),
        value_label: "milliseconds".into(),
        bars: vec![
            ("builtin kv".into(), kv),
            (
                "floor (plugin taking no time)".into(),
                f(&ratio["floor_ms"]),
            ),
            (
                "azure/config (this plugin)".into(),
                f(&reads["plugin_azure_config"]["median"]),
            ),
            (
                "example plugin kv read".into(),
                f(&reads["example_plugin_kv"]["median"]),
            ),
        ],
    };
    let file = write_svg("reads.svg", &chart.to_svg());
    let cpu = &r["cpu_per_request_ms"];
    let _ = writeln!(
        md,
        "Sequential HTTP reads on one dev server, interleaved in rounds: a builtin `kv` (v1) \
         read, `azure/config` (answered from the plugin's cache: no storage call), and the SDK's \
         example plugin reading a key (one storage call back into the host). The floor is the \
         plugin read less the plugin's own CPU per request (the plugin serves a request on one \
         thread, on the read's critical path): what a plugin that took no time at all would get.\n\n\
         ![reads]({file})\n\n\
         | read | median | p90 | / kv | server CPU per request | plugin CPU per request |\n\
         | --- | --- | --- | --- | --- | --- |\n\
         | builtin `kv` | {:.3} ms | {:.3} ms | 1.00x | {:.3} ms | |\n\
         | `azure/config` | {:.3} ms | {:.3} ms | {:.2}x | {:.3} ms | {:.3} ms |\n\
         | example plugin | {:.3} ms | {:.3} ms | {:.2}x | {:.3} ms | {:.3} ms |\n\
         | floor | {:.3} ms | | {:.2}x | | 0 |\n\n\
         Other runtime figures: exec to handshake line {:.1} ms (median of {}); plugin resident \
         memory idle after mount {:.1} MiB, after the read load {:.1} MiB.\n",
        kv,
        f(&reads["builtin_kv"]["p90"]),
        f(&cpu["builtin_kv"]["server_cpu_ms_per_request"]),
        f(&reads["plugin_azure_config"]["median"]),
        f(&reads["plugin_azure_config"]["p90"]),
        f(&ratio["plugin_over_kv"]),
        f(&cpu["plugin_azure_config"]["server_cpu_ms_per_request"]),
        f(&cpu["plugin_azure_config"]["plugin_cpu_ms_per_request"]),
        f(&reads["example_plugin_kv"]["median"]),
        f(&reads["example_plugin_kv"]["p90"]),
        f(&ratio["example_plugin_over_kv"]),
        f(&cpu["example_plugin_kv"]["server_cpu_ms_per_request"]),
        f(&cpu["example_plugin_kv"]["plugin_cpu_ms_per_request"]),
        f(&ratio["floor_ms"]),
        f(&ratio["floor_over_kv"]),
        f(&r["handshake_ms"]["median"]),
        r["handshake_ms"]["n"],
        f(&r["plugin_rss_kib"]["idle_after_mount"]) / 1024.0,
        f(&r["plugin_rss_kib"]["after_read_load"]) / 1024.0,
    );
    if let Some(baseline) = r["plugin_cpu_vs_baseline"].as_object() {
        let _ = writeln!(
            md,
            "Against another build of the plugin mounted beside it (`BASELINE_PLUGIN={}`), in \
             the same alternating blocks: this build's CPU per read is {:.2}x that build's \
             ({:.3} ms against {:.3} ms); its read is {:.2}x a `kv` read, that build's {:.2}x.\n",
            baseline["baseline"].as_str().unwrap_or("?"),
            f(&baseline["ratio"]),
            f(&cpu["plugin_azure_config"]["plugin_cpu_ms_per_request"]),
            f(&cpu["baseline_plugin_azure_config"]["plugin_cpu_ms_per_request"]),
            f(&ratio["plugin_over_kv"]),
            f(&baseline["baseline_read_over_kv"]),
        );
    }
}

fn main() {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         Written by `make bench` from one run of each benchmark (`benches/*.rs`; figures in \
         `bench-results/*.json`, plots drawn by `benches/report.rs`). Everything runs on this \
         machine: a real OpenBao dev server, the release plugin, and the Azure emulator with the \
         latency each section names. Machine: {} cores.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    issuance(&mut md);
    pool(&mut md);
    revoke(&mut md);
    memory(&mut md);
    runtime(&mut md);
    let extra = common::root()
        .join("docs")
        .join("benchmarks")
        .join("notes.md");
    if let Ok(notes) = std::fs::read_to_string(&extra) {
        md.push_str(&notes);
    }
    let file = common::root().join("docs").join("benchmarks.md");
    std::fs::write(&file, &md).expect("write docs/benchmarks.md");
    println!("{md}\nwritten to {}", file.display());
}
