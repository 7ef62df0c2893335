//! The emulator against the Azure SDK for Rust (`azure_identity`): the client-secret flow over
//! https, and the Azure Arc challenge flow when the agent's real token folder is writable.
//!
//! This file is its own test binary because it sets process environment variables.

mod emulator_support;

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
};
use emulator_support::Emu;
use reqwest::{Method, StatusCode};

const ARC_DIR: &str = "/var/opt/azcmagent/tokens";

#[tokio::test]
async fn azure_identity_works_against_the_emulator() {
    // The Arc client only reads key files from the agent's real folder.
    let arc_usable = std::fs::create_dir_all(ARC_DIR).is_ok()
        && std::fs::write(format!("{ARC_DIR}/.probe"), b"").is_ok();
    let _ = std::fs::remove_file(format!("{ARC_DIR}/.probe"));
    let emu = if arc_usable {
        Emu::start(&["--arc-token-dir", ARC_DIR])
    } else {
        Emu::start(&[])
    };
    // Extra flags come after the helper's own, so this --arc-token-dir wins.

    // Client secret over https, trusting only the emulator's CA.
    std::env::set_var("AZURE_AUTHORITY_HOST", emu.var("AZURE_AUTHORITY_HOST"));
    let options = ClientSecretCredentialOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(emu.http.clone()))),
            ..Default::default()
        },
    };
    let cred = ClientSecretCredential::new(
        emu.var("AZURE_TENANT_ID"),
        emu.var("AZURE_CLIENT_ID").to_string(),
        Secret::new(emu.var("AZURE_CLIENT_SECRET").to_string()),
        Some(options),
    )
    .expect("credential");
    let token = cred
        .get_token(&[&emu.arm_scope()], None)
        .await
        .expect("client secret token");
    let r = emu
        .arm(Method::GET, &emu.sub_scope(), token.token.secret(), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A wrong secret is an error the SDK surfaces.
    let bad = ClientSecretCredential::new(
        emu.var("AZURE_TENANT_ID"),
        emu.var("AZURE_CLIENT_ID").to_string(),
        Secret::new("wrong".to_string()),
        Some(ClientSecretCredentialOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(Arc::new(emu.http.clone()))),
                ..Default::default()
            },
        }),
    )
    .expect("credential");
    let err = bad.get_token(&[&emu.arm_scope()], None).await.unwrap_err();
    assert!(
        err.to_string().contains("7000215") || format!("{err:?}").contains("7000215"),
        "{err:?}"
    );

    if !arc_usable {
        azure_emulator::testing::skip(
            "the Arc part of the SDK test",
            &format!("{ARC_DIR} is not writable (run as root)"),
        );
        return;
    }
    std::env::set_var("IDENTITY_ENDPOINT", emu.var("IDENTITY_ENDPOINT"));
    std::env::set_var("IMDS_ENDPOINT", emu.var("IMDS_ENDPOINT"));
    std::env::remove_var("IDENTITY_HEADER");
    std::env::remove_var("MSI_ENDPOINT");
    let mi = ManagedIdentityCredential::new(None).expect("managed identity credential");
    let token = mi
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .expect("Arc token");
    let r = emu
        .arm(Method::GET, &emu.sub_scope(), token.token.secret(), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A realm outside the folder is refused by the SDK (a fresh credential has no cache).
    emu.admin(
        Method::POST,
        "/settings",
        Some(serde_json::json!({"arc_realm_override": "/etc/hostname"})),
    )
    .await;
    let mi = ManagedIdentityCredential::new(None).expect("managed identity credential");
    assert!(mi
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .is_err());
}
