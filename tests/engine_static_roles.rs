//! Static roles through a real OpenBao with the emulator as Azure: every path, field and
//! error, import, static credentials and access tokens, rotate-role, background rotation,
//! seamless rotation (overlap, then only the new secret), keeping replaced secrets until they
//! expire, rapid and concurrent rotations across roles and mounts, a plugin killed in the middle
//! of a rotation, and metadata on dynamic roles.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{app_passwords, bao_with_emulator, static_password_ids, Bao, CliOutput, Emulator};
use serde_json::{json, Value};

fn end_of(emu: &Emulator, object_id: &str, key: &str) -> DateTime<Utc> {
    let p = app_passwords(emu, object_id)
        .into_iter()
        .find(|p| p["keyId"] == key)
        .unwrap_or_else(|| panic!("no password {key}"));
    DateTime::parse_from_rfc3339(p["endDateTime"].as_str().expect("endDateTime"))
        .expect("time")
        .with_timezone(&Utc)
}

/// Adds a password to an application as the root identity; returns (key id, secret).
fn foreign_password(emu: &Emulator, object_id: &str) -> (String, String) {
    let p = emu.graph_post(
        &format!("applications/{object_id}/addPassword"),
        &json!({"passwordCredential": {"displayName": "someone-else"}}),
    );
    (
        p["keyId"].as_str().expect("keyId").to_string(),
        p["secretText"].as_str().expect("secretText").to_string(),
    )
}

fn await_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

fn fails_with(out: CliOutput, text: &str) {
    assert_ne!(
        out.code, 0,
        "expected an error containing {text:?}: {out:?}"
    );
    assert!(
        out.stderr.contains("Code: 400"),
        "expected a 400: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(text),
        "expected {text:?} in: {}",
        out.stderr
    );
}

fn data(out: CliOutput) -> Value {
    out.ok().json()["data"].clone()
}

fn creds(bao: &Bao, mount: &str, name: &str) -> Value {
    data(bao.read(&format!("{mount}/static-creds/{name}")))
}

fn rotate(bao: &Bao, mount: &str, name: &str) -> CliOutput {
    bao.cli(&[
        "write",
        "-f",
        "-format=json",
        &format!("{mount}/rotate-role/{name}"),
    ])
}

fn root_app_object_id(emu: &Emulator) -> String {
    let client_id = emu.var("AZURE_CLIENT_ID");
    emu.state()["applications"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["appId"] == client_id.as_str())
        .and_then(|a| a["id"].as_str().map(str::to_string))
        .expect("root application")
}

fn graph_scope(emu: &Emulator) -> String {
    format!("scope={}/.default", emu.var("AZURE_GRAPH_ENDPOINT"))
}

