//! OpenBao's declarative plugins (issue 13, point 1): the plugin packed as a `FROM scratch` OCI
//! image by `scripts/oci-image.py`, pushed with skopeo to a real registry (CNCF distribution,
//! Debian's `docker-registry`) on loopback behind TLS from a CA this test makes, then an
//! OpenBao server whose configuration names the image downloads it, checks the binary's
//! SHA-256, registers and runs it, and the mount issues a credential through the emulator.
//! The server trusts the registry only through `SSL_CERT_FILE`; a wrong `sha256sum` and an
//! untrusted registry each stop the server at start-up.
//!
//! The image holds the plugin built beside this test, or the binary named by
//! `PLUGIN_IMAGE_BINARY` (`make oci-test` passes the static release binary).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bao_bin, free_port, root, sha256_of, Emulator};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};

const BINARY_NAME: &str = "vault-plugin-secrets-azure";

fn version_tag() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// Stops a child process on drop (registry, OpenBao): SIGTERM, so OpenBao stops its plugin
/// processes too, then SIGKILL if it has not exited within 15 s.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn install_registry_tools() {
    let status = Command::new(root().join("scripts/install-registry.sh"))
        .status()
        .expect("run scripts/install-registry.sh");
    assert!(
        status.success(),
        "installing docker-registry and skopeo failed"
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, leaf PEM, leaf key PEM).
fn registry_tls() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "oci-install test registry CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "oci-install test registry");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

/// A registry on 127.0.0.1 over TLS, storing under `dir`; returns its `host:port`.
fn start_registry(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> (Guard, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
             http:\n  addr: {addr}\n  tls:\n    certificate: {cert}\n    key: {key}\n",
            storage = dir.join("storage").display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .expect("registry config");
    let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let guard = Guard(child);
    // Ready when /v2/ answers over TLS with our CA.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-sS", "-f", "-o", "/dev/null", "--cacert"])
            .arg(ca)
            .arg(format!("https://{addr}/v2/"))
            .output()
            .expect("curl");
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registry did not start: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, addr)
}

/// Builds the image with scripts/oci-image.py; returns the script's JSON summary.
fn build_image(dir: &Path) -> Value {
    let binary = std::env::var_os("PLUGIN_IMAGE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(common::plugin_bin);
    let out = Command::new("python3")
        .arg(root().join("scripts/oci-image.py"))
        .arg("--binary")
        .arg(&binary)
        .args(["--name", BINARY_NAME])
        .args(["--version", env!("CARGO_PKG_VERSION")])
        .args(["--tag", &version_tag()])
        .arg("--out-dir")
        .arg(dir.join("layout"))
        .arg("--archive")
        .arg(dir.join("image.tar"))
        // Fast compression: the debug binary is large and the test is about the path.
        .env("OCI_IMAGE_GZIP_LEVEL", "1")
        .output()
        .expect("run scripts/oci-image.py");
    assert!(
        out.status.success(),
        "oci-image.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("oci-image.py JSON");
    assert_eq!(summary["binary_sha256"], sha256_of(&binary));
    summary
}

fn push_image(dir: &Path, archive: &Path, certs: &Path, reference: &str) {
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        json!({"default": [{"type": "insecureAcceptAnything"}]}).to_string(),
    )
    .expect("policy");
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .arg("copy")
        .arg("--dest-cert-dir")
        .arg(certs)
        .arg(format!(
            "oci-archive:{}:{}",
            archive.display(),
            version_tag()
        ))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OpenBao server on raft whose configuration declares the plugin image.
struct OciBao {
    dir: PathBuf,
    addr: String,
    token: String,
    env: Vec<(String, String)>,
    child: Option<Guard>,
}

impl OciBao {
    fn config(dir: &Path, image: &str, sha256: &str) -> PathBuf {
        let port = free_port();
        let cluster = free_port();
        let data = dir.join("data");
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&plugins).expect("plugin dir");
        let path = dir.join("server.hcl");
        std::fs::write(
            &path,
            format!(
                "storage \"raft\" {{\n  path = \"{data}\"\n  node_id = \"node1\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n\
                 plugin_directory = \"{plugins}\"\n\
                 plugin_auto_download = true\nplugin_auto_register = true\nplugin_download_behavior = \"fail\"\n\n\
                 plugin \"secret\" \"azure\" {{\n  image       = \"{image}\"\n  version     = \"{tag}\"\n  binary_name = \"{BINARY_NAME}\"\n  sha256sum   = \"{sha256}\"\n}}\n",
                data = data.display(),
                plugins = plugins.display(),
                tag = version_tag(),
            ),
        )
        .expect("server config");
        std::fs::write(dir.join("addr"), format!("http://127.0.0.1:{port}")).expect("addr");
        path
    }

    /// Starts the server; `None` with its log when it exited before listening.
    fn start(dir: &Path, config: &Path, env: Vec<(String, String)>) -> Result<Self, String> {
        let addr = std::fs::read_to_string(dir.join("addr")).expect("addr");
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let child = Command::new(bao_bin())
            .args(["server", "-log-level=debug"])
            .arg(format!("-config={}", config.display()))
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            // No registry credentials from the host: the registry is anonymous.
            .env("DOCKER_CONFIG", dir)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start bao server");
        let mut bao = Self {
            dir: dir.to_path_buf(),
            addr,
            token: String::new(),
            env,
            child: Some(Guard(child)),
        };
        // The plugin is downloaded before the listener opens; a failed download ends the
        // process instead.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(guard) = bao.child.as_mut() {
                if let Ok(Some(_)) = guard.0.try_wait() {
                    bao.child = None;
                    return Err(bao.log());
                }
            }
            let status = bao.cli(&["status", "-format=json"]);
            if status.0 == 0 || status.0 == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao did not start:\n{}",
                bao.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let init = bao.cli(&[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ]);
        assert_eq!(init.0, 0, "init: {init:?}");
        let init: Value = serde_json::from_str(&init.1).expect("init JSON");
        let key = init["unseal_keys_b64"][0]
            .as_str()
            .expect("key")
            .to_string();
        bao.token = init["root_token"].as_str().expect("token").to_string();
        let unseal = bao.cli(&["operator", "unseal", &key]);
        assert_eq!(unseal.0, 0, "unseal: {unseal:?}");
        Ok(bao)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs the CLI: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bao_bin())
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run bao");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (code, stdout, stderr) = self.cli(args);
        assert_eq!(
            code,
            0,
            "bao {args:?} failed: {stdout}{stderr}\nserver log:\n{}",
            self.log()
        );
        serde_json::from_str(&stdout).unwrap_or(Value::Null)
    }
}

