//! App management policies: the tenant default (`tenantAppManagementPolicy`) and assignable
//! `appManagementPolicy` objects, their validation and their enforcement on credential
//! writes (create, PATCH, addPassword, addKey).
//!
//! Rules (Microsoft Graph docs): an enabled policy assigned to an object replaces the tenant
//! default for it (no merge); the tenant default applies only when enabled, with
//! `applicationRestrictions` for applications and `servicePrincipalRestrictions` for service
//! principals; a restriction applies to objects created on or after its
//! `restrictForAppsCreatedAfterDateTime`; a missing `state` means enabled.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::errors::GraphError;
use super::keys::parse_duration;
use super::state::Directory;

/// The fixed id of the tenant default policy.
pub const DEFAULT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000000";

const PASSWORD_TYPES: [&str; 6] = [
    "passwordAddition",
    "passwordLifetime",
    "symmetricKeyAddition",
    "symmetricKeyLifetime",
    "customPasswordAddition",
    "unknownFutureValue",
];
const KEY_TYPES: [&str; 3] = [
    "asymmetricKeyLifetime",
    "trustedCertificateAuthority",
    "unknownFutureValue",
];

/// The tenant default policy of a new tenant: present, disabled, empty.
pub fn initial_default() -> Value {
    json!({
        "id": DEFAULT_POLICY_ID,
        "displayName": "Default app management tenant policy",
        "description": "Default tenant policy that enforces app management restrictions on applications and service principals. To apply policy to targeted resources, create a new policy under appManagementPolicies collection.",
        "isEnabled": false,
        "applicationRestrictions": {"passwordCredentials": [], "keyCredentials": []},
        "servicePrincipalRestrictions": {"passwordCredentials": [], "keyCredentials": []},
    })
}

/// Which credential a write adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A password (client secret).
    Password,
    /// An asymmetric key (certificate).
    Key,
}

fn invalid(prop: &str, entity: &str) -> GraphError {
    GraphError::bad_request(format!(
        "Invalid value specified for property '{prop}' of resource '{entity}'."
    ))
}

/// Validates a `{passwordCredentials, keyCredentials}` restrictions object.
pub fn validate_restrictions(v: &Value, entity: &str) -> Result<(), GraphError> {
    let Value::Object(m) = v else {
        return Err(invalid("restrictions", entity));
    };
    for (name, allowed, entry_entity) in [
        (
            "passwordCredentials",
            &PASSWORD_TYPES[..],
            "PasswordCredentialConfiguration",
        ),
        (
            "keyCredentials",
            &KEY_TYPES[..],
            "KeyCredentialConfiguration",
        ),
    ] {
        let entries = match m.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => return Err(invalid(name, entity)),
        };
        let mut seen: Vec<&str> = Vec::new();
        for e in entries {
            let t = e
                .get("restrictionType")
                .and_then(Value::as_str)
                .filter(|t| allowed.contains(t))
                .ok_or_else(|| invalid("restrictionType", entry_entity))?;
            if seen.contains(&t) {
                return Err(GraphError::bad_request(format!(
                    "Restriction type '{t}' appears more than once in '{name}'."
                )));
            }
            seen.push(t);
            match e.get("state") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if ["enabled", "disabled"].contains(&s.as_str()) => {}
                Some(_) => return Err(invalid("state", entry_entity)),
            }
            let lifetime = t.ends_with("Lifetime");
            match e.get("maxLifetime") {
                Some(Value::String(d)) if lifetime && parse_duration(d).is_some() => {}
                None | Some(Value::Null) if !lifetime => {}
                _ => return Err(invalid("maxLifetime", entry_entity)),
            }
            match e.get("restrictForAppsCreatedAfterDateTime") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if DateTime::parse_from_rfc3339(s).is_ok() => {}
                Some(_) => {
                    return Err(invalid("restrictForAppsCreatedAfterDateTime", entry_entity))
                }
            }
        }
    }
    Ok(())
}

/// Applies the writable properties of `body` to a stored policy object.
pub fn apply_update(
    target: &mut Value,
    body: &Map<String, Value>,
    restriction_keys: &[&str],
    entity: &str,
) -> Result<(), GraphError> {
    for k in restriction_keys {
        if let Some(r) = body.get(*k) {
            validate_restrictions(r, entity)?;
        }
    }
    if let Some(v) = body.get("isEnabled") {
        if !v.is_boolean() {
            return Err(invalid("isEnabled", entity));
        }
    }
    for k in ["displayName", "description"] {
        if let Some(v) = body.get(k) {
            if !(v.is_string() || v.is_null()) {
                return Err(invalid(k, entity));
            }
        }
    }
    for (k, v) in body {
        let writable = ["displayName", "description", "isEnabled"].contains(&k.as_str())
            || restriction_keys.contains(&k.as_str());
        if writable {
            target[k.as_str()] = v.clone();
        }
    }
    Ok(())
}

/// The restrictions in force for an object, with the id of the policy they come from.
fn effective(
    d: &Directory,
    assigned: Option<&str>,
    is_application: bool,
) -> Option<(String, Value)> {
    if let Some(p) = assigned.and_then(|id| d.policies.get(id)) {
        if p["isEnabled"].as_bool().unwrap_or(true) {
            return Some((
                p["id"].as_str().unwrap_or("").to_string(),
                p["restrictions"].clone(),
            ));
        }
    }
    let t = &d.default_policy;
    if !t["isEnabled"].as_bool().unwrap_or(false) {
        return None;
    }
    let key = if is_application {
        "applicationRestrictions"
    } else {
        "servicePrincipalRestrictions"
    };
    Some((DEFAULT_POLICY_ID.to_string(), t[key].clone()))
}

