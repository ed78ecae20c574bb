//! The policy's unit tests: the decision as a table over tokens, second
//! factors and holdings, the padlock table, and the proto mapping.

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use padlock_token::{Claims, TokenError};
use padlock_token::{KeyRing, Verifier};
use serde_json::{Value, json};

const ISS: &str = "https://auth.padlock.test";
const AUD: &str = "padlock-deploy";
const NOW: i64 = 1_700_000_000;
const APP: &str = "app-shop";
const OTHER_APP: &str = "app-other";

fn claims(mfa_at: Option<i64>) -> Claims {
    Claims {
        iss: ISS.into(),
        aud: AUD.into(),
        sub: "user-1".into(),
        preferred_username: "alice".into(),
        roles: vec![],
        sid: "session-1".into(),
        iat: NOW - 30,
        exp: NOW + 570,
        jti: "jti-1".into(),
        auth_time: NOW - 40_000,
        amr: vec!["pwd".into()],
        acr: "1".into(),
        mfa_at,
        mfa_method: mfa_at.map(|_| "totp".to_owned()),
    }
}

fn grant(app_id: &str, env: Env, permission: Permission) -> Grant {
    Grant {
        app_id: app_id.into(),
        env,
        permission,
    }
}

fn holding(grants: Vec<Grant>) -> Holdings {
    Holdings {
        technical_contact_of: vec![],
        grants,
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Valid,
    InvalidSignature,
    Expired,
    WrongAudience,
    WrongIssuer,
    UnknownKid,
    AlgNone,
    Hs256WithPublicKey,
}

const TOKEN_KINDS: [TokenKind; 8] = [
    TokenKind::Valid,
    TokenKind::InvalidSignature,
    TokenKind::Expired,
    TokenKind::WrongAudience,
    TokenKind::WrongIssuer,
    TokenKind::UnknownKid,
    TokenKind::AlgNone,
    TokenKind::Hs256WithPublicKey,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MfaKind {
    Absent,
    Fresh,
    ExactlyMaxAge,
    MaxAgePlusOne,
    FutureBeyondLeeway,
}

const MFA_KINDS: [MfaKind; 5] = [
    MfaKind::Absent,
    MfaKind::Fresh,
    MfaKind::ExactlyMaxAge,
    MfaKind::MaxAgePlusOne,
    MfaKind::FutureBeyondLeeway,
];

impl MfaKind {
    fn mfa_at(self) -> Option<i64> {
        match self {
            MfaKind::Absent => None,
            MfaKind::Fresh => Some(NOW - 300),
            MfaKind::ExactlyMaxAge => Some(NOW - MaxAge::DEFAULT.secs()),
            MfaKind::MaxAgePlusOne => Some(NOW - MaxAge::DEFAULT.secs() - 1),
            MfaKind::FutureBeyondLeeway => Some(NOW + MFA_LEEWAY_SECS + 1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermKind {
    Present,
    Absent,
    OtherEnvironment,
    OtherApp,
}

const PERM_KINDS: [PermKind; 4] = [
    PermKind::Present,
    PermKind::Absent,
    PermKind::OtherEnvironment,
    PermKind::OtherApp,
];

impl PermKind {
    /// The caller's holdings for transport_package on production of APP.
    fn holdings(self) -> Holdings {
        let grants = match self {
            PermKind::Present => vec![grant(APP, Env::Production, Permission::Transport)],
            // Other permissions on the right environment do not count.
            PermKind::Absent => vec![
                grant(APP, Env::Production, Permission::Operate),
                grant(APP, Env::Production, Permission::Backups),
            ],
            PermKind::OtherEnvironment => vec![
                grant(APP, Env::Test, Permission::Transport),
                grant(APP, Env::Acceptance, Permission::Transport),
            ],
            PermKind::OtherApp => {
                vec![grant(OTHER_APP, Env::Production, Permission::Transport)]
            }
        };
        holding(grants)
    }
}

/// A real token of `kind` with `mfa_at`, for a verifier that trusts
/// `ring`: signed with the ring, or forged by hand.
fn token(ring: &KeyRing, kind: TokenKind, mfa_at: Option<i64>) -> String {
    let good = claims(mfa_at);
    let kid = ring.current.kid().to_owned();
    match kind {
        TokenKind::Valid => ring.sign(&good).unwrap(),
        TokenKind::InvalidSignature => {
            // Our kid and header, signed by a key that is not ours.
            let stranger = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
            let input = format!(
                "{}.{}",
                b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})),
                b64(&serde_json::to_value(&good).unwrap())
            );
            let sig = stranger.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
        }
        TokenKind::Expired => ring
            .sign(&Claims {
                iat: NOW - 3_600,
                exp: NOW - 3_000,
                ..good
            })
            .unwrap(),
        TokenKind::WrongAudience => ring
            .sign(&Claims {
                aud: "padlock-gateway".into(),
                ..good
            })
            .unwrap(),
        TokenKind::WrongIssuer => ring
            .sign(&Claims {
                iss: "https://evil.example".into(),
                ..good
            })
            .unwrap(),
        TokenKind::UnknownKid => KeyRing::generate().sign(&good).unwrap(),
        TokenKind::AlgNone => format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
            b64(&serde_json::to_value(&good).unwrap())
        ),
        TokenKind::Hs256WithPublicKey => {
            // The classic confusion attack: HMAC keyed with the public key.
            let public = ring.current.public_jwk();
            let raw = URL_SAFE_NO_PAD.decode(&public.x).unwrap();
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some(kid);
            jsonwebtoken::encode(
                &header,
                &good,
                &jsonwebtoken::EncodingKey::from_secret(&raw),
            )
            .unwrap()
        }
    }
}

/// The expectation, from docs/design.md's precedence, independent of `decide`.
fn expected(token: TokenKind, mfa: MfaKind, perm: PermKind) -> Result<(), Refusal> {
    if token != TokenKind::Valid {
        return Err(Refusal::TokenInvalid);
    }
    match mfa {
        MfaKind::Absent => return Err(Refusal::MfaRequired),
        MfaKind::MaxAgePlusOne | MfaKind::FutureBeyondLeeway => {
            return Err(Refusal::MfaExpired);
        }
        MfaKind::Fresh | MfaKind::ExactlyMaxAge => {}
    }
    match perm {
        PermKind::Present => Ok(()),
        PermKind::Absent | PermKind::OtherEnvironment | PermKind::OtherApp => {
            Err(Refusal::NodePermissionMissing)
        }
    }
}

#[test]
fn transport_to_production_follows_the_step_up_rule_for_every_combination() {
    let ring = KeyRing::generate();
    let verifier = Verifier::new(&ring.jwks(), ISS, AUD);
    let policy = Policy::default();
    let mut rows = 0;
    for token_kind in TOKEN_KINDS {
        for mfa in MFA_KINDS {
            let jwt = token(&ring, token_kind, mfa.mfa_at());
            let verified = verifier.verify(&jwt, NOW);
            if token_kind != TokenKind::Valid {
                // The forged token must fail for its own reason, not by accident.
                assert!(verified.is_err(), "{token_kind:?} {mfa:?} verified");
            }
            for perm in PERM_KINDS {
                let decision = decide(
                    verified.as_ref(),
                    &policy,
                    Action::TransportPackage,
                    APP,
                    Env::Production,
                    &perm.holdings(),
                    NOW,
                );
                assert_eq!(
                    decision.outcome,
                    expected(token_kind, mfa, perm),
                    "token {token_kind:?}, mfa_at {mfa:?}, permission {perm:?} ({verified:?})"
                );
                assert!(decision.rule.padlock);
                assert_eq!(decision.rule.max_age, MaxAge::DEFAULT);
                rows += 1;
            }
        }
    }
    assert_eq!(rows, 8 * 5 * 4);
}

#[test]
fn forged_tokens_fail_verification_for_the_expected_reason() {
    let ring = KeyRing::generate();
    let verifier = Verifier::new(&ring.jwks(), ISS, AUD);
    let fresh = MfaKind::Fresh.mfa_at();
    let cases = [
        (TokenKind::InvalidSignature, TokenError::Signature),
        (TokenKind::Expired, TokenError::Expired),
        (TokenKind::WrongAudience, TokenError::Audience),
        (TokenKind::WrongIssuer, TokenError::Issuer),
        (TokenKind::AlgNone, TokenError::Algorithm),
        (TokenKind::Hs256WithPublicKey, TokenError::Algorithm),
    ];
    for (kind, error) in cases {
        assert_eq!(
            verifier.verify(&token(&ring, kind, fresh), NOW),
            Err(error),
            "{kind:?}"
        );
    }
    assert!(matches!(
        verifier.verify(&token(&ring, TokenKind::UnknownKid, fresh), NOW),
        Err(TokenError::UnknownKid(_))
    ));
    assert_eq!(
        verifier.verify(
            &token(
                &ring,
                TokenKind::Valid,
                MfaKind::FutureBeyondLeeway.mfa_at()
            ),
            NOW
        ),
        Err(TokenError::MfaInFuture)
    );
}

#[test]
fn mfa_within_the_leeway_in_the_future_still_counts() {
    let holdings = PermKind::Present.holdings();
    let at = |mfa_at| {
        decide(
            Ok(&claims(Some(mfa_at))),
            &Policy::default(),
            Action::TransportPackage,
            APP,
            Env::Production,
            &holdings,
            NOW,
        )
        .outcome
    };
    assert_eq!(at(NOW + MFA_LEEWAY_SECS), Ok(()));
    // Claims that did not pass through the verifier are checked too.
    assert_eq!(at(NOW + MFA_LEEWAY_SECS + 1), Err(Refusal::MfaExpired));
}

#[test]
fn mfa_in_future_from_the_verifier_is_expired_only_when_padlocked() {
    let holdings = PermKind::Present.holdings();
    let policy = Policy::default();
    let run = |env| {
        decide(
            Err(&TokenError::MfaInFuture),
            &policy,
            Action::TransportPackage,
            APP,
            env,
            &holdings,
            NOW,
        )
        .outcome
    };
    assert_eq!(run(Env::Production), Err(Refusal::MfaExpired));
    assert_eq!(run(Env::Test), Err(Refusal::TokenInvalid));
}

#[test]
fn unpadlocked_actions_ignore_the_second_factor() {
    let policy = Policy::default();
    let test_grant = holding(vec![grant(APP, Env::Test, Permission::Transport)]);
    for mfa in [
        MfaKind::Absent,
        MfaKind::Fresh,
        MfaKind::MaxAgePlusOne,
        MfaKind::FutureBeyondLeeway,
    ] {
        let c = claims(mfa.mfa_at());
        let run = |holdings: &Holdings| {
            decide(
                Ok(&c),
                &policy,
                Action::TransportPackage,
                APP,
                Env::Test,
                holdings,
                NOW,
            )
        };
        let allowed = run(&test_grant);
        assert_eq!(allowed.outcome, Ok(()), "{mfa:?}");
        assert!(!allowed.rule.padlock);
        // The permission still counts without a padlock.
        assert_eq!(
            run(&holding(vec![])).outcome,
            Err(Refusal::NodePermissionMissing),
            "{mfa:?}"
        );
    }
    // And an invalid token is still refused.
    assert_eq!(
        decide(
            Err(&TokenError::Signature),
            &policy,
            Action::TransportPackage,
            APP,
            Env::Test,
            &test_grant,
            NOW,
        )
        .outcome,
        Err(Refusal::TokenInvalid)
    );
}

#[test]
fn technical_contact_holds_every_permission_of_their_app_only() {
    let policy = Policy::default();
    let tc = Holdings {
        technical_contact_of: vec![APP.into()],
        grants: vec![],
    };
    let fresh = claims(MfaKind::Fresh.mfa_at());
    for action in Action::ALL {
        for env in Env::ALL {
            let run = |app| decide(Ok(&fresh), &policy, action, app, env, &tc, NOW).outcome;
            assert_eq!(run(APP), Ok(()), "{action} on {env}");
            assert_eq!(
                run(OTHER_APP),
                Err(Refusal::NodePermissionMissing),
                "{action} on {env} of another app"
            );
        }
    }
    // Being Technical Contact does not replace the second factor.
    assert_eq!(
        decide(
            Ok(&claims(None)),
            &policy,
            Action::DownloadBackup,
            APP,
            Env::Production,
            &tc,
            NOW
        )
        .outcome,
        Err(Refusal::MfaRequired)
    );
}

#[test]
fn changing_node_permissions_needs_the_technical_contact_not_a_grant() {
    let policy = Policy::default();
    let fresh = claims(MfaKind::Fresh.mfa_at());
    let every_grant = holding(
        Permission::ALL
            .into_iter()
            .map(|p| grant(APP, Env::Production, p))
            .collect(),
    );
    let run = |holdings: &Holdings| {
        decide(
            Ok(&fresh),
            &policy,
            Action::ChangeNodePermissions,
            APP,
            Env::Production,
            holdings,
            NOW,
        )
    };
    let refused = run(&every_grant);
    assert_eq!(refused.outcome, Err(Refusal::NodePermissionMissing));
    assert_eq!(refused.rule.requirement, Requirement::TechnicalContact);
    let tc = Holdings {
        technical_contact_of: vec![APP.into()],
        grants: vec![],
    };
    assert_eq!(run(&tc).outcome, Ok(()));
}

#[test]
fn each_action_needs_its_own_permission() {
    let policy = Policy::default();
    let fresh = claims(MfaKind::Fresh.mfa_at());
    let cases = [
        (Action::DeployPackage, Permission::Transport),
        (Action::TransportPackage, Permission::Transport),
        (Action::GetNodeDetails, Permission::Operate),
        (Action::DownloadBackup, Permission::Backups),
    ];
    for (action, needed) in cases {
        for held in Permission::ALL {
            let h = holding(vec![grant(APP, Env::Production, held)]);
            let outcome =
                decide(Ok(&fresh), &policy, action, APP, Env::Production, &h, NOW).outcome;
            let want = if held == needed {
                Ok(())
            } else {
                Err(Refusal::NodePermissionMissing)
            };
            assert_eq!(outcome, want, "{action} holding {held}");
        }
    }
}

#[test]
fn with_max_age_moves_the_boundary_for_that_action_only() {
    let policy =
        Policy::default().with_max_age(Action::TransportPackage, MaxAge::from_secs(3_600).unwrap());
    let holdings = holding(vec![
        grant(APP, Env::Production, Permission::Transport),
        grant(APP, Env::Production, Permission::Operate),
    ]);
    let run = |action, age: i64| {
        decide(
            Ok(&claims(Some(NOW - age))),
            &policy,
            action,
            APP,
            Env::Production,
            &holdings,
            NOW,
        )
    };
    let edge = run(Action::TransportPackage, 3_600);
    assert_eq!(edge.outcome, Ok(()));
    assert_eq!(edge.mfa_expires_at, Some(NOW));
    assert_eq!(edge.rule.max_age.secs(), 3_600);
    assert_eq!(
        run(Action::TransportPackage, 3_601).outcome,
        Err(Refusal::MfaExpired)
    );
    // Other actions keep the default eight hours.
    assert_eq!(run(Action::GetNodeDetails, 3_601).outcome, Ok(()));
    assert_eq!(
        run(Action::GetNodeDetails, MaxAge::DEFAULT.secs() + 1).outcome,
        Err(Refusal::MfaExpired)
    );
}

#[test]
fn with_padlock_puts_a_padlock_on_any_environment() {
    let policy = Policy::default().with_padlock(Action::DeployPackage, Env::Acceptance, true);
    let holdings = holding(vec![grant(APP, Env::Acceptance, Permission::Transport)]);
    let run = |action| {
        decide(
            Ok(&claims(None)),
            &policy,
            action,
            APP,
            Env::Acceptance,
            &holdings,
            NOW,
        )
        .outcome
    };
    assert_eq!(run(Action::DeployPackage), Err(Refusal::MfaRequired));
    assert_eq!(run(Action::TransportPackage), Ok(()));
    let off = Policy::default().with_padlock(Action::DeployPackage, Env::Production, false);
    assert!(!off.rule(Action::DeployPackage, Env::Production).padlock);
}

#[test]
fn mfa_expires_at_is_mfa_at_plus_max_age() {
    let holdings = PermKind::Present.holdings();
    let d = decide(
        Ok(&claims(Some(NOW - 100))),
        &Policy::default(),
        Action::TransportPackage,
        APP,
        Env::Production,
        &holdings,
        NOW,
    );
    assert_eq!(d.mfa_expires_at, Some(NOW - 100 + MaxAge::DEFAULT.secs()));
    assert!(d.allowed());
    let none = decide(
        Ok(&claims(None)),
        &Policy::default(),
        Action::TransportPackage,
        APP,
        Env::Production,
        &holdings,
        NOW,
    );
    assert_eq!(none.mfa_expires_at, None);
    assert!(!none.allowed());
}

#[test]
fn default_policy_padlocks_production_and_every_team_change() {
    let policy = Policy::default();
    let rules: Vec<_> = policy.rules().collect();
    assert_eq!(rules.len(), Action::ALL.len() * Env::ALL.len());
    for (action, env, rule) in rules {
        let padlocked = env == Env::Production || action == Action::ChangeTeam;
        assert_eq!(rule.padlock, padlocked, "{action} on {env}");
        assert_eq!(rule.max_age, MaxAge::DEFAULT);
        assert_eq!(
            rule.max_age_seconds(),
            if padlocked { MaxAge::DEFAULT.secs() } else { 0 }
        );
        assert_eq!(rule.requirement, action.requirement());
    }
    assert_eq!(MaxAge::DEFAULT.secs(), 28_800);
}

#[test]
fn proto_values_round_trip_and_unspecified_is_none() {
    for env in Env::ALL {
        assert_eq!(Env::from_proto(env.to_proto()), Some(env));
    }
    for p in Permission::ALL {
        assert_eq!(Permission::from_proto(p.to_proto()), Some(p));
    }
    for a in Action::ALL {
        assert_eq!(Action::from_proto(a.to_proto()), Some(a));
        assert_eq!(Action::parse(a.as_str()), Some(a));
    }
    assert_eq!(Env::from_proto(0), None);
    assert_eq!(Env::from_proto(99), None);
    assert_eq!(Permission::from_proto(0), None);
    assert_eq!(Action::from_proto(0), None);
    assert_eq!(Action::from_proto(-1), None);
    assert_eq!(Env::Production.to_proto(), 3);
    assert_eq!(Action::ChangeNodePermissions.to_proto(), 5);
    assert_eq!(Requirement::TechnicalContact.to_proto(), 0);
    assert_eq!(
        Requirement::Permission(Permission::Backups).to_proto(),
        Permission::Backups.to_proto()
    );
}

#[test]
fn environments_follow_test_acceptance_production() {
    assert_eq!(Env::Test.next(), Some(Env::Acceptance));
    assert_eq!(Env::Acceptance.next(), Some(Env::Production));
    assert_eq!(Env::Production.next(), None);
    let names: Vec<_> = Env::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(names, ["test", "acceptance", "production"]);
    let names: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(names, ["transport", "operate", "backups", "logs"]);
}

#[test]
fn max_age_overrides_parse_action_and_positive_seconds() {
    assert_eq!(
        parse_max_age_override("transport_package=3600"),
        Ok((Action::TransportPackage, MaxAge::from_secs(3_600).unwrap()))
    );
    assert_eq!(
        parse_max_age_override("download_backup=900"),
        Ok((Action::DownloadBackup, MaxAge::from_secs(900).unwrap()))
    );
    for bad in [
        "transport_package",
        "transport_package=",
        "transport_package=abc",
        "transport_package=0",
        "transport_package=-5",
        "transport_package=1.5",
        "fly=3600",
        "=3600",
    ] {
        assert!(parse_max_age_override(bad).is_err(), "{bad}");
    }
    let err = parse_max_age_override("fly=3600").unwrap_err();
    assert!(err.contains("transport_package"), "{err}");
}
