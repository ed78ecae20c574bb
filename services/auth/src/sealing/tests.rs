//! Sealing, opening, key rotation and key files.

use std::os::unix::fs::PermissionsExt;

use super::*;

const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];

fn spec(entries: &[(&str, &[u8])]) -> String {
    entries
        .iter()
        .map(|(id, key)| format!("{id}:{}", BASE64.encode(key)))
        .collect::<Vec<_>>()
        .join(",")
}

fn keys(entries: &[(&str, &[u8])]) -> DataKeys {
    DataKeys::parse(&spec(entries)).unwrap()
}

#[test]
fn seal_then_open_round_trips() {
    let keys = keys(&[("k1", &KEY_A)]);
    let sealed = keys.seal(b"totp secret", b"user-42");
    assert_eq!(sealed.key_id, "k1");
    assert_eq!(
        sealed.blob.len(),
        NONCE_BYTES + b"totp secret".len() + TAG_BYTES
    );
    assert!(!sealed.blob.windows(11).any(|w| w == b"totp secret"));
    let opened = keys.open(&sealed.key_id, &sealed.blob, b"user-42").unwrap();
    assert_eq!(opened, b"totp secret");
}

#[test]
fn sealing_twice_uses_fresh_nonces() {
    let keys = keys(&[("k1", &KEY_A)]);
    let a = keys.seal(b"same", b"user-42");
    let b = keys.seal(b"same", b"user-42");
    assert_ne!(a.blob[..NONCE_BYTES], b.blob[..NONCE_BYTES]);
    assert_ne!(a.blob, b.blob);
}

#[test]
fn ciphertext_moved_to_another_owner_does_not_open() {
    let keys = keys(&[("k1", &KEY_A)]);
    let sealed = keys.seal(b"totp secret", b"user-42");
    assert_eq!(
        keys.open(&sealed.key_id, &sealed.blob, b"user-43"),
        Err(SealError::Authentication)
    );
    assert_eq!(
        keys.open(&sealed.key_id, &sealed.blob, b""),
        Err(SealError::Authentication)
    );
}

#[test]
fn tampering_with_any_byte_is_detected() {
    let keys = keys(&[("k1", &KEY_A)]);
    let sealed = keys.seal(b"totp secret", b"user-42");
    // Nonce, ciphertext and tag bytes alike.
    for i in 0..sealed.blob.len() {
        let mut blob = sealed.blob.clone();
        blob[i] ^= 0x01;
        assert_eq!(
            keys.open("k1", &blob, b"user-42"),
            Err(SealError::Authentication),
            "byte {i}"
        );
    }
    let truncated = &sealed.blob[..sealed.blob.len() - 1];
    assert_eq!(
        keys.open("k1", truncated, b"user-42"),
        Err(SealError::Authentication)
    );
}

#[test]
fn short_blobs_and_unknown_keys_are_distinct_errors() {
    let keys = keys(&[("k1", &KEY_A)]);
    let sealed = keys.seal(b"", b"user-42");
    assert_eq!(sealed.blob.len(), NONCE_BYTES + TAG_BYTES);
    assert_eq!(keys.open("k1", &sealed.blob, b"user-42"), Ok(Vec::new()));
    assert_eq!(
        keys.open(
            "k1",
            &sealed.blob[..NONCE_BYTES + TAG_BYTES - 1],
            b"user-42"
        ),
        Err(SealError::TooShort)
    );
    assert_eq!(keys.open("k1", &[], b"user-42"), Err(SealError::TooShort));
    assert_eq!(
        keys.open("k9", &sealed.blob, b"user-42"),
        Err(SealError::UnknownKeyId)
    );
}

#[test]
fn rotation_opens_old_data_and_seals_with_the_new_key() {
    let old = keys(&[("k1", &KEY_A)]);
    let sealed_by_k1 = old.seal(b"old secret", b"user-42");

    let rotated = keys(&[("k2", &KEY_B), ("k1", &KEY_A)]);
    assert_eq!(rotated.current_key_id(), "k2");
    assert_eq!(
        rotated.open("k1", &sealed_by_k1.blob, b"user-42").unwrap(),
        b"old secret"
    );
    let sealed_by_k2 = rotated.seal(b"new secret", b"user-42");
    assert_eq!(sealed_by_k2.key_id, "k2");
    assert_eq!(
        rotated.open("k2", &sealed_by_k2.blob, b"user-42").unwrap(),
        b"new secret"
    );
    // The old configuration cannot read what the new key sealed, and a
    // blob relabelled with the other key id does not open.
    assert_eq!(
        old.open("k2", &sealed_by_k2.blob, b"user-42"),
        Err(SealError::UnknownKeyId)
    );
    assert_eq!(
        rotated.open("k1", &sealed_by_k2.blob, b"user-42"),
        Err(SealError::Authentication)
    );
}

