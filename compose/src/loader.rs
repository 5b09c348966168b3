//! Loads a project: finds the files, reads `.env`, interpolates, validates
//! each file against the schema, resolves `include` and `extends`, merges
//! the files, applies profiles and normalises to the canonical model.

use crate::dotenv::{self, EnvMap};
use crate::interpolate::interpolate;
use crate::merge::merge;
use crate::normalize;
use crate::schema::compose_schema;
use crate::yaml::{self, Map, Node, Value};
use std::path::{Path, PathBuf};

pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `-f` files in order; `-` is standard input (given in `stdin`).
    pub files: Vec<PathBuf>,
    pub stdin: Option<String>,
    pub project_name: Option<String>,
    pub profiles: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub working_dir: PathBuf,
    /// The process environment (wins over `.env`).
    pub environ: EnvMap,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError(msg.into()))
}

#[derive(Debug)]
pub struct Project {
    pub name: String,
    pub dir: PathBuf,
    /// The canonical model (`config` prints it).
    pub model: Node,
    pub warnings: Vec<String>,
    /// The files read, as shown in errors (relative to the working directory).
    pub files: Vec<String>,
}

impl Project {
    /// Where a key of the model was written, for errors: `compose.yaml:12:9:
    /// services.web.networks.front.ipv4_address` (no line when several files merged).
    pub fn locate(&self, path: &[&str]) -> String {
        let mut node = Some(&self.model);
        for key in path {
            node = node.and_then(|n| n.get(key));
        }
        let dotted = path.join(".");
        match (self.files.as_slice(), node) {
            ([one], Some(n)) if n.key_pos.line > 0 => format!("{one}:{}: {dotted}", n.key_pos),
            (files, _) => format!("{}: {dotted}", files.join(", ")),
        }
    }
}

/// Picks the first default file in `dir` or a parent; warns when several forms exist.
pub fn discover(dir: &Path, warnings: &mut Vec<String>) -> Result<PathBuf, LoadError> {
    for d in dir.ancestors() {
        let found: Vec<PathBuf> = DEFAULT_FILES
            .iter()
            .map(|f| d.join(f))
            .filter(|p| p.is_file())
            .collect();
        if let Some(first) = found.first() {
            if found.len() > 1 {
                let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                warnings.push(format!(
                    "Found multiple config files with supported names: {}",
                    names.join(", ")
                ));
                warnings.push(format!("Using {}", first.display()));
            }
            return Ok(first.clone());
        }
    }
    fail("no configuration file provided: not found")
}

/// A discovered `compose.yaml` brings its `compose.override.yaml` along.
fn with_override(file: PathBuf) -> Vec<PathBuf> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, "yaml"));
    let over = file.with_file_name(format!("{stem}.override.{ext}"));
    if over.is_file() {
        vec![file, over]
    } else {
        vec![file]
    }
}

/// docker compose's project name normalisation: lowercase, only `[a-z0-9_-]`.
pub fn normalize_project_name(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect()
}

struct Ctx {
    env: EnvMap,
    warnings: Vec<String>,
}

