//! Pooled against unpooled `creds` reads at 100 ms emulated Azure latency, written to
//! `bench-results/pool.json` (run with `make bench`).
//!
//! The pooled role is written with `pool_size=N`; its reads are timed once the pool is full.
//! The pool is full when N applications made for it exist in the emulator and the emulator
//! has had no call for a while (the readiness proofs are over). If the engine rejects the
//! field, the result records that this part could not run, with the engine's answer.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::{bao_with_emulator, Emulator};
use serde_json::{json, Value};
use support::{ms_since, Api};

const LATENCY_MS: u64 = 100;
const POOL_SIZE: usize = 5;
/// Reads timed per role: one full pool at a time, ROUNDS times.
const ROUNDS: usize = 4;
const ROLES: &str = r#"[{"role_name": "Reader", "scope": "/subscriptions/SUB"}]"#;
const GROUPS: &str = r#"[{"group_name": "vault-test-group-1"}]"#;
const FILL_TIMEOUT: Duration = Duration::from_secs(120);
/// No emulator call for this long after the pool's objects exist: the proofs are over.
const QUIET: Duration = Duration::from_millis(1500);

fn role_body(emu: &Emulator, pool_size: Option<usize>) -> Value {
    let mut body = json!({
        "azure_roles": ROLES.replace("SUB", &emu.var("AZURE_SUBSCRIPTION_ID")),
        "azure_groups": GROUPS,
        "ttl": "1h",
    });
    if let Some(n) = pool_size {
        body["pool_size"] = json!(n);
    }
    body
}

/// The emulator's applications whose display name starts with `vault-` and that have not been
/// deleted, and the time of the latest call it logged (ms since it started).
fn live_apps_and_last_call(emu: &Emulator) -> (usize, u64) {
    let apps = emu.vault_apps().len();
    let last = emu
        .requests()
        .iter()
        .filter_map(|r| r["finished_ms"].as_u64())
        .max()
        .unwrap_or(0);
    (apps, last)
}

/// Waits until at least `apps` engine-made applications exist and the emulator has been
/// quiet for [`QUIET`]; false on timeout.
fn wait_full(emu: &Emulator, apps: usize) -> bool {
    let deadline = Instant::now() + FILL_TIMEOUT;
    let mut last_seen = (0, 0);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let now = live_apps_and_last_call(emu);
        if now != last_seen {
            last_seen = now;
            quiet_since = Instant::now();
        } else if now.0 >= apps && quiet_since.elapsed() >= QUIET {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn main() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let api = Api::new(&bao.addr, &bao.token);
    let rt = support::runtime();

    let unpooled = rt.block_on(api.post("azure/roles/unpooled", &role_body(&emu, None)));
    assert!(unpooled.ok(), "unpooled role: {}", unpooled.body);
    emu.settings(json!({ "latency_ms": LATENCY_MS }));

    // Unpooled: every read issues.
    let mut plain = Vec::new();
    for _ in 0..POOL_SIZE * ROUNDS / 2 {
        let start = Instant::now();
        let reply = rt.block_on(api.get("azure/creds/unpooled"));
        plain.push(ms_since(start));
        assert!(reply.ok(), "unpooled creds: {}", reply.body);
    }
    let plain = support::summary(plain);

    // Pooled.
    let before = emu.vault_apps().len();
    let pooled_role =
        rt.block_on(api.post("azure/roles/pooled", &role_body(&emu, Some(POOL_SIZE))));
    // An engine without the field ignores it with a warning: the role read tells.
    let stored = rt.block_on(api.get("azure/roles/pooled"));
    let pooled = if !pooled_role.ok() {
        json!({
            "ran": false,
            "reason": format!(
                "the engine rejected pool_size (HTTP {}): {}",
                pooled_role.status,
                pooled_role.body["errors"]
            ),
        })
    } else if stored.body["data"]["pool_size"] != json!(POOL_SIZE) {
        json!({
            "ran": false,
            "reason": format!(
                "the engine does not know pool_size (the role write answered HTTP {}{}; the \
                 role reads back without it)",
                pooled_role.status,
                match &pooled_role.body["warnings"] {
                    Value::Null => String::new(),
                    w => format!(" with warnings {w}"),
                }
            ),
        })
    } else {
        let mut samples = Vec::new();
        let mut rounds_run = 0;
        let mut outcome = None;
        for round in 0..ROUNDS {
            // Apps alive before the pool fills: the earlier ones plus the handed-out
            // credentials (still leased) plus a full pool.
            let expect = before + POOL_SIZE * (round + 1);
            if !wait_full(&emu, expect) {
                outcome = Some(format!(
                    "the pool did not fill within {} s (round {round})",
                    FILL_TIMEOUT.as_secs()
                ));
                break;
            }
            for _ in 0..POOL_SIZE {
                let start = Instant::now();
                let reply = rt.block_on(api.get("azure/creds/pooled"));
                samples.push(ms_since(start));
                assert!(reply.ok(), "pooled creds: {}", reply.body);
            }
            rounds_run += 1;
        }
        json!({
            "ran": rounds_run > 0,
            "rounds": rounds_run,
            "reads_per_round": POOL_SIZE,
            "creds_read_ms": support::summary(samples),
            "note": outcome,
        })
    };
    support::write_results(
        "pool",
        &json!({
            "emulated_latency_ms": LATENCY_MS,
            "role": {"azure_roles": 1, "groups": 1},
            "pool_size": POOL_SIZE,
            "unpooled": {"creds_read_ms": plain},
            "pooled": pooled,
        }),
    );
}
