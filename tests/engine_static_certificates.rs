//! Certificate static roles through a real OpenBao with the emulator as Azure: a static role
//! with `credential_type=certificate` hands out the same certificate and private key on
//! every `static-creds` read, the key obtains a token at once (proven with a client
//! assertion this test signs itself), `rotate-role` makes a new key (the replaced one removed
//! at once without seamless rotation, kept for the grace with it), the token endpoint signs
//! with the current key, and deleting the role removes only the engine's key credentials,
//! never the application's other certificate or password. The server runs at trace level and
//! its log is scanned for the private keys.

mod common;

use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use common::certs::{
    app_state, client_assertion, make_certificate, pem_body_line, pem_der, token_url,
};
use common::{Bao, CliOutput, Emulator};
use serde_json::{json, Value};

/// True when the emulator hands out a Graph token for an assertion this test signs with
/// `key_pem` of `cert_pem`.
fn certificate_works(emu: &Emulator, client_id: &str, cert_pem: &str, key_pem: &str) -> bool {
    let assertion = client_assertion(cert_pem, key_pem, client_id, &token_url(emu));
    let out = Command::new("curl")
        .args(["-s", "--cacert", &emu.var("SSL_CERT_FILE"), &token_url(emu)])
        .args(["--data-urlencode", "grant_type=client_credentials"])
        .args(["--data-urlencode", &format!("client_id={client_id}")])
        .args([
            "--data-urlencode",
            "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ])
        .args(["--data-urlencode", &format!("client_assertion={assertion}")])
        .args([
            "--data-urlencode",
            &format!("scope={}/.default", emu.var("AZURE_GRAPH_ENDPOINT")),
        ])
        .output()
        .expect("curl");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("token JSON");
    answer["access_token"].is_string()
}

/// HTTP status of a client-credentials token request with a client secret.
fn secret_works(emu: &Emulator, client_id: &str, secret: &str) -> bool {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--cacert", &emu.var("SSL_CERT_FILE"), &token_url(emu)])
        .args(["--data-urlencode", "grant_type=client_credentials"])
        .args(["--data-urlencode", &format!("client_id={client_id}")])
        .args(["--data-urlencode", &format!("client_secret={secret}")])
        .args([
            "--data-urlencode",
            &format!("scope={}/.default", emu.var("AZURE_GRAPH_ENDPOINT")),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim() == "200"
}

/// The application's key credentials, as Graph lists them to the root identity.
fn key_credentials(emu: &Emulator, object_id: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args(["-s", "--cacert", &emu.var("SSL_CERT_FILE")])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", emu.root_graph_token()),
        ])
        .arg(format!(
            "{}/v1.0/applications/{object_id}?$select=keyCredentials",
            emu.var("AZURE_GRAPH_ENDPOINT")
        ))
        .output()
        .expect("curl");
    let app: Value = serde_json::from_slice(&out.stdout).expect("Graph JSON");
    app["keyCredentials"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no keyCredentials: {app}"))
}

/// The certificates (DER) of the key credentials the engine made for static roles.
fn engine_keys(emu: &Emulator, object_id: &str) -> Vec<(String, Vec<u8>)> {
    key_credentials(emu, object_id)
        .into_iter()
        .filter(|k| {
            k["displayName"]
                .as_str()
                .is_some_and(|n| n.starts_with("vault-static-"))
        })
        .map(|k| {
            (
                k["keyId"].as_str().expect("keyId").to_string(),
                STANDARD
                    .decode(k["key"].as_str().expect("key"))
                    .expect("key base64"),
            )
        })
        .collect()
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

fn creds(bao: &Bao, name: &str) -> Value {
    let out = bao.read(&format!("azure/static-creds/{name}")).ok().json();
    assert_eq!(out["lease_id"], "", "no lease: {out}");
    assert_eq!(out["lease_duration"], 0);
    out["data"].clone()
}

fn sha1_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

#[test]
fn certificate_static_role_rotates_hands_out_tokens_and_deletes_only_its_keys() {
    let emu = Emulator::start(&[]);
    let cloud = emu.cloud_env();
    let mut env: Vec<(&str, &str)> = cloud
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("BAO_LOG_LEVEL", "trace"));
    let bao = Bao::dev_with_env(&env);
    bao.register("azure");
    bao.enable("azure", "azure");
    let cfg = emu.config_args();
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    bao.write("azure/config", &cfg).ok();

    // An existing application with a foreign certificate and a foreign password.
    let (foreign_cert, foreign_key) = make_certificate(30);
    let existing = emu.graph_post(
        "applications",
        &json!({"displayName": "static-cert-app", "signInAudience": "AzureADMyOrg",
            "keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify",
                "key": STANDARD.encode(pem_der(&foreign_cert, "CERTIFICATE")), "displayName": "foreign"}]}),
    );
    let app = existing["id"].as_str().expect("id").to_string();
    let app_id = existing["appId"].as_str().expect("appId").to_string();
    emu.graph_post("servicePrincipals", &json!({"appId": app_id}));
    let foreign_pw = emu.graph_post(
        &format!("applications/{app}/addPassword"),
        &json!({"passwordCredential": {"displayName": "someone-else"}}),
    );
    let foreign_secret = foreign_pw["secretText"].as_str().expect("secret");
    let foreign_pw_id = foreign_pw["keyId"].as_str().expect("keyId").to_string();
    let app_arg = format!("application_object_id={app}");

    // Bad input: nothing is stored, nothing is made.
    fails_with(
        bao.write(
            "azure/static-roles/cert",
            &[&app_arg, "credential_type=pfx"],
        ),
        "credential_type",
    );
    fails_with(
        bao.write(
            "azure/static-roles/imp/import",
            &[
                &app_arg,
                &format!("secret_id={foreign_pw_id}"),
                &format!("client_secret={foreign_secret}"),
                "credential_type=certificate",
            ],
        ),
        "credential_type",
    );
    assert!(engine_keys(&emu, &app).is_empty());
    assert!(bao.read("azure/static-roles/imp").stdout.trim().is_empty());

    // Create: the first certificate is made, registered and proven at once.
    let before = Utc::now();
    bao.write(
        "azure/static-roles/cert",
        &[
            &app_arg,
            "credential_type=certificate",
            "rotation_period=1h",
            "seamless_rotation=false",
            "metadata=team=eng",
        ],
    )
    .ok();
    let role = bao.read("azure/static-roles/cert").ok();
    let role_text = role.stdout.clone();
    let role = role.json()["data"].clone();
    assert_eq!(role["credential_type"], "certificate");
    assert!(
        !role_text.contains("PRIVATE KEY"),
        "a role read shows no key"
    );
    assert!(role.get("private_key").is_none());

    let c1 = creds(&bao, "cert");
    assert_eq!(c1["client_id"], app_id.as_str());
    assert_eq!(c1["metadata"], json!({"team": "eng"}));
    assert_eq!(c1["tenant_id"], emu.var("AZURE_TENANT_ID").as_str());
    assert!(c1.get("client_secret").is_none());
    let cert1 = c1["certificate"].as_str().expect("certificate").to_string();
    let key1 = c1["private_key"].as_str().expect("private_key").to_string();
    assert!(
        key1.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM"
    );
    let der1 = pem_der(&cert1, "CERTIFICATE");
    assert_eq!(c1["thumbprint"], sha1_hex(&der1).as_str());
    let key_id1 = c1["key_id"].as_str().expect("key_id").to_string();
    assert_eq!(c1["secret_id"], key_id1.as_str());
    assert_eq!(role["secret_id"], key_id1.as_str());
    assert_eq!(role["thumbprint"], c1["thumbprint"]);
    // Proven from the emulator, not trusted from the response.
    assert!(certificate_works(&emu, &app_id, &cert1, &key1));
    // Exactly this certificate was registered; it ends at the period plus the grace.
    assert_eq!(
        engine_keys(&emu, &app),
        vec![(key_id1.clone(), der1.clone())]
    );
    let end = DateTime::parse_from_rfc3339(c1["expiration"].as_str().expect("expiration"))
        .expect("time")
        .with_timezone(&Utc);
    let want = before + chrono::Duration::seconds(3600 + 300);
    assert!(
        (end - want).num_seconds().abs() < 120,
        "end {end}, want about {want}"
    );
    // The same credential on every read.
    let again = creds(&bao, "cert");
    assert_eq!(again["private_key"], key1.as_str());
    assert_eq!(again["certificate"], cert1.as_str());

    // The credential type is fixed.
    fails_with(
        bao.write("azure/static-roles/cert", &["credential_type=password"]),
        "credential_type cannot be changed",
    );
    bao.write("azure/static-roles/cert", &["credential_type=certificate"])
        .ok();

    // The token endpoint signs with the current key.
    let scope = format!("scope={}/.default", emu.var("AZURE_GRAPH_ENDPOINT"));
    let token = bao
        .write("azure/static-creds/cert/token", &[&scope])
        .ok()
        .json();
    assert!(token["data"]["access_token"].is_string(), "{token}");
    assert_eq!(token["lease_id"], "");

    // rotate-role without seamless rotation: a new key, the old one gone at once.
    let rotated = bao
        .cli(&["write", "-f", "-format=json", "azure/rotate-role/cert"])
        .ok()
        .json();
    let c2 = creds(&bao, "cert");
    let cert2 = c2["certificate"].as_str().expect("certificate").to_string();
    let key2 = c2["private_key"].as_str().expect("private_key").to_string();
    let key_id2 = c2["key_id"].as_str().expect("key_id").to_string();
    assert_eq!(rotated["data"]["key_id"], key_id2.as_str());
    assert_ne!(key_id1, key_id2);
    assert_ne!(key1, key2);
    assert!(certificate_works(&emu, &app_id, &cert2, &key2));
    assert!(
        !certificate_works(&emu, &app_id, &cert1, &key1),
        "the replaced certificate no longer signs in"
    );
    let der2 = pem_der(&cert2, "CERTIFICATE");
    assert_eq!(engine_keys(&emu, &app), vec![(key_id2.clone(), der2)]);
    // The application's own certificate and password are untouched.
    assert_eq!(key_credentials(&emu, &app).len(), 2);
    assert!(certificate_works(
        &emu,
        &app_id,
        &foreign_cert,
        &foreign_key
    ));
    let pws = app_state(&emu, &app)["passwordCredentials"].clone();
    assert_eq!(pws.as_array().map(Vec::len), Some(1), "{pws}");
    assert_eq!(pws[0]["keyId"], foreign_pw_id.as_str());
    assert!(secret_works(&emu, &app_id, foreign_secret));
    let token = bao
        .write("azure/static-creds/cert/token", &[&scope])
        .ok()
        .json();
    assert!(token["data"]["access_token"].is_string(), "{token}");

    // With seamless rotation the replaced key keeps working for the grace period.
    bao.write(
        "azure/static-roles/cert",
        &["seamless_rotation=true", "rotation_grace_period=10m"],
    )
    .ok();
    bao.cli(&["write", "-f", "-format=json", "azure/rotate-role/cert"])
        .ok();
    let c3 = creds(&bao, "cert");
    let cert3 = c3["certificate"].as_str().expect("certificate").to_string();
    let key3 = c3["private_key"].as_str().expect("private_key").to_string();
    assert!(certificate_works(&emu, &app_id, &cert3, &key3));
    assert!(
        certificate_works(&emu, &app_id, &cert2, &key2),
        "inside the grace"
    );
    assert_eq!(engine_keys(&emu, &app).len(), 2);

    // Delete removes exactly the engine's key credentials.
    let key_id3 = c3["key_id"].as_str().expect("key_id").to_string();
    let resp = Command::new("curl")
        .args(["-s", "-X", "DELETE", "-H"])
        .arg(format!("X-Vault-Token: {}", bao.token))
        .arg(format!("{}/v1/azure/static-roles/cert", bao.addr))
        .output()
        .expect("curl");
    let resp: Value = serde_json::from_slice(&resp.stdout).expect("delete JSON");
    let mut removed: Vec<String> =
        serde_json::from_value(resp["data"]["removed_secret_ids"].clone())
            .expect("removed_secret_ids");
    removed.sort();
    let mut want = vec![key_id2.clone(), key_id3];
    want.sort();
    assert_eq!(removed, want);
    assert!(
        resp["warnings"][0].as_str().is_some_and(|w| w
            .contains("other certificates and passwords of the application were left in place")),
        "{resp}"
    );
    assert!(engine_keys(&emu, &app).is_empty());
    let keys = key_credentials(&emu, &app);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["displayName"], "foreign");
    assert!(certificate_works(
        &emu,
        &app_id,
        &foreign_cert,
        &foreign_key
    ));
    assert!(!certificate_works(&emu, &app_id, &cert3, &key3));
    assert!(secret_works(&emu, &app_id, foreign_secret));

    // Nothing secret in the server's trace-level log.
    let log = bao.log_text();
    assert!(!log.is_empty());
    assert!(!log.contains("PRIVATE KEY"), "a private key in the log");
    for k in [&key1, &key2, &key3] {
        let line = pem_body_line(k);
        assert!(!log.contains(&line), "a private key line in the log");
    }
}

