//! The plugin runtime under a real OpenBao server: handshake, AutoMTLS, broker, multiplexing,
//! the framework's paths end to end, help and OpenAPI, reload, disable, restart.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::wait_for;
use common::{bao_with_emulator, Bao, Emulator};

#[test]
fn refuses_to_start_without_the_magic_cookie() {
    let out = Command::new(common::plugin_bin())
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("run plugin");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin for HashiCorp Vault and OpenBao"),
        "{stderr}"
    );

    // The database-plugin probe of OpenBao's type detection is refused as well.
    let out = Command::new(common::plugin_bin())
        .env_clear()
        .env(
            "VAULT_DATABASE_PLUGIN",
            "926a0820-aea2-be28-51d6-83cdf00e8edb",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .output()
        .expect("run plugin");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn refuses_legacy_protocol_versions() {
    let out = Command::new(common::plugin_bin())
        .env_clear()
        .env(
            "VAULT_BACKEND_PLUGIN",
            "6669da05-b1c8-4f49-97d9-c8e5bed98e20",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "3,4")
        .output()
        .expect("run plugin");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only version 5"));
}

#[test]
fn two_mounts_share_one_process_and_keep_separate_storage() {
    let bao = Bao::dev();
    bao.register("azure");
    bao.enable("az1", "azure");
    bao.enable("az2", "azure");
    assert_eq!(bao.plugin_pids().len(), 1, "one process serves both mounts");

    // The version reported by the binary is the one the mounts run.
    let mounts = bao
        .cli(&["secrets", "list", "-detailed", "-format=json"])
        .ok()
        .json();
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(mounts["az1/"]["running_plugin_version"], version.as_str());
    assert_eq!(mounts["az2/"]["running_plugin_version"], version.as_str());

    // Write, read, isolation between the mounts.
    bao.write(
        "az1/config",
        &[
            "tenant_id=tenant-1",
            "subscription_id=sub-1",
            "client_id=app-1",
            "client_secret=very-secret-value",
        ],
    )
    .ok();
    let c1 = bao.read("az1/config").ok().json();
    assert_eq!(c1["data"]["tenant_id"], "tenant-1");
    assert_eq!(c1["data"]["root_password_ttl"], 15_768_000);
    assert!(
        c1["data"].get("client_secret").is_none(),
        "secret never returned"
    );
    let c2 = bao.read("az2/config").ok().json();
    assert_eq!(c2["data"]["tenant_id"], "");

    // Partial update keeps the other fields.
    bao.write("az1/config", &["root_password_ttl=1h"]).ok();
    let c1 = bao.read("az1/config").ok().json();
    assert_eq!(c1["data"]["root_password_ttl"], 3600);
    assert_eq!(c1["data"]["client_id"], "app-1");

    // A field validation error names the field, and nothing is stored.
    let bad = bao.write("az1/config", &["root_password_ttl=soon"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("Code: 400"), "{}", bad.stderr);
    assert!(bad.stderr.contains("root_password_ttl"), "{}", bad.stderr);
    let c1 = bao.read("az1/config").ok().json();
    assert_eq!(c1["data"]["root_password_ttl"], 3600);

    // Help and OpenAPI describe the paths and fields.
    let help = bao.cli(&["path-help", "az1/config"]).ok();
    assert!(help.stdout.contains("root_password_ttl"), "{}", help.stdout);
    assert!(
        help.stdout.contains("Configure the Azure secrets engine"),
        "{}",
        help.stdout
    );
    let root_help = bao.cli(&["path-help", "az1/"]).ok();
    assert!(
        root_help.stdout.contains("^config$"),
        "{}",
        root_help.stdout
    );
    let openapi = bao.read("sys/internal/specs/openapi").ok().json();
    let paths = openapi["data"]["paths"].as_object().expect("paths");
    for p in ["/az1/config", "/az2/config"] {
        assert!(
            paths.contains_key(p),
            "{p} in {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(
        paths["/az1/config"]["get"]["operationId"],
        "azure-read-configuration"
    );

    // Delete, then the read shows zero values.
    bao.cli(&["delete", "az1/config"]).ok();
    let c1 = bao.read("az1/config").ok().json();
    assert_eq!(c1["data"]["tenant_id"], "");

    // Reload starts a new process; the mounts keep working.
    let before = bao.plugin_pids();
    bao.cli(&["plugin", "reload", "-plugin=azure"]).ok();
    bao.write("az2/config", &["tenant_id=after-reload"]).ok();
    assert_eq!(
        bao.read("az2/config").ok().json()["data"]["tenant_id"],
        "after-reload"
    );
    let after = bao.plugin_pids();
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "reload replaced the process");

    // Disabling both mounts stops the process.
    bao.cli(&["secrets", "disable", "az1"]).ok();
    bao.cli(&["secrets", "disable", "az2"]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !bao.plugin_pids().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        bao.plugin_pids().is_empty(),
        "plugin exited after the last mount went away"
    );

    // The secret never reached the server log; the plugin's own log lines did, parsed.
    let log = bao.log_text();
    assert!(!log.contains("very-secret-value"));
    assert!(
        !log.contains("rollback: error"),
        "rollback must not log errors:\n{log}"
    );
}

#[test]
fn mount_and_data_survive_a_server_restart() {
    let mut bao = Bao::persistent();
    bao.register("azure");
    bao.enable("azure", "azure");
    bao.write(
        "azure/config",
        &[
            "tenant_id=kept",
            "subscription_id=sub",
            "root_password_ttl=2h",
        ],
    )
    .ok();
    bao.restart();
    let c = bao.read("azure/config").ok().json();
    assert_eq!(c["data"]["tenant_id"], "kept");
    assert_eq!(c["data"]["root_password_ttl"], 7200);
    // Seal and unseal start the plugin again.
    bao.cli(&["operator", "seal"]).ok();
    bao.unseal();
    assert_eq!(
        bao.read("azure/config").ok().json()["data"]["tenant_id"],
        "kept"
    );
}

#[test]
fn a_killed_plugin_is_restarted_on_the_next_request() {
    let bao = Bao::dev();
    bao.register("azure");
    bao.enable("azure", "azure");
    bao.write("azure/config", &["tenant_id=t1"]).ok();
    for pid in bao.plugin_pids() {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
    }
    assert_eq!(
        bao.read("azure/config").ok().json()["data"]["tenant_id"],
        "t1"
    );
}

/// A host killed with SIGKILL sends no shutdown call. The plugin sees its output pipes lose
/// their reader and exits at once, abandoning the issuance under way (its application POST
/// held 30 s by the emulator) instead of finishing it: whatever it would still create would
/// reach Azure after the next active node rolled the work back.
#[test]
fn the_plugin_exits_at_once_when_its_host_is_killed() {
    let emu = Emulator::start(&[]);
    let bao = bao_with_emulator(&emu);
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let roles = format!(r#"[{{"role_name": "Reader", "scope": "/subscriptions/{sub}"}}]"#);
    bao.write(
        "azure/roles/r",
        &[
            &format!("azure_roles={roles}"),
            "credential_ready_timeout=0",
        ],
    )
    .ok();
    let plugins = bao.plugin_pids();
    assert!(!plugins.is_empty(), "the plugin runs");

    emu.add_fault(serde_json::json!({
        "service": "graph", "method": "POST", "path_contains": "/applications",
        "delay_ms": 30000, "times": 1
    }));
    let mut creds = Command::new(common::bao_bin())
        .args(["read", "-format=json", "azure/creds/r"])
        .env("BAO_ADDR", &bao.addr)
        .env("BAO_TOKEN", &bao.token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a creds read");
    assert!(
        wait_for(Duration::from_secs(30), || emu.faults_left() == 0),
        "the issuance's application POST reached the emulator"
    );

    let server = bao.server_pid().expect("server pid");
    Command::new("kill")
        .args(["-9", &server.to_string()])
        .status()
        .expect("kill the server");
    let killed = Instant::now();
    let exited = wait_for(Duration::from_secs(30), || {
        let running = bao.plugin_pids();
        !plugins.iter().any(|p| running.contains(p))
    });
    let took = killed.elapsed();
    let _ = creds.kill();
    let _ = creds.wait();
    assert!(exited, "the plugin outlived its host by 30 s");
    assert!(
        took < Duration::from_secs(3),
        "the plugin took {took:?} to exit after its host died"
    );
}
