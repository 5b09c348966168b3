//! The client's registry credentials, forwarded with each build: its docker config's
//! `auths`, plus what its `credsStore` and `credHelpers` answer, resolved on the client (the
//! helpers run here, never on the server, which only ever sees `auths`).

use anyhow::{Context as _, Result};
use base64::Engine as _;
use distribution::auth::{Credential, DockerConfig};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::{Command, Stdio};

/// `{"auths": ...}` for the docker config in `config_dir` (empty when there is nothing).
pub fn forwarded(config_dir: &Path) -> Result<Vec<u8>> {
    let path = config_dir.join("config.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(Vec::new());
    };
    let raw: Value = serde_json::from_slice(&bytes).with_context(|| path.display().to_string())?;
    let mut auths = raw
        .get("auths")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let config = DockerConfig::load_from(&path)?;
    for registry in helper_registries(&raw)? {
        if let Some(credential) = config.credentials(&registry)? {
            auths.insert(registry, auth_entry(&credential));
        }
    }
    if auths.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::to_vec(&json!({ "auths": auths }))?)
}

fn auth_entry(credential: &Credential) -> Value {
    match credential {
        Credential::Password { user, password } => {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            json!({ "auth": auth })
        }
        Credential::IdentityToken(token) => json!({ "identitytoken": token }),
    }
}

/// The registries the config's helpers hold credentials for: the keys of `credHelpers`,
/// and what `docker-credential-<credsStore> list` names.
fn helper_registries(raw: &Value) -> Result<Vec<String>> {
    let mut registries: Vec<String> = raw
        .get("credHelpers")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(store) = raw
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        registries.extend(helper_list(store)?.keys().cloned());
    }
    registries.sort();
    registries.dedup();
    Ok(registries)
}

/// `docker-credential-NAME list`: server URL → user name.
fn helper_list(name: &str) -> Result<Map<String, Value>> {
    let program = format!("docker-credential-{name}");
    let out = Command::new(&program)
        .arg("list")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("credsStore {name:?}: running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} list: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{program} list: unreadable answer"))
}
