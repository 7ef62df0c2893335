//! The go-plugin handshake: the host's environment, the listener, and the one line on stdout.

use std::io::Write;
use std::path::PathBuf;

use base64::Engine;
use thiserror::Error;
use tokio::net::{TcpListener, UnixListener};

/// The magic cookie of backend (secrets and auth) plugins.
pub const COOKIE_KEY: &str = "VAULT_BACKEND_PLUGIN";
/// The value the host sets [`COOKIE_KEY`] to.
pub const COOKIE_VALUE: &str = "6669da05-b1c8-4f49-97d9-c8e5bed98e20";
/// The only application protocol this plugin speaks (v5: AutoMTLS, multiplexing).
pub const APP_PROTOCOL_VERSION: u32 = 5;
const CORE_PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Error)]
/// Why the plugin cannot start talking to its host.
pub enum HandshakeError {
    #[error(
        "This binary is a plugin for HashiCorp Vault and OpenBao. It is not meant to be run \
         directly: register it in the server's plugin catalog and enable it as a secrets engine \
         (`bao plugin register -sha256=<sum> secret <name>`, `bao secrets enable <name>`)."
    )]
    /// The process was not launched by a host.
    NoCookie,
    #[error(
        "the host offers plugin protocol versions {offered:?}; this plugin speaks only version 5 \
         (OpenBao 2.x or Vault 1.12 and later with AutoMTLS)"
    )]
    /// The host offers no protocol version this plugin speaks.
    UnsupportedProtocol {
        /// The versions the host offered.
        offered: String,
    },
    #[error(
        "the host did not enable AutoMTLS (PLUGIN_CLIENT_CERT is not set); this plugin requires it"
    )]
    /// The host did not enable AutoMTLS.
    NoAutoMtls,
    #[error("the host asks for a multiplexed broker (PLUGIN_MULTIPLEX_GRPC), which this plugin does not support")]
    /// The host asks for a multiplexed broker.
    MultiplexedBroker,
    #[error("invalid PLUGIN_MIN_PORT/PLUGIN_MAX_PORT: {0}")]
    /// The port range the host gave is invalid.
    PortRange(String),
    #[error("cannot open the plugin listener: {0}")]
    /// The listener cannot be opened.
    Listen(std::io::Error),
    #[error("cannot write the handshake line: {0}")]
    /// The handshake line cannot be written.
    Stdout(std::io::Error),
}

/// What the host put in the environment for this launch.
#[derive(Debug, Clone)]
pub struct HostEnv {
    /// The host's client certificate (AutoMTLS), PEM.
    pub client_cert_pem: String,
    /// Where to create the Unix socket.
    pub unix_socket_dir: Option<PathBuf>,
    /// The group that must be able to use the socket.
    pub unix_socket_group: Option<String>,
    /// Lowest TCP port to listen on (TCP transport).
    pub min_port: u16,
    /// Highest TCP port to listen on (TCP transport).
    pub max_port: u16,
    /// Bind TCP on loopback instead of a Unix socket (`PLUGIN_TRANSPORT=tcp`, for debugging).
    pub use_tcp: bool,
}

impl HostEnv {
    /// Reads and checks the environment through `get` (so tests need not touch the process
    /// environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, HandshakeError> {
        if get(COOKIE_KEY).as_deref() != Some(COOKIE_VALUE) {
            return Err(HandshakeError::NoCookie);
        }
        let offered = get("PLUGIN_PROTOCOL_VERSIONS").unwrap_or_default();
        let speaks_v5 = offered
            .split(',')
            .any(|v| v.trim().parse::<u32>().ok() == Some(APP_PROTOCOL_VERSION));
        if !speaks_v5 {
            return Err(HandshakeError::UnsupportedProtocol { offered });
        }
        if get("PLUGIN_MULTIPLEX_GRPC").is_some_and(|v| parse_go_bool(&v) == Some(true)) {
            return Err(HandshakeError::MultiplexedBroker);
        }
        let client_cert_pem = get("PLUGIN_CLIENT_CERT")
            .filter(|c| !c.trim().is_empty())
            .ok_or(HandshakeError::NoAutoMtls)?;
        let port = |key: &str, default: u16| -> Result<u16, HandshakeError> {
            match get(key) {
                None => Ok(default),
                Some(v) if v.is_empty() => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| HandshakeError::PortRange(format!("{key}={v} is not a port"))),
            }
        };
        let min_port = port("PLUGIN_MIN_PORT", 10000)?;
        let max_port = port("PLUGIN_MAX_PORT", 25000)?;
        if min_port > max_port {
            return Err(HandshakeError::PortRange(format!(
                "minimum {min_port} is above maximum {max_port}"
            )));
        }
        Ok(Self {
            client_cert_pem,
            unix_socket_dir: get("PLUGIN_UNIX_SOCKET_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            unix_socket_group: get("PLUGIN_UNIX_SOCKET_GROUP").filter(|g| !g.is_empty()),
            min_port,
            max_port,
            use_tcp: get("PLUGIN_TRANSPORT").as_deref() == Some("tcp"),
        })
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The plugin's listener.
pub enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
}

