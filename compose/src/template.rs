//! `${VAR}` interpolation with compose-go's rules: `$$` escapes, the six
//! operators, nested braces, and lazily interpolated defaults.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The whole template, as compose-go's `InvalidTemplateError` shows it.
    Invalid {
        template: String,
    },
    MissingRequired {
        variable: String,
        reason: String,
    },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Invalid { template } => write!(f, "Invalid template: {template:?}"),
            TemplateError::MissingRequired { variable, reason } if reason.is_empty() => {
                write!(f, "required variable {variable} is missing a value")
            }
            TemplateError::MissingRequired { variable, reason } => {
                write!(
                    f,
                    "required variable {variable} is missing a value: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for TemplateError {}

/// Looks a variable up; `None` means unset.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

const OPERATORS: [&str; 6] = [":-", ":+", ":?", "-", "+", "?"];

/// Substitutes variables in `template`. Each unset variable used without an
/// operator adds its name to `warnings`.
pub fn substitute(
    template: &str,
    lookup: Lookup,
    warnings: &mut Vec<String>,
) -> Result<String, TemplateError> {
    let invalid = || TemplateError::Invalid {
        template: template.to_string(),
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = closing_brace(r).ok_or_else(invalid)?;
            out.push_str(&braced(&r[..end], lookup, warnings).map_err(|e| match e {
                TemplateError::Invalid { .. } => invalid(),
                e => e,
            })?);
            rest = &r[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                out.push('$');
                rest = after;
            } else {
                let name = &after[..len];
                out.push_str(&plain_value(name, lookup, warnings));
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn plain_value(name: &str, lookup: Lookup, warnings: &mut Vec<String>) -> String {
    lookup(name).unwrap_or_else(|| {
        warnings.push(name.to_string());
        String::new()
    })
}

/// Index of the `}` that closes an opened `${`, counting nested braces.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Length of a leading `[_a-zA-Z][_a-zA-Z0-9]*`.
fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.is_empty() || !(b[0] == b'_' || b[0].is_ascii_alphabetic()) {
        return 0;
    }
    b.iter()
        .take_while(|c| **c == b'_' || c.is_ascii_alphanumeric())
        .count()
}

/// Splits the text inside `${...}` into name, operator and argument.
pub fn split_inner(inner: &str) -> Option<(&str, Option<&'static str>, &str)> {
    let len = name_len(inner);
    if len == 0 {
        return None;
    }
    let (name, rest) = inner.split_at(len);
    if rest.is_empty() {
        return Some((name, None, ""));
    }
    let op = OPERATORS.iter().find(|op| rest.starts_with(**op))?;
    Some((name, Some(op), &rest[op.len()..]))
}

fn braced(
    inner: &str,
    lookup: Lookup,
    warnings: &mut Vec<String>,
) -> Result<String, TemplateError> {
    let (name, op, arg) = split_inner(inner).ok_or(TemplateError::Invalid {
        template: String::new(),
    })?;
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let mut arg_value = || substitute(arg, lookup, warnings);
    Ok(match op {
        None => return Ok(plain_value(name, lookup, warnings)),
        Some(":-") if !non_empty => arg_value()?,
        Some("-") if !set => arg_value()?,
        Some(":+") if non_empty => arg_value()?,
        Some("+") if set => arg_value()?,
        Some(":?") if !non_empty => return Err(missing(name, arg_value()?)),
        Some("?") if !set => return Err(missing(name, arg_value()?)),
        _ => value.unwrap_or_default(),
    })
}

fn missing(name: &str, reason: String) -> TemplateError {
    TemplateError::MissingRequired {
        variable: name.to_string(),
        reason,
    }
}
