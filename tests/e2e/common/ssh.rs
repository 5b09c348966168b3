//! A real `ssh-agent` and a way to run the host's `ssh-add` inside a busybox container, for
//! the `RUN --mount=type=ssh` tests (local and remote).

use super::{stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real ssh-agent (openssh-client) listening on a socket in `dir`, killed at drop.
pub struct Agent(Child, pub PathBuf);

impl Agent {
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is installed");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child, socket)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies `binary` and the shared libraries `ldd` lists for it into `dir`, so a busybox
/// container can run it with the copied dynamic loader; returns the loader's file name.
pub fn copy_with_libraries(binary: &str, dir: &Path) -> String {
    std::fs::copy(binary, dir.join(Path::new(binary).file_name().unwrap())).unwrap();
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    assert!(ldd.status.success(), "ldd {binary}: {}", stderr(&ldd));
    let mut loader = None;
    for line in stdout(&ldd).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(lib) = words.iter().find(|w| w.starts_with('/')).map(Path::new) else {
            continue;
        };
        let name = lib.file_name().unwrap().to_string_lossy().to_string();
        // The loader's line is the one without `=>`.
        if !words.contains(&"=>") {
            loader = Some(name.clone());
        }
        std::fs::copy(lib, dir.join(&name)).unwrap();
    }
    loader.expect("ldd names the dynamic loader")
}
