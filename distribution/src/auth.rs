//! Docker-compatible credentials: `$DOCKER_CONFIG/config.json` (default `~/.docker`) with
//! `auths` (base64 `auth` = "user:password", or `identitytoken`), `credsStore` and
//! `credHelpers` (`docker-credential-<name> get|store|erase`, JSON over stdin/stdout).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use oci::lenient::null_default;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The key docker uses for Docker Hub in `auths` and with credential helpers.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (basic auth, or basic auth at the token endpoint).
    Password { user: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`) exchanged at the token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password { user, .. } => write!(f, "Password {{ user: {user:?} }}"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken"),
        }
    }
}

/// `$DOCKER_CONFIG` or `$HOME/.docker`.
pub fn docker_config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".docker")
}

/// The key a registry's credentials are stored under ("docker.io" → docker's Hub URL).
pub fn auth_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_AUTH_KEY.into(),
        other => other.to_string(),
    }
}

/// Host part of an `auths` key such as "https://host:5000/v1/" or "host:5000".
fn key_host(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

fn same_registry(key: &str, registry: &str) -> bool {
    let wanted = auth_key(registry);
    key == wanted || auth_key(key_host(key)) == wanted
}

thread_local! {
    static THREAD_AUTH_CONFIG: std::cell::RefCell<Option<std::sync::Arc<Map<String, Value>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes [`DockerConfig::load`] on this thread answer with `config` (a config.json's text)
/// instead of this machine's: a build server runs each client's build on threads of its own
/// and gives them that client's credentials, never writing them to disk.
pub fn set_thread_auth_config(config: Option<&[u8]>) -> Result<()> {
    let raw = match config {
        Some(text) => Some(std::sync::Arc::new(
            serde_json::from_slice(text)
                .map_err(|e| Error::Config(format!("forwarded credentials: {e}")))?,
        )),
        None => None,
    };
    THREAD_AUTH_CONFIG.with(|c| *c.borrow_mut() = raw);
    Ok(())
}

/// `~/.docker/config.json`, keeping fields this program does not know when rewritten.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    raw: Map<String, Value>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct HelperCredential {
    #[serde(rename = "ServerURL", default, deserialize_with = "null_default")]
    server_url: String,
    #[serde(rename = "Username", default, deserialize_with = "null_default")]
    username: String,
    #[serde(rename = "Secret", default, deserialize_with = "null_default")]
    secret: String,
}

impl DockerConfig {
    /// Loads `config.json` from [`docker_config_dir`]; a missing file is an empty config.
    /// `DOCKER_AUTH_CONFIG` (a config.json's text) wins: a remote builder hands a client's
    /// credentials to one build that way, never writing them to its disk.
    pub fn load() -> Result<Self> {
        let path = docker_config_dir().join("config.json");
        if let Some(raw) = THREAD_AUTH_CONFIG.with(|c| c.borrow().clone()) {
            return Ok(DockerConfig {
                path,
                raw: (*raw).clone(),
            });
        }
        if let Some(text) = std::env::var_os("DOCKER_AUTH_CONFIG").filter(|t| !t.is_empty()) {
            let raw = serde_json::from_slice(text.as_encoded_bytes())
                .map_err(|e| Error::Config(format!("DOCKER_AUTH_CONFIG: {e}")))?;
            return Ok(DockerConfig { path, raw });
        }
        Self::load_from(&path)
    }

    pub fn load_from(path: &Path) -> Result<Self> {
        let raw = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(Error::Config(format!("reading {}: {e}", path.display()))),
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            raw,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential helper for `registry`: `credHelpers[registry]`, else `credsStore`.
    fn helper_for(&self, registry: &str) -> Option<String> {
        let key = auth_key(registry);
        self.raw
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|helpers| {
                helpers
                    .iter()
                    .find(|(k, _)| same_registry(k, registry) || **k == key)
                    .and_then(|(_, v)| v.as_str())
            })
            .or_else(|| self.raw.get("credsStore").and_then(Value::as_str))
            .filter(|name| !name.is_empty())
            .map(str::to_string)
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.raw.get("auths").and_then(Value::as_object)
    }

    /// Credentials for `registry` (as in image references), if any are configured.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(helper) = self.helper_for(registry) {
            if let Some(found) = helper_get(&helper, &auth_key(registry))? {
                return Ok(Some(found));
            }
        }
        let Some((key, entry)) = self
            .auths()
            .and_then(|auths| auths.iter().find(|(k, _)| same_registry(k, registry)))
        else {
            return Ok(None);
        };
        // `"auths": {"host": null}` is an entry with nothing in it.
        let entry: AuthEntry = serde_json::from_value::<Option<AuthEntry>>(entry.clone())
            .map(Option::unwrap_or_default)
            .map_err(|e| Error::Config(format!("{}: auths.{key:?}: {e}", self.path.display())))?;
        if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token)));
        }
        if let Some(encoded) = entry.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}: auths.{key:?}.auth is not base64 of \"user:password\"",
                        self.path.display()
                    ))
                })?;
            let (user, password) = decoded.split_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "{}: auths.{key:?}.auth has no ':' between user and password",
                    self.path.display()
                ))
            })?;
            return Ok(Some(Credential::Password {
                user: user.into(),
                password: password.into(),
            }));
        }
        if let (Some(user), Some(password)) = (entry.username, entry.password) {
            return Ok(Some(Credential::Password { user, password }));
        }
        Ok(None)
    }

    /// Stores a user and password for `registry` (with the credential helper if one is
    /// configured, else base64 in `auths`) and writes the file.
    pub fn store(&mut self, registry: &str, user: &str, password: &str) -> Result<()> {
        let key = auth_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            let request = serde_json::to_vec(&HelperCredential {
                server_url: key.clone(),
                username: user.into(),
                secret: password.into(),
            })?;
            run_helper(&helper, "store", &request)?;
            // Drop any stale inline copy.
            self.remove_inline(registry);
            return self.save();
        }
        self.remove_inline(registry);
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let auths = self
            .raw
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Some(auths) = auths.as_object_mut() {
            auths.insert(key, serde_json::json!({ "auth": encoded }));
        }
        self.save()
    }

    /// Removes credentials for `registry`; false if there were none.
    pub fn erase(&mut self, registry: &str) -> Result<bool> {
        let mut removed = false;
        if let Some(helper) = self.helper_for(registry) {
            removed = run_helper(&helper, "erase", auth_key(registry).as_bytes()).is_ok();
        }
        if self.remove_inline(registry) {
            removed = true;
            self.save()?;
        }
        Ok(removed)
    }

    fn remove_inline(&mut self, registry: &str) -> bool {
        let Some(auths) = self.raw.get_mut("auths").and_then(Value::as_object_mut) else {
            return false;
        };
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| same_registry(k, registry))
            .cloned()
            .collect();
        for key in &keys {
            auths.remove(key);
        }
        !keys.is_empty()
    }

    /// Writes the file atomically, readable only by its owner (it holds secrets).
    fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("creating {}: {e}", dir.display())))?;
        let mut json = serde_json::to_vec_pretty(&self.raw)?;
        json.push(b'\n');
        snapshotter::atomic_write(&self.path, &json, 0o600)
            .map_err(|e| Error::Config(format!("writing {}: {e}", self.path.display())))
    }
}

/// `docker-credential-<helper> get`; None when the helper has nothing for `server`.
fn helper_get(helper: &str, server: &str) -> Result<Option<Credential>> {
    let output = match run_helper(helper, "get", server.as_bytes()) {
        Ok(output) => output,
        Err(HelperError::NotFound) => return Ok(None),
        Err(HelperError::Failed(message)) => return Err(Error::Config(message)),
    };
    let found: HelperCredential = serde_json::from_slice(&output).map_err(|e| {
        Error::Config(format!(
            "docker-credential-{helper} get: unreadable answer: {e}"
        ))
    })?;
    // Helpers mark identity tokens with the user name "<token>".
    Ok(Some(if found.username == "<token>" {
        Credential::IdentityToken(found.secret)
    } else {
        Credential::Password {
            user: found.username,
            password: found.secret,
        }
    }))
}

enum HelperError {
    NotFound,
    Failed(String),
}

impl From<HelperError> for Error {
    fn from(e: HelperError) -> Self {
        match e {
            HelperError::NotFound => Error::Config("credential helper: not found".into()),
            HelperError::Failed(message) => Error::Config(message),
        }
    }
}

#[cfg(test)]
thread_local! {
    static HELPER_SEARCH_PATH: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

fn run_helper(
    helper: &str,
    action: &str,
    input: &[u8],
) -> std::result::Result<Vec<u8>, HelperError> {
    let program = format!("docker-credential-{helper}");
    let mut command = Command::new(&program);
    // Tests point the helper lookup at their own directory without touching the process PATH.
    #[cfg(test)]
    HELPER_SEARCH_PATH.with(|path| {
        if let Some(path) = &*path.borrow() {
            command.env("PATH", path);
        }
    });
    let mut child = command
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HelperError::Failed(format!("running {program} {action}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| HelperError::Failed(format!("running {program} {action}: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let message = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    if message
        .to_ascii_lowercase()
        .contains("credentials not found")
    {
        return Err(HelperError::NotFound);
    }
    Err(HelperError::Failed(format!(
        "{program} {action} failed ({}): {}",
        output.status,
        message.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn reads_auths_in_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},
                "https://old.example:5000/v1/":{"auth":"dTpwOnE="},
                "tok.example":{"identitytoken":"refresh"}
            },"other":{"kept":true}}"#,
        )
        .unwrap();
        let config = DockerConfig::load_from(&path).unwrap();
        assert_eq!(
            config.credentials("docker.io").unwrap(),
            Some(Credential::Password {
                user: "hub".into(),
                password: "secret".into()
            })
        );
        // Password may contain ':'; legacy URL-shaped keys match by host.
        assert_eq!(
            config.credentials("old.example:5000").unwrap(),
            Some(Credential::Password {
                user: "u".into(),
                password: "p:q".into()
            })
        );
        assert_eq!(
            config.credentials("tok.example").unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(config.credentials("quay.io").unwrap(), None);
    }

    #[test]
    fn null_entries_and_fields_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"a.example":null,"b.example":{"auth":null,"identitytoken":null,
                "username":"u","password":"p","email":null}},
                "credsStore":null,"credHelpers":null,"HttpHeaders":null}"#,
        )
        .unwrap();
        let config = DockerConfig::load_from(&path).unwrap();
        assert_eq!(config.credentials("a.example").unwrap(), None);
        assert_eq!(
            config.credentials("b.example").unwrap(),
            Some(Credential::Password {
                user: "u".into(),
                password: "p".into()
            })
        );
    }

    #[test]
    fn store_and_erase_keep_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"other":{"kept":true}}"#).unwrap();
        let mut config = DockerConfig::load_from(&path).unwrap();
        config.store("127.0.0.1:5000", "alice", "pw").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["other"]["kept"], true);
        assert_eq!(written["auths"]["127.0.0.1:5000"]["auth"], "YWxpY2U6cHc=");
        let mut reread = DockerConfig::load_from(&path).unwrap();
        assert!(reread.erase("127.0.0.1:5000").unwrap());
        assert!(!reread.erase("127.0.0.1:5000").unwrap());
        assert_eq!(reread.credentials("127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn credential_helper_get_store_erase() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let helper = bin.join("docker-credential-testhelper");
        let state = dir.path().join("helper-state");
        // A real helper program (shell) that keeps one credential in a file.
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nstate={}\ncase \"$1\" in\n\
                 store) cat > \"$state\" ;;\n\
                 get) read server; if [ -s \"$state\" ]; then cat \"$state\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n\
                 erase) rm -f \"$state\" ;;\nesac\n",
                state.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example":"testhelper"}}"#).unwrap();
        let old_path = std::env::var("PATH").unwrap_or_default();
        super::HELPER_SEARCH_PATH
            .with(|path| *path.borrow_mut() = Some(format!("{}:{old_path}", bin.display())));
        let mut config = DockerConfig::load_from(&path).unwrap();
        assert_eq!(config.credentials("reg.example").unwrap(), None);
        config.store("reg.example", "bob", "hunter2").unwrap();
        let stored: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(stored["ServerURL"], "reg.example");
        assert_eq!(
            config.credentials("reg.example").unwrap(),
            Some(Credential::Password {
                user: "bob".into(),
                password: "hunter2".into()
            })
        );
        // Not written inline when a helper holds it.
        assert!(!std::fs::read_to_string(&path).unwrap().contains("hunter2"));
        assert!(config.erase("reg.example").unwrap());
        assert_eq!(config.credentials("reg.example").unwrap(), None);
        // Other registries don't use that helper.
        assert_eq!(config.credentials("other.example").unwrap(), None);
    }
}
