//! Named builders, like `docker context`: a name for a list of nodes with the client's TLS
//! material copied in, at `$BUILDER_CONFIG/builders/NAME.json`
//! (default `$XDG_CONFIG_HOME/builder` or `~/.config/builder`).

use crate::endpoint::{parse_list, Address, TlsFiles};
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
pub struct NamedBuilder {
    pub name: String,
    pub nodes: Vec<String>,
    #[serde(default)]
    pub tls: TlsFiles,
}

fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BUILDER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("builder")
}

fn path_of(name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !name.starts_with('.');
    if !ok {
        bail!("builder name {name:?}: use letters, digits, '.', '_' and '-'");
    }
    Ok(config_dir().join("builders").join(format!("{name}.json")))
}

impl NamedBuilder {
    pub fn addresses(&self) -> Result<Vec<Address>> {
        parse_list(&self.nodes.join(","))
    }

    pub fn save(&self) -> Result<PathBuf> {
        self.addresses()?;
        let path = path_of(&self.name)?;
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let text = serde_json::to_vec_pretty(self)?;
        // The file holds a private key: only its owner reads it.
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    pub fn load(name: &str) -> Result<Self> {
        let path = path_of(name)?;
        let text = std::fs::read(&path).with_context(|| {
            format!("no builder named {name:?} (create it with `builder builder create`)")
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn remove(name: &str) -> Result<()> {
        let path = path_of(name)?;
        std::fs::remove_file(&path).with_context(|| format!("no builder named {name:?}"))
    }

    pub fn list() -> Result<Vec<NamedBuilder>> {
        let dir = config_dir().join("builders");
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json") {
                out.push(Self::load(stem)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
