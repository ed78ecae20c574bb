"""A support reset, end to end, as an operator does it with grpcurl.

One `padlock-auth` serves the whole module; the tests run in file order and
build on each other through module fixtures:

- the operator provisions sam (role `support`) and alice with the CLI;
- alice signs in and enrolls an authenticator app (oathtool); with a factor
  active she can start neither an SMS nor a second TOTP enrollment
  (FACTOR_LOCKED);
- sam's password alone gets him nothing from support (MFA_REQUIRED, max
  age one hour); alice has lost her phone. sam, stepped up with his own
  authenticator app, with grpcurl only, looks at her factor, resets it
  under ticket CHG0012345 and finds the reset in the audit trail; alice's
  GetFactor tells her who reset it and under which ticket;
- alice's session loses its second factor (Refresh has no `mfaAt`, the token
  no `mfa_at`), and she enrolls again;
- bad requests to support are refused (no ticket, a reset of oneself, an
  unknown user, a caller without the support role);
- five wrong codes lock alice out (TOO_MANY_ATTEMPTS); sam unlocks her and
  her next code works.

Tokens and TOTP secrets never appear in failure output.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass, field

import jwt
import pytest

from reasons import Reason
from conftest import (
    AuthServer,
    Grpcurl,
    Msg,
    Person,
    now,
    parse_timestamp,
    redact,
    secret,
    sign_in as sign_in_person,
    step_up,
    totp_code,
)
from test_totp_enrollment import (
    STEP,
    a_wrong_code,
    access_token,
    assert_refused,
    sign_in,
    verify_token,
)

PKG = "padlock.auth.v1"
SESSION = f"{PKG}.SessionService"
TWO_FACTOR = f"{PKG}.TwoFactorService"
SUPPORT = f"{PKG}.SupportService"
KEYS = f"{PKG}.KeyService"

TICKET = "CHG0012345"
REASON = "Standard change: Reset Google authenticator"
UNLOCK_TICKET = "INC0098765"
CLOCK_SLACK_S = 5
MAX_WRONG_CODES = 5
FIRST_LOCK_S = 15 * 60


@dataclass
class User:
    username: str
    password: str = field(repr=False)  # pytest shows fixture values of a failing test
    roles: list[str]
    added: subprocess.CompletedProcess


@dataclass
class Enrolled:
    """A confirmed TOTP enrollment: the secret and the confirming step."""
    secret: str = field(repr=False)
    at_unix: int
    response: Msg


def provision(server: AuthServer, username: str, role: str) -> User:
    password = secret(secrets.token_urlsafe(18))
    added = server.cli("users", "add", "--username", username, "--role", role, stdin=password + "\n")
    return User(username, password, [role], added)


def enroll_totp(grpc: Grpcurl, token: str) -> Enrolled:
    start = grpc.call(f"{TWO_FACTOR}/StartTotpEnrollment", token=token)
    secret(start.get("secret", ""))
    secret(start.get("otpauthUri", ""))
    t = int(time.time())
    resp = grpc.call(f"{TWO_FACTOR}/ConfirmEnrollment",
                     {"enrollmentId": start["enrollmentId"], "code": totp_code(start["secret"], t)},
                     token=token)
    secret(resp.get("accessToken", ""))
    return Enrolled(start["secret"], t, resp)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sam(server: AuthServer) -> User:
    return provision(server, "sam", "support")


@pytest.fixture(scope="module")
def alice(server: AuthServer) -> User:
    return provision(server, "alice", "operator")


@pytest.fixture(scope="module")
def jwks(grpc: Grpcurl) -> jwt.PyJWKSet:
    return jwt.PyJWKSet.from_dict(grpc.call(f"{KEYS}/GetJwks"))


@pytest.fixture(scope="module")
def sam_password_only(grpc: Grpcurl, sam: User) -> Person:
    """sam signed in with his password only."""
    assert sam.added.returncode == 0, "sam could not be provisioned"
    person = Person(sam.username, sam.password, sam.roles)
    sign_in_person(grpc, person)
    return person


@pytest.fixture(scope="module")
def sam_session(grpc: Grpcurl, sam: User) -> Msg:
    """sam's session, stepped up with his own authenticator app (`step_up`):
    every support call needs a second factor verified in the caller's
    session within the hour. The step-up response (a Msg, so a failure
    never prints its tokens) carries the access token."""
    assert sam.added.returncode == 0, "sam could not be provisioned"
    return step_up(grpc, Person(sam.username, sam.password, sam.roles))


@pytest.fixture(scope="module")
def alice_session(grpc: Grpcurl, alice: User) -> Msg:
    assert alice.added.returncode == 0, "alice could not be provisioned"
    return sign_in(grpc, alice)


@pytest.fixture(scope="module")
def first_factor(grpc: Grpcurl, alice_session: Msg) -> Enrolled:
    return enroll_totp(grpc, access_token(alice_session))


@pytest.fixture(scope="module")
def reset(grpc: Grpcurl, sam_session: Msg, first_factor: Enrolled) -> float:
    """sam resets alice's factor; returns when."""
    before = now()
    resp = grpc.call(f"{SUPPORT}/ResetFactor",
                     {"username": "alice", "ticket": TICKET, "reason": REASON}, token=access_token(sam_session))
    assert resp == {}, f"ResetFactor answered {resp}"
    return before


