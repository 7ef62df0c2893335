//! Issuance latency against the number of Azure roles, written to
//! `bench-results/issuance.json` (run with `make bench`):
//!
//! - this engine: `creds/<role>` through OpenBao for 0, 1, 2, 4, 8 and 16 Azure roles plus one
//!   group, at 100 ms emulated Azure latency, with the emulator's request timeline of one
//!   issuance each;
//! - the Go engine's call pattern replayed against the same emulator: the REST calls of its
//!   `createSPSecret` (hashicorp/vault-plugin-secrets-azure `path_service_principal.go`, with
//!   `createApp`, `createSP`, `assignRoles` and `addGroupMemberships` of `client.go`), one after
//!   another, each in its retry loop (a retryable error waits 2 to 7 s). Its tokens come from
//!   a warm cache, as in a Go engine that has served a request before; its WAL writes are host
//!   storage calls (well under a millisecond each) and are left out.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::{bao_with_emulator, Emulator};
use serde_json::{json, Value};
use support::{ms_since, Api};

const LATENCY_MS: u64 = 100;
const RUNS: usize = 3;
const ROLE_COUNTS: [usize; 6] = [0, 1, 2, 4, 8, 16];
const ROLE_NAMES: [&str; 4] = [
    "Reader",
    "Contributor",
    "User Access Administrator",
    "Owner",
];
const GROUP: &str = "vault-test-group-1";
const EXTRA_RESOURCE_GROUPS: [&str; 3] = ["bench-rg-1", "bench-rg-2", "bench-rg-3"];

/// Scopes for `n` distinct (role, scope) pairs: the subscription and four resource groups.
fn scopes(sub: &str) -> Vec<String> {
    let mut s = vec![
        format!("/subscriptions/{sub}"),
        format!("/subscriptions/{sub}/resourceGroups/vault-rg"),
    ];
    s.extend(
        EXTRA_RESOURCE_GROUPS
            .iter()
            .map(|rg| format!("/subscriptions/{sub}/resourceGroups/{rg}")),
    );
    s
}

/// (role name, scope) of the `n` Azure roles of the bench role with `n` roles.
fn role_pairs(sub: &str, n: usize) -> Vec<(&'static str, String)> {
    let scopes = scopes(sub);
    (0..n)
        .map(|i| {
            (
                ROLE_NAMES[i % ROLE_NAMES.len()],
                scopes[i / ROLE_NAMES.len()].clone(),
            )
        })
        .collect()
}

/// The emulator's request log, relative to its first call.
fn timeline(emu: &Emulator) -> Vec<Value> {
    let reqs = emu.requests();
    let t0 = reqs
        .iter()
        .filter_map(|r| r["started_ms"].as_u64())
        .min()
        .unwrap_or(0);
    reqs.iter()
        .map(|r| {
            json!({
                "service": r["service"], "method": r["method"],
                "path": r["path"].as_str().unwrap_or("").split('?').next().unwrap_or(""),
                "status": r["status"],
                "start_ms": r["started_ms"].as_u64().unwrap_or(0).saturating_sub(t0),
                "end_ms": r["finished_ms"].as_u64().unwrap_or(0).saturating_sub(t0),
            })
        })
        .collect()
}

