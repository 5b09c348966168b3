//! `ADD` of a local tar archive: detection by content (never by name) and
//! extraction that stays inside the destination root whatever the archive
//! holds (absolute names, `..`, symlinks planted by the archive or the image).

use crate::fileop::{
    clean_rel_bytes, ensure_dir, join_rel, match_text, rel_path, resolve_in_root, Owner,
};
use anyhow::{anyhow, bail, Context as _, Result};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How an archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn compression_of(magic: &[u8]) -> Format {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if magic.starts_with(b"BZh") {
        Format::Bzip2
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Format::Xz
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Zstd
    } else {
        Format::Plain
    }
}

/// A reader of the decompressed bytes of `input`.
fn decompressed(input: impl Read + Send + 'static, format: Format) -> Result<Box<dyn Read>> {
    let buffered = BufReader::new(input);
    Ok(match format {
        Format::Plain => Box::new(buffered),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Format::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Format::Xz => {
            // lzma-rs decodes xz into a writer; a pipe thread turns that into a reader.
            let (reader, mut writer) = std::io::pipe()?;
            let decoder = std::thread::Builder::new()
                .name("xz-decoder".into())
                .spawn(move || {
                    let mut input = buffered;
                    lzma_rs::xz_decompress(&mut input, &mut writer).map_err(|e| e.to_string())
                })?;
            Box::new(XzReader {
                pipe: Some(reader),
                decoder: Some(decoder),
            })
        }
    })
}

/// The read end of the xz decoder's pipe. At the end of the data it reports the decoder's
/// error (a corrupt archive is not a short one); dropped early, it closes the pipe and waits
/// for the decoder, so no thread outlives the reader.
struct XzReader {
    pipe: Option<std::io::PipeReader>,
    decoder: Option<std::thread::JoinHandle<std::result::Result<(), String>>>,
}

impl XzReader {
    fn finish(&mut self) -> std::io::Result<()> {
        self.pipe = None;
        match self.decoder.take().map(|d| d.join()) {
            Some(Ok(Err(e))) => Err(std::io::Error::other(format!("xz: {e}"))),
            Some(Err(_)) => Err(std::io::Error::other("xz decoder panicked")),
            _ => Ok(()),
        }
    }
}

impl Read for XzReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.pipe.as_mut() {
            Some(pipe) => pipe.read(buf)?,
            None => 0,
        };
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for XzReader {
    fn drop(&mut self) {
        // A decoder cut off by the closed pipe fails; that is expected here.
        let _ = self.finish();
    }
}

/// Whether a 512-byte block is a tar header (its checksum is right).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .skip_while(|c| *c == ' ')
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stored
}

/// The archive format of `path`, or `None` when it is not a (compressed) tar archive.
pub fn detect(path: &Path) -> Result<Option<Format>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    detect_in(file).with_context(|| format!("reading {}", path.display()))
}

/// [`detect`] for any seekable input (read from its current position, then rewound there).
pub fn detect_in(mut input: impl Read + Seek + Send + 'static) -> Result<Option<Format>> {
    let start = input.stream_position()?;
    let mut magic = [0u8; 6];
    let n = read_full(&mut input, &mut magic)?;
    let format = compression_of(&magic[..n]);
    input.seek(SeekFrom::Start(start))?;
    let mut reader = match decompressed(input, format) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let mut block = [0u8; 512];
    let n = read_full(&mut reader, &mut block).unwrap_or(0);
    Ok((n == 512 && is_tar_header(&block)).then_some(format))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Replaces whatever is at `path` unless it is a directory and `keep_dir`.
fn clear(path: &Path, keep_dir: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .with_context(|| format!("replacing {}", path.display()))
}

/// Extracts the archive at `archive` into `dest_dir` (a resolved directory inside `root`).
pub fn extract(
    archive: &Path,
    format: Format,
    root: &Path,
    dest_dir: &Path,
    owner: Option<Owner>,
) -> Result<()> {
    let dest_rel = dest_dir
        .strip_prefix(root)
        .map_err(|_| anyhow!("{} is outside the root", dest_dir.display()))?
        .as_os_str()
        .as_bytes()
        .to_vec();
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(decompressed(file, format)?);
    // Directory times are set last: creating entries inside would change them.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        // Names are bytes: they need not be UTF-8.
        let raw_name = entry.path_bytes().into_owned();
        let name = match_text(&raw_name).into_owned();
        let rel = clean_rel_bytes(&raw_name);
        if rel.is_empty() {
            continue;
        }
        // Resolve the parent inside the root (following the image's and the archive's
        // symlinks as if the root were /), then create the last component without following.
        let (parent_rel, base) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (join_rel(&dest_rel, &rel[..i]), rel[i + 1..].to_vec()),
            None => (dest_rel.clone(), rel.clone()),
        };
        let parent = resolve_in_root(root, &parent_rel, true)?;
        // Directories the archive implies but does not list belong to root, whatever --chown says.
        ensure_dir(root, &parent, None)?;
        let target = parent.join(rel_path(&base));
        let header = entry.header().clone();
        let raw_mode = header.mode().unwrap_or(0o644) & 0o7777;
        let kind = header.entry_type();
        let is_dir = kind.is_dir();
        let mode = raw_mode;
        let (uid, gid) = match owner {
            Some(o) => (o.uid, o.gid),
            None => (
                header.uid().unwrap_or(0) as u32,
                header.gid().unwrap_or(0) as u32,
            ),
        };
        let mtime = header.mtime().unwrap_or(0) as i64;
        let xattrs = pax_xattrs(&mut entry)?;
        if is_dir {
            clear(&target, true)?;
            if !target.exists() {
                std::fs::create_dir(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
            }
            set_owner_mode(&target, uid, gid, Some(mode))?;
            set_xattrs(&target, &xattrs)?;
            dir_times.push((target, mtime));
            continue;
        }
        clear(&target, false)?;
        if kind.is_file() || kind == tar::EntryType::Continuous {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            std::io::copy(&mut entry, &mut out).with_context(|| format!("extracting {name}"))?;
            set_owner_mode(&target, uid, gid, Some(mode))?;
        } else if kind.is_symlink() {
            let link = entry
                .link_name()?
                .ok_or_else(|| anyhow!("symlink {name} has no target"))?;
            std::os::unix::fs::symlink(&link, &target)
                .with_context(|| format!("creating {}", target.display()))?;
            set_owner_mode(&target, uid, gid, None)?;
        } else if kind.is_hard_link() {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("hardlink {name} has no target"))?
                .into_owned();
            let link_rel = join_rel(&dest_rel, &clean_rel_bytes(&link));
            let existing = resolve_in_root(root, &link_rel, false)?;
            std::fs::hard_link(&existing, &target)
                .with_context(|| format!("linking {name} to {}", match_text(&link)))?;
            continue;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            make_node(&header, &target, mode).with_context(|| format!("extracting {name}"))?;
            set_owner_mode(&target, uid, gid, Some(mode))?;
        } else if kind.is_pax_global_extensions() || kind.is_gnu_longname() {
            continue;
        } else {
            bail!("{name}: unsupported tar entry type {:?}", kind);
        }
        set_xattrs(&target, &xattrs)?;
        set_mtime(&target, mtime)?;
    }
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    Ok(())
}

