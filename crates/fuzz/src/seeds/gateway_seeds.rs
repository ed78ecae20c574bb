//! Seeds of the `gateway_json` target: HTTP requests to the gateway's routes.

use super::*;
use crate::gateway;

pub(super) fn gateway_request(
    route: &str,
    flags: u8,
    segment: &str,
    query: &str,
    body: &str,
) -> Vec<u8> {
    let index = gateway::ROUTES
        .iter()
        .position(|(method, path)| format!("{method} {path}") == route)
        .unwrap_or_else(|| panic!("no route {route}"));
    let mut out = vec![u8::try_from(index).expect("fewer than 256 routes"), flags];
    out.extend(join_messages(&[
        segment.as_bytes(),
        query.as_bytes(),
        body.as_bytes(),
    ]));
    out
}

pub(super) fn gateway_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use gateway::{FLAG_ACCESS_COOKIE, FLAG_CSRF, FLAG_JSON, FLAG_SESSION_COOKIE};
    let write = FLAG_CSRF | FLAG_JSON | FLAG_SESSION_COOKIE | FLAG_ACCESS_COOKIE;
    let read = FLAG_SESSION_COOKIE | FLAG_ACCESS_COOKIE;
    let app = "3f2b8c1e-5d7a-4e9b-8c6d-1a2b3c4d5e6f";
    vec![
        (
            "sign-in",
            gateway_request(
                "POST /api/v1/sessions",
                FLAG_CSRF | FLAG_JSON,
                "",
                "",
                r#"{"username":"tina","password":"correct horse battery staple"}"#,
            ),
        ),
        (
            "sign-in-no-csrf",
            gateway_request("POST /api/v1/sessions", FLAG_JSON, "", "", "{}"),
        ),
        (
            "sms-enrollment",
            gateway_request(
                "POST /api/v1/me/factor/sms",
                write,
                "",
                "",
                r#"{"phone_number":"+31612345678"}"#,
            ),
        ),
        (
            "confirm",
            gateway_request(
                "POST /api/v1/me/factor/confirmation",
                write,
                "",
                "",
                r#"{"enrollment_id":"0b4a6c2e-1f3d-4a5b-9c8d-7e6f5a4b3c2d","code":"123456"}"#,
            ),
        ),
        (
            "verify",
            gateway_request(
                "POST /api/v1/me/factor/verification",
                write,
                "",
                "",
                r#"{"code":"123456"}"#,
            ),
        ),
        (
            "add-member",
            gateway_request(
                "POST /api/v1/apps/{}/members",
                write,
                app,
                "",
                r#"{"username":"erin","role":"deploy"}"#,
            ),
        ),
        (
            "grant",
            gateway_request(
                "POST /api/v1/apps/{}/permissions/grants",
                write,
                app,
                "",
                r#"{"environment":"acceptance","username":"dev","permissions":["transport","logs"]}"#,
            ),
        ),
        (
            "transport",
            gateway_request(
                "POST /api/v1/packages/{}/transports",
                write,
                app,
                "",
                r#"{"from_environment":"acceptance","to_environment":"production"}"#,
            ),
        ),
        (
            "deploy",
            gateway_request(
                "POST /api/v1/packages/{}/deployments",
                write,
                app,
                "",
                r#"{"environment":"test"}"#,
            ),
        ),
        (
            "upload",
            gateway_request(
                "POST /api/v1/apps/{}/packages",
                FLAG_CSRF | read,
                app,
                "version=2.0.0&file_name=shop-2.0.0.mda",
                "MDA package bytes",
            ),
        ),
        (
            "access",
            gateway_request(
                "GET /api/v1/apps/{}/access",
                read,
                app,
                "action=transport_package&environment=production",
                "",
            ),
        ),
        (
            "deployments",
            gateway_request(
                "GET /api/v1/apps/{}/deployments",
                read,
                app,
                "environment=test",
                "",
            ),
        ),
    ]
}
