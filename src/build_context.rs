//! `--build-context name=VALUE`: named contexts for `FROM name`, `COPY --from=name`
//! and `RUN --mount=from=name`.

use anyhow::{anyhow, bail, Result};
use frontend::lower::NamedContext;
use solver::context::LocalSource;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The name under which a local named context is served to the solver.
pub fn local_name(name: &str) -> String {
    format!("context:{name}")
}

/// Parses every `--build-context`, adding local directories (each with its own
/// `.dockerignore`) to `locals`.
pub fn parse_build_contexts(
    root: &std::path::Path,
    specs: &[String],
    locals: &mut HashMap<String, Arc<dyn LocalSource>>,
) -> Result<BTreeMap<String, NamedContext>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (name, value) = spec
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| {
                anyhow!("--build-context {spec:?}: expected name=VALUE (a directory, docker-image://REF or oci-layout://PATH)")
            })?;
        let name = name.to_lowercase();
        if out.contains_key(&name) {
            bail!("--build-context {spec:?}: the context {name:?} is given twice");
        }
        let local = local_name(&name);
        let mut ctx = NamedContext::parse(value, &local)
            .map_err(|e| anyhow!("--build-context {spec:?}: {e}"))?;
        if let NamedContext::OciLayout { path } = &ctx {
            let reference = load_oci_layout(root, &name, path)
                .map_err(|e| anyhow!("--build-context {spec:?}: {e:#}"))?;
            ctx = NamedContext::Image { reference };
        }
        if let NamedContext::Local { .. } = ctx {
            let dir = std::path::Path::new(value)
                .canonicalize()
                .map_err(|e| anyhow!("--build-context {spec:?}: {value}: {e}"))?;
            if !dir.is_dir() {
                bail!(
                    "--build-context {spec:?}: {} is not a directory",
                    dir.display()
                );
            }
            let source = frontend::ignore::ContextDir::open(&dir, None)
                .map_err(|e| anyhow!("--build-context {spec:?}: {e}"))?;
            locals.insert(local, Arc::new(source));
        }
        out.insert(name, ctx);
    }
    Ok(out)
}

/// Loads the image an `oci-layout://PATH[@sha256:...|:TAG]` context names into the content
/// store and returns a reference pinned to it.
fn load_oci_layout(root: &std::path::Path, name: &str, spec: &str) -> Result<String> {
    // A selector follows the last path component: `@digest`, or `:tag`.
    let last_slash = spec.rfind('/').map_or(0, |i| i + 1);
    let (path, selector) = match spec.rfind('@').or_else(|| spec.rfind(':')) {
        Some(i) if i >= last_slash => (&spec[..i], Some(&spec[i + 1..])),
        _ => (spec, None),
    };
    let content = exporter::ContentStore::open(root)?;
    let descriptor = exporter::load_oci_layout(&content, std::path::Path::new(path), selector)?;
    Ok(format!("oci-layout/{name}@{}", descriptor.digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let mut locals = HashMap::new();
        let dir = tempfile::tempdir().unwrap();
        let specs = vec![
            format!("Src={}", dir.path().display()),
            "base=docker-image://alpine:3".to_string(),
        ];
        let got = parse_build_contexts(dir.path(), &specs, &mut locals).unwrap();
        assert_eq!(
            got["src"],
            NamedContext::Local {
                local_name: "context:src".into()
            }
        );
        assert!(locals.contains_key("context:src"));
        assert!(
            matches!(&got["base"], NamedContext::Image { reference } if reference == "alpine:3")
        );
        for bad in [
            "noequals",
            "x=/does/not/exist",
            "x=s3://bucket",
            "=y",
            "x=oci-layout:///does/not/exist",
        ] {
            assert!(
                parse_build_contexts(dir.path(), &[bad.into()], &mut locals).is_err(),
                "{bad}"
            );
        }
    }
}
