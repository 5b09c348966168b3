//! Helpers for end-to-end tests: a fresh storage root, a busybox base image
//! made from Debian's busybox-static, and a real docker-registry process.
#![allow(dead_code)]

pub mod gha_server;
pub mod ssh;

/// Shell lines (run in a private network namespace standing in for the host) that add an
/// "outside" namespace `$OUTSIDE` at 192.0.2.2 behind a veth (the host side is 192.0.2.1), and
/// remove it and the container `probe` of store `$ROOT` (binary `$BIN`) on exit.
pub const OUTSIDE_SETUP: &str = r#"set -e
ip link set lo up
ip netns add "$OUTSIDE"
trap '"$BIN" --root "$ROOT" rm -f probe >/dev/null 2>&1; ip netns del "$OUTSIDE"' EXIT
ip link add vout type veth peer name vin netns "$OUTSIDE"
ip addr add 192.0.2.1/24 dev vout && ip link set vout up
ip -n "$OUTSIDE" addr add 192.0.2.2/24 dev vin
ip -n "$OUTSIDE" link set vin up && ip -n "$OUTSIDE" link set lo up
"#;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_builder");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A busybox root filesystem tarball, made once per test process.
pub fn busybox_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("builder-test-busybox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("busybox.tar");
        let st = Command::new("bash")
            .arg(repo().join("scripts/make-busybox-rootfs.sh"))
            .arg(&tar)
            .status()
            .unwrap();
        assert!(st.success(), "make-busybox-rootfs.sh failed");
        tar
    })
    .clone()
}

/// A fresh storage root, removed (after unmounting leftovers) at drop.
pub struct Store {
    pub dir: tempfile::TempDir,
}

impl Store {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("builder-e2e-")
                .tempdir()
                .unwrap(),
        }
    }

    /// A store with busybox:latest imported.
    pub fn with_busybox() -> Self {
        let s = Self::new();
        let out = s.run(&["import", busybox_tar().to_str().unwrap(), "busybox:latest"]);
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root").arg(self.root());
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs `builder build` with `--progress=rawjson` and returns the output.
    pub fn build(&self, context: &Path, extra: &[&str]) -> Output {
        let mut c = self.cmd();
        c.arg("build")
            .arg("--progress=rawjson")
            .args(extra)
            .arg(context);
        c.output().unwrap()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Unmount anything a failed test left under the root before deleting it.
        if let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root = self.root().to_string_lossy().to_string();
            for line in m.lines() {
                if let Some(mp) = line.split(' ').nth(4) {
                    if mp.starts_with(&root) {
                        let _ = Command::new("umount").arg("-l").arg(mp).status();
                    }
                }
            }
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Parsed rawjson progress events.
pub fn events(o: &Output) -> Vec<serde_json::Value> {
    stderr(o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A real docker-registry (distribution 2.8) on a free loopback port.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        wait_for_listener(&addr);
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes files into a new temp dir: (relative path, content), modes from the umask.
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, c) in files {
        write_file(d.path(), p, c.as_bytes(), None);
    }
    d
}

/// Writes a fixture tree into a new temp dir: (relative path, contents, mode).
pub fn fixture<C: AsRef<[u8]>>(files: &[(&str, C, u32)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_fixture(d.path(), files);
    d
}

/// Writes (relative path, contents, mode) entries under `dir`, making parent directories.
pub fn write_fixture<C: AsRef<[u8]>>(dir: &Path, files: &[(&str, C, u32)]) {
    for (p, c, mode) in files {
        write_file(dir, p, c.as_ref(), Some(*mode));
    }
}

fn write_file(dir: &Path, relative: &str, contents: &[u8], mode: Option<u32>) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    if let Some(mode) = mode {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Every regular file under `dir`, recursively (not following symlinks).
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    files
}

/// The image config of an OCI archive, read by skopeo.
pub fn skopeo_config(archive: &Path) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `cmd` with `input` on its standard input, collecting stdout and stderr.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Waits (up to 5 s) until something listens on the TCP address.
pub fn wait_for_listener(addr: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An image built to an OCI archive and unpacked; `layers` are its layer blobs, base first.
#[allow(dead_code)]
pub struct OciImage {
    pub dir: tempfile::TempDir,
    pub layers: Vec<PathBuf>,
}

/// Builds `ctx` (with `extra` flags) to an OCI archive and unpacks its layout.
#[allow(dead_code)]
pub fn build_oci_image(store: &Store, ctx: &Path, extra: &[&str]) -> OciImage {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let out_arg = format!("type=oci,dest={}", archive.display());
    let mut args = extra.to_vec();
    args.extend(["-o", &out_arg]);
    let out = store.build(ctx, &args);
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    let layout = dir.path().join("layout");
    untar_into(&archive, &layout);
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let index = json(layout.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()))
        .collect();
    OciImage { dir, layers }
}

/// Extracts `archive` (any compression tar detects) into the new directory `into`.
#[allow(dead_code)]
pub fn untar_into(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -xf {}: {}",
        archive.display(),
        stderr(&out)
    );
}

/// Unpacks the `latest` image of an OCI layout directory with umoci; returns its rootfs.
#[allow(dead_code)]
pub fn umoci_unpack(layout: &Path, bundle: &Path) -> PathBuf {
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack: {}", stderr(&out));
    bundle.join("rootfs")
}

/// Names of RUN/COPY steps with the given progress event ("started" or "cached"), sorted.
#[allow(dead_code)]
pub fn step_names(out: &Output, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = events(out)
        .iter()
        .filter(|e| e["event"] == kind)
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.contains("RUN") || n.contains("COPY"))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}
