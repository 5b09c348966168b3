//! `builder login` / `builder logout` (flags read from the CLI's by field name): credentials
//! for registries, checked against the registry and kept in docker's `config.json` (or its
//! credential helper).

use std::io::Read as _;

use crate::auth::DockerConfig;
use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LoginArgs {
    /// Registry host, e.g. registry.example.com:5000 (default: Docker Hub).
    pub server: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users).
    pub password: Option<String>,
    /// Read the password from standard input.
    pub password_stdin: bool,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LogoutArgs {
    /// Registry host (default: Docker Hub).
    pub server: Option<String>,
}

/// "https://host:5000/v2/" or "host:5000" → "host:5000"; Hub aliases → "docker.io".
fn registry_host(server: Option<&str>) -> Result<String> {
    let server = server.unwrap_or("docker.io").trim();
    let without_scheme = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = without_scheme.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        bail!("invalid registry address {server:?}");
    }
    Ok(match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    })
}

pub async fn login(args: LoginArgs) -> Result<i32> {
    let host = registry_host(args.server.as_deref())?;
    let Some(user) = args.username.filter(|u| !u.is_empty()) else {
        bail!("login to {host}: a user name is required (-u/--username)");
    };
    let password = match (args.password, args.password_stdin) {
        (Some(password), _) => password,
        (None, true) => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the password from stdin")?;
            input.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            bail!("login to {host}: give the password with --password-stdin or -p/--password")
        }
    };
    if password.is_empty() {
        bail!("login to {host}: the password is empty");
    }
    crate::RegistryClient::new()
        .with_credentials(&host, &user, &password)
        .check_login(&host)
        .await
        .with_context(|| format!("login to {host} failed"))?;
    let mut config = DockerConfig::load()?;
    config.store(&host, &user, &password)?;
    println!(
        "Login Succeeded ({host}, saved in {})",
        config.path().display()
    );
    Ok(0)
}

pub fn logout(args: LogoutArgs) -> Result<i32> {
    let host = registry_host(args.server.as_deref())?;
    let mut config = DockerConfig::load()?;
    if config.erase(&host)? {
        println!("Removed login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::registry_host;

    #[test]
    fn normalises_server_addresses() {
        assert_eq!(registry_host(None).unwrap(), "docker.io");
        assert_eq!(
            registry_host(Some("https://index.docker.io/v1/")).unwrap(),
            "docker.io"
        );
        assert_eq!(
            registry_host(Some("https://127.0.0.1:5000/v2/")).unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host(Some("reg.example")).unwrap(), "reg.example");
        assert!(registry_host(Some("")).is_err());
    }
}
