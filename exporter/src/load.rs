//! `builder load`: docker (`docker save`) and OCI layout archives into the content store.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use snapshotter::ContentStore;

use crate::compression::CompressionKind;
use crate::image::{
    is_index_media_type, is_manifest_media_type, Descriptor, ImageConfig, Index, Manifest,
    ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::Reference;
use crate::{Error, IoContext, Result};

/// Largest metadata file (index.json, manifest.json, …) read into memory.
const MAX_METADATA_SIZE: u64 = 16 << 20;

/// One image found in an archive.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// Full names to tag it with (may be empty: an unnamed image).
    pub names: Vec<String>,
    /// Manifest or index, stored in the content store.
    pub descriptor: Descriptor,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "oci::lenient::null_default")]
    layers: Vec<String>,
}

/// Reads a docker or OCI archive (plain, gzip or zstd) in one pass: every file goes to the
/// content store (blobs under `blobs/sha256/` are verified against their names), then the
/// images are assembled from `manifest.json` (docker) or `index.json` (OCI).
pub fn load_archive(content: &ContentStore, input: impl Read) -> Result<Vec<LoadedImage>> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let head = input.fill_buf().context(|| "reading archive".to_string())?;
    let reader: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .context(|| "reading zstd archive".to_string())?,
        )
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(reader);
    let mut files: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut metadata: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive
        .entries()
        .context(|| "reading archive".to_string())?
    {
        let mut entry = entry.context(|| "reading archive entry".to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw_path = entry
            .path()
            .context(|| "reading archive entry name".to_string())?
            .to_string_lossy()
            .into_owned();
        let path = raw_path.trim_start_matches("./").to_string();
        if matches!(
            path.as_str(),
            "index.json" | "manifest.json" | "oci-layout" | "repositories"
        ) {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_METADATA_SIZE)
                .read_to_end(&mut bytes)
                .context(|| format!("reading {path} from the archive"))?;
            metadata.insert(path, bytes);
            continue;
        }
        let expected = path
            .strip_prefix("blobs/sha256/")
            .map(|hex| format!("sha256:{hex}"));
        let mut writer = content.writer()?;
        io::copy(&mut entry, &mut writer).context(|| format!("reading {path} from the archive"))?;
        let (digest, size) = writer.commit(expected.as_deref())?;
        files.insert(path, (digest, size));
    }
    if let Some(bytes) = metadata.get("manifest.json") {
        load_docker(content, bytes, &files)
    } else if let Some(bytes) = metadata.get("index.json") {
        load_oci(content, bytes)
    } else {
        Err(Error::InvalidImage(
            "not a docker or OCI archive: neither manifest.json nor index.json found".to_string(),
        ))
    }
}

