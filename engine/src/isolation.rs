//! `--isolation` / `BUILDER_ISOLATION`: how RUN steps are isolated, chosen once at startup.

use anyhow::Result;

/// The flag's values, named as buildah's `--isolation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum IsolationFlag {
    /// Namespaces, mounts and Docker's confinement.
    Oci,
    /// chroot into a copied root filesystem, for containers that may neither mount nor
    /// unshare (e.g. GitLab's docker executor); steps are not isolated from the container.
    Chroot,
}

/// Sets the process's isolation from the flag, or, without one, chroot when this process
/// is root but may not create mount namespaces (an unprivileged container). Call before any
/// thread starts. With `announce` (a build), chroot mode is announced once, with its warning.
pub fn apply(flag: Option<IsolationFlag>, announce: bool) -> Result<()> {
    let chroot = match flag {
        Some(IsolationFlag::Chroot) => true,
        Some(IsolationFlag::Oci) => false,
        None if !rustix::process::geteuid().is_root() => false,
        None => match executor::namespaces_unavailable() {
            Some(why) => {
                if announce {
                    eprintln!(
                        "builder: namespaces and mounts are unavailable here ({why}); \
                     using --isolation=chroot"
                    );
                }
                true
            }
            None => false,
        },
    };
    if chroot && announce {
        eprintln!(
            "warning: --isolation=chroot: RUN steps are not isolated from this container \
             (no namespaces, mounts or cgroups of their own); build only Dockerfiles you trust"
        );
    }
    if chroot {
        executor::set_default_isolation(executor::Isolation::Chroot);
        snapshotter::set_mountless(true);
    }
    Ok(())
}
