//! The engine's storage layout, identical to the Go engine's so that a mount can switch
//! binaries and keep its data: `config`, `roles/<name>` (JSON, durations in nanoseconds,
//! times in RFC 3339 with the zero time as `0001-01-01T00:00:00Z`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use vault_plugin_sdk::logical::{LogicalError, Storage, StorageEntry};

pub const CONFIG_KEY: &str = "config";
pub const ROLES_PREFIX: &str = "roles/";

/// Go's JSON shapes (durations in nanoseconds, RFC 3339 times), from the SDK.
pub use vault_plugin_sdk::gocompat::{go_duration, go_duration_opt, go_time};

/// The stored `config`. Debug is not derived: it holds secrets.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub subscription_id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub client_secret_key_id: String,
    pub new_client_secret: String,
    #[serde(with = "go_time")]
    pub new_client_secret_created: Option<DateTime<Utc>>,
    #[serde(with = "go_time")]
    pub new_client_secret_expiration_date: Option<DateTime<Utc>>,
    pub new_client_secret_key_id: String,
    pub environment: String,
    #[serde(with = "go_duration")]
    pub root_password_ttl: Duration,
    #[serde(with = "go_time")]
    pub root_password_expiration_date: Option<DateTime<Utc>>,
    #[serde(with = "go_duration")]
    pub identity_token_ttl: Duration,
    pub identity_token_audience: String,
    pub rotation_schedule: String,
    #[serde(with = "go_duration")]
    pub rotation_window: Duration,
    #[serde(with = "go_duration")]
    pub rotation_period: Duration,
    pub disable_automated_rotation: bool,
    pub rotation_policy: String,
    /// When the root credential was last rotated on schedule, or when the schedule was set
    /// (not in the Go engine, which leaves scheduling to Vault Enterprise).
    #[serde(with = "go_time", skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<DateTime<Utc>>,
    /// Default `seamless_rotation` of static roles (`None`: true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seamless_rotation: Option<bool>,
    /// Default `rotation_grace_period` of static roles (`None`: 5m; zero: no overlap).
    #[serde(with = "go_duration_opt", skip_serializing_if = "Option::is_none")]
    pub rotation_grace_period: Option<Duration>,
    /// How often the reconciler runs (`None`: the default; zero: never). Not in the Go engine.
    #[serde(with = "go_duration_opt", skip_serializing_if = "Option::is_none")]
    pub reconcile_interval: Option<Duration>,
    /// PEM certificate of the engine's identity (not in the Go engine).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    /// PEM private key of that certificate; write-only, like `client_secret`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_certificate_key: String,
}

/// An ARM role of a role definition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AzureRole {
    pub role_name: String,
    pub role_id: String,
    pub scope: String,
}

/// An Entra ID group of a role definition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AzureGroup {
    pub group_name: String,
    pub object_id: String,
}

/// A stored `roles/<name>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Role {
    pub credential_type: i64,
    pub azure_roles: Option<Vec<AzureRole>>,
    pub azure_groups: Option<Vec<AzureGroup>>,
    pub application_id: String,
    pub application_object_id: String,
    pub sign_in_audience: String,
    pub tags: Option<Vec<String>>,
    #[serde(with = "go_duration")]
    pub ttl: Duration,
    #[serde(with = "go_duration")]
    pub max_ttl: Duration,
    #[serde(with = "go_duration")]
    pub explicit_max_ttl: Duration,
    pub permanently_delete: bool,
    pub persist_app: bool,
    pub role_assignment_ids: Option<Vec<String>>,
    pub group_membership_ids: Option<Vec<String>>,
    pub sp_object_id: String,
    pub managed_application_object_id: String,
    /// How long `creds` waits for a new secret to obtain a token (zero: no wait). Not in
    /// the Go engine, which ignores the key; absent means [`DEFAULT_CREDENTIAL_READY_TIMEOUT`].
    #[serde(with = "go_duration_opt", skip_serializing_if = "Option::is_none")]
    pub credential_ready_timeout: Option<Duration>,
    /// Metadata returned with the role's credentials (Vault 2.0); absent when never set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// How many credentials the engine keeps ready to hand out (see `pool.rs`); not in the
    /// Go engine, and absent when zero so the stored role keeps its layout.
    #[serde(skip_serializing_if = "is_zero")]
    pub pool_size: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `credential_ready_timeout` of a role that never set it.
pub const DEFAULT_CREDENTIAL_READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Role {
    /// The application a dynamic issuance of this role makes: the role's sign-in audience
    /// and tags on the engine's defaults.
    pub fn new_application(&self) -> azure_clients::NewApplication {
        let mut app = azure_clients::NewApplication::dynamic();
        app.sign_in_audience = Some(self.sign_in_audience.clone()).filter(|s| !s.is_empty());
        app.tags = self.tags.clone().unwrap_or_default();
        app
    }

    /// How long `creds` waits for a new secret to work; `None` when waiting is turned off.
    pub fn ready_timeout(&self) -> Option<Duration> {
        Some(
            self.credential_ready_timeout
                .unwrap_or(DEFAULT_CREDENTIAL_READY_TIMEOUT),
        )
        .filter(|d| !d.is_zero())
    }
}

pub async fn get_config(storage: &dyn Storage) -> Result<Option<Config>, LogicalError> {
    match storage.get(CONFIG_KEY).await? {
        Some(e) => Ok(Some(decode_config(&e)?)),
        None => Ok(None),
    }
}

/// The last `config` decoded in this process, with the bytes it came from: reads answered
/// from the storage cache decode each stored value once (mounts sharing the process only
/// make it decode more often).
static LAST_CONFIG: std::sync::Mutex<Option<(Vec<u8>, Config)>> = std::sync::Mutex::new(None);

