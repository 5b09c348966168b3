//! chroot isolation (`--isolation=chroot`), for containers that may neither mount nor unshare
//! (GitLab's docker executor, Docker's default seccomp profile): the program runs chrooted
//! into a rootfs that is a plain directory, in the caller's namespaces, as buildah's chroot
//! isolation and Kaniko did. It is not isolated from the build container.
//!
//! Without mounts, the container's files are provided by writing into the rootfs, and taken
//! out again before the caller diffs it: `/dev/{null,zero,full,random,urandom,tty}` are
//! device nodes made with mknod (Docker's device rules allow these), `/etc/hosts` and
//! `/etc/resolv.conf` are written over the image's and restored afterwards (bytes and times).
//! There is no `/proc` or `/sys`.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::helper::{close_inherited_fds, exec_program, user_and_workdir, Confinement};
use crate::paths::resolve_in_root;
use crate::stubs::Tracker;
use crate::{ExecSpec, Network};

/// Device nodes made in `/dev` (those Docker's device cgroup lets a container open).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Runs `spec` chrooted into its rootfs directory; returns the program's exit status.
pub(crate) fn run_chrooted(
    spec: &ExecSpec,
    state_dir: &Path,
    status_fd: &OwnedFd,
    console_size: (u16, u16),
) -> Result<i32> {
    let root = rootfs_dir(spec)?;
    let created_file = state_dir.join(crate::run::CREATED_FILE);
    let mut tracker = Tracker::new(&root, Some(&created_file));
    let devices = make_devices(&root, &mut tracker)?;
    let hostname = crate::helper::hostname_of(spec);
    let hosts = crate::helper::hosts_file(hostname, &spec.extra_hosts);
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let mut stashed = Vec::new();
    for (path, content) in [
        ("/etc/hosts", hosts.as_bytes()),
        ("/etc/resolv.conf", &resolv),
    ] {
        stashed.push(EtcFile::provide(&root, path, content, &mut tracker)?);
    }
    drop(tracker);
    let code = run_child(spec, &root, &created_file, status_fd, console_size);
    // The step may have turned any directory on the way into a link out of the rootfs: what
    // follows opens paths beneath the root without following symlinks.
    for file in stashed.into_iter().rev() {
        file.restore(&root);
    }
    devices.remove(&root);
    code
}

/// The rootfs directory: chroot isolation takes the rootfs as one bind "mount" of a
/// directory, and no other mounts.
fn rootfs_dir(spec: &ExecSpec) -> Result<PathBuf> {
    if !spec.mounts.is_empty() {
        let targets: Vec<&str> = spec.mounts.iter().map(|m| m.target.as_str()).collect();
        bail!(
            "mounts ({}) need mount(2), which chroot isolation cannot use: \
             RUN --mount is not supported with --isolation=chroot",
            targets.join(", ")
        );
    }
    if spec.network == Network::None || spec.netns.is_some() {
        bail!("a network namespace (RUN --network=none) needs namespaces, which chroot isolation cannot use");
    }
    match spec.rootfs.as_slice() {
        [m] if m.fstype == "bind" || m.options.iter().any(|o| o == "rbind") => {
            Ok(PathBuf::from(&m.source))
        }
        _ => bail!("chroot isolation needs the rootfs as one directory (a single bind)"),
    }
}

fn run_child(
    spec: &ExecSpec,
    root: &Path,
    created_file: &Path,
    status_fd: &OwnedFd,
    console_size: (u16, u16),
) -> Result<i32> {
    let (code, child_pid) = crate::helper::fork_and_wait("the step's process", status_fd, || {
        child(spec, root, created_file, status_fd, console_size)
    })?;
    // What the step left running in its process group goes with it (there is no pid namespace
    // to end them).
    let _ = nix::sys::signal::killpg(child_pid, nix::sys::signal::Signal::SIGKILL);
    Ok(code)
}

fn child(
    spec: &ExecSpec,
    root: &Path,
    created_file: &Path,
    status_fd: &OwnedFd,
    console_size: (u16, u16),
) -> Result<std::convert::Infallible> {
    nix::unistd::setsid().context("starting a session")?;
    if spec.stdio == crate::Stdio::Terminal {
        // Without mount(2) there is no devpts of its own: the host's (chroot isolation is
        // no boundary anyway).
        crate::console::allocate(Path::new("/dev/ptmx"), console_size)?;
    }
    close_inherited_fds(&[std::os::fd::AsRawFd::as_raw_fd(status_fd)])?;
    let confinement = Confinement::of(spec)?.for_chroot();
    let mut tracker = Tracker::new(root, Some(created_file));
    nix::unistd::chroot(root).with_context(|| format!("chroot into {}", root.display()))?;
    nix::unistd::chdir("/").context("entering /")?;
    tracker.set_root(Path::new("/"));
    let (user, cwd) = user_and_workdir(spec)?;
    tracker
        .create_dir_all(Path::new(cwd))
        .with_context(|| format!("creating working directory {cwd}"))?;
    drop(tracker);
    exec_program(spec, cwd, &user, confinement)
}

/// Device nodes made in the rootfs's `/dev`, removed after the run.
struct Devices {
    dev: PathBuf,
    made: Vec<PathBuf>,
    /// `/dev`'s times before, when it existed.
    times: Option<(i64, i64, i64, i64)>,
}

