//! Layer blobs (compression, diff ids) and writing image config/manifest/index blobs.

use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use snapshotter::ContentStore;

use crate::compression::{Compression, CompressionKind};
use crate::image::{
    Descriptor, History, ImageConfig, Index, Manifest, Platform, MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::{Error, IoContext, Result};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const COPY_BUFFER_SIZE: usize = 256 * 1024;

/// A layer written to the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// The compressed blob.
    pub descriptor: Descriptor,
    /// `sha256:` of the uncompressed tar (goes into the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

/// Size of the pieces fed to the compressor.
const COMPRESS_CHUNK_SIZE: usize = 64 * 1024;

/// Hashes the uncompressed stream and feeds the encoder in fixed-size pieces: the deflate
/// output depends on how its input is split, and layer digests must not depend on how the
/// producer happens to chunk its writes.
struct LayerStream<W: Write> {
    encoder: W,
    hasher: Sha256,
    pending: Vec<u8>,
}

impl<W: Write> LayerStream<W> {
    fn new(encoder: W) -> Self {
        LayerStream {
            encoder,
            hasher: Sha256::new(),
            pending: Vec::with_capacity(COMPRESS_CHUNK_SIZE),
        }
    }

    /// Flushes the last partial piece and returns the encoder and the diff id.
    fn finish(mut self) -> io::Result<(W, String)> {
        self.encoder.write_all(&self.pending)?;
        let diff_id = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        Ok((self.encoder, diff_id))
    }
}

impl<W: Write> Write for LayerStream<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = COMPRESS_CHUNK_SIZE - self.pending.len();
        let taken = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..taken]);
        self.hasher.update(&buf[..taken]);
        if self.pending.len() == COMPRESS_CHUNK_SIZE {
            self.encoder.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing the encoder would end a deflate block early and change the output, so a
        // producer's flush only matters once the layer is finished.
        Ok(())
    }
}

