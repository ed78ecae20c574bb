//! The checkpoint format and signature, the append-only file, torn lines,
//! and checkpoints against a chain on SQLite (a temporary file) and, with
//! `PADLOCK_TEST_DATABASE_URL`, on PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use sea_orm::ConnectionTrait as _;

use super::*;
use crate::ManualClock;
use crate::audit::{Chain, Kind, Value};

/// 2026-05-01T12:00:00Z.
const MAY_FIRST: i64 = 1_777_636_800;

fn key(seed: u8) -> CheckpointKey {
    CheckpointKey(SigningKey::from_bytes(&[seed; 32]))
}

fn checkpoint(seq: i64) -> Checkpoint {
    Checkpoint {
        chain: "padlock-test/t".into(),
        head: Link {
            seq,
            hash: [0xab; 32],
        },
        at: "2026-05-01T12:00:00Z".into(),
        instance: "host-1/42".into(),
        reason: "timer".into(),
    }
}

fn parsed(line: &str) -> Signed {
    match parse_line(line.as_bytes()) {
        Parsed::Checkpoint(signed) => *signed,
        other => panic!("not a checkpoint: {other:?} from {line}"),
    }
}

// ---------------------------------------------------------------- format

#[test]
fn a_line_parses_back_to_the_checkpoint_and_its_signature_holds() {
    let signed = checkpoint(135).sign(&key(1));
    let line = signed.to_line();
    assert!(!line.contains('\n'));
    assert!(
        line.starts_with(r#"{"padlock_audit_checkpoint":1,"chain":"padlock-test/t","seq":135,"#),
        "{line}"
    );
    let back = parsed(&line);
    assert_eq!(back, signed);
    assert!(back.signature_holds());
    // Texts that need escaping survive the trip.
    let mut odd = checkpoint(1);
    odd.instance = "h\"o\\st/1".into();
    let odd = odd.sign(&key(1));
    assert_eq!(parsed(&odd.to_line()), odd);
    assert!(odd.signature_holds());
}

#[test]
fn the_signature_covers_the_documented_encoding() {
    let c = checkpoint(2);
    let mut expected = Vec::new();
    for text in ["padlock audit checkpoint v1", "padlock-test/t"] {
        expected.push(2);
        expected.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
        expected.extend_from_slice(text.as_bytes());
    }
    expected.push(1);
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
    for text in [
        "ab".repeat(32).as_str(),
        "2026-05-01T12:00:00Z",
        "host-1/42",
        "timer",
    ] {
        expected.push(2);
        expected.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
        expected.extend_from_slice(text.as_bytes());
    }
    assert_eq!(c.signed_message(), expected);
    let signed = c.sign(&key(3));
    let signature = ed25519_dalek::Signature::from_bytes(&signed.signature);
    key(3)
        .0
        .verifying_key()
        .verify_strict(&expected, &signature)
        .unwrap();
}

#[test]
fn any_edited_field_breaks_the_signature() {
    let line = checkpoint(135).sign(&key(1)).to_line();
    let edits = [
        ("\"seq\":135", "\"seq\":134"),
        (
            "\"chain\":\"padlock-test/t\"",
            "\"chain\":\"padlock-test/u\"",
        ),
        (
            &format!("\"head\":\"{}\"", "ab".repeat(32)),
            &format!("\"head\":\"{}\"", "cd".repeat(32)),
        ),
        ("2026-05-01T12:00:00Z", "2026-05-01T12:00:01Z"),
        ("host-1/42", "host-2/42"),
        ("\"reason\":\"timer\"", "\"reason\":\"start\""),
    ];
    for (from, to) in edits {
        let edited = line.replace(from, to);
        assert_ne!(edited, line, "{from}");
        assert!(!parsed(&edited).signature_holds(), "{from} -> {to}");
    }
    // Another key named in the line: the signature is not that key's.
    let other = key(2).public().to_string();
    let swapped = line.replace(&key(1).public().to_string(), &other);
    assert!(!parsed(&swapped).signature_holds());
    // A flipped bit in the signature.
    let mut signed = parsed(&line);
    signed.signature[10] ^= 1;
    assert!(!signed.signature_holds());
}

#[test]
fn lines_are_told_apart_torn_other_and_invalid() {
    let line = checkpoint(7).sign(&key(1)).to_line();
    // Every cut of a line is torn: a crash never leaves a whole object.
    for cut in 0..line.len() {
        assert_eq!(
            parse_line(&line.as_bytes()[..cut]),
            Parsed::Torn,
            "cut at {cut}"
        );
    }
    assert_eq!(parse_line(b"\x00\xff garbage"), Parsed::Torn);
    assert_eq!(parse_line(b"[1, 2]"), Parsed::Torn);
    assert_eq!(
        parse_line(br#"{"level":"INFO","message":"listening"}"#),
        Parsed::Other
    );
    let invalid = |line: String| match parse_line(line.as_bytes()) {
        Parsed::Invalid(why) => why,
        other => panic!("{other:?} from {line}"),
    };
    assert!(invalid(line.replace(",\"head\":", ",\"hed\":")).contains("`head`"));
    assert!(invalid(line.replace("\"seq\":7", "\"seq\":-7")).contains("`seq`"));
    assert!(invalid(line.replace("\"seq\":7", "\"seq\":\"7\"")).contains("`seq`"));
    assert!(
        invalid(line.replace(
            "\"padlock_audit_checkpoint\":1",
            "\"padlock_audit_checkpoint\":2"
        ))
        .contains("format 2")
    );
    assert!(invalid(line.replace("\"key\":\"ed25519:", "\"key\":\"rsa:")).contains("`key`"));
    assert!(invalid(line.replace("\"sig\":\"", "\"sig\":\"00")).contains("`sig`"));
}

#[test]
fn a_json_log_line_of_a_checkpoint_is_a_checkpoint() {
    // What `--log-format json` writes (crate::telemetry: flattened events).
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let signed = checkpoint(12).sign(&key(5));
    tracing::subscriber::with_default(subscriber, || signed.log());
    let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    let back = parsed(logged.trim_end());
    assert_eq!(back, signed);
    assert!(back.signature_holds());
    // A subscriber that nests the event's fields.
    let nested = format!(
        r#"{{"timestamp":"x","level":"INFO","fields":{}}}"#,
        signed.to_line()
    );
    assert_eq!(parsed(&nested), signed);
}

#[test]
fn public_keys_print_and_parse_back() {
    let public = key(9).public();
    let text = public.to_string();
    assert!(
        text.starts_with("ed25519:") && text.len() == 8 + 64,
        "{text}"
    );
    assert_eq!(text.parse::<PublicKey>(), Ok(public));
    for bad in [
        String::new(),
        text.trim_start_matches("ed25519:").to_owned(),
        format!("ed25519:{}", "zz".repeat(32)),
        format!("ed25519:{}", "ab".repeat(31)),
        text.replace("ed25519:", "ED25519:"),
    ] {
        assert!(bad.parse::<PublicKey>().is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------- files

#[test]
fn the_key_is_generated_once_in_a_0600_file_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join(DEFAULT_KEY_FILE);
    assert!(CheckpointKey::load(&path, &ClearPem).unwrap().is_none());
    let (first, generated) = CheckpointKey::load_or_generate(&path, &ClearPem).unwrap();
    assert!(generated);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (again, generated) = CheckpointKey::load_or_generate(&path, &ClearPem).unwrap();
    assert!(!generated);
    assert_eq!(again.public(), first.public());
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    // Debug shows the public key only.
    let debug = format!("{first:?}");
    assert!(debug.contains(&first.public().to_string()));
    assert!(!debug.contains(&hex::encode(first.0.to_bytes())));

    fs::write(&path, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    let err = CheckpointKey::load(&path, &ClearPem)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an Ed25519 private key"), "{err}");
    assert!(!err.contains("not a key"), "{err}");
}

/// A format that "seals" under a numbered key, for the rewrite path: a
/// file under an older number is written again under the current one.
#[derive(Debug)]
struct Numbered(u8);

impl KeyFormat for Numbered {
    fn encode(&self, pkcs8_der: &[u8]) -> Result<String, String> {
        Ok(format!("sealed-{} {}", self.0, hex::encode(pkcs8_der)))
    }

    fn decode(&self, text: &str) -> Result<(Vec<u8>, bool), String> {
        let (label, body) = text.split_once(' ').ok_or("unrecognised")?;
        let n: u8 = label
            .strip_prefix("sealed-")
            .and_then(|n| n.parse().ok())
            .ok_or("unrecognised")?;
        if n > self.0 {
            return Err(format!("sealed under {n}, which is not configured"));
        }
        Ok((hex::decode(body).map_err(|_| "malformed")?, n < self.0))
    }
}

#[test]
fn a_key_file_in_an_older_format_is_written_again_and_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig {
        key_format: Arc::new(Numbered(1)),
        ..CheckpointConfig::in_dir(dir.path())
    };
    let (key, generated) = CheckpointKey::load_or_generate(&config.key_file, &Numbered(1)).unwrap();
    assert!(generated);
    assert!(
        fs::read_to_string(&config.key_file)
            .unwrap()
            .starts_with("sealed-1 ")
    );
    assert!(!reseal_key(&config).unwrap(), "already current");

    // The data keys move on: the file is sealed again under the new one,
    // the key itself stays.
    let config = CheckpointConfig {
        key_format: Arc::new(Numbered(2)),
        ..config
    };
    assert!(reseal_key(&config).unwrap());
    assert!(
        fs::read_to_string(&config.key_file)
            .unwrap()
            .starts_with("sealed-2 ")
    );
    let (again, rewrite) = CheckpointKey::load(&config.key_file, &Numbered(2))
        .unwrap()
        .unwrap();
    assert_eq!(again.public(), key.public());
    assert!(!rewrite);
    assert_eq!(
        fs::metadata(&config.key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // At start, too (load_or_generate), and never a new key.
    let (started, generated) =
        CheckpointKey::load_or_generate(&config.key_file, &Numbered(3)).unwrap();
    assert!(!generated);
    assert_eq!(started.public(), key.public());
    assert!(
        fs::read_to_string(&config.key_file)
            .unwrap()
            .starts_with("sealed-3 ")
    );

    // A key the format cannot open is an error naming the file, not a new key.
    let err = CheckpointKey::load_or_generate(&config.key_file, &Numbered(1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("sealed under 3, which is not configured"),
        "{err}"
    );
    assert!(
        fs::read_to_string(&config.key_file)
            .unwrap()
            .starts_with("sealed-3 ")
    );
    // Resealing never creates a key.
    let none = CheckpointConfig::in_dir(&dir.path().join("empty"));
    assert!(!reseal_key(&none).unwrap());
    assert!(!none.key_file.exists());
}

#[test]
fn the_file_is_only_appended_to_and_created_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE);
    let (mut log, torn) = CheckpointLog::open(&path).unwrap();
    assert!(!torn);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = checkpoint(1).sign(&key(1));
    log.append(&first).unwrap();
    // Someone else appends meanwhile: the next line goes after theirs,
    // never over it.
    let mut other = OpenOptions::new().append(true).open(&path).unwrap();
    other.write_all(b"{\"other\":1}\n").unwrap();
    let second = checkpoint(2).sign(&key(1));
    log.append(&second).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!(
            "{}\n{{\"other\":1}}\n{}\n",
            first.to_line(),
            second.to_line()
        )
    );
}

#[test]
fn a_torn_last_line_is_ended_before_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE);
    let whole = checkpoint(1).sign(&key(1)).to_line();
    // A crash in the middle of writing the second line.
    fs::write(&path, format!("{whole}\n{}", &whole[..40])).unwrap();
    let (mut log, torn) = CheckpointLog::open(&path).unwrap();
    assert!(torn);
    let next = checkpoint(2).sign(&key(1));
    log.append(&next).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(parse_line(lines[1].as_bytes()), Parsed::Torn);
    assert_eq!(parsed(lines[2]), next);
    // A file that ends whole is left as it is.
    drop(log);
    let (_, torn) = CheckpointLog::open(&path).unwrap();
    assert!(!torn);
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn lines_longer_than_the_limit_are_skipped_whole() {
    let long = "x".repeat(MAX_LINE * 3);
    let input = format!("short\n{long}\nafter\n{long}");
    let mut lines = Lines::new(BufReader::with_capacity(1024, input.as_bytes()));
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_into(&mut buf).unwrap() {
        assert!(buf.len() <= MAX_LINE + 1);
        let text = if line.overlong {
            "<long>".to_owned()
        } else {
            String::from_utf8(buf.clone()).unwrap()
        };
        seen.push((line.number, text, line.ended));
    }
    assert_eq!(
        seen,
        [
            (1, "short".to_owned(), true),
            (2, "<long>".to_owned(), true),
            (3, "after".to_owned(), true),
            (4, "<long>".to_owned(), false),
        ]
    );
}

#[test]
fn the_last_checkpoint_is_read_from_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE);
    let (mut log, _) = CheckpointLog::open(&path).unwrap();
    let own = key(1);
    // More than the tail holds.
    for seq in 0..400 {
        log.append(&checkpoint(seq).sign(&own)).unwrap();
    }
    assert!(fs::metadata(&path).unwrap().len() > TAIL);
    // Then one by another key, one of another chain, and a torn line.
    log.append(&checkpoint(500).sign(&key(2))).unwrap();
    let mut foreign = checkpoint(600);
    foreign.chain = "padlock-other/t".into();
    log.append(&foreign.sign(&own)).unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"padlock_audit_checkpoint\":1,\"chain\":")
        .unwrap();
    let last = last_checkpoint(&path, "padlock-test/t", &own.public()).unwrap();
    assert_eq!(last.map(|s| s.checkpoint.head.seq), Some(399));
    assert!(
        last_checkpoint(&dir.path().join("none"), "padlock-test/t", &own.public())
            .unwrap()
            .is_none()
    );
}