#[test]
fn static_role_paths_fields_and_errors() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app, app_id) = emu.create_app("static-app", true);
    let (other_app, _) = emu.create_app("static-other", true);
    let (foreign_key, foreign_secret) = foreign_password(&emu, &app);
    let app_arg = format!("application_object_id={app}");

    // Validation: nothing is stored, nothing is made.
    fails_with(
        bao.write("azure/static-roles/r", &["rotation_period=1h"]),
        "application_object_id",
    );
    fails_with(
        bao.write(
            "azure/static-roles/r",
            &["application_object_id=6b3a3b1e-0000-4000-8000-00000000dead"],
        ),
        "no application has this object id",
    );
    fails_with(
        bao.write(
            "azure/static-roles/r",
            &[&format!(
                "application_object_id={}",
                root_app_object_id(&emu)
            )],
        ),
        "engine itself signs in with",
    );
    fails_with(
        bao.write("azure/static-roles/r", &[&app_arg, "rotation_period=5"]),
        "rotation_period",
    );
    fails_with(
        bao.write(
            "azure/static-roles/r",
            &[&app_arg, "rotation_period=60", "ttl=70"],
        ),
        "ttl",
    );
    fails_with(
        bao.write(
            "azure/static-roles/r",
            &[&app_arg, "rotation_period=60", "rotation_grace_period=31"],
        ),
        "rotation_grace_period",
    );
    fails_with(
        bao.write(
            "azure/static-roles/r",
            &[&app_arg, "rotation_grace_period=soon"],
        ),
        "rotation_grace_period",
    );
    fails_with(
        bao.write("azure/static-roles/r", &[&app_arg, "metadata=novalue"]),
        "metadata",
    );
    assert!(static_password_ids(&emu, &app).is_empty());
    assert!(bao.read("azure/static-roles/r").stdout.trim().is_empty());

    // Create with the 1.21 name of the period and metadata as k=v pairs.
    let before = Utc::now();
    bao.write(
        "azure/static-roles/r",
        &[
            &app_arg,
            "ttl=8760h",
            "metadata=team=eng",
            "metadata=env=dev",
        ],
    )
    .ok();
    let role = data(bao.read("azure/static-roles/r"));
    assert_eq!(role["application_object_id"], app.as_str());
    assert_eq!(role["rotation_period"], 31_536_000);
    assert_eq!(role["ttl"], 31_536_000);
    assert_eq!(role["metadata"], json!({"team": "eng", "env": "dev"}));
    assert_eq!(role["seamless_rotation"], true);
    assert_eq!(role["rotation_grace_period"], 300);
    assert_eq!(role["defer_initial_creds"], false);
    assert_eq!(role["keep_previous_until_expiry"], false);
    let key = role["secret_id"].as_str().expect("secret_id").to_string();
    assert!(role.get("client_secret").is_none());
    assert_eq!(static_password_ids(&emu, &app), vec![key.clone()]);
    // The password ends at the rotation period plus the grace, not years out.
    let end = end_of(&emu, &app, &key);
    let want = before + chrono::Duration::seconds(31_536_000 + 300);
    assert!(
        (end - want).num_seconds().abs() < 120,
        "end {end}, want about {want}"
    );

    let list = bao
        .cli(&["list", "-format=json", "azure/static-roles"])
        .ok()
        .json();
    assert_eq!(list, json!(["r"]));

    // static-creds: no lease, the role's metadata over the request's.
    let out = bao
        .cli(&[
            "read",
            "-format=json",
            "azure/static-creds/r",
            "metadata=team=other",
            "metadata=ticket=42",
        ])
        .ok()
        .json();
    assert_eq!(out["lease_id"], "");
    assert_eq!(out["lease_duration"], 0);
    let c = &out["data"];
    assert_eq!(c["client_id"], app_id.as_str());
    assert_eq!(c["secret_id"], key.as_str());
    assert_eq!(
        c["metadata"],
        json!({"team": "eng", "env": "dev", "ticket": "42"})
    );
    assert!(c["expiration"].as_str().is_some());
    let secret = c["client_secret"].as_str().expect("secret").to_string();
    assert_eq!(emu.token_status(&app_id, &secret), 200);
    // A second read returns the same secret.
    assert_eq!(creds(&bao, "azure", "r")["client_secret"], secret.as_str());
    assert!(!bao.read("azure/static-roles/r").stdout.contains(&secret));

    // The token endpoint: Entra ID's answer, no lease.
    let out = bao
        .write("azure/static-creds/r/token", &[&graph_scope(&emu)])
        .ok()
        .json();
    assert_eq!(out["lease_id"], "");
    let t = &out["data"];
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_u64().is_some_and(|n| n > 0));
    assert!(t["access_token"]
        .as_str()
        .is_some_and(|s| s.split('.').count() == 3));
    fails_with(
        bao.cli(&["write", "-f", "azure/static-creds/r/token"]),
        "scope",
    );
    fails_with(
        bao.write("azure/static-creds/r/token", &["scope=not-a-scope"]),
        "AADSTS70011",
    );

    // Updates: metadata as JSON; the application cannot change.
    bao.write("azure/static-roles/r", &[r#"metadata={"a":"b"}"#])
        .ok();
    assert_eq!(
        data(bao.read("azure/static-roles/r"))["metadata"],
        json!({"a": "b"})
    );
    fails_with(
        bao.write(
            "azure/static-roles/r",
            &[&format!("application_object_id={other_app}")],
        ),
        "cannot be changed",
    );
    assert_eq!(
        data(bao.read("azure/static-roles/r"))["secret_id"],
        key.as_str()
    );

    // Deferred creds (and the 1.21 alias): no secret until the first read; the token
    // endpoint is a 400 meanwhile.
    let other_arg = format!("application_object_id={other_app}");
    bao.write(
        "azure/static-roles/d",
        &[&other_arg, "defer_initial_creds=true"],
    )
    .ok();
    bao.write(
        "azure/static-roles/d2",
        &[&other_arg, "skip_import_rotation=true"],
    )
    .ok();
    assert_eq!(
        data(bao.read("azure/static-roles/d2"))["defer_initial_creds"],
        true
    );
    let d = data(bao.read("azure/static-roles/d"));
    assert_eq!(d["defer_initial_creds"], true);
    assert_eq!(d["secret_id"], Value::Null);
    assert!(static_password_ids(&emu, &other_app).is_empty());
    fails_with(
        bao.write("azure/static-creds/d/token", &[&graph_scope(&emu)]),
        "no usable secret yet",
    );
    let first = creds(&bao, "azure", "d");
    assert_eq!(
        static_password_ids(&emu, &other_app),
        vec![first["secret_id"].as_str().unwrap().to_string()]
    );
    bao.write("azure/static-creds/d/token", &[&graph_scope(&emu)])
        .ok();

    // Unknown roles.
    fails_with(bao.read("azure/static-creds/ghost"), "does not exist");
    fails_with(rotate(&bao, "azure", "ghost"), "does not exist");
    fails_with(
        bao.write("azure/static-creds/ghost/token", &[&graph_scope(&emu)]),
        "does not exist",
    );

    // rotate-role: a new secret, the old one removed after the grace (still there now).
    let rotated = data(rotate(&bao, "azure", "r"));
    let new_key = rotated["secret_id"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!(creds(&bao, "azure", "r")["secret_id"], new_key.as_str());
    assert_eq!(
        data(bao.read("azure/static-roles/r"))["previous_secret_ids"],
        json!([key])
    );

    // Delete: only the engine's passwords go; the foreign one stays and works.
    let out = bao.cli(&["delete", "-format=json", "azure/static-roles/r"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(static_password_ids(&emu, &app).is_empty());
    let left: Vec<Value> = app_passwords(&emu, &app);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["keyId"], foreign_key.as_str());
    assert_eq!(emu.token_status(&app_id, &foreign_secret), 200);
    assert!(bao.read("azure/static-roles/r").stdout.trim().is_empty());
    // Through the API the delete says what it removed.
    bao.write("azure/static-roles/r2", &[&app_arg]).ok();
    let k2 = data(bao.read("azure/static-roles/r2"))["secret_id"].clone();
    let resp = Command::new("curl")
        .args([
            "-s",
            "-X",
            "DELETE",
            "-H",
            &format!("X-Vault-Token: {}", bao.token),
        ])
        .arg(format!("{}/v1/azure/static-roles/r2", bao.addr))
        .output()
        .expect("curl");
    let resp: Value = serde_json::from_slice(&resp.stdout).expect("delete JSON");
    assert_eq!(resp["data"]["removed_secret_ids"], json!([k2]));
    assert!(resp["warnings"][0]
        .as_str()
        .unwrap()
        .contains("other passwords of the application were left in place"));
    assert_eq!(app_passwords(&emu, &app).len(), 1);

    // Config defaults for new roles.
    bao.write(
        "azure/config",
        &["seamless_rotation=false", "rotation_grace_period=-1"],
    )
    .ok();
    let config = data(bao.read("azure/config"));
    assert_eq!(config["seamless_rotation"], false);
    assert_eq!(config["rotation_grace_period"], -1);
    bao.write("azure/static-roles/r3", &[&app_arg]).ok();
    let r3 = data(bao.read("azure/static-roles/r3"));
    assert_eq!(r3["seamless_rotation"], false);
    assert_eq!(r3["rotation_grace_period"], -1);
    fails_with(
        bao.write("azure/config", &["rotation_grace_period=-7"]),
        "rotation_grace_period",
    );
}

#[test]
fn import_proves_the_secret_first() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app, app_id) = emu.create_app("import-app", true);
    let (key, secret) = foreign_password(&emu, &app);
    let app_arg = format!("application_object_id={app}");
    let key_arg = format!("secret_id={key}");

    fails_with(
        bao.write(
            "azure/static-roles/i/import",
            &[
                &app_arg,
                &key_arg,
                "client_secret=wrong",
                "skip_import_rotation=true",
            ],
        ),
        "client_secret does not obtain a token",
    );
    fails_with(
        bao.write(
            "azure/static-roles/i/import",
            &[
                &app_arg,
                "secret_id=00000000-0000-4000-8000-000000000000",
                "skip_import_rotation=true",
            ],
        ),
        "is not a password of application",
    );
    fails_with(
        bao.write("azure/static-roles/i/import", &[&app_arg]),
        "secret_id",
    );
    assert!(bao.read("azure/static-roles/i").stdout.trim().is_empty());

    // Adopted as is.
    let secret_arg = format!("client_secret={secret}");
    bao.write(
        "azure/static-roles/i/import",
        &[
            &app_arg,
            &key_arg,
            &secret_arg,
            "skip_import_rotation=true",
            "rotation_period=720h",
            "metadata=team=eng",
        ],
    )
    .ok();
    let role_out = bao.read("azure/static-roles/i").ok();
    assert!(
        !role_out.stdout.contains(&secret),
        "a role read shows the imported secret"
    );
    let role = role_out.json()["data"].clone();
    assert_eq!(role["secret_id"], key.as_str());
    assert_eq!(role["metadata"], json!({"team": "eng"}));
    let c = creds(&bao, "azure", "i");
    assert_eq!(c["client_secret"], secret.as_str());
    assert_eq!(c["client_id"], app_id.as_str());
    assert!(
        static_password_ids(&emu, &app).is_empty(),
        "import made no password"
    );
    fails_with(
        bao.write(
            "azure/static-roles/i/import",
            &[&app_arg, &key_arg, &secret_arg],
        ),
        "already exists",
    );
    // Deleting leaves the imported password alone.
    bao.cli(&["delete", "azure/static-roles/i"]).ok();
    assert_eq!(app_passwords(&emu, &app).len(), 1);
    assert_eq!(emu.token_status(&app_id, &secret), 200);

    // Imported without a secret: reads are refused until a rotation.
    bao.write(
        "azure/static-roles/j/import",
        &[&app_arg, &key_arg, "skip_import_rotation=true"],
    )
    .ok();
    fails_with(bao.read("azure/static-creds/j"), "no usable secret yet");
    fails_with(
        bao.write("azure/static-creds/j/token", &[&graph_scope(&emu)]),
        "no usable secret yet",
    );
    bao.cli(&["delete", "azure/static-roles/j"]).ok();

    // Rotated on import (the default), without overlap: the imported password is replaced
    // and removed; the new one is the engine's.
    bao.write(
        "azure/static-roles/k/import",
        &[&app_arg, &key_arg, &secret_arg, "seamless_rotation=false"],
    )
    .ok();
    let c = creds(&bao, "azure", "k");
    assert_ne!(c["secret_id"], key.as_str());
    assert_eq!(
        static_password_ids(&emu, &app),
        vec![c["secret_id"].as_str().unwrap().to_string()]
    );
    assert_eq!(app_passwords(&emu, &app).len(), 1);
    assert_eq!(emu.token_status(&app_id, &secret), 401);
}

#[test]
fn seamless_rotation_overlaps_then_only_the_new_secret_works() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app, app_id) = emu.create_app("seamless-app", true);
    bao.write(
        "azure/static-roles/s",
        &[
            &format!("application_object_id={app}"),
            "rotation_period=1h",
            "seamless_rotation=true",
            "rotation_grace_period=15s",
        ],
    )
    .ok();
    let old = creds(&bao, "azure", "s");
    let old_secret = old["client_secret"].as_str().unwrap().to_string();
    rotate(&bao, "azure", "s").ok();
    let new = creds(&bao, "azure", "s");
    let new_secret = new["client_secret"].as_str().unwrap().to_string();
    assert_ne!(old_secret, new_secret);
    // Inside the grace window both work.
    assert_eq!(emu.token_status(&app_id, &old_secret), 200);
    assert_eq!(emu.token_status(&app_id, &new_secret), 200);
    assert_eq!(static_password_ids(&emu, &app).len(), 2);
    // After it, only the new one.
    await_until(
        "the replaced secret stops working",
        Duration::from_secs(90),
        || emu.token_status(&app_id, &old_secret) == 401,
    );
    assert_eq!(emu.token_status(&app_id, &new_secret), 200);
    assert_eq!(
        static_password_ids(&emu, &app),
        vec![new["secret_id"].as_str().unwrap().to_string()]
    );

    // Without seamless rotation the old secret is gone when rotate-role returns.
    let (app2, app2_id) = emu.create_app("plain-app", true);
    bao.write(
        "azure/static-roles/p",
        &[
            &format!("application_object_id={app2}"),
            "seamless_rotation=false",
        ],
    )
    .ok();
    let old = creds(&bao, "azure", "p")["client_secret"]
        .as_str()
        .unwrap()
        .to_string();
    rotate(&bao, "azure", "p").ok();
    assert_eq!(emu.token_status(&app2_id, &old), 401);
    assert_eq!(static_password_ids(&emu, &app2).len(), 1);
}

