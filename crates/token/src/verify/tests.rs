use super::*;
use crate::key::SigningKey;
use crate::ring::KeyRing;
use ed25519_dalek::Signer as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISS: &str = "https://auth.padlock.test";
const AUD: &str = "padlock-deploy";
const NOW: i64 = 1_700_000_000;

fn claims() -> Claims {
    Claims {
        iss: ISS.into(),
        aud: AUD.into(),
        sub: "user-1".into(),
        preferred_username: "alice".into(),
        roles: vec!["operator".into()],
        sid: "session-1".into(),
        iat: NOW,
        exp: NOW + 600,
        jti: "jti-1".into(),
        auth_time: NOW - 30,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        acr: "mfa".into(),
        mfa_at: Some(NOW - 10),
        mfa_method: Some("totp".into()),
    }
}

fn verifier(ring: &KeyRing) -> Verifier {
    Verifier::new(&ring.jwks(), ISS, AUD)
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

/// A token with an arbitrary header, signed with `key` by hand.
fn sign_raw(key: &SigningKey, header: &Value, payload: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.inner.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn payload() -> Value {
    serde_json::to_value(claims()).unwrap()
}

#[test]
fn signed_token_verifies_and_round_trips_claims() {
    let ring = KeyRing::generate();
    let token = ring.sign(&claims()).unwrap();
    assert_eq!(verifier(&ring).verify(&token, NOW).unwrap(), claims());

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(ring.current.kid()));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(
        Verifier::decode_header_kid(&token).unwrap(),
        ring.current.kid()
    );
}

#[test]
fn claims_without_mfa_verify() {
    let ring = KeyRing::generate();
    let mut c = claims();
    c.mfa_at = None;
    c.mfa_method = None;
    let token = ring.sign(&c).unwrap();
    assert_eq!(verifier(&ring).verify(&token, NOW).unwrap(), c);
}

#[test]
fn token_from_before_rotation_verifies_with_rotated_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let old_ring = KeyRing::load_or_generate(tmp.path(), &crate::PlainPem).unwrap();
    let old_token = old_ring.sign(&claims()).unwrap();

    let rotated = KeyRing::rotate(tmp.path(), &crate::PlainPem).unwrap();
    let v = verifier(&rotated);
    assert_eq!(v.key_count(), 2);
    assert_eq!(v.verify(&old_token, NOW).unwrap(), claims());
    let new_token = rotated.sign(&claims()).unwrap();
    assert_eq!(v.verify(&new_token, NOW).unwrap(), claims());

    // After a second rotation the oldest key is gone from the set.
    let twice = KeyRing::rotate(tmp.path(), &crate::PlainPem).unwrap();
    assert_eq!(
        verifier(&twice).verify(&old_token, NOW),
        Err(TokenError::UnknownKid(old_ring.current.kid().to_owned()))
    );
}

#[test]
fn token_from_a_key_outside_the_set_is_unknown_kid() {
    let trusted = KeyRing::generate();
    let stranger = KeyRing::generate();
    let token = stranger.sign(&claims()).unwrap();
    let err = verifier(&trusted).verify(&token, NOW).unwrap_err();
    assert_eq!(
        err,
        TokenError::UnknownKid(stranger.current.kid().to_owned())
    );
    assert!(!err.to_string().contains(stranger.current.kid()));
}

#[test]
fn alg_none_is_refused() {
    let ring = KeyRing::generate();
    let kid = ring.current.kid();
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        for sig in ["", "AAAA"] {
            let token = format!("{}.{}.{sig}", b64(&header), b64(&payload()));
            assert_eq!(
                verifier(&ring).verify(&token, NOW),
                Err(TokenError::Algorithm),
                "alg {alg} sig {sig:?}"
            );
        }
    }
    let no_alg = format!("{}.{}.AAAA", b64(&json!({"kid": kid})), b64(&payload()));
    assert_eq!(
        verifier(&ring).verify(&no_alg, NOW),
        Err(TokenError::Algorithm)
    );
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let ring = KeyRing::generate();
    let jwk = ring.current.public_jwk();
    let raw = URL_SAFE_NO_PAD.decode(&jwk.x).unwrap();
    for secret in [raw.as_slice(), jwk.x.as_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(jwk.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(
            verifier(&ring).verify(&token, NOW),
            Err(TokenError::Algorithm)
        );
    }
}

