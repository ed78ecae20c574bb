//! The seed corpus: a few hand-made inputs per target, each valid or one
//! step from valid (a good sign-in, an enrollment confirmed with the code
//! that was texted, a transport to production by a stepped-up Technical
//! Contact, a token auth would sign, ...), so fuzzing starts at the
//! interesting branches instead of the parsers' first checks.
//! `examples/write_seeds.rs` writes them to `corpus/<target>/`; the tests
//! below check that they reach what they are meant to reach.

use padlock_proto::auth::v1 as auth_pb;
use padlock_proto::deploy::v1 as deploy_pb;
use prost::Message as _;

use crate::input::{self, Call, join_messages};
use crate::{auth, codes, deploy, token};

mod gateway_seeds;

use gateway_seeds::*;

/// Every target's name, as `fuzz_targets/<name>.rs` and `corpus/<name>/`.
pub const TARGETS: &[&str] = &["token", "codes", "auth_rpc", "deploy_rpc", "gateway_json"];

/// The seeds of `target`, as (file name, bytes).
///
/// # Panics
///
/// For a target name not in [`TARGETS`].
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "token" => token_seeds(),
        "codes" => code_seeds(),
        "auth_rpc" => auth_seeds(),
        "deploy_rpc" => deploy_seeds(),
        "gateway_json" => gateway_seeds(),
        other => panic!("no fuzz target {other:?}"),
    }
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend(rest);
    out
}

fn token_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let target = token::TokenTarget::new();
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": target.kid()});
    let claims = serde_json::to_value(token::valid_claims()).expect("claims as JSON");
    let mut future_mfa = claims.clone();
    future_mfa["mfa_at"] = (token::NOW + 3600).into();
    let signed = |payload: &serde_json::Value| {
        with_mode(
            1,
            &token::join_header(
                header.to_string().as_bytes(),
                payload.to_string().as_bytes(),
            ),
        )
    };
    vec![
        ("raw-valid", with_mode(0, target.valid_token().as_bytes())),
        (
            "raw-alg-none",
            with_mode(0, b"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.e30."),
        ),
        ("signed-valid", signed(&claims)),
        ("signed-mfa-in-future", signed(&future_mfa)),
        ("mutated-none", vec![2]),
        ("mutated-signature", vec![2, 0x01, 0x00, b'A']),
    ]
}

fn code_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("phone-nl", with_mode(0, b"+31612345678")),
        ("phone-us", with_mode(0, b"+14155550123")),
        ("phone-premium", with_mode(0, b"+19005551234")),
        // RFC 6238 Appendix B, SHA-1 at T = 59: 94287082, six digits 287082.
        ("code-rfc", with_mode(1, &codes::join_time(59, b"287082"))),
        ("code-wrong", with_mode(1, &codes::join_time(59, b"000000"))),
        (
            "compute-sha256-8",
            with_mode(
                2,
                &codes::join_time(1_111_111_111, b"\x01\x02123456789012345678901234567890ab"),
            ),
        ),
        ("uri-account", with_mode(3, b"tina@example.com")),
        ("uri-colon", with_mode(3, b"tina:admin")),
    ]
}