@pytest.fixture(scope="module")
def refreshed(grpc: Grpcurl, alice_session: Msg, reset: float) -> Msg:
    resp = grpc.call(f"{SESSION}/Refresh", {"sessionToken": alice_session["sessionToken"]})
    secret(resp.get("accessToken", ""))
    return resp


@pytest.fixture(scope="module")
def second_factor(grpc: Grpcurl, refreshed: Msg) -> Enrolled:
    return enroll_totp(grpc, access_token(refreshed))


def user_factor(grpc: Grpcurl, support: Msg, username: str) -> Msg:
    """GetUserFactor as the support person signed in as `support`."""
    return grpc.call(f"{SUPPORT}/GetUserFactor", {"username": username}, token=access_token(support))


# ---------------------------------------------------------------- alice enrolls


def test_operator_provisions_sam_and_alice_with_the_cli(sam: User, alice: User):
    for user in (sam, alice):
        out = user.added.stdout + user.added.stderr
        assert user.added.returncode == 0, f"users add {user.username} exited {user.added.returncode}: {redact(out)}"
        assert user.password not in out, f"users add echoed {user.username}'s password"


def test_alice_enrolls_an_authenticator_app(first_factor: Enrolled, jwks: jwt.PyJWKSet):
    assert first_factor.response.get("method") == "FACTOR_METHOD_TOTP"
    claims = verify_token(access_token(first_factor.response), jwks)
    assert claims["preferred_username"] == "alice"
    assert claims["mfa_method"] == "totp"
    assert claims["mfa_at"] == int(parse_timestamp(first_factor.response["mfaAt"]))


def test_alice_cannot_enroll_sms_while_her_app_is_active(grpc: Grpcurl, first_factor: Enrolled):
    err = grpc.call_error(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": "+31612345678"},
                          token=access_token(first_factor.response))
    assert_refused(err, "FAILED_PRECONDITION", Reason.FACTOR_LOCKED)


def test_alice_cannot_enroll_a_second_app(grpc: Grpcurl, first_factor: Enrolled):
    err = grpc.call_error(f"{TWO_FACTOR}/StartTotpEnrollment", token=access_token(first_factor.response))
    assert_refused(err, "FAILED_PRECONDITION", Reason.FACTOR_LOCKED)


# ---------------------------------------------------------------- sam resets it


@pytest.mark.parametrize("method, request_, action", [
    ("GetUserFactor", {"username": "alice"}, "support_get_user_factor"),
    ("ListAuditEvents", {"username": "alice"}, "support_list_audit_events"),
    ("ResetFactor", {"username": "alice", "ticket": TICKET, "reason": REASON}, "support_reset_factor"),
    ("Unlock", {"username": "alice", "ticket": UNLOCK_TICKET}, "support_unlock"),
    ("CreateUser", {"username": "sam-two", "password": "p" * 16, "ticket": TICKET}, "support_create_user"),
], ids=["get-user-factor", "list-audit-events", "reset", "unlock", "create-user"])
def test_support_with_a_password_only_is_asked_for_a_second_factor(
        grpc: Grpcurl, sam_password_only: Person, first_factor: Enrolled, method: str, request_: dict,
        action: str):
    """A stolen support password alone reads and changes nothing."""
    err = grpc.call_error(f"{SUPPORT}/{method}", request_, token=sam_password_only.token)
    assert_refused(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED)
    assert err.error_info["metadata"] == {"max_age": "3600", "action": action}, f"{err}"
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(first_factor.response))
    assert (factor["state"], factor.get("resetBy", "")) == ("FACTOR_STATE_ACTIVE", ""), f"{factor}"


