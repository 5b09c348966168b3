//! Build caches: the `--cache-to`, `--cache-from` and `--no-cache-filter` specs, importing
//! caches into a solve, and the build's metadata document (`--metadata-file`).

use anyhow::{anyhow, bail, Result};
use solver::cache::{CacheExport, CacheFrom, CacheMode, CacheTo};
use solver::gha::GhaSettings;
use solver::Solver;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

fn check_keys(flag: &str, spec: &str, kv: &HashMap<&str, &str>, allowed: &[&str]) -> Result<()> {
    for k in kv.keys() {
        if !allowed.contains(k) {
            bail!(
                "{flag} {spec:?}: unknown option {k:?}; allowed: {}",
                allowed.join(", ")
            );
        }
    }
    Ok(())
}

fn required<'a>(flag: &str, spec: &str, kv: &HashMap<&str, &'a str>, key: &str) -> Result<&'a str> {
    kv.get(key)
        .copied()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("{flag} {spec:?}: {key}= is required"))
}

/// Options of `type=gha` besides mode/mounts.
const GHA_KEYS: &[&str] = &["type", "scope", "url", "url_v2", "token", "timeout"];

/// `type=gha` settings: `url`/`token` default to the runner's `ACTIONS_RESULTS_URL` and
/// `ACTIONS_RUNTIME_TOKEN`; `scope` to the first image name, so two images built in one
/// repository do not overwrite each other's cache (build-push-action #497).
fn gha_settings(
    flag: &str,
    spec: &str,
    kv: &HashMap<&str, &str>,
    tags: &[String],
) -> Result<GhaSettings> {
    let from = |key: &str, alt: Option<&str>, env: &str| -> Result<String> {
        kv.get(key)
            .or_else(|| alt.and_then(|a| kv.get(a)))
            .map(|v| v.to_string())
            .or_else(|| std::env::var(env).ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "{flag} {spec:?}: {key}= not given and {env} is not set \
                     (it is set for JavaScript actions such as this repository's action.yml)"
                )
            })
    };
    let url = from("url_v2", Some("url"), "ACTIONS_RESULTS_URL")?;
    let token = from("token", None, "ACTIONS_RUNTIME_TOKEN")?;
    let scope = match kv.get("scope") {
        Some(s) => s.to_string(),
        None => default_gha_scope(tags),
    };
    if scope.is_empty() || scope.contains('#') {
        bail!("{flag} {spec:?}: scope={scope:?} must be non-empty and without '#'");
    }
    let timeout = match kv.get("timeout") {
        None => std::time::Duration::from_secs(600),
        Some(t) => parse_duration(t)
            .ok_or_else(|| anyhow!("{flag} {spec:?}: timeout={t:?} is not like 30s, 10m or 1h"))?,
    };
    Ok(GhaSettings {
        url,
        token,
        scope,
        timeout,
    })
}

/// The image name of the first `-t` without tag or digest (`buildkit` without one, as BuildKit).
fn default_gha_scope(tags: &[String]) -> String {
    let Some(r) = tags
        .first()
        .and_then(|t| exporter::Reference::parse(t).ok())
    else {
        return "buildkit".into();
    };
    match r.repository.strip_prefix("library/") {
        Some(short) if r.registry == "docker.io" => short.to_string(),
        _ if r.registry == "docker.io" => r.repository,
        _ => format!("{}/{}", r.registry, r.repository),
    }
}

