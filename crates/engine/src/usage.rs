//! Usage against the Azure limits that bite an engine: role assignments per subscription,
//! the tenant's directory object quota, and credentials per application for roles that add
//! passwords to an existing application.
//!
//! Counting is a handful of list calls, too many for every issuance: counts are measured by
//! the `self-test` read and by a periodic refresh on the active node, kept in memory, and
//! moved forward cheaply by each issuance (a dynamic credential adds one application, one
//! service principal and one assignment per Azure role; an existing-application credential
//! adds one password). Revocations are not subtracted: the next refresh corrects them, and
//! until then the counts err on the side of warning.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::store::{self, Role};
use azure_clients::{AzureClient, AzureError, Deadline};
use vault_plugin_sdk::logical::Storage;

/// Role assignments allowed per subscription (Microsoft docs, "Azure RBAC limits").
pub const ROLE_ASSIGNMENT_LIMIT: u64 = 4000;
/// Overrides [`ROLE_ASSIGNMENT_LIMIT`] (a subscription whose limit differs).
pub const ROLE_ASSIGNMENT_LIMIT_ENV: &str = "AZURE_ROLE_ASSIGNMENT_LIMIT";
/// Client secrets allowed on an application whose audience includes personal Microsoft
/// accounts (Microsoft docs, "Validation differences by supported account types").
pub const MSA_PASSWORD_LIMIT: u64 = 2;
/// Other applications: Microsoft's table says "no limit", subject to an overall size limit
/// of the application object; counted as 1000 passwords and key credentials together (the
/// emulator's `object_credential_limit` default).
pub const APP_CREDENTIAL_LIMIT: u64 = 1000;
/// Usage from this share of a limit on is warned about.
pub const WARN_PERCENT: u64 = 80;
/// How often the periodic function measures again (active node only).
pub const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);
/// Overrides [`REFRESH_EVERY`] (seconds; 0 measures on every periodic tick).
pub const REFRESH_EVERY_ENV: &str = "AZURE_USAGE_REFRESH_SECONDS";

const MSA_AUDIENCES: [&str; 2] = [
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];

/// A count against a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub used: u64,
    pub limit: u64,
}

impl Count {
    pub fn percent(&self) -> u64 {
        if self.limit == 0 {
            return 100;
        }
        self.used.saturating_mul(100) / self.limit
    }

    pub fn near_limit(&self) -> bool {
        self.percent() >= WARN_PERCENT
    }

    fn to_json(self) -> Value {
        json!({"used": self.used, "limit": self.limit, "percent": self.percent()})
    }
}

/// One measured limit: a count, or why it could not be measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measure {
    Counted(Count),
    Unknown(String),
}

impl Measure {
    fn count_mut(&mut self) -> Option<&mut Count> {
        match self {
            Measure::Counted(c) => Some(c),
            Measure::Unknown(_) => None,
        }
    }

    fn count(&self) -> Option<Count> {
        match self {
            Measure::Counted(c) => Some(*c),
            Measure::Unknown(_) => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Measure::Counted(c) => c.to_json(),
            Measure::Unknown(why) => json!({"status": "unknown", "reason": why}),
        }
    }
}

/// Credentials on one existing application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCredentials {
    /// The roles that add passwords to it.
    pub roles: Vec<String>,
    pub measure: Measure,
    /// Whether the limit is on passwords only (Microsoft-account audiences).
    pub passwords_only: bool,
}

/// Usage as last measured (and moved forward since).
#[derive(Clone, Debug)]
pub struct Usage {
    pub subscription_id: String,
    pub role_assignments: Measure,
    pub directory_objects: Measure,
    /// By application object id (lower case).
    pub app_credentials: BTreeMap<String, AppCredentials>,
    pub measured_at: Instant,
}

fn why(e: &AzureError) -> String {
    match e.status() {
        Some(403) => format!("the engine's identity may not read this: {e}"),
        _ => e.to_string(),
    }
}

/// Every stored role, by name (a role that cannot be read is skipped).
pub async fn stored_roles(storage: &dyn Storage) -> Vec<(String, Role)> {
    let names = storage.list(store::ROLES_PREFIX).await.unwrap_or_default();
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| !n.ends_with('/')) {
        if let Ok(Some(role)) = store::get_role(storage, &name).await {
            out.push((name, role));
        }
    }
    out
}

