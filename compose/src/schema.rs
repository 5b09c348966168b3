//! A JSON-schema validator for the subset of keywords the Compose schema uses
//! (`type`, `properties`, `patternProperties`, `additionalProperties`,
//! `required`, `enum`, `items`, `uniqueItems`, `minimum`, `maximum`,
//! `pattern`, `oneOf`, `$ref`), reporting the path and position of the
//! offending node, with compose-go's wording.

use crate::yaml::{Node, Pos, Value};
use regex::Regex;
use serde_json::Value as J;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// compose-go's copy of the compose-spec schema (draft 2020-12), vendored.
pub const COMPOSE_SCHEMA: &str = include_str!("../../testdata/compose/compose-go.schema.json");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Dotted path: `services.web.ports.0`.
    pub path: String,
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} {}", self.path, self.message)
        }
    }
}

pub struct Schema {
    root: J,
    patterns: Mutex<HashMap<String, Regex>>,
}

/// The vendored Compose schema, parsed once.
pub fn compose_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::new(serde_json::from_str(COMPOSE_SCHEMA).expect("vendored schema is JSON"))
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(n: &Node) -> &'static str {
    match &n.value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() => "integer",
        Value::Float(_) => "number",
        Value::Str(_) => "string",
        Value::Seq(_) => "array",
        Value::Map(_) => "object",
    }
}

fn type_matches(want: &str, n: &Node) -> bool {
    let have = type_name(n);
    want == have || (want == "number" && have == "integer")
}