// ---------------------------------------------------------------- a chain

/// A table with a chain, on SQLite (a temporary file) or PostgreSQL.
struct TestTrail {
    url: String,
    chain: &'static Chain,
    conn: DatabaseConnection,
    dir: tempfile::TempDir,
    clock: ManualClock,
}

impl TestTrail {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        Self::create(url, dir, "t").await
    }

    async fn postgres(url: String) -> Self {
        let table = format!("checkpoint_test_{:016x}", rand::rngs::OsRng.next_u64());
        Self::create(url, tempfile::tempdir().unwrap(), &table).await
    }

    async fn create(url: String, dir: tempfile::TempDir, table: &str) -> Self {
        let table: &'static str = Box::leak(table.to_owned().into_boxed_str());
        let chain: &'static Chain = Box::leak(Box::new(Chain {
            domain: "checkpoint test v1",
            table,
            columns: &[("n", Kind::Int), ("s", Kind::Text)],
        }));
        let conn = crate::db::connect(crate::db::connect_options(&url))
            .await
            .unwrap();
        let id = match conn.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "BIGSERIAL PRIMARY KEY",
            _ => "INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        conn.execute_unprepared(&format!(
            "CREATE TABLE \"{table}\" (id {id}, n BIGINT, s TEXT, seq BIGINT, \
             prev_hash VARCHAR(64), hash VARCHAR(64))"
        ))
        .await
        .unwrap();
        conn.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX \"{table}_seq\" ON \"{table}\" (seq)"
        ))
        .await
        .unwrap();
        TestTrail {
            url,
            chain,
            conn,
            dir,
            clock: ManualClock::at_unix(MAY_FIRST),
        }
    }

    fn trail(&self) -> Trail {
        Trail {
            service: "padlock-test",
            table: self.chain.table,
        }
    }

    fn config(&self) -> CheckpointConfig {
        CheckpointConfig::in_dir(self.dir.path())
    }

    async fn append(&self, n: usize) -> Link {
        let txn = audit::begin(&self.conn).await.unwrap();
        let records = (0..n)
            .map(|i| {
                vec![
                    Value::Int(Some(i64::try_from(i).unwrap())),
                    Value::Text(Some(format!("record {i}"))),
                ]
            })
            .collect();
        let head = audit::append(&txn, self.chain, records).await.unwrap();
        txn.commit().await.unwrap();
        head
    }

    async fn sql(&self, sql: &str) {
        let sql = sql.replace("TABLE", &format!("\"{}\"", self.chain.table));
        self.conn.execute_unprepared(&sql).await.unwrap();
    }

    async fn checkpointer(&self) -> Checkpointer {
        Checkpointer::open(
            &self.url,
            self.trail(),
            &self.config(),
            Arc::new(self.clock.clone()),
        )
        .await
        .unwrap()
    }

    async fn verify_with(&self, sources: &Sources, expect: Option<Link>) -> Report {
        let chain = self.chain;
        let url = self.url.clone();
        verify(
            &self.url,
            self.trail(),
            sources,
            expect,
            |expect| async move { audit::verify_at(&url, chain, expect).await },
        )
        .await
        .unwrap()
    }

    async fn verify(&self) -> Report {
        self.verify_with(&Sources::new(&self.config(), vec![], vec![]), None)
            .await
    }

    async fn drop_table(self) {
        let table = self.chain.table;
        self.conn
            .execute_unprepared(&format!("DROP TABLE \"{table}\""))
            .await
            .unwrap();
    }
}

