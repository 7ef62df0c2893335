//! What fault, fuzz and attacker runs of the plugin found (issue 8), end to end against a
//! real OpenBao and the emulator: a renewal returns the lease alone; out-of-range durations
//! are 400s that leave the shared plugin process running; `azure_roles` scopes, role names
//! and object ids are checked before any Azure call; a role on the engine's own application
//! is refused at issuance; the plugin exits when its host is killed.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bao_with_emulator, Bao, Emulator};
use serde_json::{json, Value};

/// A raw HTTP request with a body given as text (so that it can hold JSON numbers no JSON
/// library round-trips): (status, body).
fn http(bao: &Bao, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args(["-H", &format!("X-Vault-Token: {}", bao.token)]);
    if let Some(body) = body {
        // Through a file: a 1 MB value does not fit in one command-line argument.
        let file = bao
            .dir
            .path()
            .join(format!("body-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, body).expect("write body");
        cmd.args(["--data-binary", &format!("@{}", file.display())]);
    }
    let out = cmd
        .arg(format!("{}/v1/{path}", bao.addr))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn post(bao: &Bao, path: &str, body: &str) -> (u16, String) {
    http(bao, "POST", path, Some(body))
}

fn sub_scope(emu: &Emulator) -> String {
    format!("/subscriptions/{}", emu.var("AZURE_SUBSCRIPTION_ID"))
}

fn reader_role(emu: &Emulator) -> String {
    json!([{"role_name": "Reader", "scope": sub_scope(emu)}]).to_string()
}

/// The emulator's application with this app id.
fn app_by_app_id(emu: &Emulator, app_id: &str) -> Value {
    emu.state()["applications"]
        .as_array()
        .expect("applications")
        .iter()
        .find(|a| a["appId"] == app_id)
        .cloned()
        .unwrap_or_else(|| panic!("no application {app_id}"))
}

fn password_count(app: &Value) -> usize {
    app["passwordCredentials"].as_array().map_or(0, Vec::len)
}

/// Graph and ARM calls the emulator has seen since its log was last cleared.
fn azure_calls(emu: &Emulator) -> Vec<Value> {
    emu.requests()
        .into_iter()
        .filter(|r| r["service"] == "graph" || r["service"] == "arm")
        .collect()
}

/// A process that has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn wait_until(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn a_renewal_returns_the_lease_alone() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app_object_id, _) = emu.create_app("trust-renew", true);
    bao.write(
        "azure/roles/static",
        &[
            &format!("application_object_id={app_object_id}"),
            "ttl=1h",
            "max_ttl=4h",
        ],
    )
    .ok();
    bao.write(
        "azure/roles/dynamic",
        &[&format!("azure_roles={}", reader_role(&emu)), "ttl=1h"],
    )
    .ok();

    for role in ["static", "dynamic"] {
        let creds = bao.read(&format!("azure/creds/{role}")).ok().json();
        let secret = creds["data"]["client_secret"]
            .as_str()
            .expect("a secret at issue")
            .to_string();
        let lease = creds["lease_id"].as_str().expect("lease id").to_string();

        let renewed = bao
            .cli(&["lease", "renew", "-format=json", "-increment=30m", &lease])
            .ok();
        let body = renewed.json();
        assert_eq!(body["lease_id"], lease.as_str(), "{body}");
        assert!(body["renewable"].is_boolean(), "{body}");
        assert!(
            body["data"].is_null() || body["data"] == json!({}),
            "{role}: a renewal carries no data: {body}"
        );
        assert!(
            !renewed.stdout.contains(&secret) && !renewed.stderr.contains(&secret),
            "{role}: the secret came back on renewal"
        );

        // The API the CLI calls, read raw.
        let (code, raw) = post(
            &bao,
            "sys/leases/renew",
            &json!({"lease_id": lease}).to_string(),
        );
        assert_eq!(code, 200, "{raw}");
        assert!(
            !raw.contains(&secret),
            "{role}: the secret came back: {raw}"
        );
        assert!(!raw.contains("client_secret"), "{role}: {raw}");
        let v: Value = serde_json::from_str(&raw).expect("JSON");
        assert!(v["data"].is_null() || v["data"] == json!({}), "{v}");

        bao.cli(&["lease", "revoke", "-sync", &lease]).ok();
    }
}

#[test]
fn out_of_range_durations_are_400s_and_every_mount_keeps_its_process() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    // A second mount of the same plugin: served by the same process.
    bao.enable("other", "azure");
    let args = emu.config_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bao.write("other/config", &refs).ok();
    bao.write(
        "other/roles/kept",
        &[&format!("azure_roles={}", reader_role(&emu)), "ttl=1h"],
    )
    .ok();
    bao.write(
        "azure/roles/target",
        &[&format!("azure_roles={}", reader_role(&emu)), "ttl=1h"],
    )
    .ok();
    let before_pids = bao.plugin_pids();
    assert_eq!(before_pids.len(), 1, "one process serves both mounts");
    let role_before = bao.read("azure/roles/target").ok().json()["data"].clone();
    let config_before = bao.read("azure/config").ok().json()["data"].clone();

    let values = [
        "1e300",
        "-1e300",
        "18446744073709551616",
        "18446744073709551615",
        "1.8446744073709552e19",
        "\"NaN\"",
        "\"99999999999999999h\"",
        "\"1e300\"",
    ];
    let role_fields = [
        "ttl",
        "max_ttl",
        "explicit_max_ttl",
        "credential_ready_timeout",
    ];
    let config_fields = [
        "root_password_ttl",
        "rotation_period",
        "rotation_window",
        "identity_token_ttl",
    ];
    let targets = role_fields
        .iter()
        .map(|f| ("azure/roles/target", *f))
        .chain(config_fields.iter().map(|f| ("azure/config", *f)));
    for (path, field) in targets {
        for value in values {
            let (code, body) = post(&bao, path, &format!("{{\"{field}\": {value}}}"));
            assert_eq!(code, 400, "{path} {field}={value}: {body}");
            assert!(
                body.contains(&format!("field \\\"{field}\\\"")),
                "{path} {field}={value}: the error names the field: {body}"
            );
        }
    }

    // A body nested deeper than the plugin's JSON parser goes (OpenBao accepts it and passes
    // it on): a 400 that says so, on every kind of path, not a 500 from the existence check.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for path in ["azure/config", "azure/roles/target", "azure/rotate-root"] {
        let (code, body) = post(&bao, path, &format!("{{\"ttl\": {deep}}}"));
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("recursion limit"), "{path}: {body}");
    }

    // The same process, nothing restarted, both mounts serve, and nothing was changed.
    assert_eq!(
        bao.plugin_pids(),
        before_pids,
        "the plugin process was replaced"
    );
    let log = bao.log_text();
    for sign in ["plugin exited", "panicked", "plugin process exited"] {
        assert!(!log.contains(sign), "server log shows {sign:?}");
    }
    assert_eq!(
        bao.read("azure/roles/target").ok().json()["data"],
        role_before
    );
    assert_eq!(bao.read("azure/config").ok().json()["data"], config_before);
    let kept = bao.read("other/roles/kept").ok().json();
    assert_eq!(kept["data"]["ttl"], 3600);
    let creds = bao.read("other/creds/kept").ok().json();
    assert!(creds["data"]["client_id"].is_string());
    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        creds["lease_id"].as_str().expect("lease"),
    ])
    .ok();
    assert_eq!(bao.plugin_pids(), before_pids);
}