#[test]
fn replaced_secrets_can_be_left_to_expire() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app, app_id) = emu.create_app("keep-app", true);
    let start = Utc::now();
    bao.write(
        "azure/static-roles/keep",
        &[
            &format!("application_object_id={app}"),
            "rotation_period=1h",
            "rotation_grace_period=10s",
            "keep_previous_until_expiry=true",
        ],
    )
    .ok();
    let first = creds(&bao, "azure", "keep");
    let first_secret = first["client_secret"].as_str().unwrap().to_string();
    let first_key = first["secret_id"].as_str().unwrap().to_string();
    rotate(&bao, "azure", "keep").ok();
    rotate(&bao, "azure", "keep").ok();
    let current = creds(&bao, "azure", "keep");
    let current_secret = current["client_secret"].as_str().unwrap().to_string();
    assert_eq!(static_password_ids(&emu, &app).len(), 3);
    // Past the grace period the replaced secrets are still there and still work.
    std::thread::sleep(Duration::from_secs(12));
    bao.read("azure/static-roles/keep").ok();
    assert_eq!(static_password_ids(&emu, &app).len(), 3);
    assert_eq!(emu.token_status(&app_id, &first_secret), 200);
    // Each ends at its own rotation period plus grace: an hour and ten seconds out.
    let end = end_of(&emu, &app, &first_key);
    let want = start + chrono::Duration::seconds(3600 + 60);
    assert!(
        (end - want).num_seconds().abs() < 60,
        "end {end}, want about {want}"
    );
    // On the emulator's password clock, past its end it no longer works, the current one
    // (made later) still does until its own end.
    let past_first = (end - Utc::now()).num_seconds() + 2;
    emu.settings(json!({"password_clock_offset_secs": past_first}));
    let current_end = end_of(&emu, &app, current["secret_id"].as_str().unwrap());
    assert_eq!(emu.token_status(&app_id, &first_secret), 401);
    if current_end > end + chrono::Duration::seconds(3) {
        assert_eq!(emu.token_status(&app_id, &current_secret), 200);
    }
    emu.settings(json!({"password_clock_offset_secs": 0}));
}