fn problems(report: &Report) -> String {
    report.problems.join("\n")
}

#[tokio::test]
async fn timer_checkpoints_are_written_only_when_the_head_moved() {
    let t = TestTrail::sqlite().await;
    let mut checkpointer = t.checkpointer().await;
    let start = checkpointer
        .checkpoint(Reason::Start)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(start.signed.checkpoint.head, Link::GENESIS);
    assert_eq!(start.signed.checkpoint.at, "2026-05-01T12:00:00Z");
    assert_eq!(start.signed.checkpoint.chain, "padlock-test/t");
    assert_eq!(start.signed.checkpoint.reason, "start");
    assert!(
        start
            .signed
            .checkpoint
            .instance
            .ends_with(&format!("/{}", std::process::id()))
    );
    assert!(
        checkpointer
            .checkpoint(Reason::Timer)
            .await
            .unwrap()
            .is_none()
    );

    let head = t.append(3).await;
    t.clock.advance(Duration::from_secs(60));
    let timer = checkpointer
        .checkpoint(Reason::Timer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timer.signed.checkpoint.head, head);
    assert_eq!(timer.signed.checkpoint.at, "2026-05-01T12:01:00Z");
    assert_eq!(timer.loss, None);
    assert!(
        checkpointer
            .checkpoint(Reason::Timer)
            .await
            .unwrap()
            .is_none()
    );
    // Shutdown writes even when nothing moved.
    let shutdown = checkpointer
        .checkpoint(Reason::Shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shutdown.signed.checkpoint.head, head);

    let text = fs::read_to_string(&t.config().file).unwrap();
    let lines: Vec<Signed> = text.lines().map(parsed).collect();
    assert_eq!(lines, [start.signed, timer.signed, shutdown.signed]);
    assert!(lines.iter().all(Signed::signature_holds));
    assert!(lines.iter().all(|s| s.key == checkpointer.public_key()));
}

