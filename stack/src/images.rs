//! The images a stack needs, through the build engine: the local store, `compose build`
//! (every service in one solve) and pulls.

use anyhow::{anyhow, bail, Context as _, Result};
use engine::command::BuildFlags;
use std::path::{Path, PathBuf};

/// Images through the build engine: its image store, `build` and `pull`.
pub struct EngineImages {
    root: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl EngineImages {
    pub fn new(root: PathBuf) -> Result<EngineImages> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        Ok(EngineImages { root, rt })
    }
}

impl crate::ImageProvider for EngineImages {
    fn exists(&self, image: &str) -> bool {
        engine::image_command::open_store(&self.root)
            .and_then(|s| Ok(s.resolve(image)?))
            .is_ok_and(|d| d.is_some())
    }

    fn build(&self, requests: &[crate::BuildRequest]) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = requests.iter().map(|r| r.service.as_str()).collect();
        eprintln!(" Building {}", names.join(", "));
        // Inline Dockerfiles live in temporary files until the build ends.
        let mut inline = Vec::new();
        let mut all = Vec::new();
        for r in requests {
            let (args, file) = build_args(r)?;
            all.push(args);
            inline.extend(file);
        }
        // One solve for every service: steps they share run once.
        let code = self
            .rt
            .block_on(engine::command::build_all(&self.root, all))?;
        if code != 0 {
            bail!("building {} failed (exit {code})", names.join(", "));
        }
        Ok(())
    }

    fn pull(&self, image: &str) -> Result<()> {
        let store = engine::image_command::open_store(&self.root)?;
        match engine::image_command::pull(&store, image, None)? {
            0 => Ok(()),
            code => bail!("pulling {image} failed (exit {code})"),
        }
    }

    fn untag(&self, image: &str) -> Result<bool> {
        Ok(engine::image_command::open_store(&self.root)?.untag(image)?)
    }

    fn prepare(&self, image: &str) -> Result<runtime::PreparedImage> {
        let snapshot = self
            .rt
            .block_on(engine::images::prepare(&self.root, image, None))?;
        let engine::images::PreparedImage {
            snapshots,
            image_id,
            config,
            parent,
        } = snapshot;
        let make_rootfs = engine::images::managed_rootfs(snapshots, parent);
        Ok(runtime::PreparedImage::new(
            image,
            image_id,
            &config,
            make_rootfs,
        ))
    }
}

/// A compose `build:` section as `builder build` flags (and the temporary file holding a
/// `dockerfile_inline`).
fn build_args(r: &crate::BuildRequest) -> Result<(BuildFlags, Option<tempfile::NamedTempFile>)> {
    let b = &r.build;
    let fail = |what: &str| anyhow!("service {:?}: build.{what}", r.service);
    let mut flags = BuildFlags {
        context: PathBuf::from(&b.context),
        target: b.target.clone(),
        network: b.network.clone(),
        ..Default::default()
    };
    let mut inline = None;
    if let Some(text) = &b.dockerfile_inline {
        let mut file = tempfile::NamedTempFile::new().context("dockerfile_inline")?;
        std::io::Write::write_all(&mut file, text.as_bytes()).context("dockerfile_inline")?;
        flags.file = Some(file.path().to_path_buf());
        inline = Some(file);
    } else if let Some(f) = &b.dockerfile {
        flags.file = Some(Path::new(&b.context).join(f));
    }
    flags.tags = std::iter::once(r.tag.clone())
        .chain(b.tags.iter().cloned())
        .collect();
    flags.build_args = (b.args.iter())
        .map(|(k, v)| v.as_ref().map_or_else(|| k.clone(), |v| format!("{k}={v}")))
        .collect();
    flags.labels = key_values(b.labels.as_ref()).ok_or_else(|| fail("labels"))?;
    flags.build_contexts =
        key_values(b.additional_contexts.as_ref()).ok_or_else(|| fail("additional_contexts"))?;
    (flags.cache_from, flags.cache_to) = (b.cache_from.clone(), b.cache_to.clone());
    if !b.platforms.is_empty() {
        flags.platform = Some(b.platforms.join(","));
    }
    flags.ssh = ssh_specs(b.ssh.as_ref()).ok_or_else(|| fail("ssh"))?;
    flags.secrets = r.secrets.clone();
    Ok((flags, inline))
}

/// A compose map (`{k: v}`) or list (`["k=v"]`) as `k=v` strings; `None` when malformed.
fn key_values(value: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match value {
        None | Some(serde_json::Value::Null) => Some(vec![]),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Some(format!("{k}={s}")),
                serde_json::Value::Null => Some(k.clone()),
                other => Some(format!("{k}={other}")),
            })
            .collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        Some(_) => None,
    }
}

/// `build.ssh`: `default`, a list of `id[=path]`, or a map of id to path.
fn ssh_specs(value: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match value {
        Some(serde_json::Value::String(s)) => Some(vec![s.clone()]),
        other => key_values(other),
    }
}
