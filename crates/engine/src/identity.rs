//! Who the engine itself signs in as, and the guard that keeps a role from handing out
//! passwords of that identity's application.
//!
//! The identity is the configured (or `AZURE_CLIENT_ID`) client id, plus the application id
//! in the engine's own access token (`appid`/`azp`): the only source for a managed identity,
//! and what the engine really is whatever the config says. The application object of each
//! app id is looked up once per Azure client (a managed identity has none in the tenant).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;

use azure_clients::{AzureClient, Deadline};
use vault_plugin_sdk::logical::LogicalError;

/// The engine's own identity, ids lower-cased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnIdentity {
    /// Application (client) ids the engine signs in with.
    pub app_ids: Vec<String>,
    /// Object ids of those applications in the tenant.
    pub app_object_ids: Vec<String>,
}

impl OwnIdentity {
    /// A 400 if the application (`app_id` and/or `app_object_id`, either may be empty) is
    /// the engine's own.
    pub fn refuse_own_application(
        &self,
        app_id: &str,
        app_object_id: &str,
    ) -> Result<(), LogicalError> {
        let is = |ids: &[String], id: &str| !id.is_empty() && ids.contains(&id.to_lowercase());
        if is(&self.app_ids, app_id) || is(&self.app_object_ids, app_object_id) {
            return Err(LogicalError::bad_request(format!(
                "application_object_id '{app_object_id}' is the application this engine itself \
                 signs in with; a role may not hand out passwords of the engine's own identity"
            )));
        }
        Ok(())
    }
}

/// The application id (`appid` in v1 tokens, `azp` in v2) of an Entra access token; `None`
/// when the token is not a readable JWT.
pub fn token_app_id(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    ["appid", "azp"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(Value::as_str))
        .find(|v| !v.is_empty())
        .map(str::to_lowercase)
}

/// Learns the identity `client` signs in as (one token, from the client's cache, and one
/// Graph lookup per application id).
pub async fn discover(
    client: &AzureClient,
    deadline: Deadline,
) -> Result<OwnIdentity, LogicalError> {
    let mut app_ids = Vec::new();
    let configured = client.settings().client_id.trim().to_lowercase();
    if !configured.is_empty() {
        app_ids.push(configured);
    }
    let token = client
        .token_source()
        .token(&client.settings().cloud.graph_scope(), deadline)
        .await
        .map_err(|e| {
            LogicalError::internal(format!("cannot verify the engine's own identity: {e}"))
        })?;
    if let Some(id) = token_app_id(token.token.expose()) {
        if !app_ids.contains(&id) {
            app_ids.push(id);
        }
    }
    let mut app_object_ids = Vec::new();
    for app_id in &app_ids {
        let app = client
            .graph()
            .find_application_by_app_id(app_id, deadline)
            .await
            .map_err(|e| {
                LogicalError::internal(format!("cannot verify the engine's own identity: {e}"))
            })?;
        if let Some(app) = app {
            app_object_ids.push(app.id.to_lowercase());
        }
    }
    Ok(OwnIdentity {
        app_ids,
        app_object_ids,
    })
}

/// The identity of one Azure client, remembered for as long as that client is in use.
#[derive(Default)]
pub struct IdentityCache {
    known: tokio::sync::Mutex<Option<(Arc<AzureClient>, OwnIdentity)>>,
}

impl IdentityCache {
    pub async fn get(
        &self,
        client: &Arc<AzureClient>,
        deadline: Deadline,
    ) -> Result<OwnIdentity, LogicalError> {
        let mut known = self.known.lock().await;
        if let Some((c, id)) = known.as_ref() {
            if Arc::ptr_eq(c, client) {
                return Ok(id.clone());
            }
        }
        let id = discover(client, deadline).await?;
        *known = Some((client.clone(), id.clone()));
        Ok(id)
    }

    pub async fn clear(&self) {
        *self.known.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let enc = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.sig",
            enc(&serde_json::json!({"alg": "RS256"})),
            enc(&claims)
        )
    }

    #[test]
    fn app_id_from_the_token() {
        assert_eq!(
            token_app_id(&jwt(serde_json::json!({"appid": "AB-1", "oid": "x"}))),
            Some("ab-1".into())
        );
        assert_eq!(
            token_app_id(&jwt(serde_json::json!({"azp": "cd-2"}))),
            Some("cd-2".into())
        );
        assert_eq!(token_app_id("opaque"), None);
        assert_eq!(token_app_id("a.!!!.c"), None);
    }

    #[test]
    fn own_application_is_refused_by_app_id_or_object_id() {
        let me = OwnIdentity {
            app_ids: vec!["app-1".into()],
            app_object_ids: vec!["obj-1".into()],
        };
        assert!(me.refuse_own_application("APP-1", "other").is_err());
        assert!(me.refuse_own_application("", "OBJ-1").is_err());
        assert!(me.refuse_own_application("app-2", "obj-2").is_ok());
        assert!(me.refuse_own_application("", "").is_ok());
        let err = me.refuse_own_application("app-1", "obj-9").unwrap_err();
        assert!(
            matches!(&err, LogicalError::BadRequest(m) if m.contains("is the application this engine itself signs in with")),
            "{err:?}"
        );
    }
}
