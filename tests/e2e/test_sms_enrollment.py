"""SMS enrollment and step-up, end to end, against a Twilio-compatible fake.

The real `padlock-auth` sends its texts to a fake Twilio written here
(stdlib `http.server` on 127.0.0.1:0, `--twilio-base-url` pointing at it).
The fake checks each request as Twilio's Programmable Messaging API would
(method, path, Basic auth, content type, form fields) and answers with
Twilio's own JSON bodies; a queue of scripted answers makes it refuse a
number (21211, 21610) or fail (500, code 20500). It keeps every request and
every accepted message, so a test reads the code from the text "sent to the
phone", and can tell that nothing was sent.

The tests run in file order and build on each other through module fixtures:
sofia enrolls her phone, confirms with the texted code and steps up (the
token says `sms`); a resend within 30 s is refused and sends nothing; she
cannot enroll an authenticator app next to it. Other users meet Twilio's
refusals and outages, and numbers that are not E.164. After a restart with
the clock moved past the resend cooldown (no sleeping), sofia asks for a
new code and verifies with it. Finally the server's log must hold no full
phone number and no code.
"""

from __future__ import annotations

import base64
import collections
import http.server
import json
import re
import secrets
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

import jwt
import pytest

from reasons import Reason
from conftest import (
    AuthServer,
    Grpcurl,
    Msg,
    now,
    parse_timestamp,
    redact,
    secret,
    watched,
)
from test_totp_enrollment import access_token, assert_refused, sign_in, verify_token

PKG = "padlock.auth.v1"
TWO_FACTOR = f"{PKG}.TwoFactorService"
KEYS = f"{PKG}.KeyService"

CODE_TTL_S = 5 * 60
RESEND_COOLDOWN_S = 30
TWILIO_ATTEMPTS = 3
CLOCK_SLACK_S = 5
CODE_RE = re.compile(r"(\d{6}) is your padlock verification code\. ")

# Each user gets a number of their own, so per-number limits never meet.
SOFIA_PHONE, SOFIA_MASKED = "+31612345678", "+31 6** *** *78"
UMAR_PHONE, UMAR_MASKED = "+447700900123", "+44 7** *** **23"


# ---------------------------------------------------------------- the fake Twilio

# https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
TWILIO_MESSAGE_PARAMS = {
    "To", "From", "MessagingServiceSid", "Body", "MediaUrl", "ContentSid", "ContentVariables",
    "StatusCallback", "ApplicationSid", "MaxPrice", "ProvideFeedback", "Attempt", "ValidityPeriod",
    "ForceDelivery", "ContentRetention", "AddressRetention", "SmartEncoded", "PersistentAction",
    "ShortenUrls", "ScheduleType", "SendAt", "SendAsMms", "RiskCheck",
}
# Twilio's texts for the error codes the fake can give.
TWILIO_ERRORS = {
    20003: "Authenticate",
    20004: "Method not allowed",
    20404: "The requested resource {path} was not found",
    20500: "Internal Server Error",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided ({from_}) is not a valid message-capable Twilio phone number for this destination/account.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}
E164 = re.compile(r"\+[1-9]\d{1,14}")


@dataclass
class Answer:
    """How the fake answers the next valid request."""
    status: int = 201
    code: int | None = None  # a Twilio error code when status is not 201


ACCEPT = Answer()
SERVER_ERROR = Answer(500, 20500)


def twilio_error(status: int, code: int) -> Answer:
    return Answer(status, code)


@dataclass
class Request:
    """One request as the fake saw it; `form` is the decoded body."""
    method: str
    path: str
    headers: dict = field(repr=False)  # Authorization holds the auth token
    form: dict = field(repr=False)
    answer: Answer
    problem: str | None = None  # set when Twilio itself would have refused it

    @property
    def to(self) -> str:
        return self.form.get("To", "")


@dataclass
class Message:
    """A text Twilio accepted: what the phone at `to` receives."""
    sid: str
    to: str = field(repr=False)
    from_: str
    body: str = field(repr=False)

    @property
    def code(self) -> str:
        m = CODE_RE.match(self.body)
        assert m, "the text does not start with '<6 digits> is your padlock verification code. '"
        return secret(m.group(1))


