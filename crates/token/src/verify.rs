//! Verification of access tokens against a JWK Set, with the time passed in.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::Deserialize;

use crate::claims::Claims;
use crate::error::TokenError;
use crate::key::{Jwk, JwkSet};

/// Clock skew tolerated between the issuer and a verifier for `exp`, `iat`
/// and `mfa_at`, in seconds. RFC 7519 §4.1.4 allows "some small leeway";
/// docs/design.md fixes it at 60 s, small next to the 10-minute token lifetime.
pub const LEEWAY_SECS: i64 = 60;

/// Tokens larger than this are refused before any parsing or base64
/// decoding. Padlock's tokens are well under 1 KiB; 8 KiB is the common
/// HTTP header line limit, so nothing legitimate is larger.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Verifies access tokens: EdDSA only, `kid` required and looked up in a
/// fixed key set (header `jku`, `x5u`, `jwk` are never used), exact `iss`
/// and `aud`, and times checked against the `now` the caller passes.
///
/// The signature check is the one `jsonwebtoken::decode` makes for EdDSA
/// (ed25519-dalek's `verify` over `header.payload`, signature before
/// claims), with each key's curve point decoded once here rather than for
/// every token, as jsonwebtoken's `DecodingKey` does: that decoding was
/// about a tenth of a token check. A test holds the two to the same
/// answers.
#[derive(Clone)]
pub struct Verifier {
    keys: HashMap<String, VerifyingKey>,
    issuer: String,
    audience: String,
}

impl Verifier {
    /// A verifier for the usable keys in `jwks` (see [`Verifier::from_keys`]).
    pub fn new(jwks: &JwkSet, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self::from_keys(&jwks.keys, issuer, audience)
    }

    /// Keeps only Ed25519 signing keys with a `kid` and a valid 32-byte `x`
    /// whose `use`/`alg`, when given, are `sig`/`EdDSA`; other keys are
    /// skipped, as RFC 7517 §5 asks for keys a reader does not understand.
    pub fn from_keys<'a>(
        keys: impl IntoIterator<Item = &'a Jwk>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|jwk| Some((jwk.kid.clone(), verifying_key(jwk)?)))
            .collect();
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    /// Whether `kid` is in this verifier's key set.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// How many usable keys the verifier holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The `kid` from a token's header, unverified (e.g. to decide whether
    /// to refresh a JWKS before verifying).
    pub fn decode_header_kid(token: &str) -> Result<String, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let (header, _, _) = split(token)?;
        RawHeader::parse(header)?.kid.ok_or(TokenError::MissingKid)
    }

    /// Verifies `token` at Unix time `now` and returns its claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let (header_part, payload, signature) = split(token)?;
        let header = RawHeader::parse(header_part)?;
        // RFC 8725 §3.1: the verifier, not the token, picks the algorithm.
        if header.alg.as_deref() != Some("EdDSA") {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKid(kid))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Signature)?;
        // The signing input is the token up to its last dot (RFC 7515 §5.2).
        let signed = &token[..header_part.len() + 1 + payload.len()];
        key.verify(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;
        // Only a signed payload is parsed.
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;

        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::Audience);
        }
        Self::check_times(&claims, now)?;
        Ok(claims)
    }

    /// The checks of [`Verifier::verify`] that depend on `now`: `exp` and
    /// `iat` within [`LEEWAY_SECS`], and `mfa_at` no further than that in
    /// the future. A caller that keeps verified claims (deploy's token
    /// cache) runs them again at every use, so keeping never extends a
    /// token.
    pub fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        let latest = now.saturating_add(LEEWAY_SECS);
        if claims.iat > latest {
            return Err(TokenError::NotYetValid);
        }
        if claims.mfa_at.is_some_and(|mfa_at| mfa_at > latest) {
            return Err(TokenError::MfaInFuture);
        }
        Ok(())
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("Verifier")
            .field("kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    let usable = jwk.kty == "OKP"
        && jwk.crv == "Ed25519"
        && !jwk.kid.is_empty()
        && (jwk.use_.is_empty() || jwk.use_ == "sig")
        && (jwk.alg.is_empty() || jwk.alg == "EdDSA");
    if !usable {
        return None;
    }
    let x = URL_SAFE_NO_PAD.decode(&jwk.x).ok()?;
    let bytes: [u8; 32] = x.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A compact JWS's three parts: header, payload, signature (base64url).
fn split(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok((header, payload, signature)),
        _ => Err(TokenError::Malformed),
    }
}

/// The header members the verifier decides on, read before anything else.
/// Unknown members (`jku`, `x5u`, `jwk`, ...) are ignored; duplicate
/// members make the header malformed.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

impl RawHeader {
    /// Reads a token's `header` part (base64url).
    fn parse(header: &str) -> Result<Self, TokenError> {
        let json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header: Self = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood;
        // we understand none.
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            kid: header.kid.filter(|k| !k.is_empty()),
            ..header
        })
    }
}

#[cfg(test)]
mod tests;