#[tokio::test]
async fn the_writer_notices_records_lost_since_the_last_checkpoint() {
    let t = TestTrail::sqlite().await;
    t.append(5).await;
    let mut checkpointer = t.checkpointer().await;
    checkpointer.checkpoint(Reason::Start).await.unwrap();

    t.sql("DELETE FROM TABLE WHERE seq > 3").await;
    let written = checkpointer
        .checkpoint(Reason::Timer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.loss, Some(Loss::Truncated { end: 3, seen: 5 }));
    assert_eq!(written.signed.checkpoint.head.seq, 3);

    // Cut and grown again past where it was: another record at seq 3.
    t.sql("DELETE FROM TABLE WHERE seq = 3").await;
    t.append(4).await;
    let written = checkpointer
        .checkpoint(Reason::Timer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.loss, Some(Loss::Rewritten { seq: 3 }));

    // A new process reads where the last one stopped from the file.
    t.sql("DELETE FROM TABLE").await;
    drop(checkpointer);
    let mut restarted = t.checkpointer().await;
    let written = restarted.checkpoint(Reason::Start).await.unwrap().unwrap();
    assert_eq!(written.loss, Some(Loss::Truncated { end: 0, seen: 6 }));
}

#[tokio::test]
async fn spawned_checkpoints_are_written_at_start_and_at_finish() {
    let t = TestTrail::sqlite().await;
    t.append(2).await;
    let running = t
        .checkpointer()
        .await
        .spawn(Duration::from_secs(3600))
        .await
        .unwrap();
    t.append(1).await;
    running.finish().await.unwrap();
    let text = fs::read_to_string(&t.config().file).unwrap();
    let lines: Vec<Signed> = text.lines().map(parsed).collect();
    let seen: Vec<(i64, &str)> = lines
        .iter()
        .map(|s| (s.checkpoint.head.seq, s.checkpoint.reason.as_str()))
        .collect();
    assert_eq!(seen, [(2, "start"), (3, "shutdown")]);
}

