//! Typed request fields: declaration, parsing and validation with errors that name the field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use super::duration::parse_duration;
use crate::logical::{LogicalError, Map};

/// The type of a field, which decides how raw input is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Any string.
    String,
    /// A string stored and compared in lower case (role names).
    LowerCaseString,
    /// A whole number, given as a number or a string holding one.
    Int,
    /// A boolean, given as a boolean, `0`/`1`, or Go's boolean words (`true`, `f`, ...).
    Bool,
    /// Seconds, or a duration string such as `1h30m`; read back as whole seconds.
    DurationSecond,
    /// A list of strings, given as an array or as one comma-separated string.
    CommaStringSlice,
    /// A JSON object, given as an object or as a string holding one.
    Map,
    /// String key/value pairs (Vault's `TypeKVPairs`): an object, a string holding a JSON
    /// object, `k=v` strings (a list, or one comma-separated string). Parsed to an object of
    /// strings.
    KvPairs,
}

impl FieldType {
    /// The OpenAPI type name and format.
    pub(crate) fn openapi(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::String | Self::LowerCaseString => ("string", None),
            Self::Int => ("integer", None),
            Self::Bool => ("boolean", None),
            Self::DurationSecond => ("string", Some("duration")),
            Self::CommaStringSlice => ("array", None),
            Self::Map | Self::KvPairs => ("object", None),
        }
    }

    /// Parses raw input into this type's canonical JSON form.
    fn parse(self, raw: &Value) -> Result<Value, String> {
        match self {
            Self::String => match raw {
                Value::String(s) => Ok(Value::String(s.clone())),
                Value::Number(n) => Ok(Value::String(n.to_string())),
                Value::Bool(b) => Ok(Value::String(b.to_string())),
                Value::Null => Ok(Value::String(String::new())),
                _ => Err("expected a string".into()),
            },
            Self::LowerCaseString => Self::String
                .parse(raw)
                .map(|v| Value::String(v.as_str().unwrap_or_default().to_lowercase())),
            Self::Int => match raw {
                Value::Number(n) if n.is_i64() => Ok(raw.clone()),
                Value::Number(n) => n
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| Value::from(f as i64))
                    .ok_or_else(|| format!("{n} is not a whole number")),
                Value::String(s) => s
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("{s:?} is not a whole number")),
                _ => Err("expected a whole number".into()),
            },
            Self::Bool => match raw {
                Value::Bool(_) => Ok(raw.clone()),
                Value::String(s) => parse_go_bool(s)
                    .map(Value::Bool)
                    .ok_or_else(|| format!("{s:?} is not a boolean (use true or false)")),
                Value::Number(n) => match n.as_i64() {
                    Some(0) => Ok(Value::Bool(false)),
                    Some(1) => Ok(Value::Bool(true)),
                    _ => Err(format!("{n} is not a boolean")),
                },
                _ => Err("expected a boolean".into()),
            },
            Self::DurationSecond => parse_duration(raw).map(|d| Value::from(d.as_secs())),
            Self::CommaStringSlice => match raw {
                Value::String(s) => Ok(Value::Array(
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| Value::String(p.to_string()))
                        .collect(),
                )),
                Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(Value::String(s.trim().to_string())),
                        Value::Number(n) => Ok(Value::String(n.to_string())),
                        _ => Err("expected a list of strings".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                Value::Null => Ok(Value::Array(Vec::new())),
                _ => Err("expected a list of strings".into()),
            },
            Self::Map => match raw {
                Value::Object(_) => Ok(raw.clone()),
                Value::String(s) if s.trim().is_empty() => Ok(Value::Object(Map::new())),
                Value::String(s) => match serde_json::from_str::<Value>(s) {
                    Ok(v @ Value::Object(_)) => Ok(v),
                    _ => Err("expected a JSON object".into()),
                },
                Value::Null => Ok(Value::Object(Map::new())),
                _ => Err("expected a JSON object".into()),
            },
            Self::KvPairs => parse_kv_pairs(raw).map(Value::Object),
        }
    }

    fn zero(self) -> Value {
        match self {
            Self::String | Self::LowerCaseString => Value::String(String::new()),
            Self::Int | Self::DurationSecond => Value::from(0),
            Self::Bool => Value::Bool(false),
            Self::CommaStringSlice => Value::Array(Vec::new()),
            Self::Map | Self::KvPairs => Value::Object(Map::new()),
        }
    }
}

