//! Azure clouds: the login, Microsoft Graph and ARM base URLs, and their overrides.
//!
//! Token audiences: each service's token is requested for its base URL, i.e. scope
//! `<graph_endpoint>/.default` and `<arm_endpoint>/.default`
//! (`https://management.azure.com/.default` for the public cloud, an audience ARM accepts).
//! With overrides the same rule gives the override's URL, which is what private clouds and
//! the emulator expect.

use super::error::AzureError;
use super::http::validate_endpoint;
use url::Url;

/// Looks up an environment variable; `None` when it is unset. Empty values are treated as
/// unset by every caller in this module. Use [`process_env`] for the real environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads the process environment (empty counts as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(crate) fn env_value(env: EnvLookup<'_>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Overrides the login authority host (Azure SDK convention).
pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
/// Overrides the Microsoft Graph base URL (this project's extension).
pub const ENV_GRAPH_ENDPOINT: &str = "AZURE_GRAPH_ENDPOINT";
/// Overrides the ARM base URL (this project's extension).
pub const ENV_RESOURCE_MANAGER_ENDPOINT: &str = "AZURE_RESOURCE_MANAGER_ENDPOINT";

/// The clouds this engine supports, by their canonical names.
pub const SUPPORTED_CLOUDS: [&str; 3] = [
    "AzurePublicCloud",
    "AzureUSGovernmentCloud",
    "AzureChinaCloud",
];

/// An Azure cloud: its name and the three base URLs the clients use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cloud {
    /// Canonical name (`AzurePublicCloud`, `AzureUSGovernmentCloud`, `AzureChinaCloud`).
    pub name: String,
    /// Login authority, always ending with `/` (e.g. `https://login.microsoftonline.com/`).
    pub authority_host: Url,
    /// Microsoft Graph root without a trailing `/` and without `/v1.0`.
    pub graph_endpoint: Url,
    /// ARM root without a trailing `/`.
    pub arm_endpoint: Url,
}

fn parse_builtin(url: &str) -> Url {
    // Only called with the constant URLs below.
    match Url::parse(url) {
        Ok(u) => u,
        Err(_) => unreachable!("built-in cloud URL {url} is valid"),
    }
}

impl Cloud {
    /// Azure public cloud.
    pub fn public() -> Cloud {
        Cloud {
            name: "AzurePublicCloud".into(),
            authority_host: parse_builtin("https://login.microsoftonline.com/"),
            graph_endpoint: parse_builtin("https://graph.microsoft.com"),
            arm_endpoint: parse_builtin("https://management.azure.com"),
        }
    }

    /// Azure US Government (GCC High).
    pub fn us_government() -> Cloud {
        Cloud {
            name: "AzureUSGovernmentCloud".into(),
            authority_host: parse_builtin("https://login.microsoftonline.us/"),
            graph_endpoint: parse_builtin("https://graph.microsoft.us"),
            arm_endpoint: parse_builtin("https://management.usgovcloudapi.net"),
        }
    }

    /// Azure China, operated by 21Vianet.
    pub fn china() -> Cloud {
        Cloud {
            name: "AzureChinaCloud".into(),
            authority_host: parse_builtin("https://login.chinacloudapi.cn/"),
            graph_endpoint: parse_builtin("https://microsoftgraph.chinacloudapi.cn"),
            arm_endpoint: parse_builtin("https://management.chinacloudapi.cn"),
        }
    }

    /// The cloud for a configured `environment` name, compared case-insensitively like the
    /// Go engine. Empty means the public cloud. `AzureGermanCloud` (retired) and unknown
    /// names are errors that name the supported clouds.
    pub fn from_name(name: &str) -> Result<Cloud, AzureError> {
        let upper = name.trim().to_ascii_uppercase();
        match upper.as_str() {
            "" | "AZUREPUBLICCLOUD" => Ok(Cloud::public()),
            "AZUREUSGOVERNMENTCLOUD" => Ok(Cloud::us_government()),
            "AZURECHINACLOUD" => Ok(Cloud::china()),
            "AZUREGERMANCLOUD" => Err(AzureError::config(format!(
                "the Azure Germany cloud (AzureGermanCloud) has been retired by Microsoft; \
                 supported clouds: {}",
                SUPPORTED_CLOUDS.join(", ")
            ))),
            _ => Err(AzureError::config(format!(
                "no cloud configuration matching the name \"{upper}\"; supported clouds: {}",
                SUPPORTED_CLOUDS.join(", ")
            ))),
        }
    }

    /// Applies `AZURE_AUTHORITY_HOST`, `AZURE_GRAPH_ENDPOINT` and
    /// `AZURE_RESOURCE_MANAGER_ENDPOINT` from `env`. Each must be an `https://` URL, or
    /// `http://` on a loopback address.
    pub fn with_env_overrides(mut self, env: EnvLookup<'_>) -> Result<Cloud, AzureError> {
        if let Some(v) = env_value(env, ENV_AUTHORITY_HOST) {
            self.authority_host = parse_override(ENV_AUTHORITY_HOST, &v, true)?;
        }
        if let Some(v) = env_value(env, ENV_GRAPH_ENDPOINT) {
            self.graph_endpoint = parse_override(ENV_GRAPH_ENDPOINT, &v, false)?;
        }
        if let Some(v) = env_value(env, ENV_RESOURCE_MANAGER_ENDPOINT) {
            self.arm_endpoint = parse_override(ENV_RESOURCE_MANAGER_ENDPOINT, &v, false)?;
        }
        Ok(self)
    }

