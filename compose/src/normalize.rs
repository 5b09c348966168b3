//! compose-go's `Normalize` (default network, resource names, build
//! defaults, implicit `depends_on`, resolved build args and bare environment
//! names) and the canonical long forms `config` prints.

use crate::ports;
use crate::volumes;
use crate::yaml::{Map, Node, Pos, Value};

pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn null() -> Node {
    Node::new(Value::Null)
}
fn boolean(b: bool) -> Node {
    Node::new(Value::Bool(b))
}

/// compose-go's `Normalize` on the raw model.
pub fn normalize(model: &mut Node, env: Env) {
    let project = model
        .get("name")
        .and_then(Node::scalar_text)
        .unwrap_or_default();
    let mut needs_default = false;
    if let Some(services) = model
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    {
        for (_, service) in services.iter_mut() {
            if service.is_null() {
                service.value = Value::Map(Map::new());
            }
            let Some(s) = service.as_map_mut() else {
                continue;
            };
            normalize_service(s, env);
            if !s.contains_key("network_mode") && !s.contains_key("networks") {
                let mut nets = Map::new();
                nets.insert("default".into(), null());
                s.insert("networks".into(), Node::map(nets));
            }
            let nets = s.get("networks").and_then(Node::as_map);
            needs_default |= nets.is_some_and(|n| n.contains_key("default"));
        }
    }
    let Some(top) = model.as_map_mut() else {
        return;
    };
    if needs_default {
        let networks = top
            .entry("networks".to_string())
            .or_insert_with(|| Node::map(Map::new()));
        if networks.is_null() {
            networks.value = Value::Map(Map::new());
        }
        if let Some(n) = networks.as_map_mut() {
            n.entry("default".to_string()).or_insert_with(null);
        }
    }
    for kind in ["networks", "volumes", "secrets", "configs"] {
        if let Some(resources) = top.get_mut(kind).and_then(Node::as_map_mut) {
            name_resources(resources, &project, kind == "networks" || kind == "volumes");
        }
    }
}

/// `name:` of networks and volumes: `project_key` unless external or named.
fn name_resources(resources: &mut Map, project: &str, prefix: bool) {
    for (key, res) in resources.iter_mut() {
        if res.is_null() {
            res.value = Value::Map(Map::new());
        }
        let Some(r) = res.as_map_mut() else { continue };
        if r.contains_key("name") || !prefix {
            continue;
        }
        let external = r
            .get("external")
            .is_some_and(|e| matches!(e.value, Value::Bool(true)));
        let name = if external {
            key.clone()
        } else {
            format!("{project}_{key}")
        };
        r.shift_insert(0, "name".into(), Node::str(name));
    }
}

fn normalize_service(s: &mut Map, env: Env) {
    if let Some(build) = s.get_mut("build") {
        normalize_build(build, env);
    }
    if let Some(envs) = s.get_mut("environment") {
        resolve_bare_environment(envs, env);
    }
    implicit_depends_on(s);
    let image = s.get("image").cloned();
    if let (Some(image), Some(hooks)) = (
        image,
        s.get_mut("pre_start").and_then(|h| match &mut h.value {
            Value::Seq(v) => Some(v),
            _ => None,
        }),
    ) {
        for hook in hooks.iter_mut().filter_map(Node::as_map_mut) {
            hook.entry("image".to_string())
                .or_insert_with(|| image.clone());
        }
    }
}

fn normalize_build(build: &mut Node, env: Env) {
    if let Some(context) = build.as_str().map(str::to_string) {
        let mut m = Map::new();
        m.insert("context".into(), Node::str(context));
        build.value = Value::Map(m);
    }
    let Some(b) = build.as_map_mut() else { return };
    b.entry("context".to_string())
        .or_insert_with(|| Node::str("."));
    if !b.contains_key("dockerfile") && !b.contains_key("dockerfile_inline") {
        b.insert("dockerfile".into(), Node::str("Dockerfile"));
    }
    if let Some(args) = b.get_mut("args") {
        list_to_map(args);
        if let Some(a) = args.as_map_mut() {
            a.retain(|k, v| {
                if v.is_null() {
                    match env(k) {
                        Some(val) => v.value = Value::Str(val),
                        None => return false,
                    }
                }
                true
            });
        }
    }
}