def test_support_sees_alice_factor_without_its_secret(grpc: Grpcurl, sam_session: Msg, first_factor: Enrolled):
    seen = user_factor(grpc, sam_session, "alice")
    assert seen["user"]["username"] == "alice"
    assert seen["user"]["roles"] == ["operator"]
    factor = seen["factor"]
    assert (factor["method"], factor["state"], factor["locked"]) == \
        ("FACTOR_METHOD_TOTP", "FACTOR_STATE_ACTIVE", False)
    assert abs(parse_timestamp(factor["enrolledAt"]) - first_factor.at_unix) <= CLOCK_SLACK_S
    assert factor["attemptsLeft"] == MAX_WRONG_CODES
    assert first_factor.secret not in repr(dict(seen)), "GetUserFactor shows the TOTP secret"
    # mfa_at is a session's state, not the user's: support's view has none.
    assert factor.get("mfaAt") is None, f"GetUserFactor shows a session's mfaAt: {factor}"


def test_support_resets_alice_factor_with_a_ticket(grpc: Grpcurl, sam_session: Msg, reset: float):
    factor = user_factor(grpc, sam_session, "alice")["factor"]
    assert (factor["method"], factor["state"], factor["locked"]) == \
        ("FACTOR_METHOD_NONE", "FACTOR_STATE_NONE", False)


def test_audit_trail_shows_who_reset_whom_under_which_ticket(grpc: Grpcurl, sam_session: Msg, reset: float):
    resp = grpc.call(f"{SUPPORT}/ListAuditEvents", {"username": "alice", "kind": "factor_reset"},
                     token=access_token(sam_session))
    events = resp["events"]
    assert len(events) == 1, f"expected one factor_reset event for alice, got {events}"
    event = events[0]
    assert (event["kind"], event["outcome"], event["actor"], event["subject"]) == \
        ("factor_reset", "ok", "sam", "alice"), f"event {event}"
    assert event["detail"].startswith(f"ticket={TICKET} "), f"the detail does not start with the ticket: {event}"
    assert REASON in event["detail"], f"the reason is not in the event's detail: {event}"
    assert reset - CLOCK_SLACK_S <= parse_timestamp(event["at"]) <= now() + CLOCK_SLACK_S
    assert int(event["id"]) > 0
    assert resp["nextPageToken"] == "", "one event fits on one page"

    # The filters filter: other kinds exist for alice (her enrollment), and
    # the kind alone also finds the reset.
    everything = grpc.call(f"{SUPPORT}/ListAuditEvents", {"username": "alice"}, token=access_token(sam_session))["events"]
    assert {e["kind"] for e in everything} > {"factor_reset"}, f"alice's events: {everything}"
    by_kind = grpc.call(f"{SUPPORT}/ListAuditEvents", {"kind": "factor_reset"}, token=access_token(sam_session))["events"]
    assert [e["id"] for e in by_kind] == [event["id"]]
    nobody = grpc.call(f"{SUPPORT}/ListAuditEvents", {"username": "sam", "kind": "factor_reset"},
                       token=access_token(sam_session))["events"]
    assert nobody == [], f"sam's own factor was never reset: {nobody}"


def test_refresh_after_the_reset_carries_no_second_factor(refreshed: Msg, jwks: jwt.PyJWKSet):
    assert refreshed.get("mfaAt") is None, f"Refresh after a reset still has mfaAt: {refreshed}"
    assert refreshed.get("mfaExpiresAt") is None, f"Refresh after a reset has mfaExpiresAt: {refreshed}"
    claims = verify_token(access_token(refreshed), jwks)
    assert claims["preferred_username"] == "alice"
    assert "mfa_at" not in claims, "the refreshed token still claims mfa_at"
    assert "mfa_method" not in claims, "the refreshed token still claims mfa_method"
    assert claims["amr"] == ["pwd"], f"amr after a reset: {claims['amr']}"


