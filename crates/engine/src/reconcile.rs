//! The reconciler: finds Azure objects this mount made that nothing accounts for any more
//! (after a force-revoked lease, a storage restore, a crash between issuance and the host
//! recording the lease) and deletes them; optionally adopts, for a one-time clean-up after a
//! migration, applications the Go engine left behind under its `vault-` naming.
//!
//! The rule (docs/operator-guide.md, "Reconciler"). An application tagged with this mount's
//! tag is deleted when none of these hold:
//!
//! * a write-ahead-log entry, a role, a static role or the warm pool names it;
//! * Azure says it was created within [`GRACE`] (an issuance in flight);
//! * its inventory entry says a live lease may stand on it: no failed revoke recorded and
//!   its recorded expiry (the end of its credential in Azure, which no lease outlives) plus
//!   [`EXPIRY_MARGIN`] not passed.
//!
//! So: tagged and (not in the inventory, WAL, roles or pool) or (revoke requested) or
//! (expired by the margin). Leases of older versions and of the Go engine have untagged
//! applications and are never touched, except by adoption. A role assignment described
//! with this mount's tag is deleted with its application, or when its principal no longer
//! exists and nothing accounts for it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::backend::AzureBackend;
use super::inventory::{self, AppEntry};
use super::provision::{self, persist, wal_str, WAL_APP_CREATE, WAL_ROLE_ASSIGN};
use super::static_store;
use super::store::{self, Config, Role};
use azure_clients::{Application, AzureClient, AzureError, Deadline, RoleAssignment};
use vault_plugin_sdk::framework::wal;
use vault_plugin_sdk::logical::{storage_writable, LogicalError, Storage};

/// Objects younger than this are never deleted: an issuance may be making them, and the
/// storage snapshot the pass reads predates the Azure listing.
pub const GRACE: Duration = Duration::from_secs(15 * 60);
/// How long past its recorded expiry an application is kept (clock skew between the host
/// and Azure, a lease expiring at its very end).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60 * 60);
/// How often the periodic pass runs unless `reconcile_interval` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The time a pass may take: the periodic one, and one run from the path (within the
/// host's request timeout).
const PERIODIC_DEADLINE: Duration = Duration::from_secs(50);
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(70);

/// The periodic pass's interval in `config`.
pub fn interval(config: &Config) -> Duration {
    config.reconcile_interval.unwrap_or(DEFAULT_INTERVAL)
}

/// Per-mount state of the periodic pass.
#[derive(Default)]
pub struct State {
    /// When the last pass started (in this process); held while a pass runs.
    last: Mutex<Option<Instant>>,
}

/// What storage says about the objects of this mount.
#[derive(Debug, Default)]
pub struct Accounted {
    /// Application object ids (lower case) that a WAL entry, role, static role or the
    /// pool names: never deleted.
    pub app_object_ids: HashSet<String>,
    /// Display names of applications a WAL entry is about to create or has created.
    pub app_display_names: HashSet<String>,
    /// Role assignment names (GUIDs, lower case) a WAL entry or a role names.
    pub role_assignment_names: HashSet<String>,
    /// The inventory, by lower-case application object id.
    pub inventory: BTreeMap<String, AppEntry>,
    /// Roles, for adoption.
    pub roles: BTreeMap<String, Role>,
}

impl Accounted {
    fn names_app(&self, app: &Application) -> bool {
        self.app_object_ids.contains(&app.id.to_ascii_lowercase())
            || self.app_display_names.contains(&app.display_name)
    }
}

/// The last path segment of a role assignment id (its name), lower case.
fn ra_name(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase()
}

