//! What the benchmarks share: summaries of samples, process figures from `/proc`, an HTTP
//! client for OpenBao's API (the CLI costs a process per call), and where results go.
#![allow(dead_code)]

pub mod svg;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// `bench-results/` at the workspace root.
pub fn results_dir() -> PathBuf {
    let dir = super::common::root().join("bench-results");
    std::fs::create_dir_all(&dir).expect("bench-results dir");
    dir
}

/// Writes `bench-results/<name>.json` and prints it.
pub fn write_results(name: &str, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON");
    let file = results_dir().join(format!("{name}.json"));
    std::fs::write(&file, &text).expect("write results");
    println!("{text}\nwritten to {}", file.display());
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// n, median, p90, p99, min and max of `samples`.
pub fn summary(mut samples: Vec<f64>) -> Value {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    json!({
        "n": samples.len(),
        "median": percentile(&samples, 0.5),
        "p90": percentile(&samples, 0.9),
        "p99": percentile(&samples, 0.99),
        "min": samples.first().copied().unwrap_or(0.0),
        "max": samples.last().copied().unwrap_or(0.0),
    })
}

pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
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
    // utime and stime, in clock ticks (100 per second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds process `pid` has used, to the nanosecond: the sum over its threads of the
/// scheduler's run time (`/proc/<pid>/task/*/schedstat`). Only for processes whose threads
/// live as long as the measurement (a thread that exits takes its time with it); falls back
/// to [`cpu_seconds`] (10 ms ticks) where schedstat is missing.
pub fn cpu_seconds_fine(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return cpu_seconds(pid);
    };
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            return cpu_seconds(pid);
        };
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// OpenBao's HTTP API with a token.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub addr: String,
    pub token: String,
}

/// A response: status and JSON body (`null` when there was none).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Api {
    pub fn new(addr: &str, token: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(180))
                .build()
                .expect("HTTP client"),
            addr: addr.to_string(),
            token: token.to_string(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        match req.header("X-Vault-Token", &self.token).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.unwrap_or_default();
                Reply {
                    status,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                }
            }
            Err(e) => Reply {
                status: 0,
                body: json!({ "errors": [e.to_string()] }),
            },
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(format!("{}/v1/{path}", self.addr)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .post(format!("{}/v1/{path}", self.addr))
                .json(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .put(format!("{}/v1/{path}", self.addr))
                .json(body),
        )
        .await
    }
}

/// A single-threaded runtime for a benchmark's async parts.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `total` calls of `op` with at most `concurrency` in flight; returns their results in
/// completion order.
pub async fn run_concurrently<T, F, Fut>(total: usize, concurrency: usize, op: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::stream::StreamExt;
    futures::stream::iter(0..total)
        .map(op)
        .buffer_unordered(concurrency)
        .collect()
        .await
}
