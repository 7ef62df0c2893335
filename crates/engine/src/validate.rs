//! Checks of user input done before any Azure call: object ids, ARM scopes and the entries
//! of `azure_roles` and `azure_groups`. Errors name the field as the user types it and never
//! echo more than a short prefix of the value.

use super::store::{AzureGroup, AzureRole};
use vault_plugin_sdk::logical::LogicalError;

/// Longest ARM scope accepted (ARM resource ids are far shorter in practice).
const MAX_SCOPE_LEN: usize = 2048;
/// Longest role definition name (Azure allows 512 characters for custom roles).
const MAX_ROLE_NAME_LEN: usize = 512;
/// Longest group display name (Entra ID allows 256 characters).
const MAX_GROUP_NAME_LEN: usize = 256;
/// How much of a bad value an error message repeats.
const SHOWN_LEN: usize = 80;

/// `value` for an error message: at most [`SHOWN_LEN`] characters.
pub fn shown(value: &str) -> String {
    if value.chars().count() <= SHOWN_LEN {
        return value.to_string();
    }
    let head: String = value.chars().take(SHOWN_LEN).collect();
    format!("{head}... ({} bytes)", value.len())
}

/// A GUID in its canonical 8-4-4-4-12 hexadecimal form (any case), as Entra ID object ids
/// and ARM role definition names are.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A 400 unless `value` is a GUID; `field` is the field's name as the user types it.
pub fn check_object_id(field: &str, value: &str) -> Result<(), LogicalError> {
    if is_guid(value) {
        return Ok(());
    }
    Err(LogicalError::bad_request(format!(
        "invalid {field} '{}': an object id is a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        shown(value)
    )))
}

/// A 400 unless `value` is empty or a plain identifier (at most 128 letters, digits, `-`,
/// `.` or `_`, and not `.` or `..`): subscription, tenant and client ids go into URLs, paths
/// and filters of Azure calls, so they must not carry anything else.
pub fn check_plain_id(field: &str, value: &str) -> Result<(), LogicalError> {
    let plain = value.len() <= 128
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if plain {
        return Ok(());
    }
    Err(LogicalError::bad_request(format!(
        "invalid {field} '{}': only letters, digits, '-', '.' and '_' are allowed (at most 128)",
        shown(value)
    )))
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// `rest` (what follows `providers`) names a resource: a namespace, then type/name pairs.
fn is_resource(rest: &[&str]) -> bool {
    rest.len() >= 3 && (rest.len() - 1) % 2 == 0
}

/// Checks that `scope` is an ARM scope the engine may assign roles at: a subscription, a
/// resource group, a resource (under a subscription or resource group) or a management
/// group. Empty, `.` and `..` segments, queries and fragments are refused, so the scope
/// Azure acts on is the text that is stored.
pub fn check_scope(scope: &str) -> Result<(), String> {
    const SHAPES: &str = "use /subscriptions/<id>, /subscriptions/<id>/resourceGroups/<name>, \
a resource under one (.../providers/<namespace>/<type>/<name>) or \
/providers/Microsoft.Management/managementGroups/<id>";
    if scope.trim().is_empty() {
        return Err(format!("scope is required ({SHAPES})"));
    }
    if scope.len() > MAX_SCOPE_LEN {
        return Err(format!(
            "scope '{}' is too long (at most {MAX_SCOPE_LEN} characters)",
            shown(scope)
        ));
    }
    if let Some(c) = scope
        .chars()
        .find(|c| matches!(c, '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "scope '{}' must not contain {c:?} (no query, fragment, escapes or spaces)",
            shown(scope)
        ));
    }
    // A leading slash is optional, as in the Go engine; everything else is taken literally.
    let segs: Vec<&str> = scope
        .strip_prefix('/')
        .unwrap_or(scope)
        .split('/')
        .collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(format!("scope '{}' has an empty segment", shown(scope)));
    }
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return Err(format!(
            "scope '{}' has a '.' or '..' segment",
            shown(scope)
        ));
    }
    let ok = match segs.as_slice() {
        [s, _] if eq(s, "subscriptions") => true,
        [s, _, g, _] if eq(s, "subscriptions") && eq(g, "resourceGroups") => true,
        [s, _, g, _, p, rest @ ..]
            if eq(s, "subscriptions") && eq(g, "resourceGroups") && eq(p, "providers") =>
        {
            is_resource(rest)
        }
        [s, _, p, rest @ ..] if eq(s, "subscriptions") && eq(p, "providers") => is_resource(rest),
        [p, ns, mg, _] => {
            eq(p, "providers") && eq(ns, "Microsoft.Management") && eq(mg, "managementGroups")
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope '{}' is not an ARM scope: {SHAPES}",
            shown(scope)
        ))
    }
}