#[test]
fn azure_roles_scopes_are_checked_at_write() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let sub = sub_scope(&emu);
    emu.clear_requests();

    let cases = [
        (
            json!([{"role_name": "Reader"}]),
            "azure_roles[0] (role_name 'Reader'): scope is required",
        ),
        (
            json!([{"role_name": "Reader", "scope": sub}, {"role_name": "Contributor", "scope": ""}]),
            "azure_roles[1] (role_name 'Contributor'): scope is required",
        ),
        (
            json!([{"role_name": "Reader", "scope": format!("{sub}/resourceGroups/ex-rg/../../resourceGroups/vault-rg")}]),
            "azure_roles[0] (role_name 'Reader'): scope",
        ),
        (
            json!([{"role_name": "Reader", "scope": format!("{sub}/./resourceGroups/vault-rg")}]),
            "'.' or '..' segment",
        ),
        (
            json!([{"role_name": "Reader", "scope": format!("{sub}//resourceGroups/vault-rg")}]),
            "empty segment",
        ),
        (
            json!([{"role_name": "Reader", "scope": format!("{sub}?api-version=2020-01-01")}]),
            "no query",
        ),
        (
            json!([{"role_name": "Reader", "scope": format!("{sub}/resourceGroups/vault-rg/extra")}]),
            "is not an ARM scope",
        ),
        (
            json!([{"role_id": "not-a-role-id", "scope": sub}]),
            "azure_roles[0] (role_id 'not-a-role-id'): no role found for role_id",
        ),
    ];
    for (roles, message) in cases {
        let (code, body) = post(
            &bao,
            "azure/roles/scoped",
            &json!({ "azure_roles": roles.to_string() }).to_string(),
        );
        assert_eq!(code, 400, "{roles}: {body}");
        assert!(
            body.contains(message),
            "{roles}: expected {message:?}: {body}"
        );
    }
    assert!(
        azure_calls(&emu).is_empty(),
        "bad scopes cost no Azure call: {:#?}",
        azure_calls(&emu)
    );
    let (code, _) = http(&bao, "GET", "azure/roles/scoped", None);
    assert_eq!(code, 404, "nothing stored");

    // Every ARM scope shape is accepted and stored as written.
    let mg = "/providers/Microsoft.Management/managementGroups/vault-mg";
    let rg = format!("{sub}/resourceGroups/vault-rg");
    for scope in [sub.clone(), rg.clone()] {
        let roles = json!([{"role_name": "Reader", "scope": scope}]).to_string();
        bao.write("azure/roles/scoped", &[&format!("azure_roles={roles}")])
            .ok();
        let stored = bao.read("azure/roles/scoped").ok().json();
        assert_eq!(stored["data"]["azure_roles"][0]["scope"], scope.as_str());
    }
    // A well-formed management group scope passes the check and reaches Azure.
    let roles = json!([{"role_name": "Reader", "scope": mg}]).to_string();
    let out = bao.write("azure/roles/mg", &[&format!("azure_roles={roles}")]);
    assert!(
        !out.stderr.contains("is not an ARM scope"),
        "management groups are ARM scopes: {out:?}"
    );
}