class FakeTwilio:
    """Twilio's Messages resource on 127.0.0.1:0, for one account."""

    def __init__(self):
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secret(secrets.token_hex(16))
        secret(base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode())
        self.from_number = "+15005550006"  # Twilio's magic test "From"
        self.requests: list[Request] = []
        self.messages: list[Message] = []
        self._script: collections.deque[Answer] = collections.deque()
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Twilio's edge speaks it

            def do_POST(self):
                fake._handle(self)

            def do_GET(self):
                fake._handle(self)

            do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def flags(self) -> list[str]:
        return ["--twilio-account-sid", self.account_sid, "--twilio-auth-token", self.auth_token,
                "--twilio-from", self.from_number, "--twilio-base-url", self.base_url]

    def script(self, *answers: Answer) -> None:
        """Answer the next valid requests like this; afterwards accept."""
        with self._lock:
            self._script.extend(answers)

    def scripted_left(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def problems(self) -> list[str]:
        with self._lock:
            return [r.problem for r in self.requests if r.problem]

    # ---- one request

    def _handle(self, h: http.server.BaseHTTPRequestHandler):
        body = self._read_body(h)
        path = urllib.parse.urlsplit(h.path).path
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            form = None
        problem, status, code, fmt = self._check(h.command, path, headers, form)
        single = {k: v[0] for k, v in (form or {}).items()}
        with self._lock:
            if problem is None:
                answer = self._script.popleft() if self._script else ACCEPT
            else:
                answer = Answer(status, code)
            self.requests.append(Request(h.command, path, headers, single, answer, problem))
            if answer.status == 201:
                msg = Message("SM" + secrets.token_hex(16), single["To"],
                              single.get("From", ""), single["Body"])
                self.messages.append(msg)
        if answer.status == 201:
            self._reply(h, 201, self._resource(msg, single))
        else:
            self._reply(h, answer.status, self._error(answer, path=path, to=single.get("To", ""),
                                                      from_=single.get("From", ""), **fmt))

    @staticmethod
    def _read_body(h) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(h.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += h.rfile.read(size)
                h.rfile.readline()
        return h.rfile.read(int(h.headers.get("Content-Length", 0) or 0))

    def _check(self, method, path, headers, form):
        """(problem, status, code, fmt) for what Twilio would refuse, else Nones."""
        expected_path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        auth = headers.get("authorization", "")
        creds = None
        if auth.startswith("Basic "):
            try:
                creds = base64.b64decode(auth[6:], validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                pass
        if creds != f"{self.account_sid}:{self.auth_token}":
            return "no or wrong Basic credentials", 401, 20003, {}
        if path != expected_path:
            return f"wrong path {path}", 404, 20404, {}
        if method != "POST":
            return f"method {method}", 405, 20004, {}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return f"content type {headers.get('content-type')!r}", 400, 21604, {}
        if form is None:
            return "body is not form-urlencoded UTF-8", 400, 21604, {}
        repeated = sorted(k for k, v in form.items() if len(v) > 1)
        unknown = sorted(set(form) - TWILIO_MESSAGE_PARAMS)
        if repeated or unknown:
            return f"repeated {repeated} / unknown {unknown} parameters", 400, 21604, {}
        f = {k: v[0] for k, v in form.items()}
        if not f.get("To"):
            return "no To", 400, 21604, {}
        if not E164.fullmatch(f["To"]):
            return "To is not E.164", 400, 21211, {}
        if not f.get("From") and not f.get("MessagingServiceSid"):
            return "no From", 400, 21603, {}
        if f.get("From") and f["From"] != self.from_number:
            return "From is not this account's number", 400, 21606, {}
        if not f.get("Body"):
            return "no Body", 400, 21602, {}
        if len(f["Body"]) > 1600:
            return "Body over 1600 characters", 400, 21617, {}
        return None, None, None, {}

    def _resource(self, msg: Message, form: dict) -> dict:
        stamp = format_datetime(datetime.now(timezone.utc), usegmt=False).replace("-0000", "+0000")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{msg.sid}"
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": msg.body,
            "date_created": stamp, "date_sent": None, "date_updated": stamp,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": form.get("From") or None, "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD",
            "sid": msg.sid, "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": msg.to, "uri": f"{uri}.json",
        }

    @staticmethod
    def _error(answer: Answer, **fmt) -> dict:
        text = TWILIO_ERRORS.get(answer.code, "Error").format(**fmt)
        return {"code": answer.code, "message": text,
                "more_info": f"https://www.twilio.com/docs/errors/{answer.code}", "status": answer.status}

    @staticmethod
    def _reply(h, status: int, doc: dict):
        raw = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(raw)))
        h.send_header("Twilio-Request-Id", "RQ" + secrets.token_hex(16))
        h.end_headers()
        h.wfile.write(raw)


