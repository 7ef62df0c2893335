//! A backend made of paths and secret types: routing, field validation, existence checks,
//! help and OpenAPI, renew and revoke, and the periodic rollback of the write-ahead log.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use super::cache::CachedStorage;
use super::field::FieldData;
use super::path::{CompiledPath, OperationHandler, Path};
use super::secret::{SecretType, SECRET_TYPE_KEY};
use super::wal::RollbackOutcome;
use super::{openapi, wal, HandlerResult};
use crate::logical::{
    self, storage_writable, BackendConfig, BackendType, LogicalError, Map, Operation,
    ReplicationState, Request, Response, SpecialPaths, Storage, SystemView,
};

/// Periodic work, run on each rollback tick of the host (about once a minute).
pub type PeriodicFn =
    Arc<dyn Fn(Request) -> BoxFuture<'static, Result<(), LogicalError>> + Send + Sync>;

/// Undoes the work a write-ahead-log entry covers: `(request, kind, data)`.
/// `Ok(`[`RollbackOutcome::Done`]`)` removes the entry; `Ok(`[`RollbackOutcome::Settle`]`)`
/// keeps it for a second rollback once requests its writer sent can no longer land; an error
/// keeps it for the next tick.
pub type WalRollbackFn = Arc<
    dyn Fn(Request, String, Value) -> BoxFuture<'static, Result<RollbackOutcome, LogicalError>>
        + Send
        + Sync,
>;

/// Wraps a method of a shared state as a [`PeriodicFn`] (see [`super::method`]).
pub fn periodic_method<S, F, Fut>(state: &Arc<S>, f: F) -> PeriodicFn
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), LogicalError>> + Send + 'static,
{
    let state = state.clone();
    Arc::new(move |req| Box::pin(f(state.clone(), req)))
}

/// Wraps a method of a shared state as a [`WalRollbackFn`] (see [`super::method`]).
pub fn wal_rollback_method<S, F, Fut>(state: &Arc<S>, f: F) -> WalRollbackFn
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request, String, Value) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<RollbackOutcome, LogicalError>> + Send + 'static,
{
    let state = state.clone();
    Arc::new(move |req, kind, data| Box::pin(f(state.clone(), req, kind, data)))
}

type InitFn = Arc<dyn Fn(Request) -> BoxFuture<'static, Result<(), LogicalError>> + Send + Sync>;
type InvalidateFn = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;
type CleanFn = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Why a backend's declaration cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A path pattern is not a valid regular expression.
    #[error("invalid path pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as declared.
        pattern: String,
        /// The regular-expression error.
        reason: String,
    },
    /// Two secret types have the same name.
    #[error("secret type {0:?} is registered twice")]
    DuplicateSecretType(String),
}

impl From<BuildError> for logical::FactoryError {
    fn from(e: BuildError) -> Self {
        Self::Build(e.to_string())
    }
}

/// Builds a [`Backend`].
pub struct BackendBuilder {
    name: String,
    version: String,
    help: String,
    backend_type: BackendType,
    paths: Vec<Path>,
    secrets: Vec<SecretType>,
    special_paths: SpecialPaths,
    periodic: Option<PeriodicFn>,
    wal_rollback: Option<WalRollbackFn>,
    wal_rollback_min_age: Duration,
    init: Option<InitFn>,
    invalidate: Option<InvalidateFn>,
    clean: Option<CleanFn>,
}

impl BackendBuilder {
    /// A builder for a backend described by `help` (the backend's help text and OpenAPI
    /// description).
    pub fn new(help: impl Into<String>) -> Self {
        Self {
            name: "plugin".to_string(),
            version: String::new(),
            help: help.into(),
            backend_type: BackendType::Secrets,
            paths: Vec::new(),
            secrets: Vec::new(),
            special_paths: SpecialPaths::default(),
            periodic: None,
            wal_rollback: None,
            wal_rollback_min_age: Duration::from_secs(600),
            init: None,
            invalidate: None,
            clean: None,
        }
    }

    /// The plugin's name, the title of its OpenAPI document (e.g. `Key/value secrets engine`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The plugin's version, as its OpenAPI document shows it.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Secrets engine (the default) or auth method.
    pub fn backend_type(mut self, t: BackendType) -> Self {
        self.backend_type = t;
        self
    }

    /// Adds a path; the first that matches a request serves it.
    pub fn path(mut self, path: impl Into<Path>) -> Self {
        self.paths.push(path.into());
        self
    }

    /// Registers a secret type: its renew and revoke, and the lease settings of every
    /// secret of this type a handler issues.
    pub fn secret(mut self, secret: SecretType) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Paths and storage keys the host treats specially.
    pub fn special_paths(mut self, paths: SpecialPaths) -> Self {
        self.special_paths = paths;
        self
    }

    /// Work run on each of the host's rollback ticks.
    pub fn periodic(mut self, f: PeriodicFn) -> Self {
        self.periodic = Some(f);
        self
    }

    /// Rolls back entries older than `min_age` on each tick (all of them when the host asks
    /// for an immediate rollback).
    pub fn wal_rollback(mut self, f: WalRollbackFn, min_age: Duration) -> Self {
        self.wal_rollback = Some(f);
        self.wal_rollback_min_age = min_age;
        self
    }

