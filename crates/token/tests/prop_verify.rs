//! Properties of access-token verification over generated claims, times
//! and edits (issue 7, hardening). The `token` fuzz target in crates/fuzz
//! explores the same ground guided by coverage; these run with every
//! `cargo test`.

use padlock_token::{Claims, KeyRing, LEEWAY_SECS, TokenError, Verifier};
use proptest::prelude::*;

const ISS: &str = "padlock-auth";
const AUD: &str = "padlock-deploy";
const NOW: i64 = 1_800_000_000;

fn ring() -> &'static KeyRing {
    static RING: std::sync::OnceLock<KeyRing> = std::sync::OnceLock::new();
    RING.get_or_init(KeyRing::generate)
}

fn verifier() -> Verifier {
    Verifier::new(&ring().jwks(), ISS, AUD)
}

/// Claims as auth issues them, with any text and times around `NOW`.
fn claims() -> impl Strategy<Value = Claims> {
    (
        (".{0,40}", ".{0,64}", prop::collection::vec(".{0,16}", 0..4)),
        (".{0,40}", ".{0,40}", -900i64..900, 1i64..900),
        prop::option::of(-30_000i64..120),
    )
        .prop_map(
            |((sub, username, roles), (sid, jti, iat_offset, ttl), mfa_offset)| Claims {
                iss: ISS.into(),
                aud: AUD.into(),
                sub,
                preferred_username: username,
                roles,
                sid,
                iat: NOW + iat_offset,
                exp: NOW + iat_offset + ttl,
                jti,
                auth_time: NOW + iat_offset - 60,
                amr: vec!["pwd".into()],
                acr: "aal1".into(),
                mfa_at: mfa_offset.map(|o| NOW + o),
                mfa_method: mfa_offset.map(|_| "totp".into()),
            },
        )
}

/// The verdict docs/design.md asks for at `now`, from the claims' times alone.
fn expected(claims: &Claims, now: i64) -> Result<Claims, TokenError> {
    if now > claims.exp + LEEWAY_SECS {
        Err(TokenError::Expired)
    } else if claims.iat > now + LEEWAY_SECS {
        Err(TokenError::NotYetValid)
    } else if claims.mfa_at.is_some_and(|m| m > now + LEEWAY_SECS) {
        Err(TokenError::MfaInFuture)
    } else {
        Ok(claims.clone())
    }
}

proptest! {
    #[test]
    fn a_signed_token_verifies_exactly_when_its_times_allow(
        claims in claims(),
        now_offset in -1_000i64..1_000,
    ) {
        let token = ring().sign(&claims).unwrap();
        let now = NOW + now_offset;
        prop_assert_eq!(verifier().verify(&token, now), expected(&claims, now));
    }

    #[test]
    fn no_edit_of_a_signed_token_verifies(
        index in any::<prop::sample::Index>(),
        replacement in prop::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".to_vec()
        ),
    ) {
        let claims = expected_claims();
        let token = ring().sign(&claims).unwrap();
        let mut bytes = token.clone().into_bytes();
        let at = index.index(bytes.len());
        prop_assume!(bytes[at] != replacement);
        bytes[at] = replacement;
        let edited = String::from_utf8(bytes).unwrap();
        prop_assert!(verifier().verify(&edited, NOW).is_err(), "{} verified", edited);
    }

    #[test]
    fn arbitrary_text_is_refused_without_panicking(text in ".{0,600}") {
        prop_assert!(verifier().verify(&text, NOW).is_err());
        let _ = Verifier::decode_header_kid(&text);
    }

    #[test]
    fn three_base64_segments_of_anything_are_refused(
        parts in prop::collection::vec("[A-Za-z0-9_-]{0,200}", 3),
    ) {
        let text = parts.join(".");
        prop_assert!(verifier().verify(&text, NOW).is_err());
    }
}

fn expected_claims() -> Claims {
    Claims {
        iss: ISS.into(),
        aud: AUD.into(),
        sub: "user-1".into(),
        preferred_username: "tina".into(),
        roles: vec![],
        sid: "session-1".into(),
        iat: NOW,
        exp: NOW + 600,
        jti: "jti-1".into(),
        auth_time: NOW,
        amr: vec!["pwd".into()],
        acr: "aal1".into(),
        mfa_at: None,
        mfa_method: None,
    }
}

/// The signature's last base64url character carries 4 spare bits; a
/// decoder that ignored them would accept 16 spellings of one signature.
#[test]
fn every_other_spelling_of_the_signatures_last_character_is_refused() {
    let token = ring().sign(&expected_claims()).unwrap();
    let (head, last) = token.split_at(token.len() - 1);
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars() {
        let respelled = format!("{head}{c}");
        if c.to_string() == last {
            assert!(verifier().verify(&respelled, NOW).is_ok());
        } else {
            assert!(
                verifier().verify(&respelled, NOW).is_err(),
                "signature ending {c:?} instead of {last:?} verified"
            );
        }
    }
}
