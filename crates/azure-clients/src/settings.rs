//! Effective client settings: the engine's config merged with `AZURE_*` variables.
//!
//! Precedence (azure-engine.md §3.8): for each of client id, client secret, subscription,
//! tenant and environment, a non-empty environment variable wins over the config field:
//!
//! | setting | 1st | 2nd |
//! |---|---|---|
//! | client id | `AZURE_CLIENT_ID` | `client_id` |
//! | client secret | `AZURE_CLIENT_SECRET` | `client_secret` |
//! | subscription | `AZURE_SUBSCRIPTION_ID` | `subscription_id` (else `subscription_id is required`) |
//! | tenant | `AZURE_TENANT_ID` | `tenant_id` (else `tenant_id is required`) |
//! | environment | `AZURE_ENVIRONMENT` | `environment` (else public cloud) |
//! | identity token audience / ttl | config only | |
//!
//! Extensions of this project, from the environment only: `AZURE_AUTHORITY_HOST`,
//! `AZURE_GRAPH_ENDPOINT`, `AZURE_RESOURCE_MANAGER_ENDPOINT` (base URLs),
//! `AZURE_FEDERATED_TOKEN_FILE` (workload identity from a file, e.g. on AKS),
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST` (VM IMDS base URL), `SSL_CERT_FILE` (extra CA bundle).
//!
//! Certificates (an extension): `AZURE_CLIENT_CERTIFICATE_PATH` (a PEM file with the
//! certificate and its unencrypted key; `AZURE_CLIENT_CERTIFICATE_PASSWORD` is refused, PFX
//! is not supported) wins over the config fields `client_certificate` +
//! `client_certificate_key` (PEM texts).
//!
//! Authentication method (azure-engine.md §6), first match:
//! 1. a client secret → client credentials with the secret;
//! 2. a client certificate → client credentials with a signed client assertion;
//! 3. `identity_token_audience` → workload identity with assertions from the engine's
//!    [`AssertionProvider`](super::credential::AssertionProvider) (host identity tokens);
//! 4. `AZURE_FEDERATED_TOKEN_FILE` with a client id → workload identity from that file
//!    (AKS workload identity; the file is re-read for every token request);
//! 5. otherwise the system-assigned managed identity (the client id is never used as a
//!    user-assigned identity selector, as in the Go engine).

use super::cloud::{env_value, Cloud, EnvLookup};
use super::error::AzureError;
use super::http::validate_endpoint;
use super::secret::SecretString;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The engine's stored config fields that concern Azure access (input of
/// [`AzureSettings::resolve`]). Empty strings mean "not set".
#[derive(Clone, Debug, Default)]
pub struct AzureConfig {
    /// `subscription_id`.
    pub subscription_id: String,
    /// `tenant_id`.
    pub tenant_id: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: SecretString,
    /// `environment` (cloud name).
    pub environment: String,
    /// `identity_token_audience` (workload identity federation through the host).
    pub identity_token_audience: String,
    /// `identity_token_ttl` (`None` or zero: the host's default).
    pub identity_token_ttl: Option<Duration>,
    /// `client_certificate`: PEM certificate of the engine's identity.
    pub client_certificate: String,
    /// `client_certificate_key`: PEM private key of that certificate.
    pub client_certificate_key: SecretString,
}

/// How the engine authenticates to Entra ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Client credentials with a client secret.
    ClientSecret,
    /// Client credentials with a client certificate (signed client assertions).
    ClientCertificate,
    /// Workload identity federation, assertions from the engine's provider
    /// (plugin identity tokens for `identity_token_audience`).
    WorkloadIdentityProvider,
    /// Workload identity federation, assertions read from this file.
    WorkloadIdentityFile(PathBuf),
    /// The system-assigned managed identity (VM IMDS, Azure Arc, App Service).
    ManagedIdentity,
}

/// Effective settings of the Azure clients.
#[derive(Clone, Debug)]
pub struct AzureSettings {
    /// Entra tenant (GUID or verified domain).
    pub tenant_id: String,
    /// Application (client) id of the engine's identity; may be empty with managed identity.
    pub client_id: String,
    /// Client secret, if any.
    pub client_secret: Option<SecretString>,
    /// Subscription the engine works in by default.
    pub subscription_id: String,
    /// Cloud endpoints (overrides applied).
    pub cloud: Cloud,
    /// Audience of plugin identity tokens (workload identity through the host).
    pub identity_token_audience: Option<String>,
    /// Requested lifetime of plugin identity tokens.
    pub identity_token_ttl: Option<Duration>,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
    /// The client certificate, if any (see [`CertificateSource`]).
    pub client_certificate: Option<CertificateSource>,
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST`: VM IMDS base URL override.
    pub imds_endpoint: Option<Url>,
    /// `SSL_CERT_FILE`: PEM bundle trusted in addition to the system roots.
    pub ca_bundle: Option<PathBuf>,
}

