use super::*;
use std::os::unix::fs::PermissionsExt as _;

#[test]
fn tokens_are_byte_for_byte_what_jsonwebtoken_encode_makes() {
    let ring = KeyRing::generate();
    let claims = Claims {
        iss: "https://auth.padlock.test".into(),
        aud: "padlock".into(),
        sub: "u-1".into(),
        preferred_username: "tina \"ü\" <tc>".into(),
        roles: vec!["operator".into()],
        sid: "s-1".into(),
        iat: 1_800_000_000,
        exp: 1_800_000_600,
        jti: "j-1".into(),
        auth_time: 1_800_000_000,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        acr: "aal2".into(),
        mfa_at: Some(1_800_000_000),
        mfa_method: Some("totp".into()),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(ring.current.kid().to_owned());
    let key = jsonwebtoken::EncodingKey::from_ed_der(&ring.current.to_pkcs8_der());
    let expected = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(ring.sign(&claims).unwrap(), expected);
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A format that writes `tagged` + PEM and reads plain PEM as outdated,
/// like a sealing format meeting files from before it.
struct Tagged;

impl KeyFileFormat for Tagged {
    fn encode(&self, key: &SigningKey) -> String {
        format!("tagged\n{}", key.to_pkcs8_pem())
    }

    fn decode(&self, text: &str) -> Result<Decoded, KeyFormatError> {
        match text.strip_prefix("tagged\n") {
            Some(pem) => Ok(Decoded {
                key: SigningKey::from_pkcs8_pem(pem)?,
                rewrite: false,
            }),
            None => Ok(Decoded {
                key: SigningKey::from_pkcs8_pem(text)?,
                rewrite: true,
            }),
        }
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn load_or_generate_writes_private_files_and_is_stable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let first = KeyRing::load_or_generate(&dir, &PlainPem).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(CURRENT_KEY_FILE)), 0o600);
    assert!(first.previous.is_none());
    assert!(!dir.join(PREVIOUS_KEY_FILE).exists());

    let second = KeyRing::load_or_generate(&dir, &PlainPem).unwrap();
    assert_eq!(second.current.kid(), first.current.kid());
    // No temporary files are left behind, and nothing was locked.
    assert_eq!(files(&dir), vec![CURRENT_KEY_FILE]);
}

#[test]
fn rotate_moves_current_to_previous_and_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let original = KeyRing::load_or_generate(dir, &PlainPem).unwrap();
    let rotated = KeyRing::rotate(dir, &PlainPem).unwrap();
    assert_ne!(rotated.current.kid(), original.current.kid());
    assert_eq!(
        rotated.previous.as_ref().map(SigningKey::kid),
        Some(original.current.kid())
    );
    assert_eq!(mode(&dir.join(CURRENT_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(PREVIOUS_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);

    let reloaded = KeyRing::load_or_generate(dir, &PlainPem).unwrap();
    assert_eq!(reloaded.current.kid(), rotated.current.kid());
    assert_eq!(
        reloaded.previous.as_ref().map(SigningKey::kid),
        Some(original.current.kid())
    );

    let twice = KeyRing::rotate(dir, &PlainPem).unwrap();
    assert_eq!(
        twice.previous.as_ref().map(SigningKey::kid),
        Some(rotated.current.kid())
    );
    let kids: Vec<_> = twice.jwks().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(
        kids,
        vec![
            twice.current.kid().to_owned(),
            rotated.current.kid().to_owned()
        ]
    );
}

#[test]
fn rotate_without_a_current_key_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = KeyRing::rotate(tmp.path(), &PlainPem).unwrap_err();
    assert!(
        matches!(err, KeyError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound)
    );
}

#[test]
fn rotate_writes_in_the_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    KeyRing::load_or_generate(dir, &PlainPem).unwrap();
    KeyRing::rotate(dir, &Tagged).unwrap();
    for name in [CURRENT_KEY_FILE, PREVIOUS_KEY_FILE] {
        assert!(
            fs::read_to_string(dir.join(name))
                .unwrap()
                .starts_with("tagged\n")
        );
    }
}

#[test]
fn from_files_reads_configured_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let a = SigningKey::generate();
    let b = SigningKey::generate();
    let a_path = tmp.path().join("a.pem");
    let b_path = tmp.path().join("b.pem");
    fs::write(&a_path, a.to_pkcs8_pem()).unwrap();
    fs::write(&b_path, b.to_pkcs8_pem()).unwrap();

    let ring = KeyRing::from_files(&a_path, Some(&b_path), &PlainPem).unwrap();
    assert_eq!(ring.current.kid(), a.kid());
    assert_eq!(ring.previous.as_ref().map(SigningKey::kid), Some(b.kid()));

    let only = KeyRing::from_files(&b_path, None, &PlainPem).unwrap();
    assert_eq!(only.current.kid(), b.kid());
    assert!(only.previous.is_none());

    let missing = tmp.path().join("missing.pem");
    assert!(matches!(
        KeyRing::from_files(&a_path, Some(&missing), &PlainPem),
        Err(KeyError::Io { .. })
    ));
    fs::write(&missing, "not a key").unwrap();
    assert!(matches!(
        KeyRing::from_files(&missing, None, &PlainPem),
        Err(KeyError::Unreadable { .. })
    ));
}

