//! The objects every emulator starts with, plus the optional `--seed FILE` extras.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::errors::EmulatorError;
use super::roles;
use super::state::{new_id, Directory, FederatedCredential, Password, ADMIN_GRAPH_ROLES};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFile {
    pub tenant_id: Option<String>,
    pub subscription_id: Option<String>,
    pub tenant_domain: Option<String>,
    #[serde(default)]
    pub resource_groups: Vec<SeedResourceGroup>,
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
    #[serde(default)]
    pub applications: Vec<SeedApplication>,
    #[serde(default)]
    pub management_groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedResourceGroup {
    pub name: String,
    #[serde(default = "default_location")]
    pub location: String,
}

fn default_location() -> String {
    "eastus".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGroup {
    pub display_name: String,
    pub description: Option<String>,
    /// Display names of seeded applications whose service principals are members.
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedApplication {
    pub display_name: String,
    #[serde(default = "default_audience")]
    pub sign_in_audience: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Create its service principal (default true).
    #[serde(default = "yes")]
    pub service_principal: bool,
    #[serde(default)]
    pub passwords: Vec<SeedPassword>,
    /// Graph application permissions of its service principal.
    #[serde(default)]
    pub graph_roles: Vec<String>,
    #[serde(default)]
    pub role_assignments: Vec<SeedRoleAssignment>,
    #[serde(default)]
    pub federated_identity_credentials: Vec<SeedFederated>,
}

fn default_audience() -> String {
    "AzureADMyOrg".to_string()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedPassword {
    pub secret_text: String,
    pub display_name: Option<String>,
    pub end_date_time: Option<DateTime<Utc>>,
    /// Put it on the service principal instead of the application.
    #[serde(default)]
    pub on_service_principal: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRoleAssignment {
    /// A built-in role name (e.g. `Contributor`) or its GUID.
    pub role: String,
    /// `{subscriptionId}` is replaced by the subscription id.
    pub scope: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFederated {
    pub name: String,
    pub issuer: String,
    pub subject: String,
    #[serde(default = "default_fic_audiences")]
    pub audiences: Vec<String>,
}

fn default_fic_audiences() -> Vec<String> {
    vec!["api://AzureADTokenExchange".to_string()]
}

impl SeedFile {
    pub fn load(path: &Path) -> Result<SeedFile, EmulatorError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EmulatorError::io(format!("read {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| EmulatorError::Seed(e.to_string()))
    }
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

/// Builds the starting directory. Returns it with the root client secret and client id.
pub fn build_directory(
    seed: Option<&SeedFile>,
) -> Result<(Directory, String, String), EmulatorError> {
    let empty = SeedFile::default();
    let seed = seed.unwrap_or(&empty);
    let tenant = seed
        .tenant_id
        .clone()
        .unwrap_or_else(new_id)
        .to_ascii_lowercase();
    let sub = seed
        .subscription_id
        .clone()
        .unwrap_or_else(new_id)
        .to_ascii_lowercase();
    if !is_guid(&tenant) || !is_guid(&sub) {
        return Err(EmulatorError::Seed(
            "tenantId and subscriptionId must be GUIDs".to_string(),
        ));
    }
    let domain = seed
        .tenant_domain
        .clone()
        .unwrap_or_else(|| "azureemulator.onmicrosoft.com".to_string());
    let mut d = Directory::new(tenant, sub, domain);
    let sub_scope = d.subscription_scope();
    let now = Utc::now();

    d.add_resource_group("vault-rg", "eastus");

    // The root service principal.
    let root = d.create_application("azure-emulator-root", "AzureADMyOrg", Vec::new(), None);
    let mut root_password = Password::new(
        Some("azure-emulator-root".to_string()),
        now - Duration::days(1),
        now + Duration::days(730),
    );
    root_password.added_at = None;
    let root_secret = root_password.secret.clone();
    if let Some(app) = d.applications.get_mut(&root.id) {
        app.passwords.push(root_password);
    }
    let root_sp = d
        .create_service_principal(&root.id, None)
        .ok_or_else(|| EmulatorError::Seed("root service principal".to_string()))?;
    if let Some(sp) = d.service_principals.get_mut(&root_sp.id) {
        sp.graph_roles = ADMIN_GRAPH_ROLES.iter().map(|s| s.to_string()).collect();
    }
    d.add_role_assignment(
        &sub_scope,
        roles::OWNER,
        &root_sp.id,
        "ServicePrincipal",
        None,
    );

    // The machine's system-assigned identity (Arc and VM IMDS).
    let machine_res = format!(
        "{sub_scope}/resourceGroups/vault-rg/providers/Microsoft.HybridCompute/machines/azure-emulator-machine"
    );
    let machine = d.create_managed_identity("azure-emulator-machine", &machine_res);
    if let Some(sp) = d.service_principals.get_mut(&machine) {
        sp.graph_roles = ADMIN_GRAPH_ROLES.iter().map(|s| s.to_string()).collect();
    }
    d.add_role_assignment(&sub_scope, roles::OWNER, &machine, "ServicePrincipal", None);
    d.machine_sp_id = machine;

    // A user-assigned identity attached to the VM (no permissions).
    let uami_res = format!(
        "{sub_scope}/resourceGroups/vault-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/vault-uami"
    );
    let uami = d.create_managed_identity("vault-uami", &uami_res);
    d.user_assigned.push((uami, uami_res));

    // Groups, including two with the same name.
    d.create_group(
        "vault-test-group-1",
        Some("Seeded test group 1".to_string()),
    );
    d.create_group(
        "vault-test-group-2",
        Some("Seeded test group 2".to_string()),
    );
    d.create_group(
        "vault-duplicate-group",
        Some("Seeded duplicate name (a)".to_string()),
    );
    d.create_group(
        "vault-duplicate-group",
        Some("Seeded duplicate name (b)".to_string()),
    );

    // Extras from the seed file.
    for rg in &seed.resource_groups {
        d.add_resource_group(&rg.name, &rg.location);
    }
    d.management_groups = seed.management_groups.clone();
    let mut app_sps: Vec<(String, String)> = Vec::new();
    for a in &seed.applications {
        let app = d.create_application(&a.display_name, &a.sign_in_audience, a.tags.clone(), None);
        let sp_id = if a.service_principal {
            d.create_service_principal(&app.id, None).map(|s| s.id)
        } else {
            None
        };
        for p in &a.passwords {
            let mut pw = Password::new(
                p.display_name.clone(),
                now - Duration::days(1),
                p.end_date_time.unwrap_or(now + Duration::days(730)),
            );
            pw.secret = p.secret_text.clone();
            pw.added_at = None;
            match (&sp_id, p.on_service_principal) {
                (Some(id), true) => {
                    if let Some(sp) = d.service_principals.get_mut(id) {
                        sp.passwords.push(pw);
                    }
                }
                _ => {
                    if let Some(ap) = d.applications.get_mut(&app.id) {
                        ap.passwords.push(pw);
                    }
                }
            }
        }
        for f in &a.federated_identity_credentials {
            if let Some(ap) = d.applications.get_mut(&app.id) {
                ap.federated.push(FederatedCredential {
                    id: new_id(),
                    name: f.name.clone(),
                    issuer: f.issuer.clone(),
                    subject: f.subject.clone(),
                    audiences: f.audiences.clone(),
                    description: None,
                });
            }
        }
        let Some(sp_id) = sp_id else {
            if !a.graph_roles.is_empty() || !a.role_assignments.is_empty() {
                return Err(EmulatorError::Seed(format!(
                    "application '{}' has roles but no service principal",
                    a.display_name
                )));
            }
            continue;
        };
        if let Some(sp) = d.service_principals.get_mut(&sp_id) {
            sp.graph_roles = a.graph_roles.clone();
        }
        for ra in &a.role_assignments {
            let role = roles::BUILT_IN
                .iter()
                .find(|r| {
                    r.name.eq_ignore_ascii_case(&ra.role) || r.guid.eq_ignore_ascii_case(&ra.role)
                })
                .ok_or_else(|| EmulatorError::Seed(format!("unknown role '{}'", ra.role)))?;
            let scope = ra.scope.replace("{subscriptionId}", &d.subscription_id);
            d.add_role_assignment(&scope, role.guid, &sp_id, "ServicePrincipal", None);
        }
        app_sps.push((a.display_name.clone(), sp_id));
    }
    for g in &seed.groups {
        let group = d.create_group(&g.display_name, g.description.clone());
        for m in &g.members {
            let sp = app_sps
                .iter()
                .find(|(name, _)| name == m)
                .map(|(_, id)| id.clone())
                .ok_or_else(|| {
                    EmulatorError::Seed(format!("group member '{m}' is not a seeded application"))
                })?;
            if let Some(gr) = d.groups.get_mut(&group.id) {
                gr.members.push(sp);
            }
        }
    }
    Ok((d, root_secret, root.app_id))
}