impl Ctx {
    fn lookup(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
}

pub fn load(opts: &Options) -> Result<Project, LoadError> {
    let mut warnings = Vec::new();
    let files = if opts.files.is_empty() {
        with_override(discover(&opts.working_dir, &mut warnings)?)
    } else {
        opts.files.clone()
    };
    let first_dir = |f: &Path| {
        if f == Path::new("-") {
            opts.working_dir.clone()
        } else {
            absolute(&opts.working_dir, f)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        }
    };
    let dir = first_dir(&files[0]);
    let env = project_env(opts, &dir)?;
    let mut ctx = Ctx { env, warnings };
    let mut model = Node::map(Map::new());
    let mut shown_files = Vec::new();
    for file in &files {
        let (text, display) = if file == Path::new("-") {
            (opts.stdin.clone().unwrap_or_default(), "-".to_string())
        } else {
            let path = absolute(&opts.working_dir, file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| LoadError(format!("{}: {e}", file.display())))?;
            let shown = path.strip_prefix(&opts.working_dir).unwrap_or(&path);
            (text, shown.display().to_string())
        };
        let doc = load_file(&text, &display, &dir, &mut ctx)?;
        merge(&mut model, doc, &mut Vec::new());
        shown_files.push(display);
    }
    let mut project = finish(model, opts, dir, ctx)?;
    project.files = shown_files;
    Ok(project)
}

fn finish(
    mut model: Node,
    opts: &Options,
    dir: PathBuf,
    mut ctx: Ctx,
) -> Result<Project, LoadError> {
    let name = opts
        .project_name
        .clone()
        .or_else(|| ctx.lookup("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()))
        .or_else(|| model.get("name").and_then(Node::scalar_text))
        .unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    let name = normalize_project_name(&name);
    if name.is_empty() {
        return fail("project name must not be empty");
    }
    let top = model.as_map_mut().expect("model is a mapping");
    top.shift_remove("version");
    top.shift_remove("include");
    top.shift_insert(0, "name".into(), Node::str(name.clone()));
    let mut profiles = opts.profiles.clone();
    if profiles.is_empty() {
        if let Some(p) = ctx.lookup("COMPOSE_PROFILES") {
            profiles = p
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
    }
    apply_profiles(top, &profiles)?;
    let lookup = |k: &str| ctx.env.get(k).cloned();
    normalize::normalize(&mut model, &lookup);
    canonicalize(&mut model, &dir)?;
    crate::graph::check_dependencies(&model).map_err(LoadError)?;
    ctx.warnings.dedup();
    Ok(Project {
        name,
        dir,
        model,
        warnings: ctx.warnings,
        files: vec![],
    })
}

/// Loads one document from text with a given environment (the conformance
/// vectors' loader entry point): `normalize` runs compose-go's `Normalize`
/// and the dependency-cycle check.
pub fn load_str(text: &str, env: EnvMap, dir: &Path, normalize: bool) -> Result<Node, LoadError> {
    let mut ctx = Ctx {
        env,
        warnings: Vec::new(),
    };
    let mut model = load_file(text, "compose.yaml", dir, &mut ctx)?;
    if normalize {
        let lookup = |k: &str| ctx.env.get(k).cloned();
        normalize::normalize(&mut model, &lookup);
        crate::graph::check_dependencies(&model).map_err(LoadError)?;
    }
    canonicalize(&mut model, dir)?;
    Ok(model)
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The interpolation environment: `.env` (or `--env-file`s), overridden by the process environment.
fn project_env(opts: &Options, dir: &Path) -> Result<EnvMap, LoadError> {
    let mut files = opts
        .env_files
        .iter()
        .map(|f| absolute(&opts.working_dir, f))
        .collect::<Vec<_>>();
    if files.is_empty() && dir.join(".env").is_file() {
        files.push(dir.join(".env"));
    }
    let mut env = EnvMap::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).map_err(|e| LoadError(format!("{}: {e}", f.display())))?;
        let environ = &opts.environ;
        let lookup = |k: &str| environ.get(k).cloned();
        dotenv::parse_into(&text, &mut env, &lookup)
            .map_err(|e| LoadError(format!("{}: {e}", f.display())))?;
    }
    for (k, v) in &opts.environ {
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

/// One file: parse, interpolate, validate, then resolve its `include`s and `extends`.
fn load_file(text: &str, display: &str, dir: &Path, ctx: &mut Ctx) -> Result<Node, LoadError> {
    let mut doc = yaml::parse(text).map_err(|e| LoadError(format!("{display}:{e}")))?;
    if !matches!(doc.value, Value::Map(_)) {
        return fail(format!(
            "{display}:{}: top-level object must be a mapping",
            doc.pos
        ));
    }
    let env = ctx.env.clone();
    let lookup = |k: &str| env.get(k).cloned();
    let mut unset = Vec::new();
    interpolate(&mut doc, "", &lookup, &mut unset)
        .map_err(|e| LoadError(format!("{display}:{}: {e}", e.pos)))?;
    for v in unset {
        ctx.warnings.push(format!(
            "The {v:?} variable is not set. Defaulting to a blank string."
        ));
    }
    compose_schema()
        .validate(&mut doc)
        .map_err(|e| LoadError(format!("{display}:{}: {e}", e.pos)))?;
    if let Some(services) = doc
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    {
        for (name, service) in services.iter_mut() {
            if let Some(s) = service.as_map_mut() {
                normalize::canonical_service(s).map_err(|(e, pos)| {
                    LoadError(format!("{display}:{pos}: services.{name}.{e}"))
                })?;
            }
        }
    }
    resolve_extends(&mut doc, display, dir, ctx, 0)?;
    resolve_includes(&mut doc, display, dir, ctx)?;
    Ok(doc)
}

fn load_path(path: &Path, ctx: &mut Ctx) -> Result<Node, LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| LoadError(format!("{}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut doc = load_file(&text, &path.display().to_string(), dir, ctx)?;
    // Relative paths in an included or extended file are relative to that file.
    canonicalize(&mut doc, dir)?;
    Ok(doc)
}

fn resolve_includes(
    doc: &mut Node,
    display: &str,
    dir: &Path,
    ctx: &mut Ctx,
) -> Result<(), LoadError> {
    let Some(includes) = doc.get("include").and_then(Node::as_seq).cloned() else {
        return Ok(());
    };
    for inc in includes {
        let paths: Vec<String> = match &inc.value {
            Value::Str(p) => vec![p.clone()],
            Value::Map(m) => match m.get("path") {
                Some(n) if n.as_seq().is_some() => n
                    .as_seq()
                    .into_iter()
                    .flatten()
                    .filter_map(Node::scalar_text)
                    .collect(),
                Some(n) => n.scalar_text().into_iter().collect(),
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        let mut included = Node::map(Map::new());
        for p in paths {
            let path = absolute(dir, Path::new(&p));
            merge(&mut included, load_path(&path, ctx)?, &mut Vec::new());
        }
        let Value::Map(inc_map) = included.value else {
            continue;
        };
        let top = doc.as_map_mut().expect("mapping");
        for (kind, resources) in inc_map {
            let Value::Map(res) = resources.value else {
                continue;
            };
            let target = top
                .entry(kind.clone())
                .or_insert_with(|| Node::map(Map::new()));
            if target.is_null() {
                target.value = Value::Map(Map::new());
            }
            let Some(t) = target.as_map_mut() else {
                continue;
            };
            for (name, r) in res {
                if t.contains_key(&name) {
                    return fail(format!(
                        "{display}:{}: {kind}.{name} conflicts with imported resource",
                        inc.pos
                    ));
                }
                t.insert(name, r);
            }
        }
    }
    Ok(())
}

fn resolve_extends(
    doc: &mut Node,
    display: &str,
    dir: &Path,
    ctx: &mut Ctx,
    depth: usize,
) -> Result<(), LoadError> {
    let Some(services) = doc.get("services").and_then(Node::as_map).cloned() else {
        return Ok(());
    };
    let mut resolved = services.clone();
    for (name, service) in &services {
        let mut chain = vec![name.clone()];
        let out = extend_service(service, &services, display, dir, ctx, &mut chain, depth)?;
        resolved.insert(name.clone(), out);
    }
    if let Some(s) = doc.as_map_mut().and_then(|m| m.get_mut("services")) {
        s.value = Value::Map(resolved);
    }
    Ok(())
}

fn extend_service(
    service: &Node,
    siblings: &Map,
    display: &str,
    dir: &Path,
    ctx: &mut Ctx,
    chain: &mut Vec<String>,
    depth: usize,
) -> Result<Node, LoadError> {
    let Some(ext) = service.get("extends") else {
        return Ok(service.clone());
    };
    let (base_name, file) = match &ext.value {
        Value::Str(s) => (s.clone(), None),
        _ => (
            ext.get("service")
                .and_then(Node::scalar_text)
                .unwrap_or_default(),
            ext.get("file").and_then(Node::scalar_text),
        ),
    };
    if depth > 32 || (file.is_none() && chain.contains(&base_name)) {
        return fail(format!(
            "{display}:{}: circular reference with extends: {}",
            ext.pos,
            chain.join(" -> ")
        ));
    }
    let mut base = match &file {
        None => {
            let base = siblings.get(&base_name).ok_or_else(|| {
                LoadError(format!(
                    "{display}:{}: cannot extend service {base_name:?}: service not found",
                    ext.pos
                ))
            })?;
            chain.push(base_name.clone());
            extend_service(base, siblings, display, dir, ctx, chain, depth + 1)?
        }
        Some(f) => {
            let path = absolute(dir, Path::new(f));
            let other = load_path(&path, ctx)?;
            other.get("services").and_then(|s| s.get(&base_name)).cloned().ok_or_else(|| {
                LoadError(format!("{display}:{}: cannot extend service {base_name:?} of {f}: service not found", ext.pos))
            })?
        }
    };
    let mut own = service.clone();
    if let Some(m) = own.as_map_mut() {
        m.shift_remove("extends");
    }
    if let Some(m) = base.as_map_mut() {
        m.shift_remove("extends");
    }
    let mut path = vec!["services".to_string(), chain[0].clone()];
    merge(&mut base, own, &mut path);
    Ok(base)
}

/// Drops services whose profiles are all inactive; a required dependency on
/// one of them is an error.
fn apply_profiles(top: &mut Map, active: &[String]) -> Result<(), LoadError> {
    let Some(services) = top.get_mut("services").and_then(Node::as_map_mut) else {
        return Ok(());
    };
    let all = active.iter().any(|p| p == "*");
    services.retain(|_, s| {
        let profiles: Vec<String> = s
            .get("profiles")
            .and_then(Node::as_seq)
            .into_iter()
            .flatten()
            .filter_map(Node::scalar_text)
            .collect();
        profiles.is_empty() || all || profiles.iter().any(|p| active.contains(p))
    });
    let names: Vec<String> = services.keys().cloned().collect();
    for (name, s) in services.iter_mut() {
        let Some(deps) = s
            .as_map_mut()
            .and_then(|m| m.get_mut("depends_on"))
            .and_then(Node::as_map_mut)
        else {
            continue;
        };
        for (dep, d) in deps.iter() {
            let required = !d
                .get("required")
                .is_some_and(|r| matches!(r.value, Value::Bool(false)));
            if !names.contains(dep) && required {
                return fail(format!("service {name:?} depends on undefined service {dep:?}: invalid compose project"));
            }
        }
        deps.retain(|dep, _| names.contains(dep));
    }
    Ok(())
}

/// Paths made absolute against the project directory, as compose-go's `ResolvePaths` does.
fn canonicalize(model: &mut Node, dir: &Path) -> Result<(), LoadError> {
    let resolve = |p: &str| -> String {
        if p.starts_with('/') || p.contains("://") || looks_windows(p) {
            p.to_string()
        } else if let Some(rest) = p.strip_prefix("~/") {
            std::env::var("HOME")
                .map(|h| format!("{h}/{rest}"))
                .unwrap_or_else(|_| p.to_string())
        } else {
            clean(&dir.join(p))
        }
    };
    let Some(services) = model
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    else {
        return Ok(());
    };
    for (_, service) in services.iter_mut() {
        let Some(s) = service.as_map_mut() else {
            continue;
        };
        if let Some(ctx) = s
            .get_mut("build")
            .and_then(|b| b.as_map_mut())
            .and_then(|b| b.get_mut("context"))
        {
            if let Some(c) = ctx.as_str().map(str::to_string) {
                ctx.value = Value::Str(resolve(&c));
            }
        }
        for v in s
            .get_mut("volumes")
            .and_then(|v| match &mut v.value {
                Value::Seq(i) => Some(i),
                _ => None,
            })
            .into_iter()
            .flatten()
        {
            let Some(m) = v.as_map_mut() else { continue };
            if m.get("type").and_then(Node::as_str) == Some("bind") {
                if let Some(src) = m.get_mut("source") {
                    if let Some(t) = src.as_str().map(str::to_string) {
                        src.value = Value::Str(resolve(&t));
                    }
                }
            }
        }
        if let Some(files) = s.get_mut("env_file") {
            long_env_files(files, &resolve);
        }
    }
    Ok(())
}

/// `env_file:` to its long form (`path`, `required`), paths resolved.
fn long_env_files(files: &mut Node, resolve: &dyn Fn(&str) -> String) {
    let list: Vec<Node> = match &files.value {
        Value::Str(p) => vec![Node::str(p.clone())],
        Value::Seq(items) => items.clone(),
        _ => Vec::new(),
    };
    let long = list.into_iter().map(|item| {
        let mut m = item.as_map().cloned().unwrap_or_else(|| {
            let mut m = Map::new();
            m.insert(
                "path".into(),
                Node::str(item.scalar_text().unwrap_or_default()),
            );
            m
        });
        if let Some(p) = m.get("path").and_then(Node::scalar_text) {
            m.insert("path".into(), Node::str(resolve(&p)));
        }
        m.entry("required".to_string())
            .or_insert_with(|| Node::new(Value::Bool(true)));
        Node::map(m)
    });
    files.value = Value::Seq(long.collect());
}

fn looks_windows(p: &str) -> bool {
    let b = p.as_bytes();
    p.starts_with("\\\\") || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// Lexically cleaned absolute path (`a/./b/../c` → `a/c`).
fn clean(p: &Path) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}