/// Everything shared by the three cases: the registry with the image pushed, and the CAs.
struct Setup {
    dir: tempfile::TempDir,
    _registry: Guard,
    image: String,
    summary: Value,
    registry_ca: String,
}

fn setup() -> Setup {
    install_registry_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = registry_tls();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    // skopeo's cert dir: *.crt are CAs.
    std::fs::write(certs.join("ca.crt"), &ca).expect("ca");
    std::fs::write(dir.path().join("registry.crt"), &cert).expect("cert");
    std::fs::write(dir.path().join("registry.key"), &key).expect("key");
    let (registry, addr) = start_registry(
        dir.path(),
        &dir.path().join("registry.crt"),
        &dir.path().join("registry.key"),
        &certs.join("ca.crt"),
    );
    let summary = build_image(dir.path());
    let image = format!("{addr}/{BINARY_NAME}");
    push_image(
        dir.path(),
        &dir.path().join("image.tar"),
        &certs,
        &format!("{image}:{}", version_tag()),
    );
    Setup {
        dir,
        _registry: registry,
        image,
        summary,
        registry_ca: ca,
    }
}

/// The emulator's cloud variables with SSL_CERT_FILE replaced by a bundle of `extra_ca` and
/// the emulator's CA: one trust store for OpenBao (the registry) and the plugin (Azure).
fn server_env(emu: &Emulator, dir: &Path, extra_ca: Option<&str>) -> Vec<(String, String)> {
    let emulator_ca = std::fs::read_to_string(emu.var("SSL_CERT_FILE")).expect("emulator CA");
    let bundle = dir.join("trust.pem");
    let mut pem = emulator_ca;
    if let Some(ca) = extra_ca {
        pem.push('\n');
        pem.push_str(ca);
    }
    std::fs::write(&bundle, pem).expect("bundle");
    emu.cloud_env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "SSL_CERT_FILE" => (k, bundle.display().to_string()),
            // The login host by name, so the plugin resolves a host name (getaddrinfo: in the
            // static release binary, glibc's built-in files/dns lookup). Graph and ARM stay on
            // 127.0.0.1: their URLs are also token audiences the emulator checks.
            "AZURE_AUTHORITY_HOST" => (k, v.replace("://127.0.0.1:", "://localhost:")),
            _ => (k, v),
        })
        .collect()
}

