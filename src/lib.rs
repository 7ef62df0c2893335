//! Azure secrets engine for HashiCorp Vault and OpenBao, as an external plugin.
//!
//! Layers, with dependencies pointing one way:
//! - `plugin`: the go-plugin and `pb.Backend` wire protocol; knows nothing of Azure.
//! - `framework`: a small logical framework (paths, fields, secrets, WAL) on top of `plugin`.
//! - `azure`: Entra ID, Microsoft Graph and ARM clients; knows nothing of Vault.
//! - `engine`: the Azure secrets engine built on `framework` and `azure`.
//! - `emulator`: a local Azure emulator; shares no code with `azure`.
pub mod azure;
pub mod emulator;
