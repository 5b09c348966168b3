//! OCI image layout and `docker load` archives, written as tar streams.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use serde::Serialize;
use sha2::{Digest, Sha256};
use snapshotter::ContentStore;

use crate::image::{
    is_index_media_type, is_manifest_media_type, Descriptor, ImageConfig, Index, Manifest,
    Platform, ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::layer::open_layer;
use crate::reference::Reference;
use crate::{Error, IoContext, Result};
use distribution::blobs::{read_json, select_manifest};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes `target` (manifest or index) and everything it references as an OCI image layout
/// tar: `oci-layout`, `index.json` and `blobs/sha256/*`.
///
/// `ref_name` (e.g. "busybox:latest") annotates the index entry with
/// `org.opencontainers.image.ref.name` = the tag and `io.containerd.image.name` = the full name.
/// Manifests of an index that are absent locally (platforms never pulled) are left out, as
/// containerd does; at least one must be present.
pub fn export_oci_archive(
    content: &ContentStore,
    target: &Descriptor,
    ref_name: Option<&str>,
    out: impl Write,
) -> Result<()> {
    export_oci_archive_multi(
        content,
        &[(target.clone(), ref_name.map(str::to_string))],
        out,
    )
}

/// Like [`export_oci_archive`] but as an OCI image layout directory (`tar=false`). Blobs
/// already in `dir` are kept, so several images can share one layout; `index.json` is written
/// last, atomically, and lists only this image.
pub fn export_oci_layout_dir(
    content: &ContentStore,
    target: &Descriptor,
    ref_name: Option<&str>,
    dir: &std::path::Path,
) -> Result<()> {
    let entry = oci_index_entry(target, ref_name)?;
    let mut blobs = Vec::new();
    collect_blobs(content, target, &mut blobs, &mut BTreeSet::new())?;
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).context(|| format!("creating {}", blob_dir.display()))?;
    for blob in &blobs {
        let path = dir.join(blob_path(&blob.digest)?);
        if path.exists() {
            continue;
        }
        let temp = path.with_extension("tmp");
        std::fs::copy(content.blob_path(&blob.digest), &temp)
            .and_then(|_| std::fs::rename(&temp, &path))
            .context(|| format!("writing {}", path.display()))?;
    }
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        let temp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&temp, bytes)
            .and_then(|_| std::fs::rename(&temp, &path))
            .context(|| format!("writing {}", path.display()))
    };
    write("oci-layout", OCI_LAYOUT)?;
    let index = Index {
        manifests: vec![entry],
        ..Index::new()
    };
    write("index.json", &serde_json::to_vec(&index)?)
}

/// The `index.json` entry for `target`, annotated with `ref_name`'s tag and full name.
fn oci_index_entry(target: &Descriptor, ref_name: Option<&str>) -> Result<Descriptor> {
    let mut entry = Descriptor {
        platform: None,
        ..target.clone()
    };
    // Descriptor annotations (`--annotation manifest-descriptor:...`) stay; names are ours.
    entry.annotations.remove(ANNOTATION_REF_NAME);
    entry.annotations.remove(ANNOTATION_CONTAINERD_IMAGE_NAME);
    if let Some(name) = ref_name {
        let reference = Reference::parse(name)?;
        entry.annotations.insert(
            ANNOTATION_REF_NAME.to_string(),
            reference.tag_or_latest().to_string(),
        );
        entry.annotations.insert(
            ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(),
            reference.full_name(),
        );
    }
    Ok(entry)
}

/// Depth-first list of every blob `descriptor` reaches, each once, children before parents.
fn collect_blobs(
    content: &ContentStore,
    descriptor: &Descriptor,
    blobs: &mut Vec<Descriptor>,
    seen: &mut BTreeSet<String>,
) -> Result<()> {
    if !seen.insert(descriptor.digest.clone()) {
        return Ok(());
    }
    if is_index_media_type(&descriptor.media_type) {
        let index: Index = read_json(content, descriptor)?;
        let mut present = 0;
        for child in &index.manifests {
            if content.has(&child.digest) {
                collect_blobs(content, child, blobs, seen)?;
                present += 1;
            }
        }
        if present == 0 && !index.manifests.is_empty() {
            return Err(Error::NotFound(format!(
                "none of the manifests of index {} are stored locally",
                descriptor.digest
            )));
        }
    } else if is_manifest_media_type(&descriptor.media_type) {
        let manifest: Manifest = read_json(content, descriptor)?;
        for child in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if seen.insert(child.digest.clone()) {
                blobs.push(child.clone());
            }
        }
    }
    blobs.push(descriptor.clone());
    Ok(())
}