fn load_docker(
    content: &ContentStore,
    manifest_json: &[u8],
    files: &BTreeMap<String, (String, u64)>,
) -> Result<Vec<LoadedImage>> {
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| Error::InvalidImage(format!("manifest.json: {e}")))?;
    let file = |path: &str| {
        files.get(path.trim_start_matches("./")).ok_or_else(|| {
            Error::InvalidImage(format!(
                "manifest.json names {path:?}, which is not in the archive"
            ))
        })
    };
    let mut images = Vec::new();
    for entry in entries {
        let (config_digest, config_size) = file(&entry.config)?;
        let config_descriptor = Descriptor::new(MEDIA_TYPE_OCI_CONFIG, config_digest, *config_size);
        let config: ImageConfig = distribution::blobs::read_json(content, &config_descriptor)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(Error::InvalidImage(format!(
                "{}: config lists {} diff_ids but manifest.json {} layers",
                entry.config,
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for path in &entry.layers {
            let (digest, size) = file(path)?;
            let kind = sniff_compression(content, digest)?;
            let media_type = kind.media_type(true).expect("OCI media type");
            layers.push(Descriptor::new(media_type, digest, *size));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
            config: config_descriptor,
            layers,
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&manifest)?;
        let digest = content.put_bytes(&bytes)?;
        let mut descriptor = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, &digest, bytes.len() as u64);
        descriptor.platform = Some(config.platform());
        let names = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|tag| Reference::parse(tag).map(|r| r.full_name()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        images.push(LoadedImage { names, descriptor });
    }
    Ok(images)
}

fn load_oci(content: &ContentStore, index_json: &[u8]) -> Result<Vec<LoadedImage>> {
    let index: Index = serde_json::from_slice(index_json)
        .map_err(|e| Error::InvalidImage(format!("index.json: {e}")))?;
    let mut images = Vec::new();
    for entry in index.manifests {
        if !is_manifest_media_type(&entry.media_type) && !is_index_media_type(&entry.media_type) {
            return Err(Error::UnsupportedMediaType(entry.media_type.clone()));
        }
        if !content.has(&entry.digest) {
            return Err(Error::InvalidImage(format!(
                "index.json names {}, which is not in the archive",
                entry.digest
            )));
        }
        let name = entry
            .annotations
            .get(ANNOTATION_CONTAINERD_IMAGE_NAME)
            .cloned()
            .or_else(|| {
                // A bare tag ("latest") names no repository; only full references count.
                entry
                    .annotations
                    .get(ANNOTATION_REF_NAME)
                    .filter(|name| name.contains(':') || name.contains('/'))
                    .cloned()
            });
        let names = name
            .map(|n| Reference::parse(&n).map(|r| r.full_name()))
            .transpose()?
            .into_iter()
            .collect();
        let mut descriptor = entry.clone();
        descriptor.annotations.clear();
        images.push(LoadedImage { names, descriptor });
    }
    Ok(images)
}

/// The compression of a stored blob, by its magic bytes.
fn sniff_compression(content: &ContentStore, digest: &str) -> Result<CompressionKind> {
    let mut head = [0u8; 4];
    let mut file = content.open_blob(digest)?;
    let read = file
        .read(&mut head)
        .context(|| format!("reading blob {digest}"))?;
    Ok(match &head[..read] {
        [0x1f, 0x8b, ..] => CompressionKind::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => CompressionKind::Zstd,
        _ => CompressionKind::Uncompressed,
    })
}

/// Copies the blobs of an OCI image layout directory into the content store and returns the
/// descriptor `selector` names in its index.json: a digest (`sha256:...`), a tag (the
/// `org.opencontainers.image.ref.name` annotation), or nothing when the index holds one entry.
pub fn load_oci_layout(
    content: &ContentStore,
    dir: &std::path::Path,
    selector: Option<&str>,
) -> Result<Descriptor> {
    let index_path = dir.join("index.json");
    let bytes =
        std::fs::read(&index_path).context(|| format!("reading {}", index_path.display()))?;
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidImage(format!("{}: {e}", index_path.display())))?;
    let chosen = match selector {
        Some(digest) if digest.starts_with("sha256:") => {
            index.manifests.iter().find(|m| m.digest == digest)
        }
        Some(tag) => index.manifests.iter().find(|m| {
            m.annotations
                .get(ANNOTATION_REF_NAME)
                .is_some_and(|name| name == tag || name.rsplit(':').next() == Some(tag))
        }),
        None if index.manifests.len() == 1 => index.manifests.first(),
        None => {
            return Err(Error::InvalidImage(format!(
                "{} holds {} images; name one with @sha256:... or :tag",
                dir.display(),
                index.manifests.len()
            )))
        }
    }
    .ok_or_else(|| {
        Error::InvalidImage(format!(
            "{} has no image {:?}",
            dir.display(),
            selector.unwrap_or_default()
        ))
    })?
    .clone();
    let blobs = dir.join("blobs").join("sha256");
    let entries = std::fs::read_dir(&blobs).context(|| format!("reading {}", blobs.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("reading {}", blobs.display()))?;
        let hex = entry.file_name().to_string_lossy().into_owned();
        let digest = format!("sha256:{hex}");
        if content.has(&digest) {
            continue;
        }
        let mut file = std::fs::File::open(entry.path())
            .context(|| format!("reading {}", entry.path().display()))?;
        let mut writer = content.writer()?;
        io::copy(&mut file, &mut writer)
            .context(|| format!("reading {}", entry.path().display()))?;
        writer.commit(Some(&digest))?;
    }
    let mut descriptor = chosen;
    descriptor.annotations.clear();
    Ok(descriptor)
}
