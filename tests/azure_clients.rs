//! The Azure clients against the real `azure-emulator` binary (https with its own CA,
//! loopback only). Every test starts its own emulator and kills it on drop.

#[path = "bins/mod.rs"]
mod bins;

use azure_clients::*;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------- harness

struct Emulator {
    _process: azure_emulator::testing::EmulatorProcess,
    vars: HashMap<String, String>,
    admin: String,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Req {
    method: String,
    path: String,
    status: u16,
    started_ms: u64,
    finished_ms: u64,
    service: String,
}

impl Emulator {
    fn start(extra: &[&str]) -> Emulator {
        let process = azure_emulator::testing::EmulatorProcess::spawn(
            &bins::bin_path("azure-emulator"),
            extra,
        );
        let vars: HashMap<String, String> = process.env.iter().cloned().collect();
        let admin = vars["EMULATOR_ADMIN"].trim_end_matches('/').to_owned();
        Emulator {
            _process: process,
            vars,
            admin,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn var(&self, k: &str) -> String {
        self.vars.get(k).cloned().unwrap_or_default()
    }

    /// Settings as the engine would resolve them with the emulator's variables as its
    /// environment, plus/minus `extra` (an empty value removes a variable).
    fn settings_with(&self, extra: &[(&str, &str)]) -> AzureSettings {
        let mut env = self.vars.clone();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        AzureSettings::resolve(&AzureConfig::default(), &move |k: &str| {
            env.get(k).cloned().filter(|v| !v.is_empty())
        })
        .unwrap()
    }

    fn client_with(&self, extra: &[(&str, &str)], retry: RetryPolicy) -> AzureClient {
        AzureClient::new(
            self.settings_with(extra),
            AzureClientOptions {
                retry,
                ..AzureClientOptions::default()
            },
        )
        .unwrap()
    }

    fn client(&self) -> AzureClient {
        self.client_with(&[], fast_policy())
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method, format!("{}{path}", self.admin));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("admin call");
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
        resp.json().await.unwrap_or(Value::Null)
    }

    async fn fault(&self, rule: Value) {
        self.admin(reqwest::Method::POST, "/faults", Some(rule))
            .await;
    }

    async fn clear_faults(&self) {
        self.admin(reqwest::Method::DELETE, "/faults", None).await;
    }

    async fn set(&self, settings: Value) {
        self.admin(reqwest::Method::POST, "/settings", Some(settings))
            .await;
    }

    async fn requests(&self) -> Vec<Req> {
        serde_json::from_value(self.admin(reqwest::Method::GET, "/requests", None).await).unwrap()
    }

    async fn clear_requests(&self) {
        self.admin(reqwest::Method::DELETE, "/requests", None).await;
    }

    async fn count(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        propagation_initial_delay: Duration::from_millis(100),
        propagation_max_delay: Duration::from_millis(500),
        ..RetryPolicy::default()
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

fn in_an_hour() -> NewPassword {
    NewPassword {
        display_name: Some("vault-plugin-secrets-azure".into()),
        start: None,
        end: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    }
}

// ------------------------------------------------------------------------------- tests

#[tokio::test]
async fn applications_and_passwords() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let g = client.graph();

    let err = g
        .create_application(
            &NewApplication {
                display_name: "not-vault".into(),
                sign_in_audience: None,
                tags: vec![],
            },
            deadline(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AzureError::InvalidInput { .. }), "{err}");

    let spec = NewApplication {
        sign_in_audience: Some("AzureADMyOrg".into()),
        tags: vec!["vault".into(), "test".into()],
        ..NewApplication::dynamic()
    };
    let app = g.create_application(&spec, deadline()).await.unwrap();
    assert_eq!(app.display_name, spec.display_name);
    assert_ne!(app.id, app.app_id);
    assert_eq!(app.sign_in_audience.as_deref(), Some("AzureADMyOrg"));

    let got = g.get_application(&app.id, deadline()).await.unwrap();
    assert_eq!(got.app_id, app.app_id);
    let found = g
        .find_application_by_app_id(&app.app_id, deadline())
        .await
        .unwrap();
    assert_eq!(found.map(|a| a.id), Some(app.id.clone()));
    let none = g
        .find_application_by_app_id(&uuid::Uuid::new_v4().to_string(), deadline())
        .await
        .unwrap();
    assert!(none.is_none());

    let pw = g
        .add_application_password(&app.id, &in_an_hour(), deadline())
        .await
        .unwrap();
    let secret = pw.secret_text.clone().expect("secretText");
    assert!(!secret.is_empty());
    assert_eq!(
        pw.display_name.as_deref(),
        Some("vault-plugin-secrets-azure")
    );
    let end = pw.end_date_time.expect("endDateTime");
    assert!((end - chrono::Utc::now()).num_minutes() >= 58);
    assert!(!format!("{pw:?}").contains(secret.expose()));

    let listed = g
        .list_application_passwords(&app.id, deadline())
        .await
        .unwrap();
    let mine = listed
        .iter()
        .find(|p| p.key_id == pw.key_id)
        .expect("listed");
    assert!(mine.secret_text.is_none());

    // The new secret works (emulator default: no activation delay) once the application
    // has a service principal in the tenant.
    let err = client
        .verify_client_secret(&app.app_id, &secret, deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AADSTS7000229"), "{err}");
    g.create_service_principal(&app.app_id, deadline())
        .await
        .unwrap();
    client
        .wait_for_client_secret(&app.app_id, &secret, Duration::from_millis(200), deadline())
        .await
        .unwrap();

    assert_eq!(
        g.remove_application_password(&app.id, &pw.key_id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        g.remove_application_password(&app.id, &pw.key_id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
    let err = client
        .verify_client_secret(&app.app_id, &secret, deadline())
        .await
        .unwrap_err();
    assert!(err.is_credential_not_yet_valid(), "{err}");
    assert!(!format!("{err} {err:?}").contains(secret.expose()));

    assert_eq!(
        g.delete_application(&app.id, deadline()).await.unwrap(),
        DeleteOutcome::Deleted
    );
    let err = g.get_application(&app.id, deadline()).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.code(), Some("Request_ResourceNotFound"));
    assert!(err.request_id().is_some(), "{err}");
    assert_eq!(
        g.delete_application(&app.id, deadline()).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert_eq!(
        g.permanently_delete(&app.id, Duration::from_secs(5), deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        g.permanently_delete(&app.id, Duration::ZERO, deadline())
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn password_writes_on_one_application_are_serialised() {
    let emu = Emulator::start(&[]);
    emu.set(json!({"password_write_ms": 150})).await;
    let client = emu.client();
    let g = client.graph();
    let app = g
        .create_application(
            &NewApplication {
                sign_in_audience: Some("AzureADMyOrg".into()),
                ..NewApplication::dynamic()
            },
            deadline(),
        )
        .await
        .unwrap();
    emu.clear_requests().await;
    let password = in_an_hour();
    let adds = (0..5).map(|_| g.add_application_password(&app.id, &password, deadline()));
    let results = futures::future::join_all(adds).await;
    let mut keys: Vec<String> = results.into_iter().map(|r| r.unwrap().key_id).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5);

    let mut writes: Vec<Req> = emu
        .requests()
        .await
        .into_iter()
        .filter(|r| r.path.contains("addPassword"))
        .collect();
    assert_eq!(writes.len(), 5, "no retries were needed: {writes:?}");
    writes.sort_by_key(|r| r.started_ms);
    for pair in writes.windows(2) {
        assert!(
            pair[1].started_ms >= pair[0].finished_ms,
            "overlapping password writes: {pair:?}"
        );
    }
}

#[tokio::test]
async fn service_principals_roles_and_groups() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let (g, arm) = (client.graph(), client.arm());
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let rg_scope = format!("/subscriptions/{sub}/resourceGroups/vault-rg");

    let app = g
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .unwrap();
    let sp = g
        .create_service_principal(&app.app_id, deadline())
        .await
        .unwrap();
    assert_eq!(sp.app_id, app.app_id);
    assert_ne!(sp.id, app.id);
    // A second create (as after a lost response) returns the same principal.
    let again = g
        .create_service_principal(&app.app_id, deadline())
        .await
        .unwrap();
    assert_eq!(again.id, sp.id);

    let pw = g
        .add_service_principal_password(
            &sp.id,
            &NewPassword {
                start: Some(chrono::Utc::now()),
                ..in_an_hour()
            },
            deadline(),
        )
        .await
        .unwrap();
    let secret = pw.secret_text.expect("secretText");
    client
        .wait_for_client_secret(&app.app_id, &secret, Duration::from_millis(200), deadline())
        .await
        .unwrap();

    // Role definitions: by name at the subscription and at the assignment's own scope.
    let reader = arm
        .find_role_definition_by_name("", "Reader", deadline())
        .await
        .unwrap();
    assert_eq!(reader.role_name, "Reader");
    assert_eq!(
        role_definition_guid(&reader.id),
        "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    );
    let reader_rg = arm
        .find_role_definition_by_name(&rg_scope, "Reader", deadline())
        .await
        .unwrap();
    assert_eq!(
        role_definition_guid(&reader_rg.id),
        role_definition_guid(&reader.id)
    );
    // Names match case-insensitively, as HashiCorp documents the lookup.
    let lower = arm
        .find_role_definition_by_name("", "reader", deadline())
        .await
        .unwrap();
    assert_eq!(lower, reader);
    let by_id = arm
        .get_role_definition(&reader.id, deadline())
        .await
        .unwrap();
    assert_eq!(by_id.role_name, "Reader");
    let bogus = format!(
        "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
        uuid::Uuid::new_v4()
    );
    let err = arm
        .get_role_definition(&bogus, deadline())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.code(), Some("RoleDefinitionDoesNotExist"));

    // Role assignments.
    let name = uuid::Uuid::new_v4().to_string();
    let ra = arm
        .create_role_assignment(&rg_scope, &name, &reader_rg.id, &sp.id, deadline())
        .await
        .unwrap();
    assert_eq!(ra.name, name);
    assert_eq!(ra.principal_id, sp.id);
    assert!(ra.scope.eq_ignore_ascii_case(&rg_scope), "{ra:?}");
    let replay = arm
        .create_role_assignment(&rg_scope, &name, &reader_rg.id, &sp.id, deadline())
        .await
        .unwrap();
    assert_eq!(replay.id.to_lowercase(), ra.id.to_lowercase());
    let other = arm
        .create_role_assignment(
            &rg_scope,
            &uuid::Uuid::new_v4().to_string(),
            &reader_rg.id,
            &sp.id,
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(other.name, name, "the existing assignment is returned");
    let listed = arm
        .list_role_assignments_for_principal("", &sp.id, deadline())
        .await
        .unwrap();
    assert!(listed.iter().any(|r| r.name == name), "{listed:?}");
    let got = arm.get_role_assignment(&ra.id, deadline()).await.unwrap();
    assert_eq!(got.principal_id, sp.id);
    assert_eq!(
        arm.delete_role_assignment(&ra.id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        arm.delete_role_assignment(&ra.id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
    let err = arm
        .get_role_assignment(&ra.id, deadline())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // Groups.
    let group = g
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap();
    assert_eq!(group.display_name, "vault-test-group-1");
    let err = g
        .find_group_by_name("vault-duplicate-group", deadline())
        .await
        .unwrap_err();
    assert!(err.is_ambiguous(), "{err}");
    let err = g
        .find_group_by_name("no such group", deadline())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        g.get_group(&group.id, deadline()).await.unwrap().id,
        group.id
    );
    let err = g
        .get_group(&uuid::Uuid::new_v4().to_string(), deadline())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    g.add_group_member(&group.id, &sp.id, deadline())
        .await
        .unwrap();
    g.add_group_member(&group.id, &sp.id, deadline())
        .await
        .unwrap();
    assert_eq!(
        g.remove_group_member(&group.id, &sp.id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        g.remove_group_member(&group.id, &sp.id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );

    assert_eq!(
        g.delete_service_principal(&sp.id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        g.delete_service_principal(&sp.id, deadline())
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert_eq!(
        g.delete_application(&app.id, deadline()).await.unwrap(),
        DeleteOutcome::Deleted
    );
}

#[tokio::test]
async fn paged_lookups_see_every_page() {
    let emu = Emulator::start(&[]);
    emu.set(json!({"graph_page_size": 1})).await;
    let client = emu.client();
    let err = client
        .graph()
        .find_group_by_name("vault-duplicate-group", deadline())
        .await
        .unwrap_err();
    assert!(err.is_ambiguous(), "{err}");
}

#[tokio::test]
async fn tokens_are_cached_per_audience_and_shared() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let group = client
        .graph()
        .find_group_by_name("vault-test-group-2", deadline())
        .await
        .unwrap();
    emu.clear_requests().await;
    // A fresh client: empty cache.
    let client = emu.client();
    let graph_calls = (0..20).map(|_| client.graph().get_group(&group.id, deadline()));
    let arm_calls = (0..20).map(|_| {
        client
            .arm()
            .list_role_assignments_for_principal("", &group.id, deadline())
    });
    let (g, a) = tokio::join!(
        futures::future::join_all(graph_calls),
        futures::future::join_all(arm_calls)
    );
    assert!(g.iter().all(Result::is_ok) && a.iter().all(Result::is_ok));
    let reqs = emu.requests().await;
    let tokens = reqs
        .iter()
        .filter(|r| r.service == "token" && r.method == "POST")
        .count();
    assert_eq!(
        tokens, 2,
        "one token per audience for 40 concurrent calls: {reqs:?}"
    );

    // Short-lived tokens are refreshed before they expire.
    emu.set(json!({"token_lifetime_secs": 4})).await;
    let client = emu.client();
    emu.clear_requests().await;
    client
        .graph()
        .get_group(&group.id, deadline())
        .await
        .unwrap();
    client
        .graph()
        .get_group(&group.id, deadline())
        .await
        .unwrap();
    // Calls until the client has fetched its second token (awaited, not slept for): it
    // must do so before the first one expires, so no call is ever refused.
    let until = Instant::now() + Duration::from_secs(10);
    let reqs = loop {
        client
            .graph()
            .get_group(&group.id, deadline())
            .await
            .unwrap();
        let reqs = emu.requests().await;
        if reqs.iter().filter(|r| r.service == "token").count() >= 2 {
            break reqs;
        }
        assert!(
            Instant::now() < until,
            "the token was never refreshed: {reqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tokens = reqs.iter().filter(|r| r.service == "token").count();
    let unauthorized = reqs.iter().filter(|r| r.status == 401).count();
    assert_eq!((tokens, unauthorized), (2, 0), "{reqs:?}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_within_bounds() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let app = client
        .graph()
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .unwrap();
    let sp = client
        .graph()
        .create_service_principal(&app.app_id, deadline())
        .await
        .unwrap();
    let reader = client
        .arm()
        .find_role_definition_by_name("", "Reader", deadline())
        .await
        .unwrap();

    // 429 with Retry-After: 1, twice: the client waits and succeeds on the third call.
    emu.clear_requests().await;
    emu.fault(json!({"method":"PUT","path_contains":"roleAssignments","status":429,"retry_after_secs":1,"times":2}))
        .await;
    let start = Instant::now();
    client
        .arm()
        .create_role_assignment(
            &format!("/subscriptions/{sub}"),
            &uuid::Uuid::new_v4().to_string(),
            &reader.id,
            &sp.id,
            deadline(),
        )
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "Retry-After honoured"
    );
    assert_eq!(emu.count("PUT", "roleAssignments").await, 3);

    // 503 without Retry-After (back-off), 500, and dropped connections on GETs.
    for rule in [
        json!({"method":"GET","path_contains":"/groups","status":503,"times":3}),
        json!({"method":"GET","path_contains":"/groups","status":500,"times":2}),
        json!({"method":"GET","path_contains":"/groups","drop":true,"times":2}),
    ] {
        emu.clear_faults().await;
        emu.clear_requests().await;
        emu.fault(rule.clone()).await;
        client
            .graph()
            .find_group_by_name("vault-test-group-1", deadline())
            .await
            .unwrap();
        let n = emu.count("GET", "/groups").await;
        assert!(n <= 4, "{rule}: {n} calls");
    }

    // A 500 storm: bounded number of attempts, then the service's error.
    emu.clear_faults().await;
    emu.clear_requests().await;
    emu.fault(json!({"method":"GET","path_contains":"/groups","status":500}))
        .await;
    let start = Instant::now();
    let err = client
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500), "{err}");
    assert_eq!(
        emu.count("GET", "/groups").await,
        fast_policy().max_attempts as usize
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    // A 429 storm: bounded too.
    emu.clear_faults().await;
    emu.clear_requests().await;
    emu.fault(json!({"method":"GET","path_contains":"/groups","status":429,"retry_after_secs":0}))
        .await;
    let err = client
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap_err();
    assert!(err.is_throttled(), "{err}");
    assert_eq!(
        emu.count("GET", "/groups").await,
        fast_policy().max_throttled_attempts as usize
    );

    // A Retry-After beyond the deadline ends the call at once instead of sleeping past it.
    emu.clear_faults().await;
    emu.clear_requests().await;
    emu.fault(json!({"method":"GET","path_contains":"/groups","status":429,"retry_after_secs":30}))
        .await;
    let start = Instant::now();
    let err = client
        .graph()
        .find_group_by_name(
            "vault-test-group-1",
            Deadline::after(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert!(err.is_throttled(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(emu.count("GET", "/groups").await, 1);

    // A create whose response is lost is not duplicated.
    emu.clear_faults().await;
    emu.fault(json!({"method":"POST","path_contains":"/applications","status":500,"times":1}))
        .await;
    let spec = NewApplication::dynamic();
    let created = client
        .graph()
        .create_application(&spec, deadline())
        .await
        .unwrap();
    let same = client
        .graph()
        .find_applications_by_display_name(&spec.display_name, deadline())
        .await
        .unwrap();
    assert_eq!(same.len(), 1);
    assert_eq!(same[0].id, created.id);
}

#[tokio::test]
async fn propagation_delays_are_waited_out() {
    let emu = Emulator::start(&["--propagation-delay-ms", "2000"]);
    let client = emu.client();
    let g = client.graph();
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let reader = client
        .arm()
        .find_role_definition_by_name("", "Reader", deadline())
        .await
        .unwrap();
    let group = g
        .find_group_by_name("vault-test-group-2", deadline())
        .await
        .unwrap();

    let start = Instant::now();
    let app = g
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .unwrap();
    let sp = g
        .create_service_principal(&app.app_id, deadline())
        .await
        .unwrap();
    assert!(
        emu.count("POST", "/servicePrincipals").await >= 2,
        "the SP create was retried"
    );
    let (password, scope, ra_name) = (
        in_an_hour(),
        format!("/subscriptions/{sub}"),
        uuid::Uuid::new_v4().to_string(),
    );
    let (pw, ra, member) = tokio::join!(
        g.add_service_principal_password(&sp.id, &password, deadline()),
        client
            .arm()
            .create_role_assignment(&scope, &ra_name, &reader.id, &sp.id, deadline()),
        g.add_group_member(&group.id, &sp.id, deadline()),
    );
    pw.unwrap();
    ra.unwrap();
    member.unwrap();
    let (sp_posts, member_posts, ra_puts) = (
        emu.count("POST", "/servicePrincipals").await,
        emu.count("POST", "/members/$ref").await,
        emu.count("PUT", "roleAssignments").await,
    );
    eprintln!(
        "propagation 2 s: issuance took {:?}; SP creates {sp_posts}, member adds {member_posts}, \
         role assignment PUTs {ra_puts}",
        start.elapsed()
    );
    assert!(
        member_posts >= 2,
        "the member add waited for the new principal"
    );
    assert_eq!(
        ra_puts, 1,
        "principalType lets ARM accept the new principal at once"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );

    // The propagation wait is bounded by the caller's deadline.
    emu.set(json!({"propagation_delay_ms": 60000})).await;
    let app = g
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .unwrap();
    let start = Instant::now();
    let err = g
        .create_service_principal(&app.app_id, Deadline::after(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(2600),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.status().is_some() || err.is_deadline_exceeded(),
        "{err}"
    );
}

#[tokio::test]
async fn deadlines_bound_slow_services() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    client
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap();
    emu.set(json!({"latency_ms": 3000})).await;
    let start = Instant::now();
    let err = client
        .graph()
        .find_group_by_name(
            "vault-test-group-1",
            Deadline::after(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert!(err.is_deadline_exceeded(), "{err}");
}

#[tokio::test]
async fn new_secrets_and_bad_credentials_are_told_apart() {
    let emu = Emulator::start(&["--credential-delay-ms", "1500"]);
    let client = emu.client();
    let g = client.graph();
    let app = g
        .create_application(
            &NewApplication {
                sign_in_audience: Some("AzureADMyOrg".into()),
                ..NewApplication::dynamic()
            },
            deadline(),
        )
        .await
        .unwrap();
    g.create_service_principal(&app.app_id, deadline())
        .await
        .unwrap();
    let pw = g
        .add_application_password(&app.id, &in_an_hour(), deadline())
        .await
        .unwrap();
    let secret = pw.secret_text.unwrap();

    let err = client
        .verify_client_secret(&app.app_id, &secret, deadline())
        .await
        .unwrap_err();
    assert!(err.is_credential_not_yet_valid(), "{err}");
    let start = Instant::now();
    client
        .wait_for_client_secret(&app.app_id, &secret, Duration::from_millis(200), deadline())
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));

    let err = client
        .verify_client_secret(&uuid::Uuid::new_v4().to_string(), &secret, deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AADSTS700016"), "{err}");

    // Unknown tenant: a hard failure, not "not yet valid".
    let settings = emu.settings_with(&[]);
    let err = verify_client_secret(
        client.http(),
        &settings.cloud,
        &uuid::Uuid::new_v4().to_string(),
        &app.app_id,
        &secret,
        &settings.cloud.graph_scope(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(!err.is_credential_not_yet_valid(), "{err}");
    assert!(
        err.status().is_some_and(|s| (400..500).contains(&s)),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains(secret.expose()));

    // The engine's own credentials are never shown.
    let root_secret = emu.var("AZURE_CLIENT_SECRET");
    let bad = emu.client_with(
        &[("AZURE_CLIENT_SECRET", "wrong-root-secret")],
        fast_policy(),
    );
    let err = bad
        .graph()
        .get_group(&uuid::Uuid::new_v4().to_string(), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let shown = format!("{err} {err:?} {:?} {bad:?} {client:?}", bad.settings());
    assert!(
        !shown.contains("wrong-root-secret") && !shown.contains(&root_secret),
        "{shown}"
    );
}

#[tokio::test]
async fn managed_identity_through_vm_imds() {
    let emu = Emulator::start(&[]);
    let imds = emu.var("IMDS_VM_ENDPOINT");
    let client = emu.client_with(
        &[
            ("AZURE_CLIENT_SECRET", ""),
            ("AZURE_CLIENT_ID", ""),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds),
        ],
        fast_policy(),
    );
    assert_eq!(client.settings().auth_method(), AuthMethod::ManagedIdentity);
    emu.clear_requests().await;
    client
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap();
    client
        .arm()
        .find_role_definition_by_name("", "Reader", deadline())
        .await
        .unwrap();
    client
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap();
    let reqs = emu.requests().await;
    assert_eq!(
        reqs.iter().filter(|r| r.service == "imds").count(),
        2,
        "{reqs:?}"
    );
    assert_eq!(reqs.iter().filter(|r| r.service == "token").count(), 0);

    // IMDS being updated (404/410) and throttled (429) is retried.
    let client = emu.client_with(
        &[
            ("AZURE_CLIENT_SECRET", ""),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds),
        ],
        fast_policy(),
    );
    emu.fault(json!({"service":"imds","status":410,"times":1}))
        .await;
    emu.fault(json!({"service":"imds","status":429,"times":1}))
        .await;
    client
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap();
}

#[tokio::test]
async fn token_source_is_shared_across_clients() {
    let emu = Emulator::start(&[]);
    let first = emu.client();
    let shared = first.token_source().clone();
    let second = AzureClient::new(
        emu.settings_with(&[]),
        AzureClientOptions {
            token_source: Some(Arc::clone(&shared)),
            retry: fast_policy(),
            ..AzureClientOptions::default()
        },
    )
    .unwrap();
    emu.clear_requests().await;
    first
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap();
    second
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap();
    let tokens = emu
        .requests()
        .await
        .into_iter()
        .filter(|r| r.service == "token")
        .count();
    assert_eq!(tokens, 1);
}

fn unsigned_jwt(iss: &str, sub: &str, aud: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = chrono::Utc::now().timestamp();
    format!(
        "{}.{}.c2ln",
        b64(json!({"alg":"RS256","typ":"JWT"})),
        b64(json!({"iss": iss, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + 600}))
    )
}

struct HostTokens(String);

#[async_trait::async_trait]
impl AssertionProvider for HostTokens {
    async fn assertion(&self, _deadline: Deadline) -> Result<SecretString, AzureError> {
        Ok(SecretString::new(self.0.clone()))
    }
}

#[tokio::test]
async fn workload_identity_federation() {
    let emu = Emulator::start(&[]);
    let root = emu.client();
    let g = root.graph();
    let app = g
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .unwrap();
    g.create_service_principal(&app.app_id, deadline())
        .await
        .unwrap();
    // Register a federated credential (not an engine call: raw Graph request).
    let scope = root.settings().cloud.graph_scope();
    let token = root.token_source().token(&scope, deadline()).await.unwrap();
    let resp = root
        .http()
        .post(format!(
            "{}/applications/{}/federatedIdentityCredentials",
            root.settings().cloud.graph_api_base(),
            app.id
        ))
        .bearer_auth(token.token.expose())
        .json(&json!({
            "name": "vault-plugin",
            "issuer": "https://vault.example/v1/identity/oidc/plugins",
            "subject": "plugin-identity:root:secret:azure_abc",
            "audiences": ["api://AzureADTokenExchange"],
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let good = unsigned_jwt(
        "https://vault.example/v1/identity/oidc/plugins",
        "plugin-identity:root:secret:azure_abc",
        "api://AzureADTokenExchange",
    );

    // From a token file (AKS style).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &good).unwrap();
    let client = emu.client_with(
        &[
            ("AZURE_CLIENT_SECRET", ""),
            ("AZURE_CLIENT_ID", &app.app_id),
            ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ],
        fast_policy(),
    );
    assert!(matches!(
        client.settings().auth_method(),
        AuthMethod::WorkloadIdentityFile(_)
    ));
    client
        .token_source()
        .token(&scope, deadline())
        .await
        .unwrap();

    // From the host's identity tokens (callback), as configured with identity_token_audience.
    let mut env = emu.vars.clone();
    env.remove("AZURE_CLIENT_SECRET");
    env.remove("AZURE_CLIENT_ID");
    let settings = AzureSettings::resolve(
        &AzureConfig {
            client_id: app.app_id.clone(),
            identity_token_audience: "api://AzureADTokenExchange".into(),
            ..AzureConfig::default()
        },
        &move |k: &str| env.get(k).cloned(),
    )
    .unwrap();
    assert_eq!(settings.auth_method(), AuthMethod::WorkloadIdentityProvider);
    let with = |jwt: String| {
        AzureClient::new(
            settings.clone(),
            AzureClientOptions {
                assertion_provider: Some(Arc::new(HostTokens(jwt))),
                retry: fast_policy(),
                ..AzureClientOptions::default()
            },
        )
        .unwrap()
    };
    with(good.clone())
        .token_source()
        .token(&scope, deadline())
        .await
        .unwrap();

    // An assertion that matches no federated credential: AADSTS70021, a hard failure.
    let wrong = unsigned_jwt(
        "https://vault.example/v1/identity/oidc/plugins",
        "plugin-identity:root:secret:someone_else",
        "api://AzureADTokenExchange",
    );
    let err = with(wrong.clone())
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AADSTS70021"), "{err}");
    assert!(!err.is_credential_not_yet_valid() && !err.is_retryable());
    assert!(!format!("{err} {err:?}").contains(&wrong));
}

#[tokio::test]
async fn deletes_right_after_create_wait_for_replication() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let g = client.graph();
    emu.set(json!({"read_delay_ms": 1500})).await;
    let app = g
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .unwrap();
    // Without settling, the fresh application looks gone (the hazard)...
    assert_eq!(
        g.delete_application(&app.id, deadline()).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    // ...with it, the rollback really deletes it.
    assert_eq!(
        g.delete_application_settled(&app.id, Duration::from_secs(10), deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(emu.count("DELETE", "/applications/").await >= 3);
    assert_eq!(
        g.permanently_delete(&app.id, Duration::from_secs(10), deadline())
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
}

#[tokio::test]
async fn password_limit_is_classified() {
    let emu = Emulator::start(&[]);
    let client = emu.client();
    let g = client.graph();
    // Graph's default audience (personal accounts too) allows two secrets.
    let app = g
        .create_application(&NewApplication::dynamic(), deadline())
        .await
        .unwrap();
    for _ in 0..2 {
        g.add_application_password(&app.id, &in_an_hour(), deadline())
            .await
            .unwrap();
    }
    let err = g
        .add_application_password(&app.id, &in_an_hour(), deadline())
        .await
        .unwrap_err();
    assert!(err.is_too_many_passwords(), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(emu.count("POST", "addPassword").await, 3, "not retried");
}
