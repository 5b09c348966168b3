//! Build contexts: the main context directory (with its `.dockerignore`), and
//! `--build-context name=VALUE` named contexts for `FROM name`, `COPY --from=name` and
//! `RUN --mount=from=name`.

use crate::request::NamedSource;
use anyhow::{anyhow, bail, Result};
use frontend::lower::NamedContext;
use solver::context::LocalSource;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Opens a context directory with its `.dockerignore` (or the Dockerfile's own
/// `NAME.dockerignore` next to `dockerfile`).
pub fn local_dir(dir: &Path, dockerfile: Option<&Path>) -> Result<Arc<dyn LocalSource>> {
    let context = dir.canonicalize().map_err(|_| {
        anyhow!(
            "unable to prepare context: path {:?} not found",
            dir.display().to_string()
        )
    })?;
    if !context.is_dir() {
        bail!(
            "unable to prepare context: path {:?} is not a directory",
            context.display().to_string()
        );
    }
    let default_dockerfile = context.join("Dockerfile");
    let dockerfile = dockerfile.unwrap_or(&default_dockerfile);
    let source =
        frontend::ignore::ContextDir::open(&context, Some(dockerfile)).map_err(|e| anyhow!(e))?;
    Ok(Arc::new(source))
}

/// Parses every `--build-context`; an `oci-layout://` image is loaded into the content store
/// under `root` now, so a bad layout is reported against its flag.
pub fn parse_build_contexts(
    root: &Path,
    specs: &[String],
) -> Result<BTreeMap<String, NamedSource>> {
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
        let source = match NamedContext::parse(value, "")
            .map_err(|e| anyhow!("--build-context {spec:?}: {e}"))?
        {
            NamedContext::Image { reference } => NamedSource::Image(reference),
            NamedContext::OciLayout { path } => NamedSource::Image(
                load_oci_layout(root, &name, &path)
                    .map_err(|e| anyhow!("--build-context {spec:?}: {e:#}"))?,
            ),
            NamedContext::Local { .. } => NamedSource::Local(
                named_dir(value).map_err(|e| anyhow!("--build-context {spec:?}: {e}"))?,
            ),
        };
        out.insert(name, source);
    }
    Ok(out)
}

/// A named context's directory, with its own `.dockerignore`.
fn named_dir(value: &str) -> Result<Arc<dyn LocalSource>> {
    let dir = Path::new(value)
        .canonicalize()
        .map_err(|e| anyhow!("{value}: {e}"))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let source = frontend::ignore::ContextDir::open(&dir, None).map_err(|e| anyhow!(e))?;
    Ok(Arc::new(source))
}

/// Named contexts as lowering sees them, and the local sources they are served from.
pub(crate) type LoweringContexts = (
    BTreeMap<String, NamedContext>,
    Vec<(String, Arc<dyn LocalSource>)>,
);

/// The named contexts as lowering sees them, and the local sources they are served from
/// (named `PREFIX:NAME`, so several builds' contexts never collide).
pub(crate) fn lowering_contexts(
    root: &Path,
    named: &BTreeMap<String, NamedSource>,
    prefix: &str,
) -> Result<LoweringContexts> {
    let mut contexts = BTreeMap::new();
    let mut locals = Vec::new();
    for (name, source) in named {
        let context = match source {
            NamedSource::Local(dir) => {
                let local_name = format!("{prefix}:{name}");
                locals.push((local_name.clone(), dir.clone()));
                NamedContext::Local { local_name }
            }
            NamedSource::Image(reference) => NamedContext::Image {
                reference: reference.clone(),
            },
            NamedSource::OciLayout(path) => NamedContext::Image {
                reference: load_oci_layout(root, name, path)
                    .map_err(|e| anyhow!("build context {name:?}: {e:#}"))?,
            },
        };
        contexts.insert(name.clone(), context);
    }
    Ok((contexts, locals))
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
        let dir = tempfile::tempdir().unwrap();
        let specs = vec![
            format!("Src={}", dir.path().display()),
            "base=docker-image://alpine:3".to_string(),
        ];
        let got = parse_build_contexts(dir.path(), &specs).unwrap();
        assert!(
            matches!(&got["src"], NamedSource::Local(d) if d.root() == dir.path().canonicalize().unwrap())
        );
        assert!(matches!(&got["base"], NamedSource::Image(reference) if reference == "alpine:3"));
        let (contexts, locals) = lowering_contexts(dir.path(), &got, "context").unwrap();
        assert_eq!(
            contexts["src"],
            NamedContext::Local {
                local_name: "context:src".into()
            }
        );
        assert_eq!(locals[0].0, "context:src");
        for bad in [
            "noequals",
            "x=/does/not/exist",
            "x=s3://bucket",
            "=y",
            "x=oci-layout:///does/not/exist",
        ] {
            assert!(
                parse_build_contexts(dir.path(), &[bad.into()]).is_err(),
                "{bad}"
            );
        }
    }
}
