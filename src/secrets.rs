//! `--secret` and `--ssh` flags of `builder build`, in BuildKit's syntax.

use anyhow::{bail, Result};
use solver::SecretSource;
use std::collections::HashMap;
use std::path::PathBuf;

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

/// All `--secret` flags; a later flag for the same id wins.
pub fn parse_secrets(specs: &[String]) -> Result<HashMap<String, SecretSource>> {
    specs.iter().map(|s| parse_secret(s)).collect()
}

/// All `--ssh` flags.
pub fn parse_ssh_flags(specs: &[String]) -> Result<HashMap<String, PathBuf>> {
    let auth_sock = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
    specs
        .iter()
        .map(|s| parse_ssh(s, auth_sock.clone()))
        .collect()
}

/// The solver's client config from `--secret`, `--ssh` and `--on-error`; shared by
/// single- and multi-platform builds so neither drops a flag.
pub fn exec_config(
    secrets: &[String],
    ssh: &[String],
    on_error: Option<&str>,
) -> Result<solver::ExecConfig> {
    Ok(solver::ExecConfig {
        secrets: parse_secrets(secrets)?,
        ssh: parse_ssh_flags(ssh)?,
        on_error_shell: match on_error {
            None | Some("fail") => false,
            Some("shell") => true,
            Some(other) => bail!("--on-error {other:?}: expected fail or shell"),
        },
    })
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
