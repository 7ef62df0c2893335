//! Built-in Azure role definitions (real names and GUIDs) and action matching.

use serde_json::{json, Value};

pub struct RoleDef {
    pub guid: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub actions: &'static [&'static str],
    pub not_actions: &'static [&'static str],
    pub data_actions: &'static [&'static str],
}

pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

pub static BUILT_IN: &[RoleDef] = &[
    RoleDef {
        guid: OWNER,
        name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
    },
    RoleDef {
        guid: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
        ],
        data_actions: &[],
    },
    RoleDef {
        guid: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
    },
    RoleDef {
        guid: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        name: "User Access Administrator",
        description: "Lets you manage user access to Azure resources.",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
    },
    RoleDef {
        guid: "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        name: "Role Based Access Control Administrator",
        description: "Manage access to Azure resources by assigning roles using Azure RBAC. This role does not allow you to manage access using other ways, such as Azure Policy.",
        actions: &[
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    RoleDef {
        guid: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        name: "Storage Blob Data Contributor",
        description: "Read, write, and delete Azure Storage containers and blobs.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        ],
    },
    RoleDef {
        guid: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        name: "Storage Blob Data Reader",
        description: "Read and list Azure Storage containers and blobs.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
    },
    RoleDef {
        guid: "4633458b-17de-408a-b874-0445c86b69e6",
        name: "Key Vault Secrets User",
        description: "Read secret contents.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
    },
    RoleDef {
        guid: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        name: "Key Vault Secrets Officer",
        description: "Perform any action on the secrets of a key vault, except manage permissions.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
            "Microsoft.KeyVault/checkNameAvailability/read",
            "Microsoft.KeyVault/deletedVaults/read",
            "Microsoft.KeyVault/locations/*/read",
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/operations/read",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
    },
];

pub fn by_guid(guid: &str) -> Option<&'static RoleDef> {
    BUILT_IN.iter().find(|r| r.guid.eq_ignore_ascii_case(guid))
}

/// Case-insensitive glob match where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl RoleDef {
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| glob_match(a, action))
            && !self.not_actions.iter().any(|a| glob_match(a, action))
    }

    /// The ARM representation; `sub` selects the subscription-scoped id form.
    pub fn to_json(&self, sub: Option<&str>) -> Value {
        let id = match sub {
            Some(s) => format!(
                "/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.guid
            ),
            None => format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.guid
            ),
        };
        json!({
            "id": id,
            "name": self.guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": self.actions,
                    "notActions": self.not_actions,
                    "dataActions": self.data_actions,
                    "notDataActions": []
                }],
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2024-01-01T00:00:00.0000000Z",
                "createdBy": null,
                "updatedBy": null
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob_match(
            "*",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(glob_match(
            "*/read",
            "Microsoft.Authorization/roleAssignments/read"
        ));
        assert!(!glob_match(
            "*/read",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(glob_match(
            "Microsoft.Authorization/*/Write",
            "microsoft.authorization/roleassignments/write"
        ));
    }

    #[test]
    fn contributor_cannot_assign_roles() {
        let c = BUILT_IN.iter().find(|r| r.name == "Contributor").unwrap();
        assert!(!c.allows("Microsoft.Authorization/roleAssignments/write"));
        assert!(c.allows("Microsoft.Resources/subscriptions/resourceGroups/write"));
        let uaa = BUILT_IN
            .iter()
            .find(|r| r.name == "User Access Administrator")
            .unwrap();
        assert!(uaa.allows("Microsoft.Authorization/roleAssignments/write"));
    }
}