#[tokio::test]
async fn an_untouched_trail_verifies_against_its_checkpoints() {
    let t = TestTrail::sqlite().await;
    let mut checkpointer = t.checkpointer().await;
    checkpointer.checkpoint(Reason::Start).await.unwrap();
    t.append(3).await;
    checkpointer.checkpoint(Reason::Timer).await.unwrap();
    let head = t.append(2).await;
    checkpointer.checkpoint(Reason::Shutdown).await.unwrap();

    let report = t.verify().await;
    assert!(report.is_ok(), "{}", problems(&report));
    assert_eq!(report.intact, Some(Intact { head }));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.files.len(), 1);
    assert!(
        report.files[0].starts_with("checkpoints: 3 in "),
        "{}",
        report.files[0]
    );
    assert!(
        report.files[0].ends_with("shutdown), seq 5"),
        "{}",
        report.files[0]
    );
    // Records appended after the last checkpoint are fine.
    t.append(1).await;
    assert!(t.verify().await.is_ok());
}

#[tokio::test]
async fn records_deleted_from_the_end_are_reported_against_the_checkpoint() {
    let t = TestTrail::sqlite().await;
    t.append(5).await;
    let mut checkpointer = t.checkpointer().await;
    t.clock.advance(Duration::from_secs(30));
    checkpointer.checkpoint(Reason::Shutdown).await.unwrap();

    t.sql("DELETE FROM TABLE WHERE seq > 3").await;
    let report = t.verify().await;
    assert!(!report.is_ok());
    assert_eq!(
        report.problems[0],
        format!(
            "the audit trail ends at seq 3 but the checkpoint of 2026-05-01T12:00:30Z ({}, \
             shutdown) saw seq 5: records were deleted (at least 2 from the end)",
            instance_name()
        )
    );
    // The chain alone is intact: only the checkpoint shows the cut.
    assert_eq!(report.intact.map(|i| i.head.seq), Some(3));

    // A restart checkpoints the shorter trail; the earlier checkpoint
    // still shows the cut.
    checkpointer.checkpoint(Reason::Start).await.unwrap();
    let report = t.verify().await;
    assert!(
        problems(&report).contains("ends at seq 3 but the checkpoint"),
        "{}",
        problems(&report)
    );

    t.sql("DELETE FROM TABLE").await;
    let report = t.verify().await;
    assert!(
        report.problems[0].starts_with("the audit trail is empty but the checkpoint of")
            && report.problems[0].contains("saw seq 5: all its records were deleted"),
        "{}",
        problems(&report)
    );
}

