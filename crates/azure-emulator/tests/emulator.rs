//! Black-box tests of the `azure-emulator` binary over HTTP(S).

mod emulator_support;

use std::time::{Duration, Instant};

use emulator_support::{eventually, form, Emu};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn assert_aad_error(r: &emulator_support::Resp, status: u16, error: &str, code: u64) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.body["error"], error, "{}", r.text);
    assert_eq!(r.body["error_codes"], json!([code]), "{}", r.text);
    let desc = r.body["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(desc.contains("\r\nTrace ID: ") && desc.contains("\r\nCorrelation ID: "));
    for k in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(r.body[k].is_string(), "missing {k}: {}", r.text);
    }
}

#[tokio::test]
async fn startup_contract_and_clean_shutdown() {
    let mut emu = Emu::start(&[]);
    let keys: Vec<&str> = emu
        .lines
        .iter()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "AZURE_TENANT_ID",
            "AZURE_SUBSCRIPTION_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_AUTHORITY_HOST",
            "AZURE_GRAPH_ENDPOINT",
            "AZURE_RESOURCE_MANAGER_ENDPOINT",
            "IDENTITY_ENDPOINT",
            "IMDS_ENDPOINT",
            "EMULATOR_ADMIN",
            "SSL_CERT_FILE",
            "IMDS_VM_ENDPOINT",
            "READY"
        ]
    );
    assert!(emu
        .var("AZURE_AUTHORITY_HOST")
        .starts_with("https://127.0.0.1:"));
    assert!(emu.var("AZURE_AUTHORITY_HOST").ends_with('/'));
    assert!(emu
        .var("AZURE_GRAPH_ENDPOINT")
        .starts_with("https://127.0.0.1:"));
    assert!(emu
        .var("AZURE_RESOURCE_MANAGER_ENDPOINT")
        .starts_with("https://127.0.0.1:"));
    assert_ne!(
        emu.var("AZURE_GRAPH_ENDPOINT"),
        emu.var("AZURE_RESOURCE_MANAGER_ENDPOINT")
    );
    assert!(emu
        .var("IDENTITY_ENDPOINT")
        .ends_with("/metadata/identity/oauth2/token"));
    assert!(emu
        .var("IDENTITY_ENDPOINT")
        .starts_with(emu.var("IMDS_ENDPOINT")));
    for k in [
        "AZURE_TENANT_ID",
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_CLIENT_ID",
    ] {
        assert!(uuid::Uuid::parse_str(emu.var(k)).is_ok(), "{k}");
    }
    let cert = std::path::PathBuf::from(emu.var("SSL_CERT_FILE"));
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(emu.token_dir.is_dir(), "the Arc token dir is created");

    // A challenge leaves a key file; shutdown removes it and the temp cert.
    let r = emu
        .http
        .get(format!(
            "{}?api-version=2021-02-01&resource=https://management.azure.com/",
            emu.var("IDENTITY_ENDPOINT")
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(std::fs::read_dir(&emu.token_dir).unwrap().count(), 1);

    let status = emu.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(!cert.exists(), "temp CA file removed");
    assert_eq!(std::fs::read_dir(&emu.token_dir).unwrap().count(), 0);
}

#[tokio::test]
async fn token_endpoint_success_and_errors() {
    let emu = Emu::start(&[]);
    let tenant = emu.var("AZURE_TENANT_ID").to_string();
    let id = emu.var("AZURE_CLIENT_ID").to_string();
    let secret = emu.var("AZURE_CLIENT_SECRET").to_string();

    let ok = emu.token(&id, &secret, &emu.graph_scope()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert!(ok.body["expires_in"].is_u64());
    assert!(ok.body["ext_expires_in"].is_u64());
    assert!(ok.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let token = ok.body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);

    // The well-known scopes map onto the emulator's services.
    let r = emu
        .token(&id, &secret, "https://graph.microsoft.com/.default")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = emu
        .token(
            &id,
            &secret,
            "https://management.core.windows.net//.default",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Secret in HTTP Basic.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{id}:{}",
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
    ));
    let r = emulator_support::to_resp(
        emu.http
            .post(emu.token_url(&tenant))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Basic {basic}"))
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("scope", &emu.arm_scope()),
            ]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = emu.token(&id, "wrong-secret", &emu.graph_scope()).await;
    assert_aad_error(&r, 401, "invalid_client", 7000215);

    let r = emu
        .token(
            &uuid::Uuid::new_v4().to_string(),
            &secret,
            &emu.graph_scope(),
        )
        .await;
    assert_aad_error(&r, 400, "unauthorized_client", 700016);

    let other = uuid::Uuid::new_v4().to_string();
    let r = emu
        .post_form(
            &emu.token_url(&other),
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", &emu.graph_scope()),
            ]),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_tenant", 90002);

    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ]),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_request", 900144);

    let r = emu
        .token(&id, &secret, "https://graph.microsoft.com/User.Read")
        .await;
    assert_aad_error(&r, 400, "invalid_scope", 70011);

    let r = emu
        .token(&id, &secret, "https://vault.azure.net/.default")
        .await;
    assert_aad_error(&r, 400, "invalid_resource", 500011);

    // JSON bodies are not accepted.
    let r = emu
        .send(
            Method::POST,
            &emu.token_url(&tenant),
            None,
            Some(&json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret})),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_request", 900144);

    // OpenID metadata for SDK-based tools.
    let r = emu
        .send(
            Method::GET,
            &format!(
                "{}{tenant}/v2.0/.well-known/openid-configuration",
                emu.var("AZURE_AUTHORITY_HOST")
            ),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["token_endpoint"].as_str().unwrap(),
        emu.token_url(&tenant)
    );
}

