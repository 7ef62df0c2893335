//! The emulator reports the permissions it enforces (ARM's permissions API, the `roles`
//! claim of Graph tokens) and enforces Azure's limits (directory quota, role assignments
//! per subscription, credentials per object) with admin knobs to lower them.

mod emulator_support;

use base64::Engine as _;
use emulator_support::Emu;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}

/// An emulator seeded with identities of limited rights; returns it and, per name, the
/// client id (every one's secret is `<name>-secret`).
async fn seeded() -> (Emu, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    let rg = "/subscriptions/{subscriptionId}/resourceGroups/vault-rg";
    std::fs::write(
        &seed,
        json!({
            "applications": [
                {"displayName": "nothing", "passwords": [{"secretText": "nothing-secret"}]},
                {"displayName": "contrib", "passwords": [{"secretText": "contrib-secret"}],
                 "graphRoles": ["Application.ReadWrite.All"],
                 "roleAssignments": [{"role": "Contributor", "scope": rg}]},
                {"displayName": "uaa", "passwords": [{"secretText": "uaa-secret"}],
                 "graphRoles": ["GroupMember.ReadWrite.All"],
                 "roleAssignments": [{"role": "User Access Administrator", "scope": rg},
                                     {"role": "Reader", "scope": "/subscriptions/{subscriptionId}"}]},
                {"displayName": "owned-by", "passwords": [{"secretText": "owned-by-secret"}],
                 "graphRoles": ["Application.ReadWrite.OwnedBy"]}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let emu = Emu::start(&["--seed", seed.to_str().unwrap()]);
    (emu, dir)
}

async fn client_id(emu: &Emu, name: &str) -> (String, String) {
    let state = emu.admin(Method::GET, "/state", None).await;
    let app = state.body["applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["displayName"] == name)
        .unwrap()
        .clone();
    let app_id = app["appId"].as_str().unwrap().to_string();
    let sp = state.body["servicePrincipals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["appId"] == app_id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    (app_id, sp)
}

fn permissions_path(scope: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/permissions")
}

#[tokio::test]
async fn permissions_api_and_token_roles_match_enforcement() {
    let (emu, _dir) = seeded().await;
    let rg = format!("{}/resourceGroups/vault-rg", emu.sub_scope());
    let root_arm = emu.root_arm().await;

    // The root (Owner on the subscription): one entry, Owner's actions, at any scope below.
    let r = emu
        .arm(Method::GET, &permissions_path(&rg), &root_arm, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let entries = r.body["value"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["actions"], json!(["*"]));
    assert!(entries[0]["notActions"].is_array());
    assert!(entries[0]["dataActions"].is_array());
    assert!(entries[0]["notDataActions"].is_array());

    // Nothing assigned: an empty list at any scope, and no roles in the Graph token.
    let (nothing, _) = client_id(&emu, "nothing").await;
    let arm = emu
        .token_for(&nothing, "nothing-secret", &emu.arm_scope())
        .await;
    let r = emu
        .arm(Method::GET, &permissions_path(&emu.sub_scope()), &arm, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["value"], json!([]));
    let graph = emu
        .token_for(&nothing, "nothing-secret", &emu.graph_scope())
        .await;
    assert!(claims(&graph)["roles"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &graph,
            Some(json!({"displayName": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "Authorization_RequestDenied");

    // Contributor on vault-rg: its notActions hold roleAssignments/write, and ARM refuses it.
    let (contrib, contrib_sp) = client_id(&emu, "contrib").await;
    let arm = emu
        .token_for(&contrib, "contrib-secret", &emu.arm_scope())
        .await;
    let r = emu
        .arm(Method::GET, &permissions_path(&rg), &arm, None)
        .await;
    let entries = r.body["value"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{}", r.text);
    assert!(entries[0]["notActions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "Microsoft.Authorization/*/Write"));
    // Not above its scope.
    let r = emu
        .arm(Method::GET, &permissions_path(&emu.sub_scope()), &arm, None)
        .await;
    assert_eq!(r.body["value"], json!([]));
    let reader = format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
        emu.sub_scope()
    );
    let put = |scope: String, token: String, principal: String| {
        let reader = reader.clone();
        let emu = &emu;
        async move {
            emu.arm(
                Method::PUT,
                &format!(
                    "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                    uuid::Uuid::new_v4()
                ),
                &token,
                Some(json!({"properties": {"roleDefinitionId": reader, "principalId": principal}})),
            )
            .await
        }
    };
    let r = put(rg.clone(), arm.clone(), contrib_sp.clone()).await;
    assert_eq!(r.code(), "AuthorizationFailed");
    let graph = emu
        .token_for(&contrib, "contrib-secret", &emu.graph_scope())
        .await;
    assert_eq!(
        claims(&graph)["roles"],
        json!(["Application.ReadWrite.All"])
    );
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &graph,
            Some(json!({"displayName": "made-by-contrib"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let groups = emu
        .graph(Method::GET, "/groups", &emu.root_graph().await, None)
        .await;
    let group = groups.body["value"][0]["id"].as_str().unwrap().to_string();
    let member = json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{contrib_sp}")});
    let r = emu
        .graph(
            Method::POST,
            &format!("/groups/{group}/members/$ref"),
            &graph,
            Some(member.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // User Access Administrator on vault-rg plus Reader on the subscription: two entries
    // at the resource group, one at the subscription; it may assign at vault-rg only.
    let (uaa, uaa_sp) = client_id(&emu, "uaa").await;
    let arm = emu.token_for(&uaa, "uaa-secret", &emu.arm_scope()).await;
    let r = emu
        .arm(Method::GET, &permissions_path(&rg), &arm, None)
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 2, "{}", r.text);
    let r = emu
        .arm(Method::GET, &permissions_path(&emu.sub_scope()), &arm, None)
        .await;
    assert_eq!(
        r.body["value"],
        json!([{"actions": ["*/read"], "notActions": [], "dataActions": [], "notDataActions": []}])
    );
    assert_eq!(
        put(rg.clone(), arm.clone(), uaa_sp.clone()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        put(emu.sub_scope(), arm.clone(), uaa_sp.clone())
            .await
            .code(),
        "AuthorizationFailed"
    );
    let graph = emu.token_for(&uaa, "uaa-secret", &emu.graph_scope()).await;
    assert_eq!(
        claims(&graph)["roles"],
        json!(["GroupMember.ReadWrite.All"])
    );
    let r = emu
        .graph(
            Method::POST,
            &format!("/groups/{group}/members/$ref"),
            &graph,
            Some(member),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &graph,
            Some(json!({"displayName": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The admin API changes a principal's Graph permissions for tokens issued afterwards.
    let r = emu
        .admin(
            Method::PUT,
            &format!("/service-principals/{uaa_sp}/graph-roles"),
            Some(json!({"roles": ["Application.ReadWrite.All"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let fresh = emu.token_for(&uaa, "uaa-secret", &emu.graph_scope()).await;
    assert_eq!(
        claims(&fresh)["roles"],
        json!(["Application.ReadWrite.All"])
    );
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &fresh,
            Some(json!({"displayName": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = emu
        .admin(
            Method::PUT,
            "/service-principals/00000000-0000-0000-0000-000000000000/graph-roles",
            Some(json!({"roles": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = emu
        .admin(
            Method::PUT,
            &format!("/service-principals/{uaa_sp}/graph-roles"),
            Some(json!({"roles": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // An unknown resource group is 404; a wrong method is 405.
    let r = emu
        .arm(
            Method::GET,
            &permissions_path(&format!("{}/resourceGroups/nope", emu.sub_scope())),
            &root_arm,
            None,
        )
        .await;
    assert_eq!(r.code(), "ResourceGroupNotFound");
    let r = emu
        .arm(
            Method::PUT,
            &permissions_path(&rg),
            &root_arm,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn directory_quota_role_assignment_and_credential_limits() {
    let emu = Emu::start(&[]);
    let graph = emu.root_graph().await;
    let tenant = emu.var("AZURE_TENANT_ID").to_string();
    let beta = format!(
        "{}/beta/organization/{tenant}?$select=directorySizeQuota",
        emu.var("AZURE_GRAPH_ENDPOINT")
    );

    // The quota is reported (beta only) and counts applications, service principals,
    // groups and deleted items.
    let r = emu.send(Method::GET, &beta, Some(&graph), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let used = r.body["directorySizeQuota"]["used"].as_u64().unwrap();
    assert_eq!(r.body["directorySizeQuota"]["total"], 50_000);
    // root app + SP, machine + uami SPs, four groups.
    assert_eq!(used, 8);
    let v1 = emu.graph(Method::GET, "/organization", &graph, None).await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body["value"][0]["id"], tenant.as_str());
    assert!(v1.body["value"][0].get("directorySizeQuota").is_none());
    let other_beta = format!("{}/beta/applications", emu.var("AZURE_GRAPH_ENDPOINT"));
    assert_eq!(
        emu.send(Method::GET, &other_beta, Some(&graph), None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let (app_object, _, sp, _) = emu.new_principal(&graph, "quota-app").await;
    let r = emu.send(Method::GET, &beta, Some(&graph), None).await;
    assert_eq!(r.body["directorySizeQuota"]["used"], used + 2);
    let r = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"directory_quota": used + 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &graph,
            Some(json!({"displayName": "one-too-many"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "Directory_QuotaExceeded");
    let r = emu
        .graph(
            Method::POST,
            "/groups",
            &graph,
            Some(json!({"displayName": "g", "mailEnabled": false, "mailNickname": "g", "securityEnabled": true})),
        )
        .await;
    assert_eq!(r.code(), "Directory_QuotaExceeded");
    // Deleting keeps the place (deleted items); a permanent delete frees it.
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/applications/{app_object}"),
            &graph,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu.send(Method::GET, &beta, Some(&graph), None).await;
    assert_eq!(r.body["directorySizeQuota"]["used"], used + 2);
    for id in [&app_object, &sp] {
        let r = emu
            .graph(
                Method::DELETE,
                &format!("/directory/deletedItems/{id}"),
                &graph,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &graph,
            Some(json!({"displayName": "fits-again", "signInAudience": "AzureADMyOrg"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let fits = r.body["id"].as_str().unwrap().to_string();

    // Credentials per object.
    emu.admin(
        Method::POST,
        "/settings",
        Some(json!({"object_credential_limit": 2})),
    )
    .await;
    for expected in [StatusCode::OK, StatusCode::OK, StatusCode::BAD_REQUEST] {
        let r = emu
            .graph(
                Method::POST,
                &format!("/applications/{fits}/addPassword"),
                &graph,
                Some(json!({})),
            )
            .await;
        assert_eq!(r.status, expected, "{}", r.text);
        if expected == StatusCode::BAD_REQUEST {
            assert_eq!(r.code(), "Directory_ResourceSizeExceeded");
        }
    }

    // Role assignments per subscription (two seeded Owner assignments).
    emu.admin(
        Method::POST,
        "/settings",
        Some(json!({"role_assignment_limit": 2, "directory_quota": 50_000})),
    )
    .await;
    let (_, _, sp2, _) = emu.new_principal(&graph, "ra-app").await;
    let reader = format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
        emu.sub_scope()
    );
    let r = emu
        .arm(
            Method::PUT,
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments/{}",
                emu.sub_scope(),
                uuid::Uuid::new_v4()
            ),
            &emu.root_arm().await,
            Some(json!({"properties": {"roleDefinitionId": reader, "principalId": sp2, "principalType": "ServicePrincipal"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "RoleAssignmentLimitExceeded");

    // Reading the organization needs Organization.Read.All or a Directory permission.
    let (_, client, _, secret) = emu.new_principal(&graph, "no-org").await;
    let token = emu.token_for(&client, &secret, &emu.graph_scope()).await;
    assert_eq!(
        emu.send(Method::GET, &beta, Some(&token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn owned_by_manages_only_what_it_owns() {
    let (emu, _dir) = seeded().await;
    let (client, sp) = client_id(&emu, "owned-by").await;
    let graph = emu
        .token_for(&client, "owned-by-secret", &emu.graph_scope())
        .await;
    assert_eq!(
        claims(&graph)["roles"],
        json!(["Application.ReadWrite.OwnedBy"])
    );
    // It creates an application and its service principal, and owns both.
    let app = emu
        .graph(
            Method::POST,
            "/applications",
            &graph,
            Some(json!({"displayName": "owned", "signInAudience": "AzureADMyOrg"})),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.text);
    let id = app.body["id"].as_str().unwrap().to_string();
    let app_id = app.body["appId"].as_str().unwrap().to_string();
    let owners = emu
        .graph(
            Method::GET,
            &format!("/applications/{id}/owners"),
            &graph,
            None,
        )
        .await;
    assert_eq!(owners.status, StatusCode::OK, "{}", owners.text);
    assert_eq!(owners.body["value"][0]["id"], sp.as_str());
    let new_sp = emu
        .graph(
            Method::POST,
            "/servicePrincipals",
            &graph,
            Some(json!({ "appId": app_id })),
        )
        .await;
    assert_eq!(new_sp.status, StatusCode::CREATED, "{}", new_sp.text);
    let new_sp = new_sp.body["id"].as_str().unwrap().to_string();
    for path in [
        format!("/applications/{id}/addPassword"),
        format!("/servicePrincipals/{new_sp}/addPassword"),
    ] {
        let r = emu
            .graph(Method::POST, &path, &graph, Some(json!({})))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    assert_eq!(
        emu.graph(Method::GET, &format!("/applications/{id}"), &graph, None)
            .await
            .status,
        StatusCode::OK
    );

    // Someone else's application: refused, as is listing the tenant's applications.
    let root = emu.root_graph().await;
    let (other, other_client, _, _) = emu.new_principal(&root, "not-owned").await;
    for (method, path, body) in [
        (Method::GET, format!("/applications/{other}"), None),
        (
            Method::POST,
            format!("/applications/{other}/addPassword"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/applications/{other}"), None),
        (Method::GET, "/applications".to_string(), None),
        (
            Method::POST,
            "/servicePrincipals".to_string(),
            Some(json!({"appId": other_client})),
        ),
    ] {
        let r = emu.graph(method.clone(), &path, &graph, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.code(), "Authorization_RequestDenied");
    }
    // Root sees no owner on its own creations.
    let owners = emu
        .graph(
            Method::GET,
            &format!("/applications/{other}/owners"),
            &root,
            None,
        )
        .await;
    assert_eq!(owners.body["value"], json!([]));

    assert_eq!(
        emu.graph(Method::DELETE, &format!("/applications/{id}"), &graph, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}