#[test]
fn other_algorithms_are_refused() {
    let ring = KeyRing::generate();
    let kid = ring.current.kid();
    for alg in [
        "RS256", "PS256", "ES256", "HS512", "Ed25519", "eddsa", "EdDSA ",
    ] {
        // Signed with the real key, so only the alg name is wrong.
        let token = sign_raw(&ring.current, &json!({"alg": alg, "kid": kid}), &payload());
        assert_eq!(
            verifier(&ring).verify(&token, NOW),
            Err(TokenError::Algorithm),
            "alg {alg}"
        );
    }
}

#[test]
fn missing_or_empty_kid_is_refused() {
    let ring = KeyRing::generate();
    for header in [
        json!({"alg": "EdDSA", "typ": "JWT"}),
        json!({"alg": "EdDSA", "kid": ""}),
    ] {
        let token = sign_raw(&ring.current, &header, &payload());
        assert_eq!(
            verifier(&ring).verify(&token, NOW),
            Err(TokenError::MissingKid)
        );
        assert_eq!(
            Verifier::decode_header_kid(&token),
            Err(TokenError::MissingKid)
        );
    }
}

#[test]
fn wrong_issuer_is_refused() {
    let ring = KeyRing::generate();
    let mut c = claims();
    c.iss = format!("{ISS}/");
    let token = ring.sign(&c).unwrap();
    assert_eq!(verifier(&ring).verify(&token, NOW), Err(TokenError::Issuer));
}

#[test]
fn wrong_audience_is_refused() {
    let ring = KeyRing::generate();
    let mut c = claims();
    c.aud = "padlock-gateway".into();
    let token = ring.sign(&c).unwrap();
    assert_eq!(
        verifier(&ring).verify(&token, NOW),
        Err(TokenError::Audience)
    );
    // An audience array is not what padlock issues.
    let mut p = payload();
    p["aud"] = json!([AUD]);
    let kid = ring.current.kid();
    let token = sign_raw(&ring.current, &json!({"alg": "EdDSA", "kid": kid}), &p);
    assert_eq!(
        verifier(&ring).verify(&token, NOW),
        Err(TokenError::Malformed)
    );
}

#[test]
fn expiry_allows_exactly_the_leeway() {
    let ring = KeyRing::generate();
    let c = claims();
    let token = ring.sign(&c).unwrap();
    let v = verifier(&ring);
    assert!(v.verify(&token, c.exp).is_ok());
    assert!(v.verify(&token, c.exp + LEEWAY_SECS).is_ok());
    assert_eq!(
        v.verify(&token, c.exp + LEEWAY_SECS + 1),
        Err(TokenError::Expired)
    );
}

