//! A 3-node OpenBao raft cluster on loopback, for fault and HA tests.
//!
//! Each node is its own `bao server` process with its own raft directory, plugin directory
//! (holding the same plugin binary), `api_addr`/`cluster_addr` on free 127.0.0.1 ports and
//! `retry_join` towards the others. Standby reads stay on (OpenBao's default;
//! `disable_standby_reads` is not set), so standbys mount the plugin and serve reads. The raw
//! storage endpoint is on. Each node has its own environment, which OpenBao passes on to its
//! plugin processes: that is how a test points a node's plugin at an emulator.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{bao_bin, plugin_bin, sha256_of, CliOutput};

/// One `bao server` process of the cluster.
pub struct Node {
    pub name: String,
    pub addr: String,
    pub dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub log: PathBuf,
    config: PathBuf,
    /// Added to the server's environment (and so to its plugins').
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn command(&self) -> Command {
        let mut cmd = Command::new(bao_bin());
        cmd.env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            // The plugin logs at the server's level (its environment's BAO_LOG_LEVEL).
            .env("BAO_LOG_LEVEL", "debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = self
            .command()
            .args([
                "server",
                &format!("-config={}", self.config.display()),
                "-log-level=debug",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start bao server");
        self.child = Some(child);
    }

    /// Runs the `bao` CLI against this node with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> CliOutput {
        let out = self
            .command()
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("VAULT_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run bao");
        CliOutput::from(out)
    }

    /// `sys/leader` of this node (unauthenticated), or `None` while it does not answer.
    pub fn leader_info(&self) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-s", "-m", "2", &format!("{}/v1/sys/leader", self.addr)])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// True when this node is the active node.
    pub fn is_active(&self) -> bool {
        self.leader_info()
            .is_some_and(|v| v["is_self"].as_bool() == Some(true))
    }

    /// `sys/seal-status`, or `None` while the node does not answer.
    pub fn seal_status(&self) -> Option<Value> {
        let out = Command::new("curl")
            .args([
                "-s",
                "-m",
                "2",
                &format!("{}/v1/sys/seal-status", self.addr),
            ])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Process ids of the plugin processes this node started.
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

    /// SIGKILLs the server and then its plugin processes (a plugin whose host died is not
    /// what these tests look at).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.plugin_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.plugin_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three raft nodes, initialised and unsealed, with the plugin registered as `azure`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub token: String,
    unseal_key: String,
    _dir: tempfile::TempDir,
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// Starts three nodes; node `i` gets `envs[i]` (or the last given) in its environment.
    pub fn start(envs: &[Vec<(String, String)>]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| (super::free_port(), super::free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, (api, cluster)) in ports.iter().enumerate() {
            let name = format!("node{}", i + 1);
            let ndir = dir.path().join(&name);
            let plugin_dir = ndir.join("plugins");
            let data = ndir.join("raft");
            std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
            std::fs::create_dir_all(&data).expect("raft dir");
            std::fs::copy(plugin_bin(), plugin_dir.join("azure")).expect("copy plugin");
            let joins: String = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (p, _))| {
                    format!(
                        "  retry_join {{\n    leader_api_addr = \"http://127.0.0.1:{p}\"\n  }}\n"
                    )
                })
                .collect();
            let config = ndir.join("server.hcl");
            std::fs::write(
                &config,
                format!(
                    "storage \"raft\" {{\n  path = \"{data}\"\n  node_id = \"{name}\"\n{joins}}}\n\
                     listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                     plugin_directory = \"{plugins}\"\n\
                     api_addr = \"http://127.0.0.1:{api}\"\n\
                     cluster_addr = \"http://127.0.0.1:{cluster}\"\n\
                     raw_storage_endpoint = true\n\
                     disable_mlock = true\n",
                    data = data.display(),
                    plugins = plugin_dir.display(),
                ),
            )
            .expect("write config");
            let env = envs.get(i).or(envs.last()).cloned().unwrap_or_default();
            nodes.push(Node {
                name,
                addr: format!("http://127.0.0.1:{api}"),
                log: ndir.join("server.log"),
                dir: ndir,
                plugin_dir,
                config,
                env,
                child: None,
            });
        }
        nodes[0].spawn();
        assert!(
            wait_for(Duration::from_secs(30), || nodes[0].seal_status().is_some()),
            "node1 did not start:\n{}",
            nodes[0].log_text()
        );
        let init = nodes[0]
            .cli(
                "",
                &[
                    "operator",
                    "init",
                    "-key-shares=1",
                    "-key-threshold=1",
                    "-format=json",
                ],
            )
            .ok()
            .json();
        let unseal_key = init["unseal_keys_b64"][0]
            .as_str()
            .expect("unseal key")
            .to_string();
        let token = init["root_token"].as_str().expect("root token").to_string();
        let mut cluster = Cluster {
            nodes,
            token,
            unseal_key,
            _dir: dir,
        };
        cluster.unseal(0);
        assert!(
            wait_for(Duration::from_secs(30), || cluster.nodes[0].is_active()),
            "node1 did not become active:\n{}",
            cluster.nodes[0].log_text()
        );
        for i in 1..3 {
            cluster.nodes[i].spawn();
            cluster.unseal(i);
        }
        for i in 1..3 {
            assert!(
                cluster.wait_standby(i, Duration::from_secs(60)),
                "{} did not join as a standby:\n{}",
                cluster.nodes[i].name,
                cluster.nodes[i].log_text()
            );
        }
        // Autopilot adds joining nodes as non-voters and promotes them once stable; a
        // failover needs two voters left.
        let voters = wait_for(Duration::from_secs(90), || cluster.voters() == 3);
        assert!(voters, "the three nodes did not all become raft voters");
        cluster.register_plugin();
        cluster
    }

    /// How many raft voters the active node reports.
    pub fn voters(&self) -> usize {
        let Some(leader) = (0..self.nodes.len()).find(|&i| self.nodes[i].is_active()) else {
            return 0;
        };
        let out = self.cli(leader, &["operator", "raft", "list-peers", "-format=json"]);
        if out.code != 0 {
            return 0;
        }
        out.json()["data"]["config"]["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["voter"].as_bool() == Some(true))
            .count()
    }

    /// Unseals node `i` (it joins the raft cluster through `retry_join`), retrying while
    /// it is still joining.
    pub fn unseal(&self, i: usize) {
        let node = &self.nodes[i];
        let ok = wait_for(Duration::from_secs(60), || {
            if node.seal_status().is_none() {
                return false;
            }
            let _ = node.cli("", &["operator", "unseal", &self.unseal_key]);
            node.seal_status()
                .is_some_and(|s| s["sealed"].as_bool() == Some(false))
        });
        assert!(ok, "{} did not unseal:\n{}", node.name, node.log_text());
    }

    /// Waits until node `i` answers as an unsealed standby that knows the active node.
    pub fn wait_standby(&self, i: usize, timeout: Duration) -> bool {
        wait_for(timeout, || {
            self.nodes[i].leader_info().is_some_and(|v| {
                v["is_self"].as_bool() == Some(false)
                    && v["leader_address"].as_str().is_some_and(|a| !a.is_empty())
            })
        })
    }

    /// The index of the active node, waiting up to `timeout` for one.
    pub fn leader(&self, timeout: Duration) -> usize {
        let mut found = None;
        let ok = wait_for(timeout, || {
            found = (0..self.nodes.len())
                .find(|&i| self.nodes[i].is_running() && self.nodes[i].is_active());
            found.is_some()
        });
        if !ok {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| {
                    let text = n.log_text();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    format!(
                        "--- {} (last lines, newest first):\n{}",
                        n.name,
                        tail.join("\n")
                    )
                })
                .collect();
            panic!("no active node\n{}", logs.join("\n"));
        }
        found.unwrap_or(0)
    }

    /// Indexes of running nodes other than the active one.
    pub fn standbys(&self) -> Vec<usize> {
        let leader = self.leader(Duration::from_secs(30));
        (0..self.nodes.len())
            .filter(|&i| i != leader && self.nodes[i].is_running())
            .collect()
    }

    /// The CLI against node `i` with the root token.
    pub fn cli(&self, i: usize, args: &[&str]) -> CliOutput {
        self.nodes[i].cli(&self.token, args)
    }

    fn register_plugin(&self) {
        let leader = self.leader(Duration::from_secs(30));
        let sha = sha256_of(&self.nodes[leader].plugin_dir.join("azure"));
        self.cli(
            leader,
            &[
                "plugin",
                "register",
                &format!("-sha256={sha}"),
                "secret",
                "azure",
            ],
        )
        .ok();
    }

    /// Enables the plugin at `path` (through the active node) and waits until every running
    /// standby has mounted it too (its plugin process runs).
    pub fn enable(&self, path: &str) {
        let leader = self.leader(Duration::from_secs(30));
        self.cli(
            leader,
            &["secrets", "enable", &format!("-path={path}"), "azure"],
        )
        .ok();
        for i in 0..self.nodes.len() {
            if i == leader || !self.nodes[i].is_running() {
                continue;
            }
            let mounted = wait_for(Duration::from_secs(60), || {
                let out = self.cli(i, &["read", &format!("{path}/config")]);
                !out.stderr.contains("no handler for route")
            });
            assert!(mounted, "{} did not mount {path}", self.nodes[i].name);
        }
    }

    /// Starts node `i` again after a kill and unseals it.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        assert!(
            wait_for(Duration::from_secs(30), || self.nodes[i]
                .seal_status()
                .is_some()),
            "{} did not start again",
            self.nodes[i].name
        );
        self.unseal(i);
    }

    /// Reads a raw storage entry (`sys/raw/<key>`) through the active node.
    pub fn raw_get(&self, key: &str) -> Option<Value> {
        let leader = self.leader(Duration::from_secs(30));
        let out = self.cli(leader, &["read", "-format=json", &format!("sys/raw/{key}")]);
        if out.code != 0 {
            return None;
        }
        Some(out.json())
    }
}