/// `- FOO` in a list-form environment takes the value from `env` (kept bare when unset).
fn resolve_bare_environment(envs: &mut Node, env: Env) {
    match &mut envs.value {
        Value::Seq(items) => {
            for item in items.iter_mut() {
                if let Some(name) = item
                    .as_str()
                    .filter(|t| !t.contains('='))
                    .map(str::to_string)
                {
                    if let Some(v) = env(&name) {
                        item.value = Value::Str(format!("{name}={v}"));
                    }
                }
            }
        }
        Value::Map(m) => {
            for (k, v) in m.iter_mut() {
                if v.is_null() {
                    if let Some(val) = env(k) {
                        v.value = Value::Str(val);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Dependencies implied by `network_mode`/`ipc`/`pid`/`uts`/`cgroup: service:x`,
/// `volumes_from` and `links`; an explicit entry is never overwritten.
fn implicit_depends_on(s: &mut Map) {
    let mut implied: Vec<(String, bool)> = Vec::new();
    for key in ["network_mode", "ipc", "pid", "uts", "cgroup"] {
        if let Some(dep) = s
            .get(key)
            .and_then(Node::as_str)
            .and_then(|v| v.strip_prefix("service:"))
        {
            implied.push((dep.to_string(), true));
        }
    }
    for (key, restart) in [("volumes_from", false), ("links", true)] {
        for item in s.get(key).and_then(Node::as_seq).into_iter().flatten() {
            let Some(text) = item.as_str() else { continue };
            if text.starts_with("container:") {
                continue;
            }
            let name = text.split(':').next().unwrap_or(text);
            implied.push((name.to_string(), restart));
        }
    }
    if implied.is_empty() {
        return;
    }
    let deps = s
        .entry("depends_on".to_string())
        .or_insert_with(|| Node::map(Map::new()));
    depends_on_to_map(deps, false);
    let Some(d) = deps.as_map_mut() else { return };
    for (name, restart) in implied {
        d.entry(name)
            .or_insert_with(|| dependency("service_started", true, restart));
    }
}

fn dependency(condition: &str, required: bool, restart: bool) -> Node {
    let mut m = Map::new();
    m.insert("condition".into(), Node::str(condition));
    m.insert("required".into(), boolean(required));
    m.insert("restart".into(), boolean(restart));
    Node::map(m)
}

/// `depends_on: [a, b]` to the map form with `service_started` and `required: true`.
pub fn depends_on_to_map(deps: &mut Node, defaults: bool) {
    if let Value::Seq(items) = &deps.value {
        let mut m = Map::new();
        for item in items {
            if let Some(name) = item.scalar_text() {
                let mut d = Map::new();
                d.insert("condition".into(), Node::str("service_started"));
                d.insert("required".into(), boolean(true));
                m.insert(
                    name,
                    Node {
                        value: Value::Map(d),
                        ..item.clone()
                    },
                );
            }
        }
        deps.value = Value::Map(m);
    } else if let Some(m) = deps.as_map_mut().filter(|_| defaults) {
        for (_, d) in m.iter_mut() {
            if let Some(d) = d.as_map_mut() {
                d.entry("required".to_string())
                    .or_insert_with(|| boolean(true));
            }
        }
    }
}

/// `["K=V", "K"]` to `{K: V, K: null}`; maps stay.
pub fn list_to_map(node: &mut Node) {
    if let Value::Seq(items) = &node.value {
        let mut m = Map::new();
        for item in items {
            let text = item.scalar_text().unwrap_or_default();
            let (k, v) = match text.split_once('=') {
                Some((k, v)) => (
                    k.to_string(),
                    Node {
                        value: Value::Str(v.to_string()),
                        ..item.clone()
                    },
                ),
                None => (
                    text,
                    Node {
                        value: Value::Null,
                        ..item.clone()
                    },
                ),
            };
            m.insert(k, v);
        }
        node.value = Value::Map(m);
    }
}

/// The long forms of one service, as `config` prints them. Errors name the key.
pub fn canonical_service(s: &mut Map) -> Result<(), (String, Pos)> {
    if let Some(p) = s.get_mut("ports") {
        if let Some(list) = p.as_seq() {
            for (i, item) in list.iter().enumerate() {
                let short = item
                    .as_map()
                    .is_none()
                    .then(|| item.scalar_text())
                    .flatten();
                if let Some(Err(e)) = short.as_deref().map(ports::parse_port_config) {
                    return Err((format!("ports.{i}: {e}"), item.pos));
                }
            }
            p.value = Value::Seq(
                ports::transform_ports(list, false).map_err(|e| (format!("ports: {e}"), p.pos))?,
            );
        }
    }
    if let Some(v) = s.get_mut("volumes") {
        long_volumes(v)?;
    }
    if let Some(b) = s.get_mut("build") {
        if let Some(context) = b.as_str().map(str::to_string) {
            let mut m = Map::new();
            m.insert("context".into(), Node::str(context));
            b.value = Value::Map(m);
        }
    }
    for key in ["environment", "labels", "annotations", "sysctls"] {
        if let Some(n) = s.get_mut(key) {
            list_to_map(n);
            stringify_values(n);
        }
    }
    if let Some(d) = s.get_mut("depends_on") {
        depends_on_to_map(d, true);
    }
    if let Some(n) = s.get_mut("networks") {
        if let Value::Seq(items) = &n.value {
            let m = items
                .iter()
                .filter_map(|i| i.scalar_text().map(|k| (k, null())))
                .collect();
            n.value = Value::Map(m);
        }
    }
    for key in ["expose"] {
        if let Some(Value::Seq(items)) = s.get_mut(key).map(|n| &mut n.value) {
            for i in items.iter_mut() {
                if let Some(t) = i.scalar_text() {
                    i.value = Value::Str(t);
                }
            }
        }
    }
    for key in ["command", "entrypoint"] {
        if let Some(n) = s.get_mut(key) {
            if let Some(text) = n.as_str().map(str::to_string) {
                n.value = Value::Seq(shell_words(&text).into_iter().map(Node::str).collect());
            }
        }
    }
    Ok(())
}

/// Short-syntax volumes to long form; long ones checked and completed.
fn long_volumes(v: &mut Node) -> Result<(), (String, Pos)> {
    if let Value::Seq(items) = &mut v.value {
        for (i, item) in items.iter_mut().enumerate() {
            let item_pos = item.pos;
            if let Some(text) = item.as_str() {
                let pos = item.pos;
                *item =
                    volumes::parse_volume(text).map_err(|e| (format!("volumes.{i}: {e}"), pos))?;
                item.pos = pos;
            } else if let Some(m) = item.as_map_mut() {
                long_volume(m).map_err(|e| (format!("volumes.{i}: {e}"), item_pos))?;
            }
        }
    }
    Ok(())
}

/// Long-syntax volume checks and defaults: bind needs a source, an explicit
/// `bind: {}` creates the host path, tmpfs sizes in bytes.
fn long_volume(m: &mut Map) -> Result<(), String> {
    let kind = m
        .get("type")
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_string();
    let source_empty = m
        .get("source")
        .and_then(Node::scalar_text)
        .is_none_or(|s| s.is_empty());
    if kind == "bind" && source_empty {
        return Err(
            r#"invalid mount config for type "bind": field Source must not be empty"#.into(),
        );
    }
    if let Some(b) = m.get_mut("bind").and_then(Node::as_map_mut) {
        b.entry("create_host_path".to_string())
            .or_insert_with(|| boolean(true));
    }
    if let Some(size) = m
        .get_mut("tmpfs")
        .and_then(Node::as_map_mut)
        .and_then(|t| t.get_mut("size"))
    {
        if let Some(text) = size.as_str() {
            size.value = Value::Int(
                ram_in_bytes(text).ok_or_else(|| format!("invalid tmpfs size {text:?}"))?,
            );
        }
    }
    Ok(())
}

/// docker/go-units `RAMInBytes`: `512`, `1kb`, `64m`, `1.5g` (binary multiples).
pub fn ram_in_bytes(text: &str) -> Option<i64> {
    let t = text.trim().to_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    Some((n * mult) as i64)
}

fn stringify_values(n: &mut Node) {
    if let Some(m) = n.as_map_mut() {
        for (_, v) in m.iter_mut() {
            if let Some(t) = v.scalar_text() {
                v.value = Value::Str(t);
            }
        }
    }
}

/// Splits a command string as a POSIX shell would (quotes and backslashes),
/// the way compose-go's shellwords does for `command:` strings.
pub fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(n @ ('"' | '\\' | '$' | '`')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n)
                }
                None => cur.push('\\'),
            },
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}
