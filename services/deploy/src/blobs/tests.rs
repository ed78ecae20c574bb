//! The package store on a real file system: complete uploads land under
//! their digest, everything else leaves nothing behind.

use super::*;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use tokio::io::AsyncReadExt;

const MAX: u64 = 1024 * 1024;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), MAX).unwrap();
    (dir, store)
}

fn tmp_entries(root: &Path) -> usize {
    std::fs::read_dir(root.join("tmp")).unwrap().count()
}

/// Every regular file under `sha256/`.
fn stored_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for fan_out in std::fs::read_dir(root.join("sha256")).unwrap() {
        for entry in std::fs::read_dir(fan_out.unwrap().path()).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn package(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_good_upload_in_several_chunks_lands_under_its_digest_and_reads_back() {
    let (dir, store) = store();
    let data = package(10_000);
    let digest = sha256_hex(&data);

    let mut upload = store.begin(data.len() as u64, &digest).await.unwrap();
    for chunk in data.chunks(3_000) {
        upload.write(chunk).await.unwrap();
    }
    let stored = upload.finish().await.unwrap();

    assert_eq!(
        stored,
        StoredBlob {
            sha256_hex: digest.clone(),
            size: data.len() as u64,
            already_present: false,
        }
    );
    assert!(store.contains(&digest).await);
    let path = store.path_of(&digest).unwrap();
    assert_eq!(
        path,
        dir.path().join("sha256").join(&digest[..2]).join(&digest)
    );
    let mut read_back = Vec::new();
    store
        .open_read(&digest)
        .await
        .unwrap()
        .read_to_end(&mut read_back)
        .await
        .unwrap();
    assert_eq!(read_back, data);
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[tokio::test]
async fn a_second_upload_of_the_same_bytes_is_already_present_and_leaves_one_file() {
    let (dir, store) = store();
    let data = package(5_000);
    let digest = sha256_hex(&data);

    for expected_present in [false, true] {
        let mut upload = store.begin(data.len() as u64, &digest).await.unwrap();
        upload.write(&data).await.unwrap();
        assert_eq!(
            upload.finish().await.unwrap().already_present,
            expected_present
        );
    }

    assert_eq!(
        stored_files(dir.path()),
        vec![store.path_of(&digest).unwrap()]
    );
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[tokio::test]
async fn of_two_concurrent_uploads_of_the_same_bytes_exactly_one_stores_them() {
    let (dir, store) = store();
    let data = package(5_000);
    let digest = sha256_hex(&data);
    let upload_once = || async {
        let mut upload = store.begin(data.len() as u64, &digest).await.unwrap();
        upload.write(&data).await.unwrap();
        upload.finish().await.unwrap()
    };

    let (first, second) = tokio::join!(upload_once(), upload_once());

    assert_ne!(first.already_present, second.already_present);
    assert_eq!(stored_files(dir.path()).len(), 1);
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[tokio::test]
async fn more_bytes_than_declared_is_too_large_and_removes_the_temp_file_at_once() {
    let (dir, store) = store();
    let data = package(100);
    let mut upload = store.begin(99, &sha256_hex(&data[..99])).await.unwrap();
    upload.write(&data[..50]).await.unwrap();
    assert_eq!(tmp_entries(dir.path()), 1);

    let err = upload.write(&data[50..]).await.unwrap_err();

    assert!(matches!(err, BlobError::TooLarge), "{err:?}");
    assert_eq!(
        tmp_entries(dir.path()),
        0,
        "removed before the upload is dropped"
    );
    assert!(matches!(
        upload.write(&data[..1]).await,
        Err(BlobError::Io(_))
    ));
    assert!(matches!(upload.finish().await, Err(BlobError::Io(_))));
    assert!(stored_files(dir.path()).is_empty());
}

#[tokio::test]
async fn fewer_bytes_than_declared_is_truncated_and_leaves_nothing() {
    let (dir, store) = store();
    let data = package(1_000);
    let mut upload = store.begin(1_000, &sha256_hex(&data)).await.unwrap();
    upload.write(&data[..600]).await.unwrap();

    let err = upload.finish().await.unwrap_err();

    assert!(
        matches!(
            err,
            BlobError::Truncated {
                expected: 1_000,
                received: 600
            }
        ),
        "{err:?}"
    );
    assert_eq!(tmp_entries(dir.path()), 0);
    assert!(stored_files(dir.path()).is_empty());
}

#[tokio::test]
async fn the_wrong_hash_is_a_mismatch_and_stores_nothing() {
    let (dir, store) = store();
    let data = package(1_000);
    let claimed = sha256_hex(b"something else");
    let mut upload = store.begin(1_000, &claimed).await.unwrap();
    upload.write(&data).await.unwrap();

    let err = upload.finish().await.unwrap_err();

    assert!(matches!(err, BlobError::HashMismatch), "{err:?}");
    assert!(!store.contains(&claimed).await);
    assert!(!store.contains(&sha256_hex(&data)).await);
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[tokio::test]
async fn dropping_an_upload_midway_leaves_tmp_empty() {
    let (dir, store) = store();
    let data = package(1_000);
    let mut upload = store.begin(1_000, &sha256_hex(&data)).await.unwrap();
    upload.write(&data[..400]).await.unwrap();
    assert_eq!(tmp_entries(dir.path()), 1);

    drop(upload);

    assert_eq!(tmp_entries(dir.path()), 0);
    assert!(stored_files(dir.path()).is_empty());
}

#[tokio::test]
async fn open_sweeps_leftovers_from_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), MAX).unwrap();
    let data = package(100);
    let digest = sha256_hex(&data);
    let mut kept = store.begin(100, &digest).await.unwrap();
    kept.write(&data).await.unwrap();
    kept.finish().await.unwrap();
    // A crash long ago left a temporary file (and, say, a stray
    // directory); another replica's upload is in progress right now.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let crashed = dir.path().join("tmp/crashed.part");
    std::fs::write(&crashed, b"half").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&crashed)
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::create_dir(dir.path().join("tmp/stray")).unwrap();
    std::fs::write(dir.path().join("tmp/stray/inner"), b"x").unwrap();
    std::fs::File::open(dir.path().join("tmp/stray"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::write(dir.path().join("tmp/in-progress.part"), b"fresh").unwrap();

    let reopened = BlobStore::open(dir.path(), MAX).unwrap();

    assert_eq!(tmp_entries(dir.path()), 1, "only the fresh upload is left");
    assert!(reopened.contains(&digest).await, "stored blobs are kept");
}

#[tokio::test]
async fn invalid_digests_and_sizes_are_refused() {
    let (dir, store) = store();
    let good = sha256_hex(b"x");
    let bad_digests = [
        good.to_uppercase(),
        good[..63].to_owned(),
        format!("{good}0"),
        format!("{}g", &good[..63]),
        format!(" {}", &good[..63]),
        String::new(),
    ];
    for digest in &bad_digests {
        assert!(
            matches!(
                validate_expected(1, digest, MAX),
                Err(BlobError::InvalidDigest)
            ),
            "{digest:?}"
        );
        assert!(
            matches!(store.begin(1, digest).await, Err(BlobError::InvalidDigest)),
            "{digest:?}"
        );
    }
    for size in [0, MAX + 1, u64::MAX] {
        assert!(
            matches!(
                validate_expected(size, &good, MAX),
                Err(BlobError::InvalidSize)
            ),
            "{size}"
        );
        assert!(
            matches!(store.begin(size, &good).await, Err(BlobError::InvalidSize)),
            "{size}"
        );
    }
    assert!(validate_expected(1, &good, MAX).is_ok());
    assert_eq!(
        validate_expected(MAX, &good, MAX).unwrap().to_vec(),
        Sha256::digest(b"x").to_vec()
    );
    assert_eq!(
        tmp_entries(dir.path()),
        0,
        "a refused upload creates no file"
    );
}

#[tokio::test]
async fn empty_and_oversized_chunks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), DEFAULT_MAX_PACKAGE_BYTES).unwrap();
    let data = package(MAX_CHUNK_BYTES + 1);
    let mut upload = store
        .begin(data.len() as u64, &sha256_hex(&data))
        .await
        .unwrap();

    assert!(matches!(
        upload.write(&[]).await,
        Err(BlobError::EmptyChunk)
    ));
    assert!(matches!(
        upload.write(&data).await,
        Err(BlobError::ChunkTooLarge)
    ));
    // Neither counted, so the upload can still complete.
    upload.write(&data[..MAX_CHUNK_BYTES]).await.unwrap();
    upload.write(&data[MAX_CHUNK_BYTES..]).await.unwrap();
    assert!(!upload.finish().await.unwrap().already_present);
}

#[test]
fn path_of_refuses_path_like_input() {
    let (_dir, store) = store();
    let good = sha256_hex(b"x");
    for input in [
        "../x".to_owned(),
        format!("../{}", &good[3..]),
        format!("{}/{}", &good[..2], &good[3..]),
        "x".repeat(64),
        String::new(),
    ] {
        assert_eq!(store.path_of(&input), None, "{input:?}");
    }
    assert!(store.path_of(&good).is_some());
}

#[tokio::test]
async fn remove_deletes_a_stored_blob_and_reports_a_missing_one() {
    let (dir, store) = store();
    let data = package(100);
    let digest = sha256_hex(&data);
    let mut upload = store.begin(100, &digest).await.unwrap();
    upload.write(&data).await.unwrap();
    upload.finish().await.unwrap();

    store.remove(&digest).await.unwrap();

    assert!(!store.contains(&digest).await);
    assert!(stored_files(dir.path()).is_empty());
    assert!(matches!(
        store.remove(&digest).await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        store.open_read(&digest).await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        store.remove("../x").await,
        Err(BlobError::InvalidDigest)
    ));
}

#[tokio::test]
async fn directories_are_0700_and_files_0600() {
    let (dir, store) = store();
    let data = package(100);
    let digest = sha256_hex(&data);
    let mut upload = store.begin(100, &digest).await.unwrap();
    upload.write(&data).await.unwrap();
    let temp = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(mode(&temp), 0o600);
    upload.finish().await.unwrap();

    assert_eq!(mode(&dir.path().join("tmp")), 0o700);
    assert_eq!(mode(&dir.path().join("sha256")), 0o700);
    assert_eq!(mode(&dir.path().join("sha256").join(&digest[..2])), 0o700);
    assert_eq!(mode(&store.path_of(&digest).unwrap()), 0o600);
}

#[test]
fn errors_name_the_field_to_fix_and_no_path() {
    let cases = [
        (BlobError::InvalidSize, Some("size")),
        (BlobError::TooLarge, Some("size")),
        (
            BlobError::Truncated {
                expected: 2,
                received: 1,
            },
            Some("size"),
        ),
        (BlobError::InvalidDigest, Some("sha256")),
        (BlobError::HashMismatch, Some("sha256")),
        (BlobError::EmptyChunk, Some("chunk")),
        (BlobError::ChunkTooLarge, Some("chunk")),
        (BlobError::NotFound, None),
        (
            BlobError::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "/srv/padlock/tmp/x.part",
            )),
            None,
        ),
    ];
    for (err, field) in cases {
        assert_eq!(err.field(), field, "{err:?}");
        assert!(!err.to_string().contains('/'), "{err}");
    }
}

#[test]
fn a_zero_size_limit_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let err = BlobStore::open(dir.path(), 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
