//! Secret and SSH-agent providers of a build, and the `--secret`/`--ssh` specs in
//! BuildKit's syntax that make the local ones.

use anyhow::{bail, Result};
use solver::SecretSource;
use std::path::PathBuf;
use std::sync::Arc;

/// Gives `RUN --mount=type=secret` its values. A value is read only when a step mounts it.
pub trait SecretProvider: Send + Sync {
    /// The ids provided, in the order given (provenance records ids, never values).
    fn ids(&self) -> Vec<String>;
    /// Where the value of `id` comes from; None when this provider has no such secret.
    fn source(&self, id: &str) -> Option<SecretSource>;
}

/// Gives `RUN --mount=type=ssh` its agents: a socket on this machine per id (a remote
/// client's agent is forwarded to such a socket by whoever serves the build).
pub trait SshProvider: Send + Sync {
    /// The ids provided, in the order given.
    fn ids(&self) -> Vec<String>;
    fn socket(&self, id: &str) -> Option<PathBuf>;
}

/// Provides nothing.
pub struct NoSecrets;

impl SecretProvider for NoSecrets {
    fn ids(&self) -> Vec<String> {
        Vec::new()
    }
    fn source(&self, _id: &str) -> Option<SecretSource> {
        None
    }
}

impl SshProvider for NoSecrets {
    fn ids(&self) -> Vec<String> {
        Vec::new()
    }
    fn socket(&self, _id: &str) -> Option<PathBuf> {
        None
    }
}

/// Secrets from files and environment variables of this process (`--secret`).
pub struct LocalSecrets(Vec<(String, SecretSource)>);

impl LocalSecrets {
    /// Parses `--secret` values; a later one for the same id wins.
    pub fn parse(specs: &[String]) -> Result<Self> {
        Ok(Self(
            specs
                .iter()
                .map(|s| parse_secret(s))
                .collect::<Result<_>>()?,
        ))
    }
}

impl SecretProvider for LocalSecrets {
    fn ids(&self) -> Vec<String> {
        self.0.iter().map(|(id, _)| id.clone()).collect()
    }
    fn source(&self, id: &str) -> Option<SecretSource> {
        self.0
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s.clone())
    }
}

/// SSH agents of this machine (`--ssh`).
pub struct LocalSsh(Vec<(String, PathBuf)>);

impl LocalSsh {
    /// Parses `--ssh` values; `default` (or a bare id) is `$SSH_AUTH_SOCK`.
    pub fn parse(specs: &[String]) -> Result<Self> {
        let auth_sock = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
        Ok(Self(
            specs
                .iter()
                .map(|s| parse_ssh(s, auth_sock.clone()))
                .collect::<Result<_>>()?,
        ))
    }
}

impl SshProvider for LocalSsh {
    fn ids(&self) -> Vec<String> {
        self.0.iter().map(|(id, _)| id.clone()).collect()
    }
    fn socket(&self, id: &str) -> Option<PathBuf> {
        self.0
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p.clone())
    }
}

