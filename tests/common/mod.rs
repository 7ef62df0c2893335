//! Shared harness of the black-box tests: a real OpenBao server (dev or persistent) on a free
//! loopback port, the plugin registered in it, and the `bao` CLI to drive it.
#![allow(dead_code)]

#[path = "../bins/mod.rs"]
mod bins;
pub mod certs;
pub mod cluster;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ROOT_TOKEN: &str = "root";

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned `bao` binary, installed into `.venv` by `scripts/install-tools.sh` if needed.
pub fn bao_bin() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let status = Command::new(root().join("scripts/install-tools.sh"))
                .status()
                .expect("run scripts/install-tools.sh");
            assert!(status.success(), "installing OpenBao failed");
            root().join(".venv/bin/bao")
        })
        .clone()
}

pub fn plugin_bin() -> PathBuf {
    bins::bin_path("vault-plugin-secrets-azure")
}

/// The path of workspace binary `name` (built beside this test).
pub fn workspace_bin(name: &str) -> PathBuf {
    bins::bin_path(name)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Result of one CLI call.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A running OpenBao server, stopped on drop.
pub struct Bao {
    pub addr: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    pub plugin_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    config: Option<PathBuf>,
    unseal_key: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

impl Bao {
    /// A dev server (in-memory) with the plugin binary in its plugin directory.
    pub fn dev() -> Self {
        Self::dev_with_env(&[])
    }

    /// A dev server whose environment (and so the plugin's) has `env` added.
    pub fn dev_with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
        let mut bao = Self {
            addr: String::new(),
            token: ROOT_TOKEN.into(),
            log: dir.path().join("server.log"),
            dir,
            plugin_dir,
            child: None,
            config: None,
            unseal_key: None,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        bao.install_plugin("azure");
        bao.spawn_dev();
        bao
    }

    /// A server on raft storage in its own directory, initialised and unsealed, with the
    /// raw storage endpoint on (so tests can write storage in the Go engine's layout).
    pub fn persistent() -> Self {
        Self::persistent_with_env(&[])
    }

    pub fn persistent_with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
        let port = free_port();
        let cluster_port = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let config = dir.path().join("server.hcl");
        std::fs::write(
            &config,
            format!(
                "storage \"raft\" {{\n path = \"{data}\"\n node_id = \"node1\"\n}}\n\
                 listener \"tcp\" {{\n address = \"127.0.0.1:{port}\"\n cluster_address = \"127.0.0.1:{cluster_port}\"\n tls_disable = true\n}}\n\
                 plugin_directory = \"{plugins}\"\napi_addr = \"http://127.0.0.1:{port}\"\n\
                 cluster_addr = \"http://127.0.0.1:{cluster_port}\"\nraw_storage_endpoint = true\n",
                data = data.display(),
                plugins = plugin_dir.display(),
            ),
        )
        .expect("write config");
        let mut bao = Self {
            addr: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            log: dir.path().join("server.log"),
            dir,
            plugin_dir,
            child: None,
            config: Some(config),
            unseal_key: None,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        bao.install_plugin("azure");
        bao.spawn_persistent();
        let init = bao
            .cli(&[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ])
            .ok()
            .json();
        bao.unseal_key = Some(
            init["unseal_keys_b64"][0]
                .as_str()
                .expect("key")
                .to_string(),
        );
        bao.token = init["root_token"].as_str().expect("root token").to_string();
        bao.unseal();
        bao
    }

    pub fn install_plugin(&self, name: &str) {
        std::fs::copy(plugin_bin(), self.plugin_dir.join(name)).expect("copy plugin");
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bao_bin());
        cmd.env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn spawn_dev(&mut self) {
        let port = free_port();
        self.addr = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = self
            .command()
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-plugin-dir={}", self.plugin_dir.display()),
                "-log-level=debug",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start bao server");
        self.child = Some(child);
        self.wait_listening(false);
    }

    fn spawn_persistent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let config = self.config.clone().expect("config");
        let child = self
            .command()
            .args([
                "server",
                &format!("-config={}", config.display()),
                "-log-level=debug",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start bao server");
        self.child = Some(child);
        self.wait_listening(true);
    }

    fn wait_listening(&self, sealed_ok: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = self.cli(&["status", "-format=json"]);
            // `bao status` exits 2 while sealed, 0 when unsealed, 1 when unreachable.
            if out.code == 0 || (sealed_ok && out.code == 2) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("OpenBao did not start; log:\n{}", self.log_text());
    }

    pub fn unseal(&self) {
        let key = self.unseal_key.clone().expect("unseal key");
        self.cli(&["operator", "unseal", &key]).ok();
    }

    /// Stops the server (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a persistent server again on the same storage and unseals it.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_persistent();
        self.unseal();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the `bao` CLI against this server.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = self
            .command()
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("VAULT_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .expect("run bao");
        CliOutput::from(out)
    }

    /// `bao write -format=json path k=v...`
    pub fn write(&self, path: &str, kv: &[&str]) -> CliOutput {
        let mut args = vec!["write", "-format=json", path];
        args.extend_from_slice(kv);
        self.cli(&args)
    }

    pub fn read(&self, path: &str) -> CliOutput {
        self.cli(&["read", "-format=json", path])
    }

    /// Registers the plugin under `name` with its SHA-256 and version.
    pub fn register(&self, name: &str) {
        let sha = sha256_of(&self.plugin_dir.join(name));
        let version = format!("-version=v{}", env!("CARGO_PKG_VERSION"));
        self.cli(&[
            "plugin",
            "register",
            &format!("-sha256={sha}"),
            &version,
            "secret",
            name,
        ])
        .ok();
    }

    pub fn enable(&self, path: &str, name: &str) {
        self.cli(&["secrets", "enable", &format!("-path={path}"), name])
            .ok();
    }

    /// The server's process id.
    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The storage prefix of the mount at `path` (`"azure/"`), as `sys/raw` names it:
    /// `logical/<mount uuid>` (no trailing slash).
    pub fn mount_storage_base(&self, path: &str) -> String {
        mount_storage_base(
            self.cli(&["secrets", "list", "-detailed", "-format=json"]),
            path,
        )
    }

    /// The keys `bao list` gives for `path` (none when it lists nothing or fails).
    pub fn list_keys(&self, path: &str) -> Vec<String> {
        let out = self.cli(&["list", "-format=json", path]);
        if out.code == 0 {
            serde_json::from_value(out.json()).unwrap_or_default()
        } else {
            Vec::new()
        }
    }

    /// Process ids of running plugin processes started from this server's plugin directory.
    pub fn plugin_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep")
            .args(["-f", &format!("{}/", self.plugin_dir.display())])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
        // Plugin processes the server left behind.
        for pid in self.plugin_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Reads lines of a child's stdout until `READY`, returning `KEY=VALUE` pairs.
pub fn read_env_lines(child: &mut Child) -> Vec<(String, String)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut pairs = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read line");
        if line == "READY" {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            pairs.push((k.to_string(), v.to_string()));
        }
    }
    pairs
}

pub fn emulator_bin() -> PathBuf {
    bins::bin_path("azure-emulator")
}

/// A running Azure emulator, killed on drop.
pub struct Emulator {
    _process: azure_emulator::testing::EmulatorProcess,
    pub env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Emulator {
    pub fn start(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("arc-tokens");
        let tokens = tokens.to_string_lossy().into_owned();
        let mut args = vec!["--arc-token-dir", tokens.as_str()];
        args.extend_from_slice(extra_args);
        let process = azure_emulator::testing::EmulatorProcess::spawn(&emulator_bin(), &args);
        let env = process.env.clone();
        assert!(!env.is_empty(), "emulator printed nothing");
        Self {
            _process: process,
            env,
            _dir: dir,
        }
    }

    pub fn var(&self, key: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("emulator did not print {key}"))
    }

    /// The variables a plugin needs to reach this emulator as a custom cloud (no secrets).
    pub fn cloud_env(&self) -> Vec<(String, String)> {
        [
            "AZURE_AUTHORITY_HOST",
            "AZURE_GRAPH_ENDPOINT",
            "AZURE_RESOURCE_MANAGER_ENDPOINT",
            "SSL_CERT_FILE",
        ]
        .iter()
        .map(|k| (k.to_string(), self.var(k)))
        .collect()
    }

    /// `bao write <mount>/config ...` arguments for the seeded root identity.
    pub fn config_args(&self) -> Vec<String> {
        vec![
            format!("tenant_id={}", self.var("AZURE_TENANT_ID")),
            format!("subscription_id={}", self.var("AZURE_SUBSCRIPTION_ID")),
            format!("client_id={}", self.var("AZURE_CLIENT_ID")),
            format!("client_secret={}", self.var("AZURE_CLIENT_SECRET")),
        ]
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let url = format!("{}{}", self.var("EMULATOR_ADMIN"), path);
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-f", "-X", method, &url]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d", b]);
        }
        let out = cmd.output().expect("curl");
        assert!(
            out.status.success(),
            "admin {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every object in the emulator (`GET /state`).
    pub fn state(&self) -> Value {
        serde_json::from_str(&self.curl("GET", "/state", None)).expect("state JSON")
    }

    pub fn add_fault(&self, fault: Value) {
        self.curl("POST", "/faults", Some(&fault.to_string()));
    }

    pub fn clear_faults(&self) {
        self.curl("DELETE", "/faults", None);
    }

    /// How many calls the rules of the fault list still have left to fail.
    pub fn faults_left(&self) -> u64 {
        let v: Value = serde_json::from_str(&self.curl("GET", "/faults", None)).unwrap_or_default();
        v["faults"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["times"].as_u64().unwrap_or(0))
            .sum()
    }

    pub fn settings(&self, settings: Value) {
        self.curl("POST", "/settings", Some(&settings.to_string()));
    }

    pub fn requests(&self) -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&self.curl("GET", "/requests", None)).expect("requests JSON");
        match v {
            Value::Array(a) => a,
            other => other["requests"].as_array().cloned().unwrap_or_default(),
        }
    }

    pub fn clear_requests(&self) {
        self.curl("DELETE", "/requests", None);
    }

    /// A Graph token of the seeded root identity.
    /// HTTP status of a client-credentials token request for Graph with this secret.
    pub fn token_status(&self, client_id: &str, secret: &str) -> u16 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--cacert", &self.var("SSL_CERT_FILE")])
            .arg(certs::token_url(self))
            .args(["--data-urlencode", "grant_type=client_credentials"])
            .args(["--data-urlencode", &format!("client_id={client_id}")])
            .args(["--data-urlencode", &format!("client_secret={secret}")])
            .args([
                "--data-urlencode",
                &format!("scope={}/.default", self.var("AZURE_GRAPH_ENDPOINT")),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    pub fn root_graph_token(&self) -> String {
        let url = format!(
            "{}{}/oauth2/v2.0/token",
            self.var("AZURE_AUTHORITY_HOST"),
            self.var("AZURE_TENANT_ID")
        );
        let out = Command::new("curl")
            .args(["-s", "--cacert", &self.var("SSL_CERT_FILE"), &url])
            .args(["--data-urlencode", "grant_type=client_credentials"])
            .args([
                "--data-urlencode",
                &format!("client_id={}", self.var("AZURE_CLIENT_ID")),
            ])
            .args([
                "--data-urlencode",
                &format!("client_secret={}", self.var("AZURE_CLIENT_SECRET")),
            ])
            .args([
                "--data-urlencode",
                &format!("scope={}/.default", self.var("AZURE_GRAPH_ENDPOINT")),
            ])
            .output()
            .expect("curl");
        let token: Value = serde_json::from_slice(&out.stdout).expect("token JSON");
        token["access_token"]
            .as_str()
            .expect("access token")
            .to_string()
    }

    /// POSTs `body` to Graph `path` (under `/v1.0/`) as the root identity.
    pub fn graph_post(&self, path: &str, body: &Value) -> Value {
        let out = Command::new("curl")
            .args([
                "-s",
                "-f",
                "--cacert",
                &self.var("SSL_CERT_FILE"),
                "-X",
                "POST",
            ])
            .args([
                "-H",
                &format!("Authorization: Bearer {}", self.root_graph_token()),
            ])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ])
            .arg(format!("{}/v1.0/{path}", self.var("AZURE_GRAPH_ENDPOINT")))
            .output()
            .expect("curl");
        assert!(out.status.success(), "POST {path} failed");
        serde_json::from_slice(&out.stdout).expect("Graph JSON")
    }

    /// Creates an application (and, with `with_sp`, its service principal, which it needs to
    /// obtain tokens) as the root identity; returns (object id, app id).
    pub fn create_app(&self, name: &str, with_sp: bool) -> (String, String) {
        let app = self.graph_post(
            "applications",
            &serde_json::json!({"displayName": name, "signInAudience": "AzureADMyOrg"}),
        );
        let app_id = app["appId"].as_str().expect("appId").to_string();
        if with_sp {
            self.graph_post("servicePrincipals", &serde_json::json!({ "appId": app_id }));
        }
        (app["id"].as_str().expect("id").to_string(), app_id)
    }

    /// Applications whose display name starts with `vault-`.
    pub fn vault_apps(&self) -> Vec<Value> {
        self.state()["applications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                a["displayName"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("vault-"))
            })
            .collect()
    }
}

