//! One upload in progress: its temporary file (removed on every way out
//! but success), the running size and hash, and the move under its digest
//! once both match what the client declared.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{BlobError, DIR_MODE, FILE_MODE, MAX_CHUNK_BYTES, StoredBlob};

/// Makes a directory's entries (a new name, a new subdirectory) durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// An upload in progress. Dropping it before `finish` succeeds (an error, a
/// client that went away) removes its temporary file.
pub(crate) struct Upload {
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
    pub(super) fn new(
        file: tokio::fs::File,
        temp: TempFile,
        final_path: PathBuf,
        expected_size: u64,
        expected_digest: [u8; 32],
    ) -> Self {
        Upload {
            file,
            temp,
            final_path,
            expected_size,
            expected_digest,
            received: 0,
            hasher: Sha256::new(),
            broken: false,
        }
    }

    /// Appends one chunk. Sending more than the declared size fails with
    /// `TooLarge` and discards the upload at once.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
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
    pub(crate) async fn finish(mut self) -> Result<StoredBlob, BlobError> {
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
pub(super) struct TempFile {
    path: Option<PathBuf>,
    /// Set once the name is given up, so a creation still running on the
    /// blocking pool removes the file it made.
    abandoned: Arc<AtomicBool>,
}

impl TempFile {
    pub(super) async fn create(path: PathBuf) -> io::Result<(tokio::fs::File, TempFile)> {
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
