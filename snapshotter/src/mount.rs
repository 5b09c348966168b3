//! Mount descriptions (like containerd's) and applying them with mount(2).

use std::ffi::CString;
use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::{Error, IoContext, Result};

/// Longest option string we hand to mount(2); the kernel copies at most one page.
pub const MAX_MOUNT_DATA: usize = 4000;

/// A mount description like containerd's.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// "overlay" or "bind".
    pub fstype: String,
    /// Mount source (a directory for bind mounts, "overlay" for overlays).
    pub source: String,
    /// Mount options, e.g. "rbind", "ro", "lowerdir=...".
    pub options: Vec<String>,
}

/// Mounts each description onto `target`, in order (later ones stack on earlier ones).
/// In mountless mode ([`crate::set_mountless`]) `target` gets a copy of what they show.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    if crate::mountless::mountless() {
        return crate::mountless::copy_in(mounts, target);
    }
    for m in mounts {
        mount_one(m, target).map_err(permission_hint)?;
    }
    Ok(())
}

/// Says what to do when mounting is not permitted at all (a container without privileges).
fn permission_hint(e: Error) -> Error {
    match e {
        Error::Io { context, source } if source.raw_os_error() == Some(libc_eperm()) => Error::Io {
            context: format!("{context} (this process may not mount: in a container without privileges, build with --isolation=chroot)"),
            source,
        },
        e => e,
    }
}

fn libc_eperm() -> i32 {
    rustix::io::Errno::PERM.raw_os_error()
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let readonly = m.options.iter().any(|o| o == "ro");
    match m.fstype.as_str() {
        "bind" | "rbind" => {
            let recursive = m.fstype == "rbind" || m.options.iter().any(|o| o == "rbind");
            let mut flags = MountFlags::BIND;
            if recursive {
                flags |= MountFlags::REC;
            }
            rustix::mount::mount(m.source.as_str(), target, c"", flags, None)
                .ctx(|| format!("bind mounting {} on {}", m.source, target.display()))?;
            if readonly {
                // MS_RDONLY is ignored on the initial bind; it needs a remount (mount_remount adds MS_REMOUNT).
                let flags = MountFlags::BIND | MountFlags::RDONLY;
                if let Err(e) = rustix::mount::mount_remount(target, flags, "") {
                    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
                    return Err(Error::io(
                        format!("remounting {} read-only", target.display()),
                        e,
                    ));
                }
            }
            Ok(())
        }
        "overlay" => {
            let data: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "ro" && *o != "rw")
                .collect();
            let data = data.join(",");
            if data.len() > MAX_MOUNT_DATA {
                return Err(Error::Invalid(format!(
                    "overlay options for {} are {} bytes, above the {MAX_MOUNT_DATA}-byte limit of mount(2) \
                     (too many layers or a too long storage root path)",
                    target.display(),
                    data.len()
                )));
            }
            let data = CString::new(data)
                .map_err(|_| Error::Invalid("overlay options contain a NUL byte".into()))?;
            let flags = if readonly {
                MountFlags::RDONLY
            } else {
                MountFlags::empty()
            };
            rustix::mount::mount(
                m.source.as_str(),
                target,
                c"overlay",
                flags,
                data.as_c_str(),
            )
            .ctx(|| format!("mounting overlay on {}", target.display()))
        }
        other => Err(Error::Invalid(format!(
            "unsupported mount type {other:?} (want overlay or bind)"
        ))),
    }
}

/// Detaches every mount stacked on `target` (MNT_DETACH); Ok if nothing is mounted there.
///
/// In mountless mode, a copied-in writable view's changes go to its upper dir first, and the
/// copy is removed.
pub fn unmount(target: &Path) -> Result<()> {
    if crate::mountless::mountless() && crate::mountless::release(target)? {
        return Ok(());
    }
    // Bounded so a pathological mount stack cannot loop forever.
    for _ in 0..64 {
        match rustix::mount::unmount(target, UnmountFlags::DETACH) {
            Ok(()) => continue,
            // EINVAL: not a mount point (any more).
            Err(rustix::io::Errno::INVAL) => return Ok(()),
            // Mountless, where nothing can be mounted: nothing is.
            Err(rustix::io::Errno::PERM) if crate::mountless::mountless() => return Ok(()),
            Err(e) => return Err(Error::io(format!("unmounting {}", target.display()), e)),
        }
    }
    Err(Error::Invalid(format!(
        "{} still mounted after 64 unmounts",
        target.display()
    )))
}
