//! Password-free credentials through a real OpenBao with the emulator as Azure: certificate
//! roles (dynamic and on an existing application), the engine signing in with a
//! certificate (and rotating it), the engine on AKS workload identity (a projected token
//! file from the emulator's cluster issuer), and the tenant's app management policies
//! (blocked passwords, a 90-day certificate lifetime cap). The server runs with
//! BAO_LOG_LEVEL=trace and its log is scanned for private keys and client assertions.

mod common;

use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::certs::{
    app_state, client_assertion, make_certificate, pem_body_line, pem_der, token_url,
};
use common::{Bao, Emulator};
use serde_json::{json, Value};

/// An RS256-signed JWT header always starts like this (base64url of `{"alg":"RS256",`).
const RS256_JWT_PREFIX: &str = "eyJhbGciOiJSUzI1NiIs";

/// Asks the emulator for a Graph token with a client assertion; returns the JSON answer.
fn token_with_assertion(emu: &Emulator, client_id: &str, assertion: &str) -> Value {
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
    serde_json::from_slice(&out.stdout).expect("token JSON")
}

/// Proves a certificate credential works: a token from the emulator with an assertion
/// this test signs itself.
fn assert_certificate_works(emu: &Emulator, client_id: &str, cert_pem: &str, key_pem: &str) {
    let a = client_assertion(cert_pem, key_pem, client_id, &token_url(emu));
    let t = token_with_assertion(emu, client_id, &a);
    assert!(t["access_token"].is_string(), "no token: {t}");
}

/// Any Graph call as the emulator's root identity (curl), returning the JSON body or Null.
fn graph(emu: &Emulator, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--cacert", &emu.var("SSL_CERT_FILE"), "-X", method])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", emu.root_graph_token()),
        ]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
    }
    let out = cmd
        .arg(format!("{}/v1.0/{path}", emu.var("AZURE_GRAPH_ENDPOINT")))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn write_file(bao: &Bao, name: &str, text: &str) -> String {
    let path = bao.dir.path().join(name);
    std::fs::write(&path, text).expect("write file");
    format!("@{}", path.display())
}

fn key_credentials(emu: &Emulator, object_id: &str) -> Vec<Value> {
    graph(
        emu,
        "GET",
        &format!("applications/{object_id}?$select=keyCredentials"),
        None,
    )["keyCredentials"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn root_app_object_id(emu: &Emulator) -> String {
    emu.state()["applications"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["appId"] == emu.var("AZURE_CLIENT_ID").as_str())
                .cloned()
        })
        .and_then(|a| a["id"].as_str().map(str::to_string))
        .expect("root application")
}

/// A dev OpenBao (plugin at trace level) whose plugin reaches `emu` as its cloud, plus `env`.
fn bao_at_trace(emu: &Emulator, env: &[(&str, &str)]) -> Bao {
    let cloud = emu.cloud_env();
    let mut pairs: Vec<(&str, &str)> = cloud
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.push(("BAO_LOG_LEVEL", "trace"));
    pairs.extend_from_slice(env);
    let bao = Bao::dev_with_env(&pairs);
    bao.register("azure");
    bao.enable("azure", "azure");
    bao
}

fn reader_roles(bao: &Bao, emu: &Emulator) -> String {
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let roles = json!([{"role_name": "Reader", "scope": format!("/subscriptions/{sub}")}]);
    format!(
        "azure_roles={}",
        write_file(bao, "roles.json", &roles.to_string())
    )
}

/// The server log has no private key, no client assertion, no client secret.
fn assert_log_clean(bao: &Bao, secrets: &[String]) {
    let log = bao.log_text();
    assert!(!log.is_empty());
    assert!(!log.contains("PRIVATE KEY"), "a private key in the log");
    assert!(!log.contains(RS256_JWT_PREFIX), "a signed JWT in the log");
    for s in secrets {
        assert!(!log.contains(s.as_str()), "a secret in the log: {s}");
    }
}

