//! Compiled seccomp programs, cached on disk: generating the BPF program through libseccomp
//! costs milliseconds per run, loading a cached one nothing measurable.
//!
//! A program is keyed by a SHA-256 of everything that decides its bytes: the profile text,
//! the capability set, the architecture, the kernel release (rules have `minKernel`) and the
//! libseccomp version. Files are written atomically (temp file + rename) and verified on load
//! (owner, mode, magic, length, checksum); anything that fails verification is recompiled and
//! replaced, never loaded.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::seccomp::Target;

/// First bytes of a cache file; the version changes when the file layout does.
const MAGIC: &[u8; 16] = b"builder-bpf-v1\n\0";

/// Size of one `struct sock_filter`.
const INSTRUCTION_SIZE: usize = 8;

/// The cache directory of this process: set by the caller ([`set_cache_dir`]), and in the
/// helper from its request.
static CACHE_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Caches compiled seccomp programs in `dir` (e.g. under the store) from now on in this
/// process; `None` compiles on every run.
pub fn set_cache_dir(dir: Option<PathBuf>) {
    *CACHE_DIR.lock().unwrap_or_else(|p| p.into_inner()) = dir;
}

/// The cache directory inside a store root.
pub fn dir_in_store(store_root: &Path) -> PathBuf {
    store_root.join("seccomp")
}

/// The directory set with [`set_cache_dir`].
pub fn cache_dir() -> Option<PathBuf> {
    CACHE_DIR.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The BPF program of `profile_json` for `target`: from the cache when a verified copy is
/// there, otherwise compiled (and then stored, best effort).
pub(crate) fn program_for(profile_json: &str, target: &Target) -> Result<Vec<u8>> {
    let Some(dir) = cache_dir() else {
        return compile_program(profile_json, target);
    };
    let path = dir.join(format!("{}.bpf", cache_key(profile_json, target)));
    if let Some(program) = read_verified(&path) {
        return Ok(program);
    }
    let program = compile_program(profile_json, target)?;
    // A store we cannot write to costs speed, not safety.
    let _ = write_atomically(&dir, &path, &program);
    Ok(program)
}

/// Compiles through libseccomp and exports the program libseccomp itself would load.
pub(crate) fn compile_program(profile_json: &str, target: &Target) -> Result<Vec<u8>> {
    let filter = crate::seccomp::compile(profile_json, target)?;
    let memfd = rustix::fs::memfd_create("seccomp-bpf", rustix::fs::MemfdFlags::CLOEXEC)
        .context("seccomp: creating a buffer for the program")?;
    filter
        .export_bpf(&memfd)
        .context("seccomp: generating the BPF program")?;
    let mut file = std::fs::File::from(memfd);
    file.rewind()?;
    let mut program = Vec::new();
    file.read_to_end(&mut program)?;
    check_shape(&program)?;
    Ok(program)
}

/// Hex SHA-256 of everything the program's bytes depend on.
pub(crate) fn cache_key(profile_json: &str, target: &Target) -> String {
    let library = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let uname = nix::sys::utsname::uname().ok();
    let release = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut hash = Sha256::new();
    for part in [
        MAGIC.as_slice(),
        &target.caps.0.to_le_bytes(),
        target.arch.as_bytes(),
        std::env::consts::ARCH.as_bytes(),
        release.as_bytes(),
        library.as_bytes(),
        profile_json.as_bytes(),
    ] {
        // Length-prefixed, so no two different inputs hash the same bytes.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

fn check_shape(program: &[u8]) -> Result<()> {
    let instructions = program.len() / INSTRUCTION_SIZE;
    if program.is_empty() || !program.len().is_multiple_of(INSTRUCTION_SIZE) || instructions > 4096
    {
        bail!("seccomp: a BPF program of {} bytes", program.len());
    }
    Ok(())
}

/// The cached program at `path` if it is ours, not writable by others, and intact.
pub(crate) fn read_verified(path: &Path) -> Option<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file()
        || meta.uid() != rustix::process::geteuid().as_raw()
        || meta.mode() & 0o022 != 0
    {
        return None;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (checksum, program) = rest.split_at_checked(32)?;
    if Sha256::digest(program).as_slice() != checksum || check_shape(program).is_err() {
        return None;
    }
    Some(program.to_vec())
}

/// Writes `program` to `path` through a temp file renamed into place: a reader sees the old
/// file, the new one, or none, never a partial one.
pub(crate) fn write_atomically(dir: &Path, path: &Path, program: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".bpf-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    temp.write_all(MAGIC)?;
    temp.write_all(&Sha256::digest(program))?;
    temp.write_all(program)?;
    temp.as_file().sync_data()?;
    temp.persist(path)?;
    Ok(())
}

/// Loads `program` into the calling thread, as libseccomp's own load does with its default
/// attributes (no flags; no_new_privs is the caller's business).
pub(crate) fn load(program: &[u8]) -> Result<()> {
    check_shape(program)?;
    let instructions: Vec<libc::sock_filter> = program
        .chunks_exact(INSTRUCTION_SIZE)
        .map(|i| libc::sock_filter {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: instructions.len() as u16,
        filter: instructions.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `instructions`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("loading the seccomp filter");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::CapSet;

    fn target() -> Target {
        Target::native(CapSet(0xa80425fb))
    }

    #[test]
    fn cached_program_is_byte_identical_to_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let profile = crate::seccomp::DOCKER_DEFAULT_PROFILE;
        let fresh = compile_program(profile, &target()).unwrap();
        let path = dir
            .path()
            .join(format!("{}.bpf", cache_key(profile, &target())));
        write_atomically(dir.path(), &path, &fresh).unwrap();
        assert_eq!(read_verified(&path).as_deref(), Some(fresh.as_slice()));
        // Another capability set is another program, under another key.
        let full = Target::native(CapSet(u64::MAX >> 23));
        assert_ne!(cache_key(profile, &full), cache_key(profile, &target()));
        assert_ne!(compile_program(profile, &full).unwrap(), fresh);
    }

    #[test]
    fn damaged_or_foreign_cache_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let program = compile_program(crate::seccomp::DOCKER_DEFAULT_PROFILE, &target()).unwrap();
        let path = dir.path().join("x.bpf");
        write_atomically(dir.path(), &path, &program).unwrap();
        let good = std::fs::read(&path).unwrap();
        // One flipped bit in the program (e.g. an ALLOW where an ERRNO was).
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(read_verified(&path), None);
        // Truncated.
        std::fs::write(&path, &good[..good.len() - 4]).unwrap();
        assert_eq!(read_verified(&path), None);
        // Intact but writable by others.
        std::fs::write(&path, &good).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        assert_eq!(read_verified(&path), None);
        // A symlink to an intact file.
        let real = dir.path().join("real.bpf");
        write_atomically(dir.path(), &real, &program).unwrap();
        let link = dir.path().join("link.bpf");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read_verified(&link), None);
        assert!(read_verified(&real).is_some());
    }
}