    /// Run once storage is writable after the mount is set up.
    pub fn on_initialize(mut self, f: InitFn) -> Self {
        self.init = Some(f);
        self
    }

    /// Run when a storage key changed elsewhere (the cache has already dropped it).
    pub fn on_invalidate(mut self, f: InvalidateFn) -> Self {
        self.invalidate = Some(f);
        self
    }

    /// Run when the instance goes away.
    pub fn on_cleanup(mut self, f: CleanFn) -> Self {
        self.clean = Some(f);
        self
    }

    /// The backend for the mount `config` describes, serving from its storage through a
    /// read cache.
    pub fn build(self, config: &BackendConfig) -> Result<Backend, BuildError> {
        let paths = self
            .paths
            .into_iter()
            .map(|p| {
                let pattern = p.pattern.clone();
                CompiledPath::compile(p).map_err(|e| BuildError::InvalidPattern {
                    pattern,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, s) in self.secrets.iter().enumerate() {
            if self.secrets[..i].iter().any(|o| o.name == s.name) {
                return Err(BuildError::DuplicateSecretType(s.name.clone()));
            }
        }
        Ok(Backend {
            name: self.name,
            version: self.version,
            help: self.help,
            backend_type: self.backend_type,
            paths,
            secrets: self.secrets,
            special_paths: self.special_paths,
            periodic: self.periodic,
            wal_rollback: self.wal_rollback,
            wal_rollback_min_age: self.wal_rollback_min_age,
            init: self.init,
            invalidate: self.invalidate,
            clean: self.clean,
            storage: Arc::new(CachedStorage::new(config.storage.clone())),
            system_view: config.system_view.clone(),
        })
    }
}

/// A backend built from paths; implements [`logical::Backend`].
pub struct Backend {
    name: String,
    version: String,
    help: String,
    backend_type: BackendType,
    paths: Vec<CompiledPath>,
    secrets: Vec<SecretType>,
    special_paths: SpecialPaths,
    periodic: Option<PeriodicFn>,
    wal_rollback: Option<WalRollbackFn>,
    wal_rollback_min_age: Duration,
    init: Option<InitFn>,
    invalidate: Option<InvalidateFn>,
    clean: Option<CleanFn>,
    storage: Arc<CachedStorage>,
    system_view: Arc<dyn SystemView>,
}

impl Backend {
    /// The storage handlers see (the cache in front of the host's storage).
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    fn route(&self, path: &str) -> Option<(&CompiledPath, Map)> {
        self.paths.iter().find_map(|p| {
            p.captures(path).map(|caps| {
                let mut m = Map::new();
                for (k, v) in caps {
                    m.insert(k, Value::String(v));
                }
                (p, m)
            })
        })
    }

    fn field_data(path: &CompiledPath, req: &Request, captures: Map) -> FieldData {
        let mut raw = req.data.clone();
        for (k, v) in captures {
            raw.insert(k, v);
        }
        FieldData::new(raw, path.fields.clone())
    }

    async fn handle_routed(&self, req: Request) -> HandlerResult {
        let (path, captures) = self.route(&req.path).ok_or(LogicalError::UnsupportedPath)?;
        let op = path
            .path
            .operations
            .get(&req.operation)
            .ok_or(LogicalError::UnsupportedOperation)?;
        self.check_forwarding(op).await?;
        let data = Self::field_data(path, &req, captures);
        data.validate().map_err(LogicalError::BadRequest)?;
        if matches!(req.operation, Operation::Create | Operation::Update) {
            data.check_required()?;
        }
        let unknown = data.unknown_fields();
        let mut resp = (op.handler)(req, data).await?;
        if let Some(r) = resp.as_mut() {
            self.complete_secret(r)?;
            if !unknown.is_empty() && !r.is_error() {
                r.add_warning(format!(
                    "Endpoint ignored these unrecognized parameters: {unknown:?}"
                ));
            }
        }
        Ok(resp)
    }

    /// The host's read-only error when `op` must run on another node (see
    /// [`OperationHandler::forward_performance_standby`]); the system view is asked only for
    /// operations that set a flag.
    async fn check_forwarding(&self, op: &OperationHandler) -> Result<(), LogicalError> {
        if !op.forward_performance_standby && !op.forward_performance_secondary {
            return Ok(());
        }
        let state = match self.system_view.replication_state().await {
            Ok(s) => ReplicationState(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the replication state; serving here");
                return Ok(());
            }
        };
        if op.forward_performance_standby && state.is_performance_standby() {
            return Err(LogicalError::ReadOnly);
        }
        if op.forward_performance_secondary
            && state.is_performance_secondary()
            && !self.system_view.local_mount().await.unwrap_or(false)
        {
            return Err(LogicalError::ReadOnly);
        }
        Ok(())
    }

    /// Gives a secret a handler issues the lease settings of its registered type: renewable
    /// exactly when the type can renew, and the type's default TTL when the handler set none.
    fn complete_secret(&self, resp: &mut Response) -> Result<(), LogicalError> {
        let Some(secret) = resp.secret.as_mut() else {
            return Ok(());
        };
        let name = secret
            .internal_data
            .get(SECRET_TYPE_KEY)
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(t) = self.secrets.iter().find(|s| s.name == name) else {
            return Err(LogicalError::internal(format!(
                "the response issues a secret of unregistered type {name:?}"
            )));
        };
        secret.lease.renewable = t.renew.is_some();
        if secret.lease.ttl.is_zero() {
            secret.lease.ttl = t.default_duration;
        }
        Ok(())
    }

    fn secret_type(&self, req: &Request) -> Result<&SecretType, LogicalError> {
        let secret = req
            .secret
            .as_ref()
            .ok_or_else(|| LogicalError::bad_request("request has no secret"))?;
        let name = secret
            .internal_data
            .get(SECRET_TYPE_KEY)
            .and_then(Value::as_str)
            .ok_or_else(|| LogicalError::internal("secret is missing its secret_type"))?;
        self.secrets
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| LogicalError::internal(format!("unknown secret type {name:?}")))
    }

    async fn handle_secret(&self, req: Request) -> HandlerResult {
        let secret_type = self.secret_type(&req)?.clone();
        let data = FieldData::new(req.data.clone(), Arc::default());
        match req.operation {
            // A renewal extends the lease and returns nothing else: whatever data a renew
            // handler sets (the secret it issued, say) is dropped here.
            Operation::Renew => match &secret_type.renew {
                Some(renew) => renew(req, data)
                    .await
                    .map(|resp| resp.map(|r| Response { data: None, ..r })),
                None => Err(LogicalError::bad_request(format!(
                    "secrets of type {} cannot be renewed",
                    secret_type.name
                ))),
            },
            _ => (secret_type.revoke)(req, data).await,
        }
    }

    async fn handle_rollback(&self, req: Request) -> HandlerResult {
        if self.wal_rollback.is_none() && self.periodic.is_none() {
            return Err(LogicalError::UnsupportedOperation);
        }
        {
            match storage_writable(self.system_view.as_ref()).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(
                        "storage is read-only on this node: no periodic or rollback work here"
                    );
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether storage is writable here; skipping this rollback tick");
                    return Ok(None);
                }
            }
        }
        let mut errors = Vec::new();
        if let Some(rollback) = &self.wal_rollback {
            let immediate = req
                .data
                .get("immediate")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Err(e) = self.rollback_wal(&req, rollback, immediate).await {
                errors.push(e);
            }
        }
        if let Some(periodic) = &self.periodic {
            if let Err(e) = periodic(req.clone()).await {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            Err(LogicalError::internal(errors.join("; ")))
        }
    }

    async fn rollback_wal(
        &self,
        req: &Request,
        rollback: &WalRollbackFn,
        immediate: bool,
    ) -> Result<(), String> {
        let storage = self.storage.clone();
        let ids = wal::list(storage.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let now = chrono::Utc::now().timestamp();
        let min_age = i64::try_from(self.wal_rollback_min_age.as_secs()).unwrap_or(i64::MAX);
        let mut errors = Vec::new();
        for id in ids {
            let entry = match wal::get(storage.as_ref(), &id).await {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            if !immediate && !entry.abandoned() && now - entry.created_at < min_age {
                continue;
            }
            // Rolled back once; the second rollback waits until nothing its writer sent can
            // still land.
            let settling = entry.settle_until != 0;
            if settling && !immediate && now < entry.settle_until {
                continue;
            }
            match rollback(req.clone(), entry.kind.clone(), entry.data).await {
                Ok(RollbackOutcome::Settle(window)) => {
                    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
                    // Work ends within `min_age` of its entry's creation (the rollback takes
                    // any entry that old), and what it sent lands within `window`.
                    let quiet = now
                        >= entry
                            .created_at
                            .saturating_add(min_age)
                            .saturating_add(window);
                    if quiet || (settling && now >= entry.settle_until) {
                        if let Err(e) = wal::delete(storage.as_ref(), &id).await {
                            errors.push(e.to_string());
                        }
                    } else if !settling {
                        let until = now.saturating_add(window);
                        tracing::debug!(wal_id = %id, kind = %entry.kind, settle_until = until, "rolled back; rolling back once more when late requests can no longer land");
                        if let Err(e) = wal::settle(storage.as_ref(), &id, until).await {
                            errors.push(e.to_string());
                        }
                    }
                    // Otherwise an immediate rollback inside the window: undone again, kept.
                }
                Ok(RollbackOutcome::Done) => {
                    if let Err(e) = wal::delete(storage.as_ref(), &id).await {
                        errors.push(e.to_string());
                    }
                }
                Err(e) => {
                    tracing::warn!(wal_id = %id, kind = %entry.kind, error = %e, "rollback of write-ahead-log entry failed; will retry");
                    errors.push(format!("rollback of {} entry {id} failed: {e}", entry.kind));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn help(&self, req: &Request) -> Response {
        let prefix = req
            .data
            .get("requestResponsePrefix")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .or_else(|| Some(req.mount_type.as_str()).filter(|t| !t.is_empty()))
            .unwrap_or("plugin")
            .to_string();
        let (text, paths): (String, Vec<&CompiledPath>) = match self.route(&req.path) {
            Some((path, _)) if !req.path.is_empty() => {
                (openapi::path_help_text(&path.path), vec![path])
            }
            _ => (self.backend_help_text(), self.paths.iter().collect()),
        };
        let info = openapi::Info {
            title: &self.name,
            description: &self.help,
            version: &self.version,
        };
        let doc = openapi::document(&info, &prefix, &paths);
        let mut data = Map::new();
        data.insert("help".into(), Value::String(text));
        data.insert("see_also".into(), Value::Null);
        data.insert("openapi".into(), doc);
        Response::with_data(data)
    }

    fn backend_help_text(&self) -> String {
        let mut text = format!("## DESCRIPTION\n\n{}\n\n## PATHS\n\n", self.help.trim());
        text.push_str(
            "The following paths are supported by this backend. To view help for any of the paths \
             below, use the help command with any route matching the path pattern.\n\n",
        );
        for p in &self.paths {
            text.push_str(&format!(
                "    ^{}$\n        {}\n\n",
                p.path.pattern, p.path.synopsis
            ));
        }
        text
    }
}

#[async_trait]
impl logical::Backend for Backend {
    fn backend_type(&self) -> BackendType {
        self.backend_type
    }

    fn special_paths(&self) -> SpecialPaths {
        self.special_paths.clone()
    }

    async fn initialize(&self) -> Result<(), LogicalError> {
        match &self.init {
            Some(init) => init(Request::new(Operation::Update, "", self.storage())).await,
            None => Ok(()),
        }
    }

    async fn handle_request(&self, mut req: Request) -> HandlerResult {
        req.storage = self.storage();
        match req.operation {
            Operation::ResolvePath => Err(LogicalError::UnsupportedOperation),
            Operation::Help => Ok(Some(self.help(&req))),
            Operation::Rollback => self.handle_rollback(req).await,
            Operation::Renew | Operation::Revoke => self.handle_secret(req).await,
            Operation::Other(_) => Err(LogicalError::UnsupportedOperation),
            _ => self.handle_routed(req).await,
        }
    }

    fn handles(&self, operation: &Operation) -> bool {
        !matches!(operation, Operation::ResolvePath | Operation::Other(_))
    }

    async fn handle_existence_check(&self, mut req: Request) -> Result<Option<bool>, LogicalError> {
        req.storage = self.storage();
        let Some((path, captures)) = self.route(&req.path) else {
            return Err(LogicalError::UnsupportedPath);
        };
        let Some(check) = path.path.existence_check.clone() else {
            return Ok(None);
        };
        // Fields are validated when the real operation runs, so that a bad value gets a 400
        // that names it (an error here would reach the caller as a bare internal error).
        let data = Self::field_data(path, &req, captures);
        check(req, data).await.map(Some)
    }

    async fn invalidate_key(&self, key: &str) {
        self.storage.invalidate(key).await;
        if let Some(f) = &self.invalidate {
            f(key.to_string()).await;
        }
    }

    async fn cleanup(&self) {
        if let Some(f) = &self.clean {
            f().await;
        }
        self.storage.clear().await;
    }
}

/// Used by tests and tools: a `json!` object as a [`Map`].
pub fn object(v: Value) -> Map {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{handler, FieldSchema, FieldType, OperationHandler};
    use crate::logical::{Backend as _, StorageEntry};
    use crate::testing::{backend_config, InmemStorage, TestSystemView};
    use serde_json::json;

    fn kv_builder() -> BackendBuilder {
        let read = handler(|req: Request, data: FieldData| async move {
            let key = format!("kv/{}", data.str("name")?);
            Ok(match req.storage.get(&key).await? {
                Some(e) => Some(Response::with_data(e.decode()?)),
                None => None,
            })
        });
        let write = handler(|req: Request, data: FieldData| async move {
            let key = format!("kv/{}", data.str("name")?);
            let value = object(
                json!({"value": data.str("value")?, "ttl": data.duration("ttl")?.as_secs()}),
            );
            req.storage.put(StorageEntry::json(key, &value)?).await?;
            Ok(None)
        });
        let exists = Arc::new(
            |req: Request, data: FieldData| -> BoxFuture<'static, Result<bool, LogicalError>> {
                Box::pin(async move {
                    Ok(req
                        .storage
                        .get(&format!("kv/{}", data.str("name")?))
                        .await?
                        .is_some())
                })
            },
        );
        BackendBuilder::new("A test key/value backend.").path(
            Path::new(r"kv/(?P<name>\w+)")
                .field(
                    "name",
                    FieldSchema::new(FieldType::LowerCaseString, "Name."),
                )
                .field("value", FieldSchema::new(FieldType::String, "Value."))
                .field("ttl", FieldSchema::new(FieldType::DurationSecond, "TTL."))
                .operation(
                    Operation::Read,
                    OperationHandler::new(read, "Read it.", "read"),
                )
                .operation(
                    Operation::Create,
                    OperationHandler::new(write.clone(), "Write it.", "write"),
                )
                .operation(
                    Operation::Update,
                    OperationHandler::new(write, "Write it.", "write"),
                )
                .existence_check(exists)
                .help("Key/value pairs.", "Stores values."),
        )
    }

    fn kv_backend(storage: Arc<dyn Storage>) -> Backend {
        let mut config = backend_config(Arc::new(TestSystemView::default()));
        config.storage = storage;
        kv_builder().build(&config).unwrap()
    }

    fn req(op: Operation, path: &str, data: Value, storage: Arc<dyn Storage>) -> Request {
        Request::new(op, path, storage).with_data(object(data))
    }

    #[tokio::test]
    async fn routes_validates_and_checks_existence() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let b = kv_backend(storage.clone());
        let exists = b
            .handle_existence_check(req(Operation::Update, "kv/A", json!({}), storage.clone()))
            .await
            .unwrap();
        assert_eq!(exists, Some(false));
        b.handle_request(req(
            Operation::Create,
            "kv/A",
            json!({"value": "v", "ttl": "1m"}),
            storage.clone(),
        ))
        .await
        .unwrap();
        let r = b
            .handle_request(req(
                Operation::Read,
                "kv/a",
                json!({"junk": 1}),
                storage.clone(),
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.data.as_ref().unwrap()["ttl"], 60);
        assert_eq!(r.warnings.len(), 1, "unknown parameter warned about");

        let err = b
            .handle_request(req(
                Operation::Update,
                "kv/a",
                json!({"ttl": "soon"}),
                storage.clone(),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LogicalError::BadRequest(ref m) if m.contains("\"ttl\"")),
            "{err:?}"
        );
        let err = b
            .handle_request(req(Operation::Delete, "kv/a", json!({}), storage.clone()))
            .await
            .unwrap_err();
        assert_eq!(err, LogicalError::UnsupportedOperation);
        // What the runtime may answer without building the request, it must be right about.
        use logical::Backend as _;
        for op in [Operation::ResolvePath, Operation::Other("x".into())] {
            assert!(!b.handles(&op));
            let err = b
                .handle_request(req(op, "kv/a", json!({}), storage.clone()))
                .await
                .unwrap_err();
            assert_eq!(err, LogicalError::UnsupportedOperation);
        }
        assert!(b.handles(&Operation::Read) && b.handles(&Operation::Revoke));
        let err = b
            .handle_request(req(Operation::Read, "nope", json!({}), storage.clone()))
            .await
            .unwrap_err();
        assert_eq!(err, LogicalError::UnsupportedPath);
        let err = b
            .handle_request(req(
                Operation::ResolvePath,
                "kv/a",
                json!({}),
                storage.clone(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err, LogicalError::UnsupportedOperation);
    }

    #[tokio::test]
    async fn help_returns_text_and_openapi() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let b = kv_backend(storage.clone());
        let r = b
            .handle_request(req(
                Operation::Help,
                "",
                json!({"requestResponsePrefix": "kvtest"}),
                storage.clone(),
            ))
            .await
            .unwrap()
            .unwrap();
        let d = r.data.unwrap();
        assert!(d["help"].as_str().unwrap().contains("kv/"));
        assert!(
            d["openapi"]["paths"]["/kv/{name}"]["get"].is_object(),
            "{}",
            d["openapi"]
        );
        let r = b
            .handle_request(req(Operation::Help, "kv/x", json!({}), storage))
            .await
            .unwrap()
            .unwrap();
        assert!(r.data.unwrap()["help"]
            .as_str()
            .unwrap()
            .contains("Stores values."));
    }

    #[tokio::test]
    async fn out_of_range_durations_are_bad_requests_naming_the_field() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let b = kv_backend(storage.clone());
        for ttl in [
            json!(1e300),
            json!(-1e300),
            serde_json::from_str::<Value>("18446744073709551616").unwrap(),
            json!("99999999999999999h"),
            json!("NaN"),
        ] {
            let err = b
                .handle_request(req(
                    Operation::Create,
                    "kv/a",
                    json!({ "ttl": ttl }),
                    storage.clone(),
                ))
                .await
                .unwrap_err();
            assert!(
                matches!(err, LogicalError::BadRequest(ref m) if m.contains("field \"ttl\"")),
                "{ttl}: {err:?}"
            );
        }
        assert!(storage.get("kv/a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_renewal_returns_the_lease_without_data() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let secret = SecretType {
            name: "token".into(),
            default_duration: Duration::from_secs(60),
            // A careless renew handler that hands the request's data back.
            renew: Some(handler(|req: Request, _| async move {
                Ok(Some(Response {
                    data: Some(req.data.clone()),
                    secret: req.secret.clone(),
                    ..Response::default()
                }))
            })),
            revoke: handler(|_, _| async move { Ok(None) }),
        };
        let issued = secret.response(
            object(json!({"password": "hunter2"})),
            object(json!({"id": "1"})),
        );
        let b = BackendBuilder::new("test")
            .secret(secret)
            .build(&crate::logical::BackendConfig {
                storage: storage.clone(),
                ..crate::testing::backend_config(
                    Arc::new(crate::testing::TestSystemView::default()),
                )
            })
            .unwrap();
        let mut renew = req(
            Operation::Renew,
            "",
            json!({"password": "hunter2"}),
            storage,
        );
        renew.secret = issued.secret;
        let resp = b.handle_request(renew).await.unwrap().unwrap();
        assert!(resp.data.is_none(), "{:?}", resp.data);
        assert_eq!(resp.secret.unwrap().internal_data["id"], "1");
    }

    #[tokio::test]
    async fn rollback_is_unsupported_without_work() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let b = kv_backend(storage.clone());
        let err = b
            .handle_request(req(Operation::Rollback, "", json!(null), storage))
            .await
            .unwrap_err();
        assert_eq!(err, LogicalError::UnsupportedOperation);
    }

    /// A backend whose rollback records the `data.name` of each entry it rolls back.
    fn rollback_backend(
        storage: Arc<dyn Storage>,
        state: i32,
    ) -> (Backend, Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rec = seen.clone();
        let f: WalRollbackFn = Arc::new(move |_req: Request, _kind: String, data: Value| {
            let rec = rec.clone();
            Box::pin(async move {
                rec.lock()
                    .unwrap()
                    .push(data["name"].as_str().unwrap_or_default().to_string());
                Ok(RollbackOutcome::Done)
            })
        });
        let b = BackendBuilder::new("rb")
            .wal_rollback(f, Duration::from_secs(600))
            .build(&BackendConfig {
                storage,
                ..backend_config({
                    let view = Arc::new(TestSystemView::default());
                    view.set_replication_state(state);
                    view
                })
            })
            .unwrap();
        (b, seen)
    }

    async fn put_raw(storage: &dyn Storage, id: &str, entry: Value) {
        storage
            .put(StorageEntry::new(
                format!("wal/{id}"),
                serde_json::to_vec(&entry).unwrap(),
            ))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rollback_takes_abandoned_entries_at_once_and_waits_for_live_ones() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let now = chrono::Utc::now().timestamp();
        // Young, written by this process and not ended: its work may still be running.
        wal::put(storage.as_ref(), "k", json!({"name": "live"}))
            .await
            .unwrap();
        // Young, but its work ended with the undo incomplete.
        let ended = wal::put(storage.as_ref(), "k", json!({"name": "ended"}))
            .await
            .unwrap();
        wal::mark_ended(storage.as_ref(), &ended).await.unwrap();
        // Young, written by a process that is gone.
        put_raw(
            storage.as_ref(),
            "dead",
            json!({"type": "k", "data": {"name": "dead"}, "created_at": now, "writer": "gone"}),
        )
        .await;
        // Young, in the Go layout (no writer): waits for its age.
        put_raw(
            storage.as_ref(),
            "go",
            json!({"type": "k", "data": {"name": "go"}, "created_at": now}),
        )
        .await;
        // Old, in the Go layout.
        put_raw(
            storage.as_ref(),
            "old",
            json!({"type": "k", "data": {"name": "old"}, "created_at": now - 601}),
        )
        .await;

        let active = ReplicationState::PERFORMANCE_PRIMARY | ReplicationState::DR_DISABLED;
        let (b, seen) = rollback_backend(storage.clone(), active);
        b.handle_request(req(Operation::Rollback, "", json!(null), storage.clone()))
            .await
            .unwrap();
        let mut rolled = seen.lock().unwrap().clone();
        rolled.sort();
        assert_eq!(rolled, vec!["dead", "ended", "old"]);
        let mut left = wal::list(storage.as_ref()).await.unwrap();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    /// A backend whose rollback asks to settle for `window` and counts its calls.
    fn settling_backend(
        storage: Arc<dyn Storage>,
        window: Duration,
    ) -> (Backend, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = calls.clone();
        let f: WalRollbackFn = Arc::new(move |_req: Request, _kind: String, _data: Value| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(RollbackOutcome::Settle(window)) })
        });
        let b = BackendBuilder::new("rb")
            .wal_rollback(f, Duration::from_secs(600))
            .build(&BackendConfig {
                storage,
                ..backend_config(Arc::new(TestSystemView::default()))
            })
            .unwrap();
        (b, calls)
    }

    #[tokio::test]
    async fn a_settling_rollback_keeps_its_entry_until_a_second_rollback_after_the_window() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let id = wal::put(storage.as_ref(), "k", json!({"name": "x"}))
            .await
            .unwrap();
        wal::mark_ended(storage.as_ref(), &id).await.unwrap();
        async fn tick(b: &Backend, immediate: bool, storage: &Arc<dyn Storage>) {
            b.handle_request(req(
                Operation::Rollback,
                "",
                json!({ "immediate": immediate }),
                storage.clone(),
            ))
            .await
            .unwrap();
        }

        // A window still open: rolled back, kept, and not touched again by ordinary ticks.
        let (b, calls) = settling_backend(storage.clone(), Duration::from_secs(3600));
        tick(&b, false, &storage).await;
        let entry = wal::get(storage.as_ref(), &id)
            .await
            .unwrap()
            .expect("kept");
        let now = chrono::Utc::now().timestamp();
        assert!(entry.settle_until >= now + 3590, "{}", entry.settle_until);
        assert!(entry.ended, "the rest of the entry is kept");
        tick(&b, false, &storage).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // An immediate rollback undoes again but keeps the entry while its window is open.
        tick(&b, true, &storage).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(wal::get(storage.as_ref(), &id).await.unwrap().is_some());

        // Once the window has passed, the second rollback is final.
        let mut entry = wal::get(storage.as_ref(), &id).await.unwrap().unwrap();
        entry.settle_until = now - 1;
        // Through the backend's storage (it caches what it read).
        b.storage()
            .put(StorageEntry::json(format!("wal/{id}"), &entry).unwrap())
            .await
            .unwrap();
        tick(&b, false, &storage).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(wal::get(storage.as_ref(), &id).await.unwrap().is_none());

        // An entry older than the rollback's minimum age plus the window: no request of its
        // work can still land, so its first rollback is final.
        put_raw(
            storage.as_ref(),
            "old",
            json!({"type": "k", "data": {}, "created_at": now - 700, "writer": "gone"}),
        )
        .await;
        let (b, calls) = settling_backend(storage.clone(), Duration::from_secs(60));
        tick(&b, false, &storage).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(wal::get(storage.as_ref(), "old").await.unwrap().is_none());

        // A window of zero: kept once, removed by the next tick's rollback.
        let id = wal::put(storage.as_ref(), "k", json!({"name": "y"}))
            .await
            .unwrap();
        wal::mark_ended(storage.as_ref(), &id).await.unwrap();
        let (b, calls) = settling_backend(storage.clone(), Duration::ZERO);
        tick(&b, false, &storage).await;
        assert!(wal::get(storage.as_ref(), &id).await.unwrap().is_some());
        tick(&b, false, &storage).await;
        assert!(wal::get(storage.as_ref(), &id).await.unwrap().is_none());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn standbys_and_dr_secondaries_do_no_rollback_work() {
        for state in [
            ReplicationState::PERFORMANCE_STANDBY | ReplicationState::DR_DISABLED,
            ReplicationState::DR_SECONDARY,
            ReplicationState::PERFORMANCE_SECONDARY,
        ] {
            let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
            let id = wal::put(storage.as_ref(), "k", json!({"name": "x"}))
                .await
                .unwrap();
            wal::mark_ended(storage.as_ref(), &id).await.unwrap();
            let (b, seen) = rollback_backend(storage.clone(), state);
            let r = b
                .handle_request(req(Operation::Rollback, "", json!(null), storage.clone()))
                .await
                .unwrap();
            assert!(r.is_none());
            assert!(seen.lock().unwrap().is_empty(), "state {state}");
            assert_eq!(wal::list(storage.as_ref()).await.unwrap().len(), 1);
        }
        // A single node (replication disabled) does the work.
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let id = wal::put(storage.as_ref(), "k", json!({"name": "x"}))
            .await
            .unwrap();
        wal::mark_ended(storage.as_ref(), &id).await.unwrap();
        let (b, seen) = rollback_backend(
            storage.clone(),
            ReplicationState::PERFORMANCE_DISABLED | ReplicationState::DR_DISABLED,
        );
        b.handle_request(req(Operation::Rollback, "", json!(null), storage.clone()))
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().as_slice(), ["x"]);
    }
}

#[cfg(test)]
mod sdk_fixes {
    use super::*;
    use crate::framework::{handler, secret_response, FieldSchema, FieldType, OperationHandler};
    use crate::logical::Backend as _;
    use crate::testing::{backend_config, TestSystemView};
    use serde_json::json;

    fn ok() -> super::super::HandlerFn {
        handler(|_req: Request, _data: FieldData| async move { Ok(None) })
    }

    fn issuing(type_name: &'static str) -> super::super::HandlerFn {
        handler(move |_req: Request, _data: FieldData| async move {
            let mut resp = secret_response(type_name, Map::new(), Map::new());
            if let Some(s) = resp.secret.as_mut() {
                // A handler that tries to say otherwise than its registered type.
                s.lease.renewable = false;
            }
            Ok(Some(resp))
        })
    }

    fn token_type(renewable: bool) -> SecretType {
        SecretType {
            name: "token".into(),
            default_duration: Duration::from_secs(300),
            renew: renewable.then(ok),
            revoke: ok(),
        }
    }

    fn backend(sv: Arc<TestSystemView>, renewable: bool) -> Backend {
        BackendBuilder::new("Mints tokens.")
            .name("Token minter")
            .version("v1.2.3")
            .path(
                Path::new("items/(?P<name>\\w+)")
                    .field(
                        "name",
                        FieldSchema::new(FieldType::String, "Name.").required(),
                    )
                    .field(
                        "owner",
                        FieldSchema::new(FieldType::String, "Owner.").required(),
                    )
                    .field("note", FieldSchema::new(FieldType::String, "Note."))
                    .operation(
                        Operation::Read,
                        OperationHandler::new(ok(), "Read.", "read-item"),
                    )
                    .operation(
                        Operation::Update,
                        OperationHandler::new(ok(), "Write.", "write-item").forwarded(),
                    ),
            )
            .path(Path::new("mint").operation(
                Operation::Read,
                OperationHandler::new(issuing("token"), "Mint.", "mint"),
            ))
            .path(Path::new("stray").operation(
                Operation::Read,
                OperationHandler::new(issuing("nobody"), "Stray.", "stray"),
            ))
            .secret(token_type(renewable))
            .build(&backend_config(sv))
            .unwrap()
    }

    fn req(b: &Backend, op: Operation, path: &str, data: Value) -> Request {
        Request::new(op, path, b.storage()).with_data(object(data))
    }

    #[tokio::test]
    async fn openapi_names_the_plugin_from_its_metadata() {
        let b = backend(Arc::default(), true);
        let r = b
            .handle_request(req(&b, Operation::Help, "", json!({})))
            .await
            .unwrap()
            .unwrap();
        let doc = &r.data.unwrap()["openapi"];
        assert_eq!(doc["info"]["title"], "Token minter");
        assert_eq!(doc["info"]["version"], "v1.2.3");
        assert_eq!(doc["info"]["description"], "Mints tokens.");
        assert!(!doc.to_string().contains("Azure"));
    }

    #[tokio::test]
    async fn required_fields_are_enforced_and_published() {
        let b = backend(Arc::default(), true);
        let err = b
            .handle_request(req(&b, Operation::Update, "items/a", json!({"note": "n"})))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            LogicalError::BadRequest(
                "Field validation failed: missing required field \"owner\"".into()
            )
        );
        b.handle_request(req(&b, Operation::Update, "items/a", json!({"owner": "o"})))
            .await
            .unwrap();
        // Reads do not need the body's required fields.
        b.handle_request(req(&b, Operation::Read, "items/a", json!({})))
            .await
            .unwrap();
        let r = b
            .handle_request(req(
                &b,
                Operation::Help,
                "",
                json!({"requestResponsePrefix": "t"}),
            ))
            .await
            .unwrap()
            .unwrap();
        let doc = &r.data.unwrap()["openapi"];
        assert_eq!(
            doc["components"]["schemas"]["TWriteItemRequest"]["required"],
            json!(["owner"]),
            "{doc}"
        );
    }

    #[tokio::test]
    async fn writes_are_forwarded_from_standbys_and_secondaries() {
        let sv = Arc::new(TestSystemView::default());
        let b = backend(sv.clone(), true);
        let write = || req(&b, Operation::Update, "items/a", json!({"owner": "o"}));
        let read = || req(&b, Operation::Read, "items/a", json!({}));
        assert_eq!(b.handle_request(write()).await, Ok(None));

        sv.set_replication_state(ReplicationState::PERFORMANCE_STANDBY);
        let err = b.handle_request(write()).await.unwrap_err();
        assert_eq!(err, LogicalError::ReadOnly);
        assert_eq!(err.to_string(), "cannot write to readonly storage");
        assert_eq!(b.handle_request(read()).await, Ok(None), "reads stay local");

        sv.set_replication_state(ReplicationState::PERFORMANCE_SECONDARY);
        assert_eq!(b.handle_request(write()).await, Err(LogicalError::ReadOnly));
        sv.set_local_mount(true);
        assert_eq!(
            b.handle_request(write()).await,
            Ok(None),
            "a local mount writes here"
        );
    }

    #[tokio::test]
    async fn issued_secrets_take_their_registered_types_lease() {
        for renewable in [true, false] {
            let b = backend(Arc::default(), renewable);
            let r = b
                .handle_request(req(&b, Operation::Read, "mint", json!({})))
                .await
                .unwrap()
                .unwrap();
            let s = r.secret.unwrap();
            assert_eq!(s.lease.renewable, renewable);
            assert_eq!(s.lease.ttl, Duration::from_secs(300));
            assert_eq!(s.internal_data[SECRET_TYPE_KEY], "token");
            let via_type = token_type(renewable).response(Map::new(), Map::new());
            assert_eq!(via_type.secret.unwrap().lease, s.lease);
        }
        let b = backend(Arc::default(), true);
        let err = b
            .handle_request(req(&b, Operation::Read, "stray", json!({})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LogicalError::Internal(ref m) if m.contains("\"nobody\"")),
            "{err:?}"
        );
    }

    #[test]
    fn declaration_errors_are_typed() {
        let config = backend_config(Arc::new(TestSystemView::default()));
        let err = BackendBuilder::new("x")
            .path(Path::new("bad(["))
            .build(&config)
            .err()
            .unwrap();
        assert!(
            matches!(err, BuildError::InvalidPattern { ref pattern, .. } if pattern == "bad([")
        );
        let err = BackendBuilder::new("x")
            .secret(token_type(true))
            .secret(token_type(false))
            .build(&config)
            .err()
            .unwrap();
        assert_eq!(err, BuildError::DuplicateSecretType("token".into()));
        let as_factory_error = crate::logical::FactoryError::from(err);
        assert_eq!(
            as_factory_error.to_string(),
            "secret type \"token\" is registered twice"
        );
    }
}