#[tokio::test]
async fn a_rewritten_record_at_a_checkpoint_is_reported() {
    let t = TestTrail::sqlite().await;
    t.append(4).await;
    let mut checkpointer = t.checkpointer().await;
    checkpointer.checkpoint(Reason::Timer).await.unwrap();
    // The last two replaced by three others, chained properly: the chain
    // alone cannot tell.
    t.sql("DELETE FROM TABLE WHERE seq > 2").await;
    t.append(3).await;
    let report = t.verify().await;
    assert_eq!(report.intact.as_ref().map(|i| i.head.seq), Some(5));
    assert!(
        report.problems[0].starts_with("the record at seq 4 is not the one the checkpoint of")
            && report.problems[0].ends_with("the trail was rewritten at or before seq 4"),
        "{}",
        problems(&report)
    );
}

#[tokio::test]
async fn an_edited_or_foreign_checkpoint_fails_and_the_others_are_still_checked() {
    let t = TestTrail::sqlite().await;
    t.append(5).await;
    let mut checkpointer = t.checkpointer().await;
    checkpointer.checkpoint(Reason::Timer).await.unwrap();
    let path = t.config().file;
    let line = fs::read_to_string(&path).unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    // The same checkpoint with its seq edited down.
    file.write_all(line.replace("\"seq\":5", "\"seq\":4").as_bytes())
        .unwrap();
    // A checkpoint forged with a key of the forger's own.
    let forged = checkpoint(1).sign(&key(7));
    file.write_all(format!("{}\n", forged.to_line()).as_bytes())
        .unwrap();
    t.sql("DELETE FROM TABLE WHERE seq > 4").await;

    let report = t.verify().await;
    let shown = path.display();
    assert_eq!(report.problems.len(), 3, "{}", problems(&report));
    assert!(report.problems[0].contains("ends at seq 4 but the checkpoint"));
    assert_eq!(
        report.problems[1],
        format!("{shown} line 2: bad signature: the checkpoint was altered after it was written")
    );
    assert!(
        report.problems[2].starts_with(&format!("{shown} line 3: signed by {}", key(7).public())),
        "{}",
        report.problems[2]
    );

    // Pinned to the forger's key only, the service's own lines are refused.
    let pinned = Sources::new(&t.config(), vec![], vec![key(7).public()]);
    let report = t.verify_with(&pinned, None).await;
    assert!(
        problems(&report).contains("line 1: signed by"),
        "{}",
        problems(&report)
    );
}