#[test]
fn certificate_role_issues_a_working_key_and_revoke_removes_only_it() {
    let emu = Emulator::start(&[]);
    let bao = bao_at_trace(&emu, &[]);
    let cfg = emu.config_args();
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    bao.write("azure/config", &cfg).ok();

    // A dynamic certificate role.
    let roles = reader_roles(&bao, &emu);
    bao.write(
        "azure/roles/cert",
        &[&roles, "credential_type=certificate", "ttl=1h"],
    )
    .ok();
    let role = bao.read("azure/roles/cert").ok().json();
    assert_eq!(role["data"]["credential_type"], "certificate");
    let bad = bao.write("azure/roles/bad", &[&roles, "credential_type=pfx"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("credential_type"), "{}", bad.stderr);

    let creds = bao.read("azure/creds/cert").ok().json();
    let d = &creds["data"];
    let client_id = d["client_id"].as_str().expect("client_id").to_string();
    let cert = d["certificate"].as_str().expect("certificate").to_string();
    let key = d["private_key"].as_str().expect("private_key").to_string();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    assert_eq!(d["tenant_id"], emu.var("AZURE_TENANT_ID").as_str());
    assert!(d.get("client_secret").is_none());
    let thumb = d["thumbprint"].as_str().expect("thumbprint");
    let der = pem_der(&cert, "CERTIFICATE");
    let sha1: String =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
    assert_eq!(thumb, sha1);
    // Proven from the emulator at once, with an assertion this test signs.
    assert_certificate_works(&emu, &client_id, &cert, &key);
    // The application has exactly this certificate and no password anywhere.
    let app = emu
        .vault_apps()
        .into_iter()
        .find(|a| a["appId"] == client_id.as_str())
        .expect("the dynamic application");
    let app_obj = app["id"].as_str().unwrap().to_string();
    let keys = key_credentials(&emu, &app_obj);
    assert_eq!(keys.len(), 1);
    assert_eq!(
        STANDARD.decode(keys[0]["key"].as_str().unwrap()).unwrap(),
        der
    );
    assert_eq!(app["passwordCredentials"], json!([]));
    let sp = emu.state()["servicePrincipals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["appId"] == client_id.as_str())
        .cloned()
        .expect("service principal");
    assert_eq!(sp["passwordCredentials"], json!([]));
    let lease = creds["lease_id"].as_str().unwrap();
    bao.cli(&["lease", "revoke", "-sync", lease]).ok();
    assert!(
        app_state(&emu, &app_obj).is_null(),
        "the application is gone"
    );

    // On an existing application with a password and a foreign certificate.
    let (foreign_cert, _) = make_certificate(30);
    let existing = emu.graph_post(
        "applications",
        &json!({"displayName": "existing-app", "signInAudience": "AzureADMyOrg",
            "keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify",
                "key": STANDARD.encode(pem_der(&foreign_cert, "CERTIFICATE")), "displayName": "foreign"}]}),
    );
    let obj = existing["id"].as_str().unwrap().to_string();
    let app_id = existing["appId"].as_str().unwrap().to_string();
    emu.graph_post("servicePrincipals", &json!({"appId": app_id}));
    emu.graph_post(
        &format!("applications/{obj}/addPassword"),
        &json!({"passwordCredential": {"displayName": "foreign-secret"}}),
    );
    bao.write(
        "azure/roles/existing",
        &[
            &format!("application_object_id={obj}"),
            "credential_type=certificate",
        ],
    )
    .ok();
    let c1 = bao.read("azure/creds/existing").ok().json();
    let c2 = bao.read("azure/creds/existing").ok().json();
    for c in [&c1, &c2] {
        assert_eq!(c["data"]["client_id"], app_id.as_str());
        assert_certificate_works(
            &emu,
            &app_id,
            c["data"]["certificate"].as_str().unwrap(),
            c["data"]["private_key"].as_str().unwrap(),
        );
    }
    assert_eq!(key_credentials(&emu, &obj).len(), 3);
    bao.cli(&["lease", "revoke", "-sync", c1["lease_id"].as_str().unwrap()])
        .ok();
    let keys = key_credentials(&emu, &obj);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let left: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| STANDARD.decode(k["key"].as_str().unwrap()).unwrap())
        .collect();
    assert!(left.contains(&pem_der(&foreign_cert, "CERTIFICATE")));
    assert!(left.contains(&pem_der(
        c2["data"]["certificate"].as_str().unwrap(),
        "CERTIFICATE"
    )));
    let app = app_state(&emu, &obj);
    assert_eq!(app["passwordCredentials"].as_array().unwrap().len(), 1);
    // The revoked certificate no longer signs in; the other still does.
    let a = client_assertion(
        c1["data"]["certificate"].as_str().unwrap(),
        c1["data"]["private_key"].as_str().unwrap(),
        &app_id,
        &token_url(&emu),
    );
    assert!(token_with_assertion(&emu, &app_id, &a)["access_token"].is_null());

    let secrets: Vec<String> = [&creds, &c1, &c2]
        .iter()
        .map(|c| pem_body_line(c["data"]["private_key"].as_str().unwrap()))
        .collect();
    assert_log_clean(&bao, &secrets);
}

