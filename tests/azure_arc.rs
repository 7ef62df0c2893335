//! Managed identity on Azure Arc through azure_identity, end to end against the emulator.
//!
//! azure_identity picks the Arc source from the *process* environment (`IDENTITY_ENDPOINT`
//! and `IMDS_ENDPOINT`) and only reads key files under `/var/opt/azcmagent/tokens`, so this
//! file holds a single test (nothing else in this process reads or changes the
//! environment) and needs to create that folder (tests run as root). Skipped with a
//! message when the folder cannot be created.

#[path = "bins/mod.rs"]
mod bins;

use azure_clients::*;
use serde_json::json;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN_DIR: &str = "/var/opt/azcmagent/tokens";

struct Emulator {
    _process: azure_emulator::testing::EmulatorProcess,
    vars: HashMap<String, String>,
}

fn start_emulator(extra: &[&str]) -> Emulator {
    let process =
        azure_emulator::testing::EmulatorProcess::spawn(&bins::bin_path("azure-emulator"), extra);
    let vars = process.env.iter().cloned().collect();
    Emulator {
        _process: process,
        vars,
    }
}

async fn set_realm(admin: &str, realm: Option<&str>) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{admin}/settings"))
        .json(&json!({ "arc_realm_override": realm }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

async fn requests(admin: &str) -> Vec<serde_json::Value> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{admin}/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn managed_identity_client(emu: &Emulator) -> AzureClient {
    let mut env = emu.vars.clone();
    env.remove("AZURE_CLIENT_SECRET");
    env.remove("AZURE_CLIENT_ID");
    let settings =
        AzureSettings::resolve(&AzureConfig::default(), &move |k: &str| env.get(k).cloned())
            .unwrap();
    assert_eq!(settings.auth_method(), AuthMethod::ManagedIdentity);
    AzureClient::new(settings, AzureClientOptions::default()).unwrap()
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

#[tokio::test]
async fn azure_arc_challenge_flow() {
    if let Err(e) = std::fs::create_dir_all(TOKEN_DIR) {
        azure_emulator::testing::skip(
            "azure_arc_challenge_flow",
            &format!("cannot create {TOKEN_DIR} (run as root): {e}"),
        );
        return;
    }
    let emu = start_emulator(&["--arc-token-dir", TOKEN_DIR]);
    let admin = emu.vars["EMULATOR_ADMIN"].trim_end_matches('/').to_owned();
    // The only place the process environment is touched: azure_identity reads it.
    for k in [
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
    ] {
        std::env::remove_var(k);
    }
    std::env::set_var("IDENTITY_ENDPOINT", &emu.vars["IDENTITY_ENDPOINT"]);
    std::env::set_var("IMDS_ENDPOINT", &emu.vars["IMDS_ENDPOINT"]);

    // 1. The real flow: 401 challenge naming a fresh .key file, then Basic with its contents.
    let client = managed_identity_client(&emu);
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
    let reqs = requests(&admin).await;
    let arc: Vec<u64> = reqs
        .iter()
        .filter(|r| r["service"] == "arc")
        .filter_map(|r| r["status"].as_u64())
        .collect();
    assert_eq!(arc, vec![401, 200, 401, 200], "{reqs:?}");

    // 2. A key file the agent does not accept: refused, and its contents never shown.
    let wrong = Path::new(TOKEN_DIR).join("vault-test-wrong.key");
    std::fs::write(&wrong, "not-the-agent-secret").unwrap();
    set_realm(&admin, wrong.to_str()).await;
    let err = managed_identity_client(&emu)
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("not-the-agent-secret"), "{shown}");
    assert!(err.status().is_some(), "refused by the agent: {err}");

    // 3. A realm outside the agent's token folder is never read.
    let outside_dir = tempfile::tempdir().unwrap();
    let outside = outside_dir.path().join("stolen.key");
    std::fs::write(&outside, "outside-secret").unwrap();
    set_realm(&admin, outside.to_str()).await;
    let before = requests(&admin).await.len();
    let err = managed_identity_client(&emu)
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap_err();
    assert!(!format!("{err:?}").contains("outside-secret"));
    assert!(err.to_string().contains("invalid"), "{err}");
    // Only the challenge was made: no second call presenting a secret.
    let after = requests(&admin).await;
    assert_eq!(after.len() - before, 1, "{after:?}");

    // 4. A file in the folder without the .key extension, and an oversized key file.
    let txt = Path::new(TOKEN_DIR).join("vault-test.txt");
    std::fs::write(&txt, "x").unwrap();
    set_realm(&admin, txt.to_str()).await;
    let err = managed_identity_client(&emu)
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");

    let big = Path::new(TOKEN_DIR).join("vault-test-big.key");
    std::fs::write(&big, vec![b'a'; 5000]).unwrap();
    set_realm(&admin, big.to_str()).await;
    let err = managed_identity_client(&emu)
        .graph()
        .find_group_by_name("vault-test-group-1", deadline())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger"), "{err}");

    // 5. A key file the server's user may not read: the error says to join 'himds'.
    //    Checked in a child process (this test binary again) running as `nobody`.
    let locked = Path::new(TOKEN_DIR).join("vault-test-locked.key");
    std::fs::write(&locked, "locked-secret").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o600)).unwrap();
    set_realm(&admin, locked.to_str()).await;
    // `nobody` may not reach this test binary where it was built (a checkout in a private
    // folder): run a copy from a folder everyone may enter.
    let child_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(child_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let child_exe = child_dir.path().join("arc-child");
    std::fs::copy(std::env::current_exe().unwrap(), &child_exe).unwrap();
    std::fs::set_permissions(&child_exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&child_exe)
        .current_dir(child_dir.path())
        .args(["--exact", "arc_permission_denied_child", "--nocapture"])
        .env("ARC_CHILD", "1")
        .env("ARC_CHILD_TENANT", &emu.vars["AZURE_TENANT_ID"])
        .env("ARC_CHILD_SUBSCRIPTION", &emu.vars["AZURE_SUBSCRIPTION_ID"])
        .env_remove("SSL_CERT_FILE")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ARC_CHILD_OK"), "{stdout}");
    eprintln!(
        "as nobody: {}",
        stdout
            .lines()
            .find(|l| l.contains("ARC_CHILD_OK"))
            .unwrap_or_default()
    );

    for f in [wrong, txt, big, locked] {
        let _ = std::fs::remove_file(f);
    }
}

/// Runs only inside the child process started by `azure_arc_challenge_flow` (as `nobody`).
#[tokio::test]
async fn arc_permission_denied_child() {
    if std::env::var_os("ARC_CHILD").is_none() {
        return;
    }
    let tenant = std::env::var("ARC_CHILD_TENANT").unwrap();
    let sub = std::env::var("ARC_CHILD_SUBSCRIPTION").unwrap();
    let settings = AzureSettings::resolve(&AzureConfig::default(), &move |k: &str| match k {
        "AZURE_TENANT_ID" => Some(tenant.clone()),
        "AZURE_SUBSCRIPTION_ID" => Some(sub.clone()),
        _ => None,
    })
    .unwrap();
    let client = AzureClient::new(settings, AzureClientOptions::default()).unwrap();
    let err = client
        .token_source()
        .token("https://management.azure.com/.default", deadline())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("himds"), "{text}");
    assert!(!format!("{err:?}").contains("locked-secret"));
    println!("ARC_CHILD_OK {text}");
}