    /// Graph API base: `<graph_endpoint>/v1.0`.
    pub fn graph_api_base(&self) -> String {
        format!("{}/v1.0", trimmed(&self.graph_endpoint))
    }

    /// Token scope for Graph: `<graph_endpoint>/.default`.
    pub fn graph_scope(&self) -> String {
        format!("{}/.default", trimmed(&self.graph_endpoint))
    }

    /// Token scope for ARM: `<arm_endpoint>/.default`.
    pub fn arm_scope(&self) -> String {
        format!("{}/.default", trimmed(&self.arm_endpoint))
    }

    /// The v2.0 token endpoint of a tenant.
    pub fn token_endpoint(&self, tenant_id: &str) -> Result<Url, AzureError> {
        self.authority_host
            .join(&format!("{tenant_id}/oauth2/v2.0/token"))
            .map_err(|e| AzureError::config(format!("invalid tenant id '{tenant_id}': {e}")))
    }
}

/// The URL as text without a trailing `/`.
pub(crate) fn trimmed(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

fn parse_override(var: &str, value: &str, authority: bool) -> Result<Url, AzureError> {
    let mut url = Url::parse(value)
        .map_err(|e| AzureError::config(format!("{var}: invalid URL '{value}': {e}")))?;
    validate_endpoint(&url).map_err(|e| AzureError::config(format!("{var}: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(AzureError::config(format!(
            "{var}: the URL must not have a query or fragment"
        )));
    }
    if authority && !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    if !authority {
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
    }
    Ok(url)
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

    #[test]
    fn builtin_clouds() {
        let p = Cloud::from_name("").unwrap();
        assert_eq!(p.name, "AzurePublicCloud");
        assert_eq!(
            p.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(p.graph_api_base(), "https://graph.microsoft.com/v1.0");
        assert_eq!(p.graph_scope(), "https://graph.microsoft.com/.default");
        assert_eq!(p.arm_scope(), "https://management.azure.com/.default");
        assert_eq!(
            p.token_endpoint("t1").unwrap().as_str(),
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );

        let g = Cloud::from_name("azureusgovernmentcloud").unwrap();
        assert_eq!(
            g.authority_host.as_str(),
            "https://login.microsoftonline.us/"
        );
        assert_eq!(g.graph_scope(), "https://graph.microsoft.us/.default");
        assert_eq!(
            g.arm_endpoint.as_str(),
            "https://management.usgovcloudapi.net/"
        );

        let c = Cloud::from_name("AzureChinaCloud").unwrap();
        assert_eq!(c.authority_host.as_str(), "https://login.chinacloudapi.cn/");
        assert_eq!(
            c.graph_api_base(),
            "https://microsoftgraph.chinacloudapi.cn/v1.0"
        );
        assert_eq!(
            c.arm_scope(),
            "https://management.chinacloudapi.cn/.default"
        );

        assert_eq!(
            Cloud::from_name("AZUREPUBLICCLOUD").unwrap(),
            Cloud::public()
        );
    }

    #[test]
    fn germany_and_unknown_are_rejected_naming_supported_clouds() {
        let e = Cloud::from_name("AzureGermanCloud")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retired"), "{e}");
        for name in SUPPORTED_CLOUDS {
            assert!(e.contains(name), "{e}");
        }
        let e = Cloud::from_name("Mars").unwrap_err().to_string();
        assert!(e.contains("\"MARS\""), "{e}");
        assert!(e.contains("AzureChinaCloud"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let env = env_of(&[
            ("AZURE_AUTHORITY_HOST", "https://127.0.0.1:8443"),
            ("AZURE_GRAPH_ENDPOINT", "https://127.0.0.1:8444/"),
            ("AZURE_RESOURCE_MANAGER_ENDPOINT", "http://localhost:8445"),
        ]);
        let c = Cloud::public().with_env_overrides(&env).unwrap();
        assert_eq!(c.authority_host.as_str(), "https://127.0.0.1:8443/");
        assert_eq!(c.graph_scope(), "https://127.0.0.1:8444/.default");
        assert_eq!(c.graph_api_base(), "https://127.0.0.1:8444/v1.0");
        assert_eq!(c.arm_scope(), "http://localhost:8445/.default");
        assert_eq!(c.name, "AzurePublicCloud");

        let unchanged = Cloud::china()
            .with_env_overrides(&env_of(&[("AZURE_GRAPH_ENDPOINT", "")]))
            .unwrap();
        assert_eq!(unchanged, Cloud::china());
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for bad in [
            "http://example.com",
            "http://10.0.0.1:80",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            let env = env_of(&[("AZURE_GRAPH_ENDPOINT", bad)]);
            assert!(
                Cloud::public().with_env_overrides(&env).is_err(),
                "{bad} accepted"
            );
        }
        for good in [
            "http://127.0.0.1:1",
            "http://127.8.0.1:1",
            "http://[::1]:1",
            "http://localhost:1",
            "https://graph.contoso.example",
        ] {
            let env = env_of(&[("AZURE_GRAPH_ENDPOINT", good)]);
            assert!(
                Cloud::public().with_env_overrides(&env).is_ok(),
                "{good} rejected"
            );
        }
    }
}
