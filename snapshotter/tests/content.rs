use std::io::Write;

use sha2::{Digest, Sha256};
use snapshotter::{ContentStore, Error};

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[test]
fn put_read_list_delete_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path()).unwrap();
    let digest = store.put_bytes(b"hello layer").unwrap();
    assert_eq!(digest, digest_of(b"hello layer"));
    assert!(store.has(&digest));
    assert_eq!(store.read_blob(&digest).unwrap(), b"hello layer");
    assert_eq!(
        store.blob_path(&digest),
        root.path()
            .join("content/blobs/sha256")
            .join(&digest["sha256:".len()..])
    );
    assert_eq!(store.list().unwrap(), vec![(digest.clone(), 11)]);

    // Storing the same bytes again is a no-op.
    assert_eq!(store.put_bytes(b"hello layer").unwrap(), digest);
    assert_eq!(store.list().unwrap().len(), 1);

    store.delete(&digest).unwrap();
    assert!(!store.has(&digest));
    assert!(matches!(store.delete(&digest), Err(Error::NotFound(_))));
    assert!(matches!(store.read_blob(&digest), Err(Error::NotFound(_))));
}

#[test]
fn writer_streams_and_verifies_expected_digest() {
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path()).unwrap();
    let data = vec![7u8; 3 * 1024 * 1024];
    let mut writer = store.writer().unwrap();
    for chunk in data.chunks(100_000) {
        writer.write_all(chunk).unwrap();
    }
    let expected = digest_of(&data);
    let (digest, size) = writer.commit(Some(&expected)).unwrap();
    assert_eq!(
        (digest.as_str(), size),
        (expected.as_str(), data.len() as u64)
    );
}

#[test]
fn digest_mismatch_is_rejected_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path()).unwrap();
    let mut writer = store.writer().unwrap();
    writer.write_all(b"actual bytes").unwrap();
    let wrong = digest_of(b"other bytes");
    let err = writer.commit(Some(&wrong)).unwrap_err();
    assert!(
        matches!(err, Error::Invalid(ref m) if m.contains("mismatch")),
        "{err}"
    );
    assert!(!store.has(&wrong));
    assert!(!store.has(&digest_of(b"actual bytes")));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(root.path().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn dropped_writer_leaves_no_partial_blob() {
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path()).unwrap();
    let mut writer = store.writer().unwrap();
    writer.write_all(b"half a layer").unwrap();
    drop(writer);
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(root.path().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn concurrent_writers_of_the_same_blob_agree() {
    let root = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = digest_of(&data);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                // Separate handles, as separate processes would have.
                let store = ContentStore::open(root.path()).unwrap();
                let mut writer = store.writer().unwrap();
                for chunk in data.chunks(65536) {
                    writer.write_all(chunk).unwrap();
                }
                let (digest, _) = writer.commit(Some(&expected)).unwrap();
                assert_eq!(digest, expected);
            });
        }
    });
    let store = ContentStore::open(root.path()).unwrap();
    assert_eq!(
        store.list().unwrap(),
        vec![(expected.clone(), data.len() as u64)]
    );
    assert_eq!(store.read_blob(&expected).unwrap(), data);
    assert_eq!(
        std::fs::read_dir(root.path().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn malformed_digests_are_errors_not_paths() {
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path()).unwrap();
    for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC", ""] {
        assert!(!store.has(bad));
        assert!(
            matches!(store.read_blob(bad), Err(Error::Invalid(_))),
            "{bad}"
        );
        assert!(matches!(store.delete(bad), Err(Error::Invalid(_))), "{bad}");
        assert!(store
            .blob_path(bad)
            .starts_with(root.path().join("content/blobs/sha256")));
    }
}
