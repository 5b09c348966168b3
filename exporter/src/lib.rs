//! Images: OCI config/manifest/index types, layer compression, the local image store (tags),
//! OCI layout and docker archives, `--load`, annotations and attestations. The OCI types
//! come from `oci` and the registry client from `distribution` (re-exported here).

// The OCI types live in the `oci` leaf crate and the registry client in `distribution`;
// these paths stay so that callers keep compiling.
pub use distribution::{auth, config, registry};
pub use oci::{image, platform, reference};

pub mod annotations;
mod archive;
pub mod attestation;
pub mod compression;
pub mod docker_engine;
mod layer;
mod load;
pub mod provenance;
pub mod sbom;
mod store;
mod time;

pub use annotations::{annotate_document, AnnotationKind, Annotations};
pub use archive::{
    export_docker_archive, export_docker_archive_multi, export_oci_archive,
    export_oci_archive_multi, export_oci_layout_dir,
};
pub use compression::{Compression, CompressionKind, LayerExportOptions};
pub(crate) use distribution::IoContext;
pub use distribution::{Error, Result};
pub use image::{
    ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, Index, Manifest, Platform,
    RootFs,
};
pub use layer::{
    import_rootfs_tar, open_layer, recompress_layer, write_image, write_image_bytes,
    write_image_with, write_index, write_layer, write_layer_with, LayerBlob,
};
pub use load::{load_archive, load_oci_layout, LoadedImage};
pub use oci::sha256_digest;
pub use reference::Reference;
pub use registry::{PushReport, RegistryClient};
pub use snapshotter::ContentStore;
pub use store::ImageStore;
pub use time::{format_rfc3339, now_rfc3339};
