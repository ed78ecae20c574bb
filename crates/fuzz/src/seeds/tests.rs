use super::*;
use crate::gateway;
use tonic::Code;

fn seed(target: &str, name: &str) -> Vec<u8> {
    seeds(target)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no seed {name}"))
        .1
}

#[test]
fn the_committed_corpus_is_what_the_seeds_are() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in TARGETS {
        for (name, bytes) in seeds(target) {
            let path = root.join(target).join(name);
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run examples/write_seeds", path.display()));
            assert_eq!(
                committed,
                bytes,
                "{} is stale; run examples/write_seeds",
                path.display()
            );
        }
    }
}

#[test]
fn auth_seeds_reach_the_handlers_success_paths() {
    let target = auth::AuthTarget::new();
    assert_eq!(target.run(&seed("auth_rpc", "sign-in")), [Code::Ok]);
    assert_eq!(
        target.run(&seed("auth_rpc", "sign-in-wrong-password")),
        [Code::Unauthenticated]
    );
    assert_eq!(target.run(&seed("auth_rpc", "refresh")), [Code::Ok]);
    assert_eq!(target.run(&seed("auth_rpc", "sign-out")), [Code::Ok]);
    assert_eq!(
        target.run(&seed("auth_rpc", "sms-enrollment")),
        [Code::Ok; 3],
        "start, confirm with the texted code, reset"
    );
    assert_eq!(
        target.run(&seed("auth_rpc", "totp-enrollment")),
        [Code::Ok, Code::Unauthenticated, Code::Ok]
    );
    assert_eq!(target.run(&seed("auth_rpc", "verify-totp")), [Code::Ok]);
    for name in [
        "get-jwks",
        "create-user",
        "unlock",
        "get-user-factor",
        "list-audit-events",
    ] {
        assert_eq!(target.run(&seed("auth_rpc", name)), [Code::Ok], "{name}");
    }
    assert_eq!(
        target.run(&seed("auth_rpc", "create-user-operator")),
        [Code::PermissionDenied],
        "support cannot mint operators"
    );
    assert_eq!(
        target.run(&seed("auth_rpc", "support-without-mfa")),
        [Code::Unauthenticated],
        "support needs a second factor in the session"
    );
}

#[test]
fn deploy_seeds_reach_the_handlers_success_paths() {
    let target = deploy::DeployTarget::new();
    // First, while the package has run on test only.
    assert_eq!(
        target.run(&seed("deploy_rpc", "deploy-production-not-promoted")),
        [Code::FailedPrecondition]
    );
    for (name, refused) in [
        ("create-app-without-mfa", Code::Unauthenticated),
        ("team-without-mfa", Code::Unauthenticated),
        ("transport-stale-mfa", Code::Unauthenticated),
    ] {
        assert_eq!(target.run(&seed("deploy_rpc", name)), [refused], "{name}");
    }
    for name in [
        "create-app",
        "team",
        "reads",
        "upload",
        "transport-to-production",
        "deploy-test",
        "production-node",
        "permissions",
        "check-access",
    ] {
        let codes = target.run(&seed("deploy_rpc", name));
        assert!(
            !codes.is_empty() && codes.iter().all(|c| *c == Code::Ok),
            "{name}: {codes:?}"
        );
    }
}

#[test]
fn gateway_seeds_pass_the_gateway_checks() {
    let target = gateway::GatewayTarget::new();
    for (name, bytes) in seeds("gateway_json") {
        let status = target.run(&bytes).expect("a response");
        let expected = if name == "sign-in-no-csrf" {
            http::StatusCode::FORBIDDEN
        } else {
            http::StatusCode::SERVICE_UNAVAILABLE
        };
        assert_eq!(status, expected, "{name}");
    }
}

#[test]
fn token_and_code_seeds_pass_the_oracle() {
    let target = token::TokenTarget::new();
    for (_, bytes) in seeds("token") {
        target.run(&bytes);
    }
    for (_, bytes) in seeds("codes") {
        codes::run(&bytes);
    }
}
