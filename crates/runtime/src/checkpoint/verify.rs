//! `audit verify`'s side: every checkpoint of the given files and logs,
//! its signature against the pinned keys, then the chain still holding
//! each record a checkpoint saw.

use super::*;

// ---------------------------------------------------------------- verifying

/// Which checkpoints `audit verify` reads and which keys it accepts.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The files to read.
    pub files: Vec<PathBuf>,
    /// Whether `files` is the service's own default file (which may not
    /// exist yet: then there is nothing to check against), or files the
    /// operator named (which must exist).
    pub default_file: bool,
    /// Keys pinned on the command line; when empty, the public half of the
    /// key file.
    pub pinned: Vec<PublicKey>,
    pub key_file: PathBuf,
    pub key_format: Arc<dyn KeyFormat>,
}

impl Sources {
    /// What `audit verify --checkpoints FILE... --checkpoint-public-key
    /// KEY...` reads, with the service's own file and key as the defaults.
    pub fn new(config: &CheckpointConfig, files: Vec<PathBuf>, pinned: Vec<PublicKey>) -> Self {
        let default_file = files.is_empty();
        Sources {
            files: if default_file {
                vec![config.file.clone()]
            } else {
                files
            },
            default_file,
            pinned,
            key_file: config.key_file.clone(),
            key_format: config.key_format.clone(),
        }
    }
}

/// What `audit verify` found: a line per finding. Problems fail it (exit
/// 1), warnings do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The chain's head, if it is intact.
    pub intact: Option<Intact>,
    /// One line per checkpoint file read.
    pub files: Vec<String>,
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.intact.is_some()
    }

    /// Prints warnings to standard error prefixed with `service`, the
    /// summary to standard output; a failure is returned for the caller to
    /// print and exit 1 with.
    #[allow(clippy::print_stdout)]
    pub fn print(self, service: &str) -> Result<(), VerifyFailed> {
        for warning in &self.warnings {
            eprintln!("{service}: warning: {warning}");
        }
        if self.is_ok() {
            if let Some(intact) = &self.intact {
                println!("{intact}");
            }
            for line in &self.files {
                println!("{line}");
            }
            return Ok(());
        }
        Err(VerifyFailed {
            problems: self.problems,
        })
    }
}

/// `audit verify` failed: every problem, most important first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct VerifyFailed {
    pub problems: Vec<String>,
}

/// The checkpoints of one file that are valid, compared with the chain.
#[derive(Debug, Default)]
pub(super) struct FileCheck {
    pub(super) valid: u64,
    /// The valid checkpoint with the highest position (the latest).
    pub(super) latest: Option<Checkpoint>,
}

/// What comparing checkpoints with the chain found; the most telling
/// finding of each kind is kept.
#[derive(Debug, Default)]
pub(super) struct Findings {
    /// The checkpoint that saw the most records past the chain's end.
    pub(super) truncated: Option<Checkpoint>,
    /// The checkpoint with the lowest position whose record has another
    /// hash now.
    pub(super) rewritten: Option<Checkpoint>,
    pub(super) disagreeing: u64,
}

impl Findings {
    pub(super) fn beyond_end(&mut self, c: &Checkpoint) {
        self.disagreeing += 1;
        if self
            .truncated
            .as_ref()
            .is_none_or(|t| c.head.seq >= t.head.seq)
        {
            self.truncated = Some(c.clone());
        }
    }

    pub(super) fn other_hash(&mut self, c: &Checkpoint) {
        self.disagreeing += 1;
        if self
            .rewritten
            .as_ref()
            .is_none_or(|r| c.head.seq < r.head.seq)
        {
            self.rewritten = Some(c.clone());
        }
    }

    pub(super) fn problems(&self, end: &Link) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(c) = &self.truncated {
            problems.push(if end.seq == 0 {
                format!(
                    "the audit trail is empty but the {} saw seq {}: all its records were deleted",
                    c.describe(),
                    c.head.seq
                )
            } else {
                format!(
                    "the audit trail ends at seq {} but the {} saw seq {}: records were deleted \
                     (at least {} from the end)",
                    end.seq,
                    c.describe(),
                    c.head.seq,
                    c.head.seq - end.seq
                )
            });
        }
        if let Some(c) = &self.rewritten {
            problems.push(format!(
                "the record at seq {} is not the one the {} saw: the trail was rewritten at or \
                 before seq {}",
                c.head.seq,
                c.describe(),
                c.head.seq
            ));
        }
        if self.disagreeing > 1
            && let Some(first) = problems.first_mut()
        {
            first.push_str(&format!(
                "; {} checkpoints in all disagree with the trail",
                self.disagreeing
            ));
        }
        problems
    }
}