#[test]
fn engine_with_a_certificate_only_issues_and_rotates_root() {
    let emu = Emulator::start(&[]);
    // The root application gets a certificate; the engine is given only that.
    let (cert, key) = make_certificate(365);
    let root_obj = root_app_object_id(&emu);
    graph(
        &emu,
        "PATCH",
        &format!("applications/{root_obj}"),
        Some(
            &json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify",
            "key": STANDARD.encode(pem_der(&cert, "CERTIFICATE")), "displayName": "bootstrap"}]}),
        ),
    );
    assert_eq!(key_credentials(&emu, &root_obj).len(), 1);
    let bao = bao_at_trace(&emu, &[]);
    let cert_arg = format!("client_certificate={}", write_file(&bao, "cert.pem", &cert));
    let key_arg = format!(
        "client_certificate_key={}",
        write_file(&bao, "key.pem", &key)
    );
    // A key that is not the certificate's is refused, naming the field.
    let (_, other_key) = make_certificate(1);
    let wrong = format!(
        "client_certificate_key={}",
        write_file(&bao, "other.pem", &other_key)
    );
    let base = [
        format!("tenant_id={}", emu.var("AZURE_TENANT_ID")),
        format!("subscription_id={}", emu.var("AZURE_SUBSCRIPTION_ID")),
        format!("client_id={}", emu.var("AZURE_CLIENT_ID")),
    ];
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    let mut bad = args.clone();
    bad.extend([cert_arg.as_str(), wrong.as_str()]);
    let r = bao.write("azure/config", &bad);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("does not belong"), "{}", r.stderr);
    args.extend([cert_arg.as_str(), key_arg.as_str()]);
    bao.write("azure/config", &args).ok();
    let config = bao.read("azure/config").ok().json();
    assert!(config["data"].get("client_certificate_key").is_none());
    let thumb1 = config["data"]["client_certificate_thumbprint"]
        .as_str()
        .expect("thumbprint")
        .to_string();

    // Issues (a password role and a certificate role) with no secret anywhere.
    let roles = reader_roles(&bao, &emu);
    bao.write("azure/roles/pw", &[&roles]).ok();
    bao.write("azure/roles/cert", &[&roles, "credential_type=certificate"])
        .ok();
    let pw = bao.read("azure/creds/pw").ok().json();
    assert!(pw["data"]["client_secret"].is_string());
    let c = bao.read("azure/creds/cert").ok().json();
    assert_certificate_works(
        &emu,
        c["data"]["client_id"].as_str().unwrap(),
        c["data"]["certificate"].as_str().unwrap(),
        c["data"]["private_key"].as_str().unwrap(),
    );

    // rotate-root: a new certificate (addKey, proven), the old one removed (removeKey).
    emu.clear_requests();
    bao.cli(&["write", "-f", "-format=json", "azure/rotate-root"])
        .ok();
    let paths: Vec<String> = emu
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("/addKey")), "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("/removeKey")), "{paths:?}");
    let config = bao.read("azure/config").ok().json();
    let thumb2 = config["data"]["client_certificate_thumbprint"]
        .as_str()
        .expect("thumbprint")
        .to_string();
    assert_ne!(thumb1, thumb2);
    let keys = key_credentials(&emu, &root_obj);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(
        STANDARD.decode(keys[0]["key"].as_str().unwrap()).unwrap(),
        pem_der(&cert, "CERTIFICATE"),
        "the old certificate is gone"
    );
    // The seeded root password is untouched, and the old certificate no longer signs in.
    assert_eq!(
        app_state(&emu, &root_obj)["passwordCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let a = client_assertion(&cert, &key, &emu.var("AZURE_CLIENT_ID"), &token_url(&emu));
    assert!(token_with_assertion(&emu, &emu.var("AZURE_CLIENT_ID"), &a)["access_token"].is_null());
    // The engine keeps working with the new certificate.
    let pw2 = bao.read("azure/creds/pw").ok().json();
    assert!(pw2["data"]["client_secret"].is_string());

    assert_log_clean(
        &bao,
        &[
            pem_body_line(&key),
            pem_body_line(c["data"]["private_key"].as_str().unwrap()),
            pw["data"]["client_secret"].as_str().unwrap().to_string(),
        ],
    );
}

#[test]
fn engine_on_aks_workload_identity_issues() {
    let emu = Emulator::start(&[]);
    let admin = emu.var("EMULATOR_ADMIN");
    let subject = "system:serviceaccount:openbao:openbao";
    let mint = || -> (String, String) {
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", &format!("{admin}/cluster-issuer/token")])
            .args(["-d", &json!({"subject": subject}).to_string()])
            .output()
            .expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        (
            v["token"].as_str().expect("token").to_string(),
            v["issuer"].as_str().expect("issuer").to_string(),
        )
    };
    let (token, issuer) = mint();
    let root_obj = root_app_object_id(&emu);
    let fic = emu.graph_post(
        &format!("applications/{root_obj}/federatedIdentityCredentials"),
        &json!({"name": "openbao-on-aks", "issuer": issuer, "subject": subject,
            "audiences": ["api://AzureADTokenExchange"]}),
    );
    assert_eq!(fic["subject"], subject);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, &token).expect("token file");
    let client_id = emu.var("AZURE_CLIENT_ID");
    let tenant = emu.var("AZURE_TENANT_ID");
    let bao = bao_at_trace(
        &emu,
        &[
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AZURE_CLIENT_ID", &client_id),
            ("AZURE_TENANT_ID", &tenant),
        ],
    );
    // Only the subscription is configured; the identity comes from the pod environment.
    bao.write(
        "azure/config",
        &[&format!(
            "subscription_id={}",
            emu.var("AZURE_SUBSCRIPTION_ID")
        )],
    )
    .ok();
    let roles = reader_roles(&bao, &emu);
    bao.write("azure/roles/wi", &[&roles]).ok();
    let creds = bao.read("azure/creds/wi").ok().json();
    assert!(creds["data"]["client_secret"].is_string());

    // The file is read for every exchange: a broken token breaks the next client, a
    // fresh one (as the kubelet rotates it) restores it.
    std::fs::write(&token_file, "not-a-jwt").expect("token file");
    bao.write("azure/config", &["disable_automated_rotation=true"])
        .ok();
    let r = bao.read("azure/creds/wi");
    assert_ne!(r.code, 0, "a broken token file must not work");
    let (fresh, _) = mint();
    std::fs::write(&token_file, &fresh).expect("token file");
    bao.write("azure/config", &["disable_automated_rotation=true"])
        .ok();
    bao.read("azure/creds/wi").ok();
    assert_log_clean(
        &bao,
        &[
            token.clone(),
            fresh,
            creds["data"]["client_secret"].as_str().unwrap().to_string(),
        ],
    );
}

