//! The OCI and Docker image formats as types: image config, manifest, index, descriptor,
//! media types, platforms (parsing, normalisation, matching), references and digests.
//! Pure data and validation, no I/O. Input is decoded null-tolerantly (see [`lenient`]),
//! because Go tools write `null` for empty maps and lists.

pub mod digest;
mod error;
pub mod image;
pub mod lenient;
pub mod platform;
pub mod reference;
pub mod units;

pub use digest::{is_valid_digest, sha256_digest, sha256_hex, Digest};
pub use error::Error;
pub use image::{
    ContainerConfig, Descriptor, EmptyObject, HealthConfig, History, ImageConfig, Index, Manifest,
    Platform, RootFs,
};
pub use reference::Reference;
pub use units::human_size;
