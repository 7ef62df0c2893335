//! `self-test` under a real OpenBao with the emulator as Azure: identities lacking each
//! permission in turn get "missing" naming it, and the matching `creds` read really fails
//! (the report does not lie either way); usage against the emulator's lowered limits gives
//! warnings from 80% and Azure's own error at 100%.

mod common;

use common::{Bao, Emulator};
use serde_json::{json, Value};

fn write_json(bao: &Bao, name: &str, v: &Value) -> String {
    let path = bao.dir.path().join(name);
    std::fs::write(&path, v.to_string()).expect("write json");
    format!("@{}", path.display())
}

/// A dev OpenBao whose plugin reaches `emu`, with `extra` in its environment, the plugin
/// enabled at `azure/` and configured with the emulator's root identity.
fn bao_for(emu: &Emulator, extra: &[(&str, &str)]) -> Bao {
    let mut env = emu.cloud_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bao = Bao::dev_with_env(&pairs);
    bao.register("azure");
    bao.enable("azure", "azure");
    let args = emu.config_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bao.write("azure/config", &refs).ok();
    bao
}

fn write_arm_role(bao: &Bao, emu: &Emulator, name: &str) {
    let rg = format!(
        "/subscriptions/{}/resourceGroups/vault-rg",
        emu.var("AZURE_SUBSCRIPTION_ID")
    );
    let roles = write_json(
        bao,
        &format!("{name}.json"),
        &json!([{"role_name": "Reader", "scope": rg}]),
    );
    bao.write(
        &format!("azure/roles/{name}"),
        &[&format!("azure_roles={roles}")],
    )
    .ok();
}

fn write_group_role(bao: &Bao, name: &str) {
    let groups = write_json(
        bao,
        &format!("{name}.json"),
        &json!([{"group_name": "vault-test-group-1"}]),
    );
    bao.write(
        &format!("azure/roles/{name}"),
        &[&format!("azure_groups={groups}")],
    )
    .ok();
}

fn self_test(bao: &Bao) -> Value {
    bao.read("azure/self-test").ok().json()
}