/// `audit verify`: walks the chain with `walk` (the service's
/// `verify_audit_chain`, which knows its columns) and checks it against
/// every valid checkpoint in `sources` (module docs).
pub async fn verify<W, F, E>(
    url: &str,
    trail: Trail,
    sources: &Sources,
    expect_head: Option<Link>,
    walk: W,
) -> Result<Report, VerifyError>
where
    W: FnOnce(Option<Link>) -> F,
    F: Future<Output = Result<Verdict, E>>,
    E: fmt::Display,
{
    let mut report = Report::default();
    // Measure the files before reading the chain (module docs).
    let mut opened = Vec::new();
    for path in &sources.files {
        match File::open(path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((len, file)) => opened.push((path.clone(), file, len)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && sources.default_file => {
                report.files.push(format!(
                    "checkpoints: none ({} does not exist: no service wrote any here), so \
                     records cut off the end cannot be found; name the files with --checkpoints",
                    path.display()
                ));
            }
            Err(e) => report.problems.push(format!(
                "cannot read checkpoints from {}: {e}",
                path.display()
            )),
        }
    }
    let verdict = walk(expect_head).await.map_err(|e| VerifyError::Chain {
        message: e.to_string(),
    })?;
    let end = match verdict {
        Verdict::Intact(intact) => {
            let end = intact.head;
            report.intact = Some(intact);
            Some(end)
        }
        Verdict::Broken(broken) => {
            report.problems.insert(0, broken.to_string());
            None
        }
    };
    if opened.is_empty() {
        return Ok(report);
    }
    // Read at the first checkpoint (auth opens its key file with its
    // data keys); a failure is reported once.
    let mut trusted: Option<Result<HashSet<PublicKey>, String>> = None;
    let mut untrusted_reported = false;
    let conn = match end {
        Some(_) => Some(
            crate::db::connect(crate::db::connect_options(url))
                .await
                .map_err(|e| VerifyError::Chain {
                    message: e.to_string(),
                })?,
        ),
        None => None,
    };
    let mut findings = Findings::default();
    let chain = trail.name();
    for (path, file, len) in opened {
        let mut batch = Vec::with_capacity(BATCH);
        let mut check = FileCheck::default();
        let mut lines = Lines::new(BufReader::new(file.take(len)));
        let mut buf = Vec::with_capacity(1024);
        let shown = path.display();
        while let Some(line) = lines
            .next_into(&mut buf)
            .map_err(|e| VerifyError::io(&path, e))?
        {
            let n = line.number;
            if line.overlong || buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let signed = match parse_line(&buf) {
                Parsed::Checkpoint(signed) => signed,
                Parsed::Other => continue,
                Parsed::Torn if !line.ended => {
                    report.warnings.push(format!(
                        "{shown} line {n}: the last line is cut short (a crash during a \
                         write?); skipped it, the checkpoints before it are checked"
                    ));
                    continue;
                }
                Parsed::Torn => {
                    report.warnings.push(format!(
                        "{shown} line {n}: not a whole checkpoint (a write cut short by a \
                         crash?); skipped"
                    ));
                    continue;
                }
                Parsed::Invalid(why) => {
                    report
                        .problems
                        .push(format!("{shown} line {n}: not a valid checkpoint: {why}"));
                    continue;
                }
            };
            let keys = match trusted.get_or_insert_with(|| trusted_keys(sources)) {
                Ok(keys) => &*keys,
                Err(problem) => {
                    if !untrusted_reported {
                        report.problems.push(problem.clone());
                        untrusted_reported = true;
                    }
                    continue;
                }
            };
            if !signed.signature_holds() {
                report.problems.push(format!(
                    "{shown} line {n}: bad signature: the checkpoint was altered after it was \
                     written"
                ));
                continue;
            }
            if !keys.contains(&signed.key) {
                report.problems.push(format!(
                    "{shown} line {n}: signed by {}, which is not a trusted checkpoint key \
                     (pin keys with --checkpoint-public-key)",
                    signed.key
                ));
                continue;
            }
            if signed.checkpoint.chain != chain {
                report.problems.push(format!(
                    "{shown} line {n}: a checkpoint of {}, not of {chain}",
                    signed.checkpoint.chain
                ));
                continue;
            }
            let c = signed.checkpoint;
            check.valid += 1;
            if check
                .latest
                .as_ref()
                .is_none_or(|l| c.head.seq >= l.head.seq)
            {
                check.latest = Some(c.clone());
            }
            batch.push(c);
            if batch.len() == BATCH {
                compare(conn.as_ref(), trail, end, &mut batch, &mut findings).await?;
            }
        }
        compare(conn.as_ref(), trail, end, &mut batch, &mut findings).await?;
        report.files.push(match &check.latest {
            Some(latest) => format!(
                "checkpoints: {} in {shown}, all consistent with the trail; the latest: {}, seq {}",
                check.valid,
                latest.describe(),
                latest.head.seq
            ),
            None => format!("checkpoints: none in {shown}"),
        });
    }
    if let Some(conn) = conn {
        conn.close().await.ok();
    }
    if let Some(end) = end {
        // The chain's findings before the files' own problems.
        let mut problems = findings.problems(&end);
        problems.append(&mut report.problems);
        report.problems = problems;
    }
    Ok(report)
}

/// The keys checkpoints may be signed with: the pinned ones, else the
/// public half of the key file.
pub(super) fn trusted_keys(sources: &Sources) -> Result<HashSet<PublicKey>, String> {
    if !sources.pinned.is_empty() {
        return Ok(sources.pinned.iter().copied().collect());
    }
    match CheckpointKey::load(&sources.key_file, &*sources.key_format) {
        Ok(Some((key, _))) => Ok(HashSet::from([key.public()])),
        Ok(None) => Err(format!(
            "cannot check the checkpoints' signatures: there is no checkpoint key at {}; pin \
             the service's key with --checkpoint-public-key (`audit checkpoint-key` prints it)",
            sources.key_file.display()
        )),
        Err(e) => Err(format!("cannot check the checkpoints' signatures: {e}")),
    }
}

/// Compares a batch of valid checkpoints with the chain that ends at
/// `end` (found intact), and empties it.
pub(super) async fn compare(
    conn: Option<&DatabaseConnection>,
    trail: Trail,
    end: Option<Link>,
    batch: &mut Vec<Checkpoint>,
    findings: &mut Findings,
) -> Result<(), VerifyError> {
    let (Some(conn), Some(end)) = (conn, end) else {
        batch.clear();
        return Ok(());
    };
    let mut seqs: Vec<i64> = batch
        .iter()
        .map(|c| c.head.seq)
        .filter(|seq| (1..=end.seq).contains(seq))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let hashes = if seqs.is_empty() {
        Default::default()
    } else {
        audit::hashes_at(conn, trail.table, &seqs)
            .await
            .map_err(|e| VerifyError::Chain {
                message: e.to_string(),
            })?
    };
    for c in batch.drain(..) {
        let seq = c.head.seq;
        if seq > end.seq {
            findings.beyond_end(&c);
        } else if seq == 0 {
            // The empty chain's head: nothing to compare.
        } else if hashes.get(&seq).copied().flatten() != Some(c.head.hash) {
            findings.other_hash(&c);
        }
    }
    Ok(())
}

/// Runs an `audit` subcommand for `trail`: `verify` with the service's
/// `walk` ([`verify`]), or `checkpoint-key`.
#[allow(clippy::print_stdout)]
pub async fn run_command<W, F, E>(
    command: AuditCommand,
    url: &str,
    trail: Trail,
    config: &CheckpointConfig,
    walk: W,
) -> Result<(), CommandError>
where
    W: FnOnce(Option<Link>) -> F,
    F: Future<Output = Result<Verdict, E>>,
    E: fmt::Display,
{
    match command {
        AuditCommand::Verify {
            expect_head,
            checkpoints,
            checkpoint_public_keys,
        } => {
            let sources = Sources::new(config, checkpoints, checkpoint_public_keys);
            let report = verify(url, trail, &sources, expect_head, walk).await?;
            report.print(trail.service)?;
        }
        AuditCommand::CheckpointKey => {
            let (key, generated) =
                CheckpointKey::load_or_generate(&config.key_file, &*config.key_format)?;
            println!("{}", key.public());
            if generated {
                eprintln!(
                    "{}: generated a new checkpoint key in {}",
                    trail.service,
                    config.key_file.display()
                );
            }
        }
    }
    Ok(())
}
