//! `roles/<name>` and `roles/` end to end: a real OpenBao server running the plugin against
//! the Azure emulator, driven with the `bao` CLI.

mod common;

use std::path::PathBuf;

use serde_json::{json, Value};

use common::{bao_with_emulator, Bao, CliOutput, Emulator};

const ROLE_DEFS: &str = "/providers/Microsoft.Authorization/roleDefinitions";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

/// What a test needs: the emulator, OpenBao, a scratch directory and a few ids.
struct Env {
    emu: Emulator,
    bao: Bao,
    dir: tempfile::TempDir,
    sub: String,
}

impl Env {
    /// An emulator seeded with one extra application, `existing-app`, and OpenBao.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = dir.path().join("seed.json");
        let seed_json = json!({"applications": [{"displayName": "existing-app"}]});
        std::fs::write(&seed, seed_json.to_string()).expect("write seed");
        let emu = Emulator::start(&["--seed", seed.to_str().expect("utf-8 path")]);
        let bao = bao_with_emulator(&emu);
        let sub = emu.var("AZURE_SUBSCRIPTION_ID");
        Self { emu, bao, dir, sub }
    }

    /// A raw HTTP write with a JSON body: (status, body).
    fn http_write(&self, path: &str, body: &Value) -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
            .args(["-H", &format!("X-Vault-Token: {}", self.bao.token)])
            .args(["-d", &body.to_string()])
            .arg(format!("{}/v1/{path}", self.bao.addr))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn sub_scope(&self) -> String {
        format!("/subscriptions/{}", self.sub)
    }

    fn rg_scope(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/vault-rg", self.sub)
    }

    fn role_id(&self, guid: &str) -> String {
        format!("/subscriptions/{}{ROLE_DEFS}/{guid}", self.sub)
    }

    /// Writes `content` to a file and returns the CLI's `@file` argument for `field`.
    fn file_arg(&self, field: &str, content: &Value) -> String {
        let path: PathBuf = self
            .dir
            .path()
            .join(format!("{field}-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, content.to_string()).expect("write JSON file");
        format!("{field}=@{}", path.display())
    }

    /// `bao write` (with `-force` when there are no fields).
    fn write(&self, path: &str, args: &[String]) -> CliOutput {
        if args.is_empty() {
            return self.bao.cli(&["write", "-force", path]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.bao.write(path, &refs)
    }

    /// `data` of `bao read`, or `None` when nothing is stored.
    fn read(&self, path: &str) -> Option<Value> {
        let out = self.bao.read(path);
        if out.code != 0 && out.stderr.contains("No value found") {
            return None;
        }
        Some(out.ok().json()["data"].clone())
    }

    fn list(&self) -> Option<Vec<String>> {
        let out = self.bao.cli(&["list", "-format=json", "azure/roles"]);
        if out.code != 0 {
            return None;
        }
        serde_json::from_value(out.json()).ok()
    }

    /// Asserts that a write fails with HTTP `code` and a message containing `message`.
    fn write_fails(&self, path: &str, args: &[String], code: u16, message: &str) {
        let out = self.write(path, args);
        assert_eq!(out.code, 2, "write should fail: {out:?}");
        assert!(
            out.stderr.contains(&format!("Code: {code}")),
            "expected HTTP {code}: {out:?}"
        );
        assert!(
            out.stderr.contains(message),
            "expected {message:?}: {out:?}"
        );
    }

    fn app_object_id(&self, display_name: &str) -> String {
        self.emu.state()["applications"]
            .as_array()
            .expect("applications")
            .iter()
            .find(|a| a["displayName"] == display_name)
            .and_then(|a| a["id"].as_str())
            .unwrap_or_else(|| panic!("no application {display_name}"))
            .to_string()
    }

    fn group_id(&self, display_name: &str) -> String {
        group(&self.emu.state(), display_name)["id"]
            .as_str()
            .expect("group id")
            .to_string()
    }
}

fn group(state: &Value, display_name: &str) -> Value {
    state["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["displayName"] == display_name)
        .cloned()
        .unwrap_or_else(|| panic!("no group {display_name}"))
}

fn members(state: &Value, display_name: &str) -> Vec<String> {
    serde_json::from_value(group(state, display_name)["members"].clone()).unwrap_or_default()
}

/// Role assignments (lower-cased role definition GUID, scope) of `principal`.
fn assignments_of(state: &Value, principal: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = state["roleAssignments"]
        .as_array()
        .expect("roleAssignments")
        .iter()
        .filter(|ra| ra["properties"]["principalId"] == principal)
        .map(|ra| {
            let def = ra["properties"]["roleDefinitionId"]
                .as_str()
                .unwrap_or_default();
            (
                def.rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                ra["properties"]["scope"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn role_fields_resolution_errors_and_listing() {
    let env = Env::start();
    let sub_scope = env.sub_scope();
    let rg_scope = env.rg_scope();

    // No roles yet.
    assert_eq!(env.list(), None);
    assert_eq!(env.read("azure/roles/r1"), None);

    // Every field, roles by name and by id, groups by name and by object id, via @file.
    let group2 = env.group_id("vault-test-group-2");
    let roles = json!([
        {"role_name": "Reader", "scope": sub_scope},
        {"role_name": "will be replaced", "role_id": env.role_id(CONTRIBUTOR), "scope": rg_scope, "unknown": 1},
        {"role_name": "Reader", "scope": rg_scope}
    ]);
    let groups = json!([
        {"group_name": "vault-test-group-1"},
        {"group_name": "will be replaced", "object_id": group2}
    ]);
    env.write(
        "azure/roles/r1",
        &[
            env.file_arg("azure_roles", &roles),
            env.file_arg("azure_groups", &groups),
            s("ttl=1h"),
            s("max_ttl=7200"),
            s("explicit_max_ttl=3h"),
            s("sign_in_audience=AzureADMyOrg"),
            s("tags= team:eng,project:vault_test,,team:eng "),
            s("credential_ready_timeout=45s"),
            s("some_unknown_field=1"),
        ],
    )
    .ok();
    let r1 = env.read("azure/roles/r1").expect("r1 stored");
    assert_eq!(r1["ttl"], 3600);
    assert_eq!(r1["max_ttl"], 7200);
    assert_eq!(r1["explicit_max_ttl"], 10800);
    assert_eq!(r1["sign_in_audience"], "AzureADMyOrg");
    assert_eq!(r1["tags"], json!(["project:vault_test", "team:eng"]));
    assert_eq!(r1["credential_ready_timeout"], 45);
    assert_eq!(r1["permanently_delete"], false);
    assert_eq!(r1["persist_app"], false);
    assert_eq!(r1["application_object_id"], "");
    assert_eq!(
        r1["azure_roles"],
        json!([
            {"role_name": "Reader", "role_id": env.role_id(READER), "scope": sub_scope},
            {"role_name": "Contributor", "role_id": env.role_id(CONTRIBUTOR), "scope": rg_scope},
            {"role_name": "Reader", "role_id": env.role_id(READER), "scope": rg_scope}
        ])
    );
    assert_eq!(
        r1["azure_groups"],
        json!([
            {"group_name": "vault-test-group-1", "object_id": env.group_id("vault-test-group-1")},
            {"group_name": "vault-test-group-2", "object_id": group2}
        ])
    );
    let mut keys: Vec<&str> = r1
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "application_object_id",
            "azure_groups",
            "azure_roles",
            "credential_ready_timeout",
            "explicit_max_ttl",
            "max_ttl",
            "metadata",
            "permanently_delete",
            "persist_app",
            "sign_in_audience",
            "tags",
            "ttl"
        ]
    );

    // A partial update keeps every other value (permanently_delete included).
    env.write("azure/roles/r1", &[s("ttl=30m")]).ok();
    let updated = env.read("azure/roles/r1").expect("r1");
    assert_eq!(updated["ttl"], 1800);
    for key in [
        "max_ttl",
        "explicit_max_ttl",
        "azure_roles",
        "azure_groups",
        "tags",
        "sign_in_audience",
        "credential_ready_timeout",
    ] {
        assert_eq!(updated[key], r1[key], "{key} kept");
    }
    env.write(
        "azure/roles/r1",
        &[s("tags="), s("credential_ready_timeout=0")],
    )
    .ok();
    let updated = env.read("azure/roles/r1").expect("r1");
    assert_eq!(
        updated["tags"],
        json!([]),
        "an empty tags value clears them"
    );
    assert_eq!(updated["credential_ready_timeout"], 0);

    // Names are lower-cased: MyRole and myrole are one role.
    let inline_roles = format!(r#"azure_roles=[{{"role_name":"Owner","scope":"{sub_scope}"}}]"#);
    env.write("azure/roles/MyRole.v2", std::slice::from_ref(&inline_roles))
        .ok();
    let mine = env.read("azure/roles/myrole.v2").expect("lower-cased");
    assert_eq!(mine["azure_roles"][0]["role_id"], env.role_id(OWNER));
    assert_eq!(mine["ttl"], 0, "create defaults");
    assert_eq!(mine["max_ttl"], 0);
    assert_eq!(mine["explicit_max_ttl"], 0);
    assert_eq!(mine["tags"], Value::Null);
    assert_eq!(mine["azure_groups"], Value::Null);
    assert_eq!(mine["sign_in_audience"], "");
    assert_eq!(mine["credential_ready_timeout"], 30, "default wait");
    assert_eq!(env.read("azure/roles/MYROLE.V2"), Some(mine));

    // Group-only role; existing-app role.
    env.write(
        "azure/roles/groups-only",
        &[
            s(r#"azure_groups=[{"group_name":"vault-test-group-1"}]"#),
            s("permanently_delete=true"),
        ],
    )
    .ok();
    let read_pd =
        || env.read("azure/roles/groups-only").expect("stored")["permanently_delete"].clone();
    assert_eq!(read_pd(), true);
    env.write("azure/roles/groups-only", &[s("ttl=5")]).ok();
    assert_eq!(
        read_pd(),
        true,
        "permanently_delete omitted on update keeps its value"
    );
    env.write("azure/roles/groups-only", &[s("permanently_delete=false")])
        .ok();
    assert_eq!(read_pd(), false);
    let existing = env.app_object_id("existing-app");
    env.write(
        "azure/roles/existing",
        &[
            format!("application_object_id={existing}"),
            s("azure_roles=[]"),
            s("azure_groups=[]"),
            s("ttl=300"),
            s("max_ttl=3000"),
            s("explicit_max_ttl=3000"),
            s("sign_in_audience=PersonalMicrosoftAccount"),
            s("tags=environment:production"),
            s("permanently_delete=false"),
            s("persist_app=false"),
        ],
    )
    .ok();
    let ex = env.read("azure/roles/existing").expect("existing");
    assert_eq!(ex["application_object_id"], existing.as_str());
    assert_eq!(ex["azure_roles"], json!([]));
    assert_eq!(ex["azure_groups"], json!([]));
    assert_eq!(ex["tags"], json!(["environment:production"]));
    assert_eq!(ex["sign_in_audience"], "PersonalMicrosoftAccount");

    // --- user errors: HTTP 400 naming the problem, nothing stored
    let bad = "azure/roles/bad";
    let dup_role = format!(
        "duplicate role_id and scope: '{}', '{sub_scope}'",
        env.role_id(READER)
    );
    let dup_group = format!("duplicate object_id '{group2}'");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "either azure_roles, azure_groups or application_object_id must be provided"),
        (vec![s("ttl=10")], "either azure_roles, azure_groups or application_object_id must be provided"),
        (vec![s("azure_roles=asdf")], "error parsing azure_roles 'asdf': "),
        (vec![s("azure_groups=asdf")], "error parsing azure_groups 'asdf': "),
        (vec![s("application_object_id=abc"), s("azure_roles=asdf")], "error parsing azure_roles"),
        (vec![inline_roles.clone(), s("ttl=101"), s("max_ttl=100")], "ttl cannot be greater than max_ttl"),
        (vec![inline_roles.clone(), s("ttl=10"), s("explicit_max_ttl=5")], "ttl cannot be greater than explicit_max_ttl"),
        (vec![inline_roles.clone(), s("max_ttl=10"), s("explicit_max_ttl=5")], "max_ttl cannot be greater than explicit_max_ttl"),
        (
            vec![inline_roles.clone(), s("sign_in_audience=azureadmyorg")],
            "Invalid value for sign_in_audience field. Valid values are: AzureADMyOrg, AzureADMultipleOrgs, AzureADandPersonalMicrosoftAccount, PersonalMicrosoftAccount",
        ),
        (vec![inline_roles.clone(), s("sign_in_audience=")], "Invalid value for sign_in_audience field"),
        (vec![inline_roles.clone(), s("tags=environment development")], "whitespaces are not allowed in tags"),
        (
            vec![inline_roles.clone(), format!("tags={}", "x".repeat(259))],
            "individual tag size must be between 1 and 256 characters (inclusive)",
        ),
        (
            vec![format!("application_object_id={existing}"), s("permanently_delete=true")],
            "permanently_delete must be false if application_object_id is provided",
        ),
        (
            vec![format!(r#"azure_roles=[{{"role_name":"No Such Role","scope":"{sub_scope}"}}]"#)],
            "no role found for role_name: 'No Such Role'",
        ),
        (
            vec![format!(
                r#"azure_roles=[{{"role_id":"{}","scope":"{sub_scope}"}}]"#,
                env.role_id("00000000-0000-0000-0000-000000000000")
            )],
            "no role found for role_id: ",
        ),
        (
            vec![format!(
                r#"azure_roles=[{{"role_name":"Reader","scope":"{sub_scope}"}},{{"role_id":"{}","scope":"{sub_scope}"}}]"#,
                env.role_id(READER)
            )],
            &dup_role,
        ),
        (
            vec![format!(r#"azure_roles=[{{"role_id":"not-a-role-id","scope":"{sub_scope}"}}]"#)],
            "no role found for role_id: 'not-a-role-id'",
        ),
        (
            vec![format!(r#"azure_roles=[{{"role_name":"Reader","scope":"{sub_scope}/resourceGroups/no-such-rg"}}]"#)],
            "unable to lookup Azure role by name at scope",
        ),
        (
            vec![s(r#"azure_groups=[{"object_id":"not-a-guid"}]"#)],
            "no group found for object_id: 'not-a-guid'",
        ),
        (vec![s(r#"azure_groups=[{"group_name":"no-such-group"}]"#)], "no group found for group_name: 'no-such-group'"),
        (
            vec![s(r#"azure_groups=[{"object_id":"11111111-2222-3333-4444-555555555555"}]"#)],
            "no group found for object_id: '11111111-2222-3333-4444-555555555555'",
        ),
        (
            vec![s(r#"azure_groups=[{"group_name":"vault-duplicate-group"}]"#)],
            "multiple matches found for group_name: 'vault-duplicate-group'. Specify group by ObjectID instead.",
        ),
        (
            vec![format!(r#"azure_groups=[{{"group_name":"vault-test-group-2"}},{{"display_name":"x","object_id":"{group2}"}}]"#)],
            &dup_group,
        ),
        (vec![s("application_object_id=00000000-0000-0000-0000-000000000000")], "error loading Application: "),
        (
            vec![format!("application_object_id={}", env.app_object_id("azure-emulator-root"))],
            "is the application this engine itself signs in with",
        ),
    ];
    for (args, message) in &cases {
        env.write_fails(bad, args, 400, message);
        assert_eq!(env.read(bad), None, "nothing stored after {args:?}");
    }
    // Type errors are the framework's.
    env.write_fails(bad, &[s("ttl=abc")], 400, "field \"ttl\"");
    env.write_fails(
        bad,
        &[s("permanently_delete=maybe")],
        400,
        "field \"permanently_delete\"",
    );

    // A failed update leaves the stored role as it was.
    let before = env.read("azure/roles/r1");
    env.write_fails(
        "azure/roles/r1",
        &[format!(
            r#"azure_roles=[{{"role_name":"Nope","scope":"{sub_scope}"}}]"#
        )],
        400,
        "no role found for role_name: 'Nope'",
    );
    env.write_fails(
        "azure/roles/r1",
        &[s("ttl=3h")],
        400,
        "ttl cannot be greater than max_ttl",
    );
    assert_eq!(env.read("azure/roles/r1"), before);

    // A JSON array (not a string holding one) is a type error of the field.
    let (code, body) = env.http_write(bad, &json!({"azure_roles": [{"role_name": "Reader"}]}));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("Field validation failed") && body.contains("azure_roles"),
        "{body}"
    );
    assert_eq!(env.read(bad), None);

    // --- listing and deleting
    assert_eq!(
        env.list(),
        Some(vec![
            s("existing"),
            s("groups-only"),
            s("myrole.v2"),
            s("r1")
        ])
    );
    env.bao.cli(&["delete", "azure/roles/groups-only"]).ok();
    env.bao.cli(&["delete", "azure/roles/not_a_role"]).ok();
    assert_eq!(env.read("azure/roles/groups-only"), None);
    assert!(env.read("azure/roles/r1").is_some());
    let slash = env
        .bao
        .cli(&["list", "-format=json", "azure/roles/"])
        .ok()
        .json();
    assert_eq!(slash, json!(["existing", "myrole.v2", "r1"]));

    // Dynamic and existing-app roles make nothing in Azure.
    assert!(env.emu.vault_apps().is_empty());

    // Without a config, read and write are internal errors; listing still works.
    env.bao.cli(&["delete", "azure/config"]).ok();
    let out = env.bao.read("azure/roles/r1");
    assert!(
        out.stderr.contains("Code: 500") && out.stderr.contains("config is nil"),
        "{out:?}"
    );
    env.write_fails("azure/roles/r9", &[inline_roles], 500, "config is nil");
    assert_eq!(env.list().map(|k| k.len()), Some(3));
}

#[test]
fn persisted_app_lifecycle() {
    let env = Env::start();
    let rg_scope = env.rg_scope();
    let sub_scope = env.sub_scope();
    let g1 = env.group_id("vault-test-group-1");
    let g2 = env.group_id("vault-test-group-2");

    // First write: application, service principal, role assignments and memberships.
    env.write(
        "azure/roles/p1",
        &[
            s("persist_app=true"),
            format!(r#"azure_roles=[{{"role_name":"Reader","scope":"{rg_scope}"}},{{"role_name":"Contributor","scope":"{rg_scope}"}}]"#),
            s(r#"azure_groups=[{"group_name":"vault-test-group-1"}]"#),
            s("sign_in_audience=AzureADMyOrg"),
            s("tags=team:eng"),
            s("permanently_delete=true"),
        ],
    )
    .ok();
    let p1 = env.read("azure/roles/p1").expect("p1");
    assert_eq!(p1["persist_app"], true);
    let app_obj = p1["application_object_id"]
        .as_str()
        .expect("object id")
        .to_string();
    assert!(!app_obj.is_empty());
    let apps = env.emu.vault_apps();
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(apps[0]["id"], app_obj.as_str());
    assert!(apps[0]["displayName"]
        .as_str()
        .unwrap_or_default()
        .starts_with("vault-p1-"));
    assert_eq!(apps[0]["signInAudience"], "AzureADMyOrg");
    // The role's tags, then the mount's tag (for the reconciler).
    assert_eq!(apps[0]["tags"][0], "team:eng");
    assert!(
        apps[0]["tags"][1]
            .as_str()
            .is_some_and(|t| t.starts_with("vault-plugin-secrets-azure:mount:")),
        "{apps:?}"
    );
    let app_id = apps[0]["appId"].as_str().expect("appId").to_string();
    let state = env.emu.state();
    let sp = state["servicePrincipals"]
        .as_array()
        .expect("sps")
        .iter()
        .find(|p| p["appId"] == app_id.as_str())
        .and_then(|p| p["id"].as_str())
        .expect("service principal")
        .to_string();
    assert_eq!(
        assignments_of(&state, &sp),
        vec![
            (s(READER), rg_scope.clone()),
            (s(CONTRIBUTOR), rg_scope.clone())
        ]
    );
    assert_eq!(members(&state, "vault-test-group-1"), vec![sp.clone()]);

    // The role's application stays the engine's own.
    let existing = env.app_object_id("existing-app");
    env.write_fails(
        "azure/roles/p1",
        &[format!("application_object_id={existing}")],
        400,
        "application_object_id cannot be given together with persist_app=true",
    );
    env.write_fails(
        "azure/roles/p1",
        &[s("persist_app=false")],
        400,
        "persist_app cannot be turned off on a role that has a persisted application",
    );
    assert_eq!(env.read("azure/roles/p1"), Some(p1.clone()));

    // Later write: same application; assignments and memberships replaced.
    env.write(
        "azure/roles/p1",
        &[
            format!(r#"azure_roles=[{{"role_name":"Reader","scope":"{sub_scope}"}}]"#),
            format!(r#"azure_groups=[{{"object_id":"{g2}"}}]"#),
            s("ttl=300"),
        ],
    )
    .ok();
    let p1b = env.read("azure/roles/p1").expect("p1");
    assert_eq!(p1b["application_object_id"], app_obj.as_str());
    assert_eq!(p1b["permanently_delete"], true, "kept on update");
    assert_eq!(p1b["ttl"], 300);
    assert_eq!(env.emu.vault_apps().len(), 1);
    let state = env.emu.state();
    assert_eq!(
        assignments_of(&state, &sp),
        vec![(s(READER), sub_scope.clone())]
    );
    assert!(members(&state, "vault-test-group-1").is_empty());
    assert_eq!(members(&state, "vault-test-group-2"), vec![sp.clone()]);
    // A failed re-application undoes its half and stores nothing.
    env.emu.add_fault(
        json!({"method": "PUT", "path_contains": "roleAssignments", "status": 403, "times": 1}),
    );
    env.write_fails(
        "azure/roles/p1",
        &[format!(
            r#"azure_roles=[{{"role_name":"Reader","scope":"{rg_scope}"}},{{"role_name":"Contributor","scope":"{rg_scope}"}}]"#
        )],
        500,
        "could not create persisted app",
    );
    env.emu.clear_faults();
    assert_eq!(env.read("azure/roles/p1"), Some(p1b.clone()));
    let state = env.emu.state();
    assert!(
        assignments_of(&state, &sp).is_empty(),
        "{:?}",
        assignments_of(&state, &sp)
    );
    assert!(members(&state, "vault-test-group-2").is_empty());

    // A ttl-only write re-applies the same assignments.
    env.write("azure/roles/p1", &[s("ttl=600")]).ok();
    let state = env.emu.state();
    assert_eq!(
        assignments_of(&state, &sp),
        vec![(s(READER), sub_scope.clone())]
    );
    assert_eq!(members(&state, "vault-test-group-2"), vec![sp.clone()]);

    // Delete fails while the application cannot be deleted; the role stays.
    env.emu.add_fault(json!({"method": "DELETE", "path_contains": "/v1.0/applications/", "status": 403, "times": 1}));
    let out = env.bao.cli(&["delete", "azure/roles/p1"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("error deleting persisted app"),
        "{out:?}"
    );
    assert!(env.read("azure/roles/p1").is_some());
    env.emu.clear_faults();

    // Delete: assignments, memberships and the application are gone, and purged.
    env.bao.cli(&["delete", "azure/roles/p1"]).ok();
    assert_eq!(env.read("azure/roles/p1"), None);
    let state = env.emu.state();
    assert!(env.emu.vault_apps().is_empty());
    assert!(assignments_of(&state, &sp).is_empty());
    assert!(members(&state, "vault-test-group-2").is_empty());
    assert!(
        !state["deletedItems"].to_string().contains(&app_obj),
        "permanently deleted: {}",
        state["deletedItems"]
    );

    // Without permanently_delete the application goes to deleted items; a failed removal
    // of an assignment is a warning, not an error.
    env.write(
        "azure/roles/p2",
        &[
            s("persist_app=true"),
            format!(r#"azure_roles=[{{"role_name":"Reader","scope":"{rg_scope}"}}]"#),
        ],
    )
    .ok();
    let p2_app = env.read("azure/roles/p2").expect("p2")["application_object_id"]
        .as_str()
        .expect("id")
        .to_string();
    env.emu.add_fault(
        json!({"method": "DELETE", "path_contains": "roleAssignments", "status": 403, "times": 1}),
    );
    let out = env.bao.cli(&["delete", "azure/roles/p2"]).ok();
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("error removing role assignment"),
        "{out:?}"
    );
    env.emu.clear_faults();
    assert_eq!(env.read("azure/roles/p2"), None);
    assert!(env.emu.state()["deletedItems"]
        .to_string()
        .contains(&p2_app));

    // A failure while provisioning undoes everything: no application is left behind.
    env.emu.add_fault(
        json!({"method": "PUT", "path_contains": "roleAssignments", "status": 500, "times": 50}),
    );
    env.write_fails(
        "azure/roles/p3",
        &[
            s("persist_app=true"),
            format!(r#"azure_roles=[{{"role_name":"Reader","scope":"{rg_scope}"}}]"#),
            format!(r#"azure_groups=[{{"object_id":"{g1}"}}]"#),
        ],
        500,
        "could not create persisted app",
    );
    env.emu.clear_faults();
    assert_eq!(env.read("azure/roles/p3"), None);
    assert!(
        env.emu.vault_apps().is_empty(),
        "{:?}",
        env.emu.vault_apps()
    );
    assert!(members(&env.emu.state(), "vault-test-group-1").is_empty());
}
