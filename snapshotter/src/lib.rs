//! Content store, overlayfs snapshots (containerd-like) and layer diff <-> tar conversion.

mod content;
mod error;
mod fallback;
mod gotar;
pub mod layer;
mod lowers;
mod mount;
mod mountless;
mod snapshots;
mod util;
mod walkdiff;

pub use content::{BlobWriter, ContentStore, Ingest};
pub use error::{Error, Result};
pub use fallback::{choose_views, probe_overlay, SNAPSHOTTER_ENV};
pub use mount::{mount_all, unmount, Mount, MAX_MOUNT_DATA};
pub use mountless::{mountless, set_mountless};
pub use snapshots::{Info, Kind, Snapshotter, Unpacker};
pub use util::atomic_write;