#[test]
fn role_names_are_found_case_insensitively() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let sub = sub_scope(&emu);
    let roles = json!([{"role_name": "reader", "scope": sub}]).to_string();
    bao.write("azure/roles/lower", &[&format!("azure_roles={roles}")])
        .ok();
    let stored = bao.read("azure/roles/lower").ok().json();
    assert_eq!(stored["data"]["azure_roles"][0]["role_name"], "Reader");
    assert!(stored["data"]["azure_roles"][0]["role_id"]
        .as_str()
        .is_some_and(|id| id.ends_with("acdd72a7-3385-48ef-bd42-f606fba81ae7")));

    let roles = json!([{"role_name": "No Such Role", "scope": sub}]).to_string();
    let (code, body) = post(
        &bao,
        "azure/roles/none",
        &json!({ "azure_roles": roles }).to_string(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("no role found for role_name: 'No Such Role'") && body.contains(&sub),
        "names the role and the scope: {body}"
    );
}

#[test]
fn ids_and_field_combinations_are_checked_before_any_azure_call() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (existing, _) = emu.create_app("trust-existing", true);
    emu.clear_requests();

    let huge = "a".repeat(1 << 20);
    let cases = [
        (
            json!({"application_object_id": huge}),
            "invalid application_object_id",
        ),
        (
            json!({"application_object_id": "not-a-guid"}),
            "invalid application_object_id 'not-a-guid'",
        ),
        (
            json!({"application_object_id": existing, "permanently_delete": true}),
            "permanently_delete must be false if application_object_id is provided",
        ),
        (
            json!({"azure_groups": json!([{"object_id": "not-a-guid"}]).to_string()}),
            "azure_groups[0]: no group found for object_id: 'not-a-guid'",
        ),
        (
            json!({"azure_groups": json!([{"group_name": "g"}, {"object_id": huge}]).to_string()}),
            "azure_groups[1]",
        ),
        (
            json!({"azure_roles": "asdf"}),
            "error parsing azure_roles 'asdf'",
        ),
        (
            json!({"azure_groups": "asdf"}),
            "error parsing azure_groups 'asdf'",
        ),
        (
            json!({"ttl": 10}),
            "either azure_roles, azure_groups or application_object_id must be provided",
        ),
    ];
    for (body, message) in cases {
        let (code, answer) = post(&bao, "azure/roles/checked", &body.to_string());
        let shown: String = body.to_string().chars().take(120).collect();
        assert_eq!(code, 400, "{shown}: {answer:.300}");
        assert!(
            answer.contains(message),
            "{shown}: expected {message:?}: {answer:.300}"
        );
        assert!(answer.len() < 4096, "the value is not echoed whole");
    }
    // The engine's own ids go into Azure URLs and filters: plain identifiers only.
    let config_before = bao.read("azure/config").ok().json()["data"].clone();
    for (field, value) in [
        ("client_id", huge.as_str()),
        (
            "subscription_id",
            "../../providers/Microsoft.Management/managementGroups/root",
        ),
        ("tenant_id", "tenant/../other"),
    ] {
        let (code, answer) = post(&bao, "azure/config", &json!({ field: value }).to_string());
        assert_eq!(code, 400, "{field}: {answer:.300}");
        assert!(
            answer.contains(&format!("invalid {field}")),
            "{field}: {answer:.300}"
        );
        assert!(answer.len() < 4096, "the value is not echoed whole");
    }
    assert_eq!(bao.read("azure/config").ok().json()["data"], config_before);
    assert!(
        azure_calls(&emu).is_empty(),
        "refused before any Azure call: {:#?}",
        azure_calls(&emu)
    );
}

