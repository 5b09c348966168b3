//! Layer compression: gzip (parallel, core-count independent), zstd (multithreaded encoder)
//! and uncompressed, with the media types each one gets in OCI and Docker manifests.

use std::fmt;
use std::io::{self, Write};

use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;

use crate::image::{
    MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
};

/// Docker's media type for an uncompressed layer.
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// How layer blobs are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CompressionKind {
    #[default]
    Gzip,
    Zstd,
    Uncompressed,
}

impl CompressionKind {
    /// The compression a layer media type (OCI or Docker) names, if any is recognised.
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            MEDIA_TYPE_OCI_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_GZIP => Some(Self::Gzip),
            MEDIA_TYPE_OCI_LAYER_ZSTD => Some(Self::Zstd),
            MEDIA_TYPE_OCI_LAYER | MEDIA_TYPE_DOCKER_LAYER => Some(Self::Uncompressed),
            _ => None,
        }
    }

    /// The layer media type: OCI (`oci = true`) or Docker. zstd has no Docker media type.
    pub fn media_type(self, oci: bool) -> Option<&'static str> {
        match (self, oci) {
            (Self::Gzip, true) => Some(MEDIA_TYPE_OCI_LAYER_GZIP),
            (Self::Gzip, false) => Some(MEDIA_TYPE_DOCKER_LAYER_GZIP),
            (Self::Zstd, true) => Some(MEDIA_TYPE_OCI_LAYER_ZSTD),
            (Self::Zstd, false) => None,
            (Self::Uncompressed, true) => Some(MEDIA_TYPE_OCI_LAYER),
            (Self::Uncompressed, false) => Some(MEDIA_TYPE_DOCKER_LAYER),
        }
    }

    /// Levels the compressor accepts.
    pub fn level_range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Self::Gzip => 0..=9,
            Self::Zstd => 1..=22,
            Self::Uncompressed => 0..=0,
        }
    }

    fn default_level(self) -> i32 {
        match self {
            Self::Gzip => 6,
            Self::Zstd => 3,
            Self::Uncompressed => 0,
        }
    }
}

impl fmt::Display for CompressionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Uncompressed => "uncompressed",
        })
    }
}

impl std::str::FromStr for CompressionKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            "uncompressed" => Ok(Self::Uncompressed),
            _ => Err(format!(
                "unknown compression {s:?}; supported: gzip, zstd, uncompressed"
            )),
        }
    }
}

/// Compression settings of an export (`compression=`, `compression-level=`, `force-compression=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Compression {
    pub kind: CompressionKind,
    /// None = the compressor's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Recompress layers that already exist in another compression (e.g. base image layers).
    pub force: bool,
}

impl Compression {
    pub fn level(&self) -> i32 {
        self.level.unwrap_or_else(|| self.kind.default_level())
    }
}

/// What an export asks of its layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LayerExportOptions {
    pub compression: Compression,
    /// `rewrite-timestamp=true`: clamp file mtimes in built layers to this (SOURCE_DATE_EPOCH).
    pub mtime_clamp: Option<u64>,
}

impl Compression {
    /// The compressing writer over `out`; call [`LayerEncoder::finish`] to end the stream.
    pub(crate) fn encoder<W: Write + Send>(&self, out: W) -> io::Result<LayerEncoder<W>> {
        Ok(match self.kind {
            CompressionKind::Gzip => {
                LayerEncoder::Gzip(ParallelGzip::new(out, self.level.map(|l| l as u32)))
            }
            CompressionKind::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(out, self.level())?;
                // Always the multithreaded encoder: its output is the same for any worker count
                // >= 1, whereas single-threaded mode (0 workers) produces different bytes.
                encoder.multithread(zstd_workers())?;
                LayerEncoder::Zstd(encoder)
            }
            CompressionKind::Uncompressed => LayerEncoder::Plain(out),
        })
    }
}

fn zstd_workers() -> u32 {
    rayon::current_num_threads().clamp(1, 16) as u32
}

/// A streaming compressor of one of the supported kinds.
pub(crate) enum LayerEncoder<W: Write> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write + Send> LayerEncoder<W> {
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            LayerEncoder::Gzip(gz) => gz.finish(),
            LayerEncoder::Zstd(z) => z.finish(),
            LayerEncoder::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write + Send> Write for LayerEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LayerEncoder::Gzip(gz) => gz.write(buf),
            LayerEncoder::Zstd(z) => z.write(buf),
            LayerEncoder::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-stream would change the compressed bytes; only `finish` ends the stream.
        Ok(())
    }
}

