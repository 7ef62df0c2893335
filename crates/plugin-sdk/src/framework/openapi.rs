//! Help text and OpenAPI 3 documents generated from path declarations.

use serde_json::{json, Map, Value};

use super::path::{CompiledPath, Path};
use crate::logical::Operation;

/// The OpenAPI path for a pattern: named captures become `{name}`, regex syntax goes.
/// Handles the pattern shapes this framework's users write (literal segments, named
/// captures, an optional trailing slash).
pub(crate) fn openapi_path(pattern: &str) -> String {
    let mut out = String::from("/");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '(' if chars.get(i + 1) == Some(&'?') && chars.get(i + 2) == Some(&'P') => {
                let name_start = i + 4;
                let name_end = chars[name_start..]
                    .iter()
                    .position(|c| *c == '>')
                    .map_or(chars.len(), |p| name_start + p);
                let name: String = chars[name_start..name_end].iter().collect();
                out.push('{');
                out.push_str(&name);
                out.push('}');
                // Skip to the parenthesis closing this group.
                let mut depth = 0;
                i = name_end;
                while i < chars.len() {
                    match chars[i] {
                        '\\' => i += 1,
                        '(' => depth += 1,
                        ')' if depth == 0 => break,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            '^' | '$' | '?' => {}
            '\\' => {
                if let Some(c) = chars.get(i + 1) {
                    out.push(*c);
                }
                i += 1;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn field_schema(f: &super::field::FieldSchema) -> Value {
    let (ty, format) = f.ty.openapi();
    let mut s = Map::new();
    s.insert("type".into(), json!(ty));
    if let Some(format) = format {
        s.insert("format".into(), json!(format));
    }
    if ty == "array" {
        s.insert("items".into(), json!({"type": "string"}));
    }
    s.insert("description".into(), json!(f.description));
    if let Some(d) = &f.default {
        if !f.sensitive {
            s.insert("default".into(), d.clone());
        }
    }
    Value::Object(s)
}

fn pascal(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Who the document describes: the plugin's own metadata.
pub(crate) struct Info<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub version: &'a str,
}

/// An OpenAPI document describing `paths`, with operation ids and schema names prefixed by
/// `prefix` (the mount type, as the host asks).
pub(crate) fn document(info: &Info<'_>, prefix: &str, paths: &[&CompiledPath]) -> Value {
    let mut out_paths = Map::new();
    let mut schemas = Map::new();
    for p in paths {
        let path = &p.path;
        let route = openapi_path(&path.pattern);
        let in_url: Vec<&String> = p
            .fields
            .keys()
            .filter(|k| route.contains(&format!("{{{k}}}")))
            .collect();
        let mut item = Map::new();
        item.insert("description".into(), json!(path.synopsis));
        let params: Vec<Value> = in_url
            .iter()
            .map(|k| {
                json!({
                    "name": k, "description": p.fields[*k].description,
                    "in": "path", "required": true, "schema": {"type": "string"}
                })
            })
            .collect();
        if !params.is_empty() {
            item.insert("parameters".into(), Value::Array(params));
        }
        for (op, handler) in &path.operations {
            let op_id = format!("{prefix}-{}", handler.operation_id);
            let mut o = Map::new();
            o.insert("summary".into(), json!(handler.summary));
            o.insert("operationId".into(), json!(op_id));
            o.insert("tags".into(), json!(["secrets"]));
            o.insert(
                "responses".into(),
                json!({"200": {"description": "OK"}, "204": {"description": "empty body"}}),
            );
            let method = match op {
                Operation::Read => "get",
                Operation::List => {
                    o.insert(
                        "parameters".into(),
                        json!([{"name": "list", "description": "Must be set to `true`", "in": "query",
                                "required": true, "schema": {"type": "string", "enum": ["true"]}}]),
                    );
                    "get"
                }
                Operation::Delete => "delete",
                Operation::Create | Operation::Update => {
                    let body: Map<String, Value> = p
                        .fields
                        .iter()
                        .filter(|(k, _)| !in_url.contains(k))
                        .map(|(k, f)| (k.clone(), field_schema(f)))
                        .collect();
                    if !body.is_empty() {
                        let name = format!("{}Request", pascal(&op_id));
                        let required: Vec<&String> = p
                            .fields
                            .iter()
                            .filter(|(k, f)| f.required && !in_url.contains(k))
                            .map(|(k, _)| k)
                            .collect();
                        let mut schema = json!({"type": "object", "properties": body});
                        if !required.is_empty() {
                            schema["required"] = json!(required);
                        }
                        schemas.insert(name.clone(), schema);
                        o.insert(
                            "requestBody".into(),
                            json!({"required": true, "content": {"application/json": {
                                "schema": {"$ref": format!("#/components/schemas/{name}")}}}}),
                        );
                    }
                    "post"
                }
                _ => continue,
            };
            // Create and update share POST; keep the first declared.
            item.entry(method.to_string()).or_insert(Value::Object(o));
        }
        out_paths.insert(route, Value::Object(item));
    }
    json!({
        "openapi": "3.0.2",
        "info": {
            "title": info.title,
            "description": info.description.trim(),
            "version": info.version,
        },
        "paths": out_paths,
        "components": {"schemas": schemas}
    })
}

/// The text `path-help` shows for one path.
pub(crate) fn path_help_text(path: &Path) -> String {
    let mut text = format!(
        "Request:        {}\nMatching Route: ^{}$\n\n{}\n\n",
        openapi_path(&path.pattern).trim_start_matches('/'),
        path.pattern,
        path.synopsis.trim()
    );
    if !path.fields.is_empty() {
        text.push_str("## PARAMETERS\n\n");
        for (name, f) in &path.fields {
            let (ty, _) = f.ty.openapi();
            text.push_str(&format!(
                "{name} ({ty})\n\n    {}\n\n",
                f.description.trim()
            ));
        }
    }
    text.push_str(&format!("## DESCRIPTION\n\n{}\n", path.description.trim()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_openapi_paths() {
        assert_eq!(openapi_path("config"), "/config");
        assert_eq!(
            openapi_path(r"roles/(?P<name>\w(([\w.-]+)?\w)?)"),
            "/roles/{name}"
        );
        assert_eq!(openapi_path("roles/?"), "/roles/");
        assert_eq!(
            openapi_path(r"creds/(?P<role>\w(([\w.-]+)?\w)?)"),
            "/creds/{role}"
        );
        assert_eq!(openapi_path("rotate-root"), "/rotate-root");
    }
}
