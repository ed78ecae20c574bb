//! Secrets at rest, on SQLite and PostgreSQL: after a full flow through the
//! real gRPC service (passwords, sessions, TOTP and SMS enrollments and
//! verifications, an SMS code left outstanding, a signing-key rotation),
//! the database as stored (SQLite's main, WAL and shared-memory files; a
//! `pg_dump` of PostgreSQL) and every file of the data directory hold no
//! TOTP seed, SMS code, password, session or access token, private key,
//! data key or full phone number. Then the data keys rotate while the
//! service serves: old secrets stay readable until resealed, resealing
//! never overwrites what the service writes meanwhile, and afterwards every
//! sealed value names the new key and the old one can go.
//!
//! The data keys live in a file outside the data directory
//! (`--data-keys-file`), as production configures them.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Harness, base32_decode, bearer};
use padlock_auth::KeySource;
use padlock_auth::data_keys::{key_use, reseal_all};
use padlock_auth::key_files::{KeyFileState, SealedKeyFiles, Upgrade};
use padlock_auth::sealing::{DataKeySource, DataKeys};
use padlock_auth::sms::twilio::{Sender, TwilioConfig, TwilioSender};
use padlock_auth::store::{Resealed, Store};
use padlock_proto::auth::v1::{
    SendSmsCodeRequest, SignInRequest, SignInResponse, StartSmsEnrollmentRequest,
    StartSmsEnrollmentResponse,
};
use padlock_runtime::{Clock as _, Secret};
use padlock_test_support::TestDatabase;
use padlock_test_support::fake_twilio::FakeTwilio;
use padlock_token::{KeyRing, Rewrite, SigningKey};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "test-auth-token";
const FROM: &str = "+15005550006";
/// docs/design.md "SMS": resend cooldown.
const COOLDOWN: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_secs(30);

/// A service whose data keys come from a file outside its data directory,
/// sending texts to a fake Twilio.
struct Service {
    h: Harness,
    twilio: FakeTwilio,
    data_dir: PathBuf,
    keys_file: PathBuf,
    _dirs: tempfile::TempDir,
}

impl Service {
    async fn start(db: &TestDatabase) -> Service {
        let dirs = tempfile::tempdir().unwrap();
        let data_dir = dirs.path().join("data");
        let keys_file = dirs.path().join("secrets").join("data-keys");
        std::fs::create_dir_all(keys_file.parent().unwrap()).unwrap();
        std::fs::write(
            &keys_file,
            DataKeys::generate("k1").unwrap().to_spec() + "\n",
        )
        .unwrap();
        let twilio = FakeTwilio::start(SID, TWILIO_TOKEN).await;
        let mut config = TwilioConfig::new(
            SID,
            Secret::new(TWILIO_TOKEN.to_owned()),
            Sender::From(FROM.into()),
        );
        config.base_url = twilio.base_url();
        let sender = TwilioSender::new(config).unwrap();
        let (dir, file) = (data_dir.clone(), keys_file.clone());
        let h = Harness::start_with(db, move |mut o| {
            o.data_dir = dir;
            o.data_keys = Some(DataKeySource::File(file));
            o.sms = Some(Arc::new(sender));
            o
        })
        .await;
        Service {
            h,
            twilio,
            data_dir,
            keys_file,
            _dirs: dirs,
        }
    }

    fn data_keys(&self) -> DataKeys {
        DataKeySource::File(self.keys_file.clone()).load().unwrap()
    }

    fn key_source(&self) -> KeySource {
        KeySource::Dir(self.data_dir.join("keys"))
    }

    async fn add_user(&self, username: &str, password: &str) {
        padlock_auth::grpc::support::create_user(
            self.h.app.store(),
            self.h.app.hasher(),
            self.h.clock.unix(),
            None,
            None,
            username,
            password.to_owned(),
            Vec::new(),
        )
        .await
        .unwrap();
    }

