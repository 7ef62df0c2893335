//! The fault suite: the plugin killed mid-issuance, a 3-node raft cluster with standby reads
//! and leader failover, a throttling storm, a bounded fuzz of every writable path, static
//! rotation across a failover, and a warm pool with the reconciler under kills.
//!
//! Small versions run with the other black-box tests; the full ones are `#[ignore]`d and run
//! by `make chaos` (`scripts/chaos.sh`), which sets `CHAOS_FIGURES` to the file
//! (`bench-results/chaos.json`) each part merges its figures into.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster};
use common::{app_passwords, bao_with_emulator, static_password_ids, Bao, Emulator};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// Merges `figures` under `part` into the file named by `CHAOS_FIGURES`, if set.
fn record(part: &str, figures: Value) {
    eprintln!("figures {part}: {figures}");
    let Ok(path) = std::env::var("CHAOS_FIGURES") else {
        return;
    };
    let mut all: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({}));
    all[part] = figures;
    let _ = std::fs::write(
        &path,
        serde_json::to_string_pretty(&all).unwrap_or_default(),
    );
}

/// With `CHAOS_EVIDENCE_DIR` set, keeps what a failure of `part` needs to be understood: the
/// emulator's request log and state, and each node's server log (plugin logs included).
fn keep_evidence(part: &str, emu: &Emulator, cluster: &Cluster) {
    let Ok(dir) = std::env::var("CHAOS_EVIDENCE_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join(part);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let _ = std::fs::write(
        dir.join("emulator-requests.json"),
        serde_json::to_string_pretty(&emu.requests()).unwrap_or_default(),
    );
    let _ = std::fs::write(
        dir.join("emulator-state.json"),
        serde_json::to_string_pretty(&emu.state()).unwrap_or_default(),
    );
    for node in &cluster.nodes {
        let _ = std::fs::copy(&node.log, dir.join(format!("{}.log", node.name)));
    }
}

/// Ids of service principals and applications the emulator did not make itself.
fn engine_principals(state: &Value) -> Vec<String> {
    state["servicePrincipals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["displayName"]
                .as_str()
                .unwrap_or("")
                .starts_with("vault-")
        })
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect()
}

/// What the engine made that still exists: (applications, role assignments, group
/// memberships, passwords named by the engine on other applications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leftovers {
    apps: usize,
    assignments: usize,
    memberships: usize,
}

impl Leftovers {
    fn of(state: &Value) -> Self {
        Self::of_except(state, &[])
    }

    /// [`Leftovers::of`], leaving out the applications whose app id is in `skip` with their
    /// service principals' assignments and memberships.
    fn of_except(state: &Value, skip: &[String]) -> Self {
        let skipped_sps: Vec<String> = state["servicePrincipals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["appId"]
                    .as_str()
                    .is_some_and(|a| skip.iter().any(|s| s == a))
            })
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect();
        let sps: Vec<String> = engine_principals(state)
            .into_iter()
            .filter(|s| !skipped_sps.contains(s))
            .collect();
        let apps = state["applications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| {
                a["displayName"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("vault-")
                    && !a["appId"]
                        .as_str()
                        .is_some_and(|id| skip.iter().any(|s| s == id))
            })
            .count();
        let assignments = state["roleAssignments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|ra| {
                ra["properties"]["principalId"]
                    .as_str()
                    .is_some_and(|p| sps.iter().any(|s| s == p))
            })
            .count();
        let memberships = state["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
            .filter(|m| {
                let id = m.as_str().or_else(|| m["id"].as_str()).unwrap_or("");
                sps.iter().any(|s| s == id)
            })
            .count();
        Self {
            apps,
            assignments,
            memberships,
        }
    }

    fn total(&self) -> usize {
        self.apps + self.assignments + self.memberships
    }

    fn json(&self) -> Value {
        json!({"applications": self.apps, "role_assignments": self.assignments, "group_memberships": self.memberships})
    }
}

