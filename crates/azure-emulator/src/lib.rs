//! A local emulator of the Azure services the secrets engine talks to: the Entra ID token
//! service, Microsoft Graph v1.0, Azure Resource Manager (Microsoft.Authorization), the
//! Azure Arc identity endpoint and VM IMDS, plus an admin API for fault injection.
//!
//! It shares no code with the `azure-clients` crate on purpose. The contract for users is
//! in `docs/emulator.md`.

pub mod admin;
pub mod arc;
pub mod arm;
pub mod auth;
pub mod errors;
pub mod faults;
pub mod filter;
pub mod graph;
pub mod imds;
pub mod jwt;
pub mod keys;
pub mod paging;
pub mod policy;
pub mod replicas;
pub mod roles;
pub mod seed;
pub mod server;
pub mod state;
pub mod testing;
pub mod throttle;
pub mod tls;
pub mod token;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use errors::EmulatorError;
use errors::Service;
use faults::{Faults, RequestRecord};
use jwt::JwtKey;
use state::Directory;

/// Command-line configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub latency_ms: u64,
    pub propagation_delay_ms: u64,
    pub credential_delay_ms: u64,
    pub token_replicas: usize,
    pub replica_window_ms: u64,
    pub arc_token_dir: PathBuf,
    pub seed: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency_ms: 0,
            propagation_delay_ms: 0,
            credential_delay_ms: 0,
            token_replicas: 1,
            replica_window_ms: 0,
            arc_token_dir: PathBuf::from("/var/opt/azcmagent/tokens"),
            seed: None,
            cert_file: None,
        }
    }
}

/// The most token-service replicas the model takes.
pub const MAX_TOKEN_REPLICAS: usize = 64;

pub const USAGE: &str = "usage: azure-emulator [--listen ADDR:PORT] [--latency-ms N] \
[--propagation-delay-ms N] [--credential-delay-ms N] [--token-replicas N] \
[--replica-window-ms N] [--arc-token-dir DIR] [--seed FILE] \
[--cert-file PATH]";

impl Config {
    /// Parses the flags (without the program name). `--flag value` and `--flag=value` work.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, EmulatorError> {
        let mut c = Config::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            if flag == "--help" || flag == "-h" {
                return Err(EmulatorError::Args(USAGE.to_string()));
            }
            let mut value = || -> Result<String, EmulatorError> {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| EmulatorError::Args(format!("{flag} needs a value")))
            };
            let number = |v: String| -> Result<u64, EmulatorError> {
                v.parse::<u64>()
                    .map_err(|_| EmulatorError::Args(format!("{flag}: '{v}' is not a number")))
            };
            match flag.as_str() {
                "--listen" => {
                    let v = value()?;
                    c.listen = v
                        .parse()
                        .map_err(|_| EmulatorError::Args(format!("--listen: bad address '{v}'")))?;
                    if !c.listen.ip().is_loopback() {
                        return Err(EmulatorError::Args(format!(
                            "--listen: {v} is not a loopback address; the emulator serves loopback only"
                        )));
                    }
                }
                "--latency-ms" => c.latency_ms = number(value()?)?,
                "--propagation-delay-ms" => c.propagation_delay_ms = number(value()?)?,
                "--credential-delay-ms" => c.credential_delay_ms = number(value()?)?,
                "--token-replicas" => {
                    let n = number(value()?)?;
                    c.token_replicas = usize::try_from(n)
                        .ok()
                        .filter(|n| (1..=MAX_TOKEN_REPLICAS).contains(n))
                        .ok_or_else(|| {
                            EmulatorError::Args(format!(
                                "--token-replicas: must be between 1 and {MAX_TOKEN_REPLICAS}"
                            ))
                        })?;
                }
                "--replica-window-ms" => c.replica_window_ms = number(value()?)?,
                "--arc-token-dir" => c.arc_token_dir = PathBuf::from(value()?),
                "--seed" => c.seed = Some(PathBuf::from(value()?)),
                "--cert-file" => c.cert_file = Some(PathBuf::from(value()?)),
                other => {
                    return Err(EmulatorError::Args(format!(
                        "unknown argument '{other}'\n{USAGE}"
                    )))
                }
            }
        }
        Ok(c)
    }
}