fn make_devices(root: &Path, tracker: &mut Tracker) -> Result<Devices> {
    let dev = resolve_in_root(root, "/dev").context("resolving /dev")?;
    let times = std::fs::symlink_metadata(&dev)
        .ok()
        .map(|m| (m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec()));
    tracker
        .create_dir_all(&dev)
        .context("creating /dev in the rootfs")?;
    let mut made = Vec::new();
    for name in DEVICES {
        let node = dev.join(name);
        let host = std::fs::metadata(Path::new("/dev").join(name));
        let Ok(host) = host else { continue };
        if std::fs::symlink_metadata(&node).is_ok() || !host.file_type().is_char_device() {
            continue;
        }
        let made_node = rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            host.rdev(),
        );
        // Without CAP_MKNOD a step goes without the node, as it would without /dev.
        if made_node.is_ok() {
            let _ = rustix::fs::chmod(&node, rustix::fs::Mode::from_raw_mode(0o666));
            made.push(node);
        }
    }
    Ok(Devices { dev, made, times })
}

impl Devices {
    fn remove(self, root: &Path) {
        let Ok(dev) = open_beneath(root, &self.dev, OFlags::RDONLY | OFlags::DIRECTORY) else {
            return;
        };
        for node in &self.made {
            let Some(name) = node.file_name() else {
                continue;
            };
            let is_node = rustix::fs::statat(&dev, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice);
            if is_node {
                let _ = rustix::fs::unlinkat(&dev, name, AtFlags::empty());
            }
        }
        if let Some((asec, ansec, msec, mnsec)) = self.times {
            let _ = rustix::fs::futimens(&dev, &timestamps((asec, ansec), (msec, mnsec)));
        }
    }
}

/// A file of the rootfs replaced for the run; the image's bytes and times come back after.
struct EtcFile {
    path: PathBuf,
    original: Option<Original>,
}

/// The image's bytes, atime and mtime of a replaced file.
type Original = (Vec<u8>, (i64, i64), (i64, i64));

impl EtcFile {
    fn provide(root: &Path, path: &str, content: &[u8], tracker: &mut Tracker) -> Result<EtcFile> {
        let host = resolve_in_root(root, path).with_context(|| format!("resolving {path}"))?;
        let original = match std::fs::symlink_metadata(&host) {
            Ok(md) if md.is_file() => {
                let bytes = std::fs::read(&host).with_context(|| format!("reading {path}"))?;
                Some((
                    bytes,
                    (md.atime(), md.atime_nsec()),
                    (md.mtime(), md.mtime_nsec()),
                ))
            }
            Ok(_) => bail!("{path} in the rootfs is not a regular file"),
            Err(_) => {
                tracker
                    .create_file(&host)
                    .with_context(|| format!("creating {path}"))?;
                None
            }
        };
        write_nofollow(&host, content).with_context(|| format!("writing {path}"))?;
        Ok(EtcFile {
            path: host,
            original,
        })
    }

    /// Puts the image's file back; a file the executor created is emptied, so that the
    /// caller's stub removal takes it out of the layer.
    fn restore(self, root: &Path) {
        let flags = OFlags::WRONLY | OFlags::TRUNC;
        let Ok(fd) = open_beneath(root, &self.path, flags) else {
            return;
        };
        let mut file = File::from(fd);
        if let Some((bytes, atime, mtime)) = self.original {
            if file.write_all(&bytes).is_ok() {
                let _ = rustix::fs::futimens(&file, &timestamps(atime, mtime));
            }
        }
    }
}

/// Opens `path`, a host path under `root`, beneath `root` without following any symlink.
fn open_beneath(root: &Path, path: &Path, flags: OFlags) -> std::io::Result<OwnedFd> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| std::io::Error::other("path outside the rootfs"))?;
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::openat2(
        &root_fd,
        rel,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Rewrites a regular file in place, never through a symlink the step may have put there.
fn write_nofollow(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file: File = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(content)
}

fn timestamps(atime: (i64, i64), mtime: (i64, i64)) -> rustix::fs::Timestamps {
    use rustix::fs::{Timespec, Timestamps};
    Timestamps {
        last_access: Timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1 as _,
        },
        last_modification: Timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1 as _,
        },
    }
}

/// Why this process cannot isolate a run with namespaces and mounts (e.g. a container
/// without privileges under Docker's default seccomp profile), or None if it can. Tries, in a
/// forked child, what a run needs first: a private mount namespace and a tmpfs mount in it.
pub fn namespaces_unavailable() -> Option<String> {
    const STEPS: [&str; 3] = [
        "unshare(CLONE_NEWNS)",
        "making / private",
        "mounting a tmpfs",
    ];
    // SAFETY: the child makes only async-signal-safe system calls, then _exits.
    match unsafe { libc::fork() } {
        -1 => Some(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            let code = probe_in_child();
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for the child just forked.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return Some("waiting for the probe".into());
                }
            }
            let code = libc::WEXITSTATUS(status);
            if libc::WIFEXITED(status) && code == 0 {
                return None;
            }
            let step = STEPS.get((code as usize) / 100).copied().unwrap_or("probe");
            let errno = std::io::Error::from_raw_os_error(code % 100);
            Some(format!("{step}: {errno}"))
        }
    }
}

/// 0 when all steps worked, else 100 * step + errno (errno values that matter are < 100).
fn probe_in_child() -> i32 {
    let fail = |step: i32| {
        100 * step + (std::io::Error::last_os_error().raw_os_error().unwrap_or(1) % 100)
    };
    // SAFETY: plain system calls on constant arguments in a forked child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) < 0 {
            return fail(0);
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            return fail(1);
        }
        if libc::mount(
            c"tmpfs".as_ptr(),
            c"/".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) < 0
        {
            return fail(2);
        }
    }
    0
}