impl Listener {
    pub async fn bind(env: &HostEnv) -> Result<Self, HandshakeError> {
        if env.use_tcp {
            for port in env.min_port..=env.max_port {
                if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
                    return Ok(Self::Tcp(l));
                }
            }
            return Err(HandshakeError::Listen(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("no free port in {}..={}", env.min_port, env.max_port),
            )));
        }
        let dir = env
            .unix_socket_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("plugin{}", rand::random::<u32>()));
        let listener = UnixListener::bind(&path).map_err(HandshakeError::Listen)?;
        if let Some(group) = &env.unix_socket_group {
            set_socket_group(&path, group).map_err(HandshakeError::Listen)?;
        }
        Ok(Self::Unix { listener, path })
    }

    fn network_and_address(&self) -> Result<(&'static str, String), HandshakeError> {
        match self {
            Self::Unix { path, .. } => Ok(("unix", path.display().to_string())),
            Self::Tcp(l) => Ok((
                "tcp",
                l.local_addr().map_err(HandshakeError::Listen)?.to_string(),
            )),
        }
    }

    /// The socket file to remove on exit, if any.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            Self::Unix { path, .. } => Some(path.clone()),
            Self::Tcp(_) => None,
        }
    }
}

fn set_socket_group(path: &std::path::Path, group: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let gid: u32 = match group.parse() {
        Ok(gid) => gid,
        Err(_) => lookup_group(group).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("PLUGIN_UNIX_SOCKET_GROUP names unknown group {group:?}"),
            )
        })?,
    };
    std::os::unix::fs::chown(path, None, Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
}

/// Finds a group id by name in `/etc/group`.
fn lookup_group(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut parts = line.split(':');
        (parts.next()? == name).then_some(())?;
        parts.nth(1)?.parse().ok()
    })
}

/// The handshake line: `1|5|<network>|<address>|grpc|<base64 DER, no padding>`.
pub fn handshake_line(listener: &Listener, cert_der: &[u8]) -> Result<String, HandshakeError> {
    let (network, address) = listener.network_and_address()?;
    let cert = base64::engine::general_purpose::STANDARD_NO_PAD.encode(cert_der);
    Ok(format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|{network}|{address}|grpc|{cert}\n"
    ))
}

/// Writes the handshake line to stdout and flushes it. Nothing else is ever written there.
pub fn announce(line: &str) -> Result<(), HandshakeError> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .map_err(HandshakeError::Stdout)?;
    out.flush().map_err(HandshakeError::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        (COOKIE_KEY, COOKIE_VALUE),
        ("PLUGIN_PROTOCOL_VERSIONS", "5"),
        ("PLUGIN_CLIENT_CERT", "-----BEGIN CERTIFICATE-----\n"),
    ];

    #[test]
    fn cookie_is_required() {
        assert!(matches!(
            HostEnv::from_lookup(env(&[])),
            Err(HandshakeError::NoCookie)
        ));
        let db = env(&[(
            "VAULT_DATABASE_PLUGIN",
            "926a0820-aea2-be28-51d6-83cdf00e8edb",
        )]);
        assert!(matches!(
            HostEnv::from_lookup(db),
            Err(HandshakeError::NoCookie)
        ));
    }

    #[test]
    fn only_v5_is_spoken() {
        let mut pairs = BASE.to_vec();
        pairs[1] = ("PLUGIN_PROTOCOL_VERSIONS", "3,4");
        assert!(matches!(
            HostEnv::from_lookup(env(&pairs)),
            Err(HandshakeError::UnsupportedProtocol { .. })
        ));
        pairs[1] = ("PLUGIN_PROTOCOL_VERSIONS", "4,5");
        let host = HostEnv::from_lookup(env(&pairs)).unwrap();
        assert_eq!((host.min_port, host.max_port), (10000, 25000));
    }

    #[test]
    fn automtls_is_required() {
        let pairs = &BASE[..2];
        assert!(matches!(
            HostEnv::from_lookup(env(pairs)),
            Err(HandshakeError::NoAutoMtls)
        ));
    }

    #[test]
    fn port_range_is_checked() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PLUGIN_MIN_PORT", "20000"));
        pairs.push(("PLUGIN_MAX_PORT", "10000"));
        assert!(matches!(
            HostEnv::from_lookup(env(&pairs)),
            Err(HandshakeError::PortRange(_))
        ));
    }

    #[tokio::test]
    async fn handshake_line_has_six_fields_and_raw_base64() {
        let host = HostEnv::from_lookup(env(BASE)).unwrap();
        let listener = Listener::bind(&host).await.unwrap();
        let line = handshake_line(&listener, &[0xfb; 64]).unwrap();
        if let Some(p) = listener.socket_path() {
            std::fs::remove_file(p).unwrap();
        }
        let fields: Vec<&str> = line.trim_end().split('|').collect();
        assert_eq!(fields.len(), 6);
        assert_eq!(&fields[..3], &["1", "5", "unix"]);
        assert!(fields[3].contains("/plugin"));
        assert_eq!(fields[4], "grpc");
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(fields[5])
            .unwrap();
        assert_eq!(decoded, vec![0xfb; 64]);
        assert!(line.ends_with('\n'));
    }
}