#[test]
fn tenant_policy_blocks_passwords_and_caps_certificate_lifetimes() {
    let emu = Emulator::start(&[]);
    let bao = bao_at_trace(&emu, &[]);
    let cfg = emu.config_args();
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    bao.write("azure/config", &cfg).ok();
    bao.cli(&["secrets", "tune", "-max-lease-ttl=8760h", "azure"])
        .ok();
    let roles = reader_roles(&bao, &emu);
    bao.write("azure/roles/pw", &[&roles]).ok();
    bao.write(
        "azure/roles/cert",
        &[
            &roles,
            "credential_type=certificate",
            "ttl=8760h",
            "max_ttl=8760h",
        ],
    )
    .ok();

    // Baseline-security-mode style: passwords blocked for applications and service
    // principals (a dynamic password goes on the service principal).
    let blocked = json!({"passwordCredentials": [{"restrictionType": "passwordAddition", "maxLifetime": null}],
        "keyCredentials": []});
    graph(
        &emu,
        "PATCH",
        "policies/defaultAppManagementPolicy",
        Some(
            &json!({"isEnabled": true, "applicationRestrictions": blocked,
            "servicePrincipalRestrictions": blocked}),
        ),
    );
    emu.clear_requests();
    let r = bao.read("azure/creds/pw");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Code: 400"), "{}", r.stderr);
    assert!(
        r.stderr.contains("00000000-0000-0000-0000-000000000000"),
        "names the policy: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("credential_type=certificate"),
        "{}",
        r.stderr
    );
    // Nothing was made: no application, no write at all.
    assert!(emu.vault_apps().is_empty());
    assert!(
        emu.requests()
            .iter()
            .all(|q| q["method"] == "GET" || q["service"] == "token"),
        "{:?}",
        emu.requests()
    );
    let c = bao.read("azure/creds/cert").ok().json();
    assert_certificate_works(
        &emu,
        c["data"]["client_id"].as_str().unwrap(),
        c["data"]["certificate"].as_str().unwrap(),
        c["data"]["private_key"].as_str().unwrap(),
    );
    bao.cli(&["lease", "revoke", "-sync", c["lease_id"].as_str().unwrap()])
        .ok();

    // A 90-day certificate cap: a one-year lease is shortened, with a warning.
    graph(
        &emu,
        "PATCH",
        "policies/defaultAppManagementPolicy",
        Some(&json!({"applicationRestrictions": {
            "passwordCredentials": [{"restrictionType": "passwordAddition", "maxLifetime": null}],
            "keyCredentials": [{"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "P90D"}]}})),
    );
    let c = bao.read("azure/creds/cert").ok().json();
    let warnings = c["warnings"].to_string();
    assert!(warnings.contains("90 days"), "{warnings}");
    let ninety = 90 * 86_400;
    let lease = c["lease_duration"].as_i64().unwrap();
    assert!(lease <= ninety && lease > ninety - 3_600, "lease {lease}");
    let app_id = c["data"]["client_id"].as_str().unwrap();
    let app = emu
        .vault_apps()
        .into_iter()
        .find(|a| a["appId"] == app_id)
        .expect("application");
    let end = chrono::DateTime::parse_from_rfc3339(
        app["keyCredentials"][0]["endDateTime"].as_str().unwrap(),
    )
    .unwrap();
    let life = end.timestamp() - chrono::Utc::now().timestamp();
    assert!(
        life <= ninety && life > ninety - 3_600,
        "certificate life {life}"
    );

    // Graph's own refusal (the engine cannot read policies) is mapped to a clear 400.
    graph(
        &emu,
        "PATCH",
        "policies/defaultAppManagementPolicy",
        Some(
            &json!({"applicationRestrictions": {"passwordCredentials": [], "keyCredentials": [
            {"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "P30D"}]}}),
        ),
    );
    emu.add_fault(
        json!({"path_contains": "defaultAppManagementPolicy", "method": "GET", "status": 403}),
    );
    let r = bao.read("azure/creds/cert");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Code: 400"), "{}", r.stderr);
    assert!(r.stderr.contains("lifetime exceeds"), "{}", r.stderr);
    emu.clear_faults();

    assert_log_clean(
        &bao,
        &[pem_body_line(c["data"]["private_key"].as_str().unwrap())],
    );
}

#[test]
fn an_interrupted_certificate_issue_is_rolled_back_exactly() {
    let emu = Emulator::start(&[]);
    let env = emu.cloud_env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bao = Bao::persistent_with_env(&pairs);
    bao.register("azure");
    bao.enable("azure", "azure");
    let cfg = emu.config_args();
    let cfg: Vec<&str> = cfg.iter().map(String::as_str).collect();
    bao.write("azure/config", &cfg).ok();
    let base = bao.mount_storage_base("azure/");

    // An application with a foreign certificate, and the certificate a crashed issue left
    // behind (registered, its WAL entry still there, 15 minutes old).
    let (foreign, _) = make_certificate(30);
    let (orphan, _) = make_certificate(30);
    let marker = format!("vault-plugin-secrets-azure-{}", uuid::Uuid::new_v4());
    let key = |pem: &str, name: &str| {
        json!({"type": "AsymmetricX509Cert", "usage": "Verify",
            "key": STANDARD.encode(pem_der(pem, "CERTIFICATE")), "displayName": name})
    };
    let app = emu.graph_post(
        "applications",
        &json!({"displayName": "crash-app", "signInAudience": "AzureADMyOrg",
            "keyCredentials": [key(&foreign, "foreign"), key(&orphan, &marker)]}),
    );
    let obj = app["id"].as_str().unwrap().to_string();
    assert_eq!(key_credentials(&emu, &obj).len(), 2);
    let created_at = chrono::Utc::now().timestamp() - 15 * 60;
    let wal = json!({"type": "addKeyCredential", "created_at": created_at,
        "data": {"AppObjID": obj, "DisplayName": marker,
                 "Expiration": (chrono::Utc::now() + chrono::Duration::hours(23)).to_rfc3339()}});
    bao.write(
        &format!("sys/raw/{base}/wal/5c1d2e3f-0000-4000-8000-00000000a11d"),
        &[&format!("value={wal}")],
    )
    .ok();
    // The periodic rollback (about once a minute) removes exactly that certificate.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
    loop {
        let keys = key_credentials(&emu, &obj);
        if keys.len() == 1 {
            assert_eq!(keys[0]["displayName"], "foreign");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rollback did not remove the certificate"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    assert!(!bao.log_text().contains("rollback: error"));
}
