//! Shared fixtures: a busybox rootfs tarball, a real `docker-registry`, command helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exporter::{ContentStore, Descriptor, Platform};

pub const CREATED: &str = "2024-01-02T03:04:05Z";

/// A rootfs tarball with `/bin/busybox` and a few applet symlinks.
pub fn busybox_rootfs_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["bin/", "etc/", "tmp/", "usr/", "usr/bin/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, dir, std::io::empty())
            .unwrap();
    }
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(busybox.len() as u64);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, "bin/busybox", &busybox[..])
        .unwrap();
    for applet in ["sh", "ls", "cat", "echo"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        builder
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn content_store(dir: &Path) -> ContentStore {
    ContentStore::open(dir).unwrap()
}

/// Imports the busybox rootfs as a one-layer image for `platform`.
pub fn import_busybox(content: &ContentStore, platform: &str) -> Descriptor {
    let platform: Platform = platform.parse().unwrap();
    exporter::import_rootfs_tar(content, &busybox_rootfs_tar()[..], &platform, Some(CREATED))
        .unwrap()
}

/// Runs a command, panicking with its output unless it succeeds; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A `docker-registry` process on a free loopback port, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _storage: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let storage = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config_path: PathBuf = storage.path().join("config.yml");
        let data = storage.path().join("data");
        std::fs::write(
            &config_path,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                data.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed");
        let registry = Registry {
            child,
            port,
            _storage: storage,
        };
        registry.wait_ready();
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not answer on port {}", self.port);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
