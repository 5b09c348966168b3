//! `build --load`: hands a docker archive to the local Docker engine through its API
//! (`POST /images/load` on its unix socket, `DOCKER_HOST` or `/var/run/docker.sock`), or to
//! `docker load` when `DOCKER_HOST` names another transport.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Where the engine listens when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The engine address: `DOCKER_HOST`, or the default socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string())
}

/// Loads the docker archive at `archive` into the engine at `host`; returns what the engine
/// said it loaded (e.g. `Loaded image: app:latest`).
pub fn load(host: &str, archive: &Path) -> Result<String, String> {
    let Some(socket) = host.strip_prefix("unix://") else {
        return docker_cli_load(host, archive);
    };
    let no_engine = |e: std::io::Error| format!("no Docker engine at {host}: {e}");
    let (status, _) = request(socket, "GET", "/_ping", None).map_err(no_engine)?;
    if status != 200 {
        return Err(format!(
            "no Docker engine at {host}: /_ping answered {status}"
        ));
    }
    let body = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let (status, reply) = request(socket, "POST", "/images/load?quiet=1", Some(body))
        .map_err(|e| format!("loading into the Docker engine at {host}: {e}"))?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    if status != 200 || text.contains("\"errorDetail\"") || text.contains("\"error\"") {
        return Err(format!(
            "the Docker engine at {host} refused the image ({status}): {}",
            text.trim()
        ));
    }
    Ok(loaded_lines(&text))
}

/// The `Loaded image...` messages of the engine's JSON stream.
fn loaded_lines(reply: &str) -> String {
    reply
        .split(['\n', '\r'])
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter_map(|v| v["stream"].as_str().map(|s| s.trim().to_string()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One HTTP/1.1 request over the socket; returns the status and the raw body (chunk framing
/// left in: callers only look for messages in it).
fn request(
    socket: &str,
    method: &str,
    path: &str,
    body: Option<std::fs::File>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = UnixStream::connect(socket)?;
    let length = match &body {
        Some(f) => f.metadata()?.len(),
        None => 0,
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )?;
    if let Some(mut f) = body {
        std::io::copy(&mut f, &mut stream)?;
    }
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let head_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP answer"))?;
    let status = String::from_utf8_lossy(&reply[..head_end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP status line"))?;
    Ok((status, reply[head_end + 4..].to_vec()))
}

fn docker_cli_load(host: &str, archive: &Path) -> Result<String, String> {
    let out = std::process::Command::new("docker")
        .arg("load")
        .arg("-i")
        .arg(archive)
        .env("DOCKER_HOST", host)
        .output()
        .map_err(|e| format!("no Docker engine at {host}: running docker load: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker load (DOCKER_HOST={host}) failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_engine_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("unix://{}", dir.path().join("none.sock").display());
        let err = load(&host, &dir.path().join("a.tar")).unwrap_err();
        assert!(
            err.starts_with(&format!("no Docker engine at {host}: ")),
            "{err}"
        );
    }

    #[test]
    fn reads_loaded_messages() {
        let reply = "3a\r\n{\"stream\":\"Loaded image: app:latest\\n\"}\r\n0\r\n\r\n";
        assert_eq!(loaded_lines(reply), "Loaded image: app:latest");
    }
}
