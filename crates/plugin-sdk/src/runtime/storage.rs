//! The mount's storage, served by the host on the callback connection (`pb.Storage`).

use async_trait::async_trait;
use tonic::transport::Channel;

use super::proto::pb;
use super::proto::pb::storage_client::StorageClient;
use crate::logical::{Storage, StorageEntry, StorageError};

/// A client of the host's `pb.Storage` for one backend instance.
#[derive(Clone)]
pub struct HostStorage {
    client: StorageClient<Channel>,
}

impl HostStorage {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: StorageClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }
}

/// A failed call; the host's read-only refusal keeps its exact text (see
/// [`StorageError::from_host`]).
fn failed(op: &'static str, key: &str, reason: impl ToString) -> StorageError {
    StorageError::from_host(op, key, reason.to_string())
}

/// An `err` string of a reply: empty means success.
fn check(op: &'static str, key: &str, err: String) -> Result<(), StorageError> {
    if err.is_empty() {
        Ok(())
    } else {
        Err(failed(op, key, err))
    }
}

#[async_trait]
impl Storage for HostStorage {
    async fn get(&self, key: &str) -> Result<Option<StorageEntry>, StorageError> {
        let reply = self
            .client
            .clone()
            .get(pb::StorageGetArgs {
                key: key.to_string(),
                txn: String::new(),
            })
            .await
            .map_err(|s| failed("get", key, s.message()))?
            .into_inner();
        check("get", key, reply.err)?;
        Ok(reply.entry.map(|e| StorageEntry {
            key: e.key,
            value: e.value,
            seal_wrap: e.seal_wrap,
        }))
    }

    async fn put(&self, entry: StorageEntry) -> Result<(), StorageError> {
        let key = entry.key.clone();
        let reply = self
            .client
            .clone()
            .put(pb::StoragePutArgs {
                entry: Some(pb::StorageEntry {
                    key: entry.key,
                    value: entry.value,
                    seal_wrap: entry.seal_wrap,
                }),
                txn: String::new(),
            })
            .await
            .map_err(|s| failed("put", &key, s.message()))?
            .into_inner();
        check("put", &key, reply.err)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let reply = self
            .client
            .clone()
            .delete(pb::StorageDeleteArgs {
                key: key.to_string(),
                txn: String::new(),
            })
            .await
            .map_err(|s| failed("delete", key, s.message()))?
            .into_inner();
        check("delete", key, reply.err)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let reply = self
            .client
            .clone()
            .list(pb::StorageListArgs {
                prefix: prefix.to_string(),
                txn: String::new(),
            })
            .await
            .map_err(|s| failed("list", prefix, s.message()))?
            .into_inner();
        check("list", prefix, reply.err)?;
        Ok(reply.keys)
    }
}
