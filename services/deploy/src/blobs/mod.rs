//! Content-addressed storage for deployment packages (MDA archives). A file
//! appears under its final name, `sha256/ab/abcdef…`, only once it is
//! complete, its size and SHA-256 match what the client declared, and it is
//! on disk; everything before that lives in `tmp/` and is removed when the
//! upload fails, is cut off, or is found on the next start after a crash.
//!
//! One process owns a store root: `BlobStore::open` empties `tmp/`, so it
//! must not run while another process is uploading into the same root.

mod upload;

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use upload::TempFile;
pub(crate) use upload::Upload;

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

    /// Where the blob with this digest lives (whether or not it exists);
    /// `None` unless the digest is 64 lowercase hex characters.
    pub fn path_of(&self, sha256_hex: &str) -> Option<PathBuf> {
        parse_digest(sha256_hex)?;
        Some(self.blobs.join(&sha256_hex[..2]).join(sha256_hex))
    }

    #[cfg(test)]
    pub async fn contains(&self, sha256_hex: &str) -> bool {
        match self.path_of(sha256_hex) {
            Some(path) => tokio::fs::metadata(path)
                .await
                .is_ok_and(|meta| meta.is_file()),
            None => false,
        }
    }

    #[cfg(test)]
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
        Ok(Upload::new(
            file,
            temp,
            final_path,
            expected_size,
            expected_digest,
        ))
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

#[cfg(test)]
mod tests;
