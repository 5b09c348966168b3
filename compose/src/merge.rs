//! The Compose merge rules (compose-spec "Merge and override"): mappings merge
//! recursively; some service sequences append (unique by a key); everything
//! else is replaced. `!reset` removes, `!override` replaces.

use crate::yaml::{MergeTag, Node, Value};

/// Service sequences whose entries are appended, and how an entry is keyed.
fn sequence_key(path: &[&str]) -> Option<fn(&Node) -> String> {
    let last = *path.last()?;
    let in_service = path.len() == 3 && path[0] == "services";
    if !in_service {
        return None;
    }
    let whole: fn(&Node) -> String = |n| n.to_json().to_string();
    let by_target: fn(&Node) -> String = |n| {
        n.get("target")
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| n.to_json().to_string())
    };
    let by_source: fn(&Node) -> String = |n| {
        n.get("source")
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| n.scalar_text().unwrap_or_default())
    };
    match last {
        "volumes" => Some(by_target),
        "secrets" | "configs" => Some(by_source),
        "ports"
        | "expose"
        | "cap_add"
        | "cap_drop"
        | "dns"
        | "dns_search"
        | "dns_opt"
        | "security_opt"
        | "external_links"
        | "links"
        | "devices"
        | "device_cgroup_rules"
        | "env_file"
        | "group_add" => Some(whole),
        _ => None,
    }
}

/// Merges `over` into `base`. `path` is the key path of `base`.
pub fn merge(base: &mut Node, over: Node, path: &mut Vec<String>) {
    if over.tag == Some(MergeTag::Override) {
        *base = over;
        return;
    }
    match (&mut base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => {
            for (k, v) in o {
                if v.tag == Some(MergeTag::Reset) {
                    b.shift_remove(&k);
                    continue;
                }
                match b.get_mut(&k) {
                    Some(existing) => {
                        path.push(k);
                        merge(existing, v, path);
                        path.pop();
                    }
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Seq(b), Value::Seq(o)) => {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            match sequence_key(&p) {
                Some(key) => {
                    for item in o {
                        let k = key(&item);
                        match b.iter_mut().find(|e| key(e) == k) {
                            Some(existing) => *existing = item,
                            None => b.push(item),
                        }
                    }
                }
                None => *b = o,
            }
        }
        (_, value) => {
            base.value = value;
            base.pos = over.pos;
        }
    }
}
