//! Which registry repositories are known to hold a blob (like containerd's
//! `distribution.source` labels), so a push can mount it from a sibling repository instead of
//! uploading it. Kept as small text files next to the blobs:
//! `ROOT/content/distribution-sources/<hex>`, one `registry/repository` per line.

use std::io::Write as _;
use std::path::PathBuf;

use snapshotter::ContentStore;

/// At most this many sources are remembered per blob (newest kept).
const MAX_SOURCES: usize = 16;

fn sources_path(content: &ContentStore, digest: &str) -> Option<PathBuf> {
    let hex = oci::sha256_hex(digest).ok()?;
    // blob_path = ROOT/content/blobs/sha256/<hex>
    let content_dir = content
        .blob_path(digest)
        .parent()?
        .parent()?
        .parent()?
        .to_path_buf();
    Some(content_dir.join("distribution-sources").join(hex))
}

/// A repository known to hold a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobSource {
    /// Registry host, e.g. `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path on that registry, e.g. `library/busybox`.
    pub repository: String,
}

/// The repositories known to hold `digest`, oldest first.
pub fn known_sources(content: &ContentStore, digest: &str) -> Vec<BlobSource> {
    let Some(path) = sources_path(content, digest) else {
        return Vec::new();
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (registry, repository) = line.split_once('/')?;
            Some(BlobSource {
                registry: registry.to_string(),
                repository: repository.to_string(),
            })
        })
        .collect()
}

/// Remembers that `registry/repository` holds `digest`. Best effort: a failure only costs
/// a future upload.
pub fn record_source(content: &ContentStore, digest: &str, registry: &str, repository: &str) {
    let Some(path) = sources_path(content, digest) else {
        return;
    };
    let line = format!("{registry}/{repository}");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|existing| *existing != line)
        .map(str::to_string)
        .collect();
    lines.push(line);
    let skip = lines.len().saturating_sub(MAX_SOURCES);
    let text: String = lines[skip..].iter().map(|l| format!("{l}\n")).collect();
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // Write-then-rename so concurrent readers never see half a file.
    let temp = dir.join(format!(
        ".{}.{}.{:?}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        std::process::id(),
        std::thread::current().id()
    ));
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_lists_sources() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path()).unwrap();
        let digest = content.put_bytes(b"layer").unwrap();
        assert!(known_sources(&content, &digest).is_empty());
        record_source(&content, &digest, "127.0.0.1:5000", "a/b");
        record_source(&content, &digest, "127.0.0.1:5000", "c");
        record_source(&content, &digest, "127.0.0.1:5000", "a/b");
        assert_eq!(
            known_sources(&content, &digest),
            ["c", "a/b"].map(|repository| BlobSource {
                registry: "127.0.0.1:5000".to_string(),
                repository: repository.to_string(),
            })
        );
        assert!(known_sources(&content, "sha256:../../x").is_empty());
        // The blob listing is unaffected.
        assert_eq!(content.list().unwrap().len(), 1);
    }
}