/// Every static role, as the existing-application role it amounts to (its application and
/// credential type), named `static-roles/<name>`.
pub async fn stored_static_roles(storage: &dyn Storage) -> Vec<(String, Role)> {
    let names = super::static_store::list(storage).await.unwrap_or_default();
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| !n.ends_with('/')) {
        if let Ok(Some(s)) = super::static_store::get(storage, &name).await {
            let credential_type = if s.is_certificate() {
                super::certificate::CredentialType::Certificate.stored()
            } else {
                0
            };
            out.push((
                format!("{}{name}", super::static_store::STATIC_ROLES_PREFIX),
                Role {
                    application_object_id: s.application_object_id.clone(),
                    application_id: s.application_id.clone(),
                    credential_type,
                    ..Role::default()
                },
            ));
        }
    }
    out
}

/// Measures every limit now. `role_assignment_limit` is the subscription's limit.
pub async fn measure(
    client: &AzureClient,
    roles: &[(String, Role)],
    role_assignment_limit: u64,
    deadline: Deadline,
) -> Usage {
    let role_assignments = match client
        .arm()
        .count_subscription_role_assignments(deadline)
        .await
    {
        Ok(n) => Measure::Counted(Count {
            used: u64::try_from(n).unwrap_or(u64::MAX),
            limit: role_assignment_limit,
        }),
        Err(e) => Measure::Unknown(why(&e)),
    };
    let tenant = client.settings().tenant_id.clone();
    let directory_objects = match client.graph().directory_size_quota(&tenant, deadline).await {
        Ok(Some(q)) if q.total > 0 => Measure::Counted(Count {
            used: q.used,
            limit: q.total,
        }),
        Ok(_) => Measure::Unknown("the tenant does not report directorySizeQuota".into()),
        Err(e) => Measure::Unknown(why(&e)),
    };
    let mut app_credentials: BTreeMap<String, AppCredentials> = BTreeMap::new();
    for (name, role) in roles {
        let id = role.application_object_id.to_lowercase();
        if id.is_empty() {
            continue;
        }
        if let Some(entry) = app_credentials.get_mut(&id) {
            entry.roles.push(name.clone());
            continue;
        }
        let (measure, passwords_only) = match client.graph().get_application(&id, deadline).await {
            Ok(app) => {
                let msa = app
                    .sign_in_audience
                    .as_deref()
                    .is_some_and(|a| MSA_AUDIENCES.contains(&a));
                let passwords = u64::try_from(app.password_credentials.len()).unwrap_or(u64::MAX);
                let keys = u64::try_from(app.key_credentials.len()).unwrap_or(u64::MAX);
                let count = if msa {
                    Count {
                        used: passwords,
                        limit: MSA_PASSWORD_LIMIT,
                    }
                } else {
                    Count {
                        used: passwords.saturating_add(keys),
                        limit: APP_CREDENTIAL_LIMIT,
                    }
                };
                (Measure::Counted(count), msa)
            }
            Err(e) => (Measure::Unknown(why(&e)), false),
        };
        app_credentials.insert(
            id,
            AppCredentials {
                roles: vec![name.clone()],
                measure,
                passwords_only,
            },
        );
    }
    Usage {
        subscription_id: client.arm().subscription_id().to_string(),
        role_assignments,
        directory_objects,
        app_credentials,
        measured_at: Instant::now(),
    }
}

impl Usage {
    /// Moves the counts forward for one credential just issued for `role`.
    pub fn note_issued(&mut self, role: &Role) {
        if role.application_object_id.is_empty() {
            if let Some(c) = self.directory_objects.count_mut() {
                c.used = c.used.saturating_add(2);
            }
            let n = role.azure_roles.as_ref().map_or(0, Vec::len);
            if let Some(c) = self.role_assignments.count_mut() {
                c.used = c.used.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            }
        } else if let Some(entry) = self
            .app_credentials
            .get_mut(&role.application_object_id.to_lowercase())
        {
            if let Some(c) = entry.measure.count_mut() {
                c.used = c.used.saturating_add(1);
            }
        }
    }

    /// Warnings for the limits `role`'s credentials draw on that are at or past 80%.
    pub fn warnings_for(&self, role: &Role) -> Vec<String> {
        let mut out = Vec::new();
        if role.application_object_id.is_empty() {
            if let Some(c) = self.directory_objects.count() {
                if c.near_limit() {
                    out.push(directory_warning(c));
                }
            }
            if role.azure_roles.as_ref().is_some_and(|r| !r.is_empty()) {
                if let Some(c) = self.role_assignments.count() {
                    if c.near_limit() {
                        out.push(role_assignment_warning(&self.subscription_id, c));
                    }
                }
            }
        } else if let Some(entry) = self
            .app_credentials
            .get(&role.application_object_id.to_lowercase())
        {
            if let Some(c) = entry.measure.count() {
                if c.near_limit() {
                    out.push(app_warning(&role.application_object_id, entry, c));
                }
            }
        }
        out
    }

