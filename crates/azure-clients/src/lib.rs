//! Azure clients: Entra ID credentials, Microsoft Graph and Azure Resource Manager.
//!
//! This crate knows nothing of Vault. The engine resolves its settings with
//! [`AzureSettings::resolve`] (config + `AZURE_*` environment, Go-engine precedence),
//! builds an [`AzureClient`] (no network I/O), and calls [`GraphClient`] and [`ArmClient`]
//! methods, each bounded by a [`Deadline`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), azure_clients::AzureError> {
//! use std::time::Duration;
//! use azure_clients::*;
//! let settings = AzureSettings::resolve(&AzureConfig::default(), &process_env)?;
//! let client = AzureClient::new(settings, AzureClientOptions::default())?;
//! let deadline = Deadline::after(Duration::from_secs(60));
//! let app = client.graph().create_application(&NewApplication::dynamic(), deadline).await?;
//! let sp = client.graph().create_service_principal(&app.app_id, deadline).await?;
//! # let _ = sp; Ok(()) }
//! ```
//!
//! Files: `cloud.rs` (clouds, endpoint overrides), `settings.rs` (precedence, auth
//! method), `credential.rs` (token sources and caching), `http.rs` (TLS, sending,
//! retries per request), `retry.rs` (deadline, policy), `graph.rs`, `arm.rs`, `error.rs`,
//! `secret.rs`, `locks.rs`.

mod arm;
mod certificate;
mod cloud;
mod credential;
mod error;
mod graph;
mod http;
mod locks;
mod retry;
mod secret;
mod settings;

pub use arm::{
    permissions_allow, role_definition_guid, role_definition_scope, wildcard_match, ArmClient,
    Permission, RoleAssignment, RoleDefinition, API_VERSION as ARM_API_VERSION,
};
pub use certificate::{ClientCertificate, MIN_RSA_BITS, PROOF_AUDIENCE};
pub use cloud::{process_env, Cloud, EnvLookup, SUPPORTED_CLOUDS};
pub use credential::{
    client_certificate_token, client_secret_token, verify_client_certificate, verify_client_secret,
    wait_for_client_certificate, wait_for_client_secret, AccessToken, AssertionProvider,
    CachingTokenSource, ClientCredential, FileAssertion, TokenSource,
};
pub use error::{AzureError, PolicyViolation, Service, ServiceError};
pub use graph::{
    parse_iso_duration, Application, CredentialPolicy, DeleteOutcome, DirectorySizeQuota,
    GraphClient, Group, KeyCredential, NewApplication, NewKeyCredential, NewPassword,
    PasswordCredential, ServicePrincipal, DISPLAY_NAME_PREFIX,
};
pub use http::{build_http_client, is_loopback, validate_endpoint};
pub use retry::{retry_after, Deadline, RetryPolicy};
pub use secret::SecretString;
pub use settings::{env_vars, AuthMethod, AzureConfig, AzureSettings, CertificateSource};

use std::sync::Arc;
use std::time::Duration;

/// Options of [`AzureClient::new`].
#[derive(Clone, Default)]
pub struct AzureClientOptions {
    /// Retry and timeout settings.
    pub retry: RetryPolicy,
    /// Source of client assertions for [`AuthMethod::WorkloadIdentityProvider`] (the
    /// host's plugin identity tokens). Required for that method.
    pub assertion_provider: Option<Arc<dyn AssertionProvider>>,
    /// Use this token source instead of building one from the settings (tests, or sharing
    /// one cache between clients).
    pub token_source: Option<Arc<dyn TokenSource>>,
}

/// Graph and ARM clients sharing one HTTP client and one token cache.
pub struct AzureClient {
    settings: AzureSettings,
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    graph: GraphClient,
    arm: ArmClient,
}

impl std::fmt::Debug for AzureClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureClient")
            .field("settings", &self.settings)
            .field("credential", &self.tokens.kind())
            .finish_non_exhaustive()
    }
}