#[test]
fn background_rotation_with_a_short_period() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app, app_id) = emu.create_app("bg-app", true);
    bao.write(
        "azure/static-roles/bg",
        &[
            &format!("application_object_id={app}"),
            "rotation_period=15s",
            "seamless_rotation=false",
        ],
    )
    .ok();
    let role = data(bao.read("azure/static-roles/bg"));
    assert!(role["next_rotation_time"].as_str().is_some());
    let mut seen = vec![creds(&bao, "azure", "bg")["secret_id"]
        .as_str()
        .unwrap()
        .to_string()];
    for _ in 0..2 {
        await_until("a background rotation", Duration::from_secs(120), || {
            let now = creds(&bao, "azure", "bg")["secret_id"]
                .as_str()
                .unwrap()
                .to_string();
            if seen.contains(&now) {
                return false;
            }
            seen.push(now);
            true
        });
    }
    let c = creds(&bao, "azure", "bg");
    assert_eq!(
        emu.token_status(&app_id, c["client_secret"].as_str().unwrap()),
        200
    );
    await_until(
        "only the current password is left",
        Duration::from_secs(60),
        || {
            let c = creds(&bao, "azure", "bg");
            static_password_ids(&emu, &app) == vec![c["secret_id"].as_str().unwrap().to_string()]
        },
    );
}

