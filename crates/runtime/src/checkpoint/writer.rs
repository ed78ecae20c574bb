//! Writing checkpoints: the append-only file, the flags that configure it,
//! and the task that checkpoints a running service's chain at start, on a
//! timer and at shutdown.

use super::*;

// ---------------------------------------------------------------- writing

/// A checkpoint file, opened for appending only.
#[derive(Debug)]
pub struct CheckpointLog {
    pub(super) file: File,
    pub(super) path: PathBuf,
}

impl CheckpointLog {
    /// Opens (or creates, 0600) `path` for appending. A last line cut
    /// short by a crash is ended first, so the next checkpoint starts a
    /// line of its own; returns whether that was needed.
    pub fn open(path: &Path) -> Result<(Self, bool), CheckpointError> {
        create_private_dir(parent(path))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(path)
            .map_err(|e| CheckpointError::io(path, e))?;
        let mut log = CheckpointLog {
            file,
            path: path.to_owned(),
        };
        let len = log
            .file
            .metadata()
            .map_err(|e| CheckpointError::io(path, e))?
            .len();
        let mut last = [0u8];
        let torn = len > 0 && {
            log.file
                .read_exact_at(&mut last, len - 1)
                .map_err(|e| CheckpointError::io(path, e))?;
            last[0] != b'\n'
        };
        if torn {
            log.write(b"\n")?;
        }
        Ok((log, torn))
    }

    /// Appends `signed` as one line, in one write, and flushes it to disk.
    pub fn append(&mut self, signed: &Signed) -> Result<(), CheckpointError> {
        let mut line = signed.to_line().into_bytes();
        line.push(b'\n');
        self.write(&line)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| CheckpointError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

// ---------------------------------------------------------------- configuration

/// The checkpoint flags both services take (docs/operations.md "Audit trail").
#[derive(Debug, Clone, clap::Args)]
pub struct CheckpointArgs {
    /// The file this service appends signed checkpoints of its audit
    /// trail's head to (one JSON line each); `audit verify` reads it.
    /// Default: `<data-dir>/audit-checkpoints`.
    #[arg(long, env = "PADLOCK_AUDIT_CHECKPOINTS", global = true)]
    pub audit_checkpoints: Option<PathBuf>,
    /// The Ed25519 key (PKCS#8 PEM) that signs the checkpoints. Default:
    /// `<data-dir>/audit-checkpoint.key`, generated on first start (0600).
    #[arg(long, env = "PADLOCK_AUDIT_CHECKPOINT_KEY", global = true)]
    pub audit_checkpoint_key: Option<PathBuf>,
    /// Seconds between checkpoints while the audit trail grows (one is also
    /// written at start and at shutdown).
    #[arg(
        long,
        env = "PADLOCK_AUDIT_CHECKPOINT_INTERVAL",
        default_value_t = DEFAULT_INTERVAL.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub audit_checkpoint_interval: u64,
}

impl CheckpointArgs {
    /// The settings, defaults resolved against `data_dir`.
    pub fn config(&self, data_dir: &Path) -> CheckpointConfig {
        CheckpointConfig {
            file: self
                .audit_checkpoints
                .clone()
                .unwrap_or_else(|| data_dir.join(DEFAULT_FILE)),
            key_file: self
                .audit_checkpoint_key
                .clone()
                .unwrap_or_else(|| data_dir.join(DEFAULT_KEY_FILE)),
            key_format: Arc::new(ClearPem),
            interval: Duration::from_secs(self.audit_checkpoint_interval),
        }
    }
}

/// Where a service's checkpoints and key are, and how often it writes.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub file: PathBuf,
    pub key_file: PathBuf,
    /// How the key file is kept at rest (default [`ClearPem`]).
    pub key_format: Arc<dyn KeyFormat>,
    pub interval: Duration,
}

impl CheckpointConfig {
    /// Defaults, in `data_dir`.
    pub fn in_dir(data_dir: &Path) -> Self {
        CheckpointConfig {
            file: data_dir.join(DEFAULT_FILE),
            key_file: data_dir.join(DEFAULT_KEY_FILE),
            key_format: Arc::new(ClearPem),
            interval: DEFAULT_INTERVAL,
        }
    }
}

// ---------------------------------------------------------------- the writer

/// What the chain lost since the previous checkpoint, found when writing
/// the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The chain is shorter than the previous checkpoint saw.
    Truncated { end: i64, seen: i64 },
    /// The record at the previous checkpoint's position has another hash.
    Rewritten { seq: i64 },
}

/// A checkpoint written, and anything lost since the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub signed: Signed,
    pub loss: Option<Loss>,
}

/// Writes checkpoints of one trail: reads the head on a connection of its
/// own, signs, appends, logs.
#[derive(Debug)]
pub struct Checkpointer {
    pub(super) conn: DatabaseConnection,
    pub(super) trail: Trail,
    pub(super) key: Arc<CheckpointKey>,
    pub(super) log: Arc<Mutex<CheckpointLog>>,
    pub(super) clock: SharedClock,
    pub(super) instance: String,
    /// The head the last checkpoint saw (this process's, or the last one
    /// in the file at start).
    pub(super) last: Option<Link>,
}