#[test]
fn openbao_installs_the_plugin_from_an_oci_image_and_issues_a_credential() {
    let setup = setup();
    let emu = Emulator::start(&[]);
    let sha = setup.summary["binary_sha256"]
        .as_str()
        .expect("sha")
        .to_string();

    // A wrong sha256sum: the download is refused and the server does not start.
    let bad_dir = setup.dir.path().join("bao-bad-sha");
    std::fs::create_dir_all(&bad_dir).expect("dir");
    let wrong = "0".repeat(64);
    assert_ne!(wrong, sha);
    let config = OciBao::config(&bad_dir, &setup.image, &wrong);
    let env = server_env(&emu, &bad_dir, Some(&setup.registry_ca));
    let log = match OciBao::start(&bad_dir, &config, env) {
        Ok(bao) => panic!("started with a wrong sha256sum:\n{}", bao.log()),
        Err(log) => log,
    };
    assert!(
        log.contains("mismatch") && log.contains(&sha),
        "no hash mismatch in the log:\n{log}"
    );

    // The registry's CA not trusted: TLS fails, the server does not start.
    let untrusted_dir = setup.dir.path().join("bao-untrusted");
    std::fs::create_dir_all(&untrusted_dir).expect("dir");
    let config = OciBao::config(&untrusted_dir, &setup.image, &sha);
    let env = server_env(&emu, &untrusted_dir, None);
    let log = match OciBao::start(&untrusted_dir, &config, env) {
        Ok(bao) => panic!("downloaded from an untrusted registry:\n{}", bao.log()),
        Err(log) => log,
    };
    assert!(
        log.contains("x509") || log.contains("certificate"),
        "no TLS error in the log:\n{log}"
    );

    // The real thing, with the image pinned by its manifest digest as `make release`'s stanza
    // does (skopeo pushed the manifest unchanged, so the digest is the one computed locally).
    let good_dir = setup.dir.path().join("bao");
    std::fs::create_dir_all(&good_dir).expect("dir");
    let pinned = format!(
        "{}@{}",
        setup.image,
        setup.summary["manifest_digest"].as_str().expect("digest")
    );
    let config = OciBao::config(&good_dir, &pinned, &sha);
    let env = server_env(&emu, &good_dir, Some(&setup.registry_ca));
    let bao = OciBao::start(&good_dir, &config, env).unwrap_or_else(|log| {
        panic!("OpenBao did not start:\n{log}");
    });

    // Downloaded into the plugin directory under the catalog's command name, bit-identical.
    let command = format!("secret-azure-{}", version_tag());
    let installed = good_dir.join("plugins").join(&command);
    assert_eq!(sha256_of(&installed), sha);

    // Registered by the server itself, as a declarative OCI plugin with that checksum.
    let entry = bao.ok(&[
        "read",
        "-format=json",
        "sys/plugins/catalog/secret/azure",
        &format!("version={}", version_tag()),
    ]);
    assert_eq!(entry["data"]["sha256"], sha.as_str(), "{entry}");
    assert_eq!(entry["data"]["oci"], true, "{entry}");
    assert_eq!(entry["data"]["command"], command.as_str(), "{entry}");

    // Enabled, configured, a role, a credential that exists in "Azure".
    bao.ok(&["secrets", "enable", "-path=azure", "azure"]);
    let mut config_args = vec!["write".to_string(), "azure/config".to_string()];
    config_args.extend(emu.config_args());
    let refs: Vec<&str> = config_args.iter().map(String::as_str).collect();
    bao.ok(&refs);
    let sub = emu.var("AZURE_SUBSCRIPTION_ID");
    let roles = json!([{"role_name": "Reader", "scope": format!("/subscriptions/{sub}")}]);
    bao.ok(&[
        "write",
        "azure/roles/oci",
        &format!("azure_roles={roles}"),
        "ttl=1h",
    ]);
    let creds = bao.ok(&["read", "-format=json", "azure/creds/oci"]);
    let client_id = creds["data"]["client_id"].as_str().expect("client_id");
    assert!(creds["data"]["client_secret"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(
        emu.vault_apps()
            .iter()
            .any(|a| a["appId"].as_str() == Some(client_id)),
        "the issued application is not in the emulator"
    );

    // The process OpenBao runs is the binary from the image.
    let pids = Command::new("pgrep")
        .arg("-f")
        .arg(installed.display().to_string())
        .output()
        .expect("pgrep");
    let cached = std::fs::canonicalize(&installed).expect("resolve the installed plugin");
    let running: Vec<String> = String::from_utf8_lossy(&pids.stdout)
        .lines()
        .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        running.iter().any(|p| Path::new(p) == cached),
        "no running plugin process from {} (running: {running:?})",
        cached.display()
    );
}
