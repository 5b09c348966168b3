//! `.env` files, parsed as compose-go's dotenv parser does: `export`,
//! `KEY: value`, quotes spanning lines, inline comments, inherited keys, and
//! interpolation against the lookup first and earlier keys second.

use crate::template::{self, TemplateError};
use indexmap::IndexMap;

pub type EnvMap = IndexMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("{0}")]
    Template(#[from] TemplateError),
}

fn syntax(line: usize, message: impl Into<String>) -> DotenvError {
    DotenvError::Syntax {
        line,
        message: message.into(),
    }
}

/// Parses `text` into `out` (which may hold keys from earlier files).
/// `lookup` is the outside environment, consulted before `out`.
pub fn parse_into(
    text: &str,
    out: &mut EnvMap,
    lookup: template::Lookup,
) -> Result<(), DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut pos = 0;
    while let Some(start) = statement_start(text, pos) {
        let line = 1 + text[..start].matches('\n').count();
        let (key, value_start, inherited) = key_name(text, start, line)?;
        if key.contains(' ') {
            return Err(syntax(line, "key cannot contain a space"));
        }
        if inherited {
            if let Some(v) = lookup(&key) {
                out.insert(key, v);
            }
            pos = value_start;
            continue;
        }
        let (value, next) = value_of(text, value_start, line, out, lookup)?;
        out.insert(key, value);
        pos = next;
    }
    Ok(())
}

/// Parses one file's text with no earlier keys (compose-go's `Parse`/`ParseWithLookup`).
pub fn parse(text: &str, lookup: template::Lookup) -> Result<EnvMap, DotenvError> {
    let mut out = EnvMap::new();
    parse_into(text, &mut out, lookup)?;
    Ok(out)
}

/// As `parse`, then drops keys starting with a digit, as compose-go's `Read` does.
pub fn read(text: &str, lookup: template::Lookup) -> Result<EnvMap, DotenvError> {
    let mut env = parse(text, lookup)?;
    env.retain(|k, _| !k.trim_start().starts_with(|c: char| c.is_ascii_digit()));
    Ok(env)
}

/// Skips blanks and comment lines; `None` at the end of the text.
fn statement_start(text: &str, mut pos: usize) -> Option<usize> {
    loop {
        let rest = &text[pos..];
        let skip = rest.find(|c: char| !c.is_whitespace())?;
        pos += skip;
        if !text[pos..].starts_with('#') {
            return Some(pos);
        }
        pos += text[pos..].find('\n')?;
    }
}

/// The key at `start`, where its value starts, and whether it is a bare key.
fn key_name(
    text: &str,
    mut start: usize,
    line: usize,
) -> Result<(String, usize, bool), DotenvError> {
    let src = &text[start..];
    if let Some(after) = src.strip_prefix("export") {
        if after.starts_with([' ', '\t']) {
            start += 6 + (after.len() - after.trim_start_matches([' ', '\t']).len());
        }
    }
    let src = &text[start..];
    for (i, c) in src.char_indices() {
        match c {
            '=' | ':' | '\n' => {
                let key = src[..i].trim_end().to_string();
                let value_start = start + i + 1;
                if c == '\n' {
                    return Ok((key, value_start, true));
                }
                let skipped = text[value_start..].len()
                    - text[value_start..].trim_start_matches([' ', '\t']).len();
                return Ok((key, value_start + skipped, false));
            }
            c if c.is_whitespace() || c.is_alphanumeric() || "_.-[]".contains(c) => {}
            c => {
                let first_line = src.split('\n').next().unwrap_or("");
                let msg = format!(
                    "unexpected character {:?} in variable name {:?}",
                    c.to_string(),
                    first_line
                );
                return Err(syntax(line, msg));
            }
        }
    }
    Ok((src.trim_end().to_string(), text.len(), true))
}

fn value_of(
    text: &str,
    start: usize,
    line: usize,
    env: &EnvMap,
    lookup: template::Lookup,
) -> Result<(String, usize), DotenvError> {
    let src = &text[start..];
    let expand = |value: &str| -> Result<String, DotenvError> {
        let both = |name: &str| lookup(name).or_else(|| env.get(name).cloned());
        Ok(template::substitute(value, &both, &mut Vec::new())?)
    };
    let quote = match src.chars().next() {
        Some(q @ ('"' | '\'')) => q,
        _ => {
            let end = src.find('\n').unwrap_or(src.len());
            let value = &src[..end];
            let value = value.split(" #").next().unwrap_or("").trim_end();
            return Ok((expand(value)?, start + end));
        }
    };
    let body = &src[1..];
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if c == quote && !escaped {
            let raw = &body[..i];
            let value = if quote == '"' {
                expand(&double_quote_escapes(raw))?
            } else {
                raw.replace("\\'", "'")
            };
            return Ok((value, start + 1 + i + 1));
        }
        escaped = c == '\\' && !escaped;
    }
    let first_line = src.split('\n').next().unwrap_or("");
    Err(syntax(
        line,
        format!("unterminated quoted value {first_line}"),
    ))
}

/// Expands the shell escapes of a double-quoted value; `\$` becomes `$$` so
/// interpolation leaves a literal `$`.
fn double_quote_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(&next) = chars.peek() else {
            out.push('\\');
            break;
        };
        let simple = match next {
            'a' => Some("\x07"),
            'b' => Some("\x08"),
            'f' => Some("\x0c"),
            'n' => Some("\n"),
            'r' => Some("\r"),
            't' => Some("\t"),
            'v' => Some("\x0b"),
            '\\' => Some("\\"),
            '"' => Some("\""),
            '$' => Some("$$"),
            _ => None,
        };
        if let Some(s) = simple {
            out.push_str(s);
            chars.next();
        } else if next == '0' && octal_follows(&chars) {
            chars.next();
            let digits: String = (0..3).filter_map(|_| chars.next()).collect();
            let code = u32::from_str_radix(&digits, 8).unwrap_or(0);
            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
        } else {
            out.push('\\');
        }
    }
    out
}

fn octal_follows(chars: &std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let ahead: Vec<char> = chars.clone().skip(1).take(3).collect();
    ahead.len() == 3 && ahead.iter().all(|c| ('0'..='7').contains(c))
}
