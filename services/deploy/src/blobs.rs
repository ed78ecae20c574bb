//! Content-addressed storage for deployment packages (MDA archives). A file
//! appears under its final name, `sha256/ab/abcdef…`, only once it is
//! complete, its size and SHA-256 match what the client declared, and it is
//! on disk; everything before that lives in `tmp/` and is removed when the
//! upload fails, is cut off, or is found on the next start after a crash.
//!
//! One process owns a store root: `BlobStore::open` empties `tmp/`, so it
//! must not run while another process is uploading into the same root.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Largest package accepted unless the operator configures another limit.
/// MDA archives are usually tens of MiB; 512 MiB leaves room for large apps
/// while bounding the disk one upload can take.
pub const DEFAULT_MAX_PACKAGE_BYTES: u64 = 512 * 1024 * 1024;

/// Largest chunk accepted in one `UploadPackageRequest`. The gRPC server
/// already caps message size, which bounds memory per upload; the store
/// checks again so that bound does not hinge on the transport's settings.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Length of a SHA-256 digest in lowercase hex.
const DIGEST_HEX_LEN: usize = 64;

/// Only the owning service user may list or read stored packages.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Why a blob operation failed. Messages are written for the client and
/// never contain paths; `Io` keeps the underlying error as its `source()`
/// for the logs.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("size must be at least one byte and within the package size limit")]
    InvalidSize,
    #[error("sha256 must be exactly 64 lowercase hexadecimal characters")]
    InvalidDigest,
    #[error("chunk must not be empty")]
    EmptyChunk,
    #[error("chunk must be at most {} bytes", MAX_CHUNK_BYTES)]
    ChunkTooLarge,
    #[error("the upload sent more bytes than the declared size")]
    TooLarge,
    #[error("the upload ended after {received} of the {expected} declared bytes")]
    Truncated { expected: u64, received: u64 },
    #[error("the uploaded bytes do not match the declared sha256")]
    HashMismatch,
    #[error("no package with that sha256 is stored")]
    NotFound,
    #[error("package storage failed")]
    Io(#[from] io::Error),
}

impl BlobError {
    /// The request field a client got wrong, for a `BadRequest` field
    /// violation; `None` when the fault is not the client's.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            BlobError::InvalidSize | BlobError::TooLarge | BlobError::Truncated { .. } => {
                Some("size")
            }
            BlobError::InvalidDigest | BlobError::HashMismatch => Some("sha256"),
            BlobError::EmptyChunk | BlobError::ChunkTooLarge => Some("chunk"),
            BlobError::NotFound | BlobError::Io(_) => None,
        }
    }
}

/// A blob that is now stored under its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub sha256_hex: String,
    pub size: u64,
    /// The same bytes were already stored (by an earlier or concurrent
    /// upload); this upload's copy was dropped.
    pub already_present: bool,
}

/// Checks an upload's declared size and digest before any byte is written,
/// returning the digest as bytes.
pub fn validate_expected(
    size: u64,
    sha256_hex: &str,
    max_bytes: u64,
) -> Result<[u8; 32], BlobError> {
    if size == 0 || size > max_bytes {
        return Err(BlobError::InvalidSize);
    }
    parse_digest(sha256_hex).ok_or(BlobError::InvalidDigest)
}

/// Accepts exactly 64 lowercase hex characters, so one digest has one name
/// and nothing path-like can reach the file system.
fn parse_digest(sha256_hex: &str) -> Option<[u8; 32]> {
    let well_formed = sha256_hex.len() == DIGEST_HEX_LEN
        && sha256_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return None;
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(sha256_hex, &mut digest).ok()?;
    Some(digest)
}

/// The package store under one root directory:
/// `tmp/` for uploads in progress, `sha256/ab/abcdef…` for stored blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    tmp: PathBuf,
    blobs: PathBuf,
    max_bytes: u64,
}