/// `k=v` pairs, a JSON object or a string holding one, as an object of strings.
fn parse_kv_pairs(raw: &Value) -> Result<Map, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err("values must be strings".to_string()),
    };
    let pair = |item: &str, out: &mut Map| -> Result<(), String> {
        let item = item.trim();
        if item.is_empty() {
            return Ok(());
        }
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
                Ok(())
            }
            _ => Err(format!("{item:?} is not a key=value pair")),
        }
    };
    let mut out = Map::new();
    match raw {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone(), Value::String(scalar(v)?));
            }
        }
        Value::String(s) if s.trim_start().starts_with('{') => {
            let v: Value =
                serde_json::from_str(s).map_err(|_| "expected a JSON object".to_string())?;
            return parse_kv_pairs(&v);
        }
        Value::String(s) => {
            for item in s.split(',') {
                pair(item, &mut out)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => pair(s, &mut out)?,
                    _ => return Err("expected key=value strings".into()),
                }
            }
        }
        _ => return Err("expected key=value pairs or a JSON object".into()),
    }
    Ok(out)
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// One declared field of a path.
#[derive(Debug, Clone)]
pub struct FieldSchema {
    /// How input is parsed.
    pub ty: FieldType,
    /// Shown in help and OpenAPI.
    pub description: String,
    /// The value when the request gives none.
    pub default: Option<Value>,
    /// Create and update fail with a 400 naming the field when it is missing; published in
    /// OpenAPI.
    pub required: bool,
    /// Hidden from OpenAPI values and help examples (secrets).
    pub sensitive: bool,
}

impl FieldSchema {
    /// A field of type `ty`.
    pub fn new(ty: FieldType, description: impl Into<String>) -> Self {
        Self {
            ty,
            description: description.into(),
            default: None,
            required: false,
            sensitive: false,
        }
    }

    /// Sets the default value.
    pub fn default_value(mut self, v: impl Into<Value>) -> Self {
        self.default = Some(v.into());
        self
    }

    /// Makes the field required on create and update.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Marks the field secret: its value never appears in errors or OpenAPI.
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

/// The fields of one request, parsed against the path's schema.
#[derive(Debug, Clone)]
pub struct FieldData {
    raw: Map,
    schema: Arc<BTreeMap<String, FieldSchema>>,
}

impl FieldData {
    /// The request's raw input `raw` against the path's fields `schema`.
    pub fn new(raw: Map, schema: Arc<BTreeMap<String, FieldSchema>>) -> Self {
        Self { raw, schema }
    }