/// Run-time settings, changeable through `POST /settings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Added to every API call.
    pub latency_ms: u64,
    /// How long a new object stays invisible to ARM principal lookups, group member adds and
    /// `POST /servicePrincipals`.
    pub propagation_delay_ms: u64,
    /// How long a new application, service principal, password or key is refused by the
    /// token endpoint (on every replica).
    pub credential_delay_ms: u64,
    /// Replicas of the directory behind the token endpoint; each token request lands on one
    /// at random (see [`replicas`]).
    pub token_replicas: usize,
    /// Each new object reaches each replica at its own time within this window after the
    /// credential delay.
    pub replica_window_ms: u64,
    /// Lifetime of the tokens issued from now on.
    pub token_lifetime_secs: u64,
    /// A realm the Arc challenge returns verbatim instead of a fresh key file.
    pub arc_realm_override: Option<String>,
    /// Default Graph page size.
    pub graph_page_size: usize,
    /// ARM page size.
    pub arm_page_size: usize,
    /// How long an `addPassword` / `removePassword` call keeps its object busy.
    pub password_write_ms: u64,
    /// Password writes in flight on one object beyond this get 503 `Directory_ConcurrencyViolation`.
    pub max_concurrent_password_writes: usize,
    /// Role assignments allowed per subscription.
    pub role_assignment_limit: usize,
    /// For this long after creation, Graph calls addressing an application or service
    /// principal by id answer 404 (Entra ID has no read-your-writes guarantee).
    pub read_delay_ms: u64,
    /// Graph writes (POST/PATCH/PUT/DELETE) allowed per second; 0 turns throttling off.
    pub graph_writes_per_sec: f64,
    /// Graph write burst size.
    pub graph_write_burst: u64,
    /// ARM writes (PUT/PATCH/POST/DELETE) allowed per second; 0 turns throttling off.
    pub arm_writes_per_sec: f64,
    /// ARM write burst size.
    pub arm_write_burst: u64,
    /// Passwords allowed on an application with a Microsoft-account audience (0: no limit).
    pub msa_app_password_limit: usize,
    /// Seconds added to the real time when the token endpoint judges a password's
    /// `startDateTime` / `endDateTime` (negative: the past). Nothing else uses it.
    pub password_clock_offset_secs: i64,
    /// Seconds added to the real time when stamping `createdDateTime` of new applications
    /// and `createdOn` of new role assignments (negative: objects made "long ago").
    pub created_clock_offset_secs: i64,
    /// The tenant's directory object quota (`directorySizeQuota.total`): applications,
    /// service principals and groups, live or in deleted items, count against it.
    pub directory_quota: usize,
    /// Password and key credentials one application or service principal may hold together
    /// (Entra ID documents only an overall object size limit; this models it).
    pub object_credential_limit: usize,
}

impl Settings {
    fn from_config(c: &Config) -> Self {
        Settings {
            latency_ms: c.latency_ms,
            propagation_delay_ms: c.propagation_delay_ms,
            credential_delay_ms: c.credential_delay_ms,
            token_replicas: c.token_replicas.max(1),
            replica_window_ms: c.replica_window_ms,
            token_lifetime_secs: 3599,
            arc_realm_override: None,
            graph_page_size: 100,
            arm_page_size: 100,
            password_write_ms: 50,
            max_concurrent_password_writes: 3,
            role_assignment_limit: 4000,
            read_delay_ms: 0,
            graph_writes_per_sec: 0.0,
            graph_write_burst: 100,
            arm_writes_per_sec: 0.0,
            arm_write_burst: 200,
            msa_app_password_limit: 2,
            password_clock_offset_secs: 0,
            created_clock_offset_secs: 0,
            directory_quota: 50_000,
            object_credential_limit: 1000,
        }
    }

    pub fn propagation(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.propagation_delay_ms)
    }

    pub fn credential_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.credential_delay_ms)
    }

    /// The time by which the token endpoint judges a password's validity window.
    pub fn password_clock(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::seconds(self.password_clock_offset_secs)
    }

    /// The creation time stamped on a new application or role assignment.
    pub fn created_clock(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::seconds(self.created_clock_offset_secs)
    }
}

/// Base URLs of every listener.
#[derive(Debug, Clone)]
pub struct Urls {
    /// With a trailing slash.
    pub authority: String,
    pub graph: String,
    pub arm: String,
    pub identity_endpoint: String,
    pub imds: String,
    pub imds_vm: String,
    pub admin: String,
}

