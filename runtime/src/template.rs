//! The subset of Go's text/template that `docker inspect --format` and `docker ps --format`
//! users write: `{{.A.B}}`, `{{.}}`, `{{json .A}}`, `{{index .A "key"}}`, `{{upper .A}}`,
//! `{{lower .A}}`; `\t` and `\n` in the format are tabs and newlines, as in docker's CLI.

use anyhow::{bail, Result};
use serde_json::Value;

/// Renders `format` against `data`.
pub fn render(format: &str, data: &Value) -> Result<String> {
    let format = format.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = format.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("template: unclosed action in {format:?}");
        };
        let action = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        out.push_str(&eval(action, data)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval(action: &str, data: &Value) -> Result<String> {
    let words = split_words(action);
    match words.as_slice() {
        [path] if path.starts_with('.') => Ok(go_print(lookup(data, path)?)),
        ["json", path] => Ok(serde_json::to_string(lookup(data, path)?)?),
        ["upper", path] => Ok(go_print(lookup(data, path)?).to_uppercase()),
        ["lower", path] => Ok(go_print(lookup(data, path)?).to_lowercase()),
        ["index", path, key] => {
            let key = key.trim_matches('"');
            Ok(go_print(lookup(data, path)?.get(key).unwrap_or(&Value::Null)))
        }
        _ => bail!("template: unsupported action {{{{{action}}}}} (supported: .Field.Path, json, index, upper, lower)"),
    }
}

fn split_words(action: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = action.trim();
    while !rest.is_empty() {
        let end = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.find('"').map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(' ').unwrap_or(rest.len())
        };
        words.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    words
}

fn lookup<'a>(data: &'a Value, path: &str) -> Result<&'a Value> {
    if !path.starts_with('.') {
        bail!("template: {path:?} is not a field path (want .Field)");
    }
    let mut value = data;
    for field in path[1..].split('.').filter(|f| !f.is_empty()) {
        value = match value {
            Value::Object(map) => map.get(field).unwrap_or(&Value::Null),
            Value::Null => &Value::Null,
            _ => bail!("template: can't evaluate field {field} in {path}"),
        };
    }
    Ok(value)
}

/// Go's `fmt.Print` of a decoded JSON value.
fn go_print(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_print).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_docker_style_templates() {
        let data = json!({"Id": "abc", "State": {"Status": "running", "Health": null},
            "RestartCount": 2, "Config": {"Labels": {"a": "b"}}});
        assert_eq!(render("{{.State.Status}}", &data).unwrap(), "running");
        assert_eq!(render("{{ .RestartCount }}", &data).unwrap(), "2");
        assert_eq!(
            render("{{json .Config.Labels}}", &data).unwrap(),
            "{\"a\":\"b\"}"
        );
        assert_eq!(
            render("{{index .Config.Labels \"a\"}}", &data).unwrap(),
            "b"
        );
        assert_eq!(
            render("{{.Id}}\\t{{.Missing}}", &data).unwrap(),
            "abc\t<no value>"
        );
        assert_eq!(
            render("{{.State.Health.Status}}", &data).unwrap(),
            "<no value>"
        );
        assert!(render("{{.Id", &data).is_err());
        assert!(render("{{range .X}}", &data).is_err());
    }
}
