//! Who the signed-in user is, read from the payload of an access token that
//! auth accepted moments ago in the same request. The signature is NOT
//! checked here (the gateway holds no keys and trusts auth's verdict);
//! never use this to decide anything, only to show the user to themselves.

use base64::Engine as _;
use padlock_runtime::Secret;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    preferred_username: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// `{"id","username","roles"}` from the token's claims, or `None` when it
/// is not a JWT with those claims.
pub fn user_of(token: &Secret<String>) -> Option<Value> {
    let payload = token.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some(json!({"id": claims.sub, "username": claims.preferred_username, "roles": claims.roles}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &Value) -> Secret<String> {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Secret::new(format!(
            "{}.{}.sig",
            enc.encode(br#"{"alg":"EdDSA","kid":"k"}"#),
            enc.encode(claims.to_string())
        ))
    }

    #[test]
    fn the_user_comes_from_sub_username_and_roles() {
        let t = token(
            &json!({"sub": "u1", "preferred_username": "tina", "roles": ["operator"], "mfa_at": 5}),
        );
        assert_eq!(
            user_of(&t),
            Some(json!({"id": "u1", "username": "tina", "roles": ["operator"]}))
        );
        let t = token(&json!({"sub": "u1", "preferred_username": "tina"}));
        assert_eq!(user_of(&t).unwrap()["roles"], json!([]));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(user_of(&Secret::new("not-a-token".into())), None);
        assert_eq!(user_of(&Secret::new("a.!!!.c".into())), None);
        assert_eq!(user_of(&token(&json!({"sub": "u1"}))), None);
    }
}