/// Everything storage says accounts for objects: the inventory, the write-ahead log, the
/// roles (persisted and existing applications, their role assignments), the static roles
/// and the warm pool. Any read failure fails the whole: the pass never acts on a partial
/// view.
pub async fn accounted_object_ids(storage: &dyn Storage) -> Result<Accounted, LogicalError> {
    let mut out = Accounted {
        inventory: inventory::list(storage).await?,
        ..Accounted::default()
    };
    for id in wal::list(storage).await? {
        let Some(entry) = wal::get(storage, &id).await? else {
            continue;
        };
        let data = &entry.data;
        let app = wal_str(data, "AppObjID");
        if !app.is_empty() {
            out.app_object_ids.insert(app.to_ascii_lowercase());
        }
        if entry.kind == WAL_APP_CREATE {
            let name = wal_str(data, "DisplayName");
            if !name.is_empty() {
                out.app_display_names.insert(name);
            }
        }
        if entry.kind == WAL_ROLE_ASSIGN {
            for name in data
                .get("AssignmentIDs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                out.role_assignment_names.insert(ra_name(name));
            }
        }
    }
    for key in storage.list(store::ROLES_PREFIX).await? {
        if key.ends_with('/') {
            continue;
        }
        let Some(role) = store::get_role(storage, &key).await? else {
            continue;
        };
        for id in [
            &role.application_object_id,
            &role.managed_application_object_id,
        ] {
            if !id.is_empty() {
                out.app_object_ids.insert(id.to_ascii_lowercase());
            }
        }
        for id in role.role_assignment_ids.iter().flatten() {
            out.role_assignment_names.insert(ra_name(id));
        }
        out.roles.insert(key, role);
    }
    for key in static_store::list(storage).await? {
        if key.ends_with('/') {
            continue;
        }
        if let Some(role) = static_store::get(storage, &key).await? {
            if !role.application_object_id.is_empty() {
                out.app_object_ids
                    .insert(role.application_object_id.to_ascii_lowercase());
            }
        }
    }
    // The warm pool: ready entries by their ids, entries still being created by name.
    for id in super::pool::pooled_object_ids(storage).await? {
        if id.contains("/roleAssignments/") {
            out.role_assignment_names.insert(ra_name(&id));
        } else {
            out.app_object_ids.insert(id.to_ascii_lowercase());
        }
    }
    out.app_display_names
        .extend(super::pool::pending_display_names(storage).await?);
    Ok(out)
}

/// Why an application is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppReason {
    /// Tagged with this mount, and no inventory entry, WAL entry, role or pool names it.
    Unrecorded,
    /// A revoke of its lease (or its issuance) failed.
    RevokeRequested,
    /// Its credential's end in Azure (plus the margin) has passed.
    Expired,
    /// Named by the Go engine's convention for a role of this mount, older than any lease.
    GoEngineLeftover,
}

/// Why a role assignment is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RaReason {
    /// Its application is deleted in this pass.
    ApplicationDeleted,
    /// Its principal no longer exists and nothing accounts for it.
    PrincipalGone,
}

/// An application to delete.
#[derive(Debug, Clone, Serialize)]
pub struct AppAction {
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    pub created: Option<DateTime<Utc>>,
    pub reason: AppReason,
}

/// A role assignment to delete.
#[derive(Debug, Clone, Serialize)]
pub struct RaAction {
    pub id: String,
    pub principal_id: String,
    pub reason: RaReason,
}

/// What a pass finds.
#[derive(Debug, Default)]
pub struct Plan {
    pub applications: Vec<AppAction>,
    pub role_assignments: Vec<RaAction>,
    /// Role assignments whose application is not listed: deleted if their principal is gone.
    pub ra_if_principal_gone: Vec<RoleAssignment>,
    /// Why the applications kept were kept (counts).
    pub kept: BTreeMap<&'static str, usize>,
    /// Inventory entries whose application is not listed: pruned if it is gone.
    pub unlisted_entries: Vec<String>,
    /// Role assignments the inventory recorded for the applications deleted, not listed
    /// (deleted too, quietly: most are gone already).
    pub recorded_role_assignments: Vec<String>,
}

/// The inputs of a plan other than storage.
pub struct Observed<'a> {
    pub now: DateTime<Utc>,
    /// Applications carrying this mount's tag.
    pub tagged: &'a [Application],
    /// Role assignments whose description names this mount.
    pub described: &'a [RoleAssignment],
    /// `vault-` applications to consider for adoption (empty unless adopting).
    pub go_candidates: &'a [Application],
    /// The mount's max lease TTL (adoption only).
    pub max_lease_ttl: Duration,
    /// Object and client ids of the engine's own identity, lower case (never adopted).
    pub own_ids: &'a [String],
}

