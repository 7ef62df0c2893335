//! An example plugin built only on `vault-plugin-sdk`: a key/value store (`kv/<key>`) and
//! tokens minted with a lease (`tokens/<role>`), each recorded in storage until its lease
//! is revoked.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use vault_plugin_sdk::framework::{
    method, object, secret_response, Backend, BackendBuilder, FieldData, FieldSchema, FieldType,
    HandlerResult, Path, SecretType,
};
use vault_plugin_sdk::logical::{
    self, BackendConfig, Factory, FactoryError, LogicalError, Operation, Request, Response,
    StorageEntry,
};
use vault_plugin_sdk::ServeOptions;

const TOKEN: &str = "token";

/// The state every path of one mount shares (this plugin keeps all of it in storage).
struct Kv;

impl Kv {
    async fn read(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let key = format!("kv/{}", data.str("key")?);
        Ok(match req.storage.get(&key).await? {
            Some(entry) => Some(Response::with_data(entry.decode()?)),
            None => None,
        })
    }

    async fn write(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let key = format!("kv/{}", data.str("key")?);
        let value = object(json!({ "value": data.str("value")? }));
        req.storage.put(StorageEntry::json(key, &value)?).await?;
        Ok(None)
    }

    async fn delete(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        req.storage
            .delete(&format!("kv/{}", data.str("key")?))
            .await?;
        Ok(None)
    }

    async fn exists(self: Arc<Self>, req: Request, data: FieldData) -> Result<bool, LogicalError> {
        let key = format!("kv/{}", data.str("key")?);
        Ok(req.storage.get(&key).await?.is_some())
    }

    async fn list_keys(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        Ok(Some(Response::list(req.storage.list("kv/").await?)))
    }

    async fn list_tokens(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        Ok(Some(Response::list(req.storage.list("tokens/").await?)))
    }

    /// Mints a token for `role`; the lease's revoke removes its record.
    async fn mint(self: Arc<Self>, req: Request, data: FieldData) -> HandlerResult {
        let role = data.str("role")?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = object(json!({ "role": role }));
        let entry = StorageEntry::json(format!("tokens/{id}"), &record)?;
        req.storage.put(entry).await?;
        let body = object(json!({ "token": format!("kv.{id}"), "role": role }));
        let mut resp = secret_response(TOKEN, body, object(json!({ "id": id })));
        if let Some(secret) = resp.secret.as_mut() {
            secret.lease.ttl = data.duration("ttl")?;
        }
        Ok(Some(resp))
    }

    async fn renew(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        Ok(Some(Response {
            secret: req.secret.clone(),
            ..Response::default()
        }))
    }

    async fn revoke(self: Arc<Self>, req: Request, _: FieldData) -> HandlerResult {
        let id = req
            .secret
            .as_ref()
            .and_then(|s| s.internal_data.get("id"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| LogicalError::internal("the lease has no token id"))?;
        req.storage.delete(&format!("tokens/{id}")).await?;
        Ok(None)
    }
}

fn backend(config: &BackendConfig) -> Result<Backend, FactoryError> {
    let kv = Arc::new(Kv);
    let key = FieldSchema::new(FieldType::String, "The key.").required();
    let value = FieldSchema::new(FieldType::String, "The value to store.").required();
    let role = FieldSchema::new(FieldType::LowerCaseString, "Who the token is for.");
    let ttl =
        FieldSchema::new(FieldType::DurationSecond, "Lease of the token.").default_value(3600);
    let writes = [Operation::Create, Operation::Update, Operation::Delete];
    let token = SecretType {
        name: TOKEN.into(),
        default_duration: Duration::from_secs(3600),
        renew: Some(method(&kv, Kv::renew)),
        revoke: method(&kv, Kv::revoke),
    };
    Ok(
        BackendBuilder::new("Stores values and mints leased tokens.")
            .name("Key/value example")
            .version(concat!("v", env!("CARGO_PKG_VERSION")))
            .path(
                Path::new("kv/?")
                    .with_state(&kv)
                    .list(Kv::list_keys, "List keys.", "list-keys"),
            )
            .path(
                Path::new(r"kv/(?P<key>[\w.-]+)")
                    .field("key", key)
                    .field("value", value)
                    .with_state(&kv)
                    .read(Kv::read, "Read a value.", "read-value")
                    .write(Kv::write, "Write a value.", "write-value")
                    .delete(Kv::delete, "Delete a value.", "delete-value")
                    .exists(Kv::exists)
                    .forwarded(&writes)
                    .help("Key/value pairs.", "Values are stored as given."),
            )
            .path(Path::new("tokens/?").with_state(&kv).list(
                Kv::list_tokens,
                "List live tokens.",
                "list-tokens",
            ))
            .path(
                Path::new(r"tokens/(?P<role>\w+)")
                    .field("role", role)
                    .field("ttl", ttl)
                    .with_state(&kv)
                    .read(Kv::mint, "Mint a token.", "mint-token")
                    .forwarded(&[Operation::Read])
                    .help(
                        "Leased tokens.",
                        "Each read mints a token; revoking the lease ends it.",
                    ),
            )
            .secret(token)
            .build(config)?,
    )
}

struct KvFactory;

#[async_trait]
impl Factory for KvFactory {
    async fn create(
        &self,
        config: BackendConfig,
    ) -> Result<Arc<dyn logical::Backend>, FactoryError> {
        Ok(Arc::new(backend(&config)?))
    }
}

fn main() -> ExitCode {
    let version = concat!("v", env!("CARGO_PKG_VERSION"));
    let options = ServeOptions::default().log_target(env!("CARGO_CRATE_NAME"));
    vault_plugin_sdk::serve_with(Arc::new(KvFactory), version, options)
}