/// State shared by every listener.
pub struct Shared {
    dir: Mutex<Directory>,
    settings: Mutex<Settings>,
    pub faults: Mutex<Faults>,
    log: Mutex<Vec<RequestRecord>>,
    started: Instant,
    pub jwt: JwtKey,
    /// The built-in Kubernetes-style OIDC issuer (workload identity federation tests).
    pub cluster: keys::ClusterIssuer,
    pub urls: Urls,
    /// The Arc token directory, when it exists or could be created.
    pub arc_dir: Option<PathBuf>,
    /// Outstanding Arc challenge files and their secrets.
    pub arc_keys: Mutex<HashMap<PathBuf, arc::ArcKey>>,
    /// Password writes in flight per object id.
    pub inflight: Mutex<HashMap<String, usize>>,
    /// Write token buckets of Graph and ARM.
    buckets: Mutex<HashMap<&'static str, throttle::Bucket>>,
    /// The token service's replica model.
    pub replicas: replicas::Replicas,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn dir(&self) -> MutexGuard<'_, Directory> {
        relock(&self.dir)
    }

    pub fn settings(&self) -> Settings {
        relock(&self.settings).clone()
    }

    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) -> Settings {
        let mut s = relock(&self.settings);
        f(&mut s);
        s.clone()
    }

    pub fn record(&self, rec: RequestRecord) {
        relock(&self.log).push(rec);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        relock(&self.log).clone()
    }

    pub fn clear_requests(&self) {
        relock(&self.log).clear();
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        relock(&self.faults)
    }

    pub fn arc_keys(&self) -> MutexGuard<'_, HashMap<PathBuf, arc::ArcKey>> {
        relock(&self.arc_keys)
    }

    pub fn inflight(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        relock(&self.inflight)
    }

    /// Takes a write token for `service` when write throttling is on (`None` when off).
    pub fn take_write_token(&self, service: Service) -> Option<throttle::Take> {
        let s = self.settings();
        let (rate, burst) = match service {
            Service::Graph => (s.graph_writes_per_sec, s.graph_write_burst),
            Service::Arm => (s.arm_writes_per_sec, s.arm_write_burst),
            _ => return None,
        };
        if rate <= 0.0 || !rate.is_finite() {
            return None;
        }
        let mut buckets = relock(&self.buckets);
        let bucket = buckets
            .entry(service.as_str())
            .or_insert_with(|| throttle::Bucket::full(burst));
        Some(bucket.take(rate, burst, Instant::now()))
    }
}

/// A running emulator.
pub struct Emulator {
    env: Vec<(String, String)>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    temp_dir: Option<PathBuf>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), EmulatorError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| EmulatorError::io(format!("bind {addr}"), e))?;
    let local = l
        .local_addr()
        .map_err(|e| EmulatorError::io("local_addr", e))?;
    Ok((l, local))
}

fn host_of(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

fn prepare_arc_dir(dir: &Path) -> Option<PathBuf> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the Arc token directory; the Arc endpoint will answer 500");
        return None;
    }
    match std::fs::canonicalize(dir) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot resolve the Arc token directory");
            None
        }
    }
}