class Sent:
    """What the fake saw during a `with` block."""

    def __init__(self, fake: FakeTwilio):
        self.fake = fake

    def __enter__(self):
        self._r, self._m = len(self.fake.requests), len(self.fake.messages)
        return self

    def __exit__(self, *exc):
        self.requests = self.fake.requests[self._r:]
        self.messages = self.fake.messages[self._m:]
        return False


# ---------------------------------------------------------------- people


@dataclass
class User:
    username: str
    password: str = field(repr=False)
    added: subprocess.CompletedProcess


@dataclass
class Started:
    """A StartSmsEnrollment and the text it sent."""
    response: Msg
    message: Message
    returned_at: float


@dataclass
class StepUp:
    response: Msg
    code: str = field(repr=False)


def provision(server: AuthServer, username: str) -> User:
    password = secret(secrets.token_urlsafe(18))
    added = server.cli("users", "add", "--username", username, "--role", "operator", stdin=password + "\n")
    assert added.returncode == 0, redact(f"users add {username} exited {added.returncode}: {added.stderr}")
    return User(username, password, added)


def signed_in(server: AuthServer, grpc: Grpcurl, username: str) -> Msg:
    """A new user, provisioned with the CLI and signed in."""
    return sign_in(grpc, provision(server, username))


def start_sms(grpc: Grpcurl, twilio: FakeTwilio, session: Msg, phone: str) -> Started:
    with Sent(twilio) as sent:
        resp = grpc.call(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": phone},
                         token=access_token(session))
    assert len(sent.messages) == 1, f"StartSmsEnrollment sent {len(sent.messages)} texts"
    assert sent.messages[0].to == phone, "the text went to another number"
    return Started(resp, sent.messages[0], now())


def confirm(grpc: Grpcurl, session: Msg, started: Started) -> StepUp:
    code = started.message.code
    resp = grpc.call(f"{TWO_FACTOR}/ConfirmEnrollment",
                     {"enrollmentId": started.response["enrollmentId"], "code": code},
                     token=access_token(session))
    secret(resp.get("accessToken", ""))
    return StepUp(resp, code)


def other_code(code: str) -> str:
    return f"{(int(code) + 500_000) % 1_000_000:06d}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def twilio() -> FakeTwilio:
    fake = FakeTwilio()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, twilio: FakeTwilio) -> AuthServer:
    """padlock-auth sending its texts to the fake Twilio."""
    yield from watched(AuthServer(tmp_path_factory.mktemp("padlock-auth"), twilio.flags()))


@pytest.fixture(scope="module")
def jwks(grpc: Grpcurl) -> jwt.PyJWKSet:
    return jwt.PyJWKSet.from_dict(grpc.call(f"{KEYS}/GetJwks"))


@pytest.fixture(scope="module")
def sofia(server: AuthServer, grpc: Grpcurl) -> Msg:
    return signed_in(server, grpc, "sofia")


@pytest.fixture(scope="module")
def sofia_started(grpc: Grpcurl, twilio: FakeTwilio, sofia: Msg) -> Started:
    return start_sms(grpc, twilio, sofia, SOFIA_PHONE)


