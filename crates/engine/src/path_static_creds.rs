//! `static-creds/<name>`: the current secret of a static role (no lease), and
//! `static-creds/<name>/token`: an access token obtained with it (no lease).

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use super::backend::AzureBackend;
use super::path_roles::NAME_PATTERN;
use super::path_static_roles::first_secret;
use super::static_store::{self, StaticRole};
use vault_plugin_sdk::framework::{FieldData, FieldSchema, FieldType, HandlerResult, Path};
use vault_plugin_sdk::logical::{LogicalError, Map, Request, Response};

const SYNOPSIS: &str = "The current credentials of a static role.";
const DESCRIPTION: &str = "Returns client_id, client_secret, secret_id, expiration and metadata \
(the role's, merged over the request's metadata) of the static role's current secret; for a \
certificate role certificate, private_key (PEM, PKCS#8), thumbprint, key_id and tenant_id instead \
of client_secret. There is no lease: the credential stays the same until the role rotates. A role created with defer_initial_creds \
gets its first secret on the first read.";
const TOKEN_SYNOPSIS: &str = "An access token obtained with a static role's current secret.";
const TOKEN_DESCRIPTION: &str = "Requests a token for scope (for example \
https://graph.microsoft.com/.default, passed to Entra ID unchanged) with the role's current secret \
(a certificate role: a client assertion signed with its current key) and returns Entra ID's answer: access_token, expires_in, ext_expires_in, token_type. No lease; the \
token cannot be revoked. 400 if the role has no secret yet.";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new(format!("static-creds/(?P<name>{NAME_PATTERN})"))
        .field(
            "name",
            FieldSchema::new(FieldType::LowerCaseString, "Name of the static role.").required(),
        )
        .field(
            "metadata",
            FieldSchema::new(
                FieldType::KvPairs,
                "Request metadata (key=value pairs), merged under the role's metadata.",
            ),
        )
        .with_state(b)
        .read(
            AzureBackend::static_creds_read,
            "Read a static role's credentials.",
            "read-static-credentials",
        )
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

pub fn token_path(b: &Arc<AzureBackend>) -> Path {
    Path::new(format!("static-creds/(?P<name>{NAME_PATTERN})/token"))
        .field(
            "name",
            FieldSchema::new(FieldType::LowerCaseString, "Name of the static role.").required(),
        )
        .field(
            "scope",
            FieldSchema::new(
                FieldType::String,
                "The scope of the token, such as https://graph.microsoft.com/.default.",
            )
            .required(),
        )
        .with_state(b)
        .write(
            AzureBackend::static_token_write,
            "Get an access token with a static role's secret.",
            "static-role-access-token",
        )
        .help(TOKEN_SYNOPSIS, TOKEN_DESCRIPTION)
        .into_path()
}

/// The host's read-only storage error, as the host words it.
const READ_ONLY: &str = "cannot write to readonly storage";

/// A read that must write (a deferred role's first secret) on a node whose storage is
/// read-only: the host forwards the request to the active node only if it gets its own error
/// back word for word.
fn read_only_unchanged(e: LogicalError) -> LogicalError {
    match &e {
        LogicalError::Internal(m) if m.contains(READ_ONLY) => LogicalError::internal(READ_ONLY),
        _ => e,
    }
}

fn missing_role(name: &str) -> LogicalError {
    LogicalError::bad_request(format!("static role '{name}' does not exist"))
}

fn no_secret(name: &str) -> LogicalError {
    LogicalError::bad_request(format!(
        "static role '{name}' has no usable secret yet: rotate it first (write to rotate-role/{name})"
    ))
}

impl AzureBackend {
    async fn static_creds_read(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let storage = req.storage.clone();
        let mut role = static_store::get(storage.as_ref(), &name)
            .await?
            .ok_or_else(|| missing_role(&name))?;
        if role.current.is_none() && role.defer_initial_creds {
            role = first_secret(&self, &storage, &name)
                .await
                .map_err(read_only_unchanged)?;
        }
        let current = role
            .current
            .as_ref()
            .filter(|c| c.usable())
            .ok_or_else(|| no_secret(&name))?;
        let mut metadata = data.map_ok("metadata")?.unwrap_or_default();
        for (k, v) in &role.metadata {
            metadata.insert(k.clone(), json!(v));
        }
        let mut out = Map::new();
        out.insert("client_id".into(), json!(role.application_id));
        if role.is_certificate() {
            let tenant_id = self
                .client(storage.as_ref())
                .await?
                .settings()
                .tenant_id
                .clone();
            out.insert("certificate".into(), json!(current.certificate));
            out.insert("private_key".into(), json!(current.private_key));
            out.insert("thumbprint".into(), json!(current.thumbprint));
            out.insert("key_id".into(), json!(current.key_id));
            out.insert("tenant_id".into(), json!(tenant_id));
        } else {
            out.insert("client_secret".into(), json!(current.client_secret));
        }
        out.insert("secret_id".into(), json!(current.key_id));
        out.insert(
            "expiration".into(),
            json!(current
                .expiration
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
        );
        out.insert("metadata".into(), serde_json::Value::Object(metadata));
        Ok(Some(Response::with_data(out)))
    }

    async fn static_token_write(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let scope = data.str("scope")?;
        if scope.trim().is_empty() {
            return Err(LogicalError::bad_request("missing required field 'scope'"));
        }
        let storage = req.storage.as_ref();
        let role: StaticRole = static_store::get(storage, &name)
            .await?
            .ok_or_else(|| missing_role(&name))?;
        let current = role
            .current
            .as_ref()
            .filter(|c| c.usable())
            .ok_or_else(|| no_secret(&name))?;
        let token = if role.is_certificate() {
            self.static_certificate_token(storage, &role, current, scope.trim())
                .await
        } else {
            self.static_token(storage, &role, &current.client_secret, scope.trim())
                .await
        };
        let token = token.map_err(|e| {
            let message = format!(
                "Entra ID refused a token for static role '{name}': {}",
                e.message()
            );
            match e.status() {
                Some(s) if (400..500).contains(&s) => LogicalError::BadRequest(message),
                _ => LogicalError::Internal(message),
            }
        })?;
        let expires_in = token
            .expires_at
            .duration_since(std::time::SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut out = Map::new();
        out.insert("access_token".into(), json!(token.token.expose()));
        out.insert("token_type".into(), json!("Bearer"));
        out.insert("expires_in".into(), json!(expires_in));
        out.insert("ext_expires_in".into(), json!(expires_in));
        out.insert(
            "expires_on".into(),
            json!((Utc::now() + chrono::Duration::seconds(expires_in as i64)).timestamp()),
        );
        Ok(Some(Response::with_data(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_errors_reach_the_host_word_for_word() {
        let wrapped = LogicalError::internal(
            "storage put of \"wal/x\" failed: cannot write to readonly storage",
        );
        assert_eq!(
            read_only_unchanged(wrapped),
            LogicalError::internal(READ_ONLY)
        );
        let other = LogicalError::bad_request("static role 'x' does not exist");
        assert_eq!(read_only_unchanged(other.clone()), other);
    }
}