/// One image entry of docker's `manifest.json`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Writes a `docker load` archive (docker 25+ layout): uncompressed layers and the config
/// under `blobs/sha256/`, `manifest.json`, `repositories`, and OCI layout files whose
/// manifest points at the uncompressed layers.
///
/// `manifest` may be an index, in which case the host platform's image is written.
/// Layers are decompressed twice (once to size them for the tar header, once to copy) rather
/// than buffered in memory or on disk; the first pass also checks them against the diff ids.
pub fn export_docker_archive(
    content: &ContentStore,
    manifest: &Descriptor,
    repo_tags: &[String],
    out: impl Write,
) -> Result<()> {
    export_docker_archive_multi(content, &[(manifest.clone(), repo_tags.to_vec())], out)
}

/// [`export_docker_archive`] for several images (each with its names) in one archive, as
/// `docker save a b` writes; shared layers and configs are written once.
pub fn export_docker_archive_multi(
    content: &ContentStore,
    images: &[(Descriptor, Vec<String>)],
    out: impl Write,
) -> Result<()> {
    let mut archive = TarWriter::new(out);
    archive.append_directory("blobs/")?;
    archive.append_directory("blobs/sha256/")?;
    let mut written = BTreeSet::new();
    let mut docker_manifest = Vec::new();
    let mut index = Index::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (manifest, repo_tags) in images {
        let manifest_descriptor = if is_index_media_type(&manifest.media_type) {
            let index: Index = read_json(content, manifest)?;
            select_manifest(&index, &manifest.digest, &Platform::host())?
        } else {
            manifest.clone()
        };
        let image_manifest: Manifest = read_json(content, &manifest_descriptor)?;
        let config: ImageConfig = read_json(content, &image_manifest.config)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != image_manifest.layers.len() {
            return Err(Error::InvalidImage(format!(
                "{}: config lists {} diff_ids but the manifest has {} layers",
                manifest_descriptor.digest,
                diff_ids.len(),
                image_manifest.layers.len()
            )));
        }
        let references = repo_tags
            .iter()
            .map(|tag| Reference::parse(tag))
            .collect::<std::result::Result<Vec<_>, _>>()?;

        if written.insert(image_manifest.config.digest.clone()) {
            archive.append_blob(content, &image_manifest.config)?;
        }
        let mut layer_paths = Vec::new();
        let mut archive_layers = Vec::new();
        for (layer, diff_id) in image_manifest.layers.iter().zip(diff_ids) {
            let path = blob_path(diff_id)?;
            let size = uncompressed_layer_size(content, layer, diff_id)?;
            if written.insert(diff_id.clone()) {
                let mut reader = open_layer(content, layer)?;
                archive.append_reader(&path, size, &mut reader)?;
            }
            layer_paths.push(path);
            archive_layers.push(Descriptor::new(MEDIA_TYPE_OCI_LAYER, diff_id, size));
        }

        // The OCI view of the same image: its layers are the uncompressed tars written above.
        let archive_manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
            config: Descriptor::new(
                MEDIA_TYPE_OCI_CONFIG,
                &image_manifest.config.digest,
                image_manifest.config.size,
            ),
            layers: archive_layers,
            annotations: BTreeMap::new(),
        };
        let archive_manifest_bytes = serde_json::to_vec(&archive_manifest)?;
        let archive_manifest_digest = crate::sha256_digest(&archive_manifest_bytes);
        if written.insert(archive_manifest_digest.clone()) {
            archive.append_bytes(
                &blob_path(&archive_manifest_digest)?,
                &archive_manifest_bytes,
            )?;
        }
        let manifest_entry = Descriptor::new(
            MEDIA_TYPE_OCI_MANIFEST,
            &archive_manifest_digest,
            archive_manifest_bytes.len() as u64,
        );
        for reference in &references {
            let mut entry = manifest_entry.clone();
            entry.annotations.insert(
                ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(),
                reference.full_name(),
            );
            entry.annotations.insert(
                ANNOTATION_REF_NAME.to_string(),
                reference.tag_or_latest().to_string(),
            );
            index.manifests.push(entry);
        }
        if references.is_empty() {
            index.manifests.push(manifest_entry);
        }
        docker_manifest.push(DockerArchiveEntry {
            config: blob_path(&image_manifest.config.digest)?,
            repo_tags: references.iter().map(familiar_tagged_name).collect(),
            layers: layer_paths,
        });
        if let Some(top_layer) = diff_ids.last() {
            let top_hex = digest_hex(top_layer)?;
            for reference in &references {
                repositories
                    .entry(reference.familiar_repository())
                    .or_default()
                    .insert(reference.tag_or_latest().to_string(), top_hex.to_string());
            }
        }
    }
    archive.append_bytes("index.json", &serde_json::to_vec(&index)?)?;
    archive.append_bytes("manifest.json", &serde_json::to_vec(&docker_manifest)?)?;
    archive.append_bytes("oci-layout", OCI_LAYOUT)?;
    if !repositories.is_empty() {
        archive.append_bytes("repositories", &serde_json::to_vec(&repositories)?)?;
    }
    archive.finish()
}