impl Emulator {
    /// Binds every listener, generates the CA, seeds the directory and starts serving.
    pub async fn start(config: Config) -> Result<Emulator, EmulatorError> {
        if !config.listen.ip().is_loopback() {
            return Err(EmulatorError::Args(format!(
                "{} is not a loopback address",
                config.listen
            )));
        }
        let (token_l, token_addr) = bind(config.listen).await?;
        let mut other = config.listen;
        other.set_port(0);
        let (graph_l, graph_addr) = bind(other).await?;
        let (arm_l, arm_addr) = bind(other).await?;
        let (arc_l, arc_addr) = bind(other).await?;
        let (imds_l, imds_addr) = bind(other).await?;
        let (admin_l, admin_addr) = bind(other).await?;
        let host = host_of(&token_addr);

        let urls = Urls {
            authority: format!("https://{host}:{}/", token_addr.port()),
            graph: format!("https://{host}:{}", graph_addr.port()),
            arm: format!("https://{host}:{}", arm_addr.port()),
            identity_endpoint: format!(
                "http://{host}:{}/metadata/identity/oauth2/token",
                arc_addr.port()
            ),
            imds: format!("http://{host}:{}", arc_addr.port()),
            imds_vm: format!("http://{host}:{}", imds_addr.port()),
            admin: format!("http://{host}:{}", admin_addr.port()),
        };

        // Everything that can fail is done before any file is written.
        let seed_doc = match &config.seed {
            Some(p) => Some(seed::SeedFile::load(p)?),
            None => None,
        };
        let (dir, root_secret, root_client_id) = seed::build_directory(seed_doc.as_ref())?;
        let jwt = JwtKey::generate()?;
        let cluster = keys::ClusterIssuer::generate(format!("{}cluster-issuer/", urls.authority))?;
        let tls = tls::generate()?;

        let (cert_path, temp_dir) = match &config.cert_file {
            Some(p) => (p.clone(), None),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("azure-emulator-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| EmulatorError::io(format!("create {}", dir.display()), e))?;
                (dir.join("ca.pem"), Some(dir))
            }
        };
        if let Err(e) = std::fs::write(&cert_path, &tls.ca_pem) {
            if let Some(dir) = &temp_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(EmulatorError::io(
                format!("write {}", cert_path.display()),
                e,
            ));
        }
        let cert_path = std::fs::canonicalize(&cert_path).unwrap_or(cert_path);

        let shared = Arc::new(Shared {
            dir: Mutex::new(dir),
            settings: Mutex::new(Settings::from_config(&config)),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
            jwt,
            cluster,
            urls: urls.clone(),
            arc_dir: prepare_arc_dir(&config.arc_token_dir),
            arc_keys: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            replicas: replicas::Replicas::new(),
        });

        let acceptor = TlsAcceptor::from(tls.server_config.clone());
        let mut tasks = Vec::new();
        let listeners = [
            (
                token_l,
                Some(acceptor.clone()),
                Service::Token,
                token::router(shared.clone()),
            ),
            (
                graph_l,
                Some(acceptor.clone()),
                Service::Graph,
                graph::router(shared.clone()),
            ),
            (
                arm_l,
                Some(acceptor),
                Service::Arm,
                arm::router(shared.clone()),
            ),
            (arc_l, None, Service::Arc, arc::router(shared.clone())),
            (imds_l, None, Service::Imds, imds::router(shared.clone())),
        ];
        for (l, tls, service, router) in listeners {
            tasks.push(tokio::spawn(server::serve(
                l,
                tls,
                service,
                router,
                shared.clone(),
            )));
        }
        let admin_router = admin::router(shared.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(admin_l, admin_router).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        }));

        let (tenant, sub) = {
            let d = shared.dir();
            (d.tenant_id.clone(), d.subscription_id.clone())
        };
        let env = vec![
            ("AZURE_TENANT_ID".to_string(), tenant),
            ("AZURE_SUBSCRIPTION_ID".to_string(), sub),
            ("AZURE_CLIENT_ID".to_string(), root_client_id),
            ("AZURE_CLIENT_SECRET".to_string(), root_secret),
            ("AZURE_AUTHORITY_HOST".to_string(), urls.authority.clone()),
            ("AZURE_GRAPH_ENDPOINT".to_string(), urls.graph.clone()),
            (
                "AZURE_RESOURCE_MANAGER_ENDPOINT".to_string(),
                urls.arm.clone(),
            ),
            (
                "IDENTITY_ENDPOINT".to_string(),
                urls.identity_endpoint.clone(),
            ),
            ("IMDS_ENDPOINT".to_string(), urls.imds.clone()),
            ("EMULATOR_ADMIN".to_string(), urls.admin.clone()),
            (
                "SSL_CERT_FILE".to_string(),
                cert_path.to_string_lossy().into_owned(),
            ),
            ("IMDS_VM_ENDPOINT".to_string(), urls.imds_vm.clone()),
        ];
        tracing::info!(
            authority = %urls.authority,
            graph = %urls.graph,
            arm = %urls.arm,
            identity = %urls.identity_endpoint,
            imds_vm = %urls.imds_vm,
            admin = %urls.admin,
            "azure-emulator listening"
        );
        Ok(Emulator {
            env,
            tasks,
            shared,
            temp_dir,
        })
    }

    /// The `KEY=VALUE` pairs the binary prints, in order.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The value of one printed variable.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Stops the listeners and removes the emulator's temporary files.
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        let keys: Vec<PathBuf> = self.shared.arc_keys().drain().map(|(p, _)| p).collect();
        for p in keys {
            let _ = std::fs::remove_file(p);
        }
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Config, EmulatorError> {
        Config::from_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let c = args(&[
            "--listen",
            "127.0.0.1:0",
            "--latency-ms=5",
            "--propagation-delay-ms",
            "7",
            "--credential-delay-ms",
            "9",
            "--arc-token-dir",
            "/tmp/x",
            "--cert-file",
            "/tmp/ca.pem",
            "--token-replicas",
            "4",
            "--replica-window-ms=250",
        ])
        .unwrap();
        assert_eq!((c.token_replicas, c.replica_window_ms), (4, 250));
        assert!(args(&["--token-replicas", "0"]).is_err());
        assert_eq!(
            (c.latency_ms, c.propagation_delay_ms, c.credential_delay_ms),
            (5, 7, 9)
        );
        assert_eq!(c.arc_token_dir, PathBuf::from("/tmp/x"));
        assert!(args(&["--listen", "0.0.0.0:0"]).is_err());
        assert!(args(&["--latency-ms", "x"]).is_err());
        assert!(args(&["--latency-ms"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--listen", "[::1]:0"]).is_ok());
    }
}
