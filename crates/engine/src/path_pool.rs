//! `pool/<role>`: the state of a role's warm credential pool (`pool_size`).

use std::sync::Arc;

use serde_json::json;

use super::backend::AzureBackend;
use super::{pool, store};
use vault_plugin_sdk::framework::{FieldData, FieldSchema, FieldType, HandlerResult, Path};
use vault_plugin_sdk::logical::{Map, Request, Response};

/// `pool/<role>`: what the role's pool holds (counts only, never a secret).
pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new(format!(
        "pool/(?P<role>{})",
        super::path_roles::NAME_PATTERN
    ))
    .field(
        "role",
        FieldSchema::new(FieldType::LowerCaseString, "Name of the role.").required(),
    )
    .with_state(b)
    .read(
        AzureBackend::pool_status,
        "Read the state of a role's credential pool.",
        "read-credential-pool",
    )
    .help(
        "The state of a role's credential pool.",
        "Counts of the role's pooled credentials: ready to hand out (current and fresh), being \
created, stale (made for a previous role or configuration, or too old; replaced in the \
background) and being deleted, with the last refill error while refills fail.",
    )
    .into_path()
}

impl AzureBackend {
    async fn pool_status(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let name = data.str("role")?;
        let storage = req.storage.as_ref();
        let size = store::get_role(storage, &name)
            .await?
            .map_or(0, |r| r.pool_size);
        let c = pool::counts(storage, &name).await?;
        let mut out = Map::new();
        out.insert("pool_size".into(), json!(size));
        out.insert("ready".into(), json!(c.ready));
        out.insert("pending".into(), json!(c.pending));
        out.insert("stale".into(), json!(c.stale));
        out.insert("draining".into(), json!(c.draining));
        out.insert("refill_error".into(), json!(self.pool.last_error(&name)));
        out.insert(
            "refill_backing_off".into(),
            json!(self.pool.backing_off(&name)),
        );
        Ok(Some(Response::with_data(out)))
    }
}