impl BlobStore {
    /// Opens (creating if needed) the store at `root` and removes whatever a
    /// crashed run left in `tmp/`. Packages larger than `max_bytes` are
    /// refused.
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<BlobStore> {
        if max_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the package size limit must be at least one byte",
            ));
        }
        let tmp = root.join("tmp");
        let blobs = root.join("sha256");
        for dir in [&tmp, &blobs] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)?;
        }
        let swept = sweep(&tmp)?;
        if swept > 0 {
            tracing::warn!(
                count = swept,
                dir = %tmp.display(),
                "removed unfinished uploads left by an earlier run"
            );
        }
        Ok(BlobStore {
            tmp,
            blobs,
            max_bytes,
        })
    }

    /// The largest package this store accepts.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where the blob with this digest lives (whether or not it exists);
    /// `None` unless the digest is 64 lowercase hex characters.
    pub fn path_of(&self, sha256_hex: &str) -> Option<PathBuf> {
        parse_digest(sha256_hex)?;
        Some(self.blobs.join(&sha256_hex[..2]).join(sha256_hex))
    }

    pub async fn contains(&self, sha256_hex: &str) -> bool {
        match self.path_of(sha256_hex) {
            Some(path) => tokio::fs::metadata(path)
                .await
                .is_ok_and(|meta| meta.is_file()),
            None => false,
        }
    }

    pub async fn open_read(&self, sha256_hex: &str) -> Result<tokio::fs::File, BlobError> {
        let path = self.path_of(sha256_hex).ok_or(BlobError::InvalidDigest)?;
        tokio::fs::File::open(path).await.map_err(not_found)
    }

    /// Deletes a stored blob, for a caller undoing an upload whose database
    /// row could not be written. The caller must make sure no other row
    /// refers to the same digest. `NotFound` if nothing was stored.
    pub async fn remove(&self, sha256_hex: &str) -> Result<(), BlobError> {
        let path = self.path_of(sha256_hex).ok_or(BlobError::InvalidDigest)?;
        tokio::fs::remove_file(path).await.map_err(not_found)
    }

    /// Starts an upload of `expected_size` bytes hashing to
    /// `expected_sha256_hex`, into a new temporary file.
    pub async fn begin(
        &self,
        expected_size: u64,
        expected_sha256_hex: &str,
    ) -> Result<Upload, BlobError> {
        let expected_digest =
            validate_expected(expected_size, expected_sha256_hex, self.max_bytes)?;
        let final_path = self
            .path_of(expected_sha256_hex)
            .ok_or(BlobError::InvalidDigest)?;
        let (file, temp) =
            TempFile::create(self.tmp.join(format!("{}.part", uuid::Uuid::new_v4()))).await?;
        Ok(Upload {
            file,
            temp,
            final_path,
            expected_size,
            expected_digest,
            received: 0,
            hasher: Sha256::new(),
            broken: false,
        })
    }
}

/// Removes every entry in `dir`, returning how many there were.
/// Leftovers older than this are from a crashed run; younger ones may be
/// uploads in progress in another replica sharing the directory.
pub const STALE_UPLOAD: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Removes entries of `dir` last modified more than [`STALE_UPLOAD`] ago.
fn sweep(dir: &Path) -> io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
        if age < STALE_UPLOAD {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
        count += 1;
    }
    Ok(count)
}

fn not_found(err: io::Error) -> BlobError {
    if err.kind() == io::ErrorKind::NotFound {
        BlobError::NotFound
    } else {
        BlobError::Io(err)
    }
}