/// Creates the FIFO or device node a tar header describes (as root, devices too, like Docker).
fn make_node(header: &tar::Header, target: &Path, mode: u32) -> Result<()> {
    let kind = header.entry_type();
    let file_type = if kind.is_fifo() {
        rustix::fs::FileType::Fifo
    } else if kind.is_character_special() {
        rustix::fs::FileType::CharacterDevice
    } else {
        rustix::fs::FileType::BlockDevice
    };
    // A FIFO has no device number; GNU tar and Python leave the fields NUL.
    let dev = if kind.is_fifo() {
        0
    } else {
        let (major, minor) = snapshotter::layer::device_numbers(header)?;
        rustix::fs::makedev(major, minor)
    };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        target,
        file_type,
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .with_context(|| format!("creating {}", target.display()))
}

/// `SCHILY.xattr.user.*` records of an entry's PAX header.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                if name.starts_with("user.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, value) in xattrs {
        rustix::fs::lsetxattr(path, name.as_str(), value, rustix::fs::XattrFlags::empty())
            .with_context(|| format!("setting xattr {name} on {}", path.display()))?;
    }
    Ok(())
}

fn set_owner_mode(path: &Path, uid: u32, gid: u32, mode: Option<u32>) -> Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {}", path.display()))?;
    if let Some(mode) = mode {
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

/// Sets the access and modification times of `path` (not following a symlink).
pub(crate) fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting times of {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An xz-compressed tar (made by the `xz` tool, small dictionary) holding one 1 MB file.
    fn xz_tar(dir: &Path) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        // Pseudo-random, so that the compressed stream is long and its end is past the header.
        let mut x = 1u32;
        let data: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "f", &data[..]).unwrap();
        let plain = dir.join("plain.tar");
        std::fs::write(&plain, builder.into_inner().unwrap()).unwrap();
        let out = std::process::Command::new("xz")
            .args(["-0", "-c"])
            .arg(&plain)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn decoder_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "xz-decoder")
            })
            .count()
    }

    // Found by the archive_detect fuzz target (LeakSanitizer): detection read 512 bytes and
    // left the xz decoder thread running, detached, with its errors dropped.
    #[test]
    fn xz_detection_and_extraction_leave_no_decoder_thread_behind() {
        let dir = tempfile::tempdir().unwrap();
        let good = xz_tar(dir.path());
        let archive = dir.path().join("a.xz");
        std::fs::write(&archive, &good).unwrap();
        assert_eq!(detect(&archive).unwrap(), Some(Format::Xz));
        assert_eq!(decoder_threads(), 0, "detection left the decoder running");
        let root = tempfile::tempdir_in(dir.path()).unwrap();
        extract(&archive, Format::Xz, root.path(), root.path(), None).unwrap();
        assert_eq!(
            std::fs::metadata(root.path().join("f")).unwrap().len(),
            1 << 20
        );
        assert_eq!(decoder_threads(), 0, "extraction left the decoder running");
        // The fuzzer's input: xz magic, then garbage.
        let found = b"\xfd7zXZ\x00p\xa2Z\x1f\x8b\x08\x00~\x00\x00\x00Bh\x00 \x00\x00\x03";
        let _ = detect_in(std::io::Cursor::new(found.to_vec()));
        assert_eq!(
            decoder_threads(),
            0,
            "a failed detection left the decoder running"
        );
    }
}
