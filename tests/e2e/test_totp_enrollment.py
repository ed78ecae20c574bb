"""TOTP enrollment and step-up, end to end, as an operator and a person do it.

One `padlock-auth` serves the whole module. The tests run in file order and
build on each other through module fixtures: alice is provisioned with the
CLI, signs in, enrolls an authenticator app (oathtool) by reading the QR code
(zbarimg), confirms with a code, steps up again with the next code, and
refreshes. Every token is checked with PyJWT against the server's JWKS.
Codes for a later TOTP step come from `oathtool --now`, never from sleeping.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import time
import urllib.parse
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reasons import Reason
from conftest import (
    AUDIENCE,
    ISSUER,
    AuthServer,
    Grpcurl,
    Msg,
    now,
    parse_timestamp,
    redact,
    require_tool,
    secret,
    totp_code,
)

PKG = "padlock.auth.v1"
SESSION = f"{PKG}.SessionService"
TWO_FACTOR = f"{PKG}.TwoFactorService"
KEYS = f"{PKG}.KeyService"
STEP = 30
MFA_WINDOW_S = 8 * 60 * 60
CLOCK_SLACK_S = 5


@dataclass
class User:
    username: str
    password: str
    roles: list[str]
    added: subprocess.CompletedProcess


@dataclass
class StepUp:
    response: Msg
    code: str
    at_unix: int  # the time the code was generated for
    returned_at: float


def access_token(resp: Msg) -> str:
    return secret(resp["accessToken"])


def sign_in(grpc: Grpcurl, user: User) -> Msg:
    resp = grpc.call(f"{SESSION}/SignIn", {"username": user.username, "password": user.password})
    secret(resp.get("sessionToken", ""))
    secret(resp.get("accessToken", ""))
    return resp


def verify_token(token: str, jwks: jwt.PyJWKSet) -> dict:
    """Verify like the deploy service: EdDSA only, kid required, iss, aud,
    exp and iat checked with 60 s leeway."""
    header = jwt.get_unverified_header(token)
    assert header.get("alg") == "EdDSA", f"token header alg {header.get('alg')!r}"
    kid = header.get("kid")
    assert kid, "token header has no kid"
    try:
        key = jwks[kid]
    except KeyError:
        pytest.fail(f"kid {kid!r} is not in the JWKS")
    try:
        return jwt.decode(
            token, key=key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER, leeway=60,
            options={"require": ["iss", "aud", "sub", "exp", "iat", "jti"]},
        )
    except jwt.PyJWTError as e:
        pytest.fail(f"access token does not verify: {type(e).__name__}: {e}")


def assert_refused(err, code: str, reason: str | None = None):
    assert err.code == code, f"expected {code}, got {err}"
    info = err.error_info
    assert info is not None, f"no google.rpc.ErrorInfo in {err}"
    assert info.get("domain") == "padlock", f"ErrorInfo domain in {err}"
    if reason is None:
        assert info.get("reason"), f"ErrorInfo without a reason in {err}"
    else:
        assert info.get("reason") == reason, f"expected reason {reason}, got {err}"


def a_wrong_code(secret_b32: str) -> str:
    """Six digits that are no code of this secret within five steps of now."""
    t = int(time.time())
    out = subprocess.run(
        [require_tool("oathtool"), "--totp", "-b", secret_b32, "--now", f"@{t - 5 * STEP}", "-w", "10"],
        capture_output=True, text=True, timeout=10, check=True,
    )
    near = set(out.stdout.split())
    return next(c for c in ("000000", "123456", "654321", "999999") if c not in near)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def alice(server: AuthServer) -> User:
    """Provisioned with the CLI while the server runs, as an operator would."""
    password = secret(secrets.token_urlsafe(18))
    added = server.cli("users", "add", "--username", "alice", "--role", "operator",
                       stdin=password + "\n")
    return User("alice", password, ["operator"], added)


@pytest.fixture(scope="module")
def jwks(grpc: Grpcurl) -> jwt.PyJWKSet:
    doc = grpc.call(f"{KEYS}/GetJwks")
    return jwt.PyJWKSet.from_dict(doc)


@pytest.fixture(scope="module")
def session(grpc: Grpcurl, alice: User) -> Msg:
    assert alice.added.returncode == 0, "alice could not be provisioned"
    return sign_in(grpc, alice)


@pytest.fixture(scope="module")
def enrollment(grpc: Grpcurl, session: Msg) -> Msg:
    resp = grpc.call(f"{TWO_FACTOR}/StartTotpEnrollment", token=access_token(session))
    secret(resp.get("secret", ""))
    secret(resp.get("otpauthUri", ""))
    return resp


@pytest.fixture(scope="module")
def confirmed(grpc: Grpcurl, session: Msg, enrollment: Msg) -> StepUp:
    t = int(time.time())
    code = totp_code(enrollment["secret"], t)
    resp = grpc.call(f"{TWO_FACTOR}/ConfirmEnrollment",
                     {"enrollmentId": enrollment["enrollmentId"], "code": code},
                     token=access_token(session))
    secret(resp.get("accessToken", ""))
    return StepUp(resp, code, t, now())


@pytest.fixture(scope="module")
def next_step(grpc: Grpcurl, enrollment: Msg, confirmed: StepUp) -> StepUp:
    """Verify with the code of the step after the confirming one; the server
    accepts one step of drift, so no waiting is needed."""
    t = confirmed.at_unix + STEP
    code = totp_code(enrollment["secret"], t)
    resp = grpc.call(f"{TWO_FACTOR}/Verify", {"code": code}, token=access_token(confirmed.response))
    secret(resp.get("accessToken", ""))
    return StepUp(resp, code, t, now())


# ---------------------------------------------------------------- operator


def test_cli_provisions_a_user_from_a_password_on_stdin(alice: User):
    out = alice.added.stdout + alice.added.stderr
    assert alice.added.returncode == 0, f"users add exited {alice.added.returncode}: {redact(out)}"
    assert alice.password not in out, "users add echoed the password"


def test_cli_refuses_a_username_that_exists(server: AuthServer, alice: User):
    again = server.cli("users", "add", "--username", alice.username, "--role", "operator",
                       stdin="another-password\n")
    assert again.returncode != 0, "adding alice twice succeeded"


def test_reflection_lists_the_padlock_services_and_health(grpc: Grpcurl):
    out = grpc.run(grpc.addr, "list")
    assert out.returncode == 0, f"grpcurl list failed: {out.stderr}"
    services = set(out.stdout.split())
    expected = {f"{PKG}.SessionService", f"{PKG}.TwoFactorService", f"{PKG}.KeyService",
                f"{PKG}.SupportService", "grpc.health.v1.Health"}
    assert expected <= services, f"missing from `grpcurl list`: {sorted(expected - services)}"


def test_reflection_describes_the_two_factor_service(grpc: Grpcurl):
    out = grpc.run(grpc.addr, "describe", TWO_FACTOR)
    assert out.returncode == 0, f"grpcurl describe failed: {out.stderr}"
    assert f"{TWO_FACTOR} is a service" in out.stdout
    for rpc in ("GetFactor", "StartTotpEnrollment", "StartSmsEnrollment", "ConfirmEnrollment",
                "SendSmsCode", "Verify"):
        assert re.search(rf"rpc {rpc}\s*\(", out.stdout), f"describe shows no rpc {rpc}"


def test_health_check_reports_serving(grpc: Grpcurl):
    resp = grpc.call("grpc.health.v1.Health/Check", {"service": ""})
    assert resp.get("status") == "SERVING"


def test_jwks_publishes_ed25519_signing_keys(grpc: Grpcurl, jwks: jwt.PyJWKSet):
    doc = grpc.call(f"{KEYS}/GetJwks")
    assert doc["keys"], "JWKS has no keys"
    for key in doc["keys"]:
        assert {k: key.get(k) for k in ("kty", "crv", "use", "alg")} == {
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA"}
        assert key.get("kid"), "a key without kid"
        x = key["x"]
        assert "=" not in x, "x must be unpadded base64url"
        assert len(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))) == 32, "x is not 32 bytes"
    assert len(jwks.keys) == len(doc["keys"]), "PyJWT could not load every key"


# ---------------------------------------------------------------- primary sign-in


def test_sign_in_gives_a_password_only_token(session: Msg, alice: User, jwks: jwt.PyJWKSet):
    assert session.get("sessionToken"), "no session token"
    user = session["user"]
    assert user["username"] == alice.username
    assert sorted(user["roles"]) == sorted(alice.roles)
    claims = verify_token(access_token(session), jwks)
    assert claims["sub"] == user["id"]
    assert claims["preferred_username"] == alice.username
    assert sorted(claims["roles"]) == sorted(alice.roles)
    assert claims["amr"] == ["pwd"]
    for name in ("sid", "jti", "acr"):
        assert claims.get(name), f"claim {name} missing"
    assert abs(claims["auth_time"] - now()) <= CLOCK_SLACK_S
    assert abs(claims["iat"] - now()) <= CLOCK_SLACK_S
    assert 0 < claims["exp"] - claims["iat"] <= 3600, "access token should live minutes"
    assert abs(parse_timestamp(session["expiresAt"]) - claims["exp"]) <= 1
    assert "mfa_at" not in claims and "mfa_method" not in claims, "second factor claimed before 2FA"


def test_factor_is_none_before_enrollment(grpc: Grpcurl, session: Msg):
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(session))
    assert factor.get("state") == "FACTOR_STATE_NONE"
    assert factor.get("method") == "FACTOR_METHOD_NONE"


# ---------------------------------------------------------------- enrollment


def test_totp_enrollment_returns_secret_uri_and_qr_codes(enrollment: Msg):
    assert enrollment.get("enrollmentId")
    raw = base64.b32decode(enrollment["secret"] + "=" * (-len(enrollment["secret"]) % 8))
    assert len(raw) == 20, f"secret is {len(raw) * 8} bits, want 160"
    assert enrollment["otpauthUri"].startswith("otpauth://totp/")
    png = base64.b64decode(enrollment["qrPng"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), "qrPng is not a PNG"
    assert "<svg" in enrollment["qrSvg"], "qrSvg is not SVG"
    assert parse_timestamp(enrollment["expiresAt"]) > now(), "enrollment already expired"


def test_qr_png_decodes_to_the_otpauth_uri(enrollment: Msg, tmp_path):
    png = tmp_path / "qr.png"
    png.write_bytes(base64.b64decode(enrollment["qrPng"]))
    out = subprocess.run([require_tool("zbarimg"), "--raw", "-q", str(png)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"zbarimg found no QR code (exit {out.returncode})"
    decoded = out.stdout.rstrip("\n")
    assert decoded == enrollment["otpauthUri"], "the QR code does not hold otpauthUri"


def test_otpauth_uri_names_issuer_and_account(enrollment: Msg, alice: User):
    uri = urllib.parse.urlsplit(enrollment["otpauthUri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    label = urllib.parse.unquote(uri.path.lstrip("/"))
    assert label == f"padlock:{alice.username}", f"label {label!r}"
    query = dict(urllib.parse.parse_qsl(uri.query))
    assert query.get("issuer") == "padlock"
    assert query.get("secret", "").rstrip("=").upper() == enrollment["secret"].rstrip("=").upper(), \
        "the URI's secret differs from the response's"
    # Optional parameters an app would honour must match the server's TOTP.
    assert query.get("algorithm", "SHA1").upper() == "SHA1"
    assert query.get("digits", "6") == "6"
    assert query.get("period", "30") == "30"


def test_authenticator_code_confirms_enrollment_and_steps_up(
        grpc: Grpcurl, session: Msg, confirmed: StepUp, jwks: jwt.PyJWKSet):
    resp = confirmed.response
    assert resp.get("method") == "FACTOR_METHOD_TOTP"
    mfa_at = parse_timestamp(resp["mfaAt"])
    assert abs(mfa_at - confirmed.returned_at) <= CLOCK_SLACK_S
    assert abs(parse_timestamp(resp["mfaExpiresAt"]) - mfa_at - MFA_WINDOW_S) <= 1, \
        "mfaExpiresAt is not mfaAt + 8 h"

    claims = verify_token(access_token(resp), jwks)
    before = verify_token(access_token(session), jwks)
    assert claims["mfa_at"] == int(mfa_at)
    assert abs(claims["mfa_at"] - confirmed.returned_at) <= CLOCK_SLACK_S
    assert claims["mfa_method"] == "totp"
    assert {"pwd", "otp", "mfa"} <= set(claims["amr"]), f"amr {claims['amr']}"
    assert (claims["sub"], claims["sid"]) == (before["sub"], before["sid"]), "not the same session"
    assert claims["auth_time"] == before["auth_time"], "step-up changed auth_time"

    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(resp))
    assert (factor.get("method"), factor.get("state")) == ("FACTOR_METHOD_TOTP", "FACTOR_STATE_ACTIVE")


def test_replayed_code_is_refused(grpc: Grpcurl, confirmed: StepUp):
    err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": confirmed.code},
                          token=access_token(confirmed.response))
    assert_refused(err, "UNAUTHENTICATED", Reason.CODE_REUSED)


def test_next_step_code_verifies(next_step: StepUp, confirmed: StepUp, jwks: jwt.PyJWKSet):
    resp = next_step.response
    assert resp.get("method") == "FACTOR_METHOD_TOTP"
    mfa_at = parse_timestamp(resp["mfaAt"])
    assert mfa_at >= parse_timestamp(confirmed.response["mfaAt"])
    claims = verify_token(access_token(resp), jwks)
    assert claims["mfa_at"] == int(mfa_at)
    assert claims["mfa_method"] == "totp"
    assert {"pwd", "otp", "mfa"} <= set(claims["amr"])


def test_wrong_code_is_refused(grpc: Grpcurl, enrollment: Msg, next_step: StepUp):
    err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": a_wrong_code(enrollment["secret"])},
                          token=access_token(next_step.response))
    assert_refused(err, "UNAUTHENTICATED", Reason.CODE_INVALID)


def test_refresh_carries_mfa_at_over_unchanged(
        grpc: Grpcurl, session: Msg, next_step: StepUp, jwks: jwt.PyJWKSet):
    stepped = next_step.response
    mfa_at = parse_timestamp(stepped["mfaAt"])
    # Let the clock pass a whole second, so "set to now" cannot pass for "kept".
    time.sleep(max(0.0, int(mfa_at) + 1.2 - now()))
    resp = grpc.call(f"{SESSION}/Refresh", {"sessionToken": session["sessionToken"]})
    assert int(parse_timestamp(resp["mfaAt"])) == int(mfa_at), "Refresh changed mfaAt"
    assert int(parse_timestamp(resp["mfaExpiresAt"])) == int(parse_timestamp(stepped["mfaExpiresAt"])), \
        "Refresh changed mfaExpiresAt"
    claims = verify_token(access_token(resp), jwks)
    last = verify_token(access_token(stepped), jwks)
    assert claims["mfa_at"] == last["mfa_at"], "Refresh changed the mfa_at claim"
    assert claims["mfa_method"] == "totp"
    assert claims["sid"] == last["sid"]
    assert claims["jti"] != last["jti"], "Refresh returned the same token"


def test_second_totp_enrollment_is_refused_while_a_factor_is_active(grpc: Grpcurl, next_step: StepUp):
    err = grpc.call_error(f"{TWO_FACTOR}/StartTotpEnrollment", token=access_token(next_step.response))
    assert_refused(err, "FAILED_PRECONDITION", Reason.FACTOR_LOCKED)


# ---------------------------------------------------------------- bad input


def test_malformed_code_is_an_invalid_argument(grpc: Grpcurl, next_step: StepUp):
    err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": "12ab"},
                          token=access_token(next_step.response))
    assert_refused(err, "INVALID_ARGUMENT")
    assert "code" in err.violated_fields, f"no field violation on `code`: {err}"


def _forged_token(session: Msg) -> str:
    """The real token's header and claims, signed with a key padlock never had."""
    real = access_token(session)
    header = jwt.get_unverified_header(real)
    claims = jwt.decode(real, options={"verify_signature": False})
    return secret(jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                             headers={"kid": header["kid"]}))