/// Checks that `id` is a role definition id: `[<scope>]/providers/Microsoft.Authorization/
/// roleDefinitions/<GUID>`.
fn check_role_id(id: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "no role found for role_id: '{}': a role_id is a role definition id, \
             [<scope>]/providers/Microsoft.Authorization/roleDefinitions/<GUID>",
            shown(id)
        )
    };
    let segs: Vec<&str> = id.strip_prefix('/').unwrap_or(id).split('/').collect();
    let Some((tail, prefix)) = segs.len().checked_sub(4).map(|n| (&segs[n..], &segs[..n])) else {
        return Err(bad());
    };
    let tail_ok = eq(tail[0], "providers")
        && eq(tail[1], "Microsoft.Authorization")
        && eq(tail[2], "roleDefinitions")
        && is_guid(tail[3]);
    if !tail_ok || id.contains(['?', '#', '%', '\\']) || id.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    if !prefix.is_empty() {
        check_scope(&prefix.join("/")).map_err(|_| bad())?;
    }
    Ok(())
}

fn role_label(i: usize, role: &AzureRole) -> String {
    if !role.role_name.is_empty() {
        format!("azure_roles[{i}] (role_name '{}')", shown(&role.role_name))
    } else if !role.role_id.is_empty() {
        format!("azure_roles[{i}] (role_id '{}')", shown(&role.role_id))
    } else {
        format!("azure_roles[{i}]")
    }
}

/// Checks every `azure_roles` entry; the error names the entry by index and role.
pub fn check_azure_roles(roles: &[AzureRole]) -> Result<(), LogicalError> {
    for (i, role) in roles.iter().enumerate() {
        let problem = if role.role_name.is_empty() && role.role_id.is_empty() {
            Err("role_name or role_id is required".to_string())
        } else if role.role_name.len() > MAX_ROLE_NAME_LEN {
            Err(format!(
                "role_name is too long (at most {MAX_ROLE_NAME_LEN} characters)"
            ))
        } else if !role.role_id.is_empty() {
            check_role_id(&role.role_id)
        } else {
            Ok(())
        };
        problem
            .and_then(|()| check_scope(&role.scope))
            .map_err(|e| LogicalError::bad_request(format!("{}: {e}", role_label(i, role))))?;
    }
    Ok(())
}