/// The index of `path`'s method in `methods`, as an input's method byte.
fn method(methods: &[&str], name: &str) -> u8 {
    let index = methods
        .iter()
        .position(|m| m.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no method {name}"));
    u8::try_from(index).expect("fewer than 256 methods")
}

fn auth_call(name: &str, caller: auth::Caller, body: &[u8]) -> Vec<u8> {
    encode_calls(&[(auth_method(name), auth_caller(caller), body.to_vec())])
}

fn auth_method(name: &str) -> u8 {
    method(auth::METHODS, name)
}

fn auth_caller(caller: auth::Caller) -> u8 {
    let index = auth::CALLERS.iter().position(|c| *c == caller);
    u8::try_from(index.expect("a caller of the cast")).expect("a small cast")
}

fn encode_calls(calls: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let calls: Vec<Call<'_>> = calls
        .iter()
        .map(|(method, caller, body)| Call {
            method: *method,
            caller: *caller,
            body,
        })
        .collect();
    input::encode(&calls)
}

fn auth_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use auth::Caller::{Nobody, Plain, Support, SupportWithoutMfa, Totp};
    let sign_in = |password: &str| auth_pb::SignInRequest {
        username: auth::PLAIN_USER.into(),
        password: password.into(),
    };
    let session = auth_pb::RefreshRequest {
        session_token: auth::SESSION_PLACEHOLDER.into(),
    };
    let sms_enrollment = encode_calls(&[
        (
            auth_method("StartSmsEnrollment"),
            auth_caller(Plain),
            auth_pb::StartSmsEnrollmentRequest {
                phone_number: "+31612345678".into(),
            }
            .encode_to_vec(),
        ),
        (
            auth_method("ConfirmEnrollment"),
            auth_caller(Plain),
            auth_pb::ConfirmEnrollmentRequest {
                enrollment_id: auth::ENROLLMENT_PLACEHOLDER.into(),
                code: auth::CODE_PLACEHOLDER.into(),
            }
            .encode_to_vec(),
        ),
        (
            auth_method("ResetFactor"),
            auth_caller(Support),
            reset_plain_user(),
        ),
    ]);
    let totp_enrollment = encode_calls(&[
        (
            auth_method("StartTotpEnrollment"),
            auth_caller(Plain),
            Vec::new(),
        ),
        (
            auth_method("ConfirmEnrollment"),
            auth_caller(Plain),
            auth_pb::ConfirmEnrollmentRequest {
                enrollment_id: auth::ENROLLMENT_PLACEHOLDER.into(),
                code: "123456".into(),
            }
            .encode_to_vec(),
        ),
        (auth_method("GetFactor"), auth_caller(Plain), Vec::new()),
    ]);
    vec![
        (
            "sign-in",
            auth_call("SignIn", Nobody, &sign_in(auth::PASSWORD).encode_to_vec()),
        ),
        (
            "sign-in-wrong-password",
            auth_call(
                "SignIn",
                Nobody,
                &sign_in("not the password").encode_to_vec(),
            ),
        ),
        (
            "refresh",
            auth_call("Refresh", Plain, &session.encode_to_vec()),
        ),
        (
            "sign-out",
            auth_call("SignOut", Plain, &session.encode_to_vec()),
        ),
        ("totp-enrollment", totp_enrollment),
        ("sms-enrollment", sms_enrollment),
        (
            "verify-totp",
            auth_call(
                "Verify",
                Totp,
                &auth_pb::VerifyRequest {
                    code: auth::CODE_PLACEHOLDER.into(),
                }
                .encode_to_vec(),
            ),
        ),
        ("get-jwks", auth_call("GetJwks", Nobody, &[])),
        (
            "create-user",
            auth_call(
                "CreateUser",
                Support,
                &auth_pb::CreateUserRequest {
                    username: "fuzz-new".into(),
                    password: auth::PASSWORD.into(),
                    roles: vec!["auditor".into()],
                    ticket: "CHG0012345".into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "create-user-operator",
            auth_call(
                "CreateUser",
                Support,
                &auth_pb::CreateUserRequest {
                    username: "fuzz-operator".into(),
                    password: auth::PASSWORD.into(),
                    roles: vec!["operator".into()],
                    ticket: "CHG0012345".into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "support-without-mfa",
            auth_call(
                "GetUserFactor",
                SupportWithoutMfa,
                &auth_pb::GetUserFactorRequest {
                    username: auth::TOTP_USER.into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "unlock",
            auth_call(
                "Unlock",
                Support,
                &auth_pb::UnlockRequest {
                    username: auth::TOTP_USER.into(),
                    ticket: "CHG0012345".into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "get-user-factor",
            auth_call(
                "GetUserFactor",
                Support,
                &auth_pb::GetUserFactorRequest {
                    username: auth::TOTP_USER.into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "list-audit-events",
            auth_call(
                "ListAuditEvents",
                Support,
                &auth_pb::ListAuditEventsRequest {
                    username: auth::TOTP_USER.into(),
                    kind: "verify".into(),
                    since: Some(prost_types_timestamp(crate::START - 3600)),
                    until: Some(prost_types_timestamp(crate::START + 86_400)),
                    page_size: 10,
                    page_token: String::new(),
                }
                .encode_to_vec(),
            ),
        ),
    ]
}

fn reset_plain_user() -> Vec<u8> {
    auth_pb::ResetFactorRequest {
        username: auth::PLAIN_USER.into(),
        ticket: "CHG0012345".into(),
        reason: "Standard change: Reset SMS".into(),
    }
    .encode_to_vec()
}

fn prost_types_timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn deploy_call(name: &str, caller: deploy::Caller, body: Vec<u8>) -> (u8, u8, Vec<u8>) {
    let index = deploy::CALLERS.iter().position(|c| *c == caller);
    (
        method(deploy::METHODS, name),
        u8::try_from(index.expect("a caller of the cast")).expect("a small cast"),
        body,
    )
}

fn deploy_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use deploy::Caller::{
        DevSteppedUp, Operator, OperatorWithoutMfa, TinaStale, TinaSteppedUp, TinaWithoutMfa,
    };
    use deploy_pb::Environment::{Acceptance, Production, Test};
    let app = || deploy::APP_PLACEHOLDER.to_owned();
    let package = || deploy::PACKAGE_PLACEHOLDER.to_owned();
    let transport = |from: deploy_pb::Environment, to: deploy_pb::Environment| {
        deploy_pb::TransportPackageRequest {
            package_id: package(),
            from_environment: from.into(),
            to_environment: to.into(),
        }
        .encode_to_vec()
    };
    let at = |environment: deploy_pb::Environment| {
        deploy_pb::GetNodeDetailsRequest {
            app_id: app(),
            environment: environment.into(),
        }
        .encode_to_vec()
    };
    let permissions = |environment: deploy_pb::Environment| {
        deploy_pb::GrantNodePermissionsRequest {
            app_id: app(),
            environment: environment.into(),
            username: "dev".into(),
            permissions: vec![
                deploy_pb::NodePermission::Operate.into(),
                deploy_pb::NodePermission::Logs.into(),
            ],
        }
        .encode_to_vec()
    };
    let one = |call: (u8, u8, Vec<u8>)| encode_calls(&[call]);
    let upload = join_messages(
        &deploy::upload_messages(&app(), "2.0.0", b"shop 2.0.0", deploy::SHA256_PLACEHOLDER)
            .iter()
            .map(Vec::as_slice)
            .collect::<Vec<_>>(),
    );
    let create_app = |name: &str| {
        deploy_pb::CreateAppRequest {
            name: name.into(),
            technical_contact: "tina".into(),
        }
        .encode_to_vec()
    };
    let add_erin = || {
        deploy_pb::AddTeamMemberRequest {
            app_id: app(),
            username: "erin".into(),
            role: deploy_pb::TeamRole::Member.into(),
        }
        .encode_to_vec()
    };
    let deploy_to = |environment: deploy_pb::Environment| {
        deploy_pb::DeployPackageRequest {
            package_id: package(),
            environment: environment.into(),
        }
        .encode_to_vec()
    };
    vec![
        (
            "create-app",
            one(deploy_call("CreateApp", Operator, create_app("Web shop"))),
        ),
        (
            "create-app-without-mfa",
            one(deploy_call(
                "CreateApp",
                OperatorWithoutMfa,
                create_app("Web shop 2"),
            )),
        ),
        (
            "team-without-mfa",
            one(deploy_call("AddTeamMember", TinaWithoutMfa, add_erin())),
        ),
        (
            "deploy-production-not-promoted",
            one(deploy_call(
                "DeployPackage",
                TinaSteppedUp,
                deploy_to(Production),
            )),
        ),
        (
            "team",
            encode_calls(&[
                deploy_call(
                    "AddTeamMember",
                    TinaSteppedUp,
                    deploy_pb::AddTeamMemberRequest {
                        app_id: app(),
                        username: "erin".into(),
                        role: deploy_pb::TeamRole::Member.into(),
                    }
                    .encode_to_vec(),
                ),
                deploy_call(
                    "ListTeamMembers",
                    DevSteppedUp,
                    deploy_pb::ListTeamMembersRequest { app_id: app() }.encode_to_vec(),
                ),
                deploy_call(
                    "RemoveTeamMember",
                    TinaSteppedUp,
                    deploy_pb::RemoveTeamMemberRequest {
                        app_id: app(),
                        username: "erin".into(),
                    }
                    .encode_to_vec(),
                ),
            ]),
        ),
        (
            "reads",
            encode_calls(&[
                deploy_call(
                    "GetApp",
                    DevSteppedUp,
                    deploy_pb::GetAppRequest { app_id: app() }.encode_to_vec(),
                ),
                deploy_call("ListApps", DevSteppedUp, Vec::new()),
                deploy_call(
                    "ListEnvironments",
                    DevSteppedUp,
                    deploy_pb::ListEnvironmentsRequest { app_id: app() }.encode_to_vec(),
                ),
                deploy_call(
                    "ListPackages",
                    DevSteppedUp,
                    deploy_pb::ListPackagesRequest { app_id: app() }.encode_to_vec(),
                ),
                deploy_call(
                    "ListDeployments",
                    DevSteppedUp,
                    deploy_pb::ListDeploymentsRequest {
                        app_id: app(),
                        environment: Test.into(),
                    }
                    .encode_to_vec(),
                ),
                deploy_call(
                    "ListNodePermissions",
                    TinaWithoutMfa,
                    deploy_pb::ListNodePermissionsRequest { app_id: app() }.encode_to_vec(),
                ),
                deploy_call("ListActions", DevSteppedUp, Vec::new()),
            ]),
        ),
        (
            "upload",
            one(deploy_call("UploadPackage", TinaSteppedUp, upload)),
        ),
        (
            "transport-to-production",
            encode_calls(&[
                deploy_call(
                    "TransportPackage",
                    TinaSteppedUp,
                    transport(Test, Acceptance),
                ),
                deploy_call(
                    "TransportPackage",
                    TinaSteppedUp,
                    transport(Acceptance, Production),
                ),
            ]),
        ),
        (
            "transport-stale-mfa",
            one(deploy_call(
                "TransportPackage",
                TinaStale,
                transport(Acceptance, Production),
            )),
        ),
        (
            "deploy-test",
            one(deploy_call("DeployPackage", DevSteppedUp, deploy_to(Test))),
        ),
        (
            "production-node",
            encode_calls(&[
                deploy_call("GetNodeDetails", TinaSteppedUp, at(Production)),
                deploy_call("DownloadBackup", TinaSteppedUp, at(Production)),
            ]),
        ),
        (
            "permissions",
            encode_calls(&[
                deploy_call(
                    "GrantNodePermissions",
                    TinaWithoutMfa,
                    permissions(Acceptance),
                ),
                deploy_call(
                    "RevokeNodePermissions",
                    TinaWithoutMfa,
                    permissions(Acceptance),
                ),
            ]),
        ),
        (
            "check-access",
            one(deploy_call(
                "CheckAccess",
                DevSteppedUp,
                deploy_pb::CheckAccessRequest {
                    action: deploy_pb::Action::TransportPackage.into(),
                    app_id: app(),
                    environment: Production.into(),
                }
                .encode_to_vec(),
            )),
        ),
    ]
}

#[cfg(test)]
mod tests;