impl AzureClient {
    /// Builds the clients. Performs no network I/O (only reads the `SSL_CERT_FILE`
    /// bundle), so a bad or unreachable Azure is noticed at the first call.
    pub fn new(
        settings: AzureSettings,
        options: AzureClientOptions,
    ) -> Result<AzureClient, AzureError> {
        let http = build_http_client(settings.ca_bundle.as_deref())?;
        let tokens = match options.token_source {
            Some(t) => t,
            None => token_source(&settings, &http, options.assertion_provider, &options.retry)?,
        };
        let graph = GraphClient::new(
            &settings.cloud.graph_endpoint,
            http.clone(),
            tokens.clone(),
            options.retry.clone(),
        )?;
        let arm = ArmClient::new(
            &settings.cloud.arm_endpoint,
            &settings.subscription_id,
            http.clone(),
            tokens.clone(),
            options.retry,
        )?;
        Ok(AzureClient {
            settings,
            http,
            tokens,
            graph,
            arm,
        })
    }

    /// Microsoft Graph.
    pub fn graph(&self) -> &GraphClient {
        &self.graph
    }

    /// Azure Resource Manager.
    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    /// The settings the client was built from.
    pub fn settings(&self) -> &AzureSettings {
        &self.settings
    }

    /// The shared token source.
    pub fn token_source(&self) -> &Arc<dyn TokenSource> {
        &self.tokens
    }

    /// The HTTP client (trusting `SSL_CERT_FILE`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Proves that `secret` of application `client_id` (in this client's tenant and cloud)
    /// obtains a Graph token, without any cache. See [`verify_client_secret`].
    pub async fn verify_client_secret(
        &self,
        client_id: &str,
        secret: &SecretString,
        deadline: Deadline,
    ) -> Result<(), AzureError> {
        verify_client_secret(
            &self.http,
            &self.settings.cloud,
            &self.settings.tenant_id,
            client_id,
            secret,
            &self.settings.cloud.graph_scope(),
            deadline,
        )
        .await
    }

    /// An access token for `scope` obtained with `secret` of application `client_id` (in
    /// this client's tenant and cloud), without any cache. See [`client_secret_token`].
    pub async fn client_secret_token(
        &self,
        client_id: &str,
        secret: &SecretString,
        scope: &str,
        deadline: Deadline,
    ) -> Result<AccessToken, AzureError> {
        credential::client_secret_token(
            &self.http,
            &self.settings.cloud,
            &self.settings.tenant_id,
            client_id,
            secret,
            scope,
            deadline,
        )
        .await
    }

    /// An access token for `scope` obtained with `certificate` of application `client_id`
    /// (a client assertion signed with its key), without any cache. See
    /// [`client_certificate_token`].
    pub async fn client_certificate_token(
        &self,
        client_id: &str,
        certificate: &Arc<ClientCertificate>,
        scope: &str,
        deadline: Deadline,
    ) -> Result<AccessToken, AzureError> {
        credential::client_certificate_token(
            &self.http,
            &self.settings.cloud,
            &self.settings.tenant_id,
            client_id,
            certificate,
            scope,
            deadline,
        )
        .await
    }

    /// Proves that `certificate` of application `client_id` obtains a Graph token (a
    /// client assertion signed with its key), retrying "not yet valid" answers every
    /// `poll` until `deadline`. See [`wait_for_client_certificate`].
    pub async fn wait_for_client_certificate(
        &self,
        client_id: &str,
        certificate: &Arc<ClientCertificate>,
        poll: Duration,
        deadline: Deadline,
    ) -> Result<(), AzureError> {
        wait_for_client_certificate(
            &self.http,
            &self.settings.cloud,
            &self.settings.tenant_id,
            client_id,
            certificate,
            &self.settings.cloud.graph_scope(),
            poll,
            deadline,
        )
        .await
    }