@pytest.fixture(scope="module")
def sofia_confirmed(grpc: Grpcurl, sofia: Msg, sofia_started: Started) -> StepUp:
    return confirm(grpc, sofia, sofia_started)


@pytest.fixture(scope="module")
def used_numbers() -> set[str]:
    """Every number a test gave the service, for the log check at the end."""
    return set()


# ---------------------------------------------------------------- sofia enrolls


def test_enrollment_texts_a_code_through_twilio(
        twilio: FakeTwilio, sofia_started: Started, used_numbers: set):
    used_numbers.add(SOFIA_PHONE)
    assert twilio.problems == [], f"Twilio would have refused: {twilio.problems}"
    resp = sofia_started.response
    assert resp["enrollmentId"]
    assert resp["maskedPhoneNumber"] == SOFIA_MASKED
    assert abs(parse_timestamp(resp["codeExpiresAt"]) - (sofia_started.returned_at + CODE_TTL_S)) <= CLOCK_SLACK_S
    assert abs(parse_timestamp(resp["resendAllowedAt"]) - (sofia_started.returned_at + RESEND_COOLDOWN_S)) \
        <= CLOCK_SLACK_S
    msg = sofia_started.message
    assert msg.from_ == twilio.from_number
    assert CODE_RE.match(msg.body), "the text does not start with the code"
    assert "never" in msg.body.lower(), "the text does not warn against sharing the code"
    request = twilio.requests[-1]
    assert set(request.form) == {"To", "From", "Body"}, f"form fields {sorted(request.form)}"


def test_factor_is_pending_until_confirmed(grpc: Grpcurl, sofia: Msg, sofia_started: Started):
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(sofia))
    assert (factor["method"], factor["state"]) == ("FACTOR_METHOD_SMS", "FACTOR_STATE_PENDING")
    assert factor["maskedPhoneNumber"] == SOFIA_MASKED


def test_a_wrong_code_does_not_confirm(grpc: Grpcurl, sofia: Msg, sofia_started: Started):
    err = grpc.call_error(f"{TWO_FACTOR}/ConfirmEnrollment",
                          {"enrollmentId": sofia_started.response["enrollmentId"],
                           "code": other_code(sofia_started.message.code)},
                          token=access_token(sofia))
    assert_refused(err, "UNAUTHENTICATED", Reason.CODE_INVALID)


def test_texted_code_confirms_and_steps_up_with_sms(
        grpc: Grpcurl, sofia: Msg, sofia_confirmed: StepUp, jwks: jwt.PyJWKSet):
    resp = sofia_confirmed.response
    assert resp["method"] == "FACTOR_METHOD_SMS"
    claims = verify_token(access_token(resp), jwks)
    assert claims["preferred_username"] == "sofia"
    assert claims["mfa_method"] == "sms"
    assert {"pwd", "sms", "mfa"} <= set(claims["amr"]), f"amr {claims['amr']}"
    assert "otp" not in claims["amr"], f"amr {claims['amr']} claims an OTP app"
    assert claims["mfa_at"] == int(parse_timestamp(resp["mfaAt"]))
    assert abs(claims["mfa_at"] - now()) <= CLOCK_SLACK_S
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(resp))
    assert (factor["method"], factor["state"]) == ("FACTOR_METHOD_SMS", "FACTOR_STATE_ACTIVE")
    assert factor["maskedPhoneNumber"] == SOFIA_MASKED


def test_the_texted_code_works_once(grpc: Grpcurl, sofia_started: Started, sofia_confirmed: StepUp):
    token = access_token(sofia_confirmed.response)
    err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": sofia_confirmed.code}, token=token)
    assert_refused(err, "FAILED_PRECONDITION", Reason.CODE_EXPIRED)
    err = grpc.call_error(f"{TWO_FACTOR}/ConfirmEnrollment",
                          {"enrollmentId": sofia_started.response["enrollmentId"], "code": sofia_confirmed.code},
                          token=token)
    assert_refused(err, "FAILED_PRECONDITION", Reason.FACTOR_LOCKED)


