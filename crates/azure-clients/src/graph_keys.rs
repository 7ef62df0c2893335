//! Microsoft Graph v1.0: key credentials (certificates) of applications and the tenant's
//! app management policies. A child module of `graph`.
//!
//! Key credentials are written two ways:
//! - `PATCH /applications/{id}` with the whole `keyCredentials` collection (read with
//!   `$select=keyCredentials`, which is the only read that returns each `key`), for an
//!   application with no valid certificate yet and for managing other applications;
//! - `addKey`/`removeKey` with a proof-of-possession JWT signed by a current certificate of
//!   the application, which needs no directory permission when an application rolls its own
//!   keys.
//!
//! Collection writes of one object are serialised with the same per-object lock as password
//! writes.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::error::{AzureError, Service};
use super::super::http::{lenient_datetime, Replay};
use super::super::retry::Deadline;
use super::super::secret::SecretString;
use super::{rfc3339, DeleteOutcome, GraphClient};

/// A key credential of an application (`key` only on `$select=keyCredentials` reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCredential {
    /// Key id (GUID).
    pub key_id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `AsymmetricX509Cert`, ...
    #[serde(default, rename = "type")]
    pub key_type: Option<String>,
    /// `Verify`, ...
    #[serde(default)]
    pub usage: Option<String>,
    /// Base64 of the identifier (by default the SHA-1 thumbprint).
    #[serde(default)]
    pub custom_key_identifier: Option<String>,
    /// Start of validity.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub start_date_time: Option<DateTime<Utc>>,
    /// End of validity.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub end_date_time: Option<DateTime<Utc>>,
    /// Base64 of the DER certificate, on `$select=keyCredentials` reads only.
    #[serde(default)]
    pub key: Option<String>,
}

/// A certificate to register as a key credential (`AsymmetricX509Cert`, `Verify`).
#[derive(Clone, Debug, Default)]
pub struct NewKeyCredential {
    /// The public certificate, DER. Never a private key.
    pub certificate_der: Vec<u8>,
    /// Display name (at most 90 characters are kept by Graph).
    pub display_name: Option<String>,
    /// Start of validity (Graph: the certificate's notBefore when omitted).
    pub start: Option<DateTime<Utc>>,
    /// End of validity (Graph: the certificate's notAfter when omitted).
    pub end: Option<DateTime<Utc>>,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

impl NewKeyCredential {
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
            "key": b64(&self.certificate_der),
        });
        if let Some(n) = &self.display_name {
            v["displayName"] = json!(n);
        }
        if let Some(t) = self.start {
            v["startDateTime"] = json!(rfc3339(t));
        }
        if let Some(t) = self.end {
            v["endDateTime"] = json!(rfc3339(t));
        }
        v
    }

    fn matches(&self, k: &KeyCredential) -> bool {
        k.key
            .as_deref()
            .and_then(b64_decode)
            .is_some_and(|der| der == self.certificate_der)
    }
}

/// The restrictions of the app management policy in force for an application, as far as
/// the engine's credentials are concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialPolicy {
    /// Id of the policy the restrictions come from (`None`: no policy in force).
    pub policy_id: Option<String>,
    /// Whether the policy is the tenant default (else one assigned to the application).
    pub is_tenant_default: bool,
    /// `passwordAddition` is in force: no new passwords.
    pub password_addition_blocked: bool,
    /// `passwordLifetime`: longest allowed password lifetime.
    pub password_max_lifetime: Option<chrono::Duration>,
    /// `asymmetricKeyLifetime`: longest allowed certificate lifetime.
    pub key_max_lifetime: Option<chrono::Duration>,
}

/// Parses an ISO 8601 duration (`P90D`, `P4DT12H30M5S`; a year is 365 days, a month 30).
pub fn parse_iso_duration(text: &str) -> Option<chrono::Duration> {
    let rest = text.trim().strip_prefix('P')?;
    let mut secs: f64 = 0.0;
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' => number.push(c),
            unit => {
                let n: f64 = number.parse().ok()?;
                number.clear();
                let factor = match (in_time, unit) {
                    (false, 'Y') => 365.0 * 86_400.0,
                    (false, 'M') => 30.0 * 86_400.0,
                    (false, 'W') => 7.0 * 86_400.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return None,
                };
                secs += n * factor;
                any = true;
            }
        }
    }
    if !number.is_empty() || !any || !secs.is_finite() || secs > 1e12 {
        return None;
    }
    Some(chrono::Duration::seconds(secs as i64))
}

