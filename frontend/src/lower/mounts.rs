//! `RUN --mount=...` values, parsed with BuildKit's keys and defaults.

use super::suggest;
use llb::graph::{CacheSharing, ExecMount, MountKind, MountOwner};

const MOUNT_KEYS: &[&str] = &[
    "type",
    "target",
    "dst",
    "destination",
    "source",
    "src",
    "from",
    "ro",
    "readonly",
    "rw",
    "readwrite",
    "id",
    "sharing",
    "uid",
    "gid",
    "mode",
    "size",
    "required",
    "env",
];

const MOUNT_TYPES: &[&str] = &["bind", "cache", "tmpfs", "secret", "ssh"];

/// Where a mount reads its files from, before the lowerer turns it into an input index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountInput {
    /// Nothing to read (tmpfs, secret, ssh, cache without `from`).
    None,
    /// The build context (a bind without `from`).
    Context,
    /// A stage, image or named context (`from=`).
    From(String),
}

/// A parsed `--mount` whose `Bind`/`Cache` input index is still 0; the lowerer patches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMount {
    pub mount: ExecMount,
    pub input: MountInput,
}

impl ParsedMount {
    /// Points the mount at vertex input `index`.
    pub fn set_input(&mut self, index: usize) {
        match &mut self.mount.kind {
            MountKind::Bind { input, .. } => *input = index,
            MountKind::Cache {
                base: Some((input, _)),
                ..
            } => *input = index,
            _ => {}
        }
    }
}

/// Splits a comma-separated field list like Go's csv reader: `"a,b",c` is two fields.
fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("unterminated quote in --mount={value}"));
    }
    fields.push(field);
    Ok(fields)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "" | "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!(
            "invalid value for {key}: {value:?} (expected true or false)"
        )),
    }
}

/// Byte sizes as Docker's `RAMInBytes` takes them: `64m`, `1g`, `512k`, `1024`.
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let v = v.strip_suffix('i').unwrap_or(v);
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        't' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0 && n.is_finite()).then_some((n * mult as f64) as u64)
}

