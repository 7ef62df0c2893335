//! Managed identity on Azure Arc through azure_identity, end to end against the emulator.
//!
//! azure_identity picks the Arc source from the *process* environment (`IDENTITY_ENDPOINT`
//! and `IMDS_ENDPOINT`) and only reads key files under `/var/opt/azcmagent/tokens`, so this
//! file holds a single test (nothing else in this process reads or changes the
//! environment) and needs to create that folder (tests run as root). Skipped with a
//! message when the folder cannot be created.

use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vault_plugin_secrets_azure::azure::*;

const TOKEN_DIR: &str = "/var/opt/azcmagent/tokens";

struct Emulator {
    child: Child,
    vars: HashMap<String, String>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_emulator(extra: &[&str]) -> Emulator {
    let mut child = Command::new(env!("CARGO_BIN_EXE_azure-emulator"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start azure-emulator");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut vars = HashMap::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .expect("emulator printed READY");
        if line.trim() == "READY" {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    Emulator { child, vars }
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
        eprintln!("skipping: cannot create {TOKEN_DIR}: {e}");
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

    for f in [wrong, txt, big] {
        let _ = std::fs::remove_file(f);
    }
}