/// Where the client certificate comes from.
#[derive(Clone, Debug)]
pub enum CertificateSource {
    /// PEM texts from the config (`client_certificate`, `client_certificate_key`).
    Pem {
        /// The certificate.
        certificate: String,
        /// The private key.
        key: SecretString,
    },
    /// `AZURE_CLIENT_CERTIFICATE_PATH` (and `AZURE_CLIENT_CERTIFICATE_PASSWORD`).
    File {
        /// The PEM file with the certificate and its key.
        path: PathBuf,
        /// A password, which is refused (only unencrypted PEM is supported).
        password: Option<SecretString>,
    },
}

impl CertificateSource {
    /// Loads the certificate (reads the file for [`CertificateSource::File`]).
    pub fn load(&self) -> Result<super::certificate::ClientCertificate, AzureError> {
        match self {
            CertificateSource::Pem { certificate, key } => {
                super::certificate::ClientCertificate::from_pem(certificate, key.expose())
            }
            CertificateSource::File { path, password } => {
                super::certificate::ClientCertificate::from_file(path, password.as_ref())
            }
        }
    }
}

/// Environment variable names read by [`AzureSettings::resolve`].
pub mod env_vars {
    /// Client id.
    pub const CLIENT_ID: &str = "AZURE_CLIENT_ID";
    /// Client secret.
    pub const CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
    /// Subscription id.
    pub const SUBSCRIPTION_ID: &str = "AZURE_SUBSCRIPTION_ID";
    /// Tenant id.
    pub const TENANT_ID: &str = "AZURE_TENANT_ID";
    /// Cloud name.
    pub const ENVIRONMENT: &str = "AZURE_ENVIRONMENT";
    /// Workload identity token file.
    pub const FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
    /// PEM file with the client certificate and its key.
    pub const CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
    /// Password of the certificate file (refused: only unencrypted PEM is supported).
    pub const CLIENT_CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
    /// VM IMDS base URL override.
    pub const IMDS_ENDPOINT: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
    /// Extra CA bundle.
    pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
}

fn pick(env: EnvLookup<'_>, var: &str, config: &str) -> String {
    env_value(env, var).unwrap_or_else(|| config.trim().to_owned())
}

impl AzureSettings {
    /// Merges `config` with the environment seen through `env` (use
    /// [`process_env`](super::cloud::process_env) in production). Performs no I/O.
    pub fn resolve(config: &AzureConfig, env: EnvLookup<'_>) -> Result<AzureSettings, AzureError> {
        let subscription_id = pick(env, env_vars::SUBSCRIPTION_ID, &config.subscription_id);
        if subscription_id.is_empty() {
            return Err(AzureError::config("subscription_id is required"));
        }
        let tenant_id = pick(env, env_vars::TENANT_ID, &config.tenant_id);
        if tenant_id.is_empty() {
            return Err(AzureError::config("tenant_id is required"));
        }
        if !tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(AzureError::config(format!(
                "invalid tenant_id '{tenant_id}': only letters, digits, '-' and '.' are allowed"
            )));
        }
        let client_id = pick(env, env_vars::CLIENT_ID, &config.client_id);
        let client_secret = env_value(env, env_vars::CLIENT_SECRET)
            .map(SecretString::new)
            .or_else(|| (!config.client_secret.is_empty()).then(|| config.client_secret.clone()));
        let environment = pick(env, env_vars::ENVIRONMENT, &config.environment);
        let cloud = Cloud::from_name(&environment)?.with_env_overrides(env)?;

        let imds_endpoint = match env_value(env, env_vars::IMDS_ENDPOINT) {
            None => None,
            Some(v) => {
                let url = Url::parse(&v).map_err(|e| {
                    AzureError::config(format!(
                        "{}: invalid URL '{v}': {e}",
                        env_vars::IMDS_ENDPOINT
                    ))
                })?;
                let link_local = url.host_str() == Some("169.254.169.254");
                if !link_local {
                    validate_endpoint(&url).map_err(|e| {
                        AzureError::config(format!("{}: {e}", env_vars::IMDS_ENDPOINT))
                    })?;
                }
                Some(url)
            }
        };