#[test]
fn rapid_rotations_leave_exactly_the_expected_passwords() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    // A second mount of the same plugin process.
    bao.enable("azure2", "azure");
    let args = emu.config_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bao.write("azure2/config", &refs).ok();
    let (app, app_id) = emu.create_app("rapid-app", true);
    let (foreign_key, foreign_secret) = foreign_password(&emu, &app);
    let app_arg = format!("application_object_id={app}");
    bao.write(
        "azure/static-roles/a",
        &[&app_arg, "seamless_rotation=false"],
    )
    .ok();
    bao.write(
        "azure2/static-roles/b",
        &[&app_arg, "seamless_rotation=false"],
    )
    .ok();
    bao.write(
        "azure/static-roles/g",
        &[
            &app_arg,
            "seamless_rotation=true",
            "rotation_grace_period=1h",
        ],
    )
    .ok();

    // 20 sequential rotations of one role.
    for _ in 0..20 {
        rotate(&bao, "azure", "a").ok();
    }
    // 20 concurrent ones, spread over three roles on two mounts, all on one application.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (mount, role) = match i % 3 {
                    0 => ("azure", "a"),
                    1 => ("azure2", "b"),
                    _ => ("azure", "g"),
                };
                let bao = &bao;
                s.spawn(move || rotate(bao, mount, role))
            })
            .collect();
        for h in handles {
            h.join().expect("thread").ok();
        }
    });

    let a = creds(&bao, "azure", "a");
    let b = creds(&bao, "azure2", "b");
    let g = creds(&bao, "azure", "g");
    let g_role = data(bao.read("azure/static-roles/g"));
    // a and b: only their current secret; g: its current one plus the one it just replaced.
    let mut want: Vec<String> = [&a, &b, &g]
        .iter()
        .map(|c| c["secret_id"].as_str().unwrap().to_string())
        .chain(
            g_role["previous_secret_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        )
        .collect();
    want.sort();
    assert_eq!(g_role["previous_secret_ids"].as_array().unwrap().len(), 1);
    await_until(
        "exactly the expected passwords",
        Duration::from_secs(30),
        || static_password_ids(&emu, &app) == want,
    );
    let all = app_passwords(&emu, &app);
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.iter().any(|p| p["keyId"] == foreign_key.as_str()));
    for c in [&a, &b, &g] {
        assert_eq!(
            emu.token_status(&app_id, c["client_secret"].as_str().unwrap()),
            200
        );
    }
    assert_eq!(emu.token_status(&app_id, &foreign_secret), 200);
}