/// `30s`, `10m`, `1h` (or bare seconds).
fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let (n, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().ok().filter(|&n| n > 0)?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

/// Parses one `--cache-to`; `tags` (the `-t` names) give `type=gha` its default scope.
pub fn parse_cache_to(spec: &str, tags: &[String]) -> Result<CacheTo> {
    const FLAG: &str = "--cache-to";
    let kv = crate::output::key_values(FLAG, spec)?;
    let mode = match kv.get("mode").copied() {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(m) => bail!("{FLAG} {spec:?}: mode={m:?} is not min or max"),
    };
    let mounts = match kv.get("mounts").copied() {
        None | Some("false") => false,
        Some("true") => true,
        Some(m) => bail!("{FLAG} {spec:?}: mounts={m:?} is not true or false"),
    };
    match kv.get("type").copied() {
        Some("local") => {
            check_keys(FLAG, spec, &kv, &["type", "dest", "mode", "mounts"])?;
            Ok(CacheTo::Local {
                dest: PathBuf::from(required(FLAG, spec, &kv, "dest")?),
                mode,
                mounts,
            })
        }
        Some("registry") => {
            check_keys(FLAG, spec, &kv, &["type", "ref", "mode", "mounts"])?;
            let reference = required(FLAG, spec, &kv, "ref")?;
            exporter::Reference::parse(reference).map_err(|e| anyhow!("{FLAG} {spec:?}: {e}"))?;
            Ok(CacheTo::Registry {
                reference: reference.to_string(),
                mode,
                mounts,
            })
        }
        Some("inline") => {
            check_keys(FLAG, spec, &kv, &["type", "mode"])?;
            if mode == CacheMode::Max {
                bail!("{FLAG} {spec:?}: inline cache only supports mode=min");
            }
            Ok(CacheTo::Inline)
        }
        Some("gha") => {
            check_keys(FLAG, spec, &kv, &[GHA_KEYS, &["mode", "mounts"]].concat())?;
            Ok(CacheTo::Gha {
                settings: gha_settings(FLAG, spec, &kv, tags)?,
                mode,
                mounts,
            })
        }
        Some(t) => {
            bail!("{FLAG} {spec:?}: unknown type {t:?}; supported: local, registry, inline, gha")
        }
        None => bail!("{FLAG} {spec:?}: type= is required (local, registry, inline or gha)"),
    }
}

/// Parses one `--cache-from`; a bare reference means `type=registry,ref=REF`.
pub fn parse_cache_from(spec: &str, tags: &[String]) -> Result<CacheFrom> {
    const FLAG: &str = "--cache-from";
    if !spec.contains('=') {
        exporter::Reference::parse(spec).map_err(|e| anyhow!("{FLAG} {spec:?}: {e}"))?;
        return Ok(CacheFrom::Registry {
            reference: spec.to_string(),
        });
    }
    let kv = crate::output::key_values(FLAG, spec)?;
    match kv.get("type").copied() {
        Some("local") => {
            check_keys(FLAG, spec, &kv, &["type", "src"])?;
            Ok(CacheFrom::Local {
                src: PathBuf::from(required(FLAG, spec, &kv, "src")?),
            })
        }
        Some("registry") => {
            check_keys(FLAG, spec, &kv, &["type", "ref"])?;
            let reference = required(FLAG, spec, &kv, "ref")?;
            exporter::Reference::parse(reference).map_err(|e| anyhow!("{FLAG} {spec:?}: {e}"))?;
            Ok(CacheFrom::Registry {
                reference: reference.to_string(),
            })
        }
        Some("gha") => {
            check_keys(FLAG, spec, &kv, GHA_KEYS)?;
            Ok(CacheFrom::Gha(gha_settings(FLAG, spec, &kv, tags)?))
        }
        Some(t) => bail!("{FLAG} {spec:?}: unknown type {t:?}; supported: local, registry, gha"),
        None => bail!("{FLAG} {spec:?}: type= is required (local, registry or gha)"),
    }
}

/// `--no-cache-filter a,b --no-cache-filter c` → {a, b, c}.
pub fn parse_no_cache_filter(values: &[String]) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for v in values {
        for stage in v.split(',').map(str::trim) {
            if stage.is_empty() {
                bail!("--no-cache-filter {v:?}: empty stage name");
            }
            out.insert(stage.to_string());
        }
    }
    Ok(out)
}

/// Loads every `--cache-from` into the solver and restores the cache mounts they carry.
/// A cache that cannot be read is a warning, as in BuildKit: the build just runs uncached.
pub(crate) async fn import_caches(solver: &Solver, from: &[CacheFrom], events: &crate::EventSink) {
    let warn = |message: String| events.send(crate::Event::Message(message));
    for f in from {
        match solver::cache::load_cache(&solver.content, f).await {
            Ok((config, blobs)) => {
                if !config.mounts.is_empty() {
                    if let Err(e) = solver::cache::restore_mounts(solver, &config, &blobs) {
                        warn(format!(
                            "warning: restoring cache mounts from {}: {e:#}",
                            f.describe()
                        ));
                    }
                }
                solver.add_cache_import(f.describe(), config, blobs);
            }
            Err(e) => warn(format!("warning: importing cache {}: {e:#}", f.describe())),
        }
    }
}

/// What `--metadata-file` records about a build.
pub(crate) struct Metadata<'a> {
    pub manifest: &'a exporter::image::Descriptor,
    pub tags: &'a [String],
    pub cache_exports: &'a [CacheExport],
}

/// buildx-style build metadata: digests, descriptor, names, caches.
pub(crate) fn metadata(solver: &Solver, meta: &Metadata) -> Result<serde_json::Value> {
    let manifest = image_manifest(solver, meta.manifest)?;
    let imported: Vec<_> = solver
        .cache_import_hits()
        .into_iter()
        .map(|(source, hits)| serde_json::json!({ "source": source, "hits": hits }))
        .collect();
    let mut descriptor = serde_json::to_value(meta.manifest)?;
    if let Some(o) = descriptor.as_object_mut() {
        o.remove("annotations");
    }
    let mut doc = serde_json::json!({
        "containerimage.digest": meta.manifest.digest,
        "containerimage.config.digest": manifest.config.digest,
        "containerimage.descriptor": descriptor,
        "buildx.build.ref": format!("builder/local/{}", build_ref()),
        "builder.cache.imported": imported,
        "builder.cache.exported": meta.cache_exports,
    });
    if !meta.tags.is_empty() {
        doc["image.name"] = serde_json::Value::String(meta.tags.join(","));
    }
    Ok(doc)
}