fn older_than(created: Option<DateTime<Utc>>, now: DateTime<Utc>, age: Duration) -> bool {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    created.is_some_and(|c| now - c >= age)
}

fn tag_set(tags: &[String]) -> BTreeSet<String> {
    tags.iter().map(|t| t.to_ascii_lowercase()).collect()
}

/// The Go engine's names: `vault-<uuid4>` for a dynamic role's application,
/// `vault-<role>-<unix seconds>` for a persisted role's. Returns the roles of this mount
/// the name fits (with matching tags: the Go engine copied a role's tags to its apps).
fn go_convention_fits(app: &Application, roles: &BTreeMap<String, Role>) -> bool {
    let Some(rest) = app
        .display_name
        .strip_prefix(azure_clients::DISPLAY_NAME_PREFIX)
    else {
        return false;
    };
    let tags = tag_set(&app.tags);
    let same_tags = |r: &Role| tag_set(r.tags.as_deref().unwrap_or_default()) == tags;
    let is_uuid4 =
        uuid::Uuid::parse_str(rest).is_ok_and(|u| u.get_version_num() == 4) && rest.len() == 36;
    if is_uuid4 {
        return roles
            .values()
            .any(|r| r.application_object_id.is_empty() && !r.persist_app && same_tags(r));
    }
    let Some((role, stamp)) = rest.rsplit_once('-') else {
        return false;
    };
    if stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    roles.get(role).is_some_and(|r| {
        r.persist_app
            && !r
                .managed_application_object_id
                .eq_ignore_ascii_case(&app.id)
            && same_tags(r)
    })
}

/// Decides what to delete (pure: storage and Azure were read before).
pub fn plan(acc: &Accounted, seen: &Observed<'_>) -> Plan {
    let mut p = Plan::default();
    let mut keep = |why: &'static str| *p.kept.entry(why).or_default() += 1;
    let mut doomed: HashSet<String> = HashSet::new();
    let mut actions = Vec::new();
    let listed: HashSet<String> = seen
        .tagged
        .iter()
        .map(|a| a.id.to_ascii_lowercase())
        .collect();
    for app in seen.tagged {
        let id = app.id.to_ascii_lowercase();
        if acc.names_app(app) {
            keep("named_by_wal_role_or_pool");
            continue;
        }
        if !older_than(app.created_date_time, seen.now, GRACE) {
            keep("created_within_grace");
            continue;
        }
        let reason = match acc.inventory.get(&id) {
            None => AppReason::Unrecorded,
            Some(e) if e.revoke_requested.is_some() => AppReason::RevokeRequested,
            Some(e)
                if e.expires
                    .is_some_and(|x| older_than(Some(x), seen.now, EXPIRY_MARGIN)) =>
            {
                AppReason::Expired
            }
            Some(_) => {
                keep("live_credential");
                continue;
            }
        };
        doomed.insert(id);
        actions.push(AppAction {
            object_id: app.id.clone(),
            app_id: app.app_id.clone(),
            display_name: app.display_name.clone(),
            created: app.created_date_time,
            reason,
        });
    }
    let adopt_age = seen.max_lease_ttl.saturating_add(EXPIRY_MARGIN).max(GRACE);
    for app in seen.go_candidates {
        let id = app.id.to_ascii_lowercase();
        let ours = app
            .tags
            .iter()
            .any(|t| t.starts_with(inventory::MOUNT_TAG_PREFIX));
        if ours
            || doomed.contains(&id)
            || acc.names_app(app)
            || acc.inventory.contains_key(&id)
            || seen.own_ids.contains(&id)
            || seen.own_ids.contains(&app.app_id.to_ascii_lowercase())
            || !older_than(app.created_date_time, seen.now, adopt_age)
            || !go_convention_fits(app, &acc.roles)
        {
            continue;
        }
        doomed.insert(id);
        actions.push(AppAction {
            object_id: app.id.clone(),
            app_id: app.app_id.clone(),
            display_name: app.display_name.clone(),
            created: app.created_date_time,
            reason: AppReason::GoEngineLeftover,
        });
    }
    p.applications = actions;

    for ra in seen.described {
        let Some((_, app)) = inventory::parse_role_assignment_description(&ra.description) else {
            continue;
        };
        let app = app.to_ascii_lowercase();
        if doomed.contains(&app) {
            p.role_assignments.push(RaAction {
                id: ra.id.clone(),
                principal_id: ra.principal_id.clone(),
                reason: RaReason::ApplicationDeleted,
            });
            continue;
        }
        let accounted = acc.role_assignment_names.contains(&ra_name(&ra.id))
            || acc.app_object_ids.contains(&app)
            || listed.contains(&app)
            || acc.inventory.get(&app).is_some_and(|e| {
                e.revoke_requested.is_none()
                    && !e
                        .expires
                        .is_some_and(|x| older_than(Some(x), seen.now, EXPIRY_MARGIN))
            });
        if accounted || !older_than(ra.created_on, seen.now, GRACE) {
            continue;
        }
        p.ra_if_principal_gone.push(ra.clone());
    }
    let planned: HashSet<String> = p
        .role_assignments
        .iter()
        .map(|r| r.id.to_ascii_lowercase())
        .collect();
    p.recorded_role_assignments = p
        .applications
        .iter()
        .filter_map(|a| acc.inventory.get(&a.object_id.to_ascii_lowercase()))
        .flat_map(|e| e.role_assignment_ids.iter())
        .filter(|id| !planned.contains(&id.to_ascii_lowercase()))
        .cloned()
        .collect();
    p.unlisted_entries = acc
        .inventory
        .iter()
        .filter(|(id, e)| {
            !listed.contains(*id)
                && !acc.app_object_ids.contains(*id)
                && older_than(e.created, seen.now, GRACE)
        })
        .map(|(id, _)| id.clone())
        .collect();
    p
}

