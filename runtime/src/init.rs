//! `--init`: docker runs tini as the container's PID 1 (reaping orphans, forwarding signals)
//! from `/sbin/docker-init`. builder binds the host's statically linked tini there read-only,
//! so it runs in any image, busybox ones included.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Where the init binary appears in the container, as in docker.
pub const INIT_PATH: &str = "/sbin/docker-init";

/// Host paths tried in order: Debian's `tini` package ships the static build.
const CANDIDATES: [&str; 3] = [
    "/usr/bin/tini-static",
    "/usr/bin/docker-init",
    "/usr/libexec/docker/docker-init",
];

/// The host's init binary: `BUILDER_INIT` if set, else a static tini.
pub fn init_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BUILDER_INIT").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("--init: BUILDER_INIT={} is not a file", path.display());
        }
        return Ok(path);
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--init needs a statically linked tini: install Debian's tini package (it ships /usr/bin/tini-static) or set BUILDER_INIT"
            )
        })
}

/// The read-only bind of the init binary at [`INIT_PATH`].
pub fn init_mount() -> Result<executor::Mount> {
    Ok(executor::Mount {
        fstype: "bind".into(),
        source: init_binary()?.to_string_lossy().into_owned(),
        target: INIT_PATH.into(),
        options: vec!["rbind".into(), "ro".into()],
    })
}

/// What goes before the container's command: tini, then `--`.
pub(crate) fn init_args() -> [String; 2] {
    [INIT_PATH.to_string(), "--".to_string()]
}