impl Checkpointer {
    /// Opens the key (generating it if needed), the file and a connection
    /// of its own to the database at `url`, and logs the public key. The
    /// first checkpoint is the caller's to write ([`Checkpointer::spawn`]
    /// writes it at once).
    pub async fn open(
        url: &str,
        trail: Trail,
        config: &CheckpointConfig,
        clock: SharedClock,
    ) -> Result<Self, CheckpointError> {
        let (key, generated) =
            CheckpointKey::load_or_generate(&config.key_file, &*config.key_format)?;
        let public = key.public();
        tracing::info!(
            key = %public,
            path = %config.key_file.display(),
            generated,
            "audit checkpoint key (pin it: `audit verify --checkpoint-public-key`)"
        );
        let (log, torn) = CheckpointLog::open(&config.file)?;
        if torn {
            tracing::warn!(
                path = %config.file.display(),
                "the checkpoint file ended in a line cut short (a crash during a write?); \
                 ended it, the lines before it stand"
            );
        }
        let last = match last_checkpoint(&config.file, &trail.name(), &public) {
            Ok(last) => last.map(|s| s.checkpoint.head),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last checkpoint");
                None
            }
        };
        let mut options = crate::db::connect_options(url);
        options.max_connections(1).min_connections(0);
        let conn = crate::db::connect(options)
            .await
            .map_err(CheckpointError::Db)?;
        Ok(Checkpointer {
            conn,
            trail,
            key: Arc::new(key),
            log: Arc::new(Mutex::new(log)),
            clock,
            instance: instance_name(),
            last,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Reads the head and writes a checkpoint of it; at [`Reason::Timer`]
    /// only if it moved since the last one (`Ok(None)` otherwise). Logs an
    /// error if the chain lost records the last checkpoint saw, and
    /// checkpoints what is there all the same: the file keeps the earlier
    /// checkpoint, and `audit verify` reports the loss.
    pub async fn checkpoint(&mut self, reason: Reason) -> Result<Option<Written>, CheckpointError> {
        let head = audit::head_of(&self.conn, self.trail.table)
            .await
            .map_err(CheckpointError::Db)?;
        if reason == Reason::Timer && self.last == Some(head) {
            return Ok(None);
        }
        let loss = match self.last {
            Some(last) if last != head => self.loss_since(last, head).await?,
            _ => None,
        };
        if let Some(loss) = loss {
            match loss {
                Loss::Truncated { end, seen } => tracing::error!(
                    end,
                    seen,
                    "the audit trail is shorter than the last checkpoint saw: records were \
                     deleted; run `audit verify`"
                ),
                Loss::Rewritten { seq } => tracing::error!(
                    seq,
                    "the audit record at the last checkpoint's position has another hash: the \
                     trail was rewritten; run `audit verify`"
                ),
            }
        }
        let signed = Checkpoint {
            chain: self.trail.name(),
            head,
            at: self
                .clock
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            instance: self.instance.clone(),
            reason: reason.as_str().to_owned(),
        }
        .sign(&self.key);
        let log = self.log.clone();
        let line = signed.clone();
        // A write and an fsync: off the runtime's worker threads.
        tokio::task::spawn_blocking(move || match log.lock() {
            Ok(mut log) => log.append(&line),
            Err(_) => Err(CheckpointError::Poisoned),
        })
        .await
        .map_err(|_| CheckpointError::Poisoned)??;
        signed.log();
        self.last = Some(head);
        Ok(Some(Written { signed, loss }))
    }

    pub(super) async fn loss_since(
        &self,
        last: Link,
        head: Link,
    ) -> Result<Option<Loss>, CheckpointError> {
        if head.seq < last.seq {
            return Ok(Some(Loss::Truncated {
                end: head.seq,
                seen: last.seq,
            }));
        }
        if last.seq == 0 {
            return Ok(None);
        }
        let found = audit::hashes_at(&self.conn, self.trail.table, &[last.seq])
            .await
            .map_err(CheckpointError::Db)?;
        Ok(match found.get(&last.seq) {
            Some(Some(hash)) if *hash == last.hash => None,
            _ => Some(Loss::Rewritten { seq: last.seq }),
        })
    }

    /// Writes the start checkpoint, then runs the timer in a task of its
    /// own until [`Running::finish`], which writes the shutdown
    /// checkpoint. A failure to write is logged, and tried again at the
    /// next tick.
    pub async fn spawn(mut self, interval: Duration) -> Result<Running, CheckpointError> {
        self.checkpoint(Reason::Start).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is now: the start checkpoint was just written.
            timer.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = timer.tick() => {
                        if let Err(e) = self.checkpoint(Reason::Timer).await {
                            tracing::warn!(error = %e, "audit checkpoint failed; trying again at the next tick");
                        }
                    }
                }
            }
            self
        });
        Ok(Running {
            stop: Some(stop),
            task,
        })
    }
}

/// The checkpoint timer of a serving process.
#[derive(Debug)]
pub struct Running {
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) task: tokio::task::JoinHandle<Checkpointer>,
}

impl Running {
    /// Stops the timer and writes the shutdown checkpoint. Call it after
    /// the server drained its requests, so it sees every record they
    /// appended. A failure is logged (and returned): the process is
    /// stopping anyway.
    pub async fn finish(mut self) -> Result<(), CheckpointError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.task.await {
            Ok(mut checkpointer) => {
                let written = checkpointer.checkpoint(Reason::Shutdown).await.map(|_| ());
                checkpointer.conn.close().await.ok();
                written
            }
            Err(_) => Err(CheckpointError::Poisoned),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "the shutdown audit checkpoint was not written");
        }
        result
    }
}

/// This process, as checkpoints name it: the host name (a pod's name in
/// Kubernetes) and the process id.
pub(super) fn instance_name() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "unknown".into()
    } else {
        host
    };
    format!("{host}/{}", std::process::id())
}
