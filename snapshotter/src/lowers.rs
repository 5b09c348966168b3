//! What a stack of overlay lower dirs shows at a path, read straight from the layer dirs
//! (no mount): the nearest layer wins, a whiteout (char 0/0) deletes, a file hides the
//! layers below it, and an opaque directory hides the layers below its contents.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Whether `md` is an overlay whiteout.
pub(crate) fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Prefix of an aufs-style whiteout file (`.wh.NAME` deletes `NAME`), which mountless
/// snapshots use instead of 0/0 devices: an overlay mount (a container's root) refuses those.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The aufs-style opaque marker file, likewise.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Whether a mountless snapshot dir `dir` holds a whiteout file for `name`.
fn has_whiteout_file(dir: &Path, name: &[u8]) -> bool {
    if !crate::mountless::mountless() {
        return false;
    }
    let mut file = WHITEOUT_PREFIX.as_bytes().to_vec();
    file.extend_from_slice(name);
    std::fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(&file))).is_ok()
}

/// Whether the directory at `path` is marked opaque.
pub(crate) fn is_opaque(path: &Path) -> bool {
    if crate::mountless::mountless() && path.join(OPAQUE_MARKER).exists() {
        return true;
    }
    OPAQUE_XATTRS.iter().any(|name| {
        let mut value = [0u8; 2];
        matches!(rustix::fs::lgetxattr(path, *name, &mut value), Ok(1) if value[0] == b'y')
    })
}

/// How one layer dir shows a path.
enum InLayer {
    /// The layer has an entry (not a whiteout) at the path.
    Present(PathBuf, std::fs::Metadata),
    /// The layer deletes or hides the path and everything below: stop looking.
    Hidden,
    /// The layer says nothing; with `true`, an opaque parent hides the layers below it.
    Absent(bool),
}

/// Overlay lower dirs, nearest first.
pub(crate) struct Lowers {
    dirs: Vec<PathBuf>,
}

impl Lowers {
    pub(crate) fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    fn in_layer(layer: &Path, comps: &[&[u8]]) -> InLayer {
        let mut path = layer.to_path_buf();
        let mut opaque_above = false;
        for (i, comp) in comps.iter().enumerate() {
            if has_whiteout_file(&path, comp) {
                return InLayer::Hidden;
            }
            path.push(std::ffi::OsStr::from_bytes(comp));
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                return InLayer::Absent(opaque_above);
            };
            if is_whiteout(&md) {
                return InLayer::Hidden;
            }
            if i + 1 == comps.len() {
                return InLayer::Present(path, md);
            }
            if !md.is_dir() {
                return InLayer::Hidden;
            }
            opaque_above |= is_opaque(&path);
        }
        InLayer::Absent(opaque_above)
    }

    /// The entry the lowers show at `rel` (slash-separated, not empty), if any.
    pub(crate) fn lookup(&self, rel: &[u8]) -> Option<(PathBuf, std::fs::Metadata)> {
        let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        for layer in &self.dirs {
            match Self::in_layer(layer, &comps) {
                InLayer::Present(path, md) => return Some((path, md)),
                InLayer::Hidden | InLayer::Absent(true) => return None,
                InLayer::Absent(false) => {}
            }
        }
        None
    }

    /// The names the lowers show inside directory `rel`, each with its path in the layer it comes from.
    pub(crate) fn children(&self, rel: &[u8]) -> BTreeMap<Vec<u8>, PathBuf> {
        let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        let mut out = BTreeMap::new();
        let mut deleted: HashSet<OsString> = HashSet::new();
        for layer in &self.dirs {
            let (dir, md) = match Self::in_layer(layer, &comps) {
                InLayer::Present(path, md) => (path, md),
                InLayer::Hidden | InLayer::Absent(true) => break,
                InLayer::Absent(false) => continue,
            };
            if !md.is_dir() {
                break;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                break;
            };
            let mountless = crate::mountless::mountless();
            // A whiteout file deletes in the layers below its own only.
            let mut whiteout_files = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name();
                if mountless {
                    if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                        if name.as_bytes() != OPAQUE_MARKER.as_bytes() {
                            whiteout_files.push(OsString::from_vec(hidden.to_vec()));
                        }
                        continue;
                    }
                }
                if deleted.contains(&name) || out.contains_key(name.as_bytes()) {
                    continue;
                }
                match entry.metadata() {
                    Ok(m) if is_whiteout(&m) => {
                        deleted.insert(name);
                    }
                    Ok(_) => {
                        out.insert(name.clone().into_vec(), dir.join(&name));
                    }
                    Err(_) => {}
                }
            }
            deleted.extend(whiteout_files);
            if is_opaque(&dir) {
                break;
            }
        }
        out
    }
}

/// Whether two entries are the same for a layer diff, by containerd's rules (which BuildKit's
/// overlay differ uses): type and mode, owner, device, file capabilities; for non-directories
/// also size and mtime, and content when both mtimes are whole seconds (unpacked from a tar).
pub(crate) fn same_entry(
    lower: &Path,
    lower_md: &std::fs::Metadata,
    upper: &Path,
    upper_md: &std::fs::Metadata,
) -> bool {
    if lower_md.mode() != upper_md.mode()
        || lower_md.uid() != upper_md.uid()
        || lower_md.gid() != upper_md.gid()
        || lower_md.rdev() != upper_md.rdev()
        || capability(lower) != capability(upper)
    {
        return false;
    }
    if lower_md.is_dir() {
        return true;
    }
    if lower_md.len() != upper_md.len() || lower_md.mtime() != upper_md.mtime() {
        return false;
    }
    if lower_md.mtime_nsec() != 0 || upper_md.mtime_nsec() != 0 {
        return lower_md.mtime_nsec() == upper_md.mtime_nsec();
    }
    if lower_md.file_type().is_symlink() {
        return std::fs::read_link(lower).ok() == std::fs::read_link(upper).ok();
    }
    lower_md.len() == 0 || same_content(lower, upper)
}

fn capability(path: &Path) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = rustix::fs::lgetxattr(path, "security.capability", &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let (mut ra, mut rb) = (std::io::BufReader::new(fa), std::io::BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    loop {
        let (Ok(na), Ok(nb)) = (read_full(&mut ra, &mut ba), read_full(&mut rb, &mut bb)) else {
            return false;
        };
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}