/// Uncompressed bytes per independently deflated gzip piece. Fixed, so the output never
/// depends on the number of cores.
pub const GZIP_PIECE_SIZE: usize = 1 << 20;

/// Header of every gzip member we write: no name, mtime 0, OS "unknown" (as flate2 writes it).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];

/// A single gzip member whose deflate stream is made of pieces of [`GZIP_PIECE_SIZE`] input
/// bytes, each compressed on its own (no shared window) and ended with a sync flush, so the
/// pieces can be compressed in parallel and simply concatenated. Each piece's CRC is taken in
/// parallel too and combined in order.
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    /// None: the default level, storing incompressible pieces (see [`deflate_piece`]).
    level: Option<u32>,
    crc: crc32fast::Hasher,
    /// Input bytes so far (gzip's ISIZE is this modulo 2^32).
    amount: u64,
    pending: Vec<u8>,
    /// Full pieces waiting for a parallel batch.
    batch: Vec<Vec<u8>>,
    /// The previous batch, compressing on a helper thread.
    in_flight: Option<std::thread::JoinHandle<io::Result<Vec<Piece>>>>,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    fn new(out: W, level: Option<u32>) -> Self {
        ParallelGzip {
            out,
            level,
            crc: crc32fast::Hasher::new(),
            amount: 0,
            pending: Vec::with_capacity(GZIP_PIECE_SIZE),
            batch: Vec::new(),
            in_flight: None,
            header_written: false,
        }
    }

    /// Pieces per parallel batch: enough to keep every core busy, bounded in memory.
    fn batch_len() -> usize {
        (rayon::current_num_threads() * 2).clamp(2, 32)
    }

    /// Compresses the full pieces (and `last`, the final piece) in parallel. Outside a rayon
    /// pool the batch runs on a helper thread while the caller goes on producing the next one
    /// (at most one batch in flight); inside a pool it runs in place, since blocking a pool
    /// thread on other pool work could deadlock a one-thread pool.
    fn compress_batch(&mut self, last: Option<Vec<u8>>) -> io::Result<()> {
        if !self.header_written {
            self.out.write_all(&GZIP_HEADER)?;
            self.header_written = true;
        }
        let level = self.level;
        let mut pieces: Vec<(Vec<u8>, bool)> =
            self.batch.drain(..).map(|piece| (piece, false)).collect();
        if let Some(last) = last {
            pieces.push((last, true));
        }
        let compress = move || -> io::Result<Vec<Piece>> {
            pieces
                .par_iter()
                .map(|(piece, is_last)| {
                    let mut crc = crc32fast::Hasher::new();
                    crc.update(piece);
                    Ok((deflate_piece(piece, level, *is_last)?, crc))
                })
                .collect()
        };
        if rayon::current_thread_index().is_some() {
            self.write_in_flight()?;
            let compressed = compress()?;
            return self.write_pieces(compressed);
        }
        let helper = std::thread::Builder::new()
            .name("gzip-batch".to_string())
            .spawn(compress)?;
        self.write_in_flight()?;
        self.in_flight = Some(helper);
        Ok(())
    }

    /// Waits for the batch in flight, if any, and writes it out.
    fn write_in_flight(&mut self) -> io::Result<()> {
        if let Some(helper) = self.in_flight.take() {
            let compressed = helper
                .join()
                .map_err(|_| io::Error::other("gzip compression thread panicked"))??;
            self.write_pieces(compressed)?;
        }
        Ok(())
    }

    fn write_pieces(&mut self, pieces: Vec<Piece>) -> io::Result<()> {
        for (piece, crc) in pieces {
            self.crc.combine(&crc);
            self.out.write_all(&piece)?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.pending);
        self.compress_batch(Some(last))?;
        self.write_in_flight()?;
        self.out
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        self.out.write_all(&(self.amount as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = GZIP_PIECE_SIZE - self.pending.len();
        let taken = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..taken]);
        self.amount += taken as u64;
        if self.pending.len() == GZIP_PIECE_SIZE {
            let piece = std::mem::replace(&mut self.pending, Vec::with_capacity(GZIP_PIECE_SIZE));
            self.batch.push(piece);
            if self.batch.len() >= Self::batch_len() {
                self.compress_batch(None)?;
            }
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A compressed piece and the CRC of its input.
type Piece = (Vec<u8>, crc32fast::Hasher);

/// Order-0 entropy above which a piece is stored rather than compressed. Random bytes are at
/// 8.0, gzip/zstd/JPEG data just below; text and executables are far lower (4–6.5).
const INCOMPRESSIBLE_BITS_PER_BYTE: f64 = 7.5;

/// Shannon entropy of the byte histogram of `data`, in bits per byte.
fn bits_per_byte(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u64; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let total = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.log2()
        })
        .sum()
}

