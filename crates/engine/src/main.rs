//! The plugin binary: serves the Azure secrets engine to the Vault or OpenBao server that
//! launched it.

use std::process::ExitCode;
use std::sync::Arc;

use vault_plugin_secrets_azure::AzureFactory;

fn main() -> ExitCode {
    vault_plugin_sdk::serve(
        Arc::new(AzureFactory),
        concat!("v", env!("CARGO_PKG_VERSION")),
    )
}
