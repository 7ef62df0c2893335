//! Storage of static roles: `static-roles/<name>` (seal-wrapped, it holds the current client
//! secret, or for a certificate role the current certificate and its private key). Durations in nanoseconds and times in RFC 3339, as the rest of the engine's storage.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::{go_duration, go_duration_opt, go_time};
use vault_plugin_sdk::logical::{LogicalError, Storage, StorageEntry};

pub const STATIC_ROLES_PREFIX: &str = "static-roles/";

/// Default `rotation_period` of a static role (Vault's: two years).
pub const DEFAULT_ROTATION_PERIOD: Duration = Duration::from_secs(17_520 * 3600);
/// The shortest `rotation_period` accepted (Vault asks for 720h; shorter ones are allowed
/// here so that short-lived setups and tests can rotate often).
pub const MIN_ROTATION_PERIOD: Duration = Duration::from_secs(10);
/// Default `rotation_grace_period` (Vault's: 5 minutes).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(300);
/// The least a password outlives its scheduled replacement, even with the grace turned off.
pub const MIN_END_MARGIN: Duration = Duration::from_secs(60);

/// The secret a static role hands out. Debug is not derived: it holds the secret.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StaticSecret {
    /// The Azure password's `keyId`.
    pub key_id: String,
    /// Empty for a secret imported by id only (not usable until rotated).
    pub client_secret: String,
    #[serde(with = "go_time")]
    pub expiration: Option<DateTime<Utc>>,
    #[serde(with = "go_time")]
    pub created: Option<DateTime<Utc>>,
    /// True when the engine added this password (false: imported).
    pub engine_made: bool,
    /// Certificate roles: the certificate (PEM); `key_id` is its key credential's id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    /// Certificate roles: the private key (PEM, PKCS#8), kept in this seal-wrapped record
    /// only so that every `static-creds` read hands out the same credential.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Certificate roles: the certificate's SHA-1 thumbprint (hex).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub thumbprint: String,
}

impl StaticSecret {
    /// True when the secret can be handed out (a client secret or a certificate with its key).
    pub fn usable(&self) -> bool {
        !self.client_secret.is_empty() || !self.private_key.is_empty()
    }
}

/// A replaced password the engine still tracks until it removes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RetiredSecret {
    pub key_id: String,
    #[serde(with = "go_time")]
    pub expiration: Option<DateTime<Utc>>,
    /// When to remove it from Azure; `None`: keep it until its own end date.
    #[serde(with = "go_time")]
    pub remove_after: Option<DateTime<Utc>>,
    pub engine_made: bool,
}

/// A stored `static-roles/<name>`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StaticRole {
    pub application_object_id: String,
    /// The application (client) id, looked up when the role was written.
    pub application_id: String,
    /// `certificate`, or empty for passwords (fixed when the role is created).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub credential_type: String,
    #[serde(with = "go_duration")]
    pub rotation_period: Duration,
    pub metadata: BTreeMap<String, String>,
    /// `None`: the mount's `seamless_rotation`.
    pub seamless_rotation: Option<bool>,
    /// `None`: the mount's `rotation_grace_period`; zero: no overlap (`-1` on input).
    #[serde(with = "go_duration_opt", skip_serializing_if = "Option::is_none")]
    pub rotation_grace_period: Option<Duration>,
    /// Never remove a replaced password before its own end date (vault#31758).
    pub keep_previous_until_expiry: bool,
    pub defer_initial_creds: bool,
    pub current: Option<StaticSecret>,
    pub retired: Vec<RetiredSecret>,
    #[serde(with = "go_time")]
    pub last_rotation: Option<DateTime<Utc>>,
    /// When the background rotation is due (`None`: never, e.g. deferred and not yet made).
    #[serde(with = "go_time")]
    pub next_rotation: Option<DateTime<Utc>>,
}

/// The stored `credential_type` of a certificate static role.
pub const CERTIFICATE: &str = "certificate";

impl StaticRole {
    /// True for a role that hands out certificates (key credentials), false for passwords.
    pub fn is_certificate(&self) -> bool {
        self.credential_type == CERTIFICATE
    }

    /// The API value of `credential_type`.
    pub fn credential_type_name(&self) -> &'static str {
        if self.is_certificate() {
            CERTIFICATE
        } else {
            "password"
        }
    }

    /// Every key id the role references (current and retired).
    pub fn key_ids(&self) -> Vec<String> {
        self.current
            .iter()
            .map(|c| c.key_id.clone())
            .chain(self.retired.iter().map(|r| r.key_id.clone()))
            .collect()
    }
}

