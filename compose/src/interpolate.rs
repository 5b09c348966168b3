//! Interpolation of a whole Compose document: every string value (not keys)
//! goes through `template::substitute`.

use crate::template::{self, TemplateError};
use crate::yaml::{Node, Pos, Value};

#[derive(Debug)]
pub struct InterpolationError {
    pub path: String,
    pub pos: Pos,
    pub error: TemplateError,
}

impl std::fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            TemplateError::Invalid { template } => write!(
                f,
                "invalid interpolation format for {}.\nYou may need to escape any $ with another $.\n{}",
                self.path,
                template.trim_start_matches("Invalid template: ")
            ),
            e => write!(f, "error while interpolating {}: {e}", self.path),
        }
    }
}

/// Interpolates `node` in place; unset variables are added to `warnings`.
pub fn interpolate(
    node: &mut Node,
    path: &str,
    lookup: template::Lookup,
    warnings: &mut Vec<String>,
) -> Result<(), InterpolationError> {
    match &mut node.value {
        Value::Str(s) if s.contains('$') => {
            let out =
                template::substitute(s, lookup, warnings).map_err(|error| InterpolationError {
                    path: path.to_string(),
                    pos: node.pos,
                    error,
                })?;
            *s = out;
        }
        Value::Seq(items) => {
            for item in items.iter_mut() {
                interpolate(item, &format!("{path}.[]"), lookup, warnings)?;
            }
        }
        Value::Map(map) => {
            for (k, v) in map.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(v, &child, lookup, warnings)?;
            }
        }
        _ => {}
    }
    Ok(())
}