    /// Checks that every declared field that is present parses; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, schema) in self.schema.iter() {
            if let Some(raw) = self.raw.get(name) {
                schema.ty.parse(raw).map_err(|reason| {
                    if schema.sensitive {
                        format!("Field validation failed: invalid value for field {name:?}")
                    } else {
                        format!(
                            "Field validation failed: error converting input {} for field {name:?}: {reason}",
                            display_input(raw)
                        )
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Names in the input that no field declares.
    pub fn unknown_fields(&self) -> Vec<String> {
        self.raw
            .keys()
            .filter(|k| !self.schema.contains_key(*k))
            .cloned()
            .collect()
    }

    /// Checks that every field declared required was given (create and update); the error
    /// names the first one missing.
    pub fn check_required(&self) -> Result<(), FieldError> {
        match self
            .schema
            .iter()
            .find(|(name, f)| f.required && !self.raw.contains_key(*name))
        {
            Some((name, _)) => Err(FieldError::Missing(name.clone())),
            None => Ok(()),
        }
    }

    fn schema_of(&self, name: &str) -> Result<&FieldSchema, FieldError> {
        self.schema
            .get(name)
            .ok_or_else(|| FieldError::Undeclared(name.to_string()))
    }

    /// The parsed value if the field was given (`None` if it was not, or does not parse:
    /// [`FieldData::validate`] reports that).
    pub fn get_ok(&self, name: &str) -> Result<Option<Value>, FieldError> {
        let schema = self.schema_of(name)?;
        Ok(self.raw.get(name).and_then(|raw| schema.ty.parse(raw).ok()))
    }

    /// The parsed value, else the declared default, else the type's zero value.
    pub fn get(&self, name: &str) -> Result<Value, FieldError> {
        let schema = self.schema_of(name)?;
        Ok(self
            .get_ok(name)?
            .or_else(|| {
                schema
                    .default
                    .as_ref()
                    .and_then(|d| schema.ty.parse(d).ok())
            })
            .unwrap_or_else(|| schema.ty.zero()))
    }

    /// Whether the request gave the field (declared or not).
    pub fn contains(&self, name: &str) -> bool {
        self.raw.contains_key(name)
    }

    /// A string field's value (or default).
    pub fn str(&self, name: &str) -> Result<String, FieldError> {
        Ok(self.get(name)?.as_str().unwrap_or_default().to_string())
    }

    /// A string field's value if given.
    pub fn str_ok(&self, name: &str) -> Result<Option<String>, FieldError> {
        Ok(self
            .get_ok(name)?
            .and_then(|v| v.as_str().map(str::to_string)))
    }

    /// A boolean field's value (or default).
    pub fn bool(&self, name: &str) -> Result<bool, FieldError> {
        Ok(self.get(name)?.as_bool().unwrap_or(false))
    }

    /// A boolean field's value if given.
    pub fn bool_ok(&self, name: &str) -> Result<Option<bool>, FieldError> {
        Ok(self.get_ok(name)?.and_then(|v| v.as_bool()))
    }

    /// An integer field's value (or default).
    pub fn int(&self, name: &str) -> Result<i64, FieldError> {
        Ok(self.get(name)?.as_i64().unwrap_or(0))
    }

    /// A duration field's value (or default).
    pub fn duration(&self, name: &str) -> Result<Duration, FieldError> {
        Ok(Duration::from_secs(self.get(name)?.as_u64().unwrap_or(0)))
    }

    /// A duration field's value if given.
    pub fn duration_ok(&self, name: &str) -> Result<Option<Duration>, FieldError> {
        Ok(self
            .get_ok(name)?
            .and_then(|v| v.as_u64())
            .map(Duration::from_secs))
    }

    /// A string-list field's value (or default).
    pub fn strings(&self, name: &str) -> Result<Vec<String>, FieldError> {
        Ok(string_list(&self.get(name)?))
    }

    /// A string-list field's value if given.
    pub fn strings_ok(&self, name: &str) -> Result<Option<Vec<String>>, FieldError> {
        Ok(self.get_ok(name)?.map(|v| string_list(&v)))
    }

    /// An object field's value if given.
    pub fn map_ok(&self, name: &str) -> Result<Option<Map>, FieldError> {
        Ok(match self.get_ok(name)? {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        })
    }
}

/// A field access that cannot be answered.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FieldError {
    /// The handler asked for a field its path does not declare: a bug in the backend
    /// (reported as an internal error, as the Go SDK's `GetOk` does).
    #[error("field {0:?} is not declared on this path")]
    Undeclared(String),
    /// A field declared required was not given (HTTP 400).
    #[error("Field validation failed: missing required field {0:?}")]
    Missing(String),
}

impl From<FieldError> for LogicalError {
    fn from(e: FieldError) -> Self {
        match e {
            FieldError::Undeclared(_) => LogicalError::Internal(e.to_string()),
            FieldError::Missing(_) => LogicalError::BadRequest(e.to_string()),
        }
    }
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn display_input(raw: &Value) -> String {
    match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kv_pairs_take_every_form() {
        let want = json!({"team": "eng", "env": "dev"});
        for raw in [
            json!({"team": "eng", "env": "dev"}),
            json!("{\"team\": \"eng\", \"env\": \"dev\"}"),
            json!(["team=eng", "env=dev"]),
            json!("team=eng,env=dev"),
            json!(" team = eng , env=dev "),
        ] {
            assert_eq!(FieldType::KvPairs.parse(&raw).unwrap(), want, "{raw}");
        }
        assert_eq!(
            FieldType::KvPairs.parse(&json!({"n": 5})).unwrap(),
            json!({"n": "5"})
        );
        assert_eq!(
            FieldType::KvPairs.parse(&json!("a=b=c")).unwrap(),
            json!({"a": "b=c"})
        );
        assert_eq!(FieldType::KvPairs.parse(&json!("")).unwrap(), json!({}));
        for bad in [
            json!("novalue"),
            json!(["=x"]),
            json!([1]),
            json!({"a": {"b": 1}}),
            json!(3),
            json!("{bad"),
        ] {
            assert!(FieldType::KvPairs.parse(&bad).is_err(), "{bad}");
        }
    }

    fn data(raw: Value) -> FieldData {
        let mut schema = BTreeMap::new();
        schema.insert(
            "name".into(),
            FieldSchema::new(FieldType::LowerCaseString, ""),
        );
        schema.insert(
            "ttl".into(),
            FieldSchema::new(FieldType::DurationSecond, ""),
        );
        schema.insert(
            "flag".into(),
            FieldSchema::new(FieldType::Bool, "").default_value(true),
        );
        schema.insert("count".into(), FieldSchema::new(FieldType::Int, ""));
        schema.insert(
            "list".into(),
            FieldSchema::new(FieldType::CommaStringSlice, ""),
        );
        schema.insert("tags".into(), FieldSchema::new(FieldType::Map, ""));
        schema.insert(
            "secret".into(),
            FieldSchema::new(FieldType::Int, "").sensitive(),
        );
        FieldData::new(raw.as_object().unwrap().clone(), Arc::new(schema))
    }

    #[test]
    fn parses_each_type() {
        let d = data(json!({
            "name": "MyRole", "ttl": "1h", "count": "7", "list": "a, b,,c",
            "tags": "{\"k\":\"v\"}", "extra": 1
        }));
        d.validate().unwrap();
        assert_eq!(d.str("name").unwrap(), "myrole");
        assert_eq!(d.duration("ttl").unwrap(), Duration::from_secs(3600));
        assert!(d.bool("flag").unwrap(), "default applies");
        assert_eq!(d.bool_ok("flag").unwrap(), None);
        assert_eq!(d.int("count").unwrap(), 7);
        assert_eq!(d.strings("list").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(d.map_ok("tags").unwrap().unwrap()["k"], "v");
        assert_eq!(d.unknown_fields(), vec!["extra"]);
        assert_eq!(d.duration_ok("secret").unwrap(), None);
    }

    #[test]
    fn reading_an_undeclared_field_is_an_error() {
        let d = data(json!({"extra": "given but not declared"}));
        assert_eq!(d.str("extra"), Err(FieldError::Undeclared("extra".into())));
        assert_eq!(
            d.duration_ok("missing"),
            Err(FieldError::Undeclared("missing".into()))
        );
        let e = LogicalError::from(d.get("missing").unwrap_err());
        assert!(
            matches!(e, LogicalError::Internal(ref m) if m.contains("\"missing\"")),
            "{e:?}"
        );
    }

    #[test]
    fn required_fields_must_be_given() {
        let mut schema = BTreeMap::new();
        schema.insert(
            "name".to_string(),
            FieldSchema::new(FieldType::String, "").required(),
        );
        schema.insert("note".to_string(), FieldSchema::new(FieldType::String, ""));
        let schema = Arc::new(schema);
        let missing = FieldData::new(Map::new(), schema.clone());
        let err = missing.check_required().unwrap_err();
        assert_eq!(err, FieldError::Missing("name".into()));
        assert_eq!(
            LogicalError::from(err),
            LogicalError::BadRequest(
                "Field validation failed: missing required field \"name\"".into()
            )
        );
        let given = FieldData::new(json!({"name": "x"}).as_object().unwrap().clone(), schema);
        assert_eq!(given.check_required(), Ok(()));
    }

    #[test]
    fn validation_names_the_field() {
        let err = data(json!({"ttl": "abc"})).validate().unwrap_err();
        assert!(err.contains("field \"ttl\""), "{err}");
        assert!(
            err.starts_with("Field validation failed: error converting input abc"),
            "{err}"
        );
        let err = data(json!({"flag": "maybe"})).validate().unwrap_err();
        assert!(err.contains("\"flag\""), "{err}");
        let err = data(json!({"secret": "hunter2"})).validate().unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