#[test]
fn spec_round_trips_in_order() {
    let spec = spec(&[("k2", &KEY_B), ("k1", &KEY_A)]);
    let keys = DataKeys::parse(&spec).unwrap();
    assert_eq!(keys.to_spec(), spec);

    let generated = DataKeys::generate("fresh_key-2").unwrap();
    let reparsed = DataKeys::parse(&generated.to_spec()).unwrap();
    assert_eq!(reparsed.current_key_id(), "fresh_key-2");
    let sealed = generated.seal(b"x", b"aad");
    assert_eq!(
        reparsed.open(&sealed.key_id, &sealed.blob, b"aad").unwrap(),
        b"x"
    );
}

#[test]
fn parse_tolerates_surrounding_whitespace() {
    let padded = format!(
        " {} ,\n {}\n",
        spec(&[("k2", &KEY_B)]),
        spec(&[("k1", &KEY_A)])
    );
    let keys = DataKeys::parse(&padded).unwrap();
    assert_eq!(keys.current_key_id(), "k2");
    assert_eq!(keys.to_spec(), spec(&[("k2", &KEY_B), ("k1", &KEY_A)]));
}

#[test]
fn generated_keys_differ() {
    let a = DataKeys::generate("k1").unwrap().to_spec();
    let b = DataKeys::generate("k1").unwrap().to_spec();
    assert_ne!(a, b);
}

#[test]
fn parse_errors_name_the_problem_without_key_bytes() {
    let a = BASE64.encode(KEY_A);
    let short = BASE64.encode([0xA1; 16]);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "data key spec is empty"),
        ("  \n".to_string(), "data key spec is empty"),
        (a.clone(), "data key entry 1 is not `id:base64key`"),
        (format!("k1:{a},"), "data key entry 2 is not `id:base64key`"),
        (format!(":{a}"), "data key entry 1 has an invalid id"),
        (
            format!("k1:{a},k/2:{a}"),
            "data key entry 2 has an invalid id",
        ),
        (
            format!("{}:{a}", "k".repeat(33)),
            "data key entry 1 has an invalid id",
        ),
        (format!("k1:{a}!"), "data key \"k1\" is not valid base64"),
        (
            format!("k1:{short}"),
            "data key \"k1\" is 16 bytes, want 32",
        ),
        (
            format!("k1:{a},k1:{a}"),
            "data key id \"k1\" appears more than once",
        ),
    ];
    for (spec, expected) in cases {
        let err = DataKeys::parse(&spec).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{spec:?}: {err}");
        assert!(!err.contains(&a) && !err.contains(&short), "{err}");
    }
    assert!(DataKeys::parse(&format!("{}:{a}", "k".repeat(32))).is_ok());
    assert!(DataKeys::generate("bad id").is_err());
    assert!(DataKeys::generate("").is_err());
}

#[test]
fn debug_shows_key_ids_only() {
    let keys = keys(&[("k2", &KEY_B), ("k1", &KEY_A)]);
    let printed = format!("{keys:?}");
    assert_eq!(printed, r#"DataKeys { current: "k2", older: ["k1"] }"#);
}

#[test]
fn load_or_generate_creates_a_private_file_and_reloads_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data").join("keys");
    let path = dir.join("data-keys");

    let created = DataKeys::load_or_generate(&path).unwrap();
    assert_eq!(created.current_key_id(), FIRST_KEY_ID);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("data")), 0o700);
    // Only the key file is left behind, holding the spec.
    let entries: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("data-keys")]);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        format!("{}\n", created.to_spec())
    );

    let sealed = created.seal(b"secret", b"user-1");
    let reloaded = DataKeys::load_or_generate(&path).unwrap();
    assert_eq!(reloaded.to_spec(), created.to_spec());
    assert_eq!(
        reloaded
            .open(&sealed.key_id, &sealed.blob, b"user-1")
            .unwrap(),
        b"secret"
    );
}

