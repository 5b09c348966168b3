//! A per-step socket forwarding to the client's SSH agent, so the socket in the container
//! gets the owner and mode the mount asks for (as BuildKit's forwarded agent does) without
//! changing the client's own socket.

use crate::graph::MountOwner;
use anyhow::{Context as _, Result};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub(crate) struct SshProxy {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

const SOCKET_NAME: &str = "agent.sock";

/// Name prefix of the proxy's directory; the creating process's pid follows.
pub(crate) const SSH_DIR_PREFIX: &str = "builder-ssh-";

impl SshProxy {
    /// Listens on a new socket in a private temp dir under `parent`, owned as `owner` says.
    pub(crate) fn start(parent: &Path, agent: &Path, owner: &MountOwner) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SSH_DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(parent)
            .context("creating a directory for the SSH agent socket")?;
        let path = dir.path().join(SOCKET_NAME);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(owner.mode & 0o777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let accept = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let Ok(upstream) = UnixStream::connect(&agent) else {
                        continue;
                    };
                    forward(client, upstream);
                }
            })
        };
        Ok(SshProxy {
            dir,
            stop,
            accept: Some(accept),
        })
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join(SOCKET_NAME)
    }
}

/// Copies both ways until either side closes.
fn forward(client: UnixStream, upstream: UnixStream) {
    let pairs = [
        (client.try_clone(), upstream.try_clone()),
        (upstream.try_clone(), client.try_clone()),
    ];
    for pair in pairs {
        if let (Ok(mut from), Ok(mut to)) = pair {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        }
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(self.socket());
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    /// Talks the agent protocol through the proxy to a real `ssh-agent`.
    #[test]
    fn forwards_to_a_real_agent_with_the_requested_owner() {
        let dir = tempfile::tempdir().unwrap();
        let agent_socket = dir.path().join("agent");
        let mut agent = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is installed");
        for _ in 0..250 {
            if agent_socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let owner = MountOwner {
            uid: 1234,
            gid: 5678,
            mode: 0o600,
        };
        let proxy = SshProxy::start(dir.path(), &agent_socket, &owner).unwrap();
        let md = std::fs::metadata(proxy.socket()).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (1234, 5678, 0o600));
        let mut conn = UnixStream::connect(proxy.socket()).unwrap();
        // SSH_AGENTC_REQUEST_IDENTITIES (11) → SSH_AGENT_IDENTITIES_ANSWER (12), no keys.
        conn.write_all(&[0, 0, 0, 1, 11]).unwrap();
        let mut reply = [0u8; 9];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [0, 0, 0, 5, 12, 0, 0, 0, 0]);
        drop(conn);
        drop(proxy);
        let _ = agent.kill();
        let _ = agent.wait();
    }
}