#[test]
fn a_role_on_the_engines_own_application_is_refused_at_issuance() {
    let emu = Emulator::start(&[]);
    let env = emu.cloud_env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bao = Bao::persistent_with_env(&pairs);
    bao.register("azure");
    bao.enable("azure", "azure");
    let args = emu.config_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bao.write("azure/config", &refs).ok();
    let base = bao.mount_storage_base("azure/");
    let root_app_id = emu.var("AZURE_CLIENT_ID");
    let root = app_by_app_id(&emu, &root_app_id);
    let root_object_id = root["id"].as_str().expect("root object id").to_string();
    let passwords_before = password_count(&root);

    // Roles in the Go engine's layout, as carried over from its storage (or written before
    // client_id changed): one naming the app by both ids, one by its object id only.
    let role = |application_id: &str| {
        json!({
            "credential_type": 0, "azure_roles": null, "azure_groups": null,
            "application_id": application_id, "application_object_id": root_object_id,
            "sign_in_audience": "", "tags": null, "ttl": 3_600_000_000_000i64, "max_ttl": 0,
            "explicit_max_ttl": 0, "permanently_delete": false, "persist_app": false,
            "role_assignment_ids": null, "group_membership_ids": null, "sp_object_id": "",
            "managed_application_object_id": ""
        })
    };
    for (name, application_id) in [
        ("both-ids", root_app_id.as_str()),
        ("object-id-only", "00000000-0000-4000-8000-0000000000aa"),
    ] {
        bao.write(
            &format!("sys/raw/{base}/roles/{name}"),
            &[&format!("value={}", role(application_id))],
        )
        .ok();
        let out = bao.read(&format!("azure/creds/{name}"));
        assert_ne!(
            out.code, 0,
            "{name}: issued on the engine's own app: {out:?}"
        );
        assert!(out.stderr.contains("Code: 400"), "{name}: {out:?}");
        assert!(
            out.stderr
                .contains("is the application this engine itself signs in with"),
            "{name}: {out:?}"
        );
    }
    assert_eq!(
        password_count(&app_by_app_id(&emu, &root_app_id)),
        passwords_before,
        "no password was added to the engine's own application"
    );

    // A dynamic role carried over without a scope (the Go engine stored "") issues nothing.
    let unscoped = json!({
        "credential_type": 0,
        "azure_roles": [{"role_name": "Reader", "scope": "",
            "role_id": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", emu.var("AZURE_SUBSCRIPTION_ID"))}],
        "azure_groups": null, "application_id": "", "application_object_id": "",
        "sign_in_audience": "", "tags": null, "ttl": 3_600_000_000_000i64, "max_ttl": 0,
        "explicit_max_ttl": 0, "permanently_delete": false, "persist_app": false,
        "role_assignment_ids": null, "group_membership_ids": null, "sp_object_id": "",
        "managed_application_object_id": ""
    });
    bao.write(
        &format!("sys/raw/{base}/roles/unscoped"),
        &[&format!("value={unscoped}")],
    )
    .ok();
    emu.clear_requests();
    let out = bao.read("azure/creds/unscoped");
    assert!(
        out.stderr.contains("Code: 400") && out.stderr.contains("scope is required"),
        "{out:?}"
    );
    assert!(azure_calls(&emu).is_empty(), "{:#?}", azure_calls(&emu));
    assert!(emu.vault_apps().is_empty());

    // A role on another application still issues.
    let (other, _) = emu.create_app("trust-other", true);
    bao.write(
        "azure/roles/other",
        &[&format!("application_object_id={other}"), "ttl=1h"],
    )
    .ok();
    let creds = bao.read("azure/creds/other").ok().json();
    bao.cli(&[
        "lease",
        "revoke",
        "-sync",
        creds["lease_id"].as_str().expect("lease"),
    ])
    .ok();
}

#[test]
fn the_plugin_exits_when_its_host_is_killed() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    bao.write(
        "azure/roles/r",
        &[&format!("azure_roles={}", reader_role(&emu))],
    )
    .ok();
    bao.read("azure/roles/r").ok();
    let pids = bao.plugin_pids();
    assert!(!pids.is_empty(), "the plugin runs");
    let server = bao.server_pid().expect("server pid");
    Command::new("kill")
        .args(["-9", &server.to_string()])
        .status()
        .expect("kill");
    // Idle: it has nothing to finish, so it exits within a few seconds of its host.
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(20), || pids.iter().all(|p| exited(*p)));
    eprintln!(
        "plugin gone {:?} after its host was killed",
        killed.elapsed()
    );
    assert!(
        gone,
        "plugin processes {pids:?} still run 20 s after their host was killed"
    );
}
