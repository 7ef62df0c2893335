//! Paths: a pattern with named captures, its fields, operations and help.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use regex_lite::Regex;

use super::field::{FieldData, FieldSchema};
use super::HandlerResult;
use crate::logical::{LogicalError, Operation, Request};

/// An operation handler: takes the request and its parsed fields.
pub type HandlerFn =
    Arc<dyn Fn(Request, FieldData) -> BoxFuture<'static, HandlerResult> + Send + Sync>;

/// An existence check: does the object this request addresses exist?
pub type ExistenceFn =
    Arc<dyn Fn(Request, FieldData) -> BoxFuture<'static, Result<bool, LogicalError>> + Send + Sync>;

/// Wraps an async closure as a [`HandlerFn`].
pub fn handler<F, Fut>(f: F) -> HandlerFn
where
    F: Fn(Request, FieldData) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |req, data| Box::pin(f(req, data)))
}

/// Wraps a method of a shared state as a [`HandlerFn`]: `f` gets its own handle on
/// `state` for each request, so a handler is an `async fn(self: Arc<Self>, Request,
/// FieldData)` named by reference (`MyBackend::read_item`) with no closure to write.
pub fn method<S, F, Fut>(state: &Arc<S>, f: F) -> HandlerFn
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let state = state.clone();
    Arc::new(move |req, data| Box::pin(f(state.clone(), req, data)))
}

/// One operation of a path.
#[derive(Clone)]
pub struct OperationHandler {
    /// What runs the operation.
    pub handler: HandlerFn,
    /// One line for OpenAPI and help.
    pub summary: String,
    /// The OpenAPI operation id, without the mount prefix (e.g. `read-configuration`).
    pub operation_id: String,
    /// On a performance standby, answer with [`LogicalError::ReadOnly`] so that the host
    /// forwards the request to the active node (for operations that write storage).
    pub forward_performance_standby: bool,
    /// On a performance secondary, for a mount that is not local, answer with
    /// [`LogicalError::ReadOnly`] so that the host forwards the request to the primary.
    pub forward_performance_secondary: bool,
}

impl OperationHandler {
    /// An operation run by `handler`, documented by `summary` and `operation_id`.
    pub fn new(
        handler: HandlerFn,
        summary: impl Into<String>,
        operation_id: impl Into<String>,
    ) -> Self {
        Self {
            handler,
            summary: summary.into(),
            operation_id: operation_id.into(),
            forward_performance_standby: false,
            forward_performance_secondary: false,
        }
    }

    /// Sets both forwarding flags: the operation writes storage, so only the active node of
    /// the primary cluster may run it (the Go SDK's `ForwardPerformanceStandby` and
    /// `ForwardPerformanceSecondary`).
    pub fn forwarded(mut self) -> Self {
        self.forward_performance_standby = true;
        self.forward_performance_secondary = true;
        self
    }
}

/// A path of a backend.
#[derive(Clone)]
pub struct Path {
    /// A regular expression (anchored by the framework) with named captures for the fields
    /// that come from the URL, e.g. `roles/(?P<name>\w(([\w.-]+)?\w)?)`.
    pub pattern: String,
    /// The declared fields, by name.
    pub fields: BTreeMap<String, FieldSchema>,
    /// The operations, by kind.
    pub operations: BTreeMap<Operation, OperationHandler>,
    /// Decides create versus update for writes; without one, every write is an update.
    pub existence_check: Option<ExistenceFn>,
    /// One line of help.
    pub synopsis: String,
    /// The longer help text.
    pub description: String,
}

impl Path {
    /// A path matching `pattern`, with no fields or operations yet.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            fields: BTreeMap::new(),
            operations: BTreeMap::new(),
            existence_check: None,
            synopsis: String::new(),
            description: String::new(),
        }
    }

    /// Declares a field.
    pub fn field(mut self, name: &str, schema: FieldSchema) -> Self {
        self.fields.insert(name.to_string(), schema);
        self
    }

    /// Declares several fields: `(name, schema)` pairs.
    pub fn fields<'a>(mut self, fields: impl IntoIterator<Item = (&'a str, FieldSchema)>) -> Self {
        for (name, schema) in fields {
            self.fields.insert(name.to_string(), schema);
        }
        self
    }

    /// Adds an operation.
    pub fn operation(mut self, op: Operation, handler: OperationHandler) -> Self {
        self.operations.insert(op, handler);
        self
    }

    /// Sets the existence check.
    pub fn existence_check(mut self, check: ExistenceFn) -> Self {
        self.existence_check = Some(check);
        self
    }

    /// Sets the help text.
    pub fn help(mut self, synopsis: impl Into<String>, description: impl Into<String>) -> Self {
        self.synopsis = synopsis.into();
        self.description = description.into();
        self
    }

    /// Continues with operations that are methods of `state`: see [`PathWith`].
    pub fn with_state<S: Send + Sync + 'static>(self, state: &Arc<S>) -> PathWith<S> {
        PathWith {
            path: self,
            state: state.clone(),
        }
    }
}