    /// Like [`AzureClient::verify_client_secret`], retrying "not yet valid" answers every
    /// `poll` (with back-off and jitter) until `deadline`. See [`wait_for_client_secret`].
    pub async fn wait_for_client_secret(
        &self,
        client_id: &str,
        secret: &SecretString,
        poll: Duration,
        deadline: Deadline,
    ) -> Result<(), AzureError> {
        wait_for_client_secret(
            &self.http,
            &self.settings.cloud,
            &self.settings.tenant_id,
            client_id,
            secret,
            &self.settings.cloud.graph_scope(),
            poll,
            deadline,
        )
        .await
    }
}

/// Builds the caching token source the settings select (see [`AzureSettings::auth_method`]).
/// Performs no network I/O.
pub fn token_source(
    settings: &AzureSettings,
    http: &reqwest::Client,
    assertion_provider: Option<Arc<dyn AssertionProvider>>,
    policy: &RetryPolicy,
) -> Result<Arc<dyn TokenSource>, AzureError> {
    let entra =
        |credential: ClientCredential| -> Result<Box<dyn credential::TokenFetcher>, AzureError> {
            if settings.client_id.is_empty() {
                return Err(AzureError::config("client_id is required"));
            }
            Ok(Box::new(credential::EntraFetcher {
                cloud: settings.cloud.clone(),
                tenant_id: settings.tenant_id.clone(),
                client_id: settings.client_id.clone(),
                credential,
                http: http.clone(),
                policy: policy.clone(),
            }))
        };
    let fetcher: Box<dyn credential::TokenFetcher> = match settings.auth_method() {
        AuthMethod::ClientSecret => {
            let secret = settings.client_secret.clone().unwrap_or_default();
            entra(ClientCredential::Secret(secret))?
        }
        AuthMethod::ClientCertificate => {
            let source = settings
                .client_certificate
                .as_ref()
                .ok_or_else(|| AzureError::config("no client certificate configured"))?;
            entra(ClientCredential::Certificate(Arc::new(source.load()?)))?
        }
        AuthMethod::WorkloadIdentityProvider => {
            let provider = assertion_provider.ok_or_else(|| {
                AzureError::config(
                    "identity_token_audience is set but this host cannot mint plugin identity tokens \
                     (workload identity federation needs Vault Enterprise)",
                )
            })?;
            entra(ClientCredential::Assertion(provider))?
        }
        AuthMethod::WorkloadIdentityFile(path) => entra(ClientCredential::Assertion(Arc::new(
            FileAssertion::new(path),
        )))?,
        AuthMethod::ManagedIdentity => Box::new(credential::ManagedIdentityFetcher {
            imds_override: settings.imds_endpoint.clone(),
            http: http::build_direct_http_client(settings.ca_bundle.as_deref())?,
            policy: policy.clone(),
        }),
    };
    Ok(Arc::new(CachingTokenSource::new(fetcher)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}
    fn is_send_sync<T: Send + Sync>() {}

    /// The engine spawns these futures on a multi-threaded runtime.
    #[allow(dead_code)]
    fn client_and_futures_are_send(c: &AzureClient, p: &NewPassword) {
        is_send_sync::<AzureClient>();
        let d = Deadline::after(Duration::from_secs(1));
        let g = c.graph();
        let a = c.arm();
        is_send(g.create_application(&NewApplication::dynamic(), d));
        is_send(g.create_service_principal("x", d));
        is_send(g.add_application_password("x", p, d));
        is_send(g.add_service_principal_password("x", p, d));
        is_send(g.remove_application_password("x", "k", d));
        is_send(g.add_group_member("g", "m", d));
        is_send(g.remove_group_member("g", "m", d));
        is_send(g.find_group_by_name("g", d));
        is_send(g.permanently_delete("x", Duration::ZERO, d));
        is_send(a.create_role_assignment("s", "n", "r", "p", d));
        is_send(a.find_role_definition_by_name("s", "n", d));
        is_send(a.delete_role_assignment("s", d));
        is_send(c.verify_client_secret("x", &SecretString::new("s"), d));
    }
}