#[test]
fn load_or_generate_reads_an_operator_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-keys");
    let spec = spec(&[("k2", &KEY_B), ("k1", &KEY_A)]);
    fs::write(&path, format!("{spec}\n")).unwrap();
    let keys = DataKeys::load_or_generate(&path).unwrap();
    assert_eq!(keys.to_spec(), spec);
}

#[test]
fn load_or_generate_refuses_a_broken_file_without_replacing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-keys");
    fs::write(&path, "k1:not-a-key").unwrap();
    let err = DataKeys::load_or_generate(&path).unwrap_err();
    let KeysError::File { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(**source, KeysError::InvalidBase64 { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("data-keys"), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "k1:not-a-key");
}

#[test]
fn each_source_loads_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(&[("k2", &KEY_B), ("k1", &KEY_A)]);
    let from_spec = DataKeySource::Spec(Secret::new(spec.clone()));
    assert_eq!(from_spec.load().unwrap().to_spec(), spec);
    assert_eq!(from_spec.path(), None);

    let file = dir.path().join("keys");
    let from_file = DataKeySource::File(file.clone());
    assert!(matches!(from_file.load(), Err(KeysError::Io { .. })));
    assert!(!file.exists(), "a configured file is never generated");
    fs::write(&file, format!("{spec}\n")).unwrap();
    assert_eq!(from_file.load().unwrap().to_spec(), spec);

    let generated = DataKeySource::Generated(dir.path().join("data").join("data-keys"));
    let first = generated.load().unwrap();
    assert_eq!(generated.load().unwrap().to_spec(), first.to_spec());
}

#[test]
fn add_key_puts_a_fresh_key_first_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-keys");
    let source = DataKeySource::File(path.clone());
    fs::write(&path, spec(&[("k1", &KEY_A)])).unwrap();
    let old = source.load().unwrap();
    let sealed = old.seal(b"secret", b"user-1");

    let added = source.add_key(None).unwrap();
    assert_eq!(added.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
    let reloaded = source.load().unwrap();
    assert_eq!(reloaded.to_spec(), added.to_spec());
    assert_eq!(
        reloaded.open("k1", &sealed.blob, b"user-1").unwrap(),
        b"secret"
    );
    assert_eq!(reloaded.seal(b"x", b"y").key_id, "k2");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let named = source.add_key(Some("2027-q1")).unwrap();
    assert_eq!(named.key_ids().collect::<Vec<_>>(), ["2027-q1", "k2", "k1"]);
    assert_eq!(source.add_key(None).unwrap().current_key_id(), "k3");
    assert!(matches!(
        source.add_key(Some("k1")),
        Err(KeysError::DuplicateKeyId { .. })
    ));
    assert!(matches!(
        source.add_key(Some("bad id")),
        Err(KeysError::InvalidKeyId { .. })
    ));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    let from_env = DataKeySource::Spec(Secret::new(spec(&[("k1", &KEY_A)])));
    assert!(matches!(from_env.add_key(None), Err(KeysError::NotAFile)));
}

#[test]
fn publishing_never_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-keys");
    fs::write(&path, "first").unwrap();
    let err = publish_new_file(&path, b"second").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read_to_string(&path).unwrap(), "first");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary file left behind"
    );
}

#[test]
fn a_mac_verifies_only_its_message_and_survives_rotation() {
    let k1 = DataKeys::generate("k1").unwrap();
    let (id, tag) = k1.mac(b"123456");
    assert_eq!(id, "k1");
    assert!(k1.verify_mac("k1", b"123456", &tag));
    assert!(!k1.verify_mac("k1", b"123457", &tag));
    assert!(!k1.verify_mac("k9", b"123456", &tag));
    let k2 = DataKeys::generate("k2").unwrap();
    let both = DataKeys::parse(&format!("{},{}", k2.to_spec(), k1.to_spec())).unwrap();
    assert!(both.verify_mac("k1", b"123456", &tag));
    assert_eq!(both.mac(b"x").0, "k2");
}