/// A [`Path`] whose operations are methods of one shared state `S`, each named by
/// reference:
///
/// ```ignore
/// Path::new("config")
///     .field("url", FieldSchema::new(FieldType::String, "Where to connect."))
///     .with_state(&state)
///     .read(State::read_config, "Read the configuration.", "read-config")
///     .write(State::write_config, "Configure.", "configure")
///     .forwarded(&[Operation::Create, Operation::Update])
///     .into_path()
/// ```
pub struct PathWith<S> {
    path: Path,
    state: Arc<S>,
}

impl<S: Send + Sync + 'static> PathWith<S> {
    /// Adds operation `op`, run by method `f`.
    pub fn on<F, Fut>(
        mut self,
        op: Operation,
        f: F,
        summary: impl Into<String>,
        operation_id: impl Into<String>,
    ) -> Self
    where
        F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler = OperationHandler::new(method(&self.state, f), summary, operation_id);
        self.path.operations.insert(op, handler);
        self
    }

    /// Adds the read operation.
    pub fn read<F, Fut>(self, f: F, summary: &str, operation_id: &str) -> Self
    where
        F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on(Operation::Read, f, summary, operation_id)
    }

    /// Adds the list operation.
    pub fn list<F, Fut>(self, f: F, summary: &str, operation_id: &str) -> Self
    where
        F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on(Operation::List, f, summary, operation_id)
    }

    /// Adds the delete operation.
    pub fn delete<F, Fut>(self, f: F, summary: &str, operation_id: &str) -> Self
    where
        F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on(Operation::Delete, f, summary, operation_id)
    }

    /// Adds create and update, both run by `f` (it can tell them apart by
    /// `req.operation`).
    pub fn write<F, Fut>(self, f: F, summary: &str, operation_id: &str) -> Self
    where
        F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler = OperationHandler::new(method(&self.state, f), summary, operation_id);
        let mut this = self;
        this.path
            .operations
            .insert(Operation::Create, handler.clone());
        this.path.operations.insert(Operation::Update, handler);
        this
    }

    /// Sets the existence check to method `f`.
    pub fn exists<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool, LogicalError>> + Send + 'static,
    {
        let state = self.state.clone();
        self.path.existence_check = Some(Arc::new(move |req, data| {
            Box::pin(f(state.clone(), req, data))
        }));
        self
    }

    /// Marks the operations `ops` already added as forwarded (see
    /// [`OperationHandler::forwarded`]).
    pub fn forwarded(mut self, ops: &[Operation]) -> Self {
        for op in ops {
            if let Some(h) = self.path.operations.remove(op) {
                self.path.operations.insert(op.clone(), h.forwarded());
            }
        }
        self
    }

    /// Sets the help text.
    pub fn help(mut self, synopsis: impl Into<String>, description: impl Into<String>) -> Self {
        self.path = self.path.help(synopsis, description);
        self
    }

    /// The finished path.
    pub fn into_path(self) -> Path {
        self.path
    }
}

impl<S> From<PathWith<S>> for Path {
    fn from(p: PathWith<S>) -> Self {
        p.path
    }
}

/// A path with its compiled pattern.
#[derive(Clone)]
pub(crate) struct CompiledPath {
    pub path: Path,
    pub regex: Regex,
    pub fields: Arc<BTreeMap<String, FieldSchema>>,
    /// What every matching request path starts with (the pattern's leading literal text),
    /// or the whole of it when the pattern is literal: most request paths are told apart
    /// from most patterns without running the regex.
    literal: Literal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Literal {
    Prefix(String),
    Whole(String),
}

/// Characters with a meaning in a pattern (regex-lite's syntax).
const META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
];

impl Literal {
    fn of(pattern: &str) -> Self {
        // An alternation anywhere could make the text before it optional.
        if pattern.contains('|') {
            return Self::Prefix(String::new());
        }
        match pattern.find(META) {
            None => Self::Whole(pattern.to_string()),
            Some(at) => {
                let mut prefix = pattern[..at].to_string();
                // A quantifier applies to the character before it.
                if matches!(pattern[at..].chars().next(), Some('?' | '*' | '{')) {
                    prefix.pop();
                }
                Self::Prefix(prefix)
            }
        }
    }
}

impl CompiledPath {
    pub fn compile(path: Path) -> Result<Self, regex_lite::Error> {
        let regex = Regex::new(&format!("^(?:{})$", path.pattern))?;
        let fields = Arc::new(path.fields.clone());
        let literal = Literal::of(&path.pattern);
        Ok(Self {
            path,
            regex,
            fields,
            literal,
        })
    }