def test_resend_within_30_seconds_is_refused_and_sends_nothing(
        grpc: Grpcurl, twilio: FakeTwilio, sofia_started: Started, sofia_confirmed: StepUp):
    with Sent(twilio) as sent:
        err = grpc.call_error(f"{TWO_FACTOR}/SendSmsCode", token=access_token(sofia_confirmed.response))
    assert_refused(err, "RESOURCE_EXHAUSTED", Reason.SMS_RESEND_TOO_SOON)
    delay = err.retry_delay_s
    assert delay is not None, f"no google.rpc.RetryInfo in {err}"
    left = parse_timestamp(sofia_started.response["resendAllowedAt"]) - now()
    assert 0 < delay <= RESEND_COOLDOWN_S and abs(delay - left) <= CLOCK_SLACK_S, \
        f"RetryInfo says {delay}s, resendAllowedAt is {left:.1f}s away"
    assert sent.requests == [], "a refused resend reached Twilio"


def test_an_sms_user_cannot_enroll_an_authenticator_app(grpc: Grpcurl, sofia_confirmed: StepUp):
    err = grpc.call_error(f"{TWO_FACTOR}/StartTotpEnrollment", token=access_token(sofia_confirmed.response))
    assert_refused(err, "FAILED_PRECONDITION", Reason.FACTOR_LOCKED)


def test_an_sms_user_cannot_enroll_another_phone(
        grpc: Grpcurl, twilio: FakeTwilio, sofia_confirmed: StepUp, used_numbers: set):
    used_numbers.add("+31687654321")
    with Sent(twilio) as sent:
        err = grpc.call_error(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": "+31687654321"},
                              token=access_token(sofia_confirmed.response))
    assert_refused(err, "FAILED_PRECONDITION", Reason.FACTOR_LOCKED)
    assert sent.requests == [], "a refused enrollment reached Twilio"


# ---------------------------------------------------------------- Twilio refuses or fails


@pytest.mark.parametrize("username, twilio_code, reason, bad, good", [
    ("ivan", 21211, Reason.PHONE_NUMBER_INVALID, "+31611110000", "+31611112222"),
    ("ursula", 21610, Reason.PHONE_NUMBER_UNSUBSCRIBED, "+31622220000", "+31622223333"),
])
def test_a_number_twilio_refuses_is_refused_and_another_works(
        server: AuthServer, grpc: Grpcurl, twilio: FakeTwilio, used_numbers: set,
        username: str, twilio_code: int, reason: str, bad: str, good: str):
    used_numbers.update({bad, good})
    session = signed_in(server, grpc, username)
    twilio.script(twilio_error(400, twilio_code))
    with Sent(twilio) as sent:
        err = grpc.call_error(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": bad},
                              token=access_token(session))
    assert_refused(err, "FAILED_PRECONDITION", reason)
    assert bad not in str(err) and bad[1:] not in str(err), "the refusal names the full number"
    assert len(sent.requests) == 1, f"Twilio saw {len(sent.requests)} requests; a refusal is not retried"
    assert sent.messages == []
    assert twilio.scripted_left() == 0

    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(session))
    assert factor["state"] != "FACTOR_STATE_ACTIVE", f"a refused number became a factor: {factor}"

    # Nothing was delivered, so nothing holds the user back from a better number.
    started = start_sms(grpc, twilio, session, good)
    confirm(grpc, session, started)


def test_twilio_failing_three_times_is_unavailable_then_it_works(
        server: AuthServer, grpc: Grpcurl, twilio: FakeTwilio, jwks: jwt.PyJWKSet, used_numbers: set):
    used_numbers.add(UMAR_PHONE)
    umar = signed_in(server, grpc, "umar")
    twilio.script(*[SERVER_ERROR] * TWILIO_ATTEMPTS)
    with Sent(twilio) as sent:
        err = grpc.call_error(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": UMAR_PHONE},
                              token=access_token(umar))
    assert_refused(err, "UNAVAILABLE", Reason.SMS_UNAVAILABLE)
    assert UMAR_PHONE not in str(err) and UMAR_PHONE[1:] not in str(err), "the refusal names the number"
    assert len(sent.requests) == TWILIO_ATTEMPTS, \
        f"Twilio saw {len(sent.requests)} requests for one text, want {TWILIO_ATTEMPTS}"
    assert all(r.to == UMAR_PHONE for r in sent.requests)
    assert len({r.form["Body"] for r in sent.requests}) == 1, "the retries sent different texts"
    assert sent.messages == []

    started = start_sms(grpc, twilio, umar, UMAR_PHONE)
    assert started.response["maskedPhoneNumber"] == UMAR_MASKED
    stepped = confirm(grpc, umar, started)
    claims = verify_token(access_token(stepped.response), jwks)
    assert claims["mfa_method"] == "sms"