fn decode_config(entry: &StorageEntry) -> Result<Config, LogicalError> {
    if let Ok(last) = LAST_CONFIG.lock() {
        if let Some((_, config)) = last.as_ref().filter(|(bytes, _)| *bytes == entry.value) {
            return Ok(config.clone());
        }
    }
    let config: Config = entry.decode()?;
    if let Ok(mut last) = LAST_CONFIG.lock() {
        *last = Some((entry.value.clone(), config.clone()));
    }
    Ok(config)
}

pub async fn put_config(storage: &dyn Storage, config: &Config) -> Result<(), LogicalError> {
    let mut entry = StorageEntry::json(CONFIG_KEY, config)?;
    entry.seal_wrap = true;
    storage.put(entry).await?;
    Ok(())
}

pub async fn get_role(storage: &dyn Storage, name: &str) -> Result<Option<Role>, LogicalError> {
    match storage.get(&format!("{ROLES_PREFIX}{name}")).await? {
        Some(e) => Ok(Some(e.decode()?)),
        None => Ok(None),
    }
}

pub async fn put_role(storage: &dyn Storage, name: &str, role: &Role) -> Result<(), LogicalError> {
    storage
        .put(StorageEntry::json(format!("{ROLES_PREFIX}{name}"), role)?)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_decoded_again_follows_its_bytes() {
        let entry = |tenant: &str| {
            let config = Config {
                tenant_id: tenant.into(),
                ..Config::default()
            };
            StorageEntry::json(CONFIG_KEY, &config).unwrap()
        };
        assert_eq!(decode_config(&entry("a")).unwrap().tenant_id, "a");
        assert_eq!(decode_config(&entry("a")).unwrap().tenant_id, "a");
        assert_eq!(decode_config(&entry("b")).unwrap().tenant_id, "b");
        let bad = StorageEntry {
            key: CONFIG_KEY.into(),
            value: b"{".to_vec(),
            seal_wrap: false,
        };
        assert!(decode_config(&bad).is_err());
        assert_eq!(decode_config(&entry("b")).unwrap().tenant_id, "b");
    }

    #[test]
    fn reads_a_config_written_by_the_go_engine() {
        // As the Go engine stores it (durations in ns, zero times, unknown keys tolerated).
        let go = r#"{"subscription_id":"sub","tenant_id":"ten","client_id":"cid","client_secret":"s3cr3t",
            "client_secret_key_id":"","new_client_secret":"","new_client_secret_created":"0001-01-01T00:00:00Z",
            "new_client_secret_expiration_date":"0001-01-01T00:00:00Z","new_client_secret_key_id":"",
            "environment":"AzurePublicCloud","root_password_ttl":15768000000000000,
            "root_password_expiration_date":"2027-05-23T10:00:00.123456789Z","identity_token_ttl":0,
            "identity_token_audience":"","rotation_schedule":"","rotation_window":0,"rotation_period":0,
            "disable_automated_rotation":false,"rotation_policy":"","some_future_key":1}"#;
        let c: Config = serde_json::from_str(go).unwrap();
        assert_eq!(c.root_password_ttl, Duration::from_secs(15_768_000));
        assert_eq!(c.client_secret, "s3cr3t");
        assert!(c.new_client_secret_created.is_none());
        let exp = c.root_password_expiration_date.unwrap();
        assert_eq!(exp.timestamp_subsec_nanos(), 123_456_789);
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["root_password_ttl"], 15_768_000_000_000_000i64);
        assert_eq!(back["new_client_secret_created"], go_time::ZERO);
        assert_eq!(
            back["root_password_expiration_date"],
            "2027-05-23T10:00:00.123456789Z"
        );
    }

    #[test]
    fn reads_a_role_written_by_the_go_engine() {
        let go = r#"{"credential_type":0,"azure_roles":[{"role_name":"Reader","role_id":"/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7","scope":"/subscriptions/s"}],
            "azure_groups":null,"application_id":"","application_object_id":"","sign_in_audience":"","tags":null,
            "ttl":3600000000000,"max_ttl":0,"explicit_max_ttl":0,"permanently_delete":false,"persist_app":false,
            "role_assignment_ids":null,"group_membership_ids":null,"sp_object_id":"","managed_application_object_id":""}"#;
        let r: Role = serde_json::from_str(go).unwrap();
        assert_eq!(r.ttl, Duration::from_secs(3600));
        assert_eq!(r.azure_roles.as_ref().unwrap()[0].role_name, "Reader");
        assert!(r.azure_groups.is_none());
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["azure_groups"], serde_json::Value::Null);
        assert_eq!(back["ttl"], 3_600_000_000_000i64);
        assert!(
            back.get("credential_ready_timeout").is_none(),
            "an unset timeout is not written, so the Go engine sees its own layout"
        );
        assert_eq!(r.ready_timeout(), Some(DEFAULT_CREDENTIAL_READY_TIMEOUT));
    }

    #[test]
    fn credential_ready_timeout_is_stored_in_nanoseconds() {
        let mut r = Role {
            credential_ready_timeout: Some(Duration::from_secs(45)),
            ..Role::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["credential_ready_timeout"], 45_000_000_000i64);
        let back: Role = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.ready_timeout(), Some(Duration::from_secs(45)));

        r.credential_ready_timeout = Some(Duration::ZERO);
        let back: Role = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back.credential_ready_timeout, Some(Duration::ZERO));
        assert_eq!(back.ready_timeout(), None, "zero turns the wait off");

        let null: Role = serde_json::from_str(r#"{"credential_ready_timeout":null}"#).unwrap();
        assert_eq!(null.credential_ready_timeout, None);
    }
}