/// The outcome of a pass, as the path reports it.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub mount_tag: Option<String>,
    pub adopt_go_engine: bool,
    pub applications: Vec<AppAction>,
    pub role_assignments: Vec<RaAction>,
    pub kept: BTreeMap<&'static str, usize>,
    /// Inventory entries of applications already gone (removed unless a dry run).
    pub stale_inventory_entries: usize,
    pub deleted_applications: usize,
    pub deleted_role_assignments: usize,
    pub errors: Vec<String>,
}

impl AzureBackend {
    /// One pass: reads storage, lists Azure, decides, and (unless `dry_run`) deletes.
    pub(crate) async fn reconcile(
        self: &Arc<Self>,
        storage: &dyn Storage,
        dry_run: bool,
        adopt_go_engine: bool,
        deadline: Deadline,
    ) -> Result<Report, LogicalError> {
        let client = self.client(storage).await?;
        let mount_id = inventory::mount_id(storage).await?;
        let tag = mount_id.as_deref().map(inventory::mount_tag);
        let acc = accounted_object_ids(storage).await?;
        let azure = |what: &str, e: AzureError| {
            LogicalError::internal(format!("reconcile: cannot {what}: {e}"))
        };
        let mut listing_errors = Vec::new();
        let (tagged, described) = match &tag {
            Some(tag) => {
                let apps = client
                    .graph()
                    .list_applications_tagged(tag, deadline)
                    .await
                    .map_err(|e| azure("list the mount's applications", e))?;
                let (ras, errors) = self
                    .described_role_assignments(&client, &acc, tag, deadline)
                    .await;
                listing_errors = errors;
                (apps, ras)
            }
            None => (Vec::new(), Vec::new()),
        };
        let (go_candidates, own_ids, max_lease_ttl) = if adopt_go_engine {
            let apps = client
                .graph()
                .list_applications_named_with_prefix(azure_clients::DISPLAY_NAME_PREFIX, deadline)
                .await
                .map_err(|e| azure("list applications named vault-", e))?;
            let own = self.own_identity(&client, deadline).await?;
            let max = self
                .system_view
                .max_lease_ttl()
                .await
                .map_err(|e| LogicalError::internal(e.to_string()))?;
            (apps, own, max)
        } else {
            (Vec::new(), Vec::new(), Duration::ZERO)
        };
        let mut p = plan(
            &acc,
            &Observed {
                now: Utc::now(),
                tagged: &tagged,
                described: &described,
                go_candidates: &go_candidates,
                max_lease_ttl,
                own_ids: &own_ids,
            },
        );
        let mut report = Report {
            dry_run,
            mount_tag: tag,
            adopt_go_engine,
            kept: std::mem::take(&mut p.kept),
            errors: listing_errors,
            ..Report::default()
        };
        // Role assignments of applications already gone: only when the principal is.
        for ra in std::mem::take(&mut p.ra_if_principal_gone) {
            match client
                .graph()
                .service_principal_exists(&ra.principal_id, deadline)
                .await
            {
                Ok(false) => p.role_assignments.push(RaAction {
                    id: ra.id,
                    principal_id: ra.principal_id,
                    reason: RaReason::PrincipalGone,
                }),
                Ok(true) => {}
                Err(e) => report
                    .errors
                    .push(format!("cannot check principal {}: {e}", ra.principal_id)),
            }
        }
        // Adopted Go-engine applications: their role assignments carry no description;
        // found through their service principal.
        for app in p
            .applications
            .iter()
            .filter(|a| a.reason == AppReason::GoEngineLeftover)
        {
            match self
                .assignments_of_app(&client, &app.app_id, deadline)
                .await
            {
                Ok(ras) => p
                    .role_assignments
                    .extend(ras.into_iter().map(|ra| RaAction {
                        id: ra.id,
                        principal_id: ra.principal_id,
                        reason: RaReason::ApplicationDeleted,
                    })),
                Err(e) => report.errors.push(format!(
                    "cannot list role assignments of {}: {e}",
                    app.display_name
                )),
            }
        }
        // Inventory entries whose application is gone.
        let mut stale = Vec::new();
        for id in &p.unlisted_entries {
            match client.graph().get_application(id, deadline).await {
                Err(e) if e.is_not_found() => stale.push(id.clone()),
                Ok(_) => {}
                Err(e) => report
                    .errors
                    .push(format!("cannot read application {id}: {e}")),
            }
        }
        report.stale_inventory_entries = stale.len();
        if !dry_run {
            for id in &stale {
                inventory::forget(storage, id).await;
            }
            self.execute(storage, &client, &p, &mut report, deadline)
                .await;
        }
        report.applications = p.applications;
        report.role_assignments = p.role_assignments;
        Ok(report)
    }

