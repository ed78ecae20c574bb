//! What JSON each contract message becomes (docs/http.md "Routes"): snake_case
//! fields, friendly enum names, RFC 3339 times, `null` for unset values.
//! No access or session token is ever part of a view.

use base64::Engine as _;
use padlock_proto::auth::v1 as auth;
use padlock_proto::deploy::v1 as deploy;
use serde_json::{Value, json};

use padlock_proto::auth::v1::{FactorMethod, FactorState};
use padlock_proto::deploy::v1::{Action, Environment, NodePermission, TeamRole};

use crate::names::{self, text_or_null, time};

pub fn user(user: &auth::User) -> Value {
    json!({"id": user.id, "username": user.username, "roles": user.roles})
}

pub fn factor(factor: &auth::Factor) -> Value {
    json!({
        "method": names::json::<FactorMethod>(factor.method),
        "state": names::json::<FactorState>(factor.state),
        "locked": factor.locked,
        "locked_until": time(factor.locked_until.as_ref()),
        "attempts_left": factor.attempts_left,
        "masked_phone_number": text_or_null(&factor.masked_phone_number),
        "enrolled_at": time(factor.enrolled_at.as_ref()),
        "reset": factor.reset_at.as_ref().map(|at| json!({
            "at": time(Some(at)),
            "by": factor.reset_by,
            "ticket": factor.reset_ticket,
        })),
    })
}

pub fn totp_enrollment(started: &auth::StartTotpEnrollmentResponse) -> Value {
    let png = base64::engine::general_purpose::STANDARD.encode(&started.qr_png);
    json!({
        "enrollment_id": started.enrollment_id,
        "secret": started.secret,
        "otpauth_uri": started.otpauth_uri,
        "qr_png": format!("data:image/png;base64,{png}"),
        "qr_svg": started.qr_svg,
        "expires_at": time(started.expires_at.as_ref()),
    })
}

pub fn sms_enrollment(started: &auth::StartSmsEnrollmentResponse) -> Value {
    json!({
        "enrollment_id": started.enrollment_id,
        "masked_phone_number": started.masked_phone_number,
        "code_expires_at": time(started.code_expires_at.as_ref()),
        "resend_allowed_at": time(started.resend_allowed_at.as_ref()),
    })
}

pub fn sms_code(sent: &auth::SendSmsCodeResponse) -> Value {
    json!({
        "masked_phone_number": sent.masked_phone_number,
        "code_expires_at": time(sent.code_expires_at.as_ref()),
        "resend_allowed_at": time(sent.resend_allowed_at.as_ref()),
    })
}

/// A verified second factor; the new access token goes into the cookie.
pub fn step_up(stepped: &auth::StepUpResponse) -> Value {
    json!({
        "mfa_at": time(stepped.mfa_at.as_ref()),
        "mfa_expires_at": time(stepped.mfa_expires_at.as_ref()),
        "method": names::json::<FactorMethod>(stepped.method),
    })
}

pub fn jwks(jwks: &auth::Jwks) -> Value {
    let keys: Vec<Value> = jwks
        .keys
        .iter()
        .map(|k| json!({"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "use": k.r#use, "alg": k.alg}))
        .collect();
    json!({ "keys": keys })
}

pub fn app(app: &deploy::App) -> Value {
    json!({
        "id": app.id,
        "name": app.name,
        "technical_contact": app.technical_contact,
        "created_at": time(app.created_at.as_ref()),
    })
}

pub fn member(member: &deploy::TeamMember) -> Value {
    json!({
        "username": member.username,
        "role": names::json::<TeamRole>(member.role),
        "added_at": time(member.added_at.as_ref()),
    })
}

pub fn deployment(d: &deploy::Deployment) -> Value {
    json!({
        "id": d.id,
        "package_id": d.package_id,
        "package_version": d.package_version,
        "environment": names::json::<Environment>(d.environment),
        "from_environment": names::json::<Environment>(d.from_environment),
        "deployed_by": d.deployed_by,
        "deployed_at": time(d.deployed_at.as_ref()),
        "mfa_at": time(d.mfa_at.as_ref()),
        "mfa_method": text_or_null(&d.mfa_method),
    })
}

pub fn environment(info: &deploy::EnvironmentInfo) -> Value {
    json!({
        "environment": names::json::<Environment>(info.environment),
        "node_name": info.node_name,
        "current": info.current.as_ref().map_or(Value::Null, deployment),
    })
}

pub fn package(p: &deploy::Package) -> Value {
    json!({
        "id": p.id,
        "version": p.version,
        "file_name": p.file_name,
        "size": p.size,
        "sha256": p.sha256,
        "uploaded_by": p.uploaded_by,
        "uploaded_at": time(p.uploaded_at.as_ref()),
    })
}

pub fn node(n: &deploy::NodeDetails) -> Value {
    json!({
        "app_id": n.app_id,
        "environment": names::json::<Environment>(n.environment),
        "node_name": n.node_name,
        "url": n.url,
        "region": n.region,
        "plan": n.plan,
        "license_id": n.license_id,
        "package_version": text_or_null(&n.package_version),
    })
}

pub fn permission_set(set: &deploy::NodePermissionSet) -> Value {
    let permissions: Vec<Value> = set
        .permissions
        .iter()
        .filter_map(|p| names::name::<NodePermission>(*p).map(Value::from))
        .collect();
    json!({
        "environment": names::json::<Environment>(set.environment),
        "username": set.username,
        "permissions": permissions,
    })
}

pub fn action_policy(a: &deploy::ActionPolicy) -> Value {
    json!({
        "action": names::json::<Action>(a.action),
        "environment": names::json::<Environment>(a.environment),
        "padlock": a.padlock,
        "max_age_seconds": a.max_age_seconds,
        "permission": names::json::<NodePermission>(a.permission),
    })
}

pub fn access(a: &deploy::CheckAccessResponse) -> Value {
    json!({
        "allowed": a.allowed,
        "reason": text_or_null(&a.reason),
        "padlock": a.padlock,
        "max_age_seconds": a.max_age_seconds,
        "mfa_expires_at": time(a.mfa_expires_at.as_ref()),
    })
}

/// `{"key": [view(item), ...]}`.
pub fn list<T>(key: &str, items: &[T], view: impl Fn(&T) -> Value) -> Value {
    let items: Vec<Value> = items.iter().map(view).collect();
    let mut object = serde_json::Map::new();
    object.insert(key.to_owned(), Value::Array(items));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    #[test]
    fn a_transport_shows_friendly_names_and_times() {
        let d = deploy::Deployment {
            id: "d1".into(),
            app_id: "a1".into(),
            package_id: "p1".into(),
            package_version: "1.0.0".into(),
            environment: deploy::Environment::Production as i32,
            from_environment: deploy::Environment::Acceptance as i32,
            deployed_by: "tina".into(),
            deployed_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            mfa_at: None,
            mfa_method: String::new(),
        };
        assert_eq!(
            deployment(&d),
            json!({
                "id": "d1", "package_id": "p1", "package_version": "1.0.0",
                "environment": "production", "from_environment": "acceptance",
                "deployed_by": "tina", "deployed_at": "2023-11-14T22:13:20Z",
                "mfa_at": null, "mfa_method": null,
            })
        );
    }

    #[test]
    fn a_step_up_never_shows_the_token() {
        let s = auth::StepUpResponse {
            access_token: "eyJ.secret.token".into(),
            expires_at: None,
            mfa_at: None,
            mfa_expires_at: None,
            method: auth::FactorMethod::Totp as i32,
        };
        let shown = step_up(&s).to_string();
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains(r#""method":"totp""#));
    }
}