/// The manifest a descriptor names; for an index (several platforms, or attestations) the
/// first image's.
fn image_manifest(
    solver: &Solver,
    descriptor: &exporter::image::Descriptor,
) -> Result<exporter::image::Manifest> {
    let mut digest = descriptor.digest.clone();
    if exporter::image::is_index_media_type(&descriptor.media_type) {
        let index: exporter::Index = serde_json::from_slice(&solver.content.read_blob(&digest)?)?;
        digest = index
            .manifests
            .iter()
            .find(|d| !exporter::attestation::is_attestation(d))
            .map(|d| d.digest.clone())
            .ok_or_else(|| anyhow!("image index {digest} lists no image"))?;
    }
    Ok(serde_json::from_slice(&solver.content.read_blob(&digest)?)?)
}

/// A build id unique enough to tell builds apart (time + pid).
fn build_ref() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", t, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_cache_to_(spec: &str) -> Result<CacheTo> {
        parse_cache_to(spec, &[])
    }

    fn parse_cache_from_(spec: &str) -> Result<CacheFrom> {
        parse_cache_from(spec, &[])
    }

    #[test]
    fn gha_options_parse() {
        let tags = ["localhost:5000/team/app:v1".to_string()];
        let to =
            parse_cache_to("type=gha,url=http://c/,token=t,mode=max,timeout=2m", &tags).unwrap();
        let CacheTo::Gha { settings, mode, .. } = to else {
            panic!("{to:?}")
        };
        assert_eq!(mode, CacheMode::Max);
        assert_eq!(settings.scope, "localhost:5000/team/app");
        assert_eq!(settings.timeout, std::time::Duration::from_secs(120));
        assert_eq!(default_gha_scope(&["busybox:1".into()]), "busybox");
        assert_eq!(default_gha_scope(&[]), "buildkit");
        let from = parse_cache_from("type=gha,url=http://c/,token=t,scope=s", &tags).unwrap();
        assert_eq!(from.describe(), "type=gha,scope=s");
        for bad in [
            "type=gha,url=http://c/,token=t,scope=a#b",
            "type=gha,url=http://c/,token=t,timeout=5x",
            "type=gha,url=http://c/,token=t,color=red",
        ] {
            assert!(parse_cache_to(bad, &tags).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn cache_to_parses() {
        assert_eq!(
            parse_cache_to_("type=local,dest=d,mode=max,mounts=true").unwrap(),
            CacheTo::Local {
                dest: "d".into(),
                mode: CacheMode::Max,
                mounts: true
            }
        );
        assert_eq!(
            parse_cache_to_("type=registry,ref=localhost:5000/c:x").unwrap(),
            CacheTo::Registry {
                reference: "localhost:5000/c:x".into(),
                mode: CacheMode::Min,
                mounts: false
            }
        );
        assert_eq!(parse_cache_to_("type=inline").unwrap(), CacheTo::Inline);
        for bad in [
            "type=local",
            "type=local,dest=d,mode=all",
            "type=local,dest=d,color=red",
            "type=s3,dest=d",
            "dest=d",
            "local",
            "type=inline,mode=max",
            "type=registry,ref=UPPER/Case",
        ] {
            assert!(parse_cache_to_(bad).is_err(), "{bad} parsed");
        }
        let e = parse_cache_to_("type=local,dest=d,mode=all").unwrap_err();
        assert!(e.to_string().contains("--cache-to"), "{e}");
    }

    #[test]
    fn cache_from_parses() {
        assert_eq!(
            parse_cache_from_("type=local,src=d").unwrap(),
            CacheFrom::Local { src: "d".into() }
        );
        assert_eq!(
            parse_cache_from_("localhost:5000/app:cache").unwrap(),
            CacheFrom::Registry {
                reference: "localhost:5000/app:cache".into()
            }
        );
        assert!(parse_cache_from_("type=local").is_err());
        assert!(parse_cache_from_("type=s3").is_err());
    }

    #[test]
    fn no_cache_filter_splits_commas() {
        let s = parse_no_cache_filter(&["a,b".into(), "c".into()]).unwrap();
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(parse_no_cache_filter(&["a,,b".into()]).is_err());
    }
}
