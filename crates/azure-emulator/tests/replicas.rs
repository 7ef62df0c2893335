//! The token service's replica model, on its own: a new credential reaches the replicas one
//! by one, each token request lands on one at random, so for a while some requests succeed
//! and others fail.

mod emulator_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use emulator_support::{eventually, Emu};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The token requests of `client_id` in the request log: (started_ms, replica, status).
async fn token_calls(emu: &Emu, client_id: &str) -> Vec<(u64, u64, u16)> {
    let log = emu.admin(Method::GET, "/requests", None).await;
    let mut calls: Vec<(u64, u64, u16)> = log
        .body
        .as_array()
        .expect("request log")
        .iter()
        .filter(|r| r["service"] == "token" && r["client_id"] == client_id)
        .map(|r| {
            (
                r["started_ms"].as_u64().expect("started_ms"),
                r["replica"]
                    .as_u64()
                    .expect("token calls name their replica"),
                u16::try_from(r["status"].as_u64().expect("status")).expect("status"),
            )
        })
        .collect();
    calls.sort_unstable();
    calls
}

#[tokio::test]
async fn a_new_secret_reaches_the_replicas_one_by_one() {
    let emu = Emu::start(&["--token-replicas", "4", "--replica-window-ms", "1500"]);
    let g = emu.root_graph().await;
    let (_, client_id, _, secret) = emu.new_principal(&g, "vault-replicas").await;

    // Four clients request tokens back to back, without pause, until every replica has
    // answered 200 a few times: the replicas are sampled every few milliseconds, so no
    // replica's switch falls between two samples.
    let all_ok = |calls: &[(u64, u64, u16)]| {
        (0..4).all(|r| {
            calls
                .iter()
                .rev()
                .take_while(|c| c.2 == 200)
                .filter(|c| c.1 == r)
                .count()
                >= 2
        })
    };
    let stop = AtomicBool::new(false);
    let (e, cid, sec, stop) = (&emu, &client_id, &secret, &stop);
    let scope = &e.graph_scope();
    let clients = futures::future::join_all((0..4).map(|_| async move {
        while !stop.load(Ordering::Relaxed) {
            e.token(cid, sec, scope).await;
        }
    }));
    let watcher = async move {
        eventually("every replica accepts the new secret", move || async move {
            all_ok(&token_calls(e, cid).await)
        })
        .await;
        stop.store(true, Ordering::Relaxed);
    };
    futures::future::join(clients, watcher).await;

    let calls = token_calls(&emu, &client_id).await;
    let replicas: std::collections::HashSet<u64> = calls.iter().map(|c| c.1).collect();
    assert_eq!(replicas.len(), 4, "requests spread over the replicas");
    // For a while, some requests succeeded while others still failed.
    let first_ok = calls.iter().position(|c| c.2 == 200).expect("a success");
    let last_fail = calls.iter().rposition(|c| c.2 != 200);
    assert!(
        last_fail.is_some_and(|f| f > first_ok),
        "successes and failures overlapped: {calls:?}"
    );
    // On each replica, the secret stays visible once seen. The log orders calls by the
    // millisecond they arrived, and concurrent calls are judged in whatever order the tasks
    // run: a failure a few milliseconds after a success on the same replica is a call that
    // was judged first, not a replica that forgot.
    const SAME_MOMENT_MS: u64 = 20;
    let mut first_ok: HashMap<u64, u64> = HashMap::new();
    for (ms, replica, status) in &calls {
        if *status == 200 {
            first_ok.entry(*replica).or_insert(*ms);
        }
    }
    for (ms, replica, status) in &calls {
        if let Some(seen_at) = first_ok.get(replica) {
            assert!(
                *status == 200 || *ms <= seen_at + SAME_MOMENT_MS,
                "replica {replica} forgot the secret: {calls:?}"
            );
        }
    }
    // Failures are Entra ID's "not there yet" answers.
    for (_, _, status) in &calls {
        assert!([200, 400, 401].contains(status), "{calls:?}");
    }
}

#[tokio::test]
async fn the_model_is_set_through_the_admin_api() {
    let emu = Emu::start(&[]);
    let s = emu.admin(Method::GET, "/settings", None).await;
    assert_eq!(s.body["token_replicas"], 1);
    assert_eq!(s.body["replica_window_ms"], 0);
    for bad in [json!({"token_replicas": 0}), json!({"token_replicas": 65})] {
        let r = emu.admin(Method::POST, "/settings", Some(bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(r.text.contains("token_replicas"), "{}", r.text);
    }
    let r = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"token_replicas": 3, "replica_window_ms": 60000})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A secret made now stays refused on the replicas it has not reached: with a minute-long
    // window, the first requests all fail, whichever replica they land on.
    let g = emu.root_graph().await;
    let (_, client_id, _, secret) = emu.new_principal(&g, "vault-replicas-admin").await;
    for _ in 0..6 {
        let r = emu.token(&client_id, &secret, &emu.graph_scope()).await;
        assert!(!r.status.is_success(), "{}", r.text);
    }
    // The root identity (seeded) is visible on every replica.
    for _ in 0..6 {
        emu.root_graph().await;
    }
    let calls = token_calls(&emu, &client_id).await;
    assert_eq!(calls.len(), 6);
    assert!(calls.iter().all(|c| c.1 < 3));

    // Back to one replica and no window: the secret works at once.
    let r = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"token_replicas": 1, "replica_window_ms": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = emu.token(&client_id, &secret, &emu.graph_scope()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let last: Value = emu.admin(Method::GET, "/requests", None).await.body;
    let last = last.as_array().and_then(|a| a.last()).cloned();
    assert_eq!(last.map(|l| l["replica"].clone()), Some(json!(0)));
}