/// Checks every `azure_groups` entry; the error names the entry by index and group.
pub fn check_azure_groups(groups: &[AzureGroup]) -> Result<(), LogicalError> {
    for (i, group) in groups.iter().enumerate() {
        let label = if group.group_name.is_empty() {
            format!("azure_groups[{i}]")
        } else {
            format!(
                "azure_groups[{i}] (group_name '{}')",
                shown(&group.group_name)
            )
        };
        let problem = if !group.object_id.is_empty() {
            if is_guid(&group.object_id) {
                None
            } else {
                Some(format!(
                    "no group found for object_id: '{}': an object id is a GUID",
                    shown(&group.object_id)
                ))
            }
        } else if group.group_name.is_empty() {
            Some("group_name or object_id is required".to_string())
        } else if group.group_name.len() > MAX_GROUP_NAME_LEN {
            Some(format!(
                "group_name is too long (at most {MAX_GROUP_NAME_LEN} characters)"
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(LogicalError::bad_request(format!("{label}: {p}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "/subscriptions/0b1f5e2c-0000-4000-8000-000000000001";

    #[test]
    fn guids() {
        assert!(is_guid("0b1f5e2c-0000-4000-8000-00000000000A"));
        for bad in [
            "",
            "abc",
            "0b1f5e2c00004000800000000000000a",
            "{0b1f5e2c-0000-4000-8000-00000000000a}",
            "0b1f5e2c-0000-4000-8000-00000000000g",
            "0b1f5e2c-0000-4000-8000-00000000000a-",
        ] {
            assert!(!is_guid(bad), "{bad}");
        }
        let err = check_object_id("application_object_id", &"x".repeat(1 << 20)).unwrap_err();
        let LogicalError::BadRequest(m) = err else {
            panic!("not a 400")
        };
        assert!(m.starts_with("invalid application_object_id '"), "{m}");
        assert!(m.len() < 300, "the value is not echoed whole");
    }

    #[test]
    fn plain_ids() {
        for ok in [
            "",
            "sub-1",
            "0b1f5e2c-0000-4000-8000-000000000001",
            "contoso.onmicrosoft.com",
        ] {
            assert!(check_plain_id("subscription_id", ok).is_ok(), "{ok}");
        }
        for bad in ["..", "a/b", "../providers", "a b", "x'y", "a?b"] {
            assert!(check_plain_id("subscription_id", bad).is_err(), "{bad}");
        }
        let huge = "a".repeat(1 << 20);
        let err = check_plain_id("client_id", &huge).unwrap_err();
        assert!(
            matches!(&err, LogicalError::BadRequest(m) if m.starts_with("invalid client_id") && m.len() < 300),
            "{err:?}"
        );
    }

    #[test]
    fn arm_scopes() {
        for good in [
            SUB.to_string(),
            "subscriptions/s".to_string(),
            format!("{SUB}/resourceGroups/vault-rg"),
            format!("{SUB}/resourcegroups/vault-rg"),
            format!("{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"),
            format!(
                "{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct/blobServices/default"
            ),
            format!("{SUB}/providers/Microsoft.Web/sites/app"),
            "/providers/Microsoft.Management/managementGroups/mg1".to_string(),
        ] {
            assert_eq!(check_scope(&good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "required"),
            ("   ", "required"),
            ("/", "empty segment"),
            ("/subscriptions/s/", "empty segment"),
            ("/subscriptions//resourceGroups/rg", "empty segment"),
            (
                "/subscriptions/s/resourceGroups/ex-rg/../../resourceGroups/vault-rg",
                "'..'",
            ),
            ("/subscriptions/s/./resourceGroups/rg", "'.'"),
            ("/subscriptions/s?api-version=1", "'?'"),
            ("/subscriptions/s#frag", "'#'"),
            ("/subscriptions/s/resourceGroups/%2e%2e", "'%'"),
            ("/subscriptions/s /resourceGroups/rg", "' '"),
            ("/subscriptions", "not an ARM scope"),
            ("/subscriptions/s/resourceGroups", "not an ARM scope"),
            (
                "/subscriptions/s/resourceGroups/rg/providers",
                "not an ARM scope",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts",
                "not an ARM scope",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/extra",
                "not an ARM scope",
            ),
            ("/tenants/t", "not an ARM scope"),
            (
                "/providers/Microsoft.Management/managementGroups",
                "not an ARM scope",
            ),
        ] {
            let err = check_scope(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(
            check_scope(&format!("{SUB}/resourceGroups/{}", "r".repeat(4000)))
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn role_entries_name_the_entry() {
        let role = |name: &str, id: &str, scope: &str| AzureRole {
            role_name: name.into(),
            role_id: id.into(),
            scope: scope.into(),
        };
        let reader_id = format!(
            "{SUB}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        );
        check_azure_roles(&[
            role("Reader", "", SUB),
            role("", &reader_id, SUB),
            role(
                "",
                "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
                SUB,
            ),
        ])
        .unwrap();
        let err = |roles: &[AzureRole]| match check_azure_roles(roles).unwrap_err() {
            LogicalError::BadRequest(m) => m,
            other => panic!("not a 400: {other:?}"),
        };
        let m = err(&[role("Reader", "", SUB), role("Reader", "", "")]);
        assert!(
            m.starts_with("azure_roles[1] (role_name 'Reader'): scope is required"),
            "{m}"
        );
        let m = err(&[role("", "not-a-role-id", SUB)]);
        assert!(
            m.starts_with("azure_roles[0] (role_id 'not-a-role-id'): no role found for role_id: 'not-a-role-id'"),
            "{m}"
        );
        let m = err(&[role("", "", SUB)]);
        assert_eq!(m, "azure_roles[0]: role_name or role_id is required");
        let m = err(&[role(&"n".repeat(600), "", SUB)]);
        assert!(m.contains("role_name is too long"), "{m}");
    }

    #[test]
    fn group_entries_name_the_entry() {
        let group = |name: &str, id: &str| AzureGroup {
            group_name: name.into(),
            object_id: id.into(),
        };
        check_azure_groups(&[
            group("devs", ""),
            group("", "0b1f5e2c-0000-4000-8000-000000000001"),
        ])
        .unwrap();
        let m = check_azure_groups(&[group("devs", ""), group("", "not-a-guid")]).unwrap_err();
        assert_eq!(
            m,
            LogicalError::bad_request(
                "azure_groups[1]: no group found for object_id: 'not-a-guid': an object id is a GUID"
            )
        );
        let m = check_azure_groups(&[group("", "")]).unwrap_err();
        assert_eq!(
            m,
            LogicalError::bad_request("azure_groups[0]: group_name or object_id is required")
        );
    }
}