/// Streams an uncompressed tar (written by `produce`) through gzip into the content store,
/// hashing compressed and uncompressed bytes at once; never holds the layer in memory.
pub fn write_layer(
    content: &ContentStore,
    produce: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<LayerBlob> {
    write_layer_with(content, &Compression::default(), produce)
}

/// Writes (and so hashes) a blob on a thread of its own, so that work overlaps producing and
/// compressing the layer.
struct OffThreadWriter<W: Write + Send + 'static> {
    buffer: Vec<u8>,
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> OffThreadWriter<W> {
    fn new(mut inner: W) -> io::Result<Self> {
        // A few chunks in flight: enough to smooth out bursts, little memory.
        let (chunks, incoming) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let writer = std::thread::Builder::new()
            .name("blob-writer".into())
            .spawn(move || {
                for chunk in incoming {
                    inner.write_all(&chunk)?;
                }
                Ok(inner)
            })?;
        Ok(Self {
            buffer: Vec::with_capacity(COPY_BUFFER_SIZE),
            chunks: Some(chunks),
            writer: Some(writer),
        })
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(COPY_BUFFER_SIZE));
        let sent = self.chunks.as_ref().map(|c| c.send(chunk));
        if let Some(Ok(())) = sent {
            return Ok(());
        }
        // The writer thread stopped: its error says why.
        self.chunks = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("blob writer stopped")),
        }
    }

    fn join(&mut self) -> io::Result<W> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        writer
            .join()
            .map_err(|_| io::Error::other("blob writer thread panicked"))?
    }

    /// Writes what is buffered and returns the inner writer once all is written.
    fn finish(mut self) -> io::Result<W> {
        if !self.buffer.is_empty() {
            self.send_buffer()?;
        }
        self.chunks = None;
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for OffThreadWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = COPY_BUFFER_SIZE - self.buffer.len();
        let taken = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..taken]);
        if self.buffer.len() == COPY_BUFFER_SIZE {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for OffThreadWriter<W> {
    fn drop(&mut self) {
        // Unfinished (an error upstream): stop the thread; the inner writer is dropped there.
        self.chunks = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Like [`write_layer`] with the given compression; the descriptor gets the OCI media type.
pub fn write_layer_with(
    content: &ContentStore,
    compression: &Compression,
    produce: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<LayerBlob> {
    let blob = OffThreadWriter::new(content.writer()?)?;
    let encoder = compression
        .encoder(blob)
        .context(|| format!("starting {} compressor", compression.kind))?;
    let mut tar_stream = LayerStream::new(encoder);
    produce(&mut tar_stream).context(|| "writing layer tar".to_string())?;
    let (encoder, diff_id) = tar_stream
        .finish()
        .context(|| "compressing layer".to_string())?;
    let blob = encoder
        .finish()
        .context(|| "compressing layer".to_string())?;
    let blob = blob.finish().context(|| "writing layer blob".to_string())?;
    let (digest, size) = blob.commit(None)?;
    let media_type = compression
        .kind
        .media_type(true)
        .expect("every compression has an OCI media type");
    Ok(LayerBlob {
        descriptor: Descriptor::new(media_type, &digest, size),
        diff_id,
    })
}

/// Rewrites a stored layer blob with another compression (same diff id, new blob).
pub fn recompress_layer(
    content: &ContentStore,
    layer: &Descriptor,
    compression: &Compression,
) -> Result<LayerBlob> {
    let mut tar = open_layer(content, layer)?;
    write_layer_with(content, compression, &mut |out| {
        io::copy(&mut tar, out)?;
        Ok(())
    })
}

/// Decompressed reader for a layer blob (gzip, zstd or uncompressed by media type).
///
/// The compression is recognised by the blob's magic bytes, so mislabelled layers still work.
pub fn open_layer(content: &ContentStore, layer: &Descriptor) -> Result<Box<dyn Read + Send>> {
    if !content.has(&layer.digest) {
        return Err(Error::NotFound(format!("layer blob {}", layer.digest)));
    }
    let file = content.open_blob(&layer.digest)?;
    decompressed(BufReader::with_capacity(COPY_BUFFER_SIZE, file))
        .context(|| format!("reading layer {}", layer.digest))
}

/// Wraps `reader` in the decoder its magic bytes call for (gzip, zstd or none).
pub(crate) fn decompressed<R: BufRead + Send + 'static>(
    mut reader: R,
) -> io::Result<Box<dyn Read + Send>> {
    let head = reader.fill_buf()?;
    if head.starts_with(GZIP_MAGIC) {
        Ok(Box::new(MultiGzDecoder::new(reader)))
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// Writes config + manifest blobs (OCI media types) and returns the manifest descriptor
/// (with platform set from the config).
pub fn write_image(
    content: &ContentStore,
    config: &ImageConfig,
    layers: &[Descriptor],
) -> Result<Descriptor> {
    write_image_with(content, config, layers, true)
}

/// Like [`write_image`], with OCI (`oci_media_types`) or Docker schema 2 media types for the
/// manifest, config and layers. zstd layers have no Docker media type and are refused.
pub fn write_image_with(
    content: &ContentStore,
    config: &ImageConfig,
    layers: &[Descriptor],
    oci_media_types: bool,
) -> Result<Descriptor> {
    let config_bytes = serde_json::to_vec(config)?;
    write_image_bytes(content, config, &config_bytes, layers, oci_media_types)
}

/// Like [`write_image_with`], storing `config_bytes` as the config blob: `config` serialized
/// with extra fields (such as inline build-cache records). `config` gives the layer count
/// check and the platform.
pub fn write_image_bytes(
    content: &ContentStore,
    config: &ImageConfig,
    config_bytes: &[u8],
    layers: &[Descriptor],
    oci_media_types: bool,
) -> Result<Descriptor> {
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(Error::InvalidImage(format!(
            "config lists {} diff_ids but the manifest has {} layers",
            config.rootfs.diff_ids.len(),
            layers.len()
        )));
    }
    let config_digest = content.put_bytes(config_bytes)?;
    let (manifest_type, config_type) = if oci_media_types {
        (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_CONFIG)
    } else {
        (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_CONFIG)
    };
    let layers = layers
        .iter()
        .map(|layer| {
            let media_type = match CompressionKind::of_media_type(&layer.media_type) {
                Some(kind) => kind.media_type(oci_media_types).ok_or_else(|| {
                    Error::InvalidImage(format!(
                        "layer {} is {kind}, which needs OCI media types (oci-mediatypes=true)",
                        layer.digest
                    ))
                })?,
                None => layer.media_type.as_str(),
            };
            Ok(Descriptor {
                platform: None,
                media_type: media_type.to_string(),
                ..layer.clone()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: manifest_type.to_string(),
        config: Descriptor::new(config_type, &config_digest, config_bytes.len() as u64),
        layers,
        annotations: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = content.put_bytes(&manifest_bytes)?;
    let mut descriptor =
        Descriptor::new(manifest_type, &manifest_digest, manifest_bytes.len() as u64);
    descriptor.platform = Some(config.platform());
    Ok(descriptor)
}

/// Writes an OCI index over `manifests` (each should carry its platform) and returns its descriptor.
pub fn write_index(content: &ContentStore, manifests: &[Descriptor]) -> Result<Descriptor> {
    let index = Index {
        manifests: manifests.to_vec(),
        ..Index::new()
    };
    let bytes = serde_json::to_vec(&index)?;
    let digest = content.put_bytes(&bytes)?;
    Ok(Descriptor::new(
        MEDIA_TYPE_OCI_INDEX,
        &digest,
        bytes.len() as u64,
    ))
}

/// `PATH` docker and BuildKit use when an image defines none.
const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes a one-layer image from a rootfs tarball (plain, gzip or zstd), e.g.
/// `builder import busybox.tar busybox:latest`. `created` defaults to now.
///
/// The config gets the default `PATH` so the image is usable as a base straight away.
pub fn import_rootfs_tar(
    content: &ContentStore,
    input: impl Read,
    platform: &Platform,
    created: Option<&str>,
) -> Result<Descriptor> {
    // `input` need not be Send, so `decompressed` (used for stored blobs) does not fit here.
    let mut input = BufReader::with_capacity(COPY_BUFFER_SIZE, input);
    let head = input
        .fill_buf()
        .context(|| "reading rootfs tar".to_string())?;
    let is_gzip = head.starts_with(GZIP_MAGIC);
    let is_zstd = head.starts_with(ZSTD_MAGIC);
    let mut tar: Box<dyn Read + '_> = if is_gzip {
        Box::new(MultiGzDecoder::new(input))
    } else if is_zstd {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .context(|| "reading zstd rootfs tar".to_string())?,
        )
    } else {
        Box::new(input)
    };
    let layer = write_layer(content, &mut |out| {
        io::copy(&mut tar, out)?;
        Ok(())
    })?;
    let created = created.map_or_else(crate::now_rfc3339, str::to_string);
    let platform = platform.normalized();
    let mut config = ImageConfig {
        created: Some(created.clone()),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        os_version: platform.os_version.clone(),
        ..Default::default()
    };
    config.config.env.push(DEFAULT_PATH_ENV.to_string());
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    config.history.push(History {
        created: Some(created),
        created_by: Some("builder import".to_string()),
        comment: Some("imported from rootfs tarball".to_string()),
        ..Default::default()
    });
    write_image(content, &config, &[layer.descriptor])
}
