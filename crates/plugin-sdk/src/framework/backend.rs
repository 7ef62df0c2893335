//! A backend made of paths and secret types: routing, field validation, existence checks,
//! help and OpenAPI, renew and revoke, and the periodic rollback of the write-ahead log.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use super::cache::CachedStorage;
use super::field::FieldData;
use super::path::{CompiledPath, Path};
use super::secret::{SecretType, SECRET_TYPE_KEY};
use super::{openapi, wal, HandlerResult};
use crate::logical::{
    self, storage_writable, BackendType, LogicalError, Map, Operation, Request, Response,
    SpecialPaths, Storage, SystemView,
};

/// Periodic work, run on each rollback tick of the host (about once a minute).
pub type PeriodicFn =
    Arc<dyn Fn(Request) -> BoxFuture<'static, Result<(), LogicalError>> + Send + Sync>;

/// Undoes the work a write-ahead-log entry covers: `(request, kind, data)`. `Ok` removes the
/// entry.
pub type WalRollbackFn = Arc<
    dyn Fn(Request, String, Value) -> BoxFuture<'static, Result<(), LogicalError>> + Send + Sync,
>;

type InitFn = Arc<dyn Fn(Request) -> BoxFuture<'static, Result<(), LogicalError>> + Send + Sync>;
type InvalidateFn = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;
type CleanFn = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Builds a [`Backend`].
pub struct BackendBuilder {
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
    system_view: Option<Arc<dyn SystemView>>,
}

impl BackendBuilder {
    pub fn new(help: impl Into<String>) -> Self {
        Self {
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
            system_view: None,
        }
    }

    pub fn backend_type(mut self, t: BackendType) -> Self {
        self.backend_type = t;
        self
    }

    pub fn path(mut self, path: Path) -> Self {
        self.paths.push(path);
        self
    }

    pub fn secret(mut self, secret: SecretType) -> Self {
        self.secrets.push(secret);
        self
    }

    pub fn special_paths(mut self, paths: SpecialPaths) -> Self {
        self.special_paths = paths;
        self
    }

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

    /// The host's system view: with it, periodic and rollback work runs only where the
    /// mount's storage is writable (see [`storage_writable`]); a standby skips it.
    pub fn system_view(mut self, view: Arc<dyn SystemView>) -> Self {
        self.system_view = Some(view);
        self
    }

    pub fn on_initialize(mut self, f: InitFn) -> Self {
        self.init = Some(f);
        self
    }

    pub fn on_invalidate(mut self, f: InvalidateFn) -> Self {
        self.invalidate = Some(f);
        self
    }

    pub fn on_cleanup(mut self, f: CleanFn) -> Self {
        self.clean = Some(f);
        self
    }

    /// The backend, serving from `storage` through a read cache.
    pub fn build(self, storage: Arc<dyn Storage>) -> Result<Backend, String> {
        let paths = self
            .paths
            .into_iter()
            .map(|p| {
                let pattern = p.pattern.clone();
                CompiledPath::compile(p)
                    .map_err(|e| format!("invalid path pattern {pattern:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Backend {
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
            system_view: self.system_view,
            storage: Arc::new(CachedStorage::new(storage)),
        })
    }
}

/// A backend built from paths; implements [`logical::Backend`].
pub struct Backend {
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
    system_view: Option<Arc<dyn SystemView>>,
    storage: Arc<CachedStorage>,
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
        let data = Self::field_data(path, &req, captures);
        data.validate().map_err(LogicalError::BadRequest)?;
        let unknown = data.unknown_fields();
        let mut resp = (op.handler)(req, data).await?;
        if let Some(r) = resp.as_mut() {
            if !unknown.is_empty() && !r.is_error() {
                r.add_warning(format!(
                    "Endpoint ignored these unrecognized parameters: {unknown:?}"
                ));
            }
        }
        Ok(resp)
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
            Operation::Renew => match &secret_type.renew {
                Some(renew) => renew(req, data).await,
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
        if let Some(view) = &self.system_view {
            match storage_writable(view.as_ref()).await {
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
            match rollback(req.clone(), entry.kind.clone(), entry.data).await {
                Ok(()) => {
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
        let doc = openapi::document(&self.help, &prefix, &paths);
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
    use crate::logical::{replication, Backend as _, InmemStorage, StorageEntry};
    use serde_json::json;

    fn kv_backend(storage: Arc<dyn Storage>) -> Backend {
        let read = handler(|req: Request, data: FieldData| async move {
            let key = format!("kv/{}", data.str("name"));
            Ok(match req.storage.get(&key).await? {
                Some(e) => Some(Response::with_data(e.decode()?)),
                None => None,
            })
        });
        let write = handler(|req: Request, data: FieldData| async move {
            let key = format!("kv/{}", data.str("name"));
            let value =
                object(json!({"value": data.str("value"), "ttl": data.duration("ttl").as_secs()}));
            req.storage.put(StorageEntry::json(key, &value)?).await?;
            Ok(None)
        });
        let exists = Arc::new(
            |req: Request, data: FieldData| -> BoxFuture<'static, Result<bool, LogicalError>> {
                Box::pin(async move {
                    Ok(req
                        .storage
                        .get(&format!("kv/{}", data.str("name")))
                        .await?
                        .is_some())
                })
            },
        );
        BackendBuilder::new("A test key/value backend.")
            .path(
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
            .build(storage)
            .unwrap()
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
    async fn rollback_is_unsupported_without_work() {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let b = kv_backend(storage.clone());
        let err = b
            .handle_request(req(Operation::Rollback, "", json!(null), storage))
            .await
            .unwrap_err();
        assert_eq!(err, LogicalError::UnsupportedOperation);
    }

    /// A system view reporting a fixed replication state.
    struct Replication(i32);

    #[async_trait]
    impl SystemView for Replication {
        async fn default_lease_ttl(&self) -> Result<Duration, logical::SystemViewError> {
            Ok(Duration::from_secs(60))
        }
        async fn max_lease_ttl(&self) -> Result<Duration, logical::SystemViewError> {
            Ok(Duration::from_secs(60))
        }
        async fn tainted(&self) -> Result<bool, logical::SystemViewError> {
            Ok(false)
        }
        async fn replication_state(&self) -> Result<i32, logical::SystemViewError> {
            Ok(self.0)
        }
        async fn local_mount(&self) -> Result<bool, logical::SystemViewError> {
            Ok(false)
        }
        async fn plugin_env(&self) -> Result<logical::PluginEnv, logical::SystemViewError> {
            Ok(logical::PluginEnv::default())
        }
        async fn generate_identity_token(
            &self,
            _audience: &str,
            _ttl: Duration,
        ) -> Result<(String, Duration), logical::SystemViewError> {
            Err(logical::SystemViewError::Unsupported("identity tokens"))
        }
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
                Ok(())
            })
        });
        let b = BackendBuilder::new("rb")
            .wal_rollback(f, Duration::from_secs(600))
            .system_view(Arc::new(Replication(state)))
            .build(storage)
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

        let active = replication::PERFORMANCE_PRIMARY | replication::DR_DISABLED;
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

    #[tokio::test]
    async fn standbys_and_dr_secondaries_do_no_rollback_work() {
        for state in [
            replication::PERFORMANCE_STANDBY | replication::DR_DISABLED,
            replication::DR_SECONDARY,
            replication::PERFORMANCE_SECONDARY,
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
            replication::PERFORMANCE_DISABLED | replication::DR_DISABLED,
        );
        b.handle_request(req(Operation::Rollback, "", json!(null), storage.clone()))
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().as_slice(), ["x"]);
    }
}