/// `capability -> status` of role `role` in a self-test answer.
fn statuses(report: &Value, role: &str) -> Vec<(String, String)> {
    report["data"]["roles"][role]["capabilities"]
        .as_array()
        .unwrap_or_else(|| panic!("no role {role} in {report}"))
        .iter()
        .map(|c| {
            (
                c["capability"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn status_of(report: &Value, role: &str, capability: &str) -> (String, String) {
    let c = report["data"]["roles"][role]["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["capability"] == capability)
        .unwrap_or_else(|| panic!("no {capability} for {role} in {report}"))
        .clone();
    (
        c["status"].as_str().unwrap_or("").to_string(),
        c["missing"]
            .as_str()
            .or(c["reason"].as_str())
            .unwrap_or("")
            .to_string(),
    )
}

fn warnings(out: &Value) -> Vec<String> {
    out["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect()
}

#[test]
fn self_test_names_each_missing_permission_and_the_creds_read_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    let sub = "/subscriptions/{subscriptionId}";
    std::fs::write(
        &seed,
        json!({"applications": [
            {"displayName": "st-no-graph", "passwords": [{"secretText": "st-no-graph-secret"}],
             "roleAssignments": [{"role": "Owner", "scope": sub}]},
            {"displayName": "st-reader", "passwords": [{"secretText": "st-reader-secret"}],
             "graphRoles": ["Application.ReadWrite.All", "GroupMember.ReadWrite.All", "Policy.Read.All"],
             "roleAssignments": [{"role": "Reader", "scope": sub}]},
            {"displayName": "st-no-groups", "passwords": [{"secretText": "st-no-groups-secret"}],
             "graphRoles": ["Application.ReadWrite.All"],
             "roleAssignments": [{"role": "Owner", "scope": sub}]},
            {"displayName": "st-owned-by", "passwords": [{"secretText": "st-owned-by-secret"}],
             "graphRoles": ["Application.ReadWrite.OwnedBy", "Policy.Read.All"],
             "roleAssignments": [{"role": "Owner", "scope": sub}]}
        ]})
        .to_string(),
    )
    .expect("seed");
    let emu = Emulator::start(&["--seed", seed.to_str().expect("utf-8 path")]);
    let bao = bao_for(&emu, &[]);

    // Roles written by the root identity.
    write_arm_role(&bao, &emu, "dyn-arm");
    write_group_role(&bao, "dyn-group");
    let (app_object, app_id) = emu.create_app("vault-st-existing", true);
    bao.write(
        "azure/roles/existing",
        &[&format!("application_object_id={app_object}")],
    )
    .ok();

    let (static_app, _) = emu.create_app("vault-st-static", true);
    bao.write(
        "azure/static-roles/st-static",
        &[&format!("application_object_id={static_app}")],
    )
    .ok();

    // The root identity: everything ok, and every creds read works.
    let report = self_test(&bao);
    assert_eq!(
        report["data"]["static_roles"]["st-static"]["status"], "ok",
        "{report}"
    );
    bao.cli(&["write", "-f", "azure/rotate-role/st-static"])
        .ok();
    assert_eq!(report["data"]["summary"]["result"], "ok", "{report}");
    assert_eq!(report["data"]["summary"]["missing"], 0);
    for role in ["dyn-arm", "dyn-group", "existing"] {
        assert!(
            statuses(&report, role).iter().all(|(_, s)| s == "ok"),
            "{role}: {report}"
        );
        bao.read(&format!("azure/creds/{role}")).ok();
    }
    let caps: Vec<String> = statuses(&report, "dyn-arm")
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        caps,
        [
            "create_application",
            "create_service_principal",
            "add_password",
            "read_role_definitions",
            "create_role_assignments",
            "delete_role_assignments",
            "read_app_management_policy"
        ]
    );
    assert_eq!(
        report["data"]["identity"]["capabilities"],
        json!([{"capability": "graph_token", "status": "ok"}, {"capability": "arm_token", "status": "ok"}])
    );

    let state = emu.state();
    let client_of = |name: &str| -> String {
        state["applications"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["displayName"] == name)
            .and_then(|a| a["appId"].as_str())
            .unwrap_or_else(|| panic!("no {name}"))
            .to_string()
    };
    let use_identity = |name: &str| {
        bao.write(
            "azure/config",
            &[
                &format!("client_id={}", client_of(name)),
                &format!("client_secret={name}-secret"),
            ],
        )
        .ok();
    };

    // No Graph permissions at all (Owner in ARM).
    use_identity("st-no-graph");
    let report = self_test(&bao);
    assert_eq!(report["data"]["summary"]["result"], "missing", "{report}");
    assert_eq!(
        report["data"]["identity"]["graph_application_permissions"],
        json!([])
    );
    let (s, what) = status_of(&report, "dyn-arm", "create_application");
    assert_eq!(s, "missing");
    assert!(what.contains("Application.ReadWrite"), "{what}");
    assert_eq!(
        status_of(&report, "dyn-arm", "create_role_assignments").0,
        "ok"
    );
    let (s, what) = status_of(&report, "dyn-group", "add_group_members");
    assert_eq!(s, "missing");
    assert!(what.contains("GroupMember.ReadWrite.All"), "{what}");
    let (s, what) = status_of(&report, "existing", "read_application");
    assert_eq!(s, "missing");
    assert!(what.contains("Application.Read"), "{what}");
    assert_eq!(status_of(&report, "existing", "add_password").0, "missing");
    for role in ["dyn-arm", "dyn-group", "existing"] {
        let out = bao.read(&format!("azure/creds/{role}"));
        assert_ne!(
            out.code, 0,
            "{role} issued without Graph permissions: {out:?}"
        );
    }
    assert_eq!(
        report["data"]["static_roles"]["st-static"]["status"],
        "missing"
    );
    assert!(report["data"]["summary"]["roles_with_missing_permissions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n == "static-roles/st-static")));
    let out = bao.cli(&["write", "-f", "azure/rotate-role/st-static"]);
    assert_ne!(out.code, 0, "rotated without Graph permissions: {out:?}");

    // Graph is fine, ARM is Reader only: assignments are missing, the rest works.
    use_identity("st-reader");
    let report = self_test(&bao);
    assert_eq!(
        report["data"]["summary"]["roles_with_missing_permissions"],
        json!(["dyn-arm"]),
        "{report}"
    );
    assert_eq!(
        status_of(&report, "dyn-arm", "read_role_definitions").0,
        "ok"
    );
    for cap in ["create_role_assignments", "delete_role_assignments"] {
        let (s, what) = status_of(&report, "dyn-arm", cap);
        assert_eq!(s, "missing", "{cap}");
        assert!(
            what.contains("Microsoft.Authorization/roleAssignments/"),
            "{what}"
        );
        assert!(what.contains("/resourceGroups/vault-rg"), "{what}");
    }
    let out = bao.read("azure/creds/dyn-arm");
    assert_ne!(out.code, 0, "issued without roleAssignments/write: {out:?}");
    assert!(out.stderr.contains("AuthorizationFailed"), "{}", out.stderr);
    bao.read("azure/creds/dyn-group").ok();
    bao.read("azure/creds/existing").ok();

    // No group rights (and no policy read, which only costs the early policy check).
    use_identity("st-no-groups");
    let report = self_test(&bao);
    assert_eq!(
        report["data"]["summary"]["roles_with_missing_permissions"],
        json!(["dyn-group"]),
        "{report}"
    );
    let (s, what) = status_of(&report, "dyn-group", "read_app_management_policy");
    assert_eq!(s, "missing");
    assert!(what.contains("Policy.Read.All"), "{what}");
    let out = bao.read("azure/creds/dyn-group");
    assert_ne!(
        out.code, 0,
        "issued without GroupMember.ReadWrite.All: {out:?}"
    );
    bao.read("azure/creds/dyn-arm").ok();
    bao.read("azure/creds/existing").ok();

    // Application.ReadWrite.OwnedBy only: enough for what the engine creates itself (issued
    // and revoked), not for another's application.
    use_identity("st-owned-by");
    let report = self_test(&bao);
    assert_eq!(
        report["data"]["summary"]["roles_with_missing_permissions"],
        json!(["dyn-group", "existing", "static-roles/st-static"]),
        "{report}"
    );
    assert_eq!(status_of(&report, "dyn-arm", "create_application").0, "ok");
    let (s, what) = status_of(&report, "existing", "add_password");
    assert_eq!(s, "missing");
    assert!(what.contains("ownership of application"), "{what}");
    let issued = bao.read("azure/creds/dyn-arm").ok().json();
    let client = issued["data"]["client_id"].as_str().expect("client_id");
    assert!(emu
        .vault_apps()
        .iter()
        .any(|a| a["appId"].as_str() == Some(client)));
    let lease = issued["lease_id"].as_str().expect("lease");
    bao.cli(&["lease", "revoke", "-sync", lease]).ok();
    assert!(!emu
        .vault_apps()
        .iter()
        .any(|a| a["appId"].as_str() == Some(client)));
    let out = bao.read("azure/creds/existing");
    assert_ne!(
        out.code, 0,
        "issued on a foreign application with OwnedBy: {out:?}"
    );

    // The existing application is still the root's; no secret leaks into the report.
    let report_text = self_test(&bao).to_string();
    assert!(!report_text.contains("st-no-groups-secret"));
    assert!(!report_text.contains(&emu.var("AZURE_CLIENT_SECRET")));
    assert!(!app_id.is_empty());
}

#[test]
fn usage_warns_from_eighty_percent_and_azure_refuses_at_the_limit() {
    let emu = Emulator::start(&[]);
    emu.settings(json!({"role_assignment_limit": 5}));
    let bao = bao_for(&emu, &[("AZURE_ROLE_ASSIGNMENT_LIMIT", "5")]);
    write_arm_role(&bao, &emu, "dyn-arm");
    write_group_role(&bao, "dyn-group");

    // Role assignments: two seeded (root and machine identity Owners) of five.
    let report = self_test(&bao);
    let ra = &report["data"]["usage"]["role_assignments"];
    assert_eq!(ra["used"], 2, "{report}");
    assert_eq!(ra["limit"], 5);
    let first = bao.read("azure/creds/dyn-arm").ok().json();
    assert!(warnings(&first).is_empty(), "3 of 5: {first}");
    let second = bao.read("azure/creds/dyn-arm").ok().json();
    let w = warnings(&second);
    assert!(
        w.iter()
            .any(|w| w.contains("4 of its 5 role assignments (80%)")),
        "{w:?}"
    );
    let third = bao.read("azure/creds/dyn-arm").ok().json();
    assert!(
        warnings(&third)
            .iter()
            .any(|w| w.contains("5 of its 5 role assignments (100%)")),
        "{third}"
    );
    let refused = bao.read("azure/creds/dyn-arm");
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("RoleAssignmentLimitExceeded"),
        "{}",
        refused.stderr
    );
    // The self-test measures again: Azure's count, and the warning.
    let report = self_test(&bao);
    assert_eq!(report["data"]["usage"]["role_assignments"]["used"], 5);
    assert!(warnings(&report)
        .iter()
        .any(|w| w.contains("role assignments (100%)")));
    assert!(
        bao.log_text().contains("of its 5 role assignments"),
        "the warning is logged"
    );

    // Directory quota: lowered so that one more application and service principal pass
    // 80%; issuing until Entra ID refuses.
    let used = self_test(&bao)["data"]["usage"]["directory_objects"]["used"]
        .as_u64()
        .expect("directory count");
    let total = (used + 2) * 5 / 4;
    emu.settings(json!({"directory_quota": total}));
    let report = self_test(&bao);
    assert_eq!(report["data"]["usage"]["directory_objects"]["limit"], total);
    assert!(
        !warnings(&report).iter().any(|w| w.contains("directory")),
        "{report}"
    );
    let out = bao.read("azure/creds/dyn-group").ok().json();
    assert!(
        warnings(&out)
            .iter()
            .any(|w| w.contains(&format!("{} of its {total} objects", used + 2))),
        "{out}"
    );
    let mut refused = None;
    for _ in 0..total {
        let out = bao.read("azure/creds/dyn-group");
        if out.code != 0 {
            refused = Some(out);
            break;
        }
    }
    let refused = refused.expect("the quota was never reached");
    assert!(
        refused.stderr.contains("Directory_QuotaExceeded"),
        "{}",
        refused.stderr
    );

    // Passwords on an existing application with a Microsoft-account audience: 2.
    emu.settings(json!({"directory_quota": 50_000}));
    let app = emu.graph_post(
        "applications",
        &json!({"displayName": "vault-st-msa", "signInAudience": "AzureADandPersonalMicrosoftAccount"}),
    );
    let object_id = app["id"].as_str().expect("id").to_string();
    emu.graph_post("servicePrincipals", &json!({"appId": app["appId"]}));
    bao.write(
        "azure/roles/msa",
        &[&format!("application_object_id={object_id}")],
    )
    .ok();
    let report = self_test(&bao);
    let entry = &report["data"]["usage"]["application_credentials"][object_id.as_str()];
    assert_eq!(entry["used"], 0, "{report}");
    assert_eq!(entry["limit"], 2);
    assert_eq!(entry["roles"], json!(["msa"]));
    let first = bao.read("azure/creds/msa").ok().json();
    assert!(warnings(&first).is_empty(), "{first}");
    let second = bao.read("azure/creds/msa").ok().json();
    assert!(
        warnings(&second)
            .iter()
            .any(|w| w.contains("2 of the 2 passwords")),
        "{second}"
    );
    let refused = bao.read("azure/creds/msa");
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("maximum number of Application passwords reached"),
        "{}",
        refused.stderr
    );
}