#[test]
fn plugin_killed_mid_rotation_leaves_nothing_behind() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app, app_id) = emu.create_app("crash-app", true);
    bao.write(
        "azure/static-roles/c",
        &[
            &format!("application_object_id={app}"),
            "seamless_rotation=false",
        ],
    )
    .ok();
    let before = creds(&bao, "azure", "c");
    // The password gets added, then the proof that it works stalls: the plugin dies there.
    emu.add_fault(json!({"service": "token", "delay_ms": 8000, "times": 1}));
    let rotated = std::thread::scope(|s| {
        let rotation = s.spawn(|| rotate(&bao, "azure", "c"));
        let faults_used = || {
            let out = Command::new("curl")
                .args(["-s", &format!("{}/faults", emu.var("EMULATOR_ADMIN"))])
                .output()
                .expect("curl");
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            v["faults"][0]["times"] == 0
        };
        await_until(
            "the rotation's token request is in flight",
            Duration::from_secs(30),
            faults_used,
        );
        assert_eq!(
            static_password_ids(&emu, &app).len(),
            2,
            "the new password exists"
        );
        for pid in bao.plugin_pids() {
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("kill");
        }
        rotation.join().expect("thread")
    });
    emu.clear_faults();
    // When the host sees the plugin's death before the call's error, it restarts the plugin
    // and sends the request once more (OpenBao's plugin backend wrapper does so on "plugin
    // shutdown"); otherwise the rotation fails and the role keeps its secret. A failed one is
    // sent again here at once, so both orders end the same way: a second rotation runs while
    // the interrupted attempt's password is still in Azure.
    let current = if rotated.code == 0 {
        eprintln!("the host sent the interrupted rotation again and it completed");
        data(rotated)["secret_id"].clone()
    } else {
        eprintln!("the interrupted rotation failed: {}", rotated.stderr);
        assert_eq!(creds(&bao, "azure", "c")["secret_id"], before["secret_id"]);
        data(rotate(&bao, "azure", "c"))["secret_id"].clone()
    };
    let after = creds(&bao, "azure", "c");
    assert_eq!(after["secret_id"], current);
    assert_ne!(after["secret_id"], before["secret_id"]);
    // The interrupted attempt's password goes at the next periodic tick; the old one went
    // with the rotation (seamless_rotation=false).
    await_until(
        "only the current password is left",
        Duration::from_secs(180),
        || static_password_ids(&emu, &app) == vec![current.as_str().unwrap().to_string()],
    );
    assert_eq!(
        emu.token_status(&app_id, after["client_secret"].as_str().unwrap()),
        200
    );
    // And rotation works again.
    rotate(&bao, "azure", "c").ok();
    assert_eq!(static_password_ids(&emu, &app).len(), 1);
}

#[test]
fn dynamic_roles_carry_metadata() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let (app, _) = emu.create_app("meta-app", true);
    bao.write(
        "azure/roles/dyn",
        &[
            &format!("application_object_id={app}"),
            "metadata=team=eng",
            "metadata=env=dev",
        ],
    )
    .ok();
    assert_eq!(
        data(bao.read("azure/roles/dyn"))["metadata"],
        json!({"team": "eng", "env": "dev"})
    );
    let out = bao
        .cli(&[
            "read",
            "-format=json",
            "azure/creds/dyn",
            "metadata=team=x",
            "metadata=req=1",
        ])
        .ok()
        .json();
    assert_eq!(
        out["data"]["metadata"],
        json!({"team": "eng", "env": "dev", "req": "1"})
    );
    assert!(!out["lease_id"].as_str().unwrap_or("").is_empty());
    bao.cli(&["lease", "revoke", "-prefix", "azure/creds/dyn"])
        .ok();
}
