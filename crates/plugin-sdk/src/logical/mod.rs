//! The host's logical model, independent of any transport: requests, responses, secrets,
//! errors, and the storage and system-view interfaces a backend receives.
//!
//! The `plugin` module implements these over gRPC; the `framework` module builds backends on
//! them. Neither knows the other.

mod backend;
mod error;
mod replication;
mod request;
mod response;
mod storage;
mod system_view;

pub use backend::{Backend, BackendConfig, BackendType, Factory, FactoryError, SpecialPaths};
pub use error::{LogicalError, READ_ONLY_MESSAGE};
pub use replication::ReplicationState;
pub use request::{Operation, Request};
pub use response::{Alias, Auth, LeaseOptions, Response, Secret, TokenType};
pub use storage::{InmemStorage, Storage, StorageEntry, StorageError, READ_ONLY_ERROR};
pub use system_view::{storage_writable, PluginEnv, SystemView, SystemViewError};

/// A JSON object, the shape of request and response data.
pub type Map = serde_json::Map<String, serde_json::Value>;
