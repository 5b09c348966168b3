//! Service `volumes:` short syntax (`[source:]target[:options]`), parsed as
//! compose-go's `format.ParseVolume` does (no interpolation; Windows paths
//! understood on every platform).

use crate::yaml::{Map, Node, Value};

fn is_windows_drive(buffer: &[char], c: char) -> bool {
    c == ':' && buffer.len() == 1 && buffer[0].is_alphabetic()
}

fn is_file_path(source: &str) -> bool {
    let mut chars = source.chars();
    match chars.next() {
        None => false,
        Some('.' | '/' | '~') => true,
        Some(_) if source.starts_with("\\\\") => true,
        Some(first) => chars
            .next()
            .is_some_and(|second| is_windows_drive(&[first], second)),
    }
}

#[derive(Default)]
struct Spec {
    source: String,
    target: String,
    read_only: bool,
    nocopy: Option<bool>,
    propagation: String,
    selinux: String,
    has_bind: bool,
}

fn populate_field(spec: &mut Spec, sep: Option<char>, buffer: &[char]) -> Result<(), String> {
    let text: String = buffer.iter().collect();
    if buffer.is_empty() {
        return Err("empty section between colons".into());
    }
    if spec.source.is_empty() && sep.is_none() {
        spec.target = text;
        return Ok(());
    }
    if spec.source.is_empty() {
        spec.source = text;
        return Ok(());
    }
    if spec.target.is_empty() {
        spec.target = text;
        return Ok(());
    }
    if sep == Some(':') {
        return Err("too many colons".into());
    }
    for option in text.split(',') {
        match option {
            "ro" => spec.read_only = true,
            "rw" => spec.read_only = false,
            "nocopy" => spec.nocopy = Some(true),
            "z" | "Z" => {
                spec.has_bind = true;
                spec.selinux = option.into();
            }
            "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave" => {
                spec.has_bind = true;
                spec.propagation = option.into();
            }
            _ => {} // compose-go ignores unknown options
        }
    }
    Ok(())
}

/// Parses a short-syntax volume into its long form.
pub fn parse_volume(spec_text: &str) -> Result<Node, String> {
    match spec_text.chars().count() {
        0 => return Err("invalid empty volume spec".into()),
        1 | 2 => {
            let mut m = Map::new();
            m.insert("type".into(), Node::str("volume"));
            m.insert("target".into(), Node::str(spec_text));
            return Ok(Node::map(m));
        }
        _ => {}
    }
    let mut spec = Spec::default();
    let mut in_var = false;
    let mut buffer: Vec<char> = Vec::new();
    for c in spec_text.chars() {
        if is_windows_drive(&buffer, c) {
            buffer.push(c);
        } else if c == '$' {
            in_var = true;
            buffer.push(c);
        } else if in_var && c == '}' {
            in_var = false;
            buffer.push(c);
        } else if c == ':' && !in_var {
            populate_field(&mut spec, Some(c), &buffer)
                .map_err(|e| format!("invalid spec: {spec_text}: {e}"))?;
            buffer.clear();
        } else {
            buffer.push(c);
        }
    }
    populate_field(&mut spec, None, &buffer)
        .map_err(|e| format!("invalid spec: {spec_text}: {e}"))?;
    Ok(long_form(spec))
}

fn long_form(spec: Spec) -> Node {
    let bind = is_file_path(&spec.source);
    let mut m = Map::new();
    m.insert(
        "type".into(),
        Node::str(if bind { "bind" } else { "volume" }),
    );
    if !spec.source.is_empty() {
        m.insert("source".into(), Node::str(spec.source));
    }
    m.insert("target".into(), Node::str(spec.target));
    if spec.read_only {
        m.insert("read_only".into(), Node::new(Value::Bool(true)));
    }
    if bind || spec.has_bind {
        let mut b = Map::new();
        if bind {
            b.insert("create_host_path".into(), Node::new(Value::Bool(true)));
        }
        if !spec.propagation.is_empty() {
            b.insert("propagation".into(), Node::str(spec.propagation));
        }
        if !spec.selinux.is_empty() {
            b.insert("selinux".into(), Node::str(spec.selinux));
        }
        m.insert("bind".into(), Node::map(b));
    }
    if spec.nocopy.is_some() || !bind {
        let mut v = Map::new();
        if spec.nocopy == Some(true) {
            v.insert("nocopy".into(), Node::new(Value::Bool(true)));
        }
        m.insert("volume".into(), Node::map(v));
    }
    Node::map(m)
}

/// The reverse of `parse_volume` for a long-form volume: `src:dst:rw,z,shared`.
pub fn volume_string(v: &Node) -> String {
    let text = |n: Option<&Node>, k: &str| {
        n.and_then(|n| n.get(k))
            .and_then(Node::scalar_text)
            .unwrap_or_default()
    };
    let flag = |n: Option<&Node>, k: &str| {
        n.and_then(|n| n.get(k))
            .is_some_and(|b| matches!(b.value, Value::Bool(true)))
    };
    let mut options = vec![if flag(Some(v), "read_only") {
        "ro"
    } else {
        "rw"
    }
    .to_string()];
    let bind = v.get("bind");
    for key in ["selinux", "propagation"] {
        let t = text(bind, key);
        if !t.is_empty() {
            options.push(t);
        }
    }
    if flag(v.get("volume"), "nocopy") {
        options.push("nocopy".into());
    }
    format!(
        "{}:{}:{}",
        text(Some(v), "source"),
        text(Some(v), "target"),
        options.join(",")
    )
}