def test_the_undelivered_code_is_forgotten(
        server: AuthServer, grpc: Grpcurl, twilio: FakeTwilio, used_numbers: set):
    """The code in a text Twilio never accepted must not confirm."""
    phone = "+31633330000"
    used_numbers.add(phone)
    vera = signed_in(server, grpc, "vera")
    twilio.script(*[SERVER_ERROR] * TWILIO_ATTEMPTS)
    with Sent(twilio) as sent:
        err = grpc.call_error(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": phone},
                              token=access_token(vera))
    assert_refused(err, "UNAVAILABLE", Reason.SMS_UNAVAILABLE)
    lost = secret(CODE_RE.match(sent.requests[0].form["Body"]).group(1))

    started = start_sms(grpc, twilio, vera, phone)
    if started.message.code == lost:
        pytest.skip("the new code equals the lost one (one in a million)")
    err = grpc.call_error(f"{TWO_FACTOR}/ConfirmEnrollment",
                          {"enrollmentId": started.response["enrollmentId"], "code": lost},
                          token=access_token(vera))
    assert_refused(err, "UNAUTHENTICATED", Reason.CODE_INVALID)
    confirm(grpc, vera, started)


# ---------------------------------------------------------------- numbers that are not E.164


@pytest.fixture(scope="module")
def nina(server: AuthServer, grpc: Grpcurl) -> Msg:
    return signed_in(server, grpc, "nina")


@pytest.mark.parametrize("phone", [
    "0612345678", "31612345678", "+31 612345678", "+31-612-345-678", "+0612345678", "+316",
    "+3161234567890123", "+31612345678\n", "tel:+31612345678", "",
    "+19005551234",  # premium rate
])
def test_a_number_that_is_not_e164_is_invalid_and_nothing_is_sent(
        grpc: Grpcurl, twilio: FakeTwilio, nina: Msg, used_numbers: set, phone: str):
    if phone:
        used_numbers.add(phone.strip())
    with Sent(twilio) as sent:
        err = grpc.call_error(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": phone},
                              token=access_token(nina))
    assert_refused(err, "INVALID_ARGUMENT")
    assert "phone_number" in err.violated_fields or "phoneNumber" in err.violated_fields, \
        f"no field violation on `phone_number`: {err}"
    assert sent.requests == [], "an invalid number reached Twilio"
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=access_token(nina))
    assert (factor["method"], factor["state"]) == ("FACTOR_METHOD_NONE", "FACTOR_STATE_NONE")


# ---------------------------------------------------------------- a later day: resend and verify