#[tokio::test]
async fn a_torn_line_is_a_warning_and_hides_no_checkpoint() {
    let t = TestTrail::sqlite().await;
    t.append(5).await;
    let mut checkpointer = t.checkpointer().await;
    checkpointer.checkpoint(Reason::Timer).await.unwrap();
    let path = t.config().file;
    let whole = fs::read_to_string(&path).unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&whole.as_bytes()[..50]).unwrap();

    let report = t.verify().await;
    assert!(report.is_ok(), "{}", problems(&report));
    assert_eq!(
        report.warnings,
        [format!(
            "{} line 2: the last line is cut short (a crash during a write?); skipped it, the \
             checkpoints before it are checked",
            path.display()
        )]
    );
    // The checkpoint before the torn line still counts.
    t.sql("DELETE FROM TABLE WHERE seq = 5").await;
    let report = t.verify().await;
    assert!(problems(&report).contains("ends at seq 4 but the checkpoint"));

    // After the next start the torn line is in the middle: still a warning.
    drop(checkpointer);
    let mut restarted = t.checkpointer().await;
    restarted.checkpoint(Reason::Start).await.unwrap();
    let report = t.verify().await;
    assert!(
        report.warnings[0].contains("line 2: not a whole checkpoint"),
        "{:?}",
        report.warnings
    );
    assert!(problems(&report).contains("ends at seq 4 but the checkpoint"));
}

#[tokio::test]
async fn files_name_their_problems_and_defaults_may_be_missing() {
    let t = TestTrail::sqlite().await;
    t.append(2).await;
    // No service ran here: no default file, nothing to check against.
    let report = t.verify().await;
    assert!(report.is_ok(), "{}", problems(&report));
    assert!(
        report.files[0].starts_with("checkpoints: none ("),
        "{:?}",
        report.files
    );

    // A file the operator names must exist.
    let missing = t.dir.path().join("elsewhere");
    let named = Sources::new(&t.config(), vec![missing.clone()], vec![]);
    let report = t.verify_with(&named, None).await;
    assert!(
        problems(&report).starts_with(&format!(
            "cannot read checkpoints from {}",
            missing.display()
        )),
        "{}",
        problems(&report)
    );

    // A checkpoint of another trail, signed by the right key.
    let mut checkpointer = t.checkpointer().await;
    checkpointer.checkpoint(Reason::Timer).await.unwrap();
    let (key, _) = CheckpointKey::load_or_generate(&t.config().key_file, &ClearPem).unwrap();
    let mut other = checkpoint(2);
    other.chain = "padlock-other/t".into();
    let mut file = OpenOptions::new()
        .append(true)
        .open(&t.config().file)
        .unwrap();
    file.write_all(format!("{}\n", other.sign(&key).to_line()).as_bytes())
        .unwrap();
    let report = t.verify().await;
    assert!(
        problems(&report)
            .contains("line 2: a checkpoint of padlock-other/t, not of padlock-test/t"),
        "{}",
        problems(&report)
    );

    // Without the key file and without a pinned key nothing can be trusted.
    let keyless = Sources {
        key_file: t.dir.path().join("no-key"),
        ..Sources::new(&t.config(), vec![], vec![])
    };
    let report = t.verify_with(&keyless, None).await;
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    assert!(problems(&report).contains("there is no checkpoint key at"));
}

