//! `padlock-auth users import`: many users at once from JSON lines, for a
//! team moving to padlock from another system with its users' argon2id
//! password hashes and TOTP seeds, so nobody picks a new password or
//! enrolls their authenticator app again.
//!
//! One user per line ([`LONG_ABOUT`] has the format). Every line is checked
//! as `CreateUser` checks a new user (username grammar, password length,
//! role grammar; `support` and `operator` are allowed: this is the server's
//! operator path, like `users add --role`), plus: an argon2id PHC string for
//! `password_hash`, a base32 TOTP secret of at least 128 bits, no username
//! twice in the file or already taken. All or nothing: if any line is bad,
//! each bad line is reported (line number and field, never a value) and
//! nothing is written. Then the users are written `--batch` at a time, each
//! batch one transaction with its users, their active TOTP factors (secrets
//! sealed as enrollment seals them: under the current data key, the user id
//! as associated data) and one `user_created` audit record per user, as
//! `users add` writes.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use padlock_runtime::SharedClock;
use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::store::import::ImportedUser;
use crate::store::{AuditEvent, Outcome, Store, StoreError, User};
use crate::{Options, totp};

/// `users import --help`.
pub const LONG_ABOUT: &str = "\
Imports users from JSON lines (a file, or standard input), one user a line:

  {\"username\": \"alice\", \"password_hash\": \"$argon2id$v=19$m=19456,t=2,p=1$...\",
   \"roles\": [\"operator\"], \"totp\": {\"secret\": \"JBSWY3DPEHPK3PXP...\"}}

  username       required; 1 to 64 of letters, digits and . _ - @
  password_hash  an argon2id PHC string (kept as it is), or
  password       a password (8 characters to 1024 bytes), hashed here
                 (exactly one of the two)
  roles          optional; 1 to 32 of a-z and _ each, at most 8; support
                 and operator may be given here
  totp           optional; an active TOTP factor with the authenticator
                 app's existing seed: secret (base32, at least 128 bits),
                 and if given algorithm \"SHA1\", digits 6, period 30 (the
                 only ones padlock verifies)

Blank lines are skipped. ALL OR NOTHING: every line is checked first (as
CreateUser checks a new user; no username twice, none already taken); if any
line is bad, each is reported as `line N: FIELD: problem` (never a value) and
nothing is written. Then users are written --batch at a time, each batch one
transaction with one `user_created` audit record per user; should a write
still fail (a username taken meanwhile, the database gone), the batches before
it stay and the error names the first line not written. Prints the counts.";

/// Users per transaction by default.
pub const DEFAULT_BATCH: usize = 1_000;
/// The longest TOTP secret accepted: 512 bits, the SHA-512 block size.
const MAX_SECRET_BYTES: usize = 64;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The JSON lines file; `-` or none reads standard input.
    pub file: Option<PathBuf>,
    /// Users written per transaction.
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = batch_size)]
    pub batch: usize,
}

fn batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err("a number from 1 to 100000".into()),
    }
}

/// One line's problem: the line number (from 1), the field and what is
/// wrong with it, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.problem)
    }
}

/// A line that passed the checks.
#[derive(Debug)]
struct Entry {
    line: usize,
    username: String,
    password: Credential,
    roles: Vec<String>,
    totp: Option<totp::TotpSecret>,
}

enum Credential {
    Hash(String),
    Password(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Hash(_) => "Hash([redacted])",
            Credential::Password(_) => "Password([redacted])",
        })
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub lines: usize,
    pub users: usize,
    pub with_totp: usize,
    pub hashed_here: usize,
    pub batches: usize,
}