    async fn sign_in(&self, username: &str, password: &str) -> SignInResponse {
        self.h
            .sessions()
            .sign_in(SignInRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn start_sms(&self, token: &str, phone: &str) -> StartSmsEnrollmentResponse {
        self.h
            .two_factor()
            .start_sms_enrollment(bearer(
                token,
                StartSmsEnrollmentRequest {
                    phone_number: phone.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn send_sms_code(&self, token: &str) -> String {
        self.h
            .two_factor()
            .send_sms_code(bearer(token, SendSmsCodeRequest {}))
            .await
            .unwrap();
        self.last_code()
    }

    /// The code in the newest text, as the phone shows it.
    fn last_code(&self) -> String {
        let body = self.twilio.messages().last().unwrap().body.clone();
        body.split_whitespace().next().unwrap().to_owned()
    }

    /// A TOTP code for `seed` at the service's time.
    fn totp(&self, seed: &[u8]) -> String {
        self.h.code(seed, 0)
    }

    /// Reads the signing key files with the data keys.
    fn signing_keys(&self) -> Vec<SigningKey> {
        let keys = self.data_keys();
        let format = SealedKeyFiles::new(&keys, Upgrade::Clear);
        let ring = KeyRing::load_or_generate(&self.data_dir.join("keys"), &format).unwrap();
        std::iter::once(ring.current).chain(ring.previous).collect()
    }
}

/// Everything secret the flow handled, as the test saw it in clear.
#[derive(Default)]
struct Secrets {
    /// (what, bytes) searched for anywhere.
    exact: Vec<(String, Vec<u8>)>,
    /// SMS codes: six digits, searched for as a value on its own.
    codes: Vec<String>,
}

impl Secrets {
    fn add(&mut self, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        assert!(
            bytes.len() >= 8,
            "too short to search for without false hits"
        );
        self.exact.push((what.into(), bytes));
    }

    fn add_token(&mut self, what: &str, token: &str) {
        self.add(what, token);
        if let Some((_, signature)) = token.rsplit_once('.') {
            self.add(format!("{what} signature"), signature);
        }
    }

    fn add_seed(&mut self, who: &str, base32: &str) {
        let raw = base32_decode(base32);
        self.add(format!("{who}'s TOTP seed (base32)"), base32);
        self.add(
            format!("{who}'s TOTP seed (base32, lower case)"),
            base32.to_lowercase(),
        );
        self.add(format!("{who}'s TOTP seed (hex)"), hex::encode(&raw));
        self.add(format!("{who}'s TOTP seed (HEX)"), hex::encode_upper(&raw));
        self.add(format!("{who}'s TOTP seed (base64)"), STANDARD.encode(&raw));
        self.add(format!("{who}'s TOTP seed (raw)"), raw);
    }

    fn add_phone(&mut self, e164: &str) {
        self.add(format!("phone number {}", &e164[..4]), e164);
        self.add(format!("phone number {} without +", &e164[..4]), &e164[1..]);
    }

    fn add_signing_key(&mut self, key: &SigningKey) {
        let der = key.to_pkcs8_der();
        let pem = key.to_pkcs8_pem();
        let kid = key.kid();
        self.add(format!("signing key {kid} (PKCS#8 DER)"), der.clone());
        self.add(format!("signing key {kid} (seed)"), der[16..].to_vec());
        self.add(
            format!("signing key {kid} (seed, base64url)"),
            URL_SAFE_NO_PAD.encode(&der[16..]),
        );
        self.add(
            format!("signing key {kid} (PEM body)"),
            pem.lines().nth(1).unwrap(),
        );
    }

    fn add_data_keys(&mut self, keys: &DataKeys) {
        for entry in keys.to_spec().split(',') {
            let (id, key) = entry.split_once(':').unwrap();
            self.add(format!("data key {id} (base64)"), key);
            self.add(
                format!("data key {id} (raw)"),
                STANDARD.decode(key).unwrap(),
            );
        }
    }

    /// What of this is in `dump`, by name only.
    fn found_in(&self, dump: &[u8]) -> Vec<String> {
        let mut found: Vec<String> = self
            .exact
            .iter()
            .filter(|(_, needle)| contains(dump, needle))
            .map(|(what, _)| what.clone())
            .collect();
        found.extend(
            self.codes
                .iter()
                .enumerate()
                .filter(|(_, code)| contains_standalone(dump, code.as_bytes()))
                .map(|(i, _)| format!("SMS code #{i}")),
        );
        found
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `value` with no word byte (letter, digit, `_`) right before or after it.
/// Six digits turn up by chance inside longer numbers (timestamps), hex
/// strings (hashes, ids: the SQLite WAL holds hundreds of copies of them)
/// and names (`m20261128_000001_init`); a code stored as a value of its own
/// is delimited in the textual dumps (tabs, quotes), and in raw bytes six
/// digits between two non-word bytes occur by chance about 2e-9 times per
/// byte.
fn contains_standalone(haystack: &[u8], value: &[u8]) -> bool {
    haystack.windows(value.len()).enumerate().any(|(i, w)| {
        w == value
            && (i == 0 || !is_word(haystack[i - 1]))
            && haystack.get(i + value.len()).is_none_or(|b| !is_word(*b))
    })
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// How many standalone six-digit values `dump` has: the chance that a given
/// code is among them by accident is this count over 10^6.
fn standalone_six_digit_values(dump: &[u8]) -> usize {
    dump.split(|b| !is_word(*b))
        .filter(|run| run.len() == 6 && run.iter().all(u8::is_ascii_digit))
        .count()
}

/// The database: for SQLite its files as they are on disk (main, WAL,
/// shared memory) and every row of every table as text; for PostgreSQL a
/// full `pg_dump`.
async fn dump_database(db: &TestDatabase) -> Vec<(String, Vec<u8>)> {
    if db.backend == "sqlite" {
        let path = db
            .url
            .strip_prefix("sqlite://")
            .and_then(|rest| rest.split('?').next())
            .unwrap();
        let mut dumps: Vec<_> = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let file = format!("{path}{suffix}");
                std::fs::read(&file).ok().map(|bytes| (file, bytes))
            })
            .collect();
        // Last, as the PostgreSQL dump is: the textual form.
        dumps.push(("every SQLite row".to_owned(), sqlite_rows(&db.url).await));
        return dumps;
    }
    let out = std::process::Command::new(pg_dump())
        .args(["--no-owner", "--no-privileges", "--dbname", &db.url])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    vec![("pg_dump".to_owned(), out.stdout)]
}

/// `pg_dump` of the PostgreSQL tests/pg.sh runs (`PADLOCK_PG_BIN`), else
/// Debian's PostgreSQL 15, else the one on PATH.
fn pg_dump() -> PathBuf {
    let bin =
        std::env::var("PADLOCK_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let candidate = Path::new(&bin).join("pg_dump");
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from("pg_dump")
    }
}

/// Every row of every SQLite table, one line each, values as SQL literals
/// (`quote()`: text quoted, blobs as `X'hex'`) separated by tabs.
async fn sqlite_rows(url: &str) -> Vec<u8> {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let conn = Database::connect(url).await.unwrap();
    let query = |sql: String| {
        let conn = &conn;
        async move {
            conn.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
                .await
                .unwrap()
        }
    };
    let mut out = Vec::new();
    let tables = query("SELECT name FROM sqlite_master WHERE type = 'table'".into()).await;
    for table in tables {
        let table: String = table.try_get_by_index(0).unwrap();
        let columns = query(format!("SELECT name FROM pragma_table_info('{table}')")).await;
        let row = columns
            .iter()
            .map(|c| format!("quote(\"{}\")", c.try_get_by_index::<String>(0).unwrap()))
            .collect::<Vec<_>>()
            .join(" || char(9) || ");
        for line in query(format!("SELECT {row} FROM \"{table}\"")).await {
            out.extend_from_slice(format!("{table}\t").as_bytes());
            out.extend_from_slice(line.try_get_by_index::<String>(0).unwrap().as_bytes());
            out.push(b'\n');
        }
    }
    conn.close().await.unwrap();
    out
}

/// Every file under `dir`, with its bytes.
fn dump_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_stored_in_clear() {
    for db in padlock_test_support::databases().await {
        let s = Service::start(&db).await;
        let mut secrets = Secrets::default();

        // Passwords, sessions and access tokens.
        let users = ["alice", "bob", "carol", "dave"];
        let mut sessions = Vec::new();
        for user in users {
            let password = format!("{user}-{}", uuid::Uuid::new_v4());
            s.add_user(user, &password).await;
            let session = s.sign_in(user, &password).await;
            secrets.add(format!("{user}'s password"), password.as_str());
            secrets.add_token(&format!("{user}'s session token"), &session.session_token);
            secrets.add_token(&format!("{user}'s access token"), &session.access_token);
            sessions.push(session);
        }
        let [alice, bob, carol, dave] = &sessions[..] else {
            unreachable!()
        };

        // alice: TOTP enrolled, confirmed and verified.
        let enrollment = s.h.start_totp(&alice.access_token).await.unwrap();
        secrets.add_seed("alice", &enrollment.secret);
        let seed = base32_decode(&enrollment.secret);
        let confirmed =
            s.h.confirm(
                &alice.access_token,
                &enrollment.enrollment_id,
                &s.totp(&seed),
            )
            .await
            .unwrap();
        secrets.add_token("alice's step-up token", &confirmed.access_token);
        s.h.clock.advance(STEP);
        let verified =
            s.h.verify(&alice.access_token, &s.totp(&seed))
                .await
                .unwrap();
        secrets.add_token("alice's verified token", &verified.access_token);

        // bob: SMS enrolled, confirmed, verified, and a code left waiting.
        let bob_phone = "+31612345678";
        secrets.add_phone(bob_phone);
        let started = s.start_sms(&bob.access_token, bob_phone).await;
        let code = s.last_code();
        secrets.codes.push(code.clone());
        let confirmed =
            s.h.confirm(&bob.access_token, &started.enrollment_id, &code)
                .await
                .unwrap();
        secrets.add_token("bob's step-up token", &confirmed.access_token);
        s.h.clock.advance(COOLDOWN);
        let code = s.send_sms_code(&bob.access_token).await;
        secrets.codes.push(code.clone());
        let verified = s.h.verify(&bob.access_token, &code).await.unwrap();
        secrets.add_token("bob's verified token", &verified.access_token);
        s.h.clock.advance(COOLDOWN);
        secrets.codes.push(s.send_sms_code(&bob.access_token).await);

        // carol: a TOTP enrollment never confirmed; dave: an SMS enrollment
        // whose code is still outstanding.
        let pending = s.h.start_totp(&carol.access_token).await.unwrap();
        secrets.add_seed("carol", &pending.secret);
        let dave_phone = "+14155550123";
        secrets.add_phone(dave_phone);
        s.start_sms(&dave.access_token, dave_phone).await;
        secrets.codes.push(s.last_code());

        // A signing-key rotation, loaded as SIGHUP would, and a token
        // signed with the new key.
        let keys = s.data_keys();
        KeyRing::rotate(
            &s.data_dir.join("keys"),
            &SealedKeyFiles::new(&keys, Upgrade::Clear),
        )
        .unwrap();
        s.h.app.reload_keys().unwrap();
        let refreshed =
            s.h.sessions()
                .refresh(padlock_proto::auth::v1::RefreshRequest {
                    session_token: alice.session_token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
        secrets.add_token("alice's refreshed token", &refreshed.access_token);

        let signing_keys = s.signing_keys();
        assert_eq!(signing_keys.len(), 2, "current and previous signing keys");
        for key in &signing_keys {
            secrets.add_signing_key(key);
        }
        secrets.add_data_keys(&keys);
        assert_eq!(secrets.codes.len(), 4);

        // The data directory: only sealed signing keys (and their lock).
        let data_files = dump_dir(&s.data_dir);
        assert!(
            !s.data_dir.join("data-keys").exists(),
            "no data key in the data directory"
        );
        for (path, bytes) in &data_files {
            if path.ends_with(".pem") {
                let state = KeyFileState::of(&String::from_utf8_lossy(bytes)).unwrap();
                assert!(
                    matches!(state, KeyFileState::Sealed { .. }),
                    "{path} is {state:?}"
                );
            } else {
                assert!(
                    path.ends_with(padlock_token::LOCK_FILE) && bytes.is_empty(),
                    "unexpected file {path} in the data directory"
                );
            }
        }

        let mut dumps = data_files;
        dumps.extend(dump_database(&db).await);
        let total: usize = dumps.iter().map(|(_, b)| b.len()).sum();
        let textual = &dumps.last().unwrap().1;
        for user in users {
            assert!(
                contains(textual, format!("'{user}'").as_bytes())
                    || contains(textual, format!("\t{user}\t").as_bytes()),
                "{}: the textual dump lacks {user}'s row",
                db.backend
            );
        }
        let mut leaks = Vec::new();
        let mut six_digit_values = 0;
        for (name, bytes) in &dumps {
            six_digit_values += standalone_six_digit_values(bytes);
            for what in secrets.found_in(bytes) {
                leaks.push(format!("{what} in {name}"));
            }
        }
        assert!(leaks.is_empty(), "{}: in clear: {leaks:#?}", db.backend);
        eprintln!(
            "{}: searched {} dumps ({total} bytes) for {} secrets and {} SMS codes; \
             {six_digit_values} standalone six-digit values in them",
            db.backend,
            dumps.len(),
            secrets.exact.len(),
            secrets.codes.len()
        );

        // The searches find what they look for: the same flow's secrets do
        // show up in a dump that holds them.
        let planted = [
            secrets.exact[0].1.clone(),
            b" code ".to_vec(),
            secrets.codes[0].as_bytes().to_vec(),
            b".".to_vec(),
        ]
        .concat();
        assert_eq!(
            secrets.found_in(&planted),
            vec![secrets.exact[0].0.clone(), "SMS code #0".to_owned()]
        );
        s.h.stop().await;
    }
}

#[test]
fn a_code_counts_only_standing_alone() {
    // Inside a longer number or a hex string it is chance; delimited it is
    // a stored value.
    assert!(!contains_standalone(b"1800000300", b"000030"));
    assert!(!contains_standalone(b"x1234567", b"123456"));
    assert!(!contains_standalone(b"9fa123456b0", b"123456"));
    assert!(!contains_standalone(b"m20261128_123456_init", b"123456"));
    assert!(contains_standalone(b"'123456'", b"123456"));
    assert!(contains_standalone(b"\t123456\n", b"123456"));
    assert!(contains_standalone(b"123456", b"123456"));
    assert_eq!(
        standalone_six_digit_values(b"a123456 1234567\t000001 \"654321\""),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_rotate_while_the_service_runs() {
    for db in padlock_test_support::databases().await {
        let s = Service::start(&db).await;
        let source = DataKeySource::File(s.keys_file.clone());
        // A second connection, as the `data-keys reseal` command has.
        let operator = Store::connect(&db.url).await.unwrap();

        // Under k1: alice's TOTP secret, bob's phone, carol's pending
        // enrollment and the signing key file.
        let password = "a long enough password";
        for user in ["alice", "bob", "carol"] {
            s.add_user(user, password).await;
        }
        let alice = s.sign_in("alice", password).await;
        let bob = s.sign_in("bob", password).await;
        let carol = s.sign_in("carol", password).await;
        let enrollment = s.h.start_totp(&alice.access_token).await.unwrap();
        let alice_seed = base32_decode(&enrollment.secret);
        s.h.confirm(
            &alice.access_token,
            &enrollment.enrollment_id,
            &s.totp(&alice_seed),
        )
        .await
        .unwrap();
        let started = s.start_sms(&bob.access_token, "+31612345678").await;
        s.h.confirm(&bob.access_token, &started.enrollment_id, &s.last_code())
            .await
            .unwrap();
        s.h.start_totp(&carol.access_token).await.unwrap();

        // The operator adds k2; the running service still has k1 only and
        // keeps working, sealing under k1.
        let rotated = source.add_key(Some("k2")).unwrap();
        assert_eq!(rotated.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
        let before = key_use(&operator, &rotated, &s.key_source(), s.h.clock.unix())
            .await
            .unwrap();
        assert_eq!(before.secrets.get("k1"), Some(&3));
        assert_eq!(before.uses("k1"), 3 + 1, "3 secrets and current.pem");
        assert_eq!(before.uses("k2"), 0);
        s.h.clock.advance(STEP);
        s.h.verify(&alice.access_token, &s.totp(&alice_seed))
            .await
            .unwrap();

        // Reloaded (SIGHUP): new secrets are sealed under k2, old ones still
        // open with k1.
        s.h.app.reload_keys().unwrap();
        s.h.clock.advance(STEP);
        s.h.verify(&alice.access_token, &s.totp(&alice_seed))
            .await
            .unwrap();
        s.h.clock.advance(COOLDOWN);
        let bob_code = s.send_sms_code(&bob.access_token).await;
        s.add_user("dave", password).await;
        let dave = s.sign_in("dave", password).await;
        s.h.start_totp(&dave.access_token).await.unwrap();
        let during = key_use(&operator, &rotated, &s.key_source(), s.h.clock.unix())
            .await
            .unwrap();
        assert_eq!(during.secrets.get("k1"), Some(&3));
        assert_eq!(
            during.secrets.get("k2"),
            Some(&1),
            "dave's, sealed after the reload"
        );
        assert_eq!(during.live_codes.get("k2"), Some(&1), "bob's new code");

        // Compare-and-swap: carol restarts her enrollment between the
        // operator's read and write; her new secret is kept, not replaced.
        let carol_id =
            s.h.app
                .store()
                .user_by_username("carol")
                .await
                .unwrap()
                .unwrap()
                .id;
        let page = operator.secrets_not_under("k2", None, 10).await.unwrap();
        assert_eq!(page.len(), 3, "alice's, bob's and carol's");
        let carol_old = page.into_iter().find(|p| p.user_id == carol_id).unwrap();
        assert_eq!(carol_old.key_id, "k1");
        let restarted = s.h.start_totp(&carol.access_token).await.unwrap();
        let stale = rotated.seal(b"stale", carol_id.as_bytes());
        let swapped = operator
            .replace_secret(
                &carol_old,
                &Resealed {
                    key_id: stale.key_id,
                    ciphertext: stale.blob,
                    phone_mac: None,
                },
            )
            .await
            .unwrap();
        assert!(!swapped, "a secret the service rewrote is not overwritten");

        // The reseal runs while the service verifies.
        let verifying = async {
            for _ in 0..5 {
                s.h.clock.advance(STEP);
                s.h.verify(&alice.access_token, &s.totp(&alice_seed))
                    .await
                    .unwrap();
            }
        };
        let key_source = s.key_source();
        let (report, ()) = tokio::join!(reseal_all(&operator, &rotated, &key_source, 1), verifying);
        let report = report.unwrap();
        assert!(report.is_complete(), "{report}");
        assert_eq!(report.resealed.get("k1"), Some(&2), "alice's and bob's");
        assert_eq!(
            report.key_files,
            vec![
                (s.data_dir.join("keys/current.pem"), Ok(Rewrite::Rewritten)),
                (s.data_dir.join("keys/previous.pem"), Ok(Rewrite::Missing)),
            ]
        );

        // Everything names k2, and the service still opens all of it.
        let after = key_use(&operator, &rotated, &s.key_source(), s.h.clock.unix())
            .await
            .unwrap();
        assert_eq!(after.secrets.keys().collect::<Vec<_>>(), ["k2"]);
        assert_eq!(after.secrets.get("k2"), Some(&4));
        assert_eq!(after.uses("k1"), 0, "{after}");
        assert!(after.to_string().contains("k1 protects nothing"), "{after}");
        s.h.clock.advance(STEP);
        s.h.verify(&alice.access_token, &s.totp(&alice_seed))
            .await
            .unwrap();
        s.h.verify(&bob.access_token, &bob_code).await.unwrap();
        let carol_seed = base32_decode(&restarted.secret);
        s.h.confirm(
            &carol.access_token,
            &restarted.enrollment_id,
            &s.totp(&carol_seed),
        )
        .await
        .unwrap();

        // A replica still on the first step of a multi-replica rollout
        // (k1 current, k2 known) opens the resealed secrets, and what it
        // seals under k1 meanwhile a second reseal picks up.
        let k1_first = rotated
            .to_spec()
            .split(',')
            .rev()
            .collect::<Vec<_>>()
            .join(",");
        let replica = Harness::start_with(&db, move |mut o| {
            o.data_keys = Some(DataKeySource::Spec(Secret::new(k1_first)));
            o
        })
        .await;
        replica.clock.set_unix(s.h.clock.unix() + 30);
        // Its own signing key, so alice signs in there.
        let on_replica = replica
            .sessions()
            .sign_in(SignInRequest {
                username: "alice".into(),
                password: password.into(),
            })
            .await
            .unwrap()
            .into_inner();
        replica
            .verify(&on_replica.access_token, &replica.code(&alice_seed, 0))
            .await
            .unwrap();
        let erin_password = "another long password";
        s.add_user("erin", erin_password).await;
        let erin = replica
            .sessions()
            .sign_in(SignInRequest {
                username: "erin".into(),
                password: erin_password.into(),
            })
            .await
            .unwrap()
            .into_inner();
        replica.start_totp(&erin.access_token).await.unwrap();
        let mixed = key_use(&operator, &rotated, &key_source, s.h.clock.unix())
            .await
            .unwrap();
        assert_eq!(
            mixed.secrets.get("k1"),
            Some(&1),
            "erin's, from the replica"
        );
        let second = reseal_all(&operator, &rotated, &key_source, 1)
            .await
            .unwrap();
        assert_eq!(second.resealed.get("k1"), Some(&1), "{second}");
        replica.stop().await;
        // Past the step alice used on the replica.
        s.h.clock.advance(STEP);

        // Idempotent: nothing left to do.
        let again = reseal_all(&operator, &rotated, &s.key_source(), 1)
            .await
            .unwrap();
        assert!(again.resealed.is_empty(), "{again}");
        assert_eq!(again.key_files[0].1, Ok(Rewrite::UpToDate));

        // k1 removed: the service reloads and works on, and a signing-key
        // rotation reads the resealed key.
        std::fs::write(
            &s.keys_file,
            rotated.to_spec().split(',').next().unwrap().to_owned() + "\n",
        )
        .unwrap();
        s.h.app.reload_keys().unwrap();
        assert_eq!(s.h.app.data_keys().key_ids().collect::<Vec<_>>(), ["k2"]);
        s.h.clock.advance(STEP);
        s.h.verify(&alice.access_token, &s.totp(&alice_seed))
            .await
            .unwrap();
        s.h.clock.advance(COOLDOWN);
        let code = s.send_sms_code(&bob.access_token).await;
        s.h.verify(&bob.access_token, &code).await.unwrap();
        s.h.stop().await;
    }
}