/// Evaluates one `{passwordCredentials, keyCredentials}` restrictions object for an
/// application created at `created`.
fn evaluate(
    policy_id: String,
    is_default: bool,
    r: &Value,
    created: DateTime<Utc>,
) -> CredentialPolicy {
    let mut out = CredentialPolicy {
        policy_id: Some(policy_id),
        is_tenant_default: is_default,
        ..CredentialPolicy::default()
    };
    let applies = |e: &Value| {
        if e["state"].as_str() == Some("disabled") {
            return false;
        }
        let after = e["restrictForAppsCreatedAfterDateTime"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
        after.is_none_or(|a| created >= a)
    };
    for e in r["passwordCredentials"].as_array().into_iter().flatten() {
        if !applies(e) {
            continue;
        }
        match e["restrictionType"].as_str() {
            Some("passwordAddition") => out.password_addition_blocked = true,
            Some("passwordLifetime") => {
                out.password_max_lifetime = e["maxLifetime"].as_str().and_then(parse_iso_duration)
            }
            _ => {}
        }
    }
    for e in r["keyCredentials"].as_array().into_iter().flatten() {
        if applies(e) && e["restrictionType"].as_str() == Some("asymmetricKeyLifetime") {
            out.key_max_lifetime = e["maxLifetime"].as_str().and_then(parse_iso_duration);
        }
    }
    out
}

impl GraphClient {
    async fn raw_key_credentials(
        &self,
        op: &str,
        object_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<Value>, AzureError> {
        let mut url = self.url(&format!("applications/{object_id}"))?;
        url.set_query(Some("$select=keyCredentials"));
        let v: Value = self
            .retry_propagation(op, deadline, AzureError::is_not_found, |d| {
                let url = url.clone();
                async move { self.get_json::<Value>(op, url, d).await }
            })
            .await?;
        Ok(v["keyCredentials"].as_array().cloned().unwrap_or_default())
    }

    async fn patch_key_credentials(
        &self,
        op: &str,
        object_id: &str,
        keys: Vec<Value>,
        deadline: Deadline,
    ) -> Result<(), AzureError> {
        let url = self.url(&format!("applications/{object_id}"))?;
        let keys: Vec<Value> = keys
            .into_iter()
            .map(|mut k| {
                if let Value::Object(m) = &mut k {
                    m.retain(|name, _| !name.starts_with('@'));
                }
                k
            })
            .collect();
        let body = json!({ "keyCredentials": keys });
        self.send(
            op,
            Method::PATCH,
            url,
            Some(&body),
            Replay::Idempotent,
            deadline,
        )
        .await
        .map(|_| ())
    }

    /// The application's key credentials, each with its `key` (the certificate).
    pub async fn list_application_key_credentials(
        &self,
        object_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<KeyCredential>, AzureError> {
        let op = "list application key credentials";
        let raw = self.raw_key_credentials(op, object_id, deadline).await?;
        serde_json::from_value(Value::Array(raw))
            .map_err(|e| AzureError::invalid_response(op, Service::Graph, e.to_string()))
    }

    /// Adds a certificate to an application's key credentials without touching the others
    /// (read the collection, PATCH it back with the new one), serialised per application.
    /// Works on an application without any certificate.
    pub async fn add_application_key_credential(
        &self,
        object_id: &str,
        new: &NewKeyCredential,
        deadline: Deadline,
    ) -> Result<KeyCredential, AzureError> {
        let op = "add application key credential";
        let _guard = self
            .lock(&format!("applications/{object_id}"), deadline)
            .await?;
        let mut keys = self.raw_key_credentials(op, object_id, deadline).await?;
        let existing: Vec<KeyCredential> =
            serde_json::from_value(Value::Array(keys.clone())).unwrap_or_default();
        if let Some(k) = existing.iter().find(|k| new.matches(k)) {
            return Ok(k.clone());
        }
        keys.push(new.to_json());
        self.patch_key_credentials(op, object_id, keys, deadline)
            .await?;
        let after = self
            .list_application_key_credentials(object_id, deadline)
            .await?;
        after.into_iter().find(|k| new.matches(k)).ok_or_else(|| {
            AzureError::invalid_response(
                op,
                Service::Graph,
                "the new key credential is not listed after the update",
            )
        })
    }

    /// Removes one key credential of an application, keeping the others (read, PATCH
    /// back without it), serialised per application. A key (or application) already gone
    /// counts as success.
    pub async fn remove_application_key_credential(
        &self,
        object_id: &str,
        key_id: &str,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let op = "remove application key credential";
        let _guard = self
            .lock(&format!("applications/{object_id}"), deadline)
            .await?;
        let mut url = self.url(&format!("applications/{object_id}"))?;
        url.set_query(Some("$select=keyCredentials"));
        let keys = match self.get_json::<Value>(op, url, deadline).await {
            Ok(v) => v["keyCredentials"].as_array().cloned().unwrap_or_default(),
            Err(e) if e.is_not_found() => return Ok(DeleteOutcome::AlreadyGone),
            Err(e) => return Err(e),
        };
        let before = keys.len();
        let kept: Vec<Value> = keys
            .into_iter()
            .filter(|k| {
                !k["keyId"]
                    .as_str()
                    .is_some_and(|id| id.eq_ignore_ascii_case(key_id))
            })
            .collect();
        if kept.len() == before {
            return Ok(DeleteOutcome::AlreadyGone);
        }
        match self
            .patch_key_credentials(op, object_id, kept, deadline)
            .await
        {
            Ok(()) => Ok(DeleteOutcome::Deleted),
            Err(e) if e.is_not_found() => Ok(DeleteOutcome::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// `POST /applications/{id}/addKey` with a proof signed by a current certificate of
    /// the application (see [`ClientCertificate::proof_of_possession`]).
    ///
    /// [`ClientCertificate::proof_of_possession`]: super::super::ClientCertificate::proof_of_possession
    pub async fn add_application_key_with_proof(
        &self,
        object_id: &str,
        new: &NewKeyCredential,
        proof: &SecretString,
        deadline: Deadline,
    ) -> Result<KeyCredential, AzureError> {
        let op = "add application key";
        let _guard = self
            .lock(&format!("applications/{object_id}"), deadline)
            .await?;
        let url = self.url(&format!("applications/{object_id}/addKey"))?;
        let body = json!({
            "keyCredential": new.to_json(),
            "passwordCredential": null,
            "proof": proof.expose(),
        });
        self.send(
            op,
            Method::POST,
            url,
            Some(&body),
            Replay::NotIdempotent,
            deadline,
        )
        .await?
        .json(op, Service::Graph)
    }

    /// `POST /applications/{id}/removeKey` with a proof signed by a current certificate of
    /// the application. An unknown key id counts as already gone.
    pub async fn remove_application_key_with_proof(
        &self,
        object_id: &str,
        key_id: &str,
        proof: &SecretString,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let body = json!({ "keyId": key_id, "proof": proof.expose() });
        match self
            .remove_application_credential(
                "remove application key",
                object_id,
                "removeKey",
                &body,
                deadline,
            )
            .await
        {
            Err(e) if e.status() == Some(400) && e.message().contains("No key credential") => {
                Ok(DeleteOutcome::AlreadyGone)
            }
            other => other,
        }
    }

    /// The app management policy in force for an application: the enabled policy
    /// assigned to `app_object_id` if there is one, else the tenant default if enabled
    /// (its `applicationRestrictions`). `created` is the application's creation time (now
    /// for one about to be made). Reading policies needs `Policy.Read.All` or
    /// `Policy.Read.ApplicationConfiguration`; without it the call fails with 403.
    pub async fn credential_policy(
        &self,
        app_object_id: Option<&str>,
        created: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<CredentialPolicy, AzureError> {
        if let Some(id) = app_object_id {
            let url = self.url(&format!("applications/{id}/appManagementPolicies"))?;
            let v: Value = self
                .get_json("read assigned app management policy", url, deadline)
                .await?;
            let assigned = v["value"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["isEnabled"].as_bool().unwrap_or(true));
            if let Some(p) = assigned {
                let pid = p["id"].as_str().unwrap_or_default().to_owned();
                return Ok(evaluate(pid, false, &p["restrictions"], created));
            }
        }
        self.default_policy("applicationRestrictions", created, deadline)
            .await
    }

    /// The app management policy in force for a service principal about to be made (it
    /// has no assigned policy yet): the tenant default's `servicePrincipalRestrictions`
    /// when enabled. Dynamic credentials put their password on the service principal.
    pub async fn new_service_principal_credential_policy(
        &self,
        deadline: Deadline,
    ) -> Result<CredentialPolicy, AzureError> {
        self.default_policy("servicePrincipalRestrictions", Utc::now(), deadline)
            .await
    }

    async fn default_policy(
        &self,
        restrictions: &str,
        created: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<CredentialPolicy, AzureError> {
        let url = self.url("policies/defaultAppManagementPolicy")?;
        let d: Value = self
            .get_json("read default app management policy", url, deadline)
            .await?;
        if !d["isEnabled"].as_bool().unwrap_or(false) {
            return Ok(CredentialPolicy::default());
        }
        let pid = d["id"].as_str().unwrap_or_default().to_owned();
        Ok(evaluate(pid, true, &d[restrictions], created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_iso_duration("P90D"), Some(chrono::Duration::days(90)));
        assert_eq!(
            parse_iso_duration("P4DT12H30M5S"),
            Some(chrono::Duration::seconds(390_605))
        );
        assert_eq!(parse_iso_duration("P1Y"), Some(chrono::Duration::days(365)));
        for bad in ["", "P", "P1", "PT", "P1H", "90D", "PxD"] {
            assert_eq!(parse_iso_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn evaluation() {
        let now = Utc::now();
        let r = json!({
            "passwordCredentials": [
                {"restrictionType": "passwordAddition", "maxLifetime": null},
                {"restrictionType": "passwordLifetime", "maxLifetime": "P30D", "state": "disabled"}
            ],
            "keyCredentials": [{"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "P90D",
                "restrictForAppsCreatedAfterDateTime": "2019-01-01T00:00:00Z"}]
        });
        let p = evaluate("p".into(), true, &r, now);
        assert!(p.password_addition_blocked);
        assert_eq!(p.password_max_lifetime, None);
        assert_eq!(p.key_max_lifetime, Some(chrono::Duration::days(90)));
        // An application created before the cut-off is exempt.
        let old = DateTime::parse_from_rfc3339("2018-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(evaluate("p".into(), true, &r, old).key_max_lifetime, None);
    }
}
