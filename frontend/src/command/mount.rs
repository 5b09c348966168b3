//! `RUN --mount=...` values, parsed with BuildKit's keys and defaults.

use crate::lower::suggest;
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

/// The fields of one `--mount` value, expanded and checked one by one.
#[derive(Default)]
struct MountFields {
    kind: String,
    target: Option<String>,
    source: Option<String>,
    from: Option<String>,
    readonly: Option<bool>,
    id: Option<String>,
    sharing: Option<CacheSharing>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    size: Option<u64>,
    required: bool,
    env: Option<String>,
    /// Every key given, to check against the mount type's keys.
    seen_keys: Vec<String>,
}

/// Parses one `--mount` value. `expand` expands variables in a value; `ssh_count`
/// numbers the default targets of ssh mounts in one RUN.
pub fn parse_mount(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
    ssh_count: &mut usize,
) -> Result<ParsedMount, String> {
    let mut fields = MountFields {
        kind: "bind".to_string(),
        ..Default::default()
    };
    for field in csv_fields(value)? {
        let field = field.trim();
        if !field.is_empty() {
            fields.read(field, expand)?;
        }
    }
    let allowed = keys_of_type(&fields.kind);
    if let Some(k) = fields
        .seen_keys
        .iter()
        .find(|k| !allowed.contains(&k.as_str()))
    {
        return Err(format!(
            "unexpected key '{k}' for mount type {}",
            fields.kind
        ));
    }
    match fields.kind.as_str() {
        "bind" => fields.bind(),
        "tmpfs" => Ok(ParsedMount {
            mount: ExecMount {
                target: fields.need_target()?,
                kind: MountKind::Tmpfs { size: fields.size },
            },
            input: MountInput::None,
        }),
        "cache" => fields.cache(),
        "secret" => fields.secret(),
        _ => Ok(fields.ssh(ssh_count)),
    }
}

/// The keys a mount type takes.
fn keys_of_type(kind: &str) -> &'static [&'static str] {
    match kind {
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
    }
}

impl MountFields {
    /// One `key=value` (or lone flag key) field.
    fn read(
        &mut self,
        field: &str,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<(), String> {
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
        self.seen_keys.push(key.clone());
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
        self.set(&key, value)
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        match key {
            "type" => self.kind = mount_type(&value)?,
            "target" | "dst" | "destination" => self.target = Some(value),
            "source" | "src" => self.source = Some(value),
            "from" => self.from = Some(value),
            "ro" | "readonly" => self.readonly = Some(parse_bool(key, &value)?),
            "rw" | "readwrite" => self.readonly = Some(!parse_bool(key, &value)?),
            "required" => self.required = parse_bool(key, &value)?,
            "id" => self.id = Some(value),
            "sharing" => self.sharing = Some(cache_sharing(&value)?),
            "uid" | "gid" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| format!("invalid {key} {value:?}: expected a number"))?;
                if key == "uid" {
                    self.uid = Some(n);
                } else {
                    self.gid = Some(n);
                }
            }
            "mode" => {
                self.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| {
                    format!("invalid mode {value:?}: expected an octal mode such as 0755")
                })?)
            }
            "size" => {
                self.size = Some(parse_size(&value).ok_or_else(|| {
                    format!("invalid size {value:?}: expected bytes, e.g. 64m or 1g")
                })?)
            }
            "env" => self.env = Some(value),
            _ => unreachable!("keys are checked before"),
        }
        Ok(())
    }

    fn owner(&self, default_mode: u32) -> MountOwner {
        MountOwner {
            uid: self.uid.unwrap_or(0),
            gid: self.gid.unwrap_or(0),
            mode: self.mode.unwrap_or(default_mode),
        }
    }

    fn need_target(&self) -> Result<String, String> {
        self.target
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("mount type {} requires a target (target=/path)", self.kind))
    }

    fn bind(self) -> Result<ParsedMount, String> {
        let target = self.need_target()?;
        let input = match self.from {
            Some(f) => MountInput::From(f),
            None => MountInput::Context,
        };
        let kind = MountKind::Bind {
            input: 0,
            source: self.source.unwrap_or_else(|| "/".into()),
            readonly: self.readonly.unwrap_or(true),
        };
        Ok(ParsedMount {
            mount: ExecMount { target, kind },
            input,
        })
    }

    fn cache(self) -> Result<ParsedMount, String> {
        let target = self.need_target()?;
        let owner = self.owner(0o755);
        let (base, input) = match self.from {
            Some(f) => (
                Some((0, self.source.unwrap_or_else(|| "/".into()))),
                MountInput::From(f),
            ),
            None => (None, MountInput::None),
        };
        let kind = MountKind::Cache {
            id: self
                .id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| target.clone()),
            sharing: self.sharing.unwrap_or_default(),
            readonly: self.readonly.unwrap_or(false),
            base,
            owner,
        };
        Ok(ParsedMount {
            mount: ExecMount { target, kind },
            input,
        })
    }

    fn secret(self) -> Result<ParsedMount, String> {
        let owner = self.owner(0o400);
        let id = match (self.id.filter(|i| !i.is_empty()), &self.target) {
            (Some(i), _) => i,
            (None, Some(t)) if !t.is_empty() => t
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            _ => {
                return Err(
                    "secret mount requires an id or a target (id=mysecret or target=/path)".into(),
                )
            }
        };
        let target = match (self.target, &self.env) {
            (Some(t), _) => t,
            (None, Some(_)) => String::new(),
            (None, None) => format!("/run/secrets/{id}"),
        };
        let kind = MountKind::Secret {
            id,
            required: self.required,
            env: self.env,
            owner,
        };
        Ok(ParsedMount {
            mount: ExecMount { target, kind },
            input: MountInput::None,
        })
    }

    fn ssh(self, ssh_count: &mut usize) -> ParsedMount {
        let owner = self.owner(0o600);
        let target = self
            .target
            .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}"));
        *ssh_count += 1;
        let kind = MountKind::Ssh {
            id: self
                .id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "default".into()),
            required: self.required,
            owner,
        };
        ParsedMount {
            mount: ExecMount { target, kind },
            input: MountInput::None,
        }
    }
}

/// `type=`, lowercased, one of [`MOUNT_TYPES`].
fn mount_type(value: &str) -> Result<String, String> {
    let t = value.to_ascii_lowercase();
    if !MOUNT_TYPES.contains(&t.as_str()) {
        let hint = suggest(&t, MOUNT_TYPES.iter().copied())
            .map(|s| format!("; did you mean {s}?"))
            .unwrap_or_default();
        return Err(format!(
            "unsupported mount type {value:?} (use bind, cache, tmpfs, secret or ssh){hint}"
        ));
    }
    Ok(t)
}

fn cache_sharing(value: &str) -> Result<CacheSharing, String> {
    match value.to_ascii_lowercase().as_str() {
        "shared" => Ok(CacheSharing::Shared),
        "private" => Ok(CacheSharing::Private),
        "locked" => Ok(CacheSharing::Locked),
        _ => Err(format!(
            "unsupported sharing value {value:?} (use shared, private or locked)"
        )),
    }
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