#[test]
fn issued_in_the_future_beyond_leeway_is_refused() {
    let ring = KeyRing::generate();
    let c = claims();
    let token = ring.sign(&c).unwrap();
    let v = verifier(&ring);
    assert!(v.verify(&token, c.iat - LEEWAY_SECS).is_ok());
    assert_eq!(
        v.verify(&token, c.iat - LEEWAY_SECS - 1),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn mfa_at_in_the_future_is_refused() {
    let ring = KeyRing::generate();
    let v = verifier(&ring);
    let mut c = claims();
    c.mfa_at = Some(NOW + LEEWAY_SECS);
    assert!(v.verify(&ring.sign(&c).unwrap(), NOW).is_ok());
    c.mfa_at = Some(NOW + LEEWAY_SECS + 1);
    assert_eq!(
        v.verify(&ring.sign(&c).unwrap(), NOW),
        Err(TokenError::MfaInFuture)
    );
}

#[test]
fn extreme_times_do_not_overflow() {
    let ring = KeyRing::generate();
    let v = verifier(&ring);
    let mut c = claims();
    c.exp = i64::MAX;
    assert!(v.verify(&ring.sign(&c).unwrap(), NOW).is_ok());
    c.mfa_at = Some(i64::MAX);
    assert_eq!(
        v.verify(&ring.sign(&c).unwrap(), NOW),
        Err(TokenError::MfaInFuture)
    );
    assert_eq!(
        v.verify(&ring.sign(&claims()).unwrap(), i64::MAX),
        Err(TokenError::Expired)
    );
    let mut c = claims();
    c.iat = i64::MAX;
    assert_eq!(
        v.verify(&ring.sign(&c).unwrap(), NOW),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn payload_swapped_after_signing_is_refused() {
    let ring = KeyRing::generate();
    let genuine = ring.sign(&claims()).unwrap();
    let mut elevated = claims();
    elevated.roles.push("support".into());
    let elevated_payload = b64(&serde_json::to_value(&elevated).unwrap());

    let parts: Vec<&str> = genuine.split('.').collect();
    let forged = format!("{}.{elevated_payload}.{}", parts[0], parts[2]);
    assert_eq!(
        verifier(&ring).verify(&forged, NOW),
        Err(TokenError::Signature)
    );
    // A signature from another token of the same key does not transfer.
    let other = ring.sign(&elevated).unwrap();
    let other_sig = other.rsplit('.').next().unwrap();
    let spliced = format!("{}.{}.{other_sig}", parts[0], parts[1]);
    assert_eq!(
        verifier(&ring).verify(&spliced, NOW),
        Err(TokenError::Signature)
    );
}

#[test]
fn jku_and_jwk_headers_are_ignored_in_favour_of_the_set() {
    let ring = KeyRing::generate();
    let attacker = SigningKey::generate();
    let v = verifier(&ring);

    // The attacker signs with their own key, names the trusted kid and
    // offers their key inline and by URL: the set's key decides.
    let header = json!({
        "alg": "EdDSA",
        "kid": ring.current.kid(),
        "jwk": attacker.public_jwk(),
        "jku": "https://evil.example/jwks.json",
        "x5u": "https://evil.example/cert.pem",
    });
    let forged = sign_raw(&attacker, &header, &payload());
    assert_eq!(v.verify(&forged, NOW), Err(TokenError::Signature));

    // The attacker's own kid with their jwk inline is simply unknown.
    let mut header = header;
    header["kid"] = json!(attacker.kid());
    let forged = sign_raw(&attacker, &header, &payload());
    assert_eq!(
        v.verify(&forged, NOW),
        Err(TokenError::UnknownKid(attacker.kid().to_owned()))
    );

    // A genuine token that happens to carry such headers still verifies
    // against the set.
    let header = json!({
        "alg": "EdDSA",
        "kid": ring.current.kid(),
        "jku": "https://evil.example/jwks.json",
    });
    let genuine = sign_raw(&ring.current, &header, &payload());
    assert_eq!(v.verify(&genuine, NOW).unwrap(), claims());
}

#[test]
fn crit_header_is_refused() {
    let ring = KeyRing::generate();
    let header = json!({"alg": "EdDSA", "kid": ring.current.kid(), "crit": ["b64"], "b64": false});
    let token = sign_raw(&ring.current, &header, &payload());
    assert_eq!(
        verifier(&ring).verify(&token, NOW),
        Err(TokenError::Malformed)
    );
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let ring = KeyRing::generate();
    let token = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(
        verifier(&ring).verify(&token, NOW),
        Err(TokenError::Oversized)
    );
    assert_eq!(
        Verifier::decode_header_kid(&token),
        Err(TokenError::Oversized)
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let ring = KeyRing::generate();
    let v = verifier(&ring);
    let good = ring.sign(&claims()).unwrap();
    let cases = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        format!("{good}.extra"),
        format!("!!.{}", good.split_once('.').unwrap().1),
        format!("{}.{}.sig", b64(&json!("not an object")), b64(&payload())),
    ];
    for token in cases {
        assert_eq!(v.verify(&token, NOW), Err(TokenError::Malformed), "{token}");
    }
    // Valid signature over a payload that is not our claims.
    let kid = ring.current.kid();
    let token = sign_raw(
        &ring.current,
        &json!({"alg": "EdDSA", "kid": kid}),
        &json!({"sub": "x"}),
    );
    assert_eq!(v.verify(&token, NOW), Err(TokenError::Malformed));
}

#[test]
fn unusable_jwks_entries_are_skipped_without_panicking() {
    let ring = KeyRing::generate();
    let good = ring.current.public_jwk();
    let short = Jwk {
        x: URL_SAFE_NO_PAD.encode([7u8; 16]),
        kid: "short".into(),
        ..good.clone()
    };
    let rsa = Jwk {
        kty: "RSA".into(),
        kid: "rsa".into(),
        ..good.clone()
    };
    let enc = Jwk {
        use_: "enc".into(),
        kid: "enc".into(),
        ..good.clone()
    };
    let v = Verifier::from_keys([&short, &rsa, &enc, &good], ISS, AUD);
    assert_eq!(v.key_count(), 1);
    assert!(v.has_kid(good.kid.as_str()));
    for kid in ["short", "rsa", "enc"] {
        let token = sign_raw(
            &ring.current,
            &json!({"alg": "EdDSA", "kid": kid}),
            &payload(),
        );
        assert_eq!(
            v.verify(&token, NOW),
            Err(TokenError::UnknownKid(kid.into()))
        );
    }
    // A JWKS with foreign members still parses.
    let set: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"},
        good,
    ]}))
    .unwrap();
    assert_eq!(Verifier::new(&set, ISS, AUD).key_count(), 1);
}