/// [`export_oci_archive`] for several images in one layout, each entry named by its reference.
pub fn export_oci_archive_multi(
    content: &ContentStore,
    images: &[(Descriptor, Option<String>)],
    out: impl Write,
) -> Result<()> {
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    let mut index = Index::new();
    for (target, name) in images {
        collect_blobs(content, target, &mut blobs, &mut seen)?;
        index
            .manifests
            .push(oci_index_entry(target, name.as_deref())?);
    }
    let mut archive = TarWriter::new(out);
    archive.append_bytes("oci-layout", OCI_LAYOUT)?;
    archive.append_directory("blobs/")?;
    archive.append_directory("blobs/sha256/")?;
    for blob in &blobs {
        archive.append_blob(content, blob)?;
    }
    archive.append_bytes("index.json", &serde_json::to_vec(&index)?)?;
    archive.finish()
}

/// "busybox:latest" style name docker writes into `RepoTags`.
fn familiar_tagged_name(reference: &Reference) -> String {
    format!(
        "{}:{}",
        reference.familiar_repository(),
        reference.tag_or_latest()
    )
}

/// Size of the decompressed layer, checking its digest against `diff_id` on the way.
fn uncompressed_layer_size(
    content: &ContentStore,
    layer: &Descriptor,
    diff_id: &str,
) -> Result<u64> {
    let mut reader = open_layer(content, layer)?;
    let mut hasher = HashingSink {
        hasher: Sha256::new(),
        size: 0,
    };
    io::copy(&mut reader, &mut hasher).context(|| format!("decompressing {}", layer.digest))?;
    let actual = format!("sha256:{}", hex::encode(hasher.hasher.finalize()));
    if actual != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("uncompressed layer {}", layer.digest),
            expected: diff_id.to_string(),
            actual,
        });
    }
    Ok(hasher.size)
}

struct HashingSink {
    hasher: Sha256,
    size: u64,
}

impl Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn digest_hex(digest: &str) -> Result<&str> {
    Ok(oci::sha256_hex(digest)?)
}

fn blob_path(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest_hex(digest)?))
}

/// A tar stream with fixed ownership, modes and mtime so archives are reproducible.
struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Deterministic);
        TarWriter { builder }
    }

    fn header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(size);
        header
    }

    fn append_directory(&mut self, path: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.builder
            .append_data(&mut header, path, io::empty())
            .context(|| format!("writing {path} to archive"))
    }

    fn append_bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.append_reader(path, data.len() as u64, &mut &data[..])
    }

    /// Appends exactly `size` bytes from `reader`; a shorter or longer stream is an error
    /// (the tar header already promised `size`).
    fn append_reader(&mut self, path: &str, size: u64, reader: &mut dyn Read) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, 0o644, size);
        let mut exact = ExactReader {
            inner: reader,
            remaining: size,
        };
        self.builder
            .append_data(&mut header, path, &mut exact)
            .context(|| format!("writing {path} to archive"))?;
        let mut probe = [0u8; 1];
        if exact.remaining != 0 || exact.inner.read(&mut probe).unwrap_or(0) != 0 {
            return Err(Error::InvalidImage(format!(
                "{path}: content changed size while archiving"
            )));
        }
        Ok(())
    }

    fn append_blob(&mut self, content: &ContentStore, blob: &Descriptor) -> Result<()> {
        let path = blob_path(&blob.digest)?;
        if !content.has(&blob.digest) {
            return Err(Error::NotFound(format!(
                "blob {} ({})",
                blob.digest, blob.media_type
            )));
        }
        let mut file = content.open_blob(&blob.digest)?;
        let size = file
            .metadata()
            .context(|| format!("stat of blob {}", blob.digest))?
            .len();
        if size != blob.size {
            return Err(Error::InvalidImage(format!(
                "blob {} is {size} bytes but its descriptor says {}",
                blob.digest, blob.size
            )));
        }
        self.append_reader(&path, size, &mut file)
    }

    fn finish(self) -> Result<()> {
        let mut out = self
            .builder
            .into_inner()
            .context(|| "finishing archive".to_string())?;
        out.flush().context(|| "flushing archive".to_string())
    }
}

/// Yields at most `remaining` bytes and fails if the source ends early.
struct ExactReader<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..limit])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source ended before the size in the tar header",
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}