def test_after_the_cooldown_a_new_code_verifies(
        server: AuthServer, grpc: Grpcurl, twilio: FakeTwilio, sofia_confirmed: StepUp,
        jwks: jwt.PyJWKSet):
    """The server's clock moved a minute on (a restart with
    `--clock-offset-secs`), so the 30 s cooldown has passed without sleeping."""
    offset = 2 * RESEND_COOLDOWN_S
    server.restart(*twilio.flags(), "--clock-offset-secs", str(offset))
    try:
        token = access_token(sofia_confirmed.response)
        with Sent(twilio) as sent:
            resp = grpc.call(f"{TWO_FACTOR}/SendSmsCode", token=token)
        assert len(sent.messages) == 1 and sent.messages[0].to == SOFIA_PHONE, "no new text to sofia"
        assert resp["maskedPhoneNumber"] == SOFIA_MASKED
        server_now = now() + offset
        assert abs(parse_timestamp(resp["codeExpiresAt"]) - (server_now + CODE_TTL_S)) <= CLOCK_SLACK_S
        assert abs(parse_timestamp(resp["resendAllowedAt"]) - (server_now + RESEND_COOLDOWN_S)) <= CLOCK_SLACK_S

        code = sent.messages[0].code
        err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": other_code(code)}, token=token)
        assert_refused(err, "UNAUTHENTICATED", Reason.CODE_INVALID)
        stepped = grpc.call(f"{TWO_FACTOR}/Verify", {"code": code}, token=token)
        secret(stepped.get("accessToken", ""))
        assert stepped["method"] == "FACTOR_METHOD_SMS"
        claims = verify_token(access_token(stepped), jwks)
        assert claims["mfa_method"] == "sms" and "sms" in claims["amr"]
        assert abs(claims["mfa_at"] - server_now) <= CLOCK_SLACK_S
        assert claims["mfa_at"] > verify_token(token, jwks)["mfa_at"], "Verify did not move mfa_at on"

        err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": code}, token=token)
        assert_refused(err, "FAILED_PRECONDITION", Reason.CODE_EXPIRED)
    finally:
        server.restart(*twilio.flags())


def test_a_code_older_than_five_minutes_is_expired(
        server: AuthServer, grpc: Grpcurl, twilio: FakeTwilio, sofia_confirmed: StepUp):
    """A code sent, then the server's clock moved past its five minutes."""
    offset = 3 * RESEND_COOLDOWN_S  # past the cooldown of the test before
    token = access_token(sofia_confirmed.response)
    try:
        server.restart(*twilio.flags(), "--clock-offset-secs", str(offset))
        with Sent(twilio) as sent:
            grpc.call(f"{TWO_FACTOR}/SendSmsCode", token=token)
        assert len(sent.messages) == 1, "no new text to sofia"
        code = sent.messages[0].code
        server.restart(*twilio.flags(), "--clock-offset-secs", str(offset + CODE_TTL_S + 1))
        err = grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": code}, token=token)
        assert_refused(err, "FAILED_PRECONDITION", Reason.CODE_EXPIRED)
    finally:
        server.restart(*twilio.flags())


# ---------------------------------------------------------------- the log


def service_log(server: AuthServer) -> str:
    """What padlock-auth wrote to stderr, without the harness's own
    `---- restart: ARGS` lines (they hold the fake's auth token)."""
    text = Path(server.log_path).read_text(errors="replace")
    return "\n".join(line for line in text.splitlines() if not line.startswith("---- restart:"))


def test_the_log_holds_no_phone_number_no_code_and_no_twilio_token(
        server: AuthServer, twilio: FakeTwilio, used_numbers: set):
    # Booleans only in the asserts: pytest would print the strings it compared.
    log = service_log(server)
    assert twilio.problems == [], f"Twilio would have refused: {twilio.problems}"
    assert len(twilio.messages) >= 5, "the module sent fewer texts than it should have"
    numbers = used_numbers | {m.to for m in twilio.messages} | {r.to for r in twilio.requests}
    for number in sorted(numbers):
        digits = number.lstrip("+")
        if len(digits) < 8 or not digits.isdigit():
            continue
        leaked = digits in log
        assert not leaked, f"a full phone number ({number[:4]}...) is in padlock-auth's log"
    # Codes: six digits standing alone (not the fraction of a timestamp).
    bodies = [CODE_RE.match(r.form.get("Body", "")) for r in twilio.requests]
    codes = {m.group(1) for m in bodies if m}
    assert len(codes) >= 5, "the module saw fewer codes than it should have"
    leaked = sum(bool(re.search(rf"(?<![\d.]){code}(?!\d)", log)) for code in codes)
    assert leaked == 0, f"{leaked} of {len(codes)} SMS codes are in padlock-auth's log"
    leaked = twilio.auth_token in log
    assert not leaked, "the Twilio auth token is in padlock-auth's log"
