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

/// One operation of a path.
#[derive(Clone)]
pub struct OperationHandler {
    pub handler: HandlerFn,
    pub summary: String,
    /// The OpenAPI operation id, without the mount prefix (e.g. `read-configuration`).
    pub operation_id: String,
}

impl OperationHandler {
    pub fn new(
        handler: HandlerFn,
        summary: impl Into<String>,
        operation_id: impl Into<String>,
    ) -> Self {
        Self {
            handler,
            summary: summary.into(),
            operation_id: operation_id.into(),
        }
    }
}

/// A path of a backend.
#[derive(Clone)]
pub struct Path {
    /// A regular expression (anchored by the framework) with named captures for the fields
    /// that come from the URL, e.g. `roles/(?P<name>\w(([\w.-]+)?\w)?)`.
    pub pattern: String,
    pub fields: BTreeMap<String, FieldSchema>,
    pub operations: BTreeMap<Operation, OperationHandler>,
    pub existence_check: Option<ExistenceFn>,
    pub synopsis: String,
    pub description: String,
}

impl Path {
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

    pub fn field(mut self, name: &str, schema: FieldSchema) -> Self {
        self.fields.insert(name.to_string(), schema);
        self
    }

    pub fn operation(mut self, op: Operation, handler: OperationHandler) -> Self {
        self.operations.insert(op, handler);
        self
    }

    pub fn existence_check(mut self, check: ExistenceFn) -> Self {
        self.existence_check = Some(check);
        self
    }

    pub fn help(mut self, synopsis: impl Into<String>, description: impl Into<String>) -> Self {
        self.synopsis = synopsis.into();
        self.description = description.into();
        self
    }
}

/// A path with its compiled pattern.
#[derive(Clone)]
pub(crate) struct CompiledPath {
    pub path: Path,
    pub regex: Regex,
    pub fields: Arc<BTreeMap<String, FieldSchema>>,
}

impl CompiledPath {
    pub fn compile(path: Path) -> Result<Self, regex_lite::Error> {
        let regex = Regex::new(&format!("^(?:{})$", path.pattern))?;
        let fields = Arc::new(path.fields.clone());
        Ok(Self {
            path,
            regex,
            fields,
        })
    }

    /// The named captures of `request_path`, if this path matches it.
    pub fn captures(&self, request_path: &str) -> Option<Vec<(String, String)>> {
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
    }
}