/// An OpenBao dev server whose plugin reaches `emu` as its cloud, with the plugin enabled
/// at `azure/` and configured with the emulator's root identity.
pub fn bao_with_emulator(emu: &Emulator) -> Bao {
    let env = emu.cloud_env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bao = Bao::dev_with_env(&pairs);
    bao.register("azure");
    bao.enable("azure", "azure");
    let args = emu.config_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bao.write("azure/config", &refs).ok();
    bao
}

/// Every password of application `object_id` in the emulator.
pub fn app_passwords(emu: &Emulator, object_id: &str) -> Vec<Value> {
    emu.state()["applications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["id"] == object_id)
        .flat_map(|a| {
            a["passwordCredentials"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// Key ids of the passwords the engine made for static roles on `object_id`, sorted.
pub fn static_password_ids(emu: &Emulator, object_id: &str) -> Vec<String> {
    let mut keys: Vec<String> = app_passwords(emu, object_id)
        .into_iter()
        .filter(|p| {
            p["displayName"]
                .as_str()
                .is_some_and(|n| n.starts_with("vault-static-"))
        })
        .filter_map(|p| p["keyId"].as_str().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

/// `logical/<uuid>` of mount `path` (`"azure/"`) from `secrets list -format=json` output.
pub fn mount_storage_base(mounts: CliOutput, path: &str) -> String {
    let mounts = mounts.ok().json();
    format!(
        "logical/{}",
        mounts[path]["uuid"].as_str().expect("mount uuid")
    )
}
