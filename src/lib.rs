//! Azure secrets engine for HashiCorp Vault and OpenBao, as an external plugin.
//!
//! Layers, with dependencies pointing one way:
//! - `logical`: the host's request/response model and the storage and system-view
//!   interfaces (as the Go SDK's `logical` package); depends on nothing else here.
//! - `plugin`: the go-plugin and `pb.Backend` wire protocol serving a `logical::Factory`;
//!   knows nothing of Azure.
//! - `framework`: a small logical framework (paths, fields, secrets, WAL) on `logical`.
//! - `azure`: Entra ID, Microsoft Graph and ARM clients; knows nothing of Vault.
//! - `engine`: the Azure secrets engine built on `framework` and `azure`.
//! - `emulator`: a local Azure emulator; shares no code with `azure`.

pub mod azure;
pub mod emulator;
pub mod engine;
pub mod framework;
pub mod logical;
pub mod plugin;