    /// The named captures of `request_path`, if this path matches it.
    pub fn captures(&self, request_path: &str) -> Option<Vec<(String, String)>> {
        match &self.literal {
            Literal::Whole(text) => return (text == request_path).then(Vec::new),
            Literal::Prefix(prefix) if !request_path.starts_with(prefix.as_str()) => return None,
            Literal::Prefix(_) => {}
        }
        let caps = self.regex.captures(request_path)?;
        Some(
            self.regex
                .capture_names()
                .flatten()
                .filter_map(|name| {
                    caps.name(name)
                        .map(|m| (name.to_string(), m.as_str().to_string()))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        hits: std::sync::atomic::AtomicUsize,
    }

    impl Counter {
        async fn hit(self: Arc<Self>, _req: Request, _data: FieldData) -> HandlerResult {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(None)
        }

        async fn exists(
            self: Arc<Self>,
            _req: Request,
            _data: FieldData,
        ) -> Result<bool, LogicalError> {
            Ok(self.hits.load(std::sync::atomic::Ordering::SeqCst) > 0)
        }
    }

    #[tokio::test]
    async fn operations_are_methods_of_one_state() {
        let state = Arc::new(Counter {
            hits: Default::default(),
        });
        let path: Path = Path::new("thing")
            .with_state(&state)
            .read(Counter::hit, "Read.", "read-thing")
            .write(Counter::hit, "Write.", "write-thing")
            .exists(Counter::exists)
            .forwarded(&[Operation::Create, Operation::Update])
            .into();
        let ops: Vec<_> = path.operations.keys().cloned().collect();
        assert_eq!(
            ops,
            vec![Operation::Create, Operation::Read, Operation::Update]
        );
        assert!(path.operations[&Operation::Update].forward_performance_standby);
        assert!(path.operations[&Operation::Create].forward_performance_secondary);
        assert!(!path.operations[&Operation::Read].forward_performance_standby);
        let storage: Arc<dyn crate::logical::Storage> =
            Arc::new(crate::logical::InmemStorage::new());
        let data = || FieldData::new(Default::default(), Arc::default());
        let req = || Request::new(Operation::Read, "thing", storage.clone());
        let check = path.existence_check.clone().unwrap();
        assert!(!check(req(), data()).await.unwrap());
        for op in [Operation::Read, Operation::Update] {
            (path.operations[&op].handler)(req(), data()).await.unwrap();
        }
        assert!(check(req(), data()).await.unwrap());
        assert_eq!(state.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(
            Arc::strong_count(&state),
            4,
            "one handle per operation and check"
        );
    }

    #[test]
    fn captures_named_groups_and_anchors() {
        let p = CompiledPath::compile(Path::new(r"roles/(?P<name>\w(([\w.-]+)?\w)?)")).unwrap();
        assert_eq!(
            p.captures("roles/my-role.v2"),
            Some(vec![("name".to_string(), "my-role.v2".to_string())])
        );
        assert_eq!(
            p.captures("roles/x"),
            Some(vec![("name".into(), "x".into())])
        );
        assert!(p.captures("roles/-bad").is_none());
        assert!(p.captures("roles/a/b").is_none());
        assert!(p.captures("xroles/a").is_none());
        let list = CompiledPath::compile(Path::new("roles/?")).unwrap();
        assert!(list.captures("roles").is_some());
        assert!(list.captures("roles/").is_some());
        assert!(list.captures("roles//").is_none());
    }

    #[test]
    fn literal_text_decides_before_the_regex_and_agrees_with_it() {
        assert_eq!(Literal::of("config"), Literal::Whole("config".into()));
        assert_eq!(
            Literal::of(r"roles/(?P<name>\w+)"),
            Literal::Prefix("roles/".into())
        );
        assert_eq!(Literal::of("roles/?"), Literal::Prefix("roles".into()));
        assert_eq!(Literal::of("ab*c"), Literal::Prefix("a".into()));
        assert_eq!(Literal::of("a{2}"), Literal::Prefix(String::new()));
        assert_eq!(Literal::of("config|info"), Literal::Prefix(String::new()));
        assert_eq!(Literal::of(r"a\.b"), Literal::Prefix("a".into()));
        // The fast path and the regex agree on every pattern and path here.
        let patterns = [
            "config",
            "roles/?",
            r"roles/(?P<name>\w(([\w.-]+)?\w)?)",
            "creds/(?P<role>.+)",
            "ab*c",
            "a{2}b",
            "config|info",
            "rotate-root",
            r"x\.y",
        ];
        let paths = [
            "",
            "config",
            "configx",
            "xconfig",
            "roles",
            "roles/",
            "roles/a",
            "roles/a.b",
            "creds/",
            "creds/r",
            "ac",
            "abbbc",
            "aab",
            "info",
            "rotate-root",
            "x.y",
            "xzy",
        ];
        for pattern in patterns {
            let compiled = CompiledPath::compile(Path::new(pattern)).unwrap();
            for path in paths {
                assert_eq!(
                    compiled.captures(path).is_some(),
                    compiled.regex.is_match(path),
                    "pattern {pattern:?}, path {path:?}"
                );
            }
        }
    }
}