fn schema_types(schema: &J) -> Vec<&str> {
    match schema.get("type") {
        Some(J::String(s)) => vec![s.as_str()],
        Some(J::Array(a)) => a.iter().filter_map(J::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Strings where only a number or boolean fits are cast, as compose-go does
/// after interpolation (`replicas: ${N}`).
fn cast_scalar(types: &[&str], n: &mut Node) {
    let Value::Str(s) = &n.value else { return };
    if types.is_empty() || types.contains(&"string") {
        return;
    }
    let cast = if types.contains(&"integer") || types.contains(&"number") {
        s.parse::<i64>().map(Value::Int).ok().or_else(|| {
            (types.contains(&"number"))
                .then(|| s.parse::<f64>().ok().map(Value::Float))
                .flatten()
        })
    } else {
        None
    };
    let cast = cast.or_else(|| {
        (types.contains(&"boolean"))
            .then(|| match s.to_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Some(Value::Bool(true)),
                "false" | "no" | "n" | "off" => Some(Value::Bool(false)),
                _ => None,
            })
            .flatten()
    });
    if let Some(v) = cast {
        n.value = v;
    }
}

impl Schema {
    pub fn new(root: J) -> Schema {
        Schema {
            root,
            patterns: Mutex::new(HashMap::new()),
        }
    }

    /// Validates (and casts interpolated scalars in) `node`; the first error found.
    pub fn validate(&self, node: &mut Node) -> Result<(), SchemaError> {
        self.check(&self.root, node, "")
    }

    fn resolve<'a>(&'a self, mut schema: &'a J) -> &'a J {
        while let Some(r) = schema.get("$ref").and_then(J::as_str) {
            let path = r.trim_start_matches('#');
            schema = self.root.pointer(path).unwrap_or(&J::Bool(true));
        }
        schema
    }

    fn matches(&self, pattern: &str, text: &str) -> bool {
        let mut cache = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        let re = cache.entry(pattern.to_string()).or_insert_with(|| {
            Regex::new(pattern).unwrap_or_else(|_| Regex::new("").expect("empty regex"))
        });
        re.is_match(text)
    }

    fn check(&self, schema: &J, node: &mut Node, path: &str) -> Result<(), SchemaError> {
        let schema = self.resolve(schema);
        let err = |pos: Pos, message: String| SchemaError {
            path: path.to_string(),
            pos,
            message,
        };
        if schema == &J::Bool(false) {
            return Err(err(node.pos, "is not allowed".into()));
        }
        if let Some(branches) = schema.get("oneOf").and_then(J::as_array) {
            self.one_of(branches, node, path)?;
        }
        let types = schema_types(schema);
        cast_scalar(&types, node);
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, node)) {
            return Err(err(node.pos, format!("must be a {}", types.join(" or "))));
        }
        if let Some(values) = schema.get("enum").and_then(J::as_array) {
            if !values.contains(&node.to_json()) {
                let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                return Err(err(
                    node.pos,
                    format!("must be one of the following: {}", list.join(", ")),
                ));
            }
        }
        self.check_scalar(schema, node, path)?;
        match &mut node.value {
            Value::Map(_) => self.check_object(schema, node, path),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.check(item_schema, item, &join(path, &i.to_string()))?;
                    }
                }
                if schema.get("uniqueItems") == Some(&J::Bool(true)) {
                    let mut seen = Vec::new();
                    for item in items.iter() {
                        let j = item.to_json();
                        if seen.contains(&j) {
                            return Err(err(
                                item.pos,
                                format!("must not contain duplicate items: {j}"),
                            ));
                        }
                        seen.push(j);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_scalar(&self, schema: &J, node: &Node, path: &str) -> Result<(), SchemaError> {
        let err = |message: String| SchemaError {
            path: path.to_string(),
            pos: node.pos,
            message,
        };
        let number = match node.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        };
        if let (Some(n), Some(min)) = (number, schema.get("minimum").and_then(J::as_f64)) {
            if n < min {
                return Err(err(format!("must be greater than or equal to {min}")));
            }
        }
        if let (Some(n), Some(max)) = (number, schema.get("maximum").and_then(J::as_f64)) {
            if n > max {
                return Err(err(format!("must be less than or equal to {max}")));
            }
        }
        if let (Value::Str(s), Some(p)) = (&node.value, schema.get("pattern").and_then(J::as_str)) {
            if !self.matches(p, s) {
                return Err(err(format!("does not match pattern {p:?}")));
            }
        }
        Ok(())
    }

    fn check_object(&self, schema: &J, node: &mut Node, path: &str) -> Result<(), SchemaError> {
        let pos = node.pos;
        let Value::Map(map) = &mut node.value else {
            return Ok(());
        };
        if let Some(required) = schema.get("required").and_then(J::as_array) {
            for key in required.iter().filter_map(J::as_str) {
                if !map.contains_key(key) {
                    return Err(SchemaError {
                        path: path.to_string(),
                        pos,
                        message: format!("missing property '{key}'"),
                    });
                }
            }
        }
        let props = schema.get("properties").and_then(J::as_object);
        let patterns = schema.get("patternProperties").and_then(J::as_object);
        let additional = schema.get("additionalProperties");
        for (key, value) in map.iter_mut() {
            let child = join(path, key);
            let mut known = false;
            if let Some(s) = props.and_then(|p| p.get(key)) {
                known = true;
                self.check(s, value, &child)?;
            }
            for (pattern, s) in patterns.into_iter().flatten() {
                if self.matches(pattern, key) {
                    known = true;
                    self.check(s, value, &child)?;
                }
            }
            if known {
                continue;
            }
            match additional {
                Some(J::Bool(false)) => {
                    return Err(SchemaError {
                        path: path.to_string(),
                        pos: value.key_pos,
                        message: format!("additional properties '{key}' not allowed"),
                    })
                }
                Some(s @ J::Object(_)) => self.check(s, value, &child)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Exactly one branch must accept the node. When none does, the error of
    /// the branch whose type fits the node is the most useful one.
    fn one_of(&self, branches: &[J], node: &mut Node, path: &str) -> Result<(), SchemaError> {
        let mut passed = Vec::new();
        let mut errors = Vec::new();
        for branch in branches {
            let mut attempt = node.clone();
            match self.check(branch, &mut attempt, path) {
                Ok(()) => passed.push(attempt),
                Err(e) => errors.push((branch, e)),
            }
        }
        match passed.len() {
            1 => {
                *node = passed.remove(0);
                Ok(())
            }
            0 => {
                let fitting = errors.iter().find(|(b, _)| {
                    let b = self.resolve(b);
                    let types = schema_types(b);
                    types.iter().any(|t| type_matches(t, node))
                        || (types.is_empty() && b.get("oneOf").is_some())
                });
                let (_, e) = fitting.unwrap_or(&errors[0]);
                if fitting.is_none() {
                    let mut all: Vec<&str> = errors
                        .iter()
                        .flat_map(|(b, _)| schema_types(self.resolve(b)))
                        .collect();
                    all.dedup();
                    return Err(SchemaError {
                        path: path.into(),
                        pos: node.pos,
                        message: format!("must be a {}", all.join(" or ")),
                    });
                }
                Err(e.clone())
            }
            _ => {
                // Several branches fit (a port as number or string): keep the node as written.
                Ok(())
            }
        }
    }
}