/// Round trips on the critical path of a timeline: the longest chain of calls in which each
/// call started after the one before it ended.
fn round_trips(timeline: &[Value]) -> usize {
    // The longest chain of calls each of which started after the previous one ended: the
    // Azure round trips on the critical path (calls that overlap are one round).
    let mut calls: Vec<(u64, u64)> = timeline
        .iter()
        .map(|c| {
            (
                c["start_ms"].as_u64().unwrap_or(0),
                c["end_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    calls.sort_unstable_by_key(|&(start, end)| (end, start));
    let mut chain = vec![0usize; calls.len()];
    for i in 0..calls.len() {
        let before = (0..i)
            .filter(|&j| calls[j].1 <= calls[i].0)
            .map(|j| chain[j])
            .max()
            .unwrap_or(0);
        chain[i] = before + 1;
    }
    chain.into_iter().max().unwrap_or(0)
}

/// The Go engine's REST calls, with the root identity's cached tokens.
struct GoReplay {
    http: reqwest::Client,
    graph: String,
    arm: String,
    graph_token: String,
    arm_token: String,
    /// Role definition ids by role name (resolved at role write time in the Go engine).
    role_ids: Vec<(String, String)>,
    group_id: String,
}

#[derive(Debug)]
struct CallError(String);

impl GoReplay {
    async fn new(emu: &Emulator) -> Self {
        let pem = std::fs::read(emu.var("SSL_CERT_FILE")).expect("emulator CA");
        let mut builder = reqwest::Client::builder();
        for cert in reqwest::Certificate::from_pem_bundle(&pem).expect("CA bundle") {
            builder = builder.tls_certs_merge([cert]);
        }
        let http = builder.build().expect("client");
        let graph = emu.var("AZURE_GRAPH_ENDPOINT");
        let arm = emu
            .var("AZURE_RESOURCE_MANAGER_ENDPOINT")
            .trim_end_matches('/')
            .to_string();
        let token = |scope: String| {
            let http = http.clone();
            let url = format!(
                "{}{}/oauth2/v2.0/token",
                emu.var("AZURE_AUTHORITY_HOST"),
                emu.var("AZURE_TENANT_ID")
            );
            let form = [
                ("grant_type", "client_credentials".to_string()),
                ("client_id", emu.var("AZURE_CLIENT_ID")),
                ("client_secret", emu.var("AZURE_CLIENT_SECRET")),
                ("scope", scope),
            ];
            async move {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form.iter())
                    .finish();
                let v: Value = http
                    .post(url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .expect("token")
                    .json()
                    .await
                    .expect("token JSON");
                v["access_token"].as_str().expect("token").to_string()
            }
        };
        let graph_token = token(format!("{}/.default", graph.trim_end_matches('/'))).await;
        let arm_token = token(format!("{arm}/.default")).await;
        let mut replay = Self {
            http,
            graph: graph.trim_end_matches('/').to_string(),
            arm,
            graph_token,
            arm_token,
            role_ids: Vec::new(),
            group_id: String::new(),
        };
        let sub = emu.var("AZURE_SUBSCRIPTION_ID");
        for name in ROLE_NAMES {
            let url = format!(
                "{}/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions",
                replay.arm
            );
            let v = replay
                .call(
                    replay
                        .http
                        .get(with_query(
                            &url,
                            &[
                                ("$filter", &format!("roleName eq '{name}'")),
                                ("api-version", "2022-04-01"),
                            ],
                        ))
                        .bearer_auth(&replay.arm_token),
                )
                .await
                .expect("role definition");
            let id = v["value"][0]["id"].as_str().expect("role id").to_string();
            replay.role_ids.push((name.to_string(), id));
        }
        let groups = replay
            .call(
                replay
                    .http
                    .get(with_query(
                        &format!("{}/v1.0/groups", replay.graph),
                        &[("$filter", &format!("displayName eq '{GROUP}'"))],
                    ))
                    .bearer_auth(&replay.graph_token),
            )
            .await
            .expect("group");
        replay.group_id = groups["value"][0]["id"]
            .as_str()
            .expect("group id")
            .to_string();
        replay
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let resp = req.send().await.map_err(|e| CallError(e.to_string()))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| CallError(e.to_string()))?;
        if !status.is_success() {
            return Err(CallError(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The Go engine's retry loop: a retryable error waits a random 2 to 7 s.
    async fn with_retry<F, Fut>(&self, retryable: &[&str], op: F) -> Value
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Value, CallError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(80);
        loop {
            match op().await {
                Ok(v) => return v,
                Err(CallError(e)) => {
                    let lower = e.to_lowercase();
                    let again = retryable.iter().any(|r| lower.contains(&r.to_lowercase()));
                    assert!(
                        again && Instant::now() < deadline,
                        "Go replay call failed: {e}"
                    );
                    let wait = 2 + rand_below(6);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
            }
        }
    }

    /// One dynamic issuance: G1, (G8, G9) in a retry loop, A3 per role, G13 per group.
    async fn issue(&self, roles: &[(&str, String)]) {
        let app = self
            .call(
                self.http
                    .post(format!("{}/v1.0/applications", self.graph))
                    .bearer_auth(&self.graph_token)
                    .json(&json!({"displayName": format!("vault-{}", uuid::Uuid::new_v4())})),
            )
            .await
            .expect("create application");
        let app_id = app["appId"].as_str().expect("appId").to_string();
        let sp_retry = [
            "local tenant",
            "does not reference a valid application object",
            "authorization_requestdenied",
            "propagation",
            "please try again",
            "could not find",
            "not found",
        ];
        let sp = self
            .with_retry(&sp_retry, || async {
                let sp = self
                    .call(
                        self.http
                            .post(format!("{}/v1.0/servicePrincipals", self.graph))
                            .bearer_auth(&self.graph_token)
                            .json(&json!({ "appId": app_id })),
                    )
                    .await?;
                let sp_id = sp["id"].as_str().unwrap_or_default().to_string();
                let now = chrono::Utc::now();
                let end = now + chrono::Duration::hours(87_600);
                self.call(
                    self.http
                        .post(format!(
                            "{}/v1.0/servicePrincipals/{sp_id}/addPassword",
                            self.graph
                        ))
                        .bearer_auth(&self.graph_token)
                        .json(&json!({"passwordCredential": {
                            "startDateTime": now.to_rfc3339(),
                            "endDateTime": end.to_rfc3339(),
                        }})),
                )
                .await?;
                Ok(json!({ "id": sp_id }))
            })
            .await;
        let sp_id = sp["id"].as_str().expect("sp id").to_string();
        for (name, scope) in roles {
            let role_id = self
                .role_ids
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| id.clone())
                .expect("role id");
            let url = format!(
                "{}{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                self.arm,
                uuid::Uuid::new_v4()
            );
            self.with_retry(&["PrincipalNotFound"], || {
                self.call(
                    self.http
                        .put(with_query(&url, &[("api-version", "2022-04-01")]))
                        .bearer_auth(&self.arm_token)
                        .json(&json!({"properties": {
                            "roleDefinitionId": role_id, "principalId": sp_id,
                        }})),
                )
            })
            .await;
        }
        let member = json!({
            "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{sp_id}")
        });
        self.with_retry(&["Request_ResourceNotFound"], || {
            self.call(
                self.http
                    .post(format!(
                        "{}/v1.0/groups/{}/members/$ref",
                        self.graph, self.group_id
                    ))
                    .bearer_auth(&self.graph_token)
                    .json(&member),
            )
        })
        .await;
    }
}

/// `url` with `params` as its query string.
fn with_query(url: &str, params: &[(&str, &str)]) -> url::Url {
    url::Url::parse_with_params(url, params).expect("URL")
}

/// A number below `n` from the clock's nanoseconds (the Go engine's jitter; no need for a
/// good generator).
fn rand_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % n
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    let rgs: Vec<Value> = EXTRA_RESOURCE_GROUPS
        .iter()
        .map(|n| json!({ "name": n }))
        .collect();
    std::fs::write(&seed, json!({ "resourceGroups": rgs }).to_string()).expect("seed");
    let emu = Emulator::start(&["--seed", seed.to_str().expect("path")]);
    let bao = bao_with_emulator(&emu);
    let api = Api::new(&bao.addr, &bao.token);
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let rt = support::runtime();

    // Roles are written with no latency (role writes resolve names in Azure).
    for n in ROLE_COUNTS {
        let roles: Vec<Value> = role_pairs(&sub, n)
            .into_iter()
            .map(|(name, scope)| json!({"role_name": name, "scope": scope}))
            .collect();
        let mut body = json!({
            "azure_groups": json!([{ "group_name": GROUP }]).to_string(),
            "ttl": "1h",
        });
        if n > 0 {
            body["azure_roles"] = Value::String(Value::Array(roles).to_string());
        }
        let reply = rt.block_on(api.post(&format!("azure/roles/bench-{n}"), &body));
        assert!(reply.ok(), "role bench-{n}: {}", reply.body);
    }
    let replay = rt.block_on(GoReplay::new(&emu));
    emu.settings(json!({ "latency_ms": LATENCY_MS }));

    let mut results = serde_json::Map::new();
    for n in ROLE_COUNTS {
        let pairs = role_pairs(&sub, n);
        let (mut ours, mut go) = (Vec::new(), Vec::new());
        let (mut ours_timeline, mut go_timeline) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            emu.clear_requests();
            let start = Instant::now();
            let reply = rt.block_on(api.get(&format!("azure/creds/bench-{n}")));
            ours.push(ms_since(start));
            assert!(reply.ok(), "creds bench-{n}: {}", reply.body);
            if run == 0 {
                ours_timeline = timeline(&emu);
            }

            emu.clear_requests();
            let start = Instant::now();
            rt.block_on(replay.issue(&pairs));
            go.push(ms_since(start));
            if run == 0 {
                go_timeline = timeline(&emu);
            }
        }
        let ours_trips = round_trips(&ours_timeline);
        let go_trips = round_trips(&go_timeline);
        let ours = support::summary(ours);
        let go = support::summary(go);
        println!(
            "{n} roles + 1 group: this engine {:.0} ms ({ours_trips} round trips), Go pattern {:.0} ms ({go_trips})",
            ours["median"].as_f64().unwrap_or(0.0),
            go["median"].as_f64().unwrap_or(0.0),
        );
        results.insert(
            n.to_string(),
            json!({
                "azure_roles": n,
                "groups": 1,
                "this_engine": {
                    "issuance_ms": ours,
                    "round_trips": ours_trips,
                    "api_calls": ours_timeline.iter().filter(|c| c["service"] != "token").count(),
                    "token_calls": ours_timeline.iter().filter(|c| c["service"] == "token").count(),
                    "timeline": ours_timeline,
                },
                "go_pattern": {
                    "issuance_ms": go,
                    "round_trips": go_trips,
                    "api_calls": go_timeline.len(),
                    "timeline": go_timeline,
                },
            }),
        );
    }
    support::write_results(
        "issuance",
        &json!({
            "emulated_latency_ms": LATENCY_MS,
            "runs_per_point": RUNS,
            "go_sources": [
                "hashicorp/vault-plugin-secrets-azure path_service_principal.go (createSPSecret)",
                "hashicorp/vault-plugin-secrets-azure client.go (createApp, createSP, assignRoles, addGroupMemberships)",
            ],
            "by_roles": Value::Object(results),
        }),
    );
}
