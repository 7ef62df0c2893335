//! A small logical framework for writing Vault and OpenBao plugins: paths with named
//! captures, typed fields, operations with existence checks, help and OpenAPI, secrets with
//! renew and revoke, a write-ahead log with periodic rollback, and a storage cache.
//!
//! It builds on [`crate::logical`] only; a backend made with it is served by
//! [`crate::runtime::serve`].

mod backend;
mod cache;
mod duration;
mod field;
mod openapi;
mod path;
mod secret;
pub mod wal;

pub use backend::{
    object, periodic_method, wal_rollback_method, Backend, BackendBuilder, BuildError, PeriodicFn,
    WalRollbackFn,
};
pub use cache::CachedStorage;
pub use duration::{format_duration_seconds, parse_duration};
pub use field::{FieldData, FieldError, FieldSchema, FieldType};
pub use path::{handler, method, ExistenceFn, HandlerFn, OperationHandler, Path, PathWith};
pub use secret::{secret_response, SecretType};
pub use wal::RollbackOutcome;

/// What every handler returns: a response, none (204/404), or an error.
pub type HandlerResult = Result<Option<crate::logical::Response>, crate::logical::LogicalError>;