/// Parses one `--secret` value: `id=X[,type=file|env][,src=PATH|source=PATH][,env=VAR]`.
/// `id=X` alone means the environment variable `X` if set, else the file `X`.
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource)> {
    let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
    for field in spec.split(',') {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key.trim().to_ascii_lowercase().as_str() {
            "id" => id = Some(value.to_string()),
            "type" => match value {
                "file" | "env" => kind = Some(value.to_string()),
                other => {
                    bail!("--secret {spec:?}: unknown type {other:?}; use type=file or type=env")
                }
            },
            "src" | "source" => src = Some(value.to_string()),
            "env" => env = Some(value.to_string()),
            other => bail!(
                "--secret {spec:?}: unexpected key {other:?}; expected id, type, src, source or env"
            ),
        }
    }
    let id = match id {
        Some(id) if !id.is_empty() => id,
        _ => match (&src, &env) {
            // BuildKit names a secret after its file or variable when id= is missing.
            (Some(s), _) => PathBuf::from(s)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            (None, Some(e)) => e.clone(),
            (None, None) => bail!("--secret {spec:?}: id= is required"),
        },
    };
    if id.is_empty() {
        bail!("--secret {spec:?}: id= is required");
    }
    let source = match (kind.as_deref(), src, env) {
        (_, Some(_), Some(_)) => bail!("--secret {spec:?}: give either src= or env=, not both"),
        (Some("env"), Some(var), None) | (Some("env") | None, None, Some(var)) => {
            SecretSource::Env(var)
        }
        (Some("env"), None, None) => SecretSource::Env(id.clone()),
        (Some("file") | None, Some(path), None) => SecretSource::File(PathBuf::from(path)),
        (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
        (Some("file"), None, Some(_)) => {
            bail!("--secret {spec:?}: type=file takes src=, not env=")
        }
        (None, None, None) => SecretSource::EnvOrFile(id.clone()),
        (Some(other), _, _) => bail!("--secret {spec:?}: unknown type {other:?}"),
    };
    Ok((id, source))
}

/// Parses one `--ssh` value: `default` ($SSH_AUTH_SOCK), `ID` (same), or `ID=SOCKET`.
pub fn parse_ssh(spec: &str, auth_sock: Option<PathBuf>) -> Result<(String, PathBuf)> {
    let (id, path) = match spec.split_once('=') {
        Some((id, path)) => (id.trim(), Some(PathBuf::from(path))),
        None => (spec.trim(), None),
    };
    if id.is_empty() {
        bail!("--ssh {spec:?}: the id is empty; use --ssh default or --ssh ID=SOCKET");
    }
    let path = match path {
        Some(p) if p.as_os_str().is_empty() => {
            bail!("--ssh {spec:?}: the socket path is empty")
        }
        Some(p) if p.to_string_lossy().contains(',') => {
            bail!("--ssh {spec:?}: only one agent socket per id is supported")
        }
        Some(p) => p,
        None => match auth_sock {
            Some(p) => p,
            None => bail!("--ssh {spec:?}: SSH_AUTH_SOCK is not set; use --ssh {id}=SOCKET"),
        },
    };
    Ok((id.to_string(), path))
}

/// The solver's exec settings from the providers (SSH sockets are looked up now, secret
/// values when a step mounts them).
pub(crate) fn exec_config(
    secrets: &[Arc<dyn SecretProvider>],
    ssh: &[Arc<dyn SshProvider>],
    on_error_shell: bool,
) -> solver::ExecConfig {
    let mut config = solver::ExecConfig {
        on_error_shell,
        ..Default::default()
    };
    for provider in secrets {
        for id in provider.ids() {
            if let Some(source) = provider.source(&id) {
                config.secrets.insert(id, source);
            }
        }
    }
    for provider in ssh {
        for id in provider.ids() {
            if let Some(socket) = provider.socket(&id) {
                config.ssh.insert(id, socket);
            }
        }
    }
    config
}

/// `--on-error=fail|shell`: whether to open a shell in a failed step's container.
pub fn parse_on_error(value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("fail") => Ok(false),
        Some("shell") => Ok(true),
        Some(other) => bail!("--on-error {other:?}: expected fail or shell"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_forms() {
        let p = |s: &str| parse_secret(s).unwrap();
        assert_eq!(
            p("id=tok,src=/run/tok"),
            ("tok".into(), SecretSource::File("/run/tok".into()))
        );
        assert_eq!(
            p("id=tok,source=a.txt,type=file"),
            ("tok".into(), SecretSource::File("a.txt".into()))
        );
        assert_eq!(
            p("id=tok,env=TOKEN"),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            p("id=tok,type=env,src=TOKEN"),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            p("id=TOKEN,type=env"),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            p("id=TOKEN"),
            ("TOKEN".into(), SecretSource::EnvOrFile("TOKEN".into()))
        );
        assert_eq!(
            p("src=/x/npmrc"),
            ("npmrc".into(), SecretSource::File("/x/npmrc".into()))
        );
        for bad in [
            "",
            "type=file",
            "id=a,type=zip",
            "id=a,color=red",
            "id=a,src=x,env=Y",
        ] {
            let e = parse_secret(bad).unwrap_err().to_string();
            assert!(e.starts_with("--secret"), "{bad:?}: {e}");
        }
    }

    /// A client's own provider (e.g. a build server's session) reaches the solver, read lazily.
    struct Session(std::sync::atomic::AtomicUsize);

    impl SecretProvider for Arc<Session> {
        fn ids(&self) -> Vec<String> {
            vec!["token".into()]
        }
        fn source(&self, _id: &str) -> Option<SecretSource> {
            let me = self.clone();
            Some(SecretSource::Provided(solver::ProvidedSecret(Arc::new(
                move || {
                    me.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Some(b"value".to_vec()))
                },
            ))))
        }
    }

    #[test]
    fn providers_become_the_solver_settings() {
        let session = Arc::new(Session(Default::default()));
        let local = LocalSecrets::parse(&["id=a,env=X".into(), "id=a,env=Y".into()]).unwrap();
        let secrets: Vec<Arc<dyn SecretProvider>> =
            vec![Arc::new(local), Arc::new(session.clone())];
        let ssh: Vec<Arc<dyn SshProvider>> =
            vec![Arc::new(LocalSsh::parse(&["gh=/s".into()]).unwrap())];
        let config = exec_config(&secrets, &ssh, true);
        assert_eq!(
            config.secrets["a"],
            SecretSource::Env("Y".into()),
            "a later --secret wins"
        );
        assert_eq!(
            session.0.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "read only when used"
        );
        assert_eq!(
            config.secrets["token"].read().unwrap(),
            Some(b"value".to_vec())
        );
        assert_eq!(session.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(config.ssh["gh"], PathBuf::from("/s"));
        assert!(config.on_error_shell);
    }

    #[test]
    fn ssh_forms() {
        let sock = Some(PathBuf::from("/tmp/agent.sock"));
        assert_eq!(
            parse_ssh("default", sock.clone()).unwrap(),
            ("default".into(), "/tmp/agent.sock".into())
        );
        assert_eq!(
            parse_ssh("gh=/s/a", None).unwrap(),
            ("gh".into(), "/s/a".into())
        );
        assert!(parse_ssh("default", None)
            .unwrap_err()
            .to_string()
            .contains("SSH_AUTH_SOCK"));
        assert!(parse_ssh("=x", sock).is_err());
    }
}
