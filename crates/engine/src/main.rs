//! The plugin binary: serves the Azure secrets engine to the Vault or OpenBao server that
//! launched it.

use std::process::ExitCode;
use std::sync::Arc;

use vault_plugin_sdk::ServeOptions;
use vault_plugin_secrets_azure::AzureFactory;

fn main() -> ExitCode {
    vault_plugin_sdk::serve_with(
        Arc::new(AzureFactory),
        concat!("v", env!("CARGO_PKG_VERSION")),
        ServeOptions::default()
            .log_target(env!("CARGO_CRATE_NAME"))
            .log_target("azure_clients")
            .on_ready(warm_up_tls),
    )
}

/// The Azure clients' TLS (aws-lc) seeds its random generator from CPU jitter on first use,
/// about 100 ms of CPU: do it while the host sets the plugin up, not on the first request.
fn warm_up_tls() {
    let mut seed = [0u8; 1];
    let _ = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut seed);
}
