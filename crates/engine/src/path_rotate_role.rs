//! `rotate-role/<name>`: rotate a static role's secret now.

use std::sync::Arc;

use serde_json::json;

use super::backend::AzureBackend;
use super::path_roles::NAME_PATTERN;
use super::static_rotation::When;
use vault_plugin_sdk::framework::{FieldData, FieldSchema, FieldType, HandlerResult, Path};
use vault_plugin_sdk::logical::{Map, Operation, Request, Response};

const SYNOPSIS: &str = "Rotate a static role's secret now.";
const DESCRIPTION: &str =
    "Adds a new password (a certificate role: a new certificate as a key \
credential) to the static role's application, proves it obtains a token, makes it current and handles the replaced one as the role says (removed at once, after \
rotation_grace_period with seamless_rotation, or left to expire with keep_previous_until_expiry). \
Rotations of one application are serialised. The next background rotation is one rotation_period \
from now. The secret is never returned here: read static-creds/<name>.";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new(format!("rotate-role/(?P<name>{NAME_PATTERN})"))
        .field(
            "name",
            FieldSchema::new(FieldType::LowerCaseString, "Name of the static role.").required(),
        )
        .with_state(b)
        .write(
            AzureBackend::rotate_role,
            "Rotate a static role's secret.",
            "rotate-static-role",
        )
        .forwarded(&[Operation::Create, Operation::Update])
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

impl AzureBackend {
    async fn rotate_role(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("name")?;
        let rotated = self.rotate_static(&req.storage, &name, When::Now).await?;
        let current = rotated.role.current.as_ref();
        let mut out = Map::new();
        out.insert("secret_id".into(), json!(current.map(|c| c.key_id.clone())));
        if rotated.role.is_certificate() {
            out.insert("key_id".into(), json!(current.map(|c| c.key_id.clone())));
            out.insert(
                "thumbprint".into(),
                json!(current.map(|c| c.thumbprint.clone())),
            );
        }
        out.insert(
            "expiration".into(),
            json!(current
                .and_then(|c| c.expiration)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
        );
        let mut resp = Response::with_data(out);
        resp.warnings = rotated.warnings;
        Ok(Some(resp))
    }
}