#[test]
fn from_files_never_rewrites() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.pem");
    let pem = SigningKey::generate().to_pkcs8_pem();
    fs::write(&path, &pem).unwrap();
    KeyRing::from_files(&path, None, &Tagged).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), pem);
    assert_eq!(files(tmp.path()), vec!["a.pem"]);
}

#[test]
fn loading_rewrites_outdated_files_in_the_format_keeping_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    KeyRing::load_or_generate(dir, &PlainPem).unwrap();
    let plain = KeyRing::rotate(dir, &PlainPem).unwrap();

    let upgraded = KeyRing::load_or_generate(dir, &Tagged).unwrap();
    assert_eq!(upgraded.current.kid(), plain.current.kid());
    assert_eq!(
        upgraded.previous.as_ref().map(SigningKey::kid),
        plain.previous.as_ref().map(SigningKey::kid)
    );
    for name in [CURRENT_KEY_FILE, PREVIOUS_KEY_FILE] {
        let text = fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.starts_with("tagged\n"), "{name}");
        assert_eq!(mode(&dir.join(name)), 0o600);
    }
    assert_eq!(
        files(dir),
        vec![LOCK_FILE, CURRENT_KEY_FILE, PREVIOUS_KEY_FILE]
    );
}

#[test]
fn rewrite_file_reports_what_it_did() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(CURRENT_KEY_FILE);
    assert_eq!(
        KeyRing::rewrite_file(&path, &Tagged).unwrap(),
        Rewrite::Missing
    );
    let key = SigningKey::generate();
    fs::write(&path, key.to_pkcs8_pem()).unwrap();
    assert_eq!(
        KeyRing::rewrite_file(&path, &Tagged).unwrap(),
        Rewrite::Rewritten
    );
    assert_eq!(
        KeyRing::rewrite_file(&path, &Tagged).unwrap(),
        Rewrite::UpToDate
    );
    let back = KeyRing::from_files(&path, None, &Tagged).unwrap();
    assert_eq!(back.current.kid(), key.kid());
    fs::write(&path, "garbage").unwrap();
    assert!(matches!(
        KeyRing::rewrite_file(&path, &Tagged),
        Err(KeyError::Unreadable { .. })
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
}

/// A format whose decode lets the test replace the file between the
/// read and the rewrite, as a concurrent rotation would.
struct Racing<'a> {
    path: &'a Path,
    replacement: String,
}

impl KeyFileFormat for Racing<'_> {
    fn encode(&self, key: &SigningKey) -> String {
        Tagged.encode(key)
    }

    fn decode(&self, text: &str) -> Result<Decoded, KeyFormatError> {
        let decoded = Tagged.decode(text)?;
        if decoded.rewrite {
            fs::write(self.path, &self.replacement).unwrap();
        }
        Ok(decoded)
    }
}

#[test]
fn a_file_changed_during_a_rewrite_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(CURRENT_KEY_FILE);
    fs::write(&path, SigningKey::generate().to_pkcs8_pem()).unwrap();
    let rotated = Tagged.encode(&SigningKey::generate());
    let racing = Racing {
        path: &path,
        replacement: rotated.clone(),
    };
    assert_eq!(
        KeyRing::rewrite_file(&path, &racing).unwrap(),
        Rewrite::ChangedMeanwhile
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), rotated);
}

#[test]
fn corrupt_current_file_is_reported_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(CURRENT_KEY_FILE);
    fs::write(&path, "garbage").unwrap();
    let err = KeyRing::load_or_generate(tmp.path(), &PlainPem).unwrap_err();
    assert!(matches!(err, KeyError::Unreadable { .. }));
    assert!(err.to_string().contains(CURRENT_KEY_FILE), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
}

#[test]
fn publish_if_absent_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join(CURRENT_KEY_FILE);
    assert!(publish_if_absent(tmp.path(), &target, "first").unwrap());
    assert!(!publish_if_absent(tmp.path(), &target, "second").unwrap());
    assert_eq!(fs::read_to_string(&target).unwrap(), "first");
}

#[test]
fn debug_of_key_ring_shows_no_pem() {
    let ring = KeyRing::new(SigningKey::generate(), Some(SigningKey::generate()));
    let debug = format!("{ring:?}");
    assert!(debug.contains(ring.current.kid()));
    assert!(!debug.contains("PRIVATE KEY"));
    let pem = ring.current.to_pkcs8_pem();
    assert!(!debug.contains(pem.lines().nth(1).unwrap()));
}