/// `users import`: reads, checks, then writes (see the module docs).
#[allow(clippy::print_stdout)]
pub async fn run(options: &Options, args: ImportArgs, clock: SharedClock) -> anyhow::Result<()> {
    let started = Instant::now();
    let input: Box<dyn BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        )),
    };
    let counts = import(options, input, args.batch, clock).await?;
    println!(
        "imported {} users ({} with TOTP, {} passwords hashed here) from {} lines in {} \
         transactions, {:.1} s",
        counts.users,
        counts.with_totp,
        counts.hashed_here,
        counts.lines,
        counts.batches,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads `input`, checks every line, then writes the users `batch` at a
/// time. Bad lines go to standard error and fail the import unwritten.
pub async fn import(
    options: &Options,
    input: impl BufRead,
    batch: usize,
    clock: SharedClock,
) -> anyhow::Result<Counts> {
    let (entries, mut errors, lines) = read(input)?;
    crate::ensure_private_dir(&options.data_dir)?;
    let store = Store::connect(&crate::database_url(options))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
    let usernames: Vec<String> = entries.iter().map(|e| e.username.clone()).collect();
    let taken = store.taken_usernames(&usernames).await?;
    for entry in entries.iter().filter(|e| taken.contains(&e.username)) {
        errors.push(LineError {
            line: entry.line,
            field: "username".into(),
            problem: "taken".into(),
        });
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        for error in &errors {
            eprintln!("{error}");
        }
        let mut bad: Vec<usize> = errors.iter().map(|e| e.line).collect();
        bad.dedup();
        anyhow::bail!(
            "{} of {} lines are bad (above); nothing was imported",
            bad.len(),
            lines
        );
    }
    let keys = options.data_key_source().load()?;
    let hasher = crate::password::Hasher::new(options.settings.password_hashes_at_once);
    let mut counts = Counts {
        lines,
        ..Counts::default()
    };
    for part in entries.chunks(batch) {
        let now = clock.unix();
        let mut users = Vec::with_capacity(part.len());
        let mut audit = Vec::with_capacity(part.len());
        for entry in part {
            let password_hash = match &entry.password {
                Credential::Hash(phc) => phc.clone(),
                Credential::Password(password) => {
                    counts.hashed_here += 1;
                    hasher.hash(password.clone()).await?
                }
            };
            let id = uuid::Uuid::new_v4().to_string();
            let sealed = entry.totp.as_ref().map(|secret| {
                let sealed = keys.seal(secret.as_bytes(), id.as_bytes());
                (sealed.key_id, sealed.blob)
            });
            audit.push(AuditEvent {
                at: now,
                kind: "user_created",
                outcome: Outcome::Ok,
                actor: None,
                subject: Some(id.clone()),
                session_id: None,
                detail: format!(
                    "roles={} source=import factor={}",
                    entry.roles.join(","),
                    if sealed.is_some() { "totp" } else { "none" }
                ),
            });
            users.push(ImportedUser {
                user: User {
                    id,
                    username: entry.username.clone(),
                    password_hash,
                    roles: entry.roles.clone(),
                    created_at: now,
                },
                totp: sealed,
            });
        }
        if let Err(e) = store.import_users(&users, audit, now).await {
            let why = match e {
                StoreError::Conflict => "a username was taken meanwhile".to_owned(),
                other => other.to_string(),
            };
            anyhow::bail!(
                "writing the batch from line {} failed ({why}); {} users from earlier lines \
                 were imported, none from line {} on",
                part[0].line,
                counts.users,
                part[0].line
            );
        }
        counts.users += users.len();
        counts.with_totp += users.iter().filter(|u| u.totp.is_some()).count();
        counts.batches += 1;
    }
    Ok(counts)
}

/// The checked entries, the bad lines' errors and the number of lines.
fn read(mut input: impl BufRead) -> anyhow::Result<(Vec<Entry>, Vec<LineError>, usize)> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            errors.push(error(line, "line", "not UTF-8"));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(line, text) {
            Ok(entry) => match first_line.get(&entry.username) {
                Some(first) => {
                    errors.push(error(line, "username", &format!("also on line {first}")))
                }
                None => {
                    first_line.insert(entry.username.clone(), line);
                    entries.push(entry);
                }
            },
            Err(mut bad) => errors.append(&mut bad),
        }
    }
    Ok((entries, errors, line))
}

fn error(line: usize, field: &str, problem: &str) -> LineError {
    LineError {
        line,
        field: field.to_owned(),
        problem: problem.to_owned(),
    }
}

