//! The host's system view on the callback connection (`pb.SystemView`).

use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::Channel;
use tonic::Code;

use super::proto::pb;
use super::proto::pb::system_view_client::SystemViewClient;
use crate::logical::{PluginEnv, SystemView, SystemViewError};

#[derive(Clone)]
pub struct HostSystemView {
    client: SystemViewClient<Channel>,
}

impl HostSystemView {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: SystemViewClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }
}

fn failed(call: &'static str, status: tonic::Status) -> SystemViewError {
    SystemViewError::Host {
        call,
        reason: status.message().to_string(),
    }
}

fn ns(v: i64) -> Duration {
    Duration::from_nanos(u64::try_from(v).unwrap_or(0))
}

#[async_trait]
impl SystemView for HostSystemView {
    async fn default_lease_ttl(&self) -> Result<Duration, SystemViewError> {
        let r = self
            .client
            .clone()
            .default_lease_ttl(pb::Empty {})
            .await
            .map_err(|s| failed("DefaultLeaseTTL", s))?;
        Ok(ns(r.into_inner().ttl))
    }

    async fn max_lease_ttl(&self) -> Result<Duration, SystemViewError> {
        let r = self
            .client
            .clone()
            .max_lease_ttl(pb::Empty {})
            .await
            .map_err(|s| failed("MaxLeaseTTL", s))?;
        Ok(ns(r.into_inner().ttl))
    }

    async fn tainted(&self) -> Result<bool, SystemViewError> {
        let r = self
            .client
            .clone()
            .tainted(pb::Empty {})
            .await
            .map_err(|s| failed("Tainted", s))?;
        Ok(r.into_inner().tainted)
    }

    async fn replication_state(&self) -> Result<i32, SystemViewError> {
        let r = self
            .client
            .clone()
            .replication_state(pb::Empty {})
            .await
            .map_err(|s| failed("ReplicationState", s))?;
        Ok(r.into_inner().state)
    }

    async fn local_mount(&self) -> Result<bool, SystemViewError> {
        let r = self
            .client
            .clone()
            .local_mount(pb::Empty {})
            .await
            .map_err(|s| failed("LocalMount", s))?;
        Ok(r.into_inner().local)
    }

    async fn plugin_env(&self) -> Result<PluginEnv, SystemViewError> {
        let r = self
            .client
            .clone()
            .plugin_env(pb::Empty {})
            .await
            .map_err(|s| failed("PluginEnv", s))?
            .into_inner();
        if !r.err.is_empty() {
            return Err(SystemViewError::Host {
                call: "PluginEnv",
                reason: r.err,
            });
        }
        let env = r.plugin_environment.unwrap_or_default();
        Ok(PluginEnv {
            vault_version: env.vault_version,
            vault_version_prerelease: env.vault_version_prerelease,
            vault_version_metadata: env.vault_version_metadata,
        })
    }

    async fn generate_identity_token(
        &self,
        audience: &str,
        ttl: Duration,
    ) -> Result<(String, Duration), SystemViewError> {
        let reply = self
            .client
            .clone()
            .generate_identity_token(pb::GenerateIdentityTokenRequest {
                audience: audience.to_string(),
                // Whole seconds, unlike every other duration of the protocol.
                ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            })
            .await;
        match reply {
            Ok(r) => {
                let r = r.into_inner();
                Ok((
                    r.token,
                    Duration::from_secs(u64::try_from(r.ttl).unwrap_or(0)),
                ))
            }
            Err(s) if s.code() == Code::Unimplemented => {
                Err(SystemViewError::Unsupported("plugin identity tokens"))
            }
            Err(s) => Err(failed("GenerateIdentityToken", s)),
        }
    }
}