#[tokio::test]
async fn graph_applications_passwords_and_deleted_items() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;

    let app = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"displayName": "vault-test-app"})),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.text);
    assert_eq!(
        app.body["signInAudience"],
        "AzureADandPersonalMicrosoftAccount"
    );
    assert_eq!(app.body["passwordCredentials"], json!([]));
    let id = app.body["id"].as_str().unwrap().to_string();
    let app_id = app.body["appId"].as_str().unwrap().to_string();
    assert_ne!(id, app_id);

    let r = emu
        .graph(Method::GET, &format!("/applications/{id}"), &g, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["appId"], app_id.as_str());
    let r = emu
        .graph(
            Method::GET,
            &format!("/applications(appId='{app_id}')"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["id"], id.as_str());
    let r = emu
        .graph(
            Method::GET,
            &format!("/applications?$filter=appId%20eq%20'{app_id}'"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    let r = emu
        .graph(
            Method::GET,
            "/applications?$filter=startswith(displayName,'vault-test')",
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1, "{}", r.text);
    let r = emu
        .graph(
            Method::GET,
            "/applications?$filter=displayName%20eq%20'nothing'",
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["value"], json!([]));
    let r = emu
        .graph(
            Method::GET,
            "/applications?$filter=endswith(displayName,'app')",
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "Request_UnsupportedQuery");

    // Passwords: without a service principal the app cannot sign in.
    let sp = emu
        .graph(
            Method::POST,
            "/servicePrincipals",
            &g,
            Some(json!({"appId": app_id})),
        )
        .await;
    assert_eq!(sp.status, StatusCode::CREATED, "{}", sp.text);
    let sp_id = sp.body["id"].as_str().unwrap().to_string();
    assert_ne!(sp_id, id);
    let dup = emu
        .graph(
            Method::POST,
            "/servicePrincipals",
            &g,
            Some(json!({"appId": app_id})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.code(), "Request_MultipleObjectsWithSameKeyValue");

    let end = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let pw = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/addPassword"),
            &g,
            Some(json!({"passwordCredential": {"displayName": "vault-x", "endDateTime": end}})),
        )
        .await;
    assert_eq!(pw.status, StatusCode::OK, "{}", pw.text);
    let secret = pw.body["secretText"].as_str().unwrap().to_string();
    let key_id = pw.body["keyId"].as_str().unwrap().to_string();
    assert_eq!(pw.body["hint"].as_str().unwrap(), &secret[..3]);
    assert_eq!(pw.body["displayName"], "vault-x");
    let r = emu.token(&app_id, &secret, &emu.graph_scope()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A password on the service principal is also a secret of the application.
    let sp_pw = emu
        .graph(
            Method::POST,
            &format!("/servicePrincipals/{sp_id}/addPassword"),
            &g,
            Some(json!({})),
        )
        .await;
    assert_eq!(sp_pw.status, StatusCode::OK, "{}", sp_pw.text);
    let sp_secret = sp_pw.body["secretText"].as_str().unwrap().to_string();
    assert_eq!(
        emu.token(&app_id, &sp_secret, &emu.arm_scope())
            .await
            .status,
        StatusCode::OK
    );

    // Reads never show secret texts.
    let r = emu
        .graph(Method::GET, &format!("/applications/{id}"), &g, None)
        .await;
    assert_eq!(r.body["passwordCredentials"][0]["secretText"], Value::Null);
    assert_eq!(r.body["passwordCredentials"][0]["keyId"], key_id.as_str());
    let state = emu.admin(Method::GET, "/state", None).await;
    assert!(!state.text.contains(&secret) && !state.text.contains(&sp_secret));
    assert!(!state.text.contains(emu.var("AZURE_CLIENT_SECRET")));

    // The default audience allows two secrets on the application.
    let second = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/addPassword"),
            &g,
            None,
        )
        .await;
    assert_eq!(second.status, StatusCode::OK);
    let third = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/addPassword"),
            &g,
            None,
        )
        .await;
    assert_eq!(third.status, StatusCode::BAD_REQUEST);
    assert_eq!(third.code(), "TooManyAppPasswords");
    assert_eq!(
        third.body["error"]["details"][0]["code"],
        "TooManyAppPasswords"
    );
    let s = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"msa_app_password_limit": 0})),
        )
        .await;
    assert_eq!(s.body["msa_app_password_limit"], 0);
    let third = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/addPassword"),
            &g,
            None,
        )
        .await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text);

    // removePassword: 204, the secret stops working, a second removal is an error.
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/removePassword"),
            &g,
            Some(json!({"keyId": key_id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu.token(&app_id, &secret, &emu.graph_scope()).await;
    assert_aad_error(&r, 401, "invalid_client", 7000215);
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/removePassword"),
            &g,
            Some(json!({"keyId": key_id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("No password credential found with keyId"));

    // An expired password gets AADSTS7000222.
    let past = emu
        .graph(
            Method::POST,
            &format!("/servicePrincipals/{sp_id}/addPassword"),
            &g,
            Some(json!({"passwordCredential": {
                "startDateTime": (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339(),
                "endDateTime": (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339()}})),
        )
        .await;
    assert_eq!(past.status, StatusCode::OK, "{}", past.text);
    let r = emu
        .token(
            &app_id,
            past.body["secretText"].as_str().unwrap(),
            &emu.graph_scope(),
        )
        .await;
    assert_aad_error(&r, 401, "invalid_client", 7000222);

    // Deleting the application removes its service principal; both go to deleted items.
    let r = emu
        .graph(Method::DELETE, &format!("/applications/{id}"), &g, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu
        .graph(Method::GET, &format!("/applications/{id}"), &g, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "Request_ResourceNotFound");
    assert!(r.body["error"]["innerError"]["request-id"].is_string());
    assert!(r.headers.contains_key("request-id"));
    let r = emu
        .graph(
            Method::GET,
            &format!("/servicePrincipals/{sp_id}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = emu.token(&app_id, &sp_secret, &emu.graph_scope()).await;
    assert_aad_error(&r, 400, "unauthorized_client", 700016);
    let r = emu
        .graph(
            Method::GET,
            &format!("/directory/deletedItems/{id}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["@odata.type"], "#microsoft.graph.application");
    assert!(r.body["deletedDateTime"].is_string());
    let r = emu
        .graph(
            Method::GET,
            "/directory/deletedItems/microsoft.graph.servicePrincipal",
            &g,
            None,
        )
        .await;
    assert!(r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["id"] == sp_id.as_str()));
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/directory/deletedItems/{id}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/directory/deletedItems/{id}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/directory/deletedItems/{sp_id}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // Bad input gets the Graph error shape.
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"tags": ["a b"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "Request_BadRequest");
    let r = emulator_support::to_resp(
        emu.http
            .post(emu.graph_url("/applications"))
            .bearer_auth(&g)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error"]["message"].is_string());
    let r = emu
        .graph(
            Method::POST,
            "/servicePrincipals",
            &g,
            Some(json!({"appId": uuid::Uuid::new_v4()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["error"]["details"][0]["code"],
        "NoBackingApplicationObject"
    );
}

#[tokio::test]
async fn audience_expiry_and_permissions() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let a = emu.root_arm().await;
    let sub = emu.sub_scope();

    let r = emu.graph(Method::GET, "/groups", &a, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    let r = emu
        .arm(
            Method::GET,
            &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    assert!(r.headers.contains_key("www-authenticate"));
    let r = emu
        .send(Method::GET, &emu.graph_url("/groups"), None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    let r = emu.send(Method::GET, &emu.arm_url(&sub), None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "AuthenticationFailed");
    let r = emu.graph(Method::GET, "/groups", "not.a.token", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A token signed by another emulator is refused.
    let mut tampered = g.clone();
    tampered.pop();
    tampered.push(if g.ends_with('A') { 'B' } else { 'A' });
    let r = emu.graph(Method::GET, "/groups", &tampered, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A fresh service principal can get tokens but has no Graph rights and no ARM rights.
    let (_, client_id, sp_id, secret) = emu.new_principal(&g, "vault-fresh").await;
    let fg = emu.token_for(&client_id, &secret, &emu.graph_scope()).await;
    let r = emu.graph(Method::GET, "/applications", &fg, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "Authorization_RequestDenied");
    let fa = emu.token_for(&client_id, &secret, &emu.arm_scope()).await;
    let body = json!({"properties": {
        "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"),
        "principalId": sp_id, "principalType": "ServicePrincipal"}});
    let path = format!(
        "{sub}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let r = emu.arm(Method::PUT, &path, &fa, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "AuthorizationFailed");

    // Granted User Access Administrator on the subscription, it may assign roles.
    let uaa = json!({"properties": {
        "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"),
        "principalId": sp_id}});
    let r = emu
        .arm(
            Method::PUT,
            &format!(
                "{sub}/providers/Microsoft.Authorization/roleAssignments/{}",
                uuid::Uuid::new_v4()
            ),
            &a,
            Some(uaa),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = emu.arm(Method::PUT, &path, &fa, Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // Expired tokens.
    let s = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"token_lifetime_secs": 1})),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK);
    let short = emu
        .token(
            emu.var("AZURE_CLIENT_ID"),
            emu.var("AZURE_CLIENT_SECRET"),
            &emu.arm_scope(),
        )
        .await;
    assert_eq!(short.body["expires_in"], 1);
    let short_arm = short.body["access_token"].as_str().unwrap().to_string();
    let short_graph = emu.root_graph().await;
    let (e, sub_ref, arm_tok, graph_tok) = (&emu, &sub, &short_arm, &short_graph);
    eventually("the one-second tokens expire", move || async move {
        e.arm(Method::GET, sub_ref, arm_tok, None).await.status == StatusCode::UNAUTHORIZED
            && e.graph(Method::GET, "/groups", graph_tok, None)
                .await
                .status
                == StatusCode::UNAUTHORIZED
    })
    .await;
    let r = emu.arm(Method::GET, &sub, &short_arm, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "ExpiredAuthenticationToken");
    let r = emu.graph(Method::GET, "/groups", &short_graph, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
}

#[tokio::test]
async fn arm_role_definitions_and_assignments() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let a = emu.root_arm().await;
    let sub = emu.sub_scope();
    let defs = format!("{sub}/providers/Microsoft.Authorization/roleDefinitions");

    let r = emu
        .arm(
            Method::GET,
            &format!("{defs}?$filter=roleName%20eq%20'Contributor'"),
            &a,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.body["value"].as_array().unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["name"], "b24988ac-6180-42a0-ab88-20f7382dd24c");
    assert_eq!(
        v[0]["id"],
        format!("{defs}/b24988ac-6180-42a0-ab88-20f7382dd24c").as_str()
    );
    assert_eq!(v[0]["properties"]["roleName"], "Contributor");
    let r = emu.arm(Method::GET, &defs, &a, None).await;
    let names: Vec<&str> = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["properties"]["roleName"].as_str().unwrap())
        .collect();
    for n in [
        "Owner",
        "Contributor",
        "Reader",
        "User Access Administrator",
        "Storage Blob Data Reader",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let r = emu
        .arm(Method::GET, "/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635", &a, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["properties"]["roleName"], "Owner");
    assert_eq!(
        r.body["id"],
        "/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
    );
    let r = emu
        .arm(
            Method::GET,
            &format!("{defs}/{}", uuid::Uuid::new_v4()),
            &a,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "RoleDefinitionDoesNotExist");
    let r = emu
        .send(
            Method::GET,
            &format!("{}{defs}", emu.var("AZURE_RESOURCE_MANAGER_ENDPOINT")),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "MissingApiVersionParameter");

    // Resource groups.
    let rg = format!("{sub}/resourceGroups/vault-rg");
    assert_eq!(
        emu.arm(Method::GET, &rg, &a, None).await.status,
        StatusCode::OK
    );
    let r = emu
        .arm(
            Method::PUT,
            &format!("{sub}/resourceGroups/other-rg"),
            &a,
            Some(json!({"location": "westeurope"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = emu
        .arm(
            Method::GET,
            &format!("{sub}/resourceGroups/missing-rg"),
            &a,
            None,
        )
        .await;
    assert_eq!(r.code(), "ResourceGroupNotFound");

    // Role assignments.
    let (_, _, sp_id, _) = emu.new_principal(&g, "vault-ra").await;
    let reader = format!("{defs}/acdd72a7-3385-48ef-bd42-f606fba81ae7");
    let name = uuid::Uuid::new_v4().to_string();
    let ra_path = format!("{rg}/providers/Microsoft.Authorization/roleAssignments/{name}");
    let body = json!({"properties": {"roleDefinitionId": reader, "principalId": sp_id, "principalType": "ServicePrincipal"}});
    let r = emu.arm(Method::PUT, &ra_path, &a, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["id"], ra_path.as_str());
    assert_eq!(r.body["properties"]["principalId"], sp_id.as_str());
    assert_eq!(r.body["properties"]["scope"], rg.as_str());
    let r = emu.arm(Method::PUT, &ra_path, &a, Some(body.clone())).await;
    assert!(r.status.is_success(), "replay: {}", r.text);
    let other = format!(
        "{rg}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let r = emu.arm(Method::PUT, &other, &a, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "RoleAssignmentExists");
    let changed = json!({"properties": {"roleDefinitionId": format!("{defs}/b24988ac-6180-42a0-ab88-20f7382dd24c"), "principalId": sp_id}});
    let r = emu.arm(Method::PUT, &ra_path, &a, Some(changed)).await;
    assert_eq!(r.code(), "RoleAssignmentUpdateNotPermitted");
    let r = emu
        .arm(
            Method::PUT,
            &format!("{rg}/providers/Microsoft.Authorization/roleAssignments/not-a-guid"),
            &a,
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidRoleAssignmentId");
    let bad_role = json!({"properties": {"roleDefinitionId": format!("{defs}/{}", uuid::Uuid::new_v4()), "principalId": sp_id}});
    let r = emu.arm(Method::PUT, &other, &a, Some(bad_role)).await;
    assert_eq!(r.code(), "RoleDefinitionDoesNotExist");
    let malformed = json!({"properties": {"roleDefinitionId": "Reader", "principalId": sp_id}});
    let r = emu.arm(Method::PUT, &other, &a, Some(malformed)).await;
    assert_eq!(r.code(), "InvalidRoleDefinitionId");
    let ghost =
        json!({"properties": {"roleDefinitionId": reader, "principalId": uuid::Uuid::new_v4()}});
    let r = emu.arm(Method::PUT, &other, &a, Some(ghost)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "PrincipalNotFound");
    // A service principal deleted moments ago: with `principalType` ARM looks nothing up and
    // makes the assignment (an orphan); without it, the lookup fails.
    let (gone_app, _, gone_sp, _) = emu.new_principal(&g, "vault-ra-gone").await;
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/applications/{gone_app}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let late = format!(
        "{rg}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let untyped = json!({"properties": {"roleDefinitionId": reader, "principalId": gone_sp}});
    let r = emu.arm(Method::PUT, &late, &a, Some(untyped)).await;
    assert_eq!(r.code(), "PrincipalNotFound", "{}", r.text);
    let typed = json!({"properties": {"roleDefinitionId": reader, "principalId": gone_sp, "principalType": "ServicePrincipal"}});
    let r = emu.arm(Method::PUT, &late, &a, Some(typed)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = emu.arm(Method::DELETE, &late, &a, None).await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = emu
        .arm(
            Method::PUT,
            &format!(
                "{sub}/resourceGroups/nope/providers/Microsoft.Authorization/roleAssignments/{}",
                uuid::Uuid::new_v4()
            ),
            &a,
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "ResourceGroupNotFound");
    let r = emu
        .arm(
            Method::PUT,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments/{}",
                uuid::Uuid::new_v4(),
                uuid::Uuid::new_v4()
            ),
            &a,
            Some(body.clone()),
        )
        .await;
    assert!(
        r.code() == "SubscriptionNotFound" || r.code() == "AuthorizationFailed",
        "{}",
        r.text
    );

    let r = emu.arm(Method::GET, &ra_path, &a, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = emu
        .arm(Method::GET, &format!("{sub}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{sp_id}'"), &a, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    let r = emu.arm(Method::DELETE, &ra_path, &a, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], name.as_str());
    let r = emu.arm(Method::DELETE, &ra_path, &a, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    let r = emu.arm(Method::GET, &ra_path, &a, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "RoleAssignmentNotFound");
}

#[tokio::test]
async fn propagation_delay() {
    let emu = Emu::start(&["--propagation-delay-ms", "3000"]);
    let g = emu.root_graph().await;
    let a = emu.root_arm().await;
    let sub = emu.sub_scope();

    let app = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"displayName": "vault-prop"})),
        )
        .await;
    let app_id = app.body["appId"].as_str().unwrap().to_string();
    let r = emu
        .graph(
            Method::POST,
            "/servicePrincipals",
            &g,
            Some(json!({"appId": app_id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["error"]["details"][0]["code"],
        "NoBackingApplicationObject"
    );
    // Retried until the application has propagated (no fixed wait).
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let sp = loop {
        let sp = emu
            .graph(
                Method::POST,
                "/servicePrincipals",
                &g,
                Some(json!({"appId": app_id})),
            )
            .await;
        if sp.status != StatusCode::BAD_REQUEST {
            break sp;
        }
        assert!(
            std::time::Instant::now() < until,
            "the application never propagated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sp.status, StatusCode::CREATED, "{}", sp.text);
    let sp_id = sp.body["id"].as_str().unwrap().to_string();

    let reader = format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7");
    let path = format!(
        "{sub}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let r = emu
        .arm(
            Method::PUT,
            &path,
            &a,
            Some(json!({"properties": {"roleDefinitionId": reader, "principalId": sp_id}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "PrincipalNotFound");
    let r = emu
        .arm(Method::PUT, &path, &a, Some(json!({"properties": {"roleDefinitionId": reader, "principalId": sp_id, "principalType": "ServicePrincipal"}})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let groups = emu
        .graph(
            Method::GET,
            "/groups?$filter=displayName%20eq%20'vault-test-group-1'",
            &g,
            None,
        )
        .await;
    let gid = groups.body["value"][0]["id"].as_str().unwrap().to_string();
    let member =
        json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{sp_id}")});
    let r = emu
        .graph(
            Method::POST,
            &format!("/groups/{gid}/members/$ref"),
            &g,
            Some(member.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "Request_ResourceNotFound");
    // Retried until the service principal has propagated (no fixed wait).
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = emu
            .graph(
                Method::POST,
                &format!("/groups/{gid}/members/$ref"),
                &g,
                Some(member.clone()),
            )
            .await;
        if r.status != StatusCode::NOT_FOUND {
            break r;
        }
        assert!(
            std::time::Instant::now() < until,
            "the principal never propagated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let path2 = format!(
        "{sub}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let contributor = format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c");
    let r = emu
        .arm(
            Method::PUT,
            &path2,
            &a,
            Some(json!({"properties": {"roleDefinitionId": contributor, "principalId": sp_id}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // Optional: no read-your-writes for objects addressed by id.
    let s = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"read_delay_ms": 2000, "propagation_delay_ms": 0})),
        )
        .await;
    assert_eq!(s.body["read_delay_ms"], 2000);
    let app = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"displayName": "vault-read"})),
        )
        .await;
    let id = app.body["id"].as_str().unwrap().to_string();
    let r = emu
        .graph(Method::GET, &format!("/applications/{id}"), &g, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/addPassword"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.code(), "Request_ResourceNotFound");
    let ra = format!(
        "{sub}/resourceGroups/vault-rg/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let r = emu
        .arm(
            Method::PUT,
            &ra,
            &a,
            Some(json!({"properties": {"roleDefinitionId": reader, "principalId": sp_id}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        emu.arm(Method::GET, &ra, &a, None).await.code(),
        "RoleAssignmentNotFound"
    );
    let (e, at, ra_ref) = (&emu, &a, &ra);
    eventually("the role assignment becomes readable", move || async move {
        e.arm(Method::GET, ra_ref, at, None).await.status == StatusCode::OK
    })
    .await;
    let r = emu
        .graph(Method::GET, &format!("/applications/{id}"), &g, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        emu.arm(Method::GET, &ra, &a, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn credential_delay() {
    let emu = Emu::start(&["--credential-delay-ms", "3000"]);
    let g = emu.root_graph().await;
    let (id, client_id, _, secret) = emu.new_principal(&g, "vault-cred").await;
    let r = emu.token(&client_id, &secret, &emu.graph_scope()).await;
    assert_aad_error(&r, 400, "unauthorized_client", 700016);
    let (e, cid, sec) = (&emu, &client_id, &secret);
    eventually("the new secret is accepted", move || async move {
        e.token(cid, sec, &e.graph_scope()).await.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        emu.token(&client_id, &secret, &emu.graph_scope())
            .await
            .status,
        StatusCode::OK
    );

    let pw = emu
        .graph(
            Method::POST,
            &format!("/applications/{id}/addPassword"),
            &g,
            None,
        )
        .await;
    let fresh = pw.body["secretText"].as_str().unwrap().to_string();
    let r = emu.token(&client_id, &fresh, &emu.graph_scope()).await;
    assert_aad_error(&r, 401, "invalid_client", 7000215);
    // The older secret keeps working meanwhile.
    assert_eq!(
        emu.token(&client_id, &secret, &emu.graph_scope())
            .await
            .status,
        StatusCode::OK
    );
    let s = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"credential_delay_ms": 0})),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        emu.token(&client_id, &fresh, &emu.graph_scope())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn faults_latency_and_request_log() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let a = emu.root_arm().await;
    let sub = emu.sub_scope();
    let (_, _, sp_id, _) = emu.new_principal(&g, "vault-faults").await;

    let r = emu
        .admin(Method::POST, "/faults", Some(json!({"method": "PUT", "path_contains": "roleAssignments", "status": 429, "retry_after_secs": 1, "times": 2})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let path = format!(
        "{sub}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let body = json!({"properties": {"roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"), "principalId": sp_id}});
    for _ in 0..2 {
        let r = emu.arm(Method::PUT, &path, &a, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers["retry-after"], "1");
        assert!(r.code().len() > 3, "ARM error envelope: {}", r.text);
    }
    let r = emu.arm(Method::PUT, &path, &a, Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // 503 on Graph in Graph's shape, 500 on the token endpoint in AADSTS shape.
    emu.admin(
        Method::POST,
        "/faults",
        Some(json!({"path_contains": "/groups", "status": 503, "times": 1})),
    )
    .await;
    let r = emu.graph(Method::GET, "/groups", &g, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body["error"]["innerError"]["request-id"].is_string());
    assert_eq!(
        emu.graph(Method::GET, "/groups", &g, None).await.status,
        StatusCode::OK
    );
    emu.admin(
        Method::POST,
        "/faults",
        Some(json!({"path_contains": "oauth2", "status": 500, "times": 1})),
    )
    .await;
    let r = emu
        .token(
            emu.var("AZURE_CLIENT_ID"),
            emu.var("AZURE_CLIENT_SECRET"),
            &emu.graph_scope(),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS"));

    // A dropped connection.
    emu.admin(
        Method::POST,
        "/faults",
        Some(json!({"method": "get", "path_contains": "/applications", "drop": true, "times": 1})),
    )
    .await;
    let err = emu
        .http
        .get(emu.graph_url("/applications"))
        .bearer_auth(&g)
        .send()
        .await;
    assert!(err.is_err(), "the connection is closed without an answer");
    assert_eq!(
        emu.graph(Method::GET, "/applications", &g, None)
            .await
            .status,
        StatusCode::OK
    );

    // Unlimited rule, then lifted.
    emu.admin(
        Method::POST,
        "/faults",
        Some(json!({"path_contains": "/servicePrincipals", "status": 500})),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            emu.graph(Method::GET, "/servicePrincipals", &g, None)
                .await
                .status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(
        emu.admin(Method::DELETE, "/faults", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        emu.graph(Method::GET, "/servicePrincipals", &g, None)
            .await
            .status,
        StatusCode::OK
    );
    let r = emu
        .admin(Method::POST, "/faults", Some(json!({"status": 700})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The request log.
    let log = emu.admin(Method::GET, "/requests", None).await;
    let entries = log.body.as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["status"] == 0 && e["service"] == "graph"));
    assert!(entries
        .iter()
        .any(|e| e["status"] == 429 && e["method"] == "PUT" && e["service"] == "arm"));
    assert!(entries.iter().any(|e| e["service"] == "token"));
    for e in entries {
        assert!(e["finished_ms"].as_u64().unwrap() >= e["started_ms"].as_u64().unwrap());
        assert!(e["path"].as_str().unwrap().starts_with('/'));
    }
    assert_eq!(
        emu.admin(Method::DELETE, "/requests", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        emu.admin(Method::GET, "/requests", None).await.body,
        json!([])
    );

    // Latency applies to every API call.
    emu.admin(Method::POST, "/settings", Some(json!({"latency_ms": 300})))
        .await;
    let t = Instant::now();
    assert_eq!(
        emu.graph(Method::GET, "/groups", &g, None).await.status,
        StatusCode::OK
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    let log = emu.admin(Method::GET, "/requests", None).await;
    let e = &log.body[0];
    assert!(e["finished_ms"].as_u64().unwrap() - e["started_ms"].as_u64().unwrap() >= 300);
    let r = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"no_such_setting": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Opt-in write throttling: a token bucket per service.
    emu.admin(
        Method::POST,
        "/settings",
        Some(json!({"latency_ms": 0, "arm_writes_per_sec": 0.5, "arm_write_burst": 2})),
    )
    .await;
    let rg = format!("{sub}/resourceGroups/throttled-rg");
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = emu
            .arm(Method::PUT, &rg, &a, Some(json!({"location": "eastus"})))
            .await;
        statuses.push(r.status.as_u16());
        last = Some(r);
    }
    assert_eq!(statuses, [201, 200, 429]);
    let last = last.unwrap();
    assert_eq!(last.code(), "SubscriptionRequestsThrottled");
    assert!(
        last.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        last.headers["x-ms-ratelimit-remaining-subscription-writes"],
        "0"
    );
    // Reads are not throttled.
    assert_eq!(
        emu.arm(Method::GET, &rg, &a, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn arc_challenge_flow() {
    let emu = Emu::start(&[]);
    let endpoint = format!(
        "{}?api-version=2021-02-01&resource=https://management.azure.com/",
        emu.var("IDENTITY_ENDPOINT")
    );
    let first = emu
        .http
        .get(&endpoint)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let challenge = first.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let path = challenge
        .strip_prefix("Basic realm=")
        .expect("Basic realm=")
        .to_string();
    let p = std::path::Path::new(&path);
    assert_eq!(p.extension().unwrap(), "key");
    assert_eq!(
        p.parent().unwrap(),
        std::fs::canonicalize(&emu.token_dir).unwrap()
    );
    assert!(std::fs::metadata(p).unwrap().len() <= 4096);
    let secret = std::fs::read_to_string(p).unwrap();

    let wrong = emu
        .http
        .get(&endpoint)
        .header("Metadata", "true")
        .header("Authorization", "Basic not-the-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let ok = emulator_support::to_resp(
        emu.http
            .get(&endpoint)
            .header("Metadata", "true")
            .header("Authorization", format!("Basic {secret}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    for k in [
        "access_token",
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(ok.body[k].is_string(), "{k} must be a string: {}", ok.text);
    }
    assert!(ok.body["expires_on"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .is_ok());
    let token = ok.body["access_token"].as_str().unwrap();
    // The machine identity is Owner of the subscription.
    let r = emu.arm(Method::GET, &emu.sub_scope(), token, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The key file was used up.
    assert!(!p.exists());
    let again = emu
        .http
        .get(&endpoint)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);

    // Graph token for the same identity, with the Graph permissions of the root.
    let graph_ep = format!(
        "{}?api-version=2020-06-01&resource={}",
        emu.var("IDENTITY_ENDPOINT"),
        emu.var("AZURE_GRAPH_ENDPOINT")
    );
    let c = emu
        .http
        .get(&graph_ep)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let realm = c.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .trim_start_matches("Basic realm=")
        .to_string();
    let s = std::fs::read_to_string(&realm).unwrap();
    let t = emulator_support::to_resp(
        emu.http
            .get(&graph_ep)
            .header("Metadata", "true")
            .header("Authorization", format!("Basic {s}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let gt = t.body["access_token"].as_str().unwrap();
    assert_eq!(
        emu.graph(Method::GET, "/applications", gt, None)
            .await
            .status,
        StatusCode::OK
    );

    // Bad requests.
    let r = emu.http.get(&endpoint).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = emu
        .http
        .get(format!(
            "{}?api-version=2017-01-01&resource=https://management.azure.com/",
            emu.var("IDENTITY_ENDPOINT")
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The realm override is returned verbatim.
    emu.admin(
        Method::POST,
        "/settings",
        Some(json!({"arc_realm_override": "/etc/passwd"})),
    )
    .await;
    let r = emu
        .http
        .get(&endpoint)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=/etc/passwd");
    emu.admin(
        Method::POST,
        "/settings",
        Some(json!({"arc_realm_override": null})),
    )
    .await;
    let r = emu
        .http
        .get(&endpoint)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["www-authenticate"], "Basic realm=/etc/passwd");
}

#[tokio::test]
async fn vm_imds() {
    let emu = Emu::start(&[]);
    let base = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
        emu.var("IMDS_VM_ENDPOINT")
    );
    let r = emulator_support::to_resp(emu.http.get(&base).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "bad_request_102");
    let r = emulator_support::to_resp(
        emu.http
            .get(&base)
            .header("Metadata", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["expires_in"].is_string());
    let system_client = r.body["client_id"].as_str().unwrap().to_string();
    let state = emu.admin(Method::GET, "/state", None).await;
    let uami = state.body["servicePrincipals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["displayName"] == "vault-uami")
        .unwrap()["appId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = emulator_support::to_resp(
        emu.http
            .get(format!("{base}&client_id={uami}"))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["client_id"], uami.as_str());
    assert_ne!(uami, system_client);
    let r = emulator_support::to_resp(
        emu.http
            .get(format!("{base}&client_id={}", uuid::Uuid::new_v4()))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_request");
}

#[tokio::test]
async fn groups_members_and_paging() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let r = emu
        .graph(
            Method::GET,
            "/groups?$filter=displayName%20eq%20'vault-duplicate-group'",
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 2);
    let r = emu
        .graph(
            Method::GET,
            "/groups?$filter=displayName%20eq%20'vault-test-group-2'",
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);

    let created = emu
        .graph(Method::POST, "/groups", &g, Some(json!({"displayName": "vault-new", "mailEnabled": false, "mailNickname": "vault-new", "securityEnabled": true})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let gid = created.body["id"].as_str().unwrap().to_string();
    let r = emu
        .graph(Method::GET, &format!("/groups/{gid}"), &g, None)
        .await;
    assert_eq!(r.body["displayName"], "vault-new");
    let r = emu
        .graph(
            Method::POST,
            "/groups",
            &g,
            Some(json!({"displayName": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let (_, _, sp_id, _) = emu.new_principal(&g, "vault-member").await;
    let member = json!({"@odata.id": format!("{}/v1.0/directoryObjects/{sp_id}", emu.var("AZURE_GRAPH_ENDPOINT"))});
    let add = |body: Value| {
        let emu = &emu;
        let g = &g;
        let gid = gid.clone();
        async move {
            emu.graph(
                Method::POST,
                &format!("/groups/{gid}/members/$ref"),
                g,
                Some(body),
            )
            .await
        }
    };
    assert_eq!(add(member.clone()).await.status, StatusCode::NO_CONTENT);
    let dup = add(member.clone()).await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);
    assert!(dup.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already exist"));
    let ghost = add(json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", uuid::Uuid::new_v4())})).await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND);
    assert_eq!(
        add(json!({"@odata.id": "nonsense"})).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = emu
        .graph(Method::GET, &format!("/groups/{gid}/members"), &g, None)
        .await;
    assert_eq!(r.body["value"][0]["id"], sp_id.as_str());
    assert_eq!(
        r.body["value"][0]["@odata.type"],
        "#microsoft.graph.servicePrincipal"
    );
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/groups/{gid}/members/{sp_id}/$ref"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/groups/{gid}/members/{sp_id}/$ref"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = emu
        .graph(
            Method::GET,
            &format!("/groups/{}", uuid::Uuid::new_v4()),
            &g,
            None,
        )
        .await;
    assert_eq!(r.code(), "Request_ResourceNotFound");

    // Graph paging: $top and the page-size setting, following @odata.nextLink verbatim.
    let r = emu.graph(Method::GET, "/groups?$top=2", &g, None).await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 2);
    let mut next = r.body["@odata.nextLink"].as_str().map(str::to_string);
    let mut seen = 2;
    while let Some(url) = next {
        assert!(
            url.contains("$skiptoken=") || url.contains("%24skiptoken="),
            "{url}"
        );
        let page = emu.send(Method::GET, &url, Some(&g), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen += page.body["value"].as_array().unwrap().len();
        next = page.body["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(seen, 5);
    assert_eq!(
        emu.graph(Method::GET, "/groups?$top=1000", &g, None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // ARM paging with nextLink.
    emu.admin(Method::POST, "/settings", Some(json!({"arm_page_size": 4})))
        .await;
    let a = emu.root_arm().await;
    let r = emu
        .arm(
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Authorization/roleDefinitions",
                emu.sub_scope()
            ),
            &a,
            None,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 4);
    let mut total = 4;
    let mut next = r.body["nextLink"].as_str().map(str::to_string);
    while let Some(url) = next {
        let page = emu.send(Method::GET, &url, Some(&a), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        total += page.body["value"].as_array().unwrap().len();
        next = page.body["nextLink"].as_str().map(str::to_string);
    }
    assert!(total >= 9);
}

#[tokio::test]
async fn concurrent_add_password_is_refused() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let app = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"displayName": "vault-conc", "signInAudience": "AzureADMyOrg"})),
        )
        .await;
    let id = app.body["id"].as_str().unwrap().to_string();
    emu.admin(
        Method::POST,
        "/settings",
        Some(json!({"password_write_ms": 300})),
    )
    .await;
    let path = format!("/applications/{id}/addPassword");
    let calls = (0..8).map(|_| emu.graph(Method::POST, &path, &g, None));
    let results = futures::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(ok >= 1, "some succeed");
    assert!(
        !refused.is_empty(),
        "parallel calls beyond the limit are refused"
    );
    assert!(refused
        .iter()
        .all(|r| r.code() == "Directory_ConcurrencyViolation"));
    // Serialised calls all succeed.
    emu.admin(
        Method::POST,
        "/settings",
        Some(json!({"password_write_ms": 10})),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            emu.graph(Method::POST, &path, &g, None).await.status,
            StatusCode::OK
        );
    }
}

fn unsigned_jwt(claims: Value) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        e.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        e.encode(claims.to_string()),
        e.encode("signature")
    )
}

#[tokio::test]
async fn client_assertion_and_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({
            "resourceGroups": [{"name": "seeded-rg", "location": "westus"}],
            "groups": [{"displayName": "seeded-group", "members": ["seeded-app"]}],
            "applications": [{
                "displayName": "seeded-app",
                "passwords": [{"secretText": "seeded-secret-value"}],
                "roleAssignments": [{"role": "Contributor", "scope": "/subscriptions/{subscriptionId}/resourceGroups/seeded-rg"}],
                "federatedIdentityCredentials": [{"name": "k8s", "issuer": "https://issuer.example", "subject": "system:serviceaccount:vault:vault"}]
            }]
        })
        .to_string(),
    )
    .unwrap();
    let emu = Emu::start(&["--seed", seed.to_str().unwrap()]);
    let state = emu.admin(Method::GET, "/state", None).await;
    assert!(!state.text.contains("seeded-secret-value"));
    let app = state.body["applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["displayName"] == "seeded-app")
        .unwrap()
        .clone();
    let client_id = app["appId"].as_str().unwrap().to_string();
    assert_eq!(
        emu.token(&client_id, "seeded-secret-value", &emu.arm_scope())
            .await
            .status,
        StatusCode::OK
    );
    assert!(
        state.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["displayName"] == "seeded-group"
                && g["members"].as_array().unwrap().len() == 1)
    );

    let tenant = emu.var("AZURE_TENANT_ID").to_string();
    let now = chrono::Utc::now().timestamp();
    let assertion = |sub: &str, exp: i64| {
        unsigned_jwt(
            json!({"iss": "https://issuer.example", "sub": sub, "aud": "api://AzureADTokenExchange", "exp": exp, "nbf": now - 10}),
        )
    };
    let request = |a: String| {
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &a),
            ("scope", "https://management.azure.com/.default"),
        ])
    };
    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            request(assertion("system:serviceaccount:vault:vault", now + 600)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let arm = r.body["access_token"].as_str().unwrap().to_string();
    // Contributor on seeded-rg: can read it, cannot assign roles there.
    let rg = format!("{}/resourceGroups/seeded-rg", emu.sub_scope());
    assert_eq!(
        emu.arm(Method::GET, &rg, &arm, None).await.status,
        StatusCode::OK
    );
    let r = emu
        .arm(Method::PUT, &format!("{rg}/providers/Microsoft.Authorization/roleAssignments/{}", uuid::Uuid::new_v4()), &arm,
            Some(json!({"properties": {"roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", emu.sub_scope()), "principalId": app["id"]}})))
        .await;
    assert_eq!(r.code(), "AuthorizationFailed");

    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            request(assertion("system:serviceaccount:other:x", now + 600)),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_request", 70021);
    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            request(assertion("system:serviceaccount:vault:vault", now - 60)),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_client", 700024);
}

#[tokio::test]
async fn graph_extras_and_admin_reads() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let (app_obj, client_id, sp_id, secret) = emu.new_principal(&g, "vault-extras").await;

    // Service principal lookups.
    let r = emu
        .graph(
            Method::GET,
            &format!("/servicePrincipals?$filter=appId%20eq%20'{client_id}'"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["value"][0]["id"], sp_id.as_str());
    let r = emu
        .graph(
            Method::GET,
            &format!("/servicePrincipals(appId='{client_id}')"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["id"], sp_id.as_str());
    assert_eq!(r.body["servicePrincipalType"], "Application");

    // $select and advanced queries.
    let r = emu
        .graph(Method::GET, "/applications?$select=id,appId", &g, None)
        .await;
    let first = r.body["value"][0].as_object().unwrap();
    assert!(first.contains_key("appId") && !first.contains_key("displayName"));
    let r = emu
        .send(
            Method::GET,
            &emu.graph_url("/applications?$filter=endswith(displayName,'extras')&$count=true"),
            Some(&g),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = emulator_support::to_resp(
        emu.http
            .get(emu.graph_url("/applications?$filter=endswith(displayName,'extras')&$count=true"))
            .bearer_auth(&g)
            .header("ConsistencyLevel", "eventual")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["@odata.count"], 1);

    // Federated identity credentials created through Graph.
    let fic = emu
        .graph(
            Method::POST,
            &format!("/applications/{app_obj}/federatedIdentityCredentials"),
            &g,
            Some(json!({"name": "gh", "issuer": "https://token.actions.example", "subject": "repo:x:ref:main", "audiences": ["api://AzureADTokenExchange"]})),
        )
        .await;
    assert_eq!(fic.status, StatusCode::CREATED, "{}", fic.text);
    let tenant = emu.var("AZURE_TENANT_ID").to_string();
    let assertion = unsigned_jwt(
        json!({"iss": "https://token.actions.example", "sub": "repo:x:ref:main",
        "aud": ["api://AzureADTokenExchange"], "exp": chrono::Utc::now().timestamp() + 300}),
    );
    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
                ("scope", &emu.graph_scope()),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = emu
        .graph(
            Method::GET,
            &format!("/applications/{app_obj}/federatedIdentityCredentials"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.body["value"][0]["name"], "gh");
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/applications/{app_obj}/federatedIdentityCredentials/gh"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // The v1 endpoint.
    let r = emu
        .post_form(
            &format!("{}{tenant}/oauth2/token", emu.var("AZURE_AUTHORITY_HOST")),
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("resource", "https://management.azure.com/"),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["expires_on"].is_string());

    // DELETE .../members/{id} without $ref deletes the member object itself.
    let groups = emu
        .graph(
            Method::GET,
            "/groups?$filter=displayName%20eq%20'vault-test-group-2'",
            &g,
            None,
        )
        .await;
    let gid = groups.body["value"][0]["id"].as_str().unwrap().to_string();
    let r = emu
        .graph(
            Method::POST,
            &format!("/groups/{gid}/members/$ref"),
            &g,
            Some(json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{sp_id}")})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/groups/{gid}/members/{sp_id}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu
        .graph(
            Method::GET,
            &format!("/servicePrincipals/{sp_id}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Restore from deleted items.
    let r = emu
        .graph(
            Method::POST,
            &format!("/directory/deletedItems/{sp_id}/restore"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        emu.graph(
            Method::GET,
            &format!("/servicePrincipals/{sp_id}"),
            &g,
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    // Unknown segments and methods get Graph errors, never a panic.
    let r = emu.graph(Method::GET, "/nothing/here", &g, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error"]["code"].is_string());
    let r = emu.graph(Method::PUT, "/applications", &g, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = emu
        .send(
            Method::GET,
            &format!("{}/beta/applications", emu.var("AZURE_GRAPH_ENDPOINT")),
            Some(&g),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // ARM: resource group delete removes the assignments under it.
    let a = emu.root_arm().await;
    let rg = format!("{}/resourceGroups/tmp-rg", emu.sub_scope());
    assert_eq!(
        emu.arm(Method::PUT, &rg, &a, Some(json!({"location": "eastus"})))
            .await
            .status,
        StatusCode::CREATED
    );
    let ra = format!(
        "{rg}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let body = json!({"properties": {"roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", emu.sub_scope()), "principalId": sp_id}});
    assert_eq!(
        emu.arm(Method::PUT, &ra, &a, Some(body)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        emu.arm(Method::DELETE, &rg, &a, None).await.status,
        StatusCode::ACCEPTED
    );
    let state = emu.admin(Method::GET, "/state", None).await;
    assert!(!state.text.contains("tmp-rg"));
    assert!(state.body["roleAssignments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["properties"]["principalId"] != sp_id.as_str()));
    for key in [
        "applications",
        "servicePrincipals",
        "deletedItems",
        "groups",
        "roleAssignments",
        "resourceGroups",
    ] {
        assert!(state.body[key].is_array(), "{key}");
    }

    // Admin reads.
    let s = emu.admin(Method::GET, "/settings", None).await;
    assert_eq!(s.body["token_lifetime_secs"], 3599);
    emu.admin(
        Method::POST,
        "/faults",
        Some(json!({"service": "imds", "status": 410, "times": 3})),
    )
    .await;
    let f = emu.admin(Method::GET, "/faults", None).await;
    assert_eq!(f.body["faults"][0]["times"], 3);
    let r = emu
        .http
        .get(format!("{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/", emu.var("IMDS_VM_ENDPOINT")))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
}

#[tokio::test]
async fn malformed_requests_get_error_shapes() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let a = emu.root_arm().await;
    let sub = emu.sub_scope();
    let junk: [&[u8]; 5] = [b"", b"{", b"[]", b"null", b"\xff\xfe"];
    let graph_paths = [
        "/applications",
        "/applications/x/addPassword",
        "/applications(appId='')/removePassword",
        "/applications(appId=)",
        "/applications(/x",
        "/servicePrincipals",
        "/groups/x/members/$ref",
        "/groups/%ZZ/members",
        "/directory/deletedItems/microsoft.graph.nothing",
        "/applications/00000000-0000-0000-0000-000000000000/federatedIdentityCredentials",
        "/applications?$filter=(((",
        "/applications?$filter=displayName%20eq%20'x'%20and%20startswith(",
        "/applications?$top=0",
        "/applications?$skiptoken=!!",
    ];
    for path in graph_paths {
        for body in junk {
            for method in [Method::POST, Method::GET, Method::PATCH, Method::DELETE] {
                let r = emu
                    .http
                    .request(method.clone(), emu.graph_url(path))
                    .bearer_auth(&g)
                    .header("content-type", "application/json")
                    .body(body.to_vec())
                    .send()
                    .await
                    .expect("the emulator answers");
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if status.is_client_error() {
                    let v: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
                    assert!(v["error"]["code"].is_string(), "{method} {path}: {text}");
                } else {
                    assert!(status.is_success(), "{method} {path}: {status} {text}");
                }
            }
        }
    }
    let arm_paths = [
        format!(
            "{sub}/providers/Microsoft.Authorization/roleAssignments/{}",
            uuid::Uuid::new_v4()
        ),
        format!("{sub}/providers/Microsoft.Authorization/roleAssignments?$filter=weird(('"),
        format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/not-a-guid"),
        format!("{sub}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20"),
        format!("{sub}/resourceGroups/bad..name."),
        "/providers/Microsoft.Authorization/roleAssignments/x/y/z".to_string(),
        "/totally/unknown".to_string(),
        format!("{sub}/providers/Microsoft.Authorization/"),
    ];
    for path in &arm_paths {
        for body in junk {
            for method in [Method::PUT, Method::GET, Method::DELETE, Method::POST] {
                let r = emu
                    .http
                    .request(method.clone(), emu.arm_url(path))
                    .bearer_auth(&a)
                    .header("content-type", "application/json")
                    .body(body.to_vec())
                    .send()
                    .await
                    .expect("the emulator answers");
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                assert!(
                    !status.is_server_error(),
                    "{method} {path}: {status} {text}"
                );
                if status.is_client_error() {
                    let v: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
                    assert!(v["error"]["code"].is_string(), "{method} {path}: {text}");
                }
            }
        }
    }
    // Token endpoint and identity endpoints with nonsense.
    let tenant = emu.var("AZURE_TENANT_ID").to_string();
    for body in [
        "grant_type=client_credentials&client_id=%ZZ",
        "client_assertion=a.b.c&grant_type=client_credentials&client_id=x&scope=y",
        "&&&==",
    ] {
        let r = emu
            .post_form(&emu.token_url(&tenant), body.to_string())
            .await;
        assert!(r.status.is_client_error(), "{body}: {}", r.text);
        assert!(r.body["error"].is_string(), "{body}: {}", r.text);
    }
    let r = emu
        .http
        .get(format!(
            "{}?api-version=2021-02-01&resource=https://management.azure.com/&client_id=x",
            emu.var("IDENTITY_ENDPOINT")
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Still alive and well.
    assert_eq!(
        emu.graph(Method::GET, "/groups", &g, None).await.status,
        StatusCode::OK
    );
}

#[test]
fn startup_failures_exit_non_zero_without_ready() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"applications": [{"displayName": "x", "roleAssignments": [{"role": "Nope", "scope": "/"}]}]}"#).unwrap();
    let cert = dir.path().join("ca.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-emulator"))
        .args(["--listen", "127.0.0.1:0", "--seed"])
        .arg(&seed)
        .arg("--cert-file")
        .arg(&cert)
        .arg("--arc-token-dir")
        .arg(dir.path().join("tokens"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    assert!(!cert.exists(), "no files written on a failed start");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-emulator"))
        .args(["--listen", "192.0.2.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azure-emulator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--propagation-delay-ms"));
}

/// The token endpoint honours a password's `startDateTime` and `endDateTime`, judged by the
/// admin `password_clock_offset_secs` clock, so an overlap of two secrets can be proven.
#[tokio::test]
async fn password_validity_window_and_clock() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let (id, client_id, _, _) = emu.new_principal(&g, "vault-window").await;
    let now = chrono::Utc::now();
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let add = |start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>| {
        let (emu, g, id) = (&emu, &g, &id);
        async move {
            let r = emu
                .graph(
                    Method::POST,
                    &format!("/applications/{id}/addPassword"),
                    g,
                    Some(json!({"passwordCredential": {"startDateTime": fmt(start), "endDateTime": fmt(end)}})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body["secretText"].as_str().unwrap().to_string()
        }
    };
    let hour = chrono::Duration::hours(1);
    // Valid now until +1h; valid from +30 min until +2h (a staged secret).
    let current = add(now - hour, now + hour).await;
    let staged = add(now + hour / 2, now + hour * 2).await;
    let scope = emu.graph_scope();
    assert_eq!(
        emu.token(&client_id, &current, &scope).await.status,
        StatusCode::OK
    );
    let r = emu.token(&client_id, &staged, &scope).await;
    assert_aad_error(&r, 401, "invalid_client", 7000215);

    let set = |offset: i64| {
        let emu = &emu;
        async move {
            let s = emu
                .admin(
                    Method::POST,
                    "/settings",
                    Some(json!({"password_clock_offset_secs": offset})),
                )
                .await;
            assert_eq!(s.status, StatusCode::OK, "{}", s.text);
            assert_eq!(s.body["password_clock_offset_secs"], offset);
        }
    };
    // +45 min: inside the overlap, both work.
    set(45 * 60).await;
    assert_eq!(
        emu.token(&client_id, &current, &scope).await.status,
        StatusCode::OK
    );
    assert_eq!(
        emu.token(&client_id, &staged, &scope).await.status,
        StatusCode::OK
    );
    // +90 min: the first has ended, the staged one still works.
    set(90 * 60).await;
    let r = emu.token(&client_id, &current, &scope).await;
    assert_aad_error(&r, 401, "invalid_client", 7000222);
    assert_eq!(
        emu.token(&client_id, &staged, &scope).await.status,
        StatusCode::OK
    );
    // Back to the real time: as at first. Graph tokens are not affected by the clock.
    set(0).await;
    assert_eq!(
        emu.token(&client_id, &current, &scope).await.status,
        StatusCode::OK
    );
    let r = emu.token(&client_id, &staged, &scope).await;
    assert_aad_error(&r, 401, "invalid_client", 7000215);

    for bad in [json!("soon"), json!(1.5), json!(i64::MAX)] {
        let s = emu
            .admin(
                Method::POST,
                "/settings",
                Some(json!({"password_clock_offset_secs": bad})),
            )
            .await;
        assert_eq!(s.status, StatusCode::BAD_REQUEST, "{bad}: {}", s.text);
    }
}
// ---------- certificates, proofs, policies, cluster issuer ----------

/// A self-signed RSA certificate and its key, made the way a client would.
struct TestCert {
    key: aws_lc_rs::signature::RsaKeyPair,
    der: Vec<u8>,
}

impl TestCert {
    fn new(bits: aws_lc_rs::rsa::KeySize, days: i64) -> TestCert {
        use aws_lc_rs::encoding::AsDer;
        let key = aws_lc_rs::signature::RsaKeyPair::generate(bits).unwrap();
        let pkcs8 = key.as_der().unwrap().as_ref().to_vec();
        let signer = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(days);
        let cert = params.self_signed(&signer).unwrap();
        TestCert {
            key,
            der: cert.der().to_vec(),
        }
    }

    fn b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.der)
    }

    fn x5t(&self) -> String {
        use base64::Engine;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
    }

    fn x5t_s256(&self) -> String {
        use base64::Engine;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.der);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
    }

    fn sign(&self, header: Value, claims: Value) -> String {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            e.encode(header.to_string()),
            e.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", e.encode(sig))
    }

    /// A client assertion for `client_id` at `aud`.
    fn assertion(&self, client_id: &str, aud: &str, exp_in: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(
            json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t()}),
            json!({"aud": aud, "iss": client_id, "sub": client_id, "jti": uuid::Uuid::new_v4().to_string(),
                "nbf": now - 5, "iat": now - 5, "exp": now + exp_in}),
        )
    }

    /// A proof-of-possession token for `addKey`/`removeKey` on the object `object_id`.
    fn proof(&self, object_id: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(
            json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t()}),
            json!({"aud": "00000002-0000-0000-c000-000000000000", "iss": object_id, "nbf": now, "exp": now + 600}),
        )
    }
}

fn assertion_form(client_id: &str, assertion: &str, scope: &str) -> String {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
        ("scope", scope),
    ])
}

#[tokio::test]
async fn key_credentials_client_assertions_and_proofs() {
    use aws_lc_rs::rsa::KeySize;
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let tenant = emu.var("AZURE_TENANT_ID").to_string();
    let token_url = emu.token_url(&tenant);
    let c1 = TestCert::new(KeySize::Rsa2048, 30);

    // Created with a key credential in the same call.
    let app = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"displayName": "cert-app", "keyCredentials": [
                {"type": "AsymmetricX509Cert", "usage": "Verify", "key": c1.b64(), "displayName": "c1"}]})),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.text);
    let obj = app.body["id"].as_str().unwrap().to_string();
    let client_id = app.body["appId"].as_str().unwrap().to_string();
    let k1 = app.body["keyCredentials"][0].clone();
    assert!(k1["key"].is_null(), "key is not returned by default");
    assert_eq!(k1["type"], "AsymmetricX509Cert");
    let k1_id = k1["keyId"].as_str().unwrap().to_string();
    let sp = emu
        .graph(
            Method::POST,
            "/servicePrincipals",
            &g,
            Some(json!({"appId": client_id})),
        )
        .await;
    assert_eq!(sp.status, StatusCode::CREATED);

    // $select=keyCredentials returns the certificate.
    let sel = emu
        .graph(
            Method::GET,
            &format!("/applications/{obj}?$select=keyCredentials"),
            &g,
            None,
        )
        .await;
    assert_eq!(sel.body["keyCredentials"][0]["key"], c1.b64());
    assert!(sel.body.get("displayName").is_none());

    // A client assertion signed with the key obtains a token.
    let scope = emu.graph_scope();
    let r = emu
        .post_form(
            &token_url,
            assertion_form(
                &client_id,
                &c1.assertion(&client_id, &token_url, 300),
                &scope,
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let app_graph = r.body["access_token"].as_str().unwrap().to_string();
    // x5t#S256 alone works too.
    let now = chrono::Utc::now().timestamp();
    let a256 = c1.sign(
        json!({"alg": "RS256", "typ": "JWT", "x5t#S256": c1.x5t_s256()}),
        json!({"aud": token_url, "iss": client_id, "sub": client_id, "nbf": now, "exp": now + 300}),
    );
    let r = emu
        .post_form(&token_url, assertion_form(&client_id, &a256, &scope))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Wrong audience, wrong issuer, subject mismatch, expired, unknown key, bad signature.
    let wrong_aud = c1.assertion(&client_id, "https://login.example/x/oauth2/v2.0/token", 300);
    let r = emu
        .post_form(&token_url, assertion_form(&client_id, &wrong_aud, &scope))
        .await;
    assert_aad_error(&r, 400, "invalid_client", 50027);
    let other_iss = c1.sign(
        json!({"alg": "RS256", "x5t": c1.x5t()}),
        json!({"aud": token_url, "iss": "someone", "sub": "someone", "nbf": now, "exp": now + 300}),
    );
    let r = emu
        .post_form(&token_url, assertion_form(&client_id, &other_iss, &scope))
        .await;
    assert_aad_error(&r, 400, "invalid_client", 700_021);
    let sub_mismatch = c1.sign(
        json!({"alg": "RS256", "x5t": c1.x5t()}),
        json!({"aud": token_url, "iss": client_id, "sub": "x", "nbf": now, "exp": now + 300}),
    );
    let r = emu
        .post_form(
            &token_url,
            assertion_form(&client_id, &sub_mismatch, &scope),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_client", 50048);
    let expired = c1.assertion(&client_id, &token_url, -60);
    let r = emu
        .post_form(&token_url, assertion_form(&client_id, &expired, &scope))
        .await;
    assert_aad_error(&r, 400, "invalid_client", 700_024);
    let c2 = TestCert::new(KeySize::Rsa2048, 30);
    let r = emu
        .post_form(
            &token_url,
            assertion_form(
                &client_id,
                &c2.assertion(&client_id, &token_url, 300),
                &scope,
            ),
        )
        .await;
    assert_aad_error(&r, 401, "invalid_client", 700_027);
    assert!(r.text.contains("The key was not found"), "{}", r.text);
    // c2's signature under c1's thumbprint.
    let forged = c2.sign(
        json!({"alg": "RS256", "x5t": c1.x5t()}),
        json!({"aud": token_url, "iss": client_id, "sub": client_id, "nbf": now, "exp": now + 300}),
    );
    let r = emu
        .post_form(&token_url, assertion_form(&client_id, &forged, &scope))
        .await;
    assert_aad_error(&r, 401, "invalid_client", 700_027);
    assert!(
        r.text.contains("signature value did not match"),
        "{}",
        r.text
    );

    // addKey with a proof signed by c1, by the application itself.
    let add = |proof: String, cert: &TestCert| json!({"keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify", "key": cert.b64()}, "passwordCredential": null, "proof": proof});
    let bad = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addKey"),
            &app_graph,
            Some(add(c2.proof(&obj), &c2)),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED, "{}", bad.text);
    assert_eq!(bad.code(), "Authentication_MissingOrMalformed");
    let wrong_iss = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addKey"),
            &app_graph,
            Some(add(c1.proof(&client_id), &c2)),
        )
        .await;
    assert_eq!(wrong_iss.code(), "Authentication_MissingOrMalformed");
    let padded = format!("{}=", c1.proof(&obj));
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addKey"),
            &app_graph,
            Some(add(padded, &c2)),
        )
        .await;
    assert_eq!(r.code(), "Authentication_MissingOrMalformed");
    let added = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addKey"),
            &app_graph,
            Some(add(c1.proof(&obj), &c2)),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    assert!(added.body["key"].is_null());
    let k2_id = added.body["keyId"].as_str().unwrap().to_string();
    let r = emu
        .post_form(
            &token_url,
            assertion_form(
                &client_id,
                &c2.assertion(&client_id, &token_url, 300),
                &scope,
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // removeKey of c1 with a proof by c2; c1 no longer signs in.
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/removeKey"),
            &app_graph,
            Some(json!({"keyId": k1_id, "proof": c2.proof(&obj)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = emu
        .post_form(
            &token_url,
            assertion_form(
                &client_id,
                &c1.assertion(&client_id, &token_url, 300),
                &scope,
            ),
        )
        .await;
    assert_aad_error(&r, 401, "invalid_client", 700_027);

    // PATCH replaces the collection: keep c2 by keyId, add c3; leaving one out deletes it.
    let c3 = TestCert::new(KeySize::Rsa3072, 30);
    let r = emu
        .graph(Method::PATCH, &format!("/applications/{obj}"), &g,
            Some(json!({"keyCredentials": [{"keyId": k2_id}, {"type": "AsymmetricX509Cert", "usage": "Verify", "key": c3.b64()}]})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let got = emu
        .graph(Method::GET, &format!("/applications/{obj}"), &g, None)
        .await;
    assert_eq!(got.body["keyCredentials"].as_array().unwrap().len(), 2);
    let r = emu
        .graph(Method::PATCH, &format!("/applications/{obj}"), &g,
            Some(json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": c3.b64()}]})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let got = emu
        .graph(Method::GET, &format!("/applications/{obj}"), &g, None)
        .await;
    assert_eq!(got.body["keyCredentials"].as_array().unwrap().len(), 1);

    // Bad key credentials: not a certificate, dates outside the certificate, wrong type.
    for bad in [
        json!({"type": "AsymmetricX509Cert", "usage": "Verify", "key": "bm90IGEgY2VydA=="}),
        json!({"type": "AsymmetricX509Cert", "usage": "Verify", "key": c3.b64(), "endDateTime": "2099-01-01T00:00:00Z"}),
        json!({"type": "Symmetric", "usage": "Verify", "key": c3.b64()}),
    ] {
        let r = emu
            .graph(
                Method::POST,
                "/applications",
                &g,
                Some(json!({"displayName": "x", "keyCredentials": [bad]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }

    // Service principal key credentials: PATCH then sign in with it.
    let sp_id = sp.body["id"].as_str().unwrap().to_string();
    let c4 = TestCert::new(KeySize::Rsa2048, 30);
    let r = emu
        .graph(Method::PATCH, &format!("/servicePrincipals/{sp_id}"), &g,
            Some(json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": c4.b64()}]})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = emu
        .post_form(
            &token_url,
            assertion_form(
                &client_id,
                &c4.assertion(&client_id, &token_url, 300),
                &scope,
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn app_management_policies() {
    use aws_lc_rs::rsa::KeySize;
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let d = emu
        .graph(
            Method::GET,
            "/policies/defaultAppManagementPolicy",
            &g,
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    assert_eq!(d.body["id"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(d.body["isEnabled"], false);

    // Invalid restrictions are refused.
    let r = emu
        .graph(Method::PATCH, "/policies/defaultAppManagementPolicy", &g,
            Some(json!({"applicationRestrictions": {"passwordCredentials": [{"restrictionType": "passwordLifetime", "maxLifetime": "ninety days"}]}})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Block passwords, cap certificates at 90 days.
    let r = emu
        .graph(Method::PATCH, "/policies/defaultAppManagementPolicy", &g,
            Some(json!({"isEnabled": true, "applicationRestrictions": {
                "passwordCredentials": [{"restrictionType": "passwordAddition", "maxLifetime": null, "restrictForAppsCreatedAfterDateTime": "2019-01-01T00:00:00Z"}],
                "keyCredentials": [{"restrictionType": "asymmetricKeyLifetime", "maxLifetime": "P90D"}]}})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let app = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"displayName": "pol-app"})),
        )
        .await;
    let obj = app.body["id"].as_str().unwrap().to_string();
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addPassword"),
            &g,
            Some(json!({"passwordCredential": {}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.code(), "CredentialTypeNotAllowedAsPerAppPolicy");
    assert!(r.text.contains("00000000-0000-0000-0000-000000000000"));
    let long = TestCert::new(KeySize::Rsa2048, 365);
    let key =
        |c: &TestCert| json!({"type": "AsymmetricX509Cert", "usage": "Verify", "key": c.b64()});
    let r = emu
        .graph(
            Method::PATCH,
            &format!("/applications/{obj}"),
            &g,
            Some(json!({"keyCredentials": [key(&long)]})),
        )
        .await;
    assert_eq!(
        r.code(),
        "CredentialInvalidLifetimeAsPerAppPolicy",
        "{}",
        r.text
    );
    assert_eq!(
        r.body["error"]["details"][0]["target"], "EndDate",
        "{}",
        r.text
    );
    let r = emu
        .graph(
            Method::POST,
            "/applications",
            &g,
            Some(json!({"displayName": "x", "keyCredentials": [key(&long)]})),
        )
        .await;
    assert_eq!(r.code(), "CredentialInvalidLifetimeAsPerAppPolicy");
    // An explicit end date within the cap is accepted.
    let end = (chrono::Utc::now() + chrono::Duration::days(80)).to_rfc3339();
    let mut capped = key(&long);
    capped["endDateTime"] = json!(end);
    let r = emu
        .graph(
            Method::PATCH,
            &format!("/applications/{obj}"),
            &g,
            Some(json!({"keyCredentials": [capped]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // Service principals are governed by servicePrincipalRestrictions (empty here).
    let sp = emu
        .graph(
            Method::POST,
            "/servicePrincipals",
            &g,
            Some(json!({"appId": app.body["appId"]})),
        )
        .await;
    let sp_id = sp.body["id"].as_str().unwrap().to_string();
    let r = emu
        .graph(
            Method::POST,
            &format!("/servicePrincipals/{sp_id}/addPassword"),
            &g,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // An assigned policy replaces the default: this one allows passwords up to 30 days.
    let p = emu
        .graph(Method::POST, "/policies/appManagementPolicies", &g,
            Some(json!({"displayName": "short secrets", "isEnabled": true, "restrictions": {
                "passwordCredentials": [{"restrictionType": "passwordLifetime", "maxLifetime": "P30D"}]}})))
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.text);
    let pid = p.body["id"].as_str().unwrap().to_string();
    let r = emu
        .graph(Method::POST, &format!("/applications/{obj}/appManagementPolicies/$ref"), &g,
            Some(json!({"@odata.id": format!("{}/v1.0/policies/appManagementPolicies/{pid}", emu.var("AZURE_GRAPH_ENDPOINT"))})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let listed = emu
        .graph(
            Method::GET,
            &format!("/applications/{obj}/appManagementPolicies"),
            &g,
            None,
        )
        .await;
    assert_eq!(listed.body["value"][0]["id"], pid.as_str());
    let applies = emu
        .graph(
            Method::GET,
            &format!("/policies/appManagementPolicies/{pid}/appliesTo"),
            &g,
            None,
        )
        .await;
    assert_eq!(applies.body["value"][0]["id"], obj.as_str());
    let end31 = (chrono::Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addPassword"),
            &g,
            Some(json!({"passwordCredential": {"endDateTime": end31}})),
        )
        .await;
    assert_eq!(
        r.code(),
        "CredentialInvalidLifetimeAsPerAppPolicy",
        "{}",
        r.text
    );
    assert!(r.text.contains(&pid));
    let end29 = (chrono::Utc::now() + chrono::Duration::days(29)).to_rfc3339();
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addPassword"),
            &g,
            Some(json!({"passwordCredential": {"endDateTime": end29}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Unassigned: the default applies again.
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/applications/{obj}/appManagementPolicies/{pid}/$ref"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emu
        .graph(
            Method::POST,
            &format!("/applications/{obj}/addPassword"),
            &g,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.code(), "CredentialTypeNotAllowedAsPerAppPolicy");

    // Policy reads need a policy permission.
    let (_, cid, _, secret) = emu.new_principal(&g, "no-policy-perms").await;
    // new_principal adds an SP password: allowed (SP restrictions are empty).
    let weak = emu.token_for(&cid, &secret, &emu.graph_scope()).await;
    let r = emu
        .graph(
            Method::GET,
            "/policies/defaultAppManagementPolicy",
            &weak,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = emu
        .graph(
            Method::DELETE,
            &format!("/policies/appManagementPolicies/{pid}"),
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn federation_with_the_cluster_issuer() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let issuer = emu.admin(Method::GET, "/cluster-issuer", None).await;
    let iss = issuer.body["issuer"].as_str().unwrap().to_string();
    assert!(iss.starts_with(emu.var("AZURE_AUTHORITY_HOST")) && iss.ends_with('/'));
    // Discovery and JWKS are served under the issuer URL.
    let disco = emu
        .send(
            Method::GET,
            &format!("{iss}.well-known/openid-configuration"),
            None,
            None,
        )
        .await;
    assert_eq!(disco.body["issuer"], iss.as_str());
    let jwks = emu
        .send(
            Method::GET,
            disco.body["jwks_uri"].as_str().unwrap(),
            None,
            None,
        )
        .await;
    assert_eq!(jwks.body, issuer.body["jwks"]);

    let (obj, client_id, _, _) = emu.new_principal(&g, "wi-app").await;
    let subject = "system:serviceaccount:vault:openbao";
    let r = emu
        .graph(Method::POST, &format!("/applications/{obj}/federatedIdentityCredentials"), &g,
            Some(json!({"name": "aks", "issuer": iss, "subject": subject, "audiences": ["api://AzureADTokenExchange"]})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let tenant = emu.var("AZURE_TENANT_ID").to_string();
    let scope = emu.graph_scope();
    let mint = |body: Value| emu.admin(Method::POST, "/cluster-issuer/token", Some(body));
    let t = mint(json!({"subject": subject})).await;
    let token = t.body["token"].as_str().unwrap().to_string();
    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            assertion_form(&client_id, &token, &scope),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Tampered (re-signed claims with the original signature), other subject, expired.
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&e.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 100);
    let tampered = format!("{}.{}.{}", parts[0], e.encode(claims.to_string()), parts[2]);
    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            assertion_form(&client_id, &tampered, &scope),
        )
        .await;
    assert_aad_error(&r, 401, "invalid_client", 700_027);
    let other = mint(json!({"subject": "system:serviceaccount:vault:other"})).await;
    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            assertion_form(&client_id, other.body["token"].as_str().unwrap(), &scope),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_request", 70021);
    let expired = mint(json!({"subject": subject, "lifetime_secs": -10})).await;
    let r = emu
        .post_form(
            &emu.token_url(&tenant),
            assertion_form(&client_id, expired.body["token"].as_str().unwrap(), &scope),
        )
        .await;
    assert_aad_error(&r, 400, "invalid_client", 700_024);
    let r = emu
        .admin(Method::POST, "/cluster-issuer/token", Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// `tags/any(...)` filters on applications, and the admin `created_clock_offset_secs` clock
/// that stamps `createdDateTime` of new applications and `createdOn` of new role
/// assignments (which keep their `description`).
#[tokio::test]
async fn tag_filters_and_the_creation_clock() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let create = |name: &'static str, tags: Value| {
        let (emu, g) = (&emu, &g);
        async move {
            let r = emu
                .graph(
                    Method::POST,
                    "/applications",
                    g,
                    Some(json!({"displayName": name, "tags": tags})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            r.body
        }
    };
    let a = create("vault-tagged-a", json!(["engine:mount:one", "team:x"])).await;
    create("vault-tagged-b", json!(["engine:mount:two"])).await;
    create("vault-untagged", json!([])).await;
    let names = |filter: &str| {
        let (emu, g) = (&emu, &g);
        let filter = filter.to_string();
        async move {
            let url = format!(
                "/applications?$filter={}",
                url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
            );
            let r = emu.graph(Method::GET, &url, g, None).await;
            assert_eq!(r.status, StatusCode::OK, "{filter}: {}", r.text);
            let mut out: Vec<String> = r.body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["displayName"].as_str().unwrap().to_string())
                .collect();
            out.sort();
            out
        }
    };
    assert_eq!(
        names("tags/any(t:t eq 'engine:mount:one')").await,
        ["vault-tagged-a"]
    );
    assert_eq!(
        names("tags/any(t:t eq 'ENGINE:MOUNT:TWO')").await,
        ["vault-tagged-b"]
    );
    assert_eq!(
        names("tags/any(x:startswith(x,'engine:mount:'))").await,
        ["vault-tagged-a", "vault-tagged-b"]
    );
    assert!(names("tags/any(t:t eq 'nothing')").await.is_empty());
    let r = emu
        .graph(
            Method::GET,
            "/applications?$filter=tags/any(t:t%20gt%20'x')",
            &g,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // New objects are stamped with the real time ...
    let created = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let age = chrono::Utc::now() - created(&a["createdDateTime"]);
    assert!(age < chrono::Duration::minutes(5), "{age}");
    // ... or, with the creation clock moved back 30 days, as if made long ago.
    let s = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"created_clock_offset_secs": -30 * 86_400})),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let old = create("vault-old", json!([])).await;
    let age = chrono::Utc::now() - created(&old["createdDateTime"]);
    assert!(age > chrono::Duration::days(29), "{age}");
    let read = emu
        .graph(
            Method::GET,
            &format!("/applications/{}", old["id"].as_str().unwrap()),
            &g,
            None,
        )
        .await;
    assert_eq!(read.body["createdDateTime"], old["createdDateTime"]);

    let (_, _, sp_id, _) = emu.new_principal(&g, "vault-ra-clock").await;
    let arm = emu.root_arm().await;
    let sub = emu.sub_scope();
    let ra_path = format!(
        "{sub}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let put = emu
        .arm(
            Method::PUT,
            &ra_path,
            &arm,
            Some(json!({"properties": {
                "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"),
                "principalId": sp_id,
                "description": "made by mount one"}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text);
    let age = chrono::Utc::now() - created(&put.body["properties"]["createdOn"]);
    assert!(age > chrono::Duration::days(29), "{age}");
    let listed = emu
        .arm(
            Method::GET,
            &format!("{sub}/providers/Microsoft.Authorization/roleAssignments"),
            &arm,
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let mine: Vec<&Value> = listed.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ra| ra["properties"]["principalId"] == json!(sp_id))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["properties"]["description"], "made by mount one");

    let bad = emu
        .admin(
            Method::POST,
            "/settings",
            Some(json!({"created_clock_offset_secs": "soon"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
}

/// A request that has arrived is carried out even when its client stops waiting for the
/// answer (as Azure does): it lands after the client gave up, and the request log records
/// its real status.
#[tokio::test]
async fn a_request_whose_client_gave_up_is_still_carried_out() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    emu.admin(Method::POST, "/settings", Some(json!({"latency_ms": 800})))
        .await;
    let name = "vault-late-landing";
    let sent = emu
        .http
        .post(emu.graph_url("/applications"))
        .bearer_auth(&g)
        .json(&json!({"displayName": name, "signInAudience": "AzureADMyOrg"}))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(
        sent.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{sent:?}"
    );
    emu.admin(Method::POST, "/settings", Some(json!({"latency_ms": 0})))
        .await;
    let filter = format!("/applications?$filter=displayName eq '{name}'");
    let (e, g, filter) = (&emu, &g, &filter);
    eventually("the abandoned creation lands", move || async move {
        let found = e.graph(Method::GET, filter, g, None).await;
        found.body["value"].as_array().is_some_and(|v| v.len() == 1)
    })
    .await;
    let log = emu.admin(Method::GET, "/requests", None).await;
    let posts: Vec<&Value> = log
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/v1.0/applications")
        .collect();
    assert_eq!(posts.len(), 1, "{}", log.text);
    assert_eq!(posts[0]["status"], 201, "{}", log.text);
    assert!(
        posts[0]["finished_ms"].as_u64().unwrap() - posts[0]["started_ms"].as_u64().unwrap() >= 800
    );
}

/// A body larger than any Graph or ARM request is refused before it is read.
#[tokio::test]
async fn an_oversized_body_is_refused() {
    let emu = Emu::start(&[]);
    let g = emu.root_graph().await;
    let r = emu
        .http
        .post(emu.graph_url("/applications"))
        .bearer_auth(&g)
        .header("content-type", "application/json")
        .body(vec![b' '; 5 << 20])
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