#[tokio::test]
async fn several_files_and_json_logs_are_read_and_the_chain_break_comes_first() {
    let t = TestTrail::sqlite().await;
    t.append(3).await;
    let mut first = t.checkpointer().await;
    first.checkpoint(Reason::Timer).await.unwrap();
    // A second replica's file, shipped as JSON log lines among others.
    let (key, _) = CheckpointKey::load(&t.config().key_file, &ClearPem)
        .unwrap()
        .unwrap();
    let head = t.append(2).await;
    let mut replica = checkpoint(5);
    replica.head = head;
    let log = t.dir.path().join("replica-2.log");
    fs::write(
        &log,
        format!(
            "{{\"level\":\"INFO\",\"message\":\"listening\"}}\n{}\n",
            replica
                .sign(&key)
                .to_line()
                .replacen('{', "{\"level\":\"INFO\",", 1)
        ),
    )
    .unwrap();
    let both = Sources::new(&t.config(), vec![t.config().file, log.clone()], vec![]);
    let report = t.verify_with(&both, None).await;
    assert!(report.is_ok(), "{}", problems(&report));
    assert_eq!(report.files.len(), 2);
    assert!(report.files[1].starts_with(&format!("checkpoints: 1 in {}", log.display())));

    t.sql("DELETE FROM TABLE WHERE seq = 5").await;
    let report = t.verify_with(&both, None).await;
    assert!(problems(&report).contains("ends at seq 4 but the checkpoint"));

    // A record edited: the chain's break is named first.
    t.sql("UPDATE TABLE SET s = 'edited' WHERE seq = 2").await;
    let report = t.verify_with(&both, None).await;
    assert!(
        report.problems[0].contains("the record was edited"),
        "{}",
        problems(&report)
    );
}

#[tokio::test]
async fn expect_head_still_works_beside_checkpoints() {
    let t = TestTrail::sqlite().await;
    let head = t.append(3).await;
    let sources = Sources::new(&t.config(), vec![], vec![]);
    assert!(t.verify_with(&sources, Some(head)).await.is_ok());
    t.sql("DELETE FROM TABLE WHERE seq = 3").await;
    let report = t.verify_with(&sources, Some(head)).await;
    assert!(
        problems(&report).contains("audit chain truncated"),
        "{}",
        problems(&report)
    );
}

#[tokio::test]
async fn checkpoints_written_while_verify_reads_the_chain_are_not_read() {
    let t = TestTrail::sqlite().await;
    t.append(2).await;
    let mut checkpointer = t.checkpointer().await;
    checkpointer.checkpoint(Reason::Timer).await.unwrap();
    let sources = Sources::new(&t.config(), vec![], vec![]);
    let chain = t.chain;
    let url = t.url.clone();
    // The running service appends records and checkpoints them while the
    // chain is walked: the walk sees 2 records, the file then says 4.
    let mut writer = Some(checkpointer);
    let report = verify(&t.url, t.trail(), &sources, None, |expect| {
        let mut checkpointer = writer.take().unwrap();
        let t = &t;
        async move {
            let verdict = audit::verify_at(&url, chain, expect).await;
            t.append(2).await;
            checkpointer.checkpoint(Reason::Timer).await.unwrap();
            verdict
        }
    })
    .await
    .unwrap();
    assert!(report.is_ok(), "{}", problems(&report));
    assert!(
        report.files[0].starts_with("checkpoints: 1 in"),
        "{:?}",
        report.files
    );
}

// ---------------------------------------------------------------- PostgreSQL

/// `PADLOCK_TEST_DATABASE_URL`, required under CI; `None` skips.
fn test_database_url() -> Option<String> {
    match std::env::var("PADLOCK_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")),
                "PADLOCK_TEST_DATABASE_URL must be set under CI"
            );
            eprintln!("PADLOCK_TEST_DATABASE_URL not set: skipping");
            None
        }
    }
}

/// With a real PostgreSQL: the head, the writer's loss check and verify's
/// lookups read the same chain there.
#[tokio::test]
async fn on_postgres_records_deleted_from_the_end_are_reported() {
    let Some(url) = test_database_url() else {
        return;
    };
    let t = TestTrail::postgres(url).await;
    let mut checkpointer = t.checkpointer().await;
    t.append(4).await;
    checkpointer.checkpoint(Reason::Timer).await.unwrap();
    assert!(t.verify().await.is_ok());
    t.sql("DELETE FROM TABLE WHERE seq > 2").await;
    let report = t.verify().await;
    assert!(
        problems(&report).contains("ends at seq 2 but the checkpoint"),
        "{}",
        problems(&report)
    );
    t.append(3).await;
    let written = checkpointer
        .checkpoint(Reason::Timer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.loss, Some(Loss::Rewritten { seq: 4 }));
    let report = t.verify().await;
    assert!(
        problems(&report).contains("the record at seq 4 is not the one"),
        "{}",
        problems(&report)
    );
    drop(checkpointer);
    t.drop_table().await;
}