    /// Role assignments whose description names this mount: at the configured subscription
    /// (with everything below it) and at every scope outside it a role names. When the
    /// subscription cannot be listed (an identity with rights on resource groups only), each
    /// scope of the roles is listed instead. A scope that cannot be listed is reported and
    /// skipped: the assignments of applications deleted in this pass are also removed
    /// through their inventory entries.
    async fn described_role_assignments(
        &self,
        client: &AzureClient,
        acc: &Accounted,
        tag: &str,
        deadline: Deadline,
    ) -> (Vec<RoleAssignment>, Vec<String>) {
        let sub = format!("/subscriptions/{}", client.arm().subscription_id()).to_ascii_lowercase();
        let within_sub = |s: &str| s.starts_with(&format!("{sub}/"));
        let role_scopes: BTreeSet<String> = acc
            .roles
            .values()
            .flat_map(|role| role.azure_roles.iter().flatten())
            .map(|r| r.scope.trim_end_matches('/').to_ascii_lowercase())
            .filter(|s| !s.is_empty() && *s != sub)
            .collect();
        let mut errors = Vec::new();
        let mut found: Vec<RoleAssignment> = Vec::new();
        let sub_listed = match client.arm().list_role_assignments(&sub, deadline).await {
            Ok(ras) => {
                found.extend(ras);
                true
            }
            Err(e) => {
                errors.push(format!("cannot list role assignments at {sub}: {e}"));
                false
            }
        };
        for scope in role_scopes
            .into_iter()
            .filter(|s| !(sub_listed && within_sub(s)))
        {
            match client.arm().list_role_assignments(&scope, deadline).await {
                Ok(ras) => found.extend(ras),
                Err(e) => errors.push(format!("cannot list role assignments at {scope}: {e}")),
            }
        }
        let mut seen = HashSet::new();
        let out = found
            .into_iter()
            .filter(|ra| {
                inventory::parse_role_assignment_description(&ra.description)
                    .is_some_and(|(t, _)| t.eq_ignore_ascii_case(tag))
            })
            .filter(|ra| seen.insert(ra.id.to_ascii_lowercase()))
            .collect();
        (out, errors)
    }

