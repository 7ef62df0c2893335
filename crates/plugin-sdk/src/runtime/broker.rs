//! go-plugin's connection broker: the host announces, per backend instance, where its
//! storage and system-view server listens; the plugin dials it with mutual TLS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Mutex, Notify};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Status;

use super::proto::plugin::ConnInfo;

/// How long Setup waits for the host to announce its broker id (go-plugin's own timeout).
const CONN_INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a host service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub network: String,
    pub address: String,
}

/// Announcements received from the host, by broker id.
#[derive(Default)]
pub struct Broker {
    announced: Mutex<HashMap<u32, HostAddress>>,
    arrived: Notify,
}

impl Broker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An announcement from the host's broker stream (`plugin.GRPCBroker/StartStream`,
    /// which the host opens once, right after connecting, and keeps open).
    pub async fn record(&self, info: ConnInfo) {
        if info.knock.is_some() {
            // Knocks belong to the multiplexed-broker mode, which this plugin refuses at start.
            tracing::warn!(service_id = info.service_id, "ignoring broker knock");
            return;
        }
        self.announced.lock().await.insert(
            info.service_id,
            HostAddress {
                network: info.network,
                address: info.address,
            },
        );
        self.arrived.notify_waiters();
    }

    /// Waits (bounded) for the host to announce `id`; each announcement is used once.
    pub async fn take(&self, id: u32) -> Result<HostAddress, Status> {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(addr) = self.announced.lock().await.remove(&id) {
                    return addr;
                }
                notified.await;
            }
        };
        tokio::time::timeout(CONN_INFO_TIMEOUT, wait)
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "timeout waiting for connection info of broker id {id}"
                ))
            })
    }
}

/// Dials the host's callback server with mutual TLS and HTTP/2.
pub async fn dial(addr: HostAddress, tls: Arc<rustls::ClientConfig>) -> Result<Channel, Status> {
    let connector = tower::service_fn(move |_: Uri| {
        let addr = addr.clone();
        let tls = TlsConnector::from(tls.clone());
        async move {
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            match addr.network.as_str() {
                "unix" => {
                    let sock = super::buffered(UnixStream::connect(&addr.address).await?);
                    Ok::<_, std::io::Error>(TokioIo::new(
                        Box::new(tls.connect(name, sock).await?) as Box<dyn AsyncStream>
                    ))
                }
                "tcp" => {
                    let sock = TcpStream::connect(&addr.address).await?;
                    sock.set_nodelay(true)?;
                    let sock = super::buffered(sock);
                    Ok(TokioIo::new(
                        Box::new(tls.connect(name, sock).await?) as Box<dyn AsyncStream>
                    ))
                }
                other => Err(std::io::Error::other(format!(
                    "the host announced an unknown network {other:?}"
                ))),
            }
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector(connector)
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect to the host's storage: {e}")))
}

/// A byte stream the callback connection can run on (TLS over Unix or TCP).
pub trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AsyncStream for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn take_waits_for_a_late_announcement() {
        let broker = Broker::new();
        let b = broker.clone();
        let waiter = tokio::spawn(async move { b.take(7).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        broker
            .record(ConnInfo {
                service_id: 7,
                network: "unix".into(),
                address: "/tmp/x".into(),
                knock: None,
            })
            .await;
        let addr = waiter.await.unwrap().unwrap();
        assert_eq!(addr.address, "/tmp/x");
        // Used once.
        assert!(broker.announced.lock().await.is_empty());
    }

    #[tokio::test]
    async fn take_times_out() {
        let broker = Broker::new();
        let err = broker.take(1).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
}