/// Parses one `--mount` value. `expand` expands variables in a value; `ssh_count`
/// numbers the default targets of ssh mounts in one RUN.
pub fn parse_mount(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
    ssh_count: &mut usize,
) -> Result<ParsedMount, String> {
    let mut kind = "bind".to_string();
    let mut target = None;
    let mut source = None;
    let mut from = None;
    let mut readonly: Option<bool> = None;
    let mut id = None;
    let mut sharing = None;
    let (mut uid, mut gid, mut mode) = (None, None, None);
    let mut size = None;
    let mut required = false;
    let mut env = None;
    let mut seen_keys = Vec::new();
    for field in csv_fields(value)? {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (key, raw) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.to_ascii_lowercase(), None),
        };
        if !MOUNT_KEYS.contains(&key.as_str()) {
            let hint = suggest(&key, MOUNT_KEYS.iter().copied())
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_default();
            return Err(format!("unexpected key '{key}' in '{field}'{hint}"));
        }
        seen_keys.push(key.clone());
        // Keys that are flags may stand alone (`ro`, `required`); others need a value.
        let is_flag = matches!(
            key.as_str(),
            "ro" | "readonly" | "rw" | "readwrite" | "required"
        );
        let value = match raw {
            Some(v) => expand(v)?,
            None if is_flag => String::new(),
            None => return Err(format!("invalid field '{field}': {key} requires a value")),
        };
        match key.as_str() {
            "type" => {
                let t = value.to_ascii_lowercase();
                if !MOUNT_TYPES.contains(&t.as_str()) {
                    let hint = suggest(&t, MOUNT_TYPES.iter().copied())
                        .map(|s| format!("; did you mean {s}?"))
                        .unwrap_or_default();
                    return Err(format!(
                        "unsupported mount type {value:?} (use bind, cache, tmpfs, secret or ssh){hint}"
                    ));
                }
                kind = t;
            }
            "target" | "dst" | "destination" => target = Some(value),
            "source" | "src" => source = Some(value),
            "from" => from = Some(value),
            "ro" | "readonly" => readonly = Some(parse_bool(&key, &value)?),
            "rw" | "readwrite" => readonly = Some(!parse_bool(&key, &value)?),
            "required" => required = parse_bool(&key, &value)?,
            "id" => id = Some(value),
            "sharing" => {
                sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {value:?} (use shared, private or locked)"
                        ))
                    }
                })
            }
            "uid" | "gid" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| format!("invalid {key} {value:?}: expected a number"))?;
                if key == "uid" {
                    uid = Some(n);
                } else {
                    gid = Some(n);
                }
            }
            "mode" => {
                mode = Some(u32::from_str_radix(&value, 8).map_err(|_| {
                    format!("invalid mode {value:?}: expected an octal mode such as 0755")
                })?)
            }
            "size" => {
                size = Some(parse_size(&value).ok_or_else(|| {
                    format!("invalid size {value:?}: expected bytes, e.g. 64m or 1g")
                })?)
            }
            "env" => env = Some(value),
            _ => unreachable!("keys are checked above"),
        }
    }
    let allowed: &[&str] = match kind.as_str() {
        "bind" => &[
            "type",
            "target",
            "dst",
            "destination",
            "source",
            "src",
            "from",
            "ro",
            "readonly",
            "rw",
            "readwrite",
        ],
        "tmpfs" => &["type", "target", "dst", "destination", "size"],
        "cache" => &[
            "type",
            "target",
            "dst",
            "destination",
            "source",
            "src",
            "from",
            "ro",
            "readonly",
            "rw",
            "readwrite",
            "id",
            "sharing",
            "uid",
            "gid",
            "mode",
        ],
        "secret" => &[
            "type",
            "target",
            "dst",
            "destination",
            "id",
            "required",
            "env",
            "uid",
            "gid",
            "mode",
        ],
        _ => &[
            "type",
            "target",
            "dst",
            "destination",
            "id",
            "required",
            "uid",
            "gid",
            "mode",
        ],
    };
    if let Some(k) = seen_keys.iter().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unexpected key '{k}' for mount type {kind}"));
    }
    let owner = |default_mode: u32| MountOwner {
        uid: uid.unwrap_or(0),
        gid: gid.unwrap_or(0),
        mode: mode.unwrap_or(default_mode),
    };
    let need_target = |t: Option<String>| {
        t.filter(|t| !t.is_empty())
            .ok_or_else(|| format!("mount type {kind} requires a target (target=/path)"))
    };
    let (target, kind, input) = match kind.as_str() {
        "bind" => {
            let input = match from {
                Some(f) => MountInput::From(f),
                None => MountInput::Context,
            };
            (
                need_target(target)?,
                MountKind::Bind {
                    input: 0,
                    source: source.unwrap_or_else(|| "/".into()),
                    readonly: readonly.unwrap_or(true),
                },
                input,
            )
        }
        "tmpfs" => (
            need_target(target)?,
            MountKind::Tmpfs { size },
            MountInput::None,
        ),
        "cache" => {
            let target = need_target(target)?;
            let (base, input) = match from {
                Some(f) => (
                    Some((0, source.unwrap_or_else(|| "/".into()))),
                    MountInput::From(f),
                ),
                None => (None, MountInput::None),
            };
            (
                target.clone(),
                MountKind::Cache {
                    id: id.filter(|i| !i.is_empty()).unwrap_or(target),
                    sharing: sharing.unwrap_or_default(),
                    readonly: readonly.unwrap_or(false),
                    base,
                    owner: owner(0o755),
                },
                input,
            )
        }
        "secret" => {
            let id = match (id.filter(|i| !i.is_empty()), &target) {
                (Some(i), _) => i,
                (None, Some(t)) if !t.is_empty() => t
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                _ => {
                    return Err(
                        "secret mount requires an id or a target (id=mysecret or target=/path)"
                            .into(),
                    )
                }
            };
            let target = match (target, &env) {
                (Some(t), _) => t,
                (None, Some(_)) => String::new(),
                (None, None) => format!("/run/secrets/{id}"),
            };
            (
                target,
                MountKind::Secret {
                    id,
                    required,
                    env,
                    owner: owner(0o400),
                },
                MountInput::None,
            )
        }
        _ => {
            let target = target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}"));
            *ssh_count += 1;
            (
                target,
                MountKind::Ssh {
                    id: id
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| "default".into()),
                    required,
                    owner: owner(0o600),
                },
                MountInput::None,
            )
        }
    };
    Ok(ParsedMount {
        mount: ExecMount { target, kind },
        input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<ParsedMount, String> {
        parse_mount(v, &|s| Ok(s.to_string()), &mut 0)
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn csv_quotes_group_fields() {
        assert_eq!(
            csv_fields(r#"type=bind,"source=a,b",target=/x"#).unwrap(),
            ["type=bind", "source=a,b", "target=/x"]
        );
    }

    #[test]
    fn keys_not_for_the_type_are_rejected() {
        let e = parse("type=tmpfs,target=/t,sharing=locked").unwrap_err();
        assert!(e.contains("'sharing' for mount type tmpfs"), "{e}");
        let e = parse("type=bind,target=/t,tagret=/x").unwrap_err();
        assert!(e.contains("did you mean target?"), "{e}");
    }
}