/// PATCHes the tenant's default app management policy as the root identity.
fn set_default_policy(emu: &Emulator, restrictions: &Value) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-f",
            "--cacert",
            &emu.var("SSL_CERT_FILE"),
            "-X",
            "PATCH",
        ])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", emu.root_graph_token()),
        ])
        .args(["-H", "Content-Type: application/json"])
        .args([
            "-d",
            &json!({"isEnabled": true, "applicationRestrictions": restrictions}).to_string(),
        ])
        .arg(format!(
            "{}/v1.0/policies/defaultAppManagementPolicy",
            emu.var("AZURE_GRAPH_ENDPOINT")
        ))
        .output()
        .expect("curl");
    assert!(out.status.success(), "PATCH policy failed");
}

#[test]
fn tenant_policy_blocks_static_passwords_and_caps_static_certificates() {
    let emu = Emulator::start(&[]);
    let bao = common::bao_with_emulator(&emu);
    let (app, app_id) = emu.create_app("static-policy-app", true);
    set_default_policy(
        &emu,
        &json!({
            "passwordCredentials": [{"restrictionType": "passwordAddition", "maxLifetime": null}],
            "keyCredentials": [{"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "P90D"}]}),
    );
    let app_arg = format!("application_object_id={app}");

    // A password static role fails before anything is made, naming the way out.
    fails_with(
        bao.write("azure/static-roles/pw", &[&app_arg]),
        "credential_type=certificate",
    );
    assert!(bao.read("azure/static-roles/pw").stdout.trim().is_empty());
    let pws = app_state(&emu, &app)["passwordCredentials"].clone();
    assert_eq!(pws, json!([]), "no password was made");

    // A certificate static role works; a one-year period is capped at 90 days, with a
    // warning, and the next rotation comes before the certificate ends.
    let out = bao
        .write(
            "azure/static-roles/cert",
            &[
                &app_arg,
                "credential_type=certificate",
                "rotation_period=8760h",
            ],
        )
        .ok()
        .json();
    let warnings = out["warnings"].to_string();
    assert!(warnings.contains("90 days"), "{warnings}");
    let c = creds(&bao, "cert");
    assert!(certificate_works(
        &emu,
        &app_id,
        c["certificate"].as_str().expect("certificate"),
        c["private_key"].as_str().expect("private_key")
    ));
    let ninety = 90 * 86_400;
    let end = DateTime::parse_from_rfc3339(c["expiration"].as_str().expect("expiration"))
        .expect("time")
        .timestamp();
    let life = end - Utc::now().timestamp();
    assert!(
        life <= ninety && life > ninety - 3_600,
        "certificate life {life}"
    );
    let role = bao.read("azure/static-roles/cert").ok().json();
    let next = DateTime::parse_from_rfc3339(
        role["data"]["next_rotation_time"]
            .as_str()
            .expect("next_rotation_time"),
    )
    .expect("time")
    .timestamp();
    assert!(next < end, "rotates at {next}, before the end {end}");
    assert!(next > end - 3_600, "rotates at {next}, about the end {end}");
}