/// Everything the emulator holds that the engine did not make (to prove it was left alone).
fn foreign_objects(state: &Value) -> Value {
    let sps = engine_principals(state);
    let ids = |key: &str, keep: &dyn Fn(&Value) -> bool| -> Vec<String> {
        let mut v: Vec<String> = state[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| keep(o))
            .filter_map(|o| o["id"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let not_engine = |o: &Value| {
        !o["displayName"]
            .as_str()
            .unwrap_or("")
            .starts_with("vault-")
    };
    json!({
        "applications": ids("applications", &not_engine),
        "servicePrincipals": ids("servicePrincipals", &not_engine),
        "roleAssignments": ids("roleAssignments", &|ra: &Value| {
            !ra["properties"]["principalId"].as_str().is_some_and(|p| sps.iter().any(|s| s == p))
        }),
        "groups": ids("groups", &|_| true),
    })
}

/// Waits until the engine's objects are all gone; returns how long that took.
fn wait_clean(emu: &Emulator, timeout: Duration) -> Result<Duration, Leftovers> {
    wait_clean_except(emu, timeout, &[])
}

/// [`wait_clean`], leaving out the applications (app ids) in `skip` and what stands on them.
fn wait_clean_except(
    emu: &Emulator,
    timeout: Duration,
    skip: &[String],
) -> Result<Duration, Leftovers> {
    let start = Instant::now();
    let mut last = Leftovers::of_except(&emu.state(), skip);
    let clean = wait_for(timeout, || {
        last = Leftovers::of_except(&emu.state(), skip);
        last.total() == 0
    });
    if clean {
        Ok(start.elapsed())
    } else {
        Err(last)
    }
}

fn write_json(dir: &std::path::Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).expect("write json");
    format!("@{}", path.display())
}

/// The role body the suite issues from: Reader on the subscription, no readiness wait.
fn role_body(emu: &Emulator) -> Value {
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    json!({
        "azure_roles": json!([{"role_name": "Reader", "scope": format!("/subscriptions/{sub}")}]).to_string(),
        "credential_ready_timeout": 0,
    })
}

fn write_role(bao: &Bao, emu: &Emulator, name: &str) {
    let body = role_body(emu);
    let roles = write_json(
        bao.dir.path(),
        "roles.json",
        &serde_json::from_str::<Value>(body["azure_roles"].as_str().unwrap_or("[]"))
            .unwrap_or_default(),
    );
    bao.write(
        &format!("azure/roles/{name}"),
        &[
            &format!("azure_roles={roles}"),
            "credential_ready_timeout=0",
        ],
    )
    .ok();
}

/// Revokes every lease under `prefix` (retrying while revocations fail, e.g. throttled).
fn revoke_all(cli: &dyn Fn(&[&str]) -> common::CliOutput, prefix: &str, timeout: Duration) -> bool {
    wait_for(timeout, || {
        cli(&["lease", "revoke", "-sync", "-prefix", prefix]).code == 0
    })
}

/// An HTTP client for many concurrent requests to OpenBao.
struct Http {
    client: reqwest::Client,
    token: String,
}

impl Http {
    fn new(token: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
            token: token.to_string(),
        }
    }

    /// Status and JSON body (`Null` when not JSON); status 0 when the call failed.
    async fn call(&self, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut rb = self
            .client
            .request(method, url)
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                (status, body)
            }
            Err(_) => (0, Value::Null),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------------------
// (a) kill -9 of the plugin mid-issuance
// ---------------------------------------------------------------------------------------

fn kill_mid_issuance(issuances: usize) {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "k");
    let before = foreign_objects(&emu.state());
    // Each Azure call takes 150 ms, so an issuance spans about a second: the kills land
    // before, between and after its steps.
    emu.settings(json!({"latency_ms": 150}));
    let url = format!("{}/v1/azure/creds/k", bao.addr);
    let http = Http::new(&bao.token);
    let rt = runtime();
    let mut statuses = Vec::new();
    let mut kills = 0;
    let start = Instant::now();
    for i in 0..issuances {
        let delay = Duration::from_millis(((i * 137) % 1300) as u64);
        let status = rt.block_on(async {
            let req = http.call("GET", &url, None);
            let kill = async {
                tokio::time::sleep(delay).await;
                // After a kill the host starts a new process only when a request comes.
                let until = Instant::now() + Duration::from_secs(3);
                loop {
                    let pids = bao.plugin_pids();
                    if !pids.is_empty() || Instant::now() > until {
                        return pids;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let (status, pids) = tokio::join!(req, async {
                let pids = kill.await;
                for pid in &pids {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
                pids
            });
            if !pids.is_empty() {
                kills += 1;
            }
            status.0
        });
        statuses.push(status);
        // The next issuance starts with a plugin process serving the mount again.
        assert!(
            wait_for(Duration::from_secs(30), || bao
                .cli(&["read", "azure/roles/k"])
                .code
                == 0),
            "the mount did not serve again after a kill"
        );
    }
    emu.settings(json!({"latency_ms": 0}));
    let after_kills = Leftovers::of(&emu.state());
    let cli = |args: &[&str]| bao.cli(args);
    assert!(
        revoke_all(&cli, "azure/creds/k", Duration::from_secs(60)),
        "revoking the leases failed"
    );
    let after_revoke = Leftovers::of(&emu.state());
    let cleaned = wait_clean(&emu, Duration::from_secs(180));
    let figures = json!({
        "issuances": issuances,
        "plugin_kills": kills,
        "statuses": statuses,
        "succeeded": statuses.iter().filter(|s| **s == 200).count(),
        "engine_objects_after_kills": after_kills.json(),
        "orphans_after_revoking_every_lease": after_revoke.json(),
        "seconds_until_rollback_left_nothing": cleaned.as_ref().ok().map(Duration::as_secs_f64),
        "orphans_left": cleaned.as_ref().err().map(Leftovers::json),
        "total_seconds": start.elapsed().as_secs_f64(),
        "rollback_ageing": "writer instance (no ageing)",
    });
    record("a_kill_mid_issuance", figures.clone());
    assert!(cleaned.is_ok(), "objects left behind: {figures}");
    assert_eq!(
        foreign_objects(&emu.state()),
        before,
        "only engine objects touched"
    );
}

/// A plugin killed at varied points of 4 issuances: the next rollback tick (at most a
/// minute, not ten) removes everything the killed processes made.
#[test]
fn killed_issuances_are_rolled_back_at_the_next_tick() {
    kill_mid_issuance(4);
}

#[test]
#[ignore = "make chaos"]
fn chaos_a_kill_9_at_varied_points_of_20_issuances() {
    kill_mid_issuance(20);
}

// ---------------------------------------------------------------------------------------
// (c) a storm under throttling
// ---------------------------------------------------------------------------------------

fn storm(requests: usize, graph_writes_per_sec: u32, burst: u32) {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "s");
    let before = foreign_objects(&emu.state());
    emu.settings(json!({
        "graph_writes_per_sec": graph_writes_per_sec,
        "graph_write_burst": burst,
        "arm_writes_per_sec": graph_writes_per_sec,
        "arm_write_burst": burst,
    }));
    emu.clear_requests();
    let url = format!("{}/v1/azure/creds/s", bao.addr);
    let http = Http::new(&bao.token);
    let rt = runtime();
    let start = Instant::now();
    let results: Vec<(u16, Value)> = rt.block_on(async {
        futures::future::join_all((0..requests).map(|_| http.call("GET", &url, None))).await
    });
    let storm_secs = start.elapsed().as_secs_f64();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let server_errors = results.iter().filter(|(s, _)| *s >= 500).count();
    let throttled = emu.requests().iter().filter(|r| r["status"] == 429).count();
    let after_storm = Leftovers::of(&emu.state());
    let cli = |args: &[&str]| bao.cli(args);
    let revoked = revoke_all(&cli, "azure/creds/s", Duration::from_secs(120));
    let after_revoke = Leftovers::of(&emu.state());
    // Throttling stays on: the undo and the rollback work through it.
    let cleaned = wait_clean(&emu, Duration::from_secs(180));
    let figures = json!({
        "requests": requests,
        "graph_writes_per_sec": graph_writes_per_sec,
        "arm_writes_per_sec": graph_writes_per_sec,
        "write_burst": burst,
        "issued": ok,
        "failed": requests - ok,
        "http_5xx": server_errors,
        "azure_429_answers": throttled,
        "storm_seconds": storm_secs,
        "engine_objects_after_storm": after_storm.json(),
        "leases_revoked": revoked,
        "orphans_after_revoking_every_lease": after_revoke.json(),
        "seconds_after_revoking_until_nothing_left": cleaned.as_ref().ok().map(Duration::as_secs_f64),
        "orphans_left_after_3_minutes": cleaned.as_ref().err().map(Leftovers::json),
    });
    record("c_throttling_storm", figures.clone());
    assert!(revoked, "leases could not be revoked: {figures}");
    assert!(cleaned.is_ok(), "objects without a lease left: {figures}");
    assert_eq!(
        foreign_objects(&emu.state()),
        before,
        "only engine objects touched"
    );
}

/// 20 concurrent issuances against 2 Graph and 2 ARM writes per second (so many fail and
/// must be undone through the throttling): every object is issued under a lease or
/// removed, and once the leases are revoked nothing is left within 3 minutes.
#[test]
fn a_throttled_storm_leaves_nothing_without_a_lease() {
    storm(20, 2, 2);
}

#[test]
#[ignore = "make chaos"]
fn chaos_c_a_100_request_storm_under_throttling() {
    storm(100, 10, 10);
}

// ---------------------------------------------------------------------------------------
// Standbys: forwarding, and no Azure work on them
// ---------------------------------------------------------------------------------------

/// Writes role `name` through node `i` of the cluster.
fn cluster_role(cluster: &Cluster, i: usize, emu: &Emulator, name: &str) -> common::CliOutput {
    let body = role_body(emu);
    let roles = write_json(
        &cluster.nodes[i].dir,
        "roles.json",
        &serde_json::from_str::<Value>(body["azure_roles"].as_str().unwrap_or("[]"))
            .unwrap_or_default(),
    );
    cluster.cli(
        i,
        &[
            "write",
            "-format=json",
            &format!("azure/roles/{name}"),
            &format!("azure_roles={roles}"),
            "credential_ready_timeout=0",
        ],
    )
}

fn cluster_config(cluster: &Cluster, i: usize, emu: &Emulator) -> common::CliOutput {
    let mut args = vec!["write".to_string(), "azure/config".to_string()];
    args.extend(emu.config_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.cli(i, &refs)
}

/// The mount's storage prefix for `sys/raw` (`logical/<uuid>/`).
fn mount_storage_prefix(cluster: &Cluster, i: usize, mount: &str) -> String {
    let mounts = cluster.cli(i, &["secrets", "list", "-format=json"]);
    format!(
        "{}/",
        common::mount_storage_base(mounts, &format!("{mount}/"))
    )
}

/// Writes, through the active node's raw storage endpoint, a WAL entry for an application
/// made by a plugin process that no longer exists.
fn write_abandoned_wal(cluster: &Cluster, leader: usize, app_obj: &str, app_id: &str, name: &str) {
    let prefix = mount_storage_prefix(cluster, leader, "azure");
    let entry = json!({
        "type": "appCreate",
        "data": {
            "AppID": app_id,
            "AppObjID": app_obj,
            "DisplayName": name,
            "Expiration": "2099-01-01T00:00:00Z",
        },
        "created_at": chrono::Utc::now().timestamp(),
        "writer": "a-plugin-process-that-died",
    });
    let file = write_json(&cluster.nodes[leader].dir, "wal.json", &entry);
    cluster
        .cli(
            leader,
            &[
                "write",
                &format!("sys/raw/{prefix}wal/{}", uuid::Uuid::new_v4()),
                &format!("value={file}"),
            ],
        )
        .ok();
}

/// `config`, `roles/<name>` writes, `creds` and `rotate-root` sent to a standby succeed
/// through forwarding with no Azure call from the standby: the standbys' plugins are
/// pointed at a second emulator whose request log must stay empty. A WAL entry of a dead
/// process is then removed by the active node alone, while the standbys' rollback ticks
/// skip their read-only storage.
#[test]
fn writes_sent_to_a_standby_are_forwarded_and_standbys_do_no_azure_work() {
    let emu = Emulator::start(&[]);
    let trap = Emulator::start(&[]);
    let cluster = Cluster::start(&[emu.cloud_env(), trap.cloud_env(), trap.cloud_env()]);
    let leader = cluster.leader(Duration::from_secs(30));
    assert_eq!(leader, 0, "node1 was initialised first");
    cluster.enable("azure");
    let standby = 1;
    trap.clear_requests();

    cluster_config(&cluster, standby, &emu).ok();
    cluster_role(&cluster, standby, &emu, "r").ok();
    let creds = cluster
        .cli(standby, &["read", "-format=json", "azure/creds/r"])
        .ok()
        .json();
    let client_id = creds["data"]["client_id"].as_str().expect("client_id");
    assert!(
        emu.vault_apps().iter().any(|a| a["appId"] == client_id),
        "issued in the emulator the active node uses"
    );
    let rotated = cluster.cli(standby, &["write", "-f", "azure/rotate-root"]);
    assert_eq!(rotated.code, 0, "{rotated:?}");
    assert!(
        !cluster.nodes[standby].plugin_pids().is_empty(),
        "the standby ran the plugin (the requests reached it before being forwarded)"
    );
    let read = cluster
        .cli(standby, &["read", "-format=json", "azure/roles/r"])
        .ok()
        .json();
    assert!(read["data"]["azure_roles"].is_array(), "{read}");

    // A WAL entry left by a dead process, covering a live application.
    let name = format!("vault-abandoned-{}", uuid::Uuid::new_v4());
    let (app_obj, app_id) = emu.create_app(&name, true);
    write_abandoned_wal(&cluster, leader, &app_obj, &app_id, &name);
    let written = Instant::now();
    let gone = wait_for(Duration::from_secs(150), || {
        !emu.vault_apps().iter().any(|a| a["id"] == app_obj.as_str())
    });
    let taken_after = written.elapsed();
    assert!(gone, "the active node's rollback took the abandoned entry");
    for i in [1, 2] {
        assert!(
            wait_for(Duration::from_secs(90), || cluster.nodes[i]
                .log_text()
                .contains("no periodic or rollback work here")),
            "{} ticked its rollback and skipped it; its log:\n{}",
            cluster.nodes[i].name,
            cluster.nodes[i].log_text()
        );
    }
    let standby_calls = trap.requests();
    record(
        "b_standby_forwarding",
        json!({
            "writes_through_a_standby": ["config", "roles/r", "creds/r", "rotate-root"],
            "azure_calls_from_standbys": standby_calls.len(),
            "seconds_until_the_active_node_took_an_abandoned_wal_entry": taken_after.as_secs_f64(),
        }),
    );
    assert!(
        standby_calls.is_empty(),
        "Azure calls from a standby: {standby_calls:?}"
    );

    let lease = creds["lease_id"].as_str().expect("lease");
    cluster
        .cli(standby, &["lease", "revoke", "-sync", lease])
        .ok();
    assert!(wait_clean(&emu, Duration::from_secs(60)).is_ok());
    assert!(trap.requests().is_empty());
}

// ---------------------------------------------------------------------------------------
// (b) leader failover with issuances in flight
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "make chaos"]
fn chaos_b_creds_through_leader_standby_and_failover_then_nothing_left() {
    let emu = Emulator::start(&[]);
    let mut cluster = Cluster::start(&[emu.cloud_env()]);
    cluster.enable("azure");
    let leader = cluster.leader(Duration::from_secs(30));
    cluster_config(&cluster, leader, &emu).ok();
    cluster_role(&cluster, leader, &emu, "f").ok();
    let before = foreign_objects(&emu.state());
    let standby = cluster.standbys()[0];
    let issue = |i: usize| {
        cluster
            .cli(i, &["read", "-format=json", "azure/creds/f"])
            .code
            == 0
    };
    let via_leader = (0..5).filter(|_| issue(leader)).count();
    let via_standby = (0..5).filter(|_| issue(standby)).count();

    // Issuances in flight (each Azure call takes 200 ms) while the active node is killed.
    emu.settings(json!({"latency_ms": 200}));
    let http = Http::new(&cluster.token);
    let rt = runtime();
    let targets: Vec<String> = (0..8)
        .map(|k| {
            let node = if k % 2 == 0 { leader } else { standby };
            format!("{}/v1/azure/creds/f", cluster.nodes[node].addr)
        })
        .collect();
    let failover_start = Instant::now();
    let in_flight: Vec<u16> = rt.block_on(async {
        let reqs = futures::future::join_all(targets.iter().map(|u| http.call("GET", u, None)));
        let kill = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            cluster.nodes[leader].kill();
        };
        let (r, ()) = tokio::join!(reqs, kill);
        r.into_iter().map(|(s, _)| s).collect()
    });
    // `kill` moved the node's child out; borrowck: restart after the block.
    let new_leader = cluster.leader(Duration::from_secs(60));
    let failover_secs = failover_start.elapsed().as_secs_f64();
    emu.settings(json!({"latency_ms": 0}));
    cluster.restart(leader);
    assert!(cluster.wait_standby(leader, Duration::from_secs(60)));
    let after_failover = Leftovers::of(&emu.state());
    let cli = |args: &[&str]| cluster.cli(new_leader, args);
    let revoked = revoke_all(&cli, "azure/creds/f", Duration::from_secs(120));
    let after_revoke = Leftovers::of(&emu.state());
    // A credential the killed node's plugin finished (its write-ahead log removed, "issued"
    // logged) whose lease the host had not recorded when it died: no lease revokes it and no
    // WAL entry covers it; the plugin cannot know the host never recorded it. Its inventory
    // entry keeps it for the reconciler until the credential expires. Such credentials are
    // counted, bounded by the in-flight requests that got no answer, and left out here;
    // everything else must go.
    let never_leased = issued_but_never_leased(&emu, &cluster.nodes[leader].log_text());
    let unanswered = in_flight.iter().filter(|s| **s != 200).count();
    let prefix = mount_storage_prefix(&cluster, new_leader, "azure");
    let in_inventory = emu
        .vault_apps()
        .iter()
        .filter(|a| {
            a["appId"]
                .as_str()
                .is_some_and(|id| never_leased.iter().any(|n| n == id))
        })
        .filter_map(|a| a["id"].as_str())
        .filter(|obj| cli(&["read", &format!("sys/raw/{prefix}inventory/apps/{obj}")]).code == 0)
        .count();
    let cleaned = wait_clean_except(&emu, Duration::from_secs(180), &never_leased);
    let figures = json!({
        "creds_via_leader_ok": via_leader,
        "creds_via_standby_ok": via_standby,
        "in_flight_statuses": in_flight,
        "in_flight_ok": in_flight.iter().filter(|s| **s == 200).count(),
        "seconds_until_new_leader": failover_secs,
        "engine_objects_after_failover": after_failover.json(),
        "leases_revoked_through_new_leader": revoked,
        "orphans_after_revoking_every_lease": after_revoke.json(),
        "seconds_after_revoking_until_nothing_left": cleaned.as_ref().ok().map(Duration::as_secs_f64),
        "orphans_left": cleaned.as_ref().err().map(Leftovers::json),
        "issued_but_never_leased": never_leased.len(),
        "issued_but_never_leased_in_the_inventory": in_inventory,
    });
    record("b_raft_failover", figures.clone());
    keep_evidence("b_raft_failover", &emu, &cluster);
    assert_eq!((via_leader, via_standby), (5, 5), "{figures}");
    assert!(revoked && cleaned.is_ok(), "{figures}");
    assert!(never_leased.len() <= unanswered, "{figures}");
    assert_eq!(
        in_inventory,
        never_leased.len(),
        "the reconciler knows each: {figures}"
    );
    assert_eq!(
        foreign_objects(&emu.state()),
        before,
        "only engine objects touched"
    );
}

/// App ids of the engine applications still in the emulator that the plugin of a node
/// reported as issued (`issued a service principal: ... app_id=<id>` in the node's log):
/// after every lease was revoked, these are credentials whose lease was never recorded.
fn issued_but_never_leased(emu: &Emulator, node_log: &str) -> Vec<String> {
    let issued: Vec<&str> = node_log
        .lines()
        .filter(|l| l.contains("issued a service principal"))
        .filter_map(|l| l.split("app_id=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    emu.vault_apps()
        .iter()
        .filter_map(|a| a["appId"].as_str())
        .filter(|id| issued.contains(id))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// (e) static-role background rotation across a failover
// ---------------------------------------------------------------------------------------

/// Polls `cond` every `every` until it holds or `timeout` passes (for checks that start a
/// `bao` process or dump the emulator's state, which a 100 ms poll would make costly).
fn poll_every(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// `static-creds/<name>` read through node `i`: (secret_id, client_secret), or `None` while
/// the node does not answer.
fn static_creds(cluster: &Cluster, i: usize, name: &str) -> Option<(String, String)> {
    let out = cluster.cli(
        i,
        &[
            "read",
            "-format=json",
            &format!("azure/static-creds/{name}"),
        ],
    );
    if out.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    Some((
        v["data"]["secret_id"].as_str()?.to_string(),
        v["data"]["client_secret"].as_str()?.to_string(),
    ))
}

/// A static role with a 15 s period rotates in the background on the active node; the
/// active node is SIGKILLed in the middle of a background rotation (its new password added,
/// the proof that it works stalled at the token endpoint); the new active node picks up the
/// schedule from storage, removes the interrupted rotation's password and rotates again; the
/// application ends with exactly the role's current password besides the foreign one.
#[test]
#[ignore = "make chaos"]
fn chaos_e_static_rotation_continues_after_failover() {
    let emu = Emulator::start(&[]);
    let cluster_env = emu.cloud_env();
    let mut cluster = Cluster::start(&[cluster_env]);
    cluster.enable("azure");
    let leader = cluster.leader(Duration::from_secs(30));
    cluster_config(&cluster, leader, &emu).ok();
    let (app, app_id) = emu.create_app("failover-static-app", true);
    // A password someone else made on the application: it must be left alone.
    let foreign = emu.graph_post(
        &format!("applications/{app}/addPassword"),
        &json!({"passwordCredential": {"displayName": "someone-else"}}),
    );
    let foreign_key = foreign["keyId"].as_str().expect("keyId").to_string();
    cluster
        .cli(
            leader,
            &[
                "write",
                "azure/static-roles/sr",
                &format!("application_object_id={app}"),
                "rotation_period=15s",
                "seamless_rotation=false",
            ],
        )
        .ok();
    let (first, _) = static_creds(&cluster, leader, "sr").expect("static creds");
    let role = cluster
        .cli(leader, &["read", "-format=json", "azure/static-roles/sr"])
        .ok()
        .json();
    assert!(
        role["data"]["next_rotation_time"].as_str().is_some(),
        "{role}"
    );

    // One background rotation on the active node.
    let start = Instant::now();
    let (mut before_kill, mut before_kill_secret) = (first.clone(), String::new());
    let rotated = poll_every(
        Duration::from_secs(120),
        Duration::from_secs(1),
        || match static_creds(&cluster, leader, "sr") {
            Some((id, secret)) if id != first => {
                (before_kill, before_kill_secret) = (id, secret);
                true
            }
            _ => false,
        },
    );
    assert!(rotated, "no background rotation on the active node");
    let first_rotation_secs = start.elapsed().as_secs_f64();
    assert!(
        poll_every(Duration::from_secs(60), Duration::from_millis(500), || {
            static_password_ids(&emu, &app) == vec![before_kill.clone()]
        }),
        "the replaced password was not removed on the active node"
    );

    // The next background rotation's proof (its first token request; the engine's own Graph
    // token is cached) stalls; the active node dies while the new password exists.
    emu.add_fault(json!({"service": "token", "delay_ms": 30000, "times": 1}));
    let in_flight = poll_every(Duration::from_secs(60), Duration::from_millis(200), || {
        emu.faults_left() == 0 && static_password_ids(&emu, &app).len() == 2
    });
    assert!(
        in_flight,
        "no background rotation reached its proof: {:?}",
        app_passwords(&emu, &app)
    );
    let interrupted: Vec<String> = static_password_ids(&emu, &app)
        .into_iter()
        .filter(|k| *k != before_kill)
        .collect();
    let kill_at = Instant::now();
    cluster.nodes[leader].kill();
    emu.clear_faults();
    let new_leader = cluster.leader(Duration::from_secs(90));
    let failover_secs = kill_at.elapsed().as_secs_f64();
    let leader_at = Instant::now();
    assert_ne!(new_leader, leader);

    // The new active node initializes the mount and starts its background work at once
    // (not at its first rollback tick, up to a minute later): the interrupted rotation is
    // undone and the due one made.
    let mut after = (String::new(), String::new());
    let rotated_again =
        poll_every(
            Duration::from_secs(240),
            Duration::from_secs(1),
            || match static_creds(&cluster, new_leader, "sr") {
                Some((id, secret)) if id != before_kill => {
                    after = (id, secret);
                    true
                }
                _ => false,
            },
        );
    let rotation_after_kill_secs = kill_at.elapsed().as_secs_f64();
    let rotation_after_leader_secs = leader_at.elapsed().as_secs_f64();
    let kicked = cluster.nodes[new_leader]
        .log_text()
        .contains("mount initialized: starting the background work now");
    assert!(
        rotated_again,
        "no background rotation on the new active node: {:?}",
        app_passwords(&emu, &app)
    );
    assert!(
        !interrupted.contains(&after.0),
        "the interrupted rotation's password became current"
    );
    let new_token = emu.token_status(&app_id, &after.1);
    // Without seamless rotation the replaced secret is gone once the new one is current.
    let replaced_token = emu.token_status(&app_id, &before_kill_secret);

    // Exactly the current password (plus the foreign one) is left: no orphan of the
    // interrupted rotation, no replaced password.
    let mut last = Vec::new();
    let settle_start = Instant::now();
    let exact = poll_every(Duration::from_secs(180), Duration::from_secs(1), || {
        // A later rotation may have replaced `after` meanwhile: compare with the current one.
        let Some((current, _)) = static_creds(&cluster, new_leader, "sr") else {
            return false;
        };
        last = static_password_ids(&emu, &app);
        last == vec![current]
    });
    let settle_secs = settle_start.elapsed().as_secs_f64();
    let foreign_left = app_passwords(&emu, &app)
        .iter()
        .any(|p| p["keyId"] == foreign_key.as_str());
    let figures = json!({
        "rotation_period_secs": 15,
        "seamless_rotation": false,
        "seconds_until_first_background_rotation": first_rotation_secs,
        "seconds_from_kill_until_new_leader": failover_secs,
        "seconds_from_kill_until_rotation_on_new_leader": rotation_after_kill_secs,
        "seconds_from_new_leader_until_rotation": rotation_after_leader_secs,
        "background_work_started_at_initialization": kicked,
        "interrupted_rotation_passwords": interrupted.len(),
        "new_secret_token_status": new_token,
        "replaced_secret_token_status": replaced_token,
        "seconds_until_exactly_the_current_password": exact.then_some(settle_secs),
        "static_passwords_left": last.len(),
        "foreign_password_untouched": foreign_left,
    });
    record("e_static_rotation_failover", figures.clone());
    assert!(
        kicked,
        "the new active node did not start its background work when initialized: {figures}"
    );
    assert_eq!(new_token, 200, "{figures}");
    assert_eq!(replaced_token, 401, "{figures}");
    assert!(exact, "passwords left {last:?}: {figures}");
    assert!(foreign_left, "{figures}");
    assert_eq!(app_passwords(&emu, &app).len(), 2, "{figures}");
}

// ---------------------------------------------------------------------------------------
// (f) a warm pool and the reconciler under kills
// ---------------------------------------------------------------------------------------

/// A credential read from `creds/<role>`.
struct Issued {
    lease_id: String,
    client_id: String,
    secret: String,
}

/// `pool/<role>` as the mount reports it (`Null` while the plugin does not answer).
fn pool_status(bao: &Bao, role: &str) -> Value {
    let out = bao.read(&format!("azure/pool/{role}"));
    if out.code != 0 {
        return Value::Null;
    }
    serde_json::from_str::<Value>(&out.stdout).unwrap_or(Value::Null)["data"].clone()
}

/// `kill -9` of every plugin process of the server; how many there were.
fn kill_plugins(bao: &Bao) -> usize {
    let pids = bao.plugin_pids();
    for pid in &pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    pids.len()
}

/// The engine's applications left in the emulator that no caller received (client id not
/// in `delivered`), by who removes them.
#[derive(Default)]
struct Undelivered {
    /// Object ids of those the mount's inventory records as a live credential and no
    /// write-ahead-log entry names: what a kill inside a pooled handout leaves (see
    /// [`pool_under_kills`]); they stay until their recorded expiry.
    handout_window: Vec<String>,
    /// Those a write-ahead-log entry names: issuances a kill interrupted (a read that found
    /// the pool empty, or a refill), which the rollback removes at its next tick.
    interrupted: usize,
}

fn undelivered(bao: &Bao, emu: &Emulator, base: &str, delivered: &[&str]) -> Undelivered {
    let recorded = bao.list_keys(&format!("sys/raw/{base}/inventory/apps/"));
    let wal_text: String = bao
        .list_keys(&format!("sys/raw/{base}/wal/"))
        .iter()
        .map(|id| bao.read(&format!("sys/raw/{base}/wal/{id}")))
        .filter(|out| out.code == 0)
        .map(|out| {
            out.json()["data"]["value"]
                .as_str()
                .unwrap_or("")
                .to_ascii_lowercase()
        })
        .collect();
    let live_entry = |id: &str| {
        recorded.iter().any(|r| r == id) && {
            let entry = bao.read(&format!("sys/raw/{base}/inventory/apps/{id}"));
            entry.code == 0
                && serde_json::from_str::<Value>(
                    entry.json()["data"]["value"].as_str().unwrap_or("{}"),
                )
                .is_ok_and(|e| e["revoke_requested"].is_null())
        }
    };
    let mut found = Undelivered::default();
    for app in emu.vault_apps() {
        if delivered.contains(&app["appId"].as_str().unwrap_or("")) {
            continue;
        }
        let id = app["id"].as_str().unwrap_or("-").to_ascii_lowercase();
        let name = app["displayName"]
            .as_str()
            .unwrap_or("-")
            .to_ascii_lowercase();
        if wal_text.contains(&id) || wal_text.contains(&name) {
            found.interrupted += 1;
        } else if live_entry(&id) {
            found.handout_window.push(id);
        }
    }
    found
}

/// A role with `pool_size`; the plugin is SIGKILLed at varied points, alternately while a
/// read hands out a pooled credential and while the pool refills after a read (each Azure
/// call takes 150 ms, so a refill of one credential spans about a second). Every credential
/// handed out keeps working after every kill. Then every lease is revoked, the role deleted
/// and the reconciler run while the rollback ticks (it takes the issuances a kill
/// interrupted): nothing the engine made is left in the emulator, except a credential of a
/// read killed while handing out (no caller has it), which stays until its recorded expiry
/// and is removed then.
fn pool_under_kills(rounds: usize, pool_size: u32) {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    // Objects look two hours old, past the reconciler's 15-minute grace, so that a run at
    // the end judges every orphan instead of keeping it as an issuance in flight.
    emu.settings(json!({"created_clock_offset_secs": -7200}));
    let roles = write_json(
        bao.dir.path(),
        "roles.json",
        &serde_json::from_str::<Value>(role_body(&emu)["azure_roles"].as_str().unwrap_or("[]"))
            .unwrap_or_default(),
    );
    bao.write(
        "azure/roles/p",
        &[
            &format!("azure_roles={roles}"),
            "credential_ready_timeout=0",
            "ttl=1h",
            &format!("pool_size={pool_size}"),
        ],
    )
    .ok();
    let before = foreign_objects(&emu.state());
    assert!(
        wait_for(Duration::from_secs(60), || {
            let s = pool_status(&bao, "p");
            s["ready"] == pool_size && s["pending"] == 0
        }),
        "the pool filled: {}",
        pool_status(&bao, "p")
    );

    emu.settings(json!({"latency_ms": 150}));
    let url = format!("{}/v1/azure/creds/p", bao.addr);
    let http = Http::new(&bao.token);
    let rt = runtime();
    let start = Instant::now();
    let mut issued: Vec<Issued> = Vec::new();
    let (mut statuses, mut kills, mut from_pool) = (Vec::new(), 0usize, 0usize);
    let (mut kills_during_refill, mut kills_during_handout) = (0usize, 0usize);
    let mut token_checks = 0usize;
    // Reads killed while handing out, whose caller got no credential.
    let mut failed_handouts = 0usize;
    let mut broken: Vec<Value> = Vec::new();
    for i in 0..rounds {
        let delay = Duration::from_millis(((i * 173) % 1100) as u64);
        let apps_before: Vec<String> = emu
            .vault_apps()
            .iter()
            .filter_map(|a| a["appId"].as_str().map(str::to_string))
            .collect();
        let during_refill = i % 2 == 1;
        let (status, body) = rt.block_on(async {
            let read = http.call("GET", &url, None);
            if during_refill {
                // The read completes; its hand-out starts a refill, killed at `delay`.
                let answer = read.await;
                tokio::time::sleep(delay).await;
                kills += kill_plugins(&bao).min(1);
                kills_during_refill += 1;
                answer
            } else {
                let kill = async {
                    tokio::time::sleep(delay).await;
                    let n = kill_plugins(&bao);
                    kills += n.min(1);
                    kills_during_handout += usize::from(n > 0);
                };
                tokio::join!(read, kill).0
            }
        });
        statuses.push(status);
        if !during_refill && status != 200 {
            failed_handouts += 1;
        }
        if status == 200 {
            let client_id = body["data"]["client_id"].as_str().unwrap_or("").to_string();
            from_pool += usize::from(apps_before.contains(&client_id));
            issued.push(Issued {
                lease_id: body["lease_id"].as_str().unwrap_or("").to_string(),
                secret: body["data"]["client_secret"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                client_id,
            });
        }
        assert!(
            wait_for(Duration::from_secs(30), || bao
                .cli(&["read", "azure/roles/p"])
                .code
                == 0),
            "the mount did not serve again after a kill"
        );
        // Every credential handed out so far still works.
        for c in &issued {
            token_checks += 1;
            let code = emu.token_status(&c.client_id, &c.secret);
            if code != 200 {
                broken.push(json!({"round": i, "client_id": c.client_id, "status": code}));
            }
        }
    }
    emu.settings(json!({"latency_ms": 0}));
    let kills_secs = start.elapsed().as_secs_f64();
    let after_kills = Leftovers::of(&emu.state());
    let status_after_kills = pool_status(&bao, "p");

    let cli = |args: &[&str]| bao.cli(args);
    let revoked = revoke_all(&cli, "azure/creds/p", Duration::from_secs(60));
    let leases_left = issued
        .iter()
        .filter(|c| bao.cli(&["lease", "lookup", &c.lease_id]).code == 0)
        .count();
    let clean_start = Instant::now();
    bao.cli(&["delete", "azure/roles/p"]).ok();
    let base = bao.mount_storage_base("azure/");
    let delivered: Vec<&str> = issued.iter().map(|c| c.client_id.as_str()).collect();
    // The reconciler runs now and every few seconds; the rollback (at most a minute away)
    // takes what a killed process covered with a write-ahead-log entry. What may stay is a
    // credential from the handout window: a kill after a read took its pool entry and before
    // the host had the answer. The host then answered that read with an error and recorded
    // no lease, but nothing the plugin can see tells that apart from an answer that arrived
    // (the host never confirms a lease to its plugin), so the engine keeps such a
    // credential, as it keeps any live one, until its recorded expiry.
    let mut reconciled = (0u64, 0u64);
    let mut reconcile_runs = 0usize;
    let mut last = Leftovers::of(&emu.state());
    let mut last_run = None::<Instant>;
    let mut window_orphans: Vec<String> = Vec::new();
    let mut most_interrupted = 0usize;
    let mut reconcile_now = |bao: &Bao| {
        let out = bao.write("azure/reconcile", &[]);
        reconcile_runs += 1;
        if out.code == 0 {
            let r = out.json();
            reconciled.0 += r["data"]["deleted_applications"].as_u64().unwrap_or(0);
            reconciled.1 += r["data"]["deleted_role_assignments"].as_u64().unwrap_or(0);
        }
    };
    let settled = wait_for(Duration::from_secs(180), || {
        last = Leftovers::of(&emu.state());
        if last.total() == 0 {
            return true;
        }
        let found = undelivered(&bao, &emu, &base, &delivered);
        most_interrupted = most_interrupted.max(found.interrupted);
        window_orphans = found.handout_window;
        if !window_orphans.is_empty()
            && window_orphans.len() == last.apps
            && last.apps <= failed_handouts
        {
            return true;
        }
        if last_run.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(5)) {
            last_run = Some(Instant::now());
            reconcile_now(&bao);
        }
        false
    });
    let orphans_kept_until_expiry = if settled { last.json() } else { Value::Null };
    // Time passes for those: once their recorded expiry is over, the reconciler removes them.
    if settled && last.total() > 0 {
        for id in &window_orphans {
            let key = format!("sys/raw/{base}/inventory/apps/{id}");
            let mut entry: Value = serde_json::from_str(
                bao.read(&key).ok().json()["data"]["value"]
                    .as_str()
                    .unwrap_or("{}"),
            )
            .unwrap_or_default();
            entry["expires"] =
                json!((chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339());
            bao.write(&key, &[&format!("value={entry}")]).ok();
        }
        // The plugin caches what it read; a reload makes it read storage again.
        bao.cli(&["plugin", "reload", "-plugin=azure"]).ok();
        last_run = None;
    }
    let clean = settled
        && wait_for(Duration::from_secs(60), || {
            last = Leftovers::of(&emu.state());
            if last.total() == 0 {
                return true;
            }
            if last_run.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(5)) {
                last_run = Some(Instant::now());
                reconcile_now(&bao);
            }
            false
        });
    let clean_secs = clean_start.elapsed().as_secs_f64();
    let figures = json!({
        "pool_size": pool_size,
        "rounds": rounds,
        "plugin_kills": kills,
        "kills_while_a_read_was_handing_out": kills_during_handout,
        "kills_while_the_pool_refilled": kills_during_refill,
        "statuses": statuses,
        "issued": issued.len(),
        "handed_out_from_the_pool": from_pool,
        "seconds_of_kills": kills_secs,
        "live_credential_token_checks": token_checks,
        "live_credentials_broken": broken,
        "pool_after_kills": status_after_kills,
        "engine_objects_after_kills": after_kills.json(),
        "leases_revoked": revoked,
        "leases_left": leases_left,
        "reconciler_runs": reconcile_runs,
        "reconciler_deleted_applications": reconciled.0,
        "reconciler_deleted_role_assignments": reconciled.1,
        "reads_killed_while_handing_out": failed_handouts,
        "kept_until_expiry_handout_window": orphans_kept_until_expiry,
        "interrupted_issuances_left_to_the_rollback": most_interrupted,
        "seconds_from_role_delete_until_nothing_left": clean.then_some(clean_secs),
        "orphans_left": (!clean).then(|| last.json()),
    });
    record("f_pool_and_reconciler_under_kills", figures.clone());
    assert!(kills > 0, "no kill landed: {figures}");
    assert!(from_pool > 0, "no read was served from the pool: {figures}");
    assert!(
        broken.is_empty(),
        "live credentials stopped working: {figures}"
    );
    assert!(revoked && leases_left == 0, "{figures}");
    assert!(clean, "objects left behind: {figures}");
    assert_eq!(
        foreign_objects(&emu.state()),
        before,
        "only engine objects touched"
    );
}

/// Four kills around a pool of 2: see [`pool_under_kills`].
#[test]
fn a_pool_killed_while_refilling_and_handing_out_leaves_nothing() {
    pool_under_kills(4, 2);
}

#[test]
#[ignore = "make chaos"]
fn chaos_f_pool_and_reconciler_under_kills() {
    pool_under_kills(16, 3);
}

// ---------------------------------------------------------------------------------------
// (d) a bounded fuzz of every writable path
// ---------------------------------------------------------------------------------------

/// Adversarial values, as raw JSON text (so numbers beyond f64/u64 reach the server as
/// typed).
fn adversarial_values() -> Vec<(&'static str, String)> {
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    vec![
        ("1e300", "1e300".into()),
        ("2^64", "18446744073709551616".into()),
        ("-2^63-1", "-9223372036854775809".into()),
        ("i64::MAX", i64::MAX.to_string()),
        ("-1", "-1".into()),
        ("0", "0".into()),
        ("0.5", "0.5".into()),
        ("true", "true".into()),
        ("null", "null".into()),
        ("array", r#"[1,"x",null]"#.into()),
        ("object", r#"{"a":1}"#.into()),
        ("nested arrays x200", nested),
        ("nested objects x100", deep_object),
        ("empty string", r#""""#.into()),
        ("whitespace", r#"" \t\n ""#.into()),
        ("1 MB string", format!("\"{}\"", "a".repeat(1 << 20))),
        ("unicode", json!("ünïcødé \u{202e}😀 名前").to_string()),
        ("nul byte", json!("a\u{0}b").to_string()),
        ("path traversal", json!("../../../sys/raw/core").to_string()),
        (
            "encoded traversal",
            json!("%2e%2e%2f%2e%2e%2fsys").to_string(),
        ),
        (
            "scope traversal",
            json!("/subscriptions/x/resourceGroups/a/../../..").to_string(),
        ),
        (
            "huge duration text",
            json!("99999999999999999999h").to_string(),
        ),
        ("negative duration text", json!("-5m").to_string()),
        ("1e300 as text", json!("1e300").to_string()),
        (
            "role list text",
            json!(r#"[{"role_name":"Owner"}]"#).to_string(),
        ),
        (
            "bad role list text",
            json!(r#"[{"role_name":"Reader","scope":""}]"#).to_string(),
        ),
        (
            "guid",
            json!("00000000-0000-0000-0000-000000000000").to_string(),
        ),
    ]
}

/// One fuzzed field's outcome.
#[derive(Default)]
struct FieldReport {
    requests: usize,
    accepted: usize,
    refused_4xx: usize,
    server_errors: Vec<Value>,
    state_changed_by_refused_write: Vec<Value>,
}

impl FieldReport {
    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "accepted": self.accepted,
            "refused_4xx": self.refused_4xx,
            "http_5xx_or_no_answer": self.server_errors.len(),
            "findings_5xx": self.server_errors,
            "findings_state_changed_by_refused_write": self.state_changed_by_refused_write,
        })
    }
}

fn short(v: &Value) -> String {
    let t = v.to_string();
    if t.len() > 300 {
        format!("{}…", &t[..300])
    } else {
        t
    }
}

/// The plugin's write (POST) paths and their body fields, and its read (GET) paths, as
/// the plugin's own OpenAPI document (`azure/?help=1`) lists them (templates like
/// `roles/{name}`). The host's merged document (`sys/internal/specs/openapi`) is not used:
/// OpenBao 2.7 lists the plugin's request schemas there but drops the `$ref` that ties
/// each path to its schema (`"schema": {}`).
struct OpenApiPaths {
    posts: Vec<(String, Vec<String>)>,
    gets: Vec<String>,
}

fn openapi_paths(bao: &Bao) -> OpenApiPaths {
    let out = Command::new("curl")
        .args(["-s", "-H", &format!("X-Vault-Token: {}", bao.token)])
        .arg(format!("{}/v1/azure/?help=1", bao.addr))
        .output()
        .expect("curl");
    let doc =
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)["openapi"].clone();
    let schemas = doc["components"]["schemas"].clone();
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => schemas[r.rsplit('/').next().unwrap_or("")].clone(),
            None => schema.clone(),
        }
    };
    let mut out = OpenApiPaths {
        posts: Vec::new(),
        gets: Vec::new(),
    };
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let Some(rel) = path.strip_prefix('/') else {
            continue;
        };
        if item.get("get").is_some() {
            out.gets.push(rel.to_string());
        }
        if let Some(post) = item.get("post") {
            let schema = resolve(&post["requestBody"]["content"]["application/json"]["schema"]);
            let mut fields: Vec<String> = schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect();
            fields.sort();
            out.posts.push((rel.to_string(), fields));
        }
    }
    out.posts.sort();
    out.gets.sort();
    out
}

/// Passwords and certificates named by the engine (`vault-…`) on application `object_id`.
fn engine_credentials(emu: &Emulator, object_id: &str) -> usize {
    emu.state()["applications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["id"] == object_id)
        .flat_map(|a| {
            let mut v = a["passwordCredentials"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            v.extend(a["keyCredentials"].as_array().cloned().unwrap_or_default());
            v
        })
        .filter(|c| {
            c["displayName"]
                .as_str()
                .is_some_and(|n| n.starts_with("vault-"))
        })
        .count()
}

/// One fuzz target: a concrete path, the body every request starts from, and the path
/// that reads back what the write stores (`None` for actions).
struct FuzzTarget {
    label: String,
    template: String,
    path: String,
    base: Value,
    readback: Option<String>,
}

/// Percent-encodes every byte of the first 2000 characters of an adversarial value's text
/// (for a path segment or a query value).
fn encoded(raw: &str) -> String {
    let text = serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| raw.to_string());
    text.chars()
        .take(2000)
        .collect::<String>()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect()
}

/// Every write path and body field of the plugin (from its OpenAPI document, so a path or
/// field added later is fuzzed too, and a write path without a base body here fails the
/// test), every path parameter and every read path's query parameter, with 27 adversarial
/// values each: no 5xx, no refused write that changes state, the same plugin process, and
/// nothing left in Azure after clean-up.
#[test]
#[ignore = "make chaos"]
fn chaos_d_bounded_fuzz_of_every_writable_path() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    write_role(&bao, &emu, "f");
    let api = openapi_paths(&bao);
    // Applications for the static roles: a password role, a certificate role, an import.
    let (app_pw, _) = emu.create_app("fuzz-static-password", true);
    let (app_cert, _) = emu.create_app("fuzz-static-certificate", true);
    let (app_import, _) = emu.create_app("fuzz-static-import", true);
    bao.write(
        "azure/static-roles/sf",
        &[
            &format!("application_object_id={app_pw}"),
            "rotation_period=24h",
        ],
    )
    .ok();
    bao.write(
        "azure/static-roles/sc",
        &[
            &format!("application_object_id={app_cert}"),
            "rotation_period=24h",
            "credential_type=certificate",
        ],
    )
    .ok();
    let new_import_password = || {
        let p = emu.graph_post(
            &format!("applications/{app_import}/addPassword"),
            &json!({"passwordCredential": {"displayName": "to-import"}}),
        );
        (
            p["keyId"].as_str().unwrap_or("").to_string(),
            p["secretText"].as_str().unwrap_or("").to_string(),
        )
    };
    let mut import_password = new_import_password();
    let import_base = |(key, secret): &(String, String)| {
        json!({"application_object_id": app_import, "secret_id": key, "client_secret": secret,
               "rotation_period": "24h", "skip_import_rotation": true})
    };
    let pids_before = bao.plugin_pids();
    let http = Http::new(&bao.token);
    let rt = runtime();
    let base_config: Value = Value::Object(
        emu.config_args()
            .iter()
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    );
    let base_role = role_body(&emu);
    let target =
        |label: &str, template: &str, path: &str, base: Value, readback: Option<&str>| FuzzTarget {
            label: label.into(),
            template: template.into(),
            path: path.into(),
            base,
            readback: readback.map(str::to_string),
        };
    let mut targets = Vec::new();
    let mut no_base = Vec::new();
    for (template, _) in &api.posts {
        match template.as_str() {
            "config" => targets.push(target(
                "config",
                template,
                "config",
                base_config.clone(),
                Some("config"),
            )),
            "roles/{name}" => targets.push(target(
                "roles/f",
                template,
                "roles/f",
                base_role.clone(),
                Some("roles/f"),
            )),
            "static-roles/{name}" => {
                targets.push(target(
                    "static-roles/sf (password)",
                    template,
                    "static-roles/sf",
                    json!({"application_object_id": app_pw, "rotation_period": "24h"}),
                    Some("static-roles/sf"),
                ));
                targets.push(target("static-roles/sc (certificate)", template, "static-roles/sc",
                    json!({"application_object_id": app_cert, "rotation_period": "24h", "credential_type": "certificate"}),
                    Some("static-roles/sc")));
            }
            "static-roles/{name}/import" => targets.push(target(
                "static-roles/si/import",
                template,
                "static-roles/si/import",
                import_base(&import_password),
                Some("static-roles/si"),
            )),
            "static-creds/{name}/token" => {
                targets.push(target(
                    "static-creds/sf/token",
                    template,
                    "static-creds/sf/token",
                    json!({}),
                    None,
                ));
                targets.push(target(
                    "static-creds/sc/token",
                    template,
                    "static-creds/sc/token",
                    json!({}),
                    None,
                ));
            }
            "rotate-role/{name}" => {
                targets.push(target(
                    "rotate-role/sf",
                    template,
                    "rotate-role/sf",
                    json!({}),
                    None,
                ));
                targets.push(target(
                    "rotate-role/sc",
                    template,
                    "rotate-role/sc",
                    json!({}),
                    None,
                ));
            }
            "rotate-root" => targets.push(target(
                "rotate-root",
                template,
                "rotate-root",
                json!({}),
                None,
            )),
            "reconcile" => {
                targets.push(target("reconcile", template, "reconcile", json!({}), None))
            }
            other => no_base.push(other.to_string()),
        }
    }
    let fields_of = |template: &str| -> Vec<String> {
        api.posts
            .iter()
            .find(|(t, _)| t == template)
            .map(|(_, f)| {
                f.iter()
                    .filter(|f| !template.contains(&format!("{{{f}}}")))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };

    let mut report = serde_json::Map::new();
    let (mut total, mut total_5xx, mut total_changed) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    rt.block_on(async {
        let url = |path: &str| format!("{}/v1/azure/{path}", bao.addr);
        let read = |path: String| {
            let (http, u) = (&http, url(&path));
            async move { http.call("GET", &u, None).await.1["data"].clone() }
        };
        let send_raw = |method: &'static str, path: String, body: String| {
            let (http, u) = (&http, url(&path));
            async move {
                let m =
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
                match http
                    .client
                    .request(m, &u)
                    .header("X-Vault-Token", &http.token)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (s, r.json::<Value>().await.unwrap_or(Value::Null))
                    }
                    Err(_) => (0, Value::Null),
                }
            }
        };
        let tally = |fr: &mut FieldReport, label: &str, status: u16, resp: &Value| match status {
            200..=299 => fr.accepted += 1,
            400..=499 => fr.refused_4xx += 1,
            _ => fr
                .server_errors
                .push(json!({"value": label, "status": status, "error": short(&resp["errors"])})),
        };

        // Body fields of every write path.
        for t in &mut targets {
            let mut fields = fields_of(&t.template);
            // Paths without body fields: junk fields are ignored or refused, never a 5xx.
            let few = fields.is_empty();
            if few {
                fields.push("junk".into());
            }
            for field in fields {
                let mut fr = FieldReport::default();
                let field_start = Instant::now();
                // An imported client_secret is proven by a token request, and a wrong one
                // is waited on as a secret not yet propagated (about 7 s each): a few
                // values of each kind stand for the rest there.
                let slow = t.template.ends_with("/import") && field == "client_secret";
                for (label, raw) in adversarial_values().into_iter().filter(|(l, _)| {
                    (!few || ["2^64", "nested arrays x200", "unicode"].contains(l))
                        && (!slow
                            || [
                                "array",
                                "1 MB string",
                                "unicode",
                                "nul byte",
                                "empty string",
                            ]
                            .contains(l))
                }) {
                    let mut obj = t.base.as_object().cloned().unwrap_or_default();
                    obj.remove(&field);
                    let mut body = Value::Object(obj).to_string();
                    body.pop();
                    if !body.ends_with('{') {
                        body.push(',');
                    }
                    body.push_str(&format!("\"{field}\":{raw}}}"));
                    let before = match &t.readback {
                        Some(r) => read(r.clone()).await,
                        None => Value::Null,
                    };
                    let (status, resp) = send_raw("POST", t.path.clone(), body).await;
                    fr.requests += 1;
                    tally(&mut fr, label, status, &resp);
                    let restore =
                        |t: &FuzzTarget| send_raw("POST", t.path.clone(), t.base.to_string());
                    if t.template == "static-roles/{name}/import" {
                        if (200..300).contains(&status) {
                            let _ =
                                send_raw("DELETE", "static-roles/si".into(), String::new()).await;
                        }
                        if !app_passwords(&emu, &app_import)
                            .iter()
                            .any(|p| p["keyId"] == import_password.0.as_str())
                        {
                            import_password = new_import_password();
                            t.base = import_base(&import_password);
                        }
                        if (400..500).contains(&status)
                            && !read("static-roles/si".into()).await.is_null()
                        {
                            fr.state_changed_by_refused_write
                                .push(json!({"value": label, "status": status}));
                            let _ =
                                send_raw("DELETE", "static-roles/si".into(), String::new()).await;
                        }
                        continue;
                    }
                    let Some(r) = &t.readback else { continue };
                    match status {
                        400..=499 => {
                            if read(r.clone()).await != before {
                                fr.state_changed_by_refused_write
                                    .push(json!({"value": label, "status": status}));
                                let _ = restore(t).await;
                            }
                        }
                        _ => {
                            let _ = restore(t).await;
                        }
                    }
                }
                total += fr.requests;
                total_5xx += fr.server_errors.len();
                total_changed += fr.state_changed_by_refused_write.len();
                let mut j = fr.json();
                j["seconds"] = json!(field_start.elapsed().as_secs_f64());
                report.insert(format!("{}.{field}", t.label), j);
            }
        }

        // Path parameters: every templated path, read and write, with adversarial names.
        let mut templated: Vec<(&'static str, String)> = api
            .gets
            .iter()
            .filter(|t| t.contains('{'))
            .map(|t| ("GET", t.clone()))
            .chain(
                api.posts
                    .iter()
                    .filter(|(t, _)| t.contains('{'))
                    .map(|(t, _)| ("POST", t.clone())),
            )
            .collect();
        templated.sort();
        for (method, template) in templated {
            let base = targets
                .iter()
                .find(|t| t.template == template)
                .map(|t| t.base.to_string())
                .unwrap_or_else(|| "{}".into());
            let mut fr = FieldReport::default();
            let field_start = Instant::now();
            for (label, raw) in adversarial_values() {
                let name = encoded(&raw);
                let path = template
                    .split('/')
                    .map(|seg| {
                        if seg.starts_with('{') {
                            name.as_str()
                        } else {
                            seg
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let (status, resp) = if method == "GET" {
                    send_raw("GET", path.clone(), String::new()).await
                } else {
                    send_raw("POST", path.clone(), base.clone()).await
                };
                fr.requests += 1;
                tally(&mut fr, label, status, &resp);
                if method == "POST" && (200..300).contains(&status) {
                    // A role made under a strange name goes again.
                    let made = path.trim_end_matches("/import").to_string();
                    let _ = send_raw("DELETE", made, String::new()).await;
                }
            }
            total += fr.requests;
            total_5xx += fr.server_errors.len();
            let mut j = fr.json();
            j["seconds"] = json!(field_start.elapsed().as_secs_f64());
            report.insert(format!("{method} {template} <path parameter>"), j);
        }

        // Query parameters of read paths (reconcile's dry run, self-test, pool and role
        // reads): adversarial values as text.
        for (path, param) in [
            ("reconcile", "adopt_go_engine"),
            ("self-test", "junk"),
            ("pool/f", "junk"),
            ("static-creds/sf", "metadata"),
        ] {
            let mut fr = FieldReport::default();
            for (label, raw) in adversarial_values() {
                let (status, resp) = send_raw(
                    "GET",
                    format!("{path}?{param}={}", encoded(&raw)),
                    String::new(),
                )
                .await;
                fr.requests += 1;
                tally(&mut fr, label, status, &resp);
            }
            total += fr.requests;
            total_5xx += fr.server_errors.len();
            report.insert(format!("GET {path}?{param}"), fr.json());
        }
    });
    let fuzz_secs = start.elapsed().as_secs_f64();

    let pids_after = bao.plugin_pids();
    let same_process = !pids_before.is_empty() && pids_before == pids_after;

    // Clean-up: every lease, role and static role goes; nothing of the engine's is left.
    let cli = |args: &[&str]| bao.cli(args);
    let revoked = revoke_all(&cli, "azure/", Duration::from_secs(120));
    for kind in ["roles", "static-roles"] {
        let listed = bao.cli(&["list", "-format=json", &format!("azure/{kind}")]);
        let names: Vec<String> = serde_json::from_str(&listed.stdout).unwrap_or_default();
        for n in names {
            bao.cli(&["delete", &format!("azure/{kind}/{n}")]);
        }
    }
    let cleaned = wait_clean(&emu, Duration::from_secs(180));
    let credentials_left: usize = [&app_pw, &app_cert, &app_import]
        .iter()
        .map(|a| engine_credentials(&emu, a))
        .sum();
    let figures = json!({
        "requests": total,
        "http_5xx_or_no_answer": total_5xx,
        "refused_writes_that_changed_state": total_changed,
        "write_paths_from_openapi": api.posts.iter().map(|(t, f)| json!({"path": t, "fields": f})).collect::<Vec<_>>(),
        "read_paths_from_openapi": api.gets,
        "write_paths_without_a_base_body": no_base,
        "plugin_restarted": !same_process,
        "plugin_pids_before": pids_before,
        "plugin_pids_after": pids_after,
        "seconds": fuzz_secs,
        "leases_revoked": revoked,
        "engine_objects_left": cleaned.as_ref().err().map(Leftovers::json),
        "seconds_until_nothing_left": cleaned.as_ref().ok().map(Duration::as_secs_f64),
        "engine_credentials_left_on_static_applications": credentials_left,
        "per_field": report,
    });
    record("d_fuzz", figures.clone());
    let findings: Vec<String> = figures["per_field"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(field, r)| {
            let errs = r["findings_5xx"].as_array().cloned().unwrap_or_default();
            let changed = r["findings_state_changed_by_refused_write"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            errs.into_iter()
                .map(move |f| format!("{field} = {}: HTTP {}", f["value"], f["status"]))
                .chain(changed.into_iter().map({
                    let field = field.clone();
                    move |f| format!("{field} = {}: refused but state changed", f["value"])
                }))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        same_process,
        "the plugin process changed: {pids_before:?} -> {pids_after:?}"
    );
    assert!(
        findings.is_empty(),
        "{} findings (details in the figures):\n{}",
        findings.len(),
        findings.join("\n")
    );
    assert!(
        figures["write_paths_without_a_base_body"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "write paths the fuzz does not cover: {}",
        figures["write_paths_without_a_base_body"]
    );
    assert!(revoked, "{}", figures["leases_revoked"]);
    assert!(
        cleaned.is_ok(),
        "engine objects left: {}",
        figures["engine_objects_left"]
    );
    assert_eq!(
        credentials_left, 0,
        "engine credentials left on the static roles' applications"
    );
}
