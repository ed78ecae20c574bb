//! The claims of a padlock access token.

use serde::{Deserialize, Serialize};

/// Claims of an access JWT (see docs/design.md, "Identity, sessions and tokens").
///
/// Times are Unix seconds. `amr` holds RFC 8176 method references (`pwd`,
/// and after a second factor also `otp` or `sms`, plus `mfa`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Stable user id.
    pub sub: String,
    pub preferred_username: String,
    pub roles: Vec<String>,
    /// Session id.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// Time of the primary (password) sign-in.
    pub auth_time: i64,
    pub amr: Vec<String>,
    pub acr: String,
    /// When a second factor was last verified in this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_at: Option<i64>,
    /// `totp` or `sms`, present together with `mfa_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_method: Option<String>,
}

impl Claims {
    /// Whether the token carries role `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "padlock-auth".into(),
            aud: "padlock-deploy".into(),
            sub: "u1".into(),
            preferred_username: "alice".into(),
            roles: vec!["operator".into()],
            sid: "s1".into(),
            iat: 100,
            exp: 700,
            jti: "j1".into(),
            auth_time: 90,
            amr: vec!["pwd".into()],
            acr: "1".into(),
            mfa_at: None,
            mfa_method: None,
        }
    }

    #[test]
    fn has_role_matches_exact_role_names_only() {
        let c = claims();
        assert!(c.has_role("operator"));
        assert!(!c.has_role("support"));
        assert!(!c.has_role("oper"));
    }

    #[test]
    fn absent_mfa_fields_are_not_serialized() {
        let json = serde_json::to_value(claims()).unwrap();
        assert!(json.get("mfa_at").is_none());
        assert!(json.get("mfa_method").is_none());

        let mut with_mfa = claims();
        with_mfa.mfa_at = Some(120);
        with_mfa.mfa_method = Some("totp".into());
        let json = serde_json::to_value(&with_mfa).unwrap();
        assert_eq!(json["mfa_at"], 120);
        assert_eq!(json["mfa_method"], "totp");
        let back: Claims = serde_json::from_value(json).unwrap();
        assert_eq!(back, with_mfa);
    }
}