    /// The engine's own ids (application object and client ids, lower case).
    async fn own_identity(
        &self,
        client: &Arc<AzureClient>,
        deadline: Deadline,
    ) -> Result<Vec<String>, LogicalError> {
        let own = self.own_identity_of(client, deadline).await?;
        Ok(own.app_ids.into_iter().chain(own.app_object_ids).collect())
    }

    /// Role assignments of the service principal of application `app_id` in the
    /// configured subscription.
    async fn assignments_of_app(
        &self,
        client: &AzureClient,
        app_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<RoleAssignment>, AzureError> {
        let Some(sp) = client
            .graph()
            .find_service_principal_by_app_id(app_id, deadline)
            .await?
        else {
            return Ok(Vec::new());
        };
        client
            .arm()
            .list_role_assignments_for_principal("", &sp.id, deadline)
            .await
    }

    /// Deletes what the plan says: role assignments first (an application's go before it),
    /// then applications, each through throttling; an object already gone counts as done.
    async fn execute(
        &self,
        storage: &dyn Storage,
        client: &AzureClient,
        p: &Plan,
        report: &mut Report,
        deadline: Deadline,
    ) {
        let ids: Vec<String> = p.role_assignments.iter().map(|r| r.id.clone()).collect();
        let errors = provision::undo_role_assignments(client, &ids, deadline).await;
        report.deleted_role_assignments = ids.len().saturating_sub(errors.len());
        report.errors.extend(
            errors
                .into_iter()
                .map(|e| format!("cannot delete a role assignment: {e}")),
        );
        // The assignments the inventory recorded for the applications deleted here, in case
        // a scope could not be listed (already gone: nothing to do).
        let errors =
            provision::undo_role_assignments(client, &p.recorded_role_assignments, deadline).await;
        report.errors.extend(
            errors
                .into_iter()
                .map(|e| format!("cannot delete a recorded role assignment: {e}")),
        );
        for app in &p.applications {
            let deleted = persist(deadline, || {
                provision::delete_app(client, &app.object_id, false, deadline)
            })
            .await;
            match deleted {
                Ok(_) => {
                    tracing::info!(app_object_id = %app.object_id, display_name = %app.display_name, reason = ?app.reason, "reconciler deleted an application");
                    report.deleted_applications += 1;
                    inventory::forget(storage, &app.object_id).await;
                }
                Err(e) => report.errors.push(format!(
                    "cannot delete application {} ({}): {e}",
                    app.display_name, app.object_id
                )),
            }
        }
    }

    /// The periodic pass: on the active node, once per `reconcile_interval`.
    pub(crate) async fn reconcile_tick(self: &Arc<Self>, storage: &dyn Storage) {
        if !matches!(storage_writable(self.system_view.as_ref()).await, Ok(true)) {
            return;
        }
        let config = match store::get_config(storage).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler: cannot read the configuration");
                return;
            }
        };
        let every = interval(&config);
        if every.is_zero() {
            return;
        }
        let Ok(mut last) = self.reconcile_state.last.try_lock() else {
            return; // a pass is running
        };
        if last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        *last = Some(Instant::now());
        match self
            .reconcile(storage, false, false, Deadline::after(PERIODIC_DEADLINE))
            .await
        {
            Ok(r) => {
                if r.deleted_applications + r.deleted_role_assignments > 0 || !r.errors.is_empty() {
                    tracing::info!(
                        deleted_applications = r.deleted_applications,
                        deleted_role_assignments = r.deleted_role_assignments,
                        errors = ?r.errors,
                        "reconciler pass done"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed; the next one retries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "vault-plugin-secrets-azure:mount:m1";

    fn app(id: &str, name: &str, age_min: i64, tags: &[&str]) -> Application {
        serde_json::from_value(serde_json::json!({
            "id": id, "appId": format!("client-{id}"), "displayName": name,
            "tags": tags,
            "createdDateTime": (Utc::now() - chrono::Duration::minutes(age_min)).to_rfc3339(),
        }))
        .unwrap()
    }

    fn entry(id: &str, expires_in_min: i64, revoke_requested: bool) -> AppEntry {
        AppEntry {
            app_object_id: id.into(),
            created: Some(Utc::now() - chrono::Duration::hours(2)),
            expires: Some(Utc::now() + chrono::Duration::minutes(expires_in_min)),
            revoke_requested: revoke_requested.then(Utc::now),
            ..AppEntry::default()
        }
    }

    fn ra(name: &str, app: &str, age_min: i64) -> RoleAssignment {
        RoleAssignment {
            id: format!(
                "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/{name}"
            ),
            name: name.into(),
            scope: "/subscriptions/s".into(),
            role_definition_id: String::new(),
            principal_id: format!("sp-{app}"),
            description: inventory::role_assignment_description(TAG, app),
            created_on: Some(Utc::now() - chrono::Duration::minutes(age_min)),
        }
    }

    fn observed<'a>(
        tagged: &'a [Application],
        described: &'a [RoleAssignment],
        go: &'a [Application],
    ) -> Observed<'a> {
        Observed {
            now: Utc::now(),
            tagged,
            described,
            go_candidates: go,
            max_lease_ttl: Duration::from_secs(24 * 3600),
            own_ids: &[],
        }
    }

    fn reasons(p: &Plan) -> BTreeMap<String, AppReason> {
        p.applications
            .iter()
            .map(|a| (a.object_id.clone(), a.reason))
            .collect()
    }

    #[test]
    fn tagged_applications_are_judged_by_the_rule() {
        let mut acc = Accounted::default();
        for (id, e) in [
            ("live", entry("live", 60, false)),
            ("forced", entry("forced", 60, true)),
            ("expired", entry("expired", -61, false)),
            ("just-expired", entry("just-expired", -30, false)),
        ] {
            acc.inventory.insert(id.into(), e);
        }
        acc.app_object_ids.insert("in-wal".into());
        acc.app_display_names.insert("vault-being-made".into());
        let recorded = "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/rec";
        if let Some(e) = acc.inventory.get_mut("forced") {
            e.role_assignment_ids = vec![recorded.into()];
        }
        if let Some(e) = acc.inventory.get_mut("live") {
            e.role_assignment_ids = vec!["/of/a/live/one".into()];
        }
        let tagged = [
            app("live", "vault-a", 120, &[TAG]),
            app("forced", "vault-b", 120, &[TAG]),
            app("expired", "vault-c", 120, &[TAG]),
            app("just-expired", "vault-d", 120, &[TAG]),
            app("restored-away", "vault-e", 120, &[TAG]),
            app("fresh", "vault-f", 5, &[TAG]),
            app("in-wal", "vault-g", 120, &[TAG]),
            app("IN-WAL-BY-NAME", "vault-being-made", 120, &[TAG]),
        ];
        let p = plan(&acc, &observed(&tagged, &[], &[]));
        let want: BTreeMap<String, AppReason> = [
            ("forced", AppReason::RevokeRequested),
            ("expired", AppReason::Expired),
            ("restored-away", AppReason::Unrecorded),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(reasons(&p), want);
        assert_eq!(p.kept["live_credential"], 2);
        assert_eq!(p.kept["created_within_grace"], 1);
        assert_eq!(p.kept["named_by_wal_role_or_pool"], 2);
        // The assignments recorded for a deleted application go with it; a live one's stay.
        assert_eq!(p.recorded_role_assignments, [recorded]);
    }

    #[test]
    fn role_assignments_follow_their_application() {
        let mut acc = Accounted::default();
        acc.inventory
            .insert("live".into(), entry("live", 60, false));
        acc.role_assignment_names.insert("in-wal".into());
        let tagged = [
            app("live", "vault-a", 120, &[TAG]),
            app("orphan", "vault-b", 120, &[TAG]),
        ];
        let described = [
            ra("r-live", "live", 120),
            ra("r-orphan", "orphan", 120),
            ra("r-gone", "gone-app", 120),
            ra("r-gone-fresh", "gone-app", 5),
            ra("in-wal", "gone-app", 120),
        ];
        let p = plan(&acc, &observed(&tagged, &described, &[]));
        let ids: Vec<(&str, RaReason)> = p
            .role_assignments
            .iter()
            .map(|r| (r.id.rsplit('/').next().unwrap(), r.reason))
            .collect();
        assert_eq!(ids, [("r-orphan", RaReason::ApplicationDeleted)]);
        let maybe: Vec<&str> = p
            .ra_if_principal_gone
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(maybe, ["r-gone"]);
    }

    #[test]
    fn only_go_named_old_untagged_unaccounted_apps_are_adopted() {
        let mut acc = Accounted::default();
        acc.roles.insert(
            "dyn".into(),
            Role {
                tags: Some(vec!["team:a".into()]),
                ..Role::default()
            },
        );
        acc.roles.insert(
            "kept".into(),
            Role {
                persist_app: true,
                managed_application_object_id: "current".into(),
                ..Role::default()
            },
        );
        acc.app_object_ids.insert("current".into());
        acc.inventory
            .insert("indexed".into(), entry("indexed", 60, false));
        let u = || uuid::Uuid::new_v4().to_string();
        let old = 3 * 24 * 60;
        let (n1, n2, n3, n4, n5, n6) = (u(), u(), u(), u(), u(), u());
        let go = [
            app("dyn-old", &format!("vault-{n1}"), old, &["team:a"]),
            app("dyn-young", &format!("vault-{n2}"), 60, &["team:a"]),
            app("dyn-other-tags", &format!("vault-{n3}"), old, &["team:b"]),
            app("tagged", &format!("vault-{n4}"), old, &["team:a", TAG]),
            app("indexed", &format!("vault-{n5}"), old, &["team:a"]),
            app("own", &format!("vault-{n6}"), old, &["team:a"]),
            app("persisted-old", "vault-kept-1700000000", old, &[]),
            app("current", "vault-kept-1600000000", old, &[]),
            app("unknown-role", "vault-other-1700000000", old, &[]),
            app("not-a-stamp", "vault-kept-17x", old, &[]),
            app("hand-made", "vault-prod-api", old, &["team:a"]),
        ];
        let own = ["own".to_string()];
        let mut seen = observed(&[], &[], &go);
        seen.own_ids = &own;
        let p = plan(&acc, &seen);
        let mut adopted: Vec<&str> = p
            .applications
            .iter()
            .map(|a| a.object_id.as_str())
            .collect();
        adopted.sort();
        assert_eq!(adopted, ["dyn-old", "persisted-old"]);
        assert!(p
            .applications
            .iter()
            .all(|a| a.reason == AppReason::GoEngineLeftover));
    }

    #[test]
    fn unlisted_inventory_entries_are_checked_for_pruning() {
        let mut acc = Accounted::default();
        acc.inventory
            .insert("listed".into(), entry("listed", 60, false));
        acc.inventory
            .insert("unlisted".into(), entry("unlisted", 60, false));
        let mut young = entry("young", 60, false);
        young.created = Some(Utc::now());
        acc.inventory.insert("young".into(), young);
        let tagged = [app("listed", "vault-a", 120, &[TAG])];
        let p = plan(&acc, &observed(&tagged, &[], &[]));
        assert_eq!(p.unlisted_entries, ["unlisted"]);
    }
}