@pytest.mark.parametrize("how", ["no-header", "garbage", "forged-signature"])
def test_call_without_a_valid_bearer_token_is_refused(grpc: Grpcurl, session: Msg, how: str):
    if how == "no-header":
        err = grpc.call_error(f"{TWO_FACTOR}/GetFactor")
    elif how == "garbage":
        err = grpc.call_error(f"{TWO_FACTOR}/GetFactor", token="not-a-token")
    else:
        err = grpc.call_error(f"{TWO_FACTOR}/GetFactor", token=_forged_token(session))
    assert_refused(err, "UNAUTHENTICATED", Reason.TOKEN_INVALID)


@pytest.mark.parametrize("who", ["wrong-password", "unknown-user"])
def test_sign_in_with_bad_credentials_is_refused(grpc: Grpcurl, alice: User, who: str):
    username = alice.username if who == "wrong-password" else "nobody-" + secrets.token_hex(4)
    err = grpc.call_error(f"{SESSION}/SignIn", {"username": username, "password": "wrong-" + alice.password})
    assert_refused(err, "UNAUTHENTICATED", Reason.CREDENTIALS_INVALID)


# ---------------------------------------------------------------- sign-out and shutdown


def test_sign_out_ends_the_session(grpc: Grpcurl, alice: User):
    other = sign_in(grpc, alice)
    grpc.call(f"{SESSION}/SignOut", {"sessionToken": other["sessionToken"]})
    err = grpc.call_error(f"{SESSION}/Refresh", {"sessionToken": other["sessionToken"]})
    assert_refused(err, "UNAUTHENTICATED", Reason.SESSION_INVALID)
    err = grpc.call_error(f"{TWO_FACTOR}/GetFactor", token=access_token(other))
    assert_refused(err, "UNAUTHENTICATED")


def test_sigterm_stops_the_server_gracefully(tmp_path):
    srv = AuthServer(tmp_path)
    try:
        code = srv.terminate(timeout=10)
    finally:
        srv.stop()
    assert code is not None, "padlock-auth did not stop within 10 s of SIGTERM"
    assert code == 0, f"padlock-auth exited {code} on SIGTERM; stderr tail:\n{srv.stderr_tail()}"
    assert len(srv.stdout_lines) == 1, f"stdout should be the ready line only: {srv.stdout_lines!r}"