/// One line, checked; every problem found, not only the first.
fn parse_line(line: usize, text: &str) -> Result<Entry, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, problem: &str| errors.push(error(line, field, problem));
    let object = match serde_json::from_str::<Value>(text) {
        // serde_json's syntax errors name a column, never the text.
        Err(e) => {
            return Err(vec![error(
                line,
                "line",
                &format!("not JSON (column {})", e.column()),
            )]);
        }
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(vec![error(line, "line", "not a JSON object")]),
    };
    for key in object.keys() {
        if !["username", "password", "password_hash", "roles", "totp"].contains(&key.as_str()) {
            bad(&field_name(key), "unknown field");
        }
    }
    let username = string(&object, "username", &mut bad).unwrap_or_default();
    if !object.contains_key("username") {
        bad("username", "required");
    }
    let password = match (object.get("password"), object.get("password_hash")) {
        (Some(_), Some(_)) => {
            bad("password", "give password or password_hash, not both");
            None
        }
        (None, None) => {
            bad("password_hash", "required (or password)");
            None
        }
        (Some(_), None) => string(&object, "password", &mut bad).map(Credential::Password),
        (None, Some(_)) => string(&object, "password_hash", &mut bad).and_then(|phc| {
            if is_argon2id_phc(&phc) {
                Some(Credential::Hash(phc))
            } else {
                bad("password_hash", "not an argon2id PHC string");
                None
            }
        }),
    };
    let mut roles = match object.get("roles") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            bad("roles", "must be an array of strings");
            Vec::new()
        }
    };
    let totp = match object.get("totp") {
        None => None,
        Some(Value::Object(totp)) => totp_secret(totp, &mut bad),
        Some(_) => {
            bad("totp", "must be an object");
            None
        }
    };
    // CreateUser's own checks; a hash stands in for a password that passes.
    let checked_password = match &password {
        Some(Credential::Password(p)) => p.as_str(),
        _ => "placeholder password",
    };
    if let Err(AuthError::Invalid(fields)) =
        crate::grpc::support::validate_new_user(&username, checked_password, &roles)
    {
        for (field, problem) in fields.iter() {
            // A missing or mistyped username was reported already.
            if field == "username" && !matches!(object.get("username"), Some(Value::String(_))) {
                continue;
            }
            bad(field, problem);
        }
    }
    roles.sort();
    roles.dedup();
    match password {
        Some(password) if errors.is_empty() => Ok(Entry {
            line,
            username,
            password,
            roles,
            totp,
        }),
        _ => Err(errors),
    }
}

/// `object[field]` as a string; reports another type.
fn string(
    object: &Map<String, Value>,
    field: &str,
    bad: &mut impl FnMut(&str, &str),
) -> Option<String> {
    match object.get(field)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            bad(field, "must be a string");
            None
        }
    }
}

/// A key as an error may name it: short, printable.
fn field_name(key: &str) -> String {
    let short: String = key.chars().take(32).collect();
    format!("{short:?}")
}

/// `totp`'s secret, decoded; its other fields must be the only parameters
/// padlock verifies with.
fn totp_secret(
    totp: &Map<String, Value>,
    bad: &mut impl FnMut(&str, &str),
) -> Option<totp::TotpSecret> {
    for (key, value) in totp {
        let ok = match key.as_str() {
            "secret" => true,
            "algorithm" => value
                .as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case("SHA1")),
            "digits" => value.as_u64() == Some(totp::DIGITS as u64),
            "period" => value.as_u64() == Some(totp::STEP_SECS),
            _ => {
                bad(&format!("totp.{}", field_name(key)), "unknown field");
                true
            }
        };
        if !ok {
            let only = match key.as_str() {
                "algorithm" => "SHA1".to_owned(),
                "digits" => totp::DIGITS.to_string(),
                _ => totp::STEP_SECS.to_string(),
            };
            bad(&format!("totp.{key}"), &format!("only {only} is supported"));
        }
    }
    let Some(secret) = totp.get("secret") else {
        bad("totp.secret", "required");
        return None;
    };
    let Some(text) = secret.as_str() else {
        bad("totp.secret", "must be a string");
        return None;
    };
    let Some(bytes) = decode_base32(text) else {
        bad("totp.secret", "not base32 (RFC 4648: A-Z and 2-7)");
        return None;
    };
    if bytes.len() < 16 {
        bad("totp.secret", "shorter than 128 bits (RFC 4226 section 4)");
        return None;
    }
    if bytes.len() > MAX_SECRET_BYTES {
        bad("totp.secret", "longer than 512 bits");
        return None;
    }
    Some(totp::TotpSecret::from_bytes(bytes))
}

