//! The local image store: image names → descriptors, persisted as `ROOT/images.json`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use snapshotter::ContentStore;

use crate::image::{
    is_index_media_type, is_manifest_media_type, Descriptor, ImageConfig, Index, Manifest, Platform,
};
use crate::reference::Reference;
use crate::{Error, IoContext, Result};
use distribution::blobs::{read_json, select_manifest};

const IMAGES_FILE: &str = "images.json";
const LOCK_FILE: &str = "images.lock";

/// On-disk shape of `images.json`.
#[derive(Serialize, Deserialize, Default)]
struct ImagesFile {
    images: BTreeMap<String, Descriptor>,
}

/// Tag → descriptor (manifest or index) map, persisted atomically as ROOT/images.json
/// under a file lock, so concurrent processes on one root see consistent tags.
#[derive(Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
}

/// Holds the exclusive lock on `images.lock` until dropped.
struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; unlocking early just shortens the window.
        let _ = self.0.unlock();
    }
}

impl ImageStore {
    /// Opens (creating if needed) the image store in `root`.
    pub fn open(root: &Path, content: ContentStore) -> Result<Self> {
        std::fs::create_dir_all(root).context(|| format!("creating {}", root.display()))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            content,
        })
    }

    /// The content store holding this store's blobs.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Points `name` (any reference string, normalised to its full name) at `target`.
    pub fn tag(&self, name: &str, target: &Descriptor) -> Result<()> {
        let key = Reference::parse(name)?.full_name();
        let _lock = self.lock()?;
        let mut images = self.read()?;
        images.images.insert(key, target.clone());
        self.write(&images)
    }

    /// The descriptor tagged `name`; failing that, the image whose manifest/index digest
    /// (or a hex prefix of it, like docker's image ids) is `name`.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>> {
        let images = self.read()?;
        if let Ok(reference) = Reference::parse(name) {
            if let Some(found) = images.images.get(&reference.full_name()) {
                return Ok(Some(found.clone()));
            }
        }
        let hex_prefix = name.strip_prefix("sha256:").unwrap_or(name);
        let is_hex = hex_prefix.len() >= 4
            && hex_prefix.len() <= 64
            && hex_prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_hex {
            return Ok(None);
        }
        let wanted = format!("sha256:{hex_prefix}");
        Ok(images
            .images
            .values()
            .find(|descriptor| descriptor.digest.starts_with(&wanted))
            .cloned())
    }

    /// All names and their descriptors, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, Descriptor)>> {
        Ok(self.read()?.images.into_iter().collect())
    }

    /// Removes the name; returns false if it was not tagged. Blobs stay (GC removes them).
    pub fn untag(&self, name: &str) -> Result<bool> {
        let key = Reference::parse(name)?.full_name();
        let _lock = self.lock()?;
        let mut images = self.read()?;
        if images.images.remove(&key).is_none() {
            return Ok(false);
        }
        self.write(&images)?;
        Ok(true)
    }

    /// Manifest for `platform` (follows an index; plain manifest returned as is) and its config.
    pub fn load_image(
        &self,
        target: &Descriptor,
        platform: &Platform,
    ) -> Result<(Descriptor, Manifest, ImageConfig)> {
        load_image(&self.content, target, platform)
    }

    fn lock(&self) -> Result<LockGuard> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .context(|| format!("opening {}", path.display()))?;
        file.lock()
            .context(|| format!("locking {}", path.display()))?;
        Ok(LockGuard(file))
    }

    fn read(&self) -> Result<ImagesFile> {
        let path = self.root.join(IMAGES_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::InvalidImage(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ImagesFile::default()),
            Err(e) => Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            }),
        }
    }

    /// Atomic replace: temp file, fsync, rename, fsync the directory.
    fn write(&self, images: &ImagesFile) -> Result<()> {
        let path = self.root.join(IMAGES_FILE);
        let bytes = serde_json::to_vec_pretty(images)?;
        snapshotter::atomic_write(&path, &bytes, 0o644)?;
        Ok(())
    }
}

/// See [`ImageStore::load_image`].
pub(crate) fn load_image(
    content: &ContentStore,
    target: &Descriptor,
    platform: &Platform,
) -> Result<(Descriptor, Manifest, ImageConfig)> {
    let manifest_descriptor = if is_index_media_type(&target.media_type) {
        let index: Index = read_json(content, target)?;
        select_manifest(&index, &target.digest, platform)?
    } else if is_manifest_media_type(&target.media_type) {
        target.clone()
    } else {
        return Err(Error::UnsupportedMediaType(target.media_type.clone()));
    };
    let manifest: Manifest = read_json(content, &manifest_descriptor)?;
    let config: ImageConfig = read_json(content, &manifest.config)?;
    Ok((manifest_descriptor, manifest, config))
}
