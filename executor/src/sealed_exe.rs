//! The helper program is started from a read-only view of itself (CVE-2019-5736).
//!
//! The helper, and any process in a container that execs `#!/proc/self/exe`, runs the builder
//! binary; a container process that opens `/proc/PID/exe` of it and, once it exited, reopens
//! that for writing would overwrite the host's binary. As runc does, the helper is executed
//! from a detached, read-only bind mount of the program (`open_tree` + `mount_setattr`), so such
//! a reopen fails with EROFS. The mount is attached nowhere, so it cannot leak; it lives as long
//! as the descriptor and the processes executing it. Where the mount API is not allowed (no
//! CAP_SYS_ADMIN), a sealed memfd copy is used instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{MemfdFlags, SealFlags, CWD};
use rustix::mount::OpenTreeFlags;

/// The program's read-only descriptor, made once per program and process.
pub(crate) fn sealed_program(program: &Path) -> io::Result<Arc<OwnedFd>> {
    static SEALED: Mutex<Vec<(PathBuf, Arc<OwnedFd>)>> = Mutex::new(Vec::new());
    let mut sealed = SEALED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, fd)) = sealed.iter().find(|(path, _)| path == program) {
        return Ok(fd.clone());
    }
    let fd = read_only_mount(program).or_else(|_| memfd_copy(program))?;
    // Above the descriptors the helper's spawn dup2()s onto (0-4), which would replace it.
    let fd = Arc::new(rustix::io::fcntl_dupfd_cloexec(&fd, 10)?);
    sealed.push((program.to_path_buf(), fd.clone()));
    Ok(fd)
}

/// The path that executes `fd` (the descriptor is resolved before close-on-exec applies).
pub(crate) fn exec_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached read-only bind mount of `program`.
fn read_only_mount(program: &Path) -> io::Result<OwnedFd> {
    let tree = rustix::mount::open_tree(
        CWD,
        program,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (of the size passed) and an empty path string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// A sealed in-memory copy of `program`.
fn memfd_copy(program: &Path) -> io::Result<OwnedFd> {
    let memfd = rustix::fs::memfd_create(
        "builder-helper",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut source = std::fs::File::open(program)?;
    let mut target = std::fs::File::from(memfd.as_fd().try_clone_to_owned()?);
    io::copy(&mut source, &mut target)?;
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    Ok(memfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_views_refuse_writes() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("prog");
        std::fs::write(&program, b"#!/bin/sh\n").unwrap();
        let mut views = vec![memfd_copy(&program).unwrap()];
        // Needs CAP_SYS_ADMIN; the memfd view is checked either way.
        views.extend(read_only_mount(&program).ok());
        for view in views {
            // A sealed memfd may open for writing, but no write lands.
            let written = std::fs::OpenOptions::new()
                .write(true)
                .open(exec_path(&view))
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"pwned"));
            assert!(written.is_err(), "{written:?}");
        }
        assert_eq!(std::fs::read(&program).unwrap(), b"#!/bin/sh\n");
    }

    #[test]
    fn both_views_execute() {
        let program = Path::new("/proc/self/exe");
        let mut views = vec![("memfd", memfd_copy(program).unwrap())];
        views.extend(read_only_mount(program).ok().map(|fd| ("mount", fd)));
        for (name, view) in views {
            let status = std::process::Command::new(exec_path(&view))
                .arg("--list")
                .status();
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "{name}: {status:?}"
            );
        }
    }
}
