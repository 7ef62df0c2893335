//! Write OpenBao and HashiCorp Vault plugins in Rust.
//!
//! Layers, with dependencies pointing one way (`framework -> logical <- runtime`):
//! - [`logical`]: the host's request/response model and the storage and system-view
//!   interfaces (as the Go SDK's `logical` package); depends on nothing else here.
//! - [`runtime`]: go-plugin's handshake with AutoMTLS, the gRPC services the host expects
//!   (`pb.Backend`, multiplexing, broker, controller), and the host's storage and system view
//!   through the broker. It serves any [`logical::Factory`].
//! - [`framework`]: paths with typed fields, operations, help and OpenAPI, secrets with renew
//!   and revoke, a write-ahead log with rollback, and a storage cache, on [`logical`].
//! - [`gocompat`]: Go's JSON shapes and formats, for plugins that replace a Go plugin and
//!   keep its storage.
//! - [`testing`]: in-memory storage and a settable system view, to run a backend's handlers
//!   in process.
//!
//! The crate's README has a guide, "Write your first plugin"; `examples/kv-plugin` in the
//! repository is a complete one.

#![warn(missing_docs)]

pub mod framework;
pub mod gocompat;
pub mod logical;
pub mod runtime;
pub mod testing;

pub use runtime::{serve, serve_with, ServeOptions};
