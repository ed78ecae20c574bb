//! Token parsing and verification under fuzzing: `padlock_token::Verifier`
//! with a real key ring, fed three ways, chosen by an input's first byte:
//!
//! - `0`, raw: the rest is the token text;
//! - `1`, signed: the rest is `header_len:u16be header payload`, JSON the
//!   fuzzer writes, which is base64url-encoded and signed with the ring's
//!   real key, so the claims checks behind the signature are reached;
//! - `2`, mutated: the rest is `(position:u16be byte)*` edits applied to a
//!   valid token.
//!
//! The oracle: nothing panics; a token that verifies has the fixed key's
//! `kid`, an `EdDSA` header, the expected issuer and audience and times
//! within the leeway; and no edit of a valid token verifies unless the
//! token text is unchanged.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use padlock_token::{Claims, KeyRing, LEEWAY_SECS, SigningKey, Verifier};

pub const ISSUER: &str = "padlock-auth";
pub const AUDIENCE: &str = "padlock-deploy";
/// The time every token is verified at.
pub const NOW: i64 = crate::START;

/// A fixed Ed25519 seed: the corpus's signed tokens stay valid across runs.
const SEED: [u8; 32] = *b"padlock fuzz key, never deployed";

/// The ring's key, the same key for `dalek` signing by hand, and a
/// verifier for the ring's JWKS.
#[derive(Debug)]
pub struct TokenTarget {
    ring: KeyRing,
    dalek: ed25519_dalek::SigningKey,
    verifier: Verifier,
    valid: String,
}

impl TokenTarget {
    /// # Panics
    ///
    /// If the fixed key does not load: the harness is broken.
    pub fn new() -> Self {
        let dalek = ed25519_dalek::SigningKey::from_bytes(&SEED);
        let pem = dalek
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("a PKCS#8 PEM");
        let key = SigningKey::from_pkcs8_pem(&pem).expect("the fixed key loads");
        let ring = KeyRing::new(key, None);
        let verifier = Verifier::new(&ring.jwks(), ISSUER, AUDIENCE);
        let valid = ring.sign(&valid_claims()).expect("a signed token");
        TokenTarget {
            ring,
            dalek,
            verifier,
            valid,
        }
    }

    /// The fixed key's id.
    pub fn kid(&self) -> &str {
        self.ring.current.kid()
    }

    /// A token for [`valid_claims`], as auth signs it.
    pub fn valid_token(&self) -> &str {
        &self.valid
    }

    /// `header.payload.signature` over the given JSON, signed with the
    /// fixed key whatever the header says.
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = self.dalek.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// Runs one input; panics when the oracle is broken.
    pub fn run(&self, data: &[u8]) {
        let Some((mode, rest)) = data.split_first() else {
            return;
        };
        match mode % 3 {
            0 => {
                let token = String::from_utf8_lossy(rest);
                self.check(&token, None);
            }
            1 => {
                let (header, payload) = split_header(rest);
                let token = self.sign_raw(header, payload);
                self.check(&token, None);
            }
            _ => {
                let mut bytes = self.valid.clone().into_bytes();
                for edit in rest.chunks_exact(3) {
                    let at = usize::from(u16::from_be_bytes([edit[0], edit[1]]));
                    if let Some(b) = bytes.get_mut(at % self.valid.len()) {
                        *b = edit[2];
                    }
                }
                let token = String::from_utf8_lossy(&bytes);
                self.check(&token, Some(valid_claims()));
            }
        }
    }

    fn check(&self, token: &str, original: Option<Claims>) {
        let header_kid = Verifier::decode_header_kid(token);
        let Ok(claims) = self.verifier.verify(token, NOW) else {
            return;
        };
        assert_eq!(
            header_kid.as_deref(),
            Ok(self.kid()),
            "verified without our kid"
        );
        let header = jsonwebtoken_header(token);
        assert_eq!(header["alg"], "EdDSA", "verified a non-EdDSA header");
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert!(
            claims.exp.saturating_add(LEEWAY_SECS) >= NOW,
            "verified an expired token"
        );
        assert!(
            claims.iat <= NOW + LEEWAY_SECS,
            "verified a token from the future"
        );
        if let Some(original) = original {
            assert_eq!(
                claims, original,
                "an edited token verified with other claims"
            );
            assert_eq!(token, self.valid, "an edited token still verifies");
        }
    }
}

impl Default for TokenTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// The claims of [`TokenTarget::valid_token`]: a stepped-up operator.
pub fn valid_claims() -> Claims {
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "user-1".into(),
        preferred_username: "tina".into(),
        roles: vec!["operator".into()],
        sid: "session-1".into(),
        iat: NOW - 10,
        exp: NOW + 590,
        jti: "jti-1".into(),
        auth_time: NOW - 60,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        acr: "aal2".into(),
        mfa_at: Some(NOW - 30),
        mfa_method: Some("totp".into()),
    }
}

/// `header_len:u16be header payload`; a short input is all header.
pub fn split_header(data: &[u8]) -> (&[u8], &[u8]) {
    match data {
        [hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
            rest.split_at(len)
        }
        _ => (data, &[]),
    }
}

/// The encoded header `header_len:u16be header payload` for seeds.
///
/// # Panics
///
/// If the header is longer than `u16::MAX`: seeds are small.
pub fn join_header(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(header.len()).expect("a seed header under 64 KiB");
    let mut out = len.to_be_bytes().to_vec();
    out.extend(header);
    out.extend(payload);
    out
}

/// The JSON header of a token that verified (so it decodes).
fn jsonwebtoken_header(token: &str) -> serde_json::Value {
    let header = token.split('.').next().unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valid_token_verifies_and_hand_signed_ones_reach_the_claims_checks() {
        let target = TokenTarget::new();
        assert_eq!(
            target.verifier.verify(target.valid_token(), NOW),
            Ok(valid_claims())
        );
        let header = serde_json::json!({"alg": "EdDSA", "kid": target.kid()});
        let mut payload = serde_json::to_value(valid_claims()).unwrap();
        let signed = target.sign_raw(
            header.to_string().as_bytes(),
            payload.to_string().as_bytes(),
        );
        assert_eq!(target.verifier.verify(&signed, NOW), Ok(valid_claims()));
        payload["aud"] = "someone-else".into();
        let signed = target.sign_raw(
            header.to_string().as_bytes(),
            payload.to_string().as_bytes(),
        );
        assert_eq!(
            target.verifier.verify(&signed, NOW),
            Err(padlock_token::TokenError::Audience)
        );
    }

    #[test]
    fn every_mode_runs_without_breaking_the_oracle() {
        let target = TokenTarget::new();
        let mut raw = vec![0];
        raw.extend(target.valid_token().as_bytes());
        target.run(&raw);
        target.run(&[1, 0, 2, b'{', b'}', b'{', b'}']);
        target.run(&[2, 0, 0, b'x', 0, 200, b'A']);
        target.run(&[]);
    }
}
