//! The signed-in person's own routes: sign in and out (auth
//! `SessionService`), who am I, and their second factor (auth
//! `TwoFactorService`): enrollment, SMS codes and step-up. A verified code
//! replaces the access cookie with a token that carries `mfa_at`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use padlock_proto::auth::v1::{
    ConfirmEnrollmentRequest, GetFactorRequest, SendSmsCodeRequest, SignInRequest, SignOutRequest,
    StartSmsEnrollmentRequest, StartTotpEnrollmentRequest, StepUpResponse, VerifyRequest,
    WhoAmIRequest,
};
use padlock_runtime::Secret;
use padlock_runtime::metadata::CLIENT_IP;
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::backend::{anonymous, authorized};
use crate::error::from_status;
use crate::input::JsonBody;
use crate::names::time;
use crate::session::{Cookies, SetCookies, with_session};
use crate::{Gateway, views};

/// `POST /api/v1/sessions`: 201 `{user}` and both cookies. Auth throttles
/// password guessing per client address, so the browser's address (the TCP
/// peer, never a header the browser could choose) goes along as
/// `padlock-client-ip`; auth believes it from `--trusted-proxies` only.
pub async fn sign_in(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(mut body): JsonBody,
) -> Response {
    let username = body.string("username");
    let password = Secret::new(body.string("password"));
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    let mut request = anonymous(SignInRequest {
        username,
        password: password.expose().clone(),
    });
    if let Ok(ip) = MetadataValue::try_from(peer.ip().to_canonical().to_string()) {
        request.metadata_mut().insert(CLIENT_IP, ip);
    }
    match gw.backends.sessions().sign_in(request).await {
        Ok(response) => {
            let signed_in = response.into_inner();
            let mut cookies = SetCookies::default();
            cookies.session(&signed_in.session_token, gw.settings.session_ttl_secs);
            cookies.access(&signed_in.access_token);
            let user = signed_in.user.as_ref().map_or(Value::Null, views::user);
            let mut response = (StatusCode::CREATED, Json(json!({ "user": user }))).into_response();
            cookies.apply(&mut response);
            response
        }
        Err(status) => from_status(&status).into_response(),
    }
}

/// `DELETE /api/v1/sessions/current`: 204, both cookies expired. A session
/// auth no longer knows counts as signed out already.
pub async fn sign_out(State(gw): State<Gateway>, cookies: Cookies) -> Response {
    if let Some(session) = &cookies.session {
        let request = anonymous(SignOutRequest {
            session_token: session.expose().clone(),
        });
        match gw.backends.sessions().sign_out(request).await {
            Ok(_) => {}
            Err(s) if matches!(s.code(), Code::Unauthenticated | Code::InvalidArgument) => {}
            Err(status) => return from_status(&status).into_response(),
        }
    }
    let mut set = SetCookies::default();
    set.clear();
    let mut response = StatusCode::NO_CONTENT.into_response();
    set.apply(&mut response);
    response
}

/// `GET /api/v1/me`: the user and the session's second-factor window (auth
/// `WhoAmI`, which checks the token) and their factor (`GetFactor`), asked
/// at once.
pub async fn me(State(gw): State<Gateway>, cookies: Cookies) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut sessions = gw.backends.sessions();
        let mut two_factor = gw.backends.two_factor();
        let who = authorized(WhoAmIRequest {}, &token);
        let factor = authorized(GetFactorRequest {}, &token);
        async move {
            let (who, factor) =
                tokio::try_join!(sessions.who_am_i(who), two_factor.get_factor(factor))?;
            Ok((who.into_inner(), factor.into_inner()))
        }
    })
    .await
    .respond(|(who, factor), _| {
        Json(json!({
            "user": who.user.as_ref().map_or(Value::Null, views::user),
            "factor": views::factor(&factor),
            "mfa_at": time(who.mfa_at.as_ref()),
            "mfa_expires_at": time(who.mfa_expires_at.as_ref()),
        }))
    })
}

/// `POST /api/v1/me/factor/totp`: the secret, URI and QR code to scan.
pub async fn start_totp(State(gw): State<Gateway>, cookies: Cookies) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.two_factor();
        let request = authorized(StartTotpEnrollmentRequest {}, &token);
        async move {
            client
                .start_totp_enrollment(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|started, _| Json(views::totp_enrollment(&started)))
}

/// `POST /api/v1/me/factor/sms` `{"phone_number"}`: enroll a phone; a code
/// is on its way.
pub async fn start_sms(
    State(gw): State<Gateway>,
    cookies: Cookies,
    JsonBody(mut body): JsonBody,
) -> Response {
    let phone_number = Secret::new(body.string("phone_number"));
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.two_factor();
        let request = authorized(
            StartSmsEnrollmentRequest {
                phone_number: phone_number.expose().clone(),
            },
            &token,
        );
        async move {
            client
                .start_sms_enrollment(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|started, _| Json(views::sms_enrollment(&started)))
}

/// `POST /api/v1/me/factor/sms/code`: send a new code to the enrolled phone.
pub async fn send_sms_code(State(gw): State<Gateway>, cookies: Cookies) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.two_factor();
        let request = authorized(SendSmsCodeRequest {}, &token);
        async move {
            client
                .send_sms_code(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|sent, _| Json(views::sms_code(&sent)))
}

/// `POST /api/v1/me/factor/confirmation` `{"enrollment_id","code"}`.
pub async fn confirm(
    State(gw): State<Gateway>,
    cookies: Cookies,
    JsonBody(mut body): JsonBody,
) -> Response {
    let enrollment_id = body.string("enrollment_id");
    let code = Secret::new(body.string("code"));
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.two_factor();
        let request = authorized(
            ConfirmEnrollmentRequest {
                enrollment_id: enrollment_id.clone(),
                code: code.expose().clone(),
            },
            &token,
        );
        async move {
            client
                .confirm_enrollment(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(stepped_up)
}

/// `POST /api/v1/me/factor/verification` `{"code"}`.
pub async fn verify(
    State(gw): State<Gateway>,
    cookies: Cookies,
    JsonBody(mut body): JsonBody,
) -> Response {
    let code = Secret::new(body.string("code"));
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.two_factor();
        let request = authorized(
            VerifyRequest {
                code: code.expose().clone(),
            },
            &token,
        );
        async move {
            client
                .verify(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(stepped_up)
}

/// The new access token goes into the cookie, never into the body.
fn stepped_up(stepped: StepUpResponse, cookies: &mut SetCookies) -> Json<Value> {
    cookies.access(&stepped.access_token);
    Json(views::step_up(&stepped))
}
