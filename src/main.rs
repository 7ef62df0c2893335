//! The plugin binary: serves the Azure secrets engine to the Vault or OpenBao server that
//! launched it.

use std::process::ExitCode;
use std::sync::Arc;

use vault_plugin_secrets_azure::engine::AzureFactory;
use vault_plugin_secrets_azure::plugin;

fn main() -> ExitCode {
    plugin::serve(
        Arc::new(AzureFactory),
        concat!("v", env!("CARGO_PKG_VERSION")),
    )
}
