//! `reconcile`: report (read: a dry run) or delete now (write) the Azure objects of this
//! mount that no credential accounts for.

use std::sync::Arc;

use serde_json::json;

use super::backend::AzureBackend;
use super::reconcile::{self, Report};
use azure_clients::Deadline;
use vault_plugin_sdk::framework::{FieldData, FieldSchema, FieldType, HandlerResult, Path};
use vault_plugin_sdk::logical::{Map, Operation, Request, Response};

const SYNOPSIS: &str =
    "Find and delete Azure objects of this mount that no credential accounts for.";
const DESCRIPTION: &str = "Every application the engine makes carries a tag naming this mount and \
is recorded in the mount's storage; its role assignments carry a description naming the mount and \
the application. Reading this path lists, without changing anything, the applications and role \
assignments of this mount that no live lease, write-ahead-log entry, role or pool entry accounts \
for (after a force-revoked lease, a storage restore or a crash), with the reason for each; writing \
it deletes them now. The same pass runs on the active node every reconcile_interval (see config). \
With adopt_go_engine=true, applications named by the Go engine's convention for this mount's roles \
(vault-<uuid> for dynamic roles, vault-<role>-<unix time> for persisted ones, with the role's tags), \
created longer ago than the mount's max lease TTL and not referenced anywhere, are included too: a \
one-time clean-up after migrating a mount. Objects younger than 15 minutes are never included.";

pub fn path(b: &Arc<AzureBackend>) -> Path {
    Path::new("reconcile")
        .field(
            "adopt_go_engine",
            FieldSchema::new(
                FieldType::Bool,
                "Also include applications the Go engine left behind for this mount's roles \
                 (see the path's help). Default false.",
            ),
        )
        .with_state(b)
        .read(
            AzureBackend::reconcile_read,
            "Report what the reconciler would delete (a dry run).",
            "reconcile-dry-run",
        )
        .write(
            AzureBackend::reconcile_write,
            "Delete now what the reconciler finds.",
            "reconcile-run",
        )
        // Deleting writes storage: only the active node does it.
        .forwarded(&[Operation::Create, Operation::Update])
        .help(SYNOPSIS, DESCRIPTION)
        .into_path()
}

fn response(report: Report) -> Response {
    let mut data = Map::new();
    let value = serde_json::to_value(&report).unwrap_or_default();
    if let serde_json::Value::Object(m) = value {
        data.extend(m);
    }
    data.insert(
        "counts".into(),
        json!({
            "applications": report.applications.len(),
            "role_assignments": report.role_assignments.len(),
        }),
    );
    let mut resp = Response::with_data(data);
    for e in &report.errors {
        resp.add_warning(e.clone());
    }
    resp
}

impl AzureBackend {
    async fn reconcile_read(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let adopt = data.bool_ok("adopt_go_engine")?.unwrap_or(false);
        let report = self
            .reconcile(
                req.storage.as_ref(),
                true,
                adopt,
                Deadline::after(reconcile::REQUEST_DEADLINE),
            )
            .await?;
        Ok(Some(response(report)))
    }

    async fn reconcile_write(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let adopt = data.bool_ok("adopt_go_engine")?.unwrap_or(false);
        self.ensure_writable().await?;
        let report = self
            .reconcile(
                req.storage.as_ref(),
                false,
                adopt,
                Deadline::after(reconcile::REQUEST_DEADLINE),
            )
            .await?;
        Ok(Some(response(report)))
    }
}