/// Makes a directory's entries (a new name, a new subdirectory) durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// An upload in progress. Dropping it before `finish` succeeds (an error, a
/// client that went away) removes its temporary file.
pub struct Upload {
    file: tokio::fs::File,
    temp: TempFile,
    final_path: PathBuf,
    expected_size: u64,
    expected_digest: [u8; 32],
    received: u64,
    hasher: Sha256,
    /// A write failed or was cancelled half-way, so the file may no longer
    /// hold exactly the bytes hashed so far; nothing more is accepted.
    broken: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("expected_sha256", &hex::encode(self.expected_digest))
            .field("expected_size", &self.expected_size)
            .field("received", &self.received)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// Appends one chunk. Sending more than the declared size fails with
    /// `TooLarge` and discards the upload at once.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.ensure_intact()?;
        if chunk.is_empty() {
            return Err(BlobError::EmptyChunk);
        }
        if chunk.len() > MAX_CHUNK_BYTES {
            return Err(BlobError::ChunkTooLarge);
        }
        let total = self.received.saturating_add(chunk.len() as u64);
        if total > self.expected_size {
            self.broken = true;
            if let Err(err) = self.temp.discard().await {
                tracing::warn!(error = %err, "could not remove an oversized upload; retrying on drop");
            }
            return Err(BlobError::TooLarge);
        }
        // Stays set if this future is dropped during the write.
        self.broken = true;
        self.file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.received = total;
        self.broken = false;
        Ok(())
    }

    /// Checks size and digest, makes the file durable and moves it under its
    /// digest. On any error the temporary file is removed.
    pub async fn finish(mut self) -> Result<StoredBlob, BlobError> {
        self.ensure_intact()?;
        if self.received < self.expected_size {
            self.temp.discard().await?;
            return Err(BlobError::Truncated {
                expected: self.expected_size,
                received: self.received,
            });
        }
        let Upload {
            mut file,
            mut temp,
            final_path,
            expected_size,
            expected_digest,
            hasher,
            ..
        } = self;
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != expected_digest {
            temp.discard().await?;
            return Err(BlobError::HashMismatch);
        }

        // tokio writes in the background: flush surfaces their errors.
        file.flush().await?;
        file.sync_all().await?;
        drop(file);

        let fan_out = final_path
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent directory"))?;
        match tokio::fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(fan_out)
            .await
        {
            Ok(()) => {
                if let Some(blobs) = fan_out.parent() {
                    sync_dir(blobs).await?;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err.into()),
        }

        // A hard link, unlike rename, never replaces an existing name, so of
        // several uploads of the same bytes exactly one reports it stored
        // them; the others see `already_present`.
        let temp_path = temp
            .path()
            .ok_or_else(|| io::Error::other("temporary file already removed"))?;
        let already_present = match tokio::fs::hard_link(temp_path, &final_path).await {
            Ok(()) => false,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => true,
            Err(err) => return Err(err.into()),
        };
        if let Err(err) = temp.discard().await {
            // The blob is stored; a stray temporary name is not worth failing
            // the upload for. Drop tries again, and so does the next start.
            tracing::warn!(error = %err, "could not remove a finished upload's temporary file");
        }
        sync_dir(fan_out).await?;

        Ok(StoredBlob {
            sha256_hex: hex::encode(digest),
            size: expected_size,
            already_present,
        })
    }

    fn ensure_intact(&self) -> Result<(), BlobError> {
        if self.broken {
            return Err(
                io::Error::other("the upload was abandoned after an earlier failure").into(),
            );
        }
        Ok(())
    }
}

/// Owns a temporary file's name and removes it when dropped, including when
/// the future creating it is cancelled before the file exists.
struct TempFile {
    path: Option<PathBuf>,
    /// Set once the name is given up, so a creation still running on the
    /// blocking pool removes the file it made.
    abandoned: Arc<AtomicBool>,
}

impl TempFile {
    async fn create(path: PathBuf) -> io::Result<(tokio::fs::File, TempFile)> {
        let abandoned = Arc::new(AtomicBool::new(false));
        let guard = TempFile {
            path: Some(path.clone()),
            abandoned: Arc::clone(&abandoned),
        };
        // If this future is dropped while the file is being created, either
        // the closure sees `abandoned` and removes the file, or the guard's
        // drop ran after the file existed and removed it.
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)?;
            if abandoned.load(Ordering::SeqCst) {
                let _ = std::fs::remove_file(&path);
            }
            Ok::<_, io::Error>(file)
        })
        .await
        .map_err(io::Error::other)??;
        Ok((tokio::fs::File::from_std(file), guard))
    }

    fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Removes the file now. On failure the name is kept, so drop retries.
    async fn discard(&mut self) -> io::Result<()> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        self.abandoned.store(true, Ordering::SeqCst);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => {
                self.path = Some(path);
                Err(err)
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        self.abandoned.store(true, Ordering::SeqCst);
        // Synchronous, since drop cannot await; unlinking one file is quick.
        if let Err(err) = std::fs::remove_file(&path)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, file = %path.display(), "could not remove an unfinished upload");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