/// RFC 4648 base32 as authenticator apps show it: either case, spaces and
/// trailing `=` allowed.
fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let canonical: String = text
        .trim_end_matches('=')
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let secret = totp_rs::Secret::try_from_base32(canonical).ok()?;
    Some(secret.as_bytes().to_vec())
}

/// An argon2id PHC string the hasher can verify: parameters in range, a
/// salt and an output.
fn is_argon2id_phc(phc: &str) -> bool {
    use argon2::password_hash::PasswordHash;
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    parsed.algorithm == argon2::Algorithm::Argon2id.ident()
        && parsed.salt.is_some()
        && parsed.hash.is_some()
        && argon2::Params::try_from(&parsed).is_ok()
        && parsed
            .version
            .is_none_or(|v| argon2::Version::try_from(v).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<(String, String)> {
        match parse_line(1, text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.field, e.problem)).collect(),
        }
    }

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                       2wI0bX5qUXnRNXsXj1d6bqBCpZxGLJAbJ2pD5R0xIqw";

    #[test]
    fn a_good_line_parses() {
        let line = format!(
            r#"{{"username": "alice", "password_hash": "{PHC}", "roles": ["operator", "support", "operator"],
                "totp": {{"secret": "jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp", "algorithm": "SHA1", "digits": 6, "period": 30}}}}"#
        );
        let entry = parse_line(1, &line).unwrap();
        assert_eq!(entry.username, "alice");
        assert_eq!(entry.roles, ["operator", "support"]);
        assert_eq!(entry.totp.unwrap().as_bytes().len(), 20);
        assert!(matches!(entry.password, Credential::Hash(_)));
    }

    #[test]
    fn every_problem_is_named_by_field_without_its_value() {
        let found = errors(
            r#"{"username": "bad name", "password": "tiny1", "roles": ["Ops"], "totp": {"secret": "JBSWY3DP", "digits": 8}, "colour": 1}"#,
        );
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        for field in [
            "\"colour\"",
            "username",
            "password",
            "roles",
            "totp.secret",
            "totp.digits",
        ] {
            assert!(fields.contains(&field), "{field} in {found:?}");
        }
        let text = format!("{found:?}");
        for value in ["bad name", "tiny1", "JBSWY3DP", "Ops"] {
            assert!(!text.contains(value), "{value} echoed: {text}");
        }
        assert_eq!(
            errors(
                r#"{"username": "a", "password_hash": "$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"}"#
            ),
            [("password_hash".into(), "not an argon2id PHC string".into())]
        );
        assert_eq!(
            errors(&format!(
                r#"{{"username": "a", "password": "long enough", "password_hash": "{PHC}"}}"#
            ))[0]
                .0,
            "password"
        );
        assert_eq!(errors("{\"username\": \"a\"")[0].0, "line");
        assert_eq!(errors("[1]")[0].1, "not a JSON object");
        assert_eq!(
            errors(r#"{"password": "long enough"}"#),
            [("username".into(), "required".into())]
        );
    }

    #[test]
    fn duplicates_and_blank_lines() {
        let input = format!(
            "{{\"username\": \"a\", \"password_hash\": \"{PHC}\"}}\n\n\
             {{\"username\": \"a\", \"password\": \"long enough\"}}\n"
        );
        let (entries, errors, lines) = read(input.as_bytes()).unwrap();
        assert_eq!((entries.len(), lines), (1, 3));
        assert_eq!(errors, [error(3, "username", "also on line 1")]);
    }

    #[test]
    fn base32_as_apps_show_it() {
        assert_eq!(decode_base32("MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(decode_base32("mzxw 6ytb oi======").unwrap(), b"foobar");
        assert_eq!(decode_base32("MZXW6YTBO1"), None);
        assert_eq!(decode_base32("MZXW6YTB!I"), None);
    }
}