/// Raw deflate of one piece: a sync flush ends it on a byte boundary unless it is the last
/// piece, which gets the final block.
fn deflate_piece(input: &[u8], level: Option<u32>, last: bool) -> io::Result<Vec<u8>> {
    // Deflate spends most of its time searching for matches that random-looking data
    // (already compressed files, encrypted or random content) barely has: unless a level was
    // asked for, such pieces are stored, at copy speed, for a few percent of size. The choice
    // depends only on the bytes, so digests stay reproducible.
    let level = match level {
        Some(level) => level,
        None if bits_per_byte(input) > INCOMPRESSIBLE_BITS_PER_BYTE => 0,
        None => CompressionKind::Gzip.default_level() as u32,
    };
    let mut compress = Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = compress.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let status = compress
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = compress.total_in() as usize == input.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is in and there was room left over.
            Status::Ok | Status::BufError if done && !last && out.len() < out.capacity() => break,
            Status::Ok | Status::BufError => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn random_pieces_are_stored_and_text_is_compressed() {
        let mut random = vec![0u8; 1 << 20];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut random)
            .unwrap();
        assert!(bits_per_byte(&random) > INCOMPRESSIBLE_BITS_PER_BYTE);
        let stored = deflate_piece(&random, None, true).unwrap();
        // Stored blocks: the input plus 5 bytes per 64 KiB block.
        assert!(stored.len() > random.len() && stored.len() < random.len() + 200);
        let text = "the quick brown fox jumps over the lazy dog\n".repeat(20_000);
        assert!(bits_per_byte(text.as_bytes()) < 5.0);
        let packed = deflate_piece(text.as_bytes(), None, true).unwrap();
        // An explicit level is honoured even for random data.
        assert!(deflate_piece(&random, Some(1), true).unwrap().len() > stored.len());
        assert!(packed.len() < text.len() / 50, "{}", packed.len());
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&stored[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, random);
    }

    /// Gzip of `data` from inside a pool of `threads` threads, or from outside any pool
    /// (the pipelined path) with `None`.
    fn gzip(data: &[u8], threads: Option<usize>) -> Vec<u8> {
        let compress = || {
            let mut gz = ParallelGzip::new(Vec::new(), None);
            for chunk in data.chunks(7777) {
                gz.write_all(chunk).unwrap();
            }
            gz.finish().unwrap()
        };
        match threads {
            None => compress(),
            Some(threads) => rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(compress),
        }
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a counter mixed with a little noise.
        (0..len)
            .map(|i| ((i / 3) as u8) ^ (((i * 2654435761usize) >> 13) as u8 & 7))
            .collect()
    }

    #[test]
    fn parallel_gzip_round_trips_and_ignores_thread_count() {
        for len in [0, 1, GZIP_PIECE_SIZE, 10 * GZIP_PIECE_SIZE + 12345] {
            let data = sample(len);
            let one = gzip(&data, Some(1));
            let four = gzip(&data, Some(4));
            assert_eq!(one, four, "len {len}: output depends on threads");
            assert_eq!(
                one,
                gzip(&data, None),
                "len {len}: pipelined output differs"
            );
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn media_types_follow_format() {
        assert_eq!(CompressionKind::Zstd.media_type(false), None);
        for kind in [
            CompressionKind::Gzip,
            CompressionKind::Zstd,
            CompressionKind::Uncompressed,
        ] {
            for oci in [true, false] {
                if let Some(mt) = kind.media_type(oci) {
                    assert_eq!(CompressionKind::of_media_type(mt), Some(kind));
                }
            }
        }
    }
}