def test_alice_sees_who_reset_her_factor_and_under_which_ticket(
        grpc: Grpcurl, refreshed: Msg, reset: float):
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(refreshed))
    assert (factor["state"], factor["resetBy"], factor["resetTicket"]) == \
        ("FACTOR_STATE_NONE", "sam", TICKET), f"{factor}"
    assert reset - CLOCK_SLACK_S <= parse_timestamp(factor["resetAt"]) <= now() + CLOCK_SLACK_S


def test_alice_enrolls_a_new_app_after_the_reset(
        grpc: Grpcurl, first_factor: Enrolled, second_factor: Enrolled, jwks: jwt.PyJWKSet):
    assert second_factor.secret != first_factor.secret, "the new enrollment reuses the old secret"
    assert second_factor.response.get("method") == "FACTOR_METHOD_TOTP"
    claims = verify_token(access_token(second_factor.response), jwks)
    assert claims["mfa_method"] == "totp"
    assert claims["mfa_at"] == int(parse_timestamp(second_factor.response["mfaAt"]))
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(second_factor.response))
    assert (factor["method"], factor["state"]) == ("FACTOR_METHOD_TOTP", "FACTOR_STATE_ACTIVE")


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize("method, request_", [
    ("ResetFactor", {"username": "alice", "ticket": "", "reason": REASON}),
    ("ResetFactor", {"username": "alice", "ticket": "   ", "reason": REASON}),
    ("ResetFactor", {"username": "alice", "reason": REASON}),
    ("Unlock", {"username": "alice", "ticket": ""}),
], ids=["reset-empty", "reset-blank", "reset-absent", "unlock-empty"])
def test_support_without_a_ticket_is_invalid(
        grpc: Grpcurl, sam_session: Msg, second_factor: Enrolled, method: str, request_: dict):
    err = grpc.call_error(f"{SUPPORT}/{method}", request_, token=access_token(sam_session))
    assert_refused(err, "INVALID_ARGUMENT")
    assert "ticket" in err.violated_fields, f"no field violation on `ticket`: {err}"
    assert user_factor(grpc, sam_session, "alice")["factor"]["state"] == "FACTOR_STATE_ACTIVE", \
        "a refused reset changed alice's factor"


def test_support_cannot_reset_their_own_factor(grpc: Grpcurl, sam_session: Msg):
    err = grpc.call_error(f"{SUPPORT}/ResetFactor", {"username": "sam", "ticket": TICKET, "reason": REASON},
                          token=access_token(sam_session))
    assert_refused(err, "PERMISSION_DENIED", Reason.SELF_SERVICE_FORBIDDEN)


def test_reset_of_an_unknown_user_is_not_found(grpc: Grpcurl, sam_session: Msg):
    err = grpc.call_error(f"{SUPPORT}/ResetFactor",
                          {"username": "nobody-" + secrets.token_hex(4), "ticket": TICKET, "reason": REASON},
                          token=access_token(sam_session))
    assert_refused(err, "NOT_FOUND", Reason.USER_NOT_FOUND)


@pytest.mark.parametrize("method, request_", [
    ("ResetFactor", {"username": "sam", "ticket": TICKET, "reason": REASON}),
    ("ResetFactor", {"username": "alice", "ticket": TICKET, "reason": REASON}),
    ("Unlock", {"username": "alice", "ticket": TICKET}),
    ("GetUserFactor", {"username": "sam"}),
    ("ListAuditEvents", {"username": "alice"}),
], ids=["reset-sam", "reset-herself", "unlock", "get-user-factor", "list-audit-events"])
def test_alice_without_the_support_role_is_refused(
        grpc: Grpcurl, sam_session: Msg, second_factor: Enrolled, method: str, request_: dict):
    # Even with a fresh second factor: support needs the role.
    err = grpc.call_error(f"{SUPPORT}/{method}", request_, token=access_token(second_factor.response))
    assert_refused(err, "PERMISSION_DENIED", Reason.ROLE_REQUIRED)
    assert user_factor(grpc, sam_session, "alice")["factor"]["state"] == "FACTOR_STATE_ACTIVE"


# ---------------------------------------------------------------- lockout, unlock, the old app