/// jsonwebtoken's own `decode`, with the key the token's `kid` names:
/// how `verify` checked signatures before it kept decoded keys.
fn jsonwebtoken_accepts(ring: &KeyRing, token: &str) -> Option<Claims> {
    let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
    let jwk = ring.jwks().keys.into_iter().find(|k| k.kid == kid)?;
    let key = jsonwebtoken::DecodingKey::from_ed_components(&jwk.x).ok()?;
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let decoded = jsonwebtoken::decode::<Claims>(token, &key, &validation).ok()?;
    Some(decoded.claims)
}

#[test]
fn verify_agrees_with_jsonwebtoken_on_every_one_character_change() {
    let ring = KeyRing::new(SigningKey::generate(), Some(SigningKey::generate()));
    let v = verifier(&ring);
    let token = ring.sign(&claims()).unwrap();
    assert_eq!(v.verify(&token, NOW), Ok(claims()));
    assert_eq!(jsonwebtoken_accepts(&ring, &token), Some(claims()));
    let mut compared = 0;
    for i in 0..token.len() {
        for c in ["A", "Q", "g", "w", "_", "-", ".", "="] {
            if token.get(i..=i) == Some(c) {
                continue;
            }
            let changed = format!("{}{c}{}", &token[..i], &token[i + 1..]);
            assert_eq!(
                v.verify(&changed, NOW).ok(),
                jsonwebtoken_accepts(&ring, &changed),
                "{c:?} at {i}"
            );
            compared += 1;
        }
    }
    assert!(compared > 7 * token.len(), "{compared}");
    // A token signed by the previous key still verifies, by both.
    let old = KeyRing::new(ring.previous.clone().unwrap(), None)
        .sign(&claims())
        .unwrap();
    assert_eq!(v.verify(&old, NOW), Ok(claims()));
    assert_eq!(jsonwebtoken_accepts(&ring, &old), Some(claims()));
}

#[test]
fn error_messages_do_not_echo_the_token() {
    let ring = KeyRing::generate();
    let token = ring.sign(&claims()).unwrap();
    let err = verifier(&ring)
        .verify(&token, claims().exp + 3600)
        .unwrap_err();
    let msg = err.to_string();
    for part in token.split('.') {
        assert!(!msg.contains(part));
    }
}