fn key(name: &str) -> String {
    format!("{STATIC_ROLES_PREFIX}{name}")
}

pub async fn get(storage: &dyn Storage, name: &str) -> Result<Option<StaticRole>, LogicalError> {
    match storage.get(&key(name)).await? {
        Some(e) => Ok(Some(e.decode()?)),
        None => Ok(None),
    }
}

pub async fn put(storage: &dyn Storage, name: &str, role: &StaticRole) -> Result<(), LogicalError> {
    let mut entry = StorageEntry::json(key(name), role)?;
    entry.seal_wrap = true;
    storage.put(entry).await?;
    Ok(())
}

pub async fn delete(storage: &dyn Storage, name: &str) -> Result<(), LogicalError> {
    storage.delete(&key(name)).await?;
    Ok(())
}

pub async fn list(storage: &dyn Storage) -> Result<Vec<String>, LogicalError> {
    Ok(storage.list(STATIC_ROLES_PREFIX).await?)
}

/// A grace period as typed: seconds (`-1` turns the overlap off, `0` means the default) or a
/// duration string. `Ok(None)`: the default.
pub fn parse_grace(raw: &str) -> Result<Option<Duration>, String> {
    let raw = raw.trim();
    match raw {
        "" | "0" => return Ok(None),
        "-1" => return Ok(Some(Duration::ZERO)),
        _ => {}
    }
    if raw.starts_with('-') {
        return Err(format!(
            "rotation_grace_period: {raw:?} is negative; use -1 to turn the overlap off"
        ));
    }
    vault_plugin_sdk::framework::parse_duration(&serde_json::Value::String(raw.to_string()))
        .map(|d| if d.is_zero() { None } else { Some(d) })
        .map_err(|e| format!("rotation_grace_period: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_inputs() {
        assert_eq!(parse_grace("0").unwrap(), None);
        assert_eq!(parse_grace("").unwrap(), None);
        assert_eq!(parse_grace("-1").unwrap(), Some(Duration::ZERO));
        assert_eq!(parse_grace("300").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_grace("1h30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert!(parse_grace("-5").unwrap_err().contains("use -1"));
        assert!(parse_grace("soon")
            .unwrap_err()
            .starts_with("rotation_grace_period: "));
    }

    #[test]
    fn certificate_secrets_round_trip_and_password_records_stay_as_they_were() {
        let password = StaticRole {
            current: Some(StaticSecret {
                key_id: "k".into(),
                client_secret: "s".into(),
                ..StaticSecret::default()
            }),
            ..StaticRole::default()
        };
        let v = serde_json::to_value(&password).unwrap();
        assert!(v.get("credential_type").is_none());
        assert!(v["current"].get("private_key").is_none());
        assert!(!password.is_certificate());
        assert_eq!(password.credential_type_name(), "password");
        assert!(password.current.as_ref().unwrap().usable());

        let cert = StaticRole {
            credential_type: CERTIFICATE.into(),
            current: Some(StaticSecret {
                key_id: "k".into(),
                certificate: "CERT".into(),
                private_key: "KEY".into(),
                thumbprint: "AB".into(),
                ..StaticSecret::default()
            }),
            ..StaticRole::default()
        };
        let back: StaticRole =
            serde_json::from_value(serde_json::to_value(&cert).unwrap()).unwrap();
        assert!(back == cert);
        assert!(back.is_certificate());
        assert!(back.current.as_ref().unwrap().usable());
        assert!(!StaticSecret::default().usable());
    }

    #[test]
    fn round_trips_and_omits_unset_grace() {
        let role = StaticRole {
            application_object_id: "obj".into(),
            rotation_period: Duration::from_secs(3600),
            current: Some(StaticSecret {
                key_id: "k".into(),
                client_secret: "s".into(),
                engine_made: true,
                ..StaticSecret::default()
            }),
            retired: vec![RetiredSecret {
                key_id: "old".into(),
                ..RetiredSecret::default()
            }],
            ..StaticRole::default()
        };
        let v = serde_json::to_value(&role).unwrap();
        assert_eq!(v["rotation_period"], 3_600_000_000_000i64);
        assert!(v.get("rotation_grace_period").is_none());
        let back: StaticRole = serde_json::from_value(v).unwrap();
        assert!(back == role);
        assert_eq!(back.key_ids(), vec!["k".to_string(), "old".to_string()]);
    }
}
