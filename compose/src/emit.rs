//! YAML output of the canonical model, in the key order docker compose
//! prints (compose-go's struct field order; other maps sorted).

use crate::yaml::{format_float, Map, Node, Value};

const TOP: &[&str] = &[
    "name", "services", "networks", "volumes", "secrets", "configs", "models",
];
const PORT: &[&str] = &[
    "name",
    "mode",
    "host_ip",
    "target",
    "published",
    "protocol",
    "app_protocol",
];
const VOLUME: &[&str] = &[
    "type",
    "source",
    "target",
    "read_only",
    "consistency",
    "bind",
    "volume",
    "tmpfs",
    "image",
];
const HEALTH: &[&str] = &[
    "test",
    "timeout",
    "interval",
    "retries",
    "start_period",
    "start_interval",
    "disable",
];
const DEPENDS: &[&str] = &["condition", "restart", "required"];
const BUILD: &[&str] = &[
    "context",
    "dockerfile",
    "dockerfile_inline",
    "entitlements",
    "args",
    "ssh",
    "labels",
    "cache_from",
    "cache_to",
    "no_cache",
    "additional_contexts",
    "pull",
    "extra_hosts",
    "isolation",
    "network",
    "target",
    "secrets",
    "tags",
    "ulimits",
    "platforms",
    "privileged",
];
const NETWORK: &[&str] = &[
    "name",
    "driver",
    "driver_opts",
    "ipam",
    "external",
    "internal",
    "enable_ipv4",
    "enable_ipv6",
    "attachable",
    "labels",
];
const RESOURCE: &[&str] = &[
    "name",
    "driver",
    "driver_opts",
    "external",
    "labels",
    "file",
    "environment",
    "content",
];

fn order_for(path: &[String]) -> Option<&'static [&'static str]> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        [] => Some(TOP),
        ["services", _, "ports", _] => Some(PORT),
        ["services", _, "volumes", _] => Some(VOLUME),
        ["services", _, "healthcheck"] => Some(HEALTH),
        ["services", _, "depends_on", _] => Some(DEPENDS),
        ["services", _, "build"] => Some(BUILD),
        ["networks", _] => Some(NETWORK),
        ["volumes" | "secrets" | "configs", _] => Some(RESOURCE),
        _ => None,
    }
}

fn sorted_keys<'a>(m: &'a Map, path: &[String]) -> Vec<&'a String> {
    let mut keys: Vec<&String> = m.keys().collect();
    let rank = |k: &str| {
        order_for(path)
            .and_then(|o| o.iter().position(|x| *x == k))
            .unwrap_or(usize::MAX)
    };
    // Lists (ports, volumes) keep their order; the top level keeps unknown keys after known ones.
    keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    keys
}

/// Renders `node` as a YAML document.
pub fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    write_node(node, 0, &mut Vec::new(), &mut out, false);
    out
}

fn write_node(node: &Node, indent: usize, path: &mut Vec<String>, out: &mut String, in_seq: bool) {
    match &node.value {
        Value::Map(m) if !m.is_empty() => {
            for (i, k) in sorted_keys(m, path).into_iter().enumerate() {
                if !(in_seq && i == 0) {
                    out.push_str(&" ".repeat(indent));
                }
                out.push_str(&scalar(k));
                out.push(':');
                path.push(k.clone());
                write_child(&m[k], indent, path, out);
                path.pop();
            }
        }
        Value::Seq(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                if !(in_seq && i == 0) {
                    out.push_str(&" ".repeat(indent));
                }
                out.push_str("- ");
                path.push(i.to_string());
                match &item.value {
                    Value::Map(m) if !m.is_empty() => write_node(item, indent + 2, path, out, true),
                    Value::Seq(s) if !s.is_empty() => write_node(item, indent + 2, path, out, true),
                    _ => {
                        out.push_str(&inline(item));
                        out.push('\n');
                    }
                }
                path.pop();
            }
        }
        _ => {
            out.push_str(&inline(node));
            out.push('\n');
        }
    }
}

fn write_child(child: &Node, indent: usize, path: &mut Vec<String>, out: &mut String) {
    match &child.value {
        Value::Map(m) if !m.is_empty() => {
            out.push('\n');
            write_node(child, indent + 2, path, out, false);
        }
        Value::Seq(s) if !s.is_empty() => {
            out.push('\n');
            write_node(child, indent + 2, path, out, false);
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(child));
            out.push('\n');
        }
    }
}

fn inline(n: &Node) -> String {
    match &n.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_float(*f),
        Value::Str(s) => scalar(s),
        Value::Seq(_) => "[]".into(),
        Value::Map(_) => "{}".into(),
    }
}

/// A string as a plain scalar when YAML would read it back as the same
/// string, else double-quoted.
fn scalar(s: &str) -> String {
    let reparsed = crate::yaml::parse(&format!("k: {s}\n")).ok();
    let same = reparsed
        .as_ref()
        .and_then(|d| d.get("k"))
        .and_then(Node::as_str)
        == Some(s);
    let yaml11_bool = matches!(
        s.to_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off"
    );
    let risky = s.is_empty()
        || yaml11_bool
        || s.contains(['\n', '#', '"', '\'', '\t', '\\'])
        || s.contains(": ")
        || s.ends_with(':')
        || s == "-"
        || s.starts_with("- ")
        || s.starts_with([
            ' ', '?', ':', ',', '[', ']', '{', '}', '&', '*', '!', '|', '>', '%', '@', '`',
        ])
        || s.ends_with(' ');
    if same && !risky {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}
