//! `--isolation` / `BUILDER_ISOLATION` (applied by `engine::isolation`).

/// The flag's values, named as buildah's `--isolation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum IsolationFlag {
    /// Namespaces, mounts and Docker's confinement.
    Oci,
    /// chroot into a copied root filesystem, for containers that may neither mount nor
    /// unshare (e.g. GitLab's docker executor); steps are not isolated from the container.
    Chroot,
}