/// Checks a new credential of `kind` valid from `start` to `end` on an object created at
/// `created` with the policy `assigned` (if any).
pub fn check_credential(
    d: &Directory,
    assigned: Option<&str>,
    is_application: bool,
    created: DateTime<Utc>,
    kind: CredentialKind,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), GraphError> {
    let Some((policy_id, restrictions)) = effective(d, assigned, is_application) else {
        return Ok(());
    };
    let list = match kind {
        CredentialKind::Password => &restrictions["passwordCredentials"],
        CredentialKind::Key => &restrictions["keyCredentials"],
    };
    for r in list.as_array().into_iter().flatten() {
        if r["state"].as_str() == Some("disabled") {
            continue;
        }
        let after = r["restrictForAppsCreatedAfterDateTime"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        if after.is_some_and(|a| created < a) {
            continue;
        }
        let t = r["restrictionType"].as_str().unwrap_or("");
        let addition = match kind {
            CredentialKind::Password => t == "passwordAddition",
            CredentialKind::Key => false,
        };
        if addition {
            let msg = format!("Credential type not allowed as per assigned policy '{policy_id}'.");
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "CredentialTypeNotAllowedAsPerAppPolicy",
                msg,
            ));
        }
        let lifetime = match kind {
            CredentialKind::Password => t == "passwordLifetime",
            CredentialKind::Key => t == "asymmetricKeyLifetime",
        };
        if lifetime {
            let max = r["maxLifetime"].as_str().and_then(parse_duration);
            if max.is_some_and(|m| end - start > m) {
                let msg = format!(
                    "Credential lifetime exceeds the max value allowed as per assigned policy '{policy_id}'."
                );
                let detail = match kind {
                    CredentialKind::Password => "InvalidPasswordEndDate",
                    CredentialKind::Key => "InvalidKeyEndDate",
                };
                return Err(GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "CredentialInvalidLifetimeAsPerAppPolicy",
                    msg.clone(),
                )
                .with_detail(detail, &msg, "EndDate"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory::new("t".into(), "s".into(), "d".into())
    }

    #[test]
    fn disabled_default_allows_everything() {
        let d = dir();
        let now = Utc::now();
        let far = now + chrono::Duration::days(3650);
        assert!(check_credential(&d, None, true, now, CredentialKind::Password, now, far).is_ok());
    }

    #[test]
    fn default_blocks_and_caps_assigned_replaces() {
        let mut d = dir();
        d.default_policy["isEnabled"] = json!(true);
        d.default_policy["applicationRestrictions"] = json!({
            "passwordCredentials": [{"restrictionType": "passwordAddition", "maxLifetime": null}],
            "keyCredentials": [{"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "P90D"}],
        });
        let now = Utc::now();
        let e =
            check_credential(&d, None, true, now, CredentialKind::Password, now, now).unwrap_err();
        assert_eq!(e.code, "CredentialTypeNotAllowedAsPerAppPolicy");
        // Service principals follow their own (empty) restrictions.
        assert!(check_credential(&d, None, false, now, CredentialKind::Password, now, now).is_ok());
        let e = check_credential(
            &d,
            None,
            true,
            now,
            CredentialKind::Key,
            now,
            now + chrono::Duration::days(91),
        )
        .unwrap_err();
        assert_eq!(e.code, "CredentialInvalidLifetimeAsPerAppPolicy");
        assert!(check_credential(
            &d,
            None,
            true,
            now,
            CredentialKind::Key,
            now,
            now + chrono::Duration::days(90)
        )
        .is_ok());
        // Apps created before the cut-off are exempt.
        d.default_policy["applicationRestrictions"]["passwordCredentials"][0]
            ["restrictForAppsCreatedAfterDateTime"] = json!("2030-01-01T00:00:00Z");
        assert!(check_credential(&d, None, true, now, CredentialKind::Password, now, now).is_ok());
        // An assigned, enabled policy replaces the default.
        d.policies.insert(
            "p1".into(),
            json!({"id": "p1", "isEnabled": true, "restrictions": {"passwordCredentials": [], "keyCredentials": []}}),
        );
        assert!(check_credential(
            &d,
            Some("p1"),
            true,
            now,
            CredentialKind::Key,
            now,
            now + chrono::Duration::days(900)
        )
        .is_ok());
    }

    #[test]
    fn validation() {
        assert!(validate_restrictions(
            &json!({"passwordCredentials": [{"restrictionType": "passwordLifetime", "maxLifetime": "P30D"}]}),
            "x"
        )
        .is_ok());
        for bad in [
            json!({"passwordCredentials": [{"restrictionType": "nope"}]}),
            json!({"passwordCredentials": [{"restrictionType": "passwordLifetime"}]}),
            json!({"keyCredentials": [{"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "90 days"}]}),
            json!({"passwordCredentials": [{"restrictionType": "passwordAddition"}, {"restrictionType": "passwordAddition"}]}),
            json!([]),
        ] {
            assert!(validate_restrictions(&bad, "x").is_err(), "{bad}");
        }
    }
}