    /// Every warning (any limit at or past 80%).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = self.role_assignments.count().filter(Count::near_limit) {
            out.push(role_assignment_warning(&self.subscription_id, c));
        }
        if let Some(c) = self.directory_objects.count().filter(Count::near_limit) {
            out.push(directory_warning(c));
        }
        for (id, entry) in &self.app_credentials {
            if let Some(c) = entry.measure.count().filter(Count::near_limit) {
                out.push(app_warning(id, entry, c));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let mut apps = Map::new();
        for (id, entry) in &self.app_credentials {
            let mut v = entry.measure.to_json();
            v["roles"] = json!(entry.roles);
            v["counts"] = json!(if entry.passwords_only {
                "passwords (Microsoft-account audience)"
            } else {
                "passwords and key credentials"
            });
            apps.insert(id.clone(), v);
        }
        let mut ra = self.role_assignments.to_json();
        ra["scope"] = json!(format!("/subscriptions/{}", self.subscription_id));
        json!({
            "role_assignments": ra,
            "directory_objects": self.directory_objects.to_json(),
            "application_credentials": apps,
            "measured_seconds_ago": self.measured_at.elapsed().as_secs(),
            "warn_at_percent": WARN_PERCENT,
        })
    }
}

fn role_assignment_warning(sub: &str, c: Count) -> String {
    format!(
        "subscription '{sub}' holds {} of its {} role assignments ({}%); Azure refuses new ones \
         with RoleAssignmentLimitExceeded at the limit: remove unused assignments",
        c.used,
        c.limit,
        c.percent()
    )
}

fn directory_warning(c: Count) -> String {
    format!(
        "the tenant's directory holds {} of its {} objects ({}%); Entra ID refuses new \
         applications and service principals with Directory_QuotaExceeded at the quota \
         (deleted objects count until permanently deleted)",
        c.used,
        c.limit,
        c.percent()
    )
}

fn app_warning(id: &str, entry: &AppCredentials, c: Count) -> String {
    let what = if entry.passwords_only {
        "passwords"
    } else {
        "credentials"
    };
    format!(
        "application '{id}' holds {} of the {} {what} it may have ({}%); revoke unused leases \
         of role(s) {}",
        c.used,
        c.limit,
        c.percent(),
        entry.roles.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AzureRole;

    fn usage() -> Usage {
        let mut apps = BTreeMap::new();
        apps.insert(
            "app-1".to_string(),
            AppCredentials {
                roles: vec!["existing".into()],
                measure: Measure::Counted(Count { used: 1, limit: 2 }),
                passwords_only: true,
            },
        );
        Usage {
            subscription_id: "sub".into(),
            role_assignments: Measure::Counted(Count { used: 7, limit: 10 }),
            directory_objects: Measure::Unknown("no".into()),
            app_credentials: apps,
            measured_at: Instant::now(),
        }
    }

    #[test]
    fn warns_from_eighty_percent_and_counts_forward() {
        let mut u = usage();
        let dynamic = Role {
            azure_roles: Some(vec![AzureRole {
                role_name: "Reader".into(),
                ..AzureRole::default()
            }]),
            ..Role::default()
        };
        assert!(u.warnings_for(&dynamic).is_empty());
        u.note_issued(&dynamic);
        let w = u.warnings_for(&dynamic);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("8 of its 10 role assignments (80%)"), "{w:?}");
        // A role without Azure roles does not draw on assignments.
        assert!(u.warnings_for(&Role::default()).is_empty());

        let existing = Role {
            application_object_id: "APP-1".into(),
            ..Role::default()
        };
        assert!(u.warnings_for(&existing).is_empty());
        u.note_issued(&existing);
        let w = u.warnings_for(&existing);
        assert!(w[0].contains("2 of the 2 passwords"), "{w:?}");
        assert_eq!(u.warnings().len(), 2);
        let j = u.to_json();
        assert_eq!(j["directory_objects"]["status"], "unknown");
        assert_eq!(j["role_assignments"]["percent"], 80);
    }

    #[test]
    fn percent_of_a_zero_limit_is_full() {
        assert_eq!(Count { used: 0, limit: 0 }.percent(), 100);
        assert_eq!(
            Count {
                used: 3199,
                limit: 4000
            }
            .percent(),
            79
        );
        assert!(!Count {
            used: 3199,
            limit: 4000
        }
        .near_limit());
        assert!(Count {
            used: 3200,
            limit: 4000
        }
        .near_limit());
    }
}