        let client_certificate = match env_value(env, env_vars::CLIENT_CERTIFICATE_PATH) {
            Some(path) => Some(CertificateSource::File {
                path: PathBuf::from(path),
                password: env_value(env, env_vars::CLIENT_CERTIFICATE_PASSWORD)
                    .map(SecretString::new),
            }),
            None if !config.client_certificate.trim().is_empty() => {
                if config.client_certificate_key.is_empty() {
                    return Err(AzureError::config(
                        "client_certificate_key is required with client_certificate",
                    ));
                }
                Some(CertificateSource::Pem {
                    certificate: config.client_certificate.clone(),
                    key: config.client_certificate_key.clone(),
                })
            }
            None => None,
        };
        let audience = config.identity_token_audience.trim();
        Ok(AzureSettings {
            client_certificate,
            tenant_id,
            client_id,
            client_secret,
            subscription_id,
            cloud,
            identity_token_audience: (!audience.is_empty()).then(|| audience.to_owned()),
            identity_token_ttl: config.identity_token_ttl.filter(|d| !d.is_zero()),
            federated_token_file: env_value(env, env_vars::FEDERATED_TOKEN_FILE).map(PathBuf::from),
            imds_endpoint,
            ca_bundle: env_value(env, env_vars::SSL_CERT_FILE).map(PathBuf::from),
        })
    }

    /// The authentication method these settings select (see the module docs).
    pub fn auth_method(&self) -> AuthMethod {
        if self.client_secret.is_some() {
            AuthMethod::ClientSecret
        } else if self.client_certificate.is_some() {
            AuthMethod::ClientCertificate
        } else if self.identity_token_audience.is_some() {
            AuthMethod::WorkloadIdentityProvider
        } else if let (Some(file), false) = (&self.federated_token_file, self.client_id.is_empty())
        {
            AuthMethod::WorkloadIdentityFile(file.clone())
        } else {
            AuthMethod::ManagedIdentity
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn config() -> AzureConfig {
        AzureConfig {
            subscription_id: "sub-cfg".into(),
            tenant_id: "tenant-cfg".into(),
            client_id: "client-cfg".into(),
            client_secret: SecretString::new("secret-cfg"),
            environment: "AzureChinaCloud".into(),
            ..AzureConfig::default()
        }
    }

    #[test]
    fn config_alone() {
        let s = AzureSettings::resolve(&config(), &env_of(&[])).unwrap();
        assert_eq!(s.subscription_id, "sub-cfg");
        assert_eq!(s.tenant_id, "tenant-cfg");
        assert_eq!(s.client_id, "client-cfg");
        assert_eq!(s.client_secret.as_ref().unwrap().expose(), "secret-cfg");
        assert_eq!(s.cloud, Cloud::china());
        assert_eq!(s.auth_method(), AuthMethod::ClientSecret);
        assert!(!format!("{s:?}").contains("secret-cfg"));
    }

    #[test]
    fn environment_wins_over_config() {
        let env = env_of(&[
            ("AZURE_SUBSCRIPTION_ID", "sub-env"),
            ("AZURE_TENANT_ID", "tenant-env"),
            ("AZURE_CLIENT_ID", "client-env"),
            ("AZURE_CLIENT_SECRET", "secret-env"),
            ("AZURE_ENVIRONMENT", "azureusgovernmentcloud"),
        ]);
        let s = AzureSettings::resolve(&config(), &env).unwrap();
        assert_eq!(s.subscription_id, "sub-env");
        assert_eq!(s.tenant_id, "tenant-env");
        assert_eq!(s.client_id, "client-env");
        assert_eq!(s.client_secret.unwrap().expose(), "secret-env");
        assert_eq!(s.cloud, Cloud::us_government());
    }

    #[test]
    fn empty_environment_values_do_not_win() {
        let env = env_of(&[("AZURE_TENANT_ID", ""), ("AZURE_CLIENT_SECRET", "")]);
        let s = AzureSettings::resolve(&config(), &env).unwrap();
        assert_eq!(s.tenant_id, "tenant-cfg");
        assert_eq!(s.client_secret.unwrap().expose(), "secret-cfg");
    }

    #[test]
    fn required_fields_and_validation() {
        let e = AzureSettings::resolve(&AzureConfig::default(), &env_of(&[])).unwrap_err();
        assert_eq!(e.to_string(), "subscription_id is required");
        let c = AzureConfig {
            subscription_id: "s".into(),
            ..AzureConfig::default()
        };
        let e = AzureSettings::resolve(&c, &env_of(&[])).unwrap_err();
        assert_eq!(e.to_string(), "tenant_id is required");
        let e = AzureSettings::resolve(&c, &env_of(&[("AZURE_TENANT_ID", "a/b")])).unwrap_err();
        assert!(e.to_string().contains("invalid tenant_id"));
        let e = AzureSettings::resolve(
            &c,
            &env_of(&[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_ENVIRONMENT", "AzureGermanCloud"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("AzurePublicCloud"));
        // Environment alone (no stored config) is enough.
        let s = AzureSettings::resolve(
            &AzureConfig::default(),
            &env_of(&[("AZURE_TENANT_ID", "t"), ("AZURE_SUBSCRIPTION_ID", "s")]),
        )
        .unwrap();
        assert_eq!(s.cloud, Cloud::public());
        assert_eq!(s.auth_method(), AuthMethod::ManagedIdentity);
    }

    #[test]
    fn auth_method_precedence() {
        let mut c = config();
        c.identity_token_audience = "vault.example/azure".into();
        let env = env_of(&[("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token")]);
        assert_eq!(
            AzureSettings::resolve(&c, &env).unwrap().auth_method(),
            AuthMethod::ClientSecret
        );
        c.client_secret = SecretString::default();
        assert_eq!(
            AzureSettings::resolve(&c, &env).unwrap().auth_method(),
            AuthMethod::WorkloadIdentityProvider
        );
        c.identity_token_audience.clear();
        assert_eq!(
            AzureSettings::resolve(&c, &env).unwrap().auth_method(),
            AuthMethod::WorkloadIdentityFile(PathBuf::from("/var/run/token"))
        );
        assert_eq!(
            AzureSettings::resolve(&c, &env_of(&[]))
                .unwrap()
                .auth_method(),
            AuthMethod::ManagedIdentity
        );
        // AZURE_CLIENT_SECRET in the environment beats workload identity.
        c.identity_token_audience = "aud".into();
        assert_eq!(
            AzureSettings::resolve(&c, &env_of(&[("AZURE_CLIENT_SECRET", "x")]))
                .unwrap()
                .auth_method(),
            AuthMethod::ClientSecret
        );
    }

    #[test]
    fn client_certificate_sources() {
        let mut c = config();
        c.client_secret = SecretString::default();
        c.client_certificate = "-----BEGIN CERTIFICATE-----".into();
        let e = AzureSettings::resolve(&c, &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("client_certificate_key"), "{e}");
        c.client_certificate_key = SecretString::new("key");
        let s = AzureSettings::resolve(&c, &env_of(&[])).unwrap();
        assert_eq!(s.auth_method(), AuthMethod::ClientCertificate);
        assert!(matches!(
            s.client_certificate,
            Some(CertificateSource::Pem { .. })
        ));
        assert!(!format!("{s:?}").contains("\"key\""));
        // The environment's file wins; a secret still wins over both.
        let env = env_of(&[("AZURE_CLIENT_CERTIFICATE_PATH", "/etc/cert.pem")]);
        let s = AzureSettings::resolve(&c, &env).unwrap();
        assert!(matches!(
            s.client_certificate,
            Some(CertificateSource::File { .. })
        ));
        let env = env_of(&[("AZURE_CLIENT_SECRET", "x")]);
        assert_eq!(
            AzureSettings::resolve(&c, &env).unwrap().auth_method(),
            AuthMethod::ClientSecret
        );
        let e = CertificateSource::File {
            path: "/nonexistent/cert.pem".into(),
            password: None,
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn imds_override_rules() {
        let c = config();
        let ok = AzureSettings::resolve(
            &c,
            &env_of(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")]),
        )
        .unwrap();
        assert_eq!(ok.imds_endpoint.unwrap().as_str(), "http://127.0.0.1:9/");
        assert!(AzureSettings::resolve(
            &c,
            &env_of(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://10.1.2.3")])
        )
        .is_err());
    }
}