@pytest.fixture(scope="module")
def locked_out(grpc: Grpcurl, sam_session: Msg, second_factor: Enrolled) -> list:
    """Five wrong codes in a row; returns the refusals."""
    left = user_factor(grpc, sam_session, "alice")["factor"]["attemptsLeft"]
    assert left == MAX_WRONG_CODES, f"alice has {left} attempts left before the wrong codes"
    wrong = a_wrong_code(second_factor.secret)
    token = access_token(second_factor.response)
    return [grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": wrong}, token=token)
            for _ in range(MAX_WRONG_CODES)]


def test_five_wrong_codes_lock_alice_out(
        grpc: Grpcurl, sam_session: Msg, second_factor: Enrolled, locked_out: list):
    *wrong, locking = locked_out
    for err in wrong:
        assert_refused(err, "UNAUTHENTICATED", Reason.CODE_INVALID)
    # The fifth wrong code locks the factor, and says so.
    assert_refused(locking, "RESOURCE_EXHAUSTED", Reason.TOO_MANY_ATTEMPTS)
    # Now even the right code is refused until the lock ends.
    code = totp_code(second_factor.secret, second_factor.at_unix + STEP)
    err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": code}, token=access_token(second_factor.response))
    assert_refused(err, "RESOURCE_EXHAUSTED", Reason.TOO_MANY_ATTEMPTS)
    for refusal in (locking, err):
        delay = refusal.retry_delay_s
        assert delay is not None, f"no google.rpc.RetryInfo in {refusal}"
        assert FIRST_LOCK_S - 2 * CLOCK_SLACK_S <= delay <= FIRST_LOCK_S, f"RetryInfo delay {delay}s"

    factor = user_factor(grpc, sam_session, "alice")["factor"]
    assert factor["locked"] is True, f"support sees no lock: {factor}"
    assert abs(parse_timestamp(factor["lockedUntil"]) - (now() + FIRST_LOCK_S)) <= 2 * CLOCK_SLACK_S
    assert factor["attemptsLeft"] == 0


def test_support_unlocks_alice_and_her_next_code_works(
        grpc: Grpcurl, sam_session: Msg, second_factor: Enrolled, locked_out: list, jwks: jwt.PyJWKSet):
    before = now()
    resp = grpc.call(f"{SUPPORT}/Unlock", {"username": "alice", "ticket": UNLOCK_TICKET}, token=access_token(sam_session))
    assert resp == {}, f"Unlock answered {resp}"
    factor = user_factor(grpc, sam_session, "alice")["factor"]
    assert factor["locked"] is False, f"still locked after Unlock: {factor}"
    assert factor["attemptsLeft"] == MAX_WRONG_CODES
    assert (factor["method"], factor["state"]) == ("FACTOR_METHOD_TOTP", "FACTOR_STATE_ACTIVE"), \
        "Unlock changed the factor"

    code = totp_code(second_factor.secret, second_factor.at_unix + STEP)
    stepped = grpc.call(f"{TWO_FACTOR}/Verify", {"code": code}, token=access_token(second_factor.response))
    secret(stepped.get("accessToken", ""))
    assert stepped["method"] == "FACTOR_METHOD_TOTP"
    claims = verify_token(access_token(stepped), jwks)
    assert claims["mfa_method"] == "totp"
    assert abs(claims["mfa_at"] - now()) <= CLOCK_SLACK_S

    # The unlock is in the audit trail, by sam, with its ticket.
    events = grpc.call(f"{SUPPORT}/ListAuditEvents", {"username": "alice", "since": _rfc3339(before - 1)},
                       token=access_token(sam_session))["events"]
    unlocks = [e for e in events if e["actor"] == "sam" and UNLOCK_TICKET in e["detail"]]
    assert len(unlocks) == 1, f"no single unlock event by sam with ticket {UNLOCK_TICKET}: {events}"
    assert (unlocks[0]["subject"], unlocks[0]["outcome"]) == ("alice", "ok"), f"{unlocks[0]}"


def test_the_old_app_no_longer_works(grpc: Grpcurl, first_factor: Enrolled, second_factor: Enrolled):
    # Last in the module: this wrong code must not count towards the lockout above.
    t = int(time.time())
    old, new = totp_code(first_factor.secret, t), totp_code(second_factor.secret, t)
    if old == new:
        pytest.skip("the old and the new secret share this step's code (one in a million)")
    err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": old}, token=access_token(second_factor.response))
    assert_refused(err, "UNAUTHENTICATED", Reason.CODE_INVALID)


def _rfc3339(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))
