"""The web UI's HTTP/JSON API (docs/http.md), end to end, as a
browser uses it.

One `padlock-auth`, one `padlock-deploy` and one `padlock-gateway` (with a
1 MiB `--max-upload-bytes`) serve the whole module; the tests run in file
order and build on each other through module fixtures, like
test_transport_to_production.py, but every step a person takes goes through
the gateway with Python's http.client and a cookie jar of our own (the
standard one will not send `Secure` cookies over plain http):

- tina, dev and mia sign in: two `HttpOnly; Secure; SameSite=Strict; Path=/`
  cookies and no token in a body, header or URL; a write without the CSRF
  header and malformed JSON change nothing;
- olga, an operator, creates "Shop" with grpcurl (the gateway has no route
  for it), stepped up (`step_up`); tina's team change without a second
  factor is 401 MFA_REQUIRED (action change_team); she enrolls TOTP
  (oathtool, the QR read back with zbarimg) through the gateway, builds the
  team and grants dev TRANSPORT on test and acceptance; dev uploads a package (streamed to deploy in chunks), deploys
  it to test and transports it to acceptance;
- every row of the status mapping with real calls: 400 with fields, 401
  MFA_REQUIRED / MFA_EXPIRED with the RFC 9470 challenge, 401 invalid_token,
  403, 404, 409, 413, 429 with Retry-After, 503 from /readyz;
- tina, from a password-only browser, gets 401 MFA_REQUIRED for production;
  with her second factor she transports to production and steps up again; sara enrolls her phone against the
  fake Twilio of test_sms_enrollment.py; mia locks her factor with five
  wrong codes;
- the clocks move past the access token's lifetime (`--clock-offset-secs`,
  restarts, no sleeping) and the gateway refreshes it transparently;
- no token, code or password is in any URL or in the three services' logs.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import jwt
import pytest

from reasons import Reason
from conftest import (
    AUDIENCE,
    ISSUER,
    RPC_TIMEOUT_S,
    AuthServer,
    DeployServer,
    GatewayServer,
    Grpcurl,
    Msg,
    now,
    parse_timestamp,
    redact,
    require_tool,
    secret,
    step_up,
    totp_code,
    watched,
)
from conftest import Person as GrpcPerson
from test_sms_enrollment import FakeTwilio, Sent

EIGHT_HOURS = 8 * 60 * 60
STEP = 30
CHUNK = 64 * 1024
MAX_UPLOAD = 1024 * 1024
SESSION_TTL = 43_200
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
COOKIE_ATTRIBUTES = {"httponly": True, "secure": True, "samesite": "Strict", "path": "/"}
MFA_REQUIRED_CHALLENGE = ('Bearer error="insufficient_user_authentication", '
                          'error_description="A second factor is required", max_age=28800')
INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'
# More than the access token's 600 s lifetime plus the verifiers' 60 s leeway.
CLOCK_JUMP_S = 700
PHONE = "+31612345678"
SARA_PHONE = "+31687654321"

# Every URL requested and every cookie value the gateway set, for the
# final check that no token travelled in a URL or reached a log.
URLS: list[str] = []
COOKIE_VALUES: set[str] = set()


# ---------------------------------------------------------------- HTTP


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: dict  # lower-case name -> value, or True for a flag

    @classmethod
    def parse(cls, header: str) -> "SetCookie":
        first, *rest = [p.strip() for p in header.split(";")]
        name, _, value = first.partition("=")
        attributes = {}
        for part in rest:
            key, eq, val = part.partition("=")
            attributes[key.strip().lower()] = val.strip() if eq else True
        return cls(name.strip(), value.strip(), attributes)

    def __repr__(self) -> str:
        return f"SetCookie({self.name!r}, [redacted], {self.attributes!r})"


def _msg(value):
    if isinstance(value, dict):
        return Msg({k: _msg(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_msg(v) for v in value]
    return value


@dataclass
class Reply:
    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def set_cookies(self) -> dict[str, SetCookie]:
        return {c.name: c for c in map(SetCookie.parse, self.all("Set-Cookie"))}

    @property
    def json(self) -> Msg:
        assert (self.header("Content-Type") or "").startswith("application/json"), \
            f"{self}: not JSON"
        return _msg(json.loads(self.body))

    def __repr__(self) -> str:
        shown = self.body[:600].decode(errors="replace")
        return redact(f"{self.method} {self.path} -> {self.status} {shown}")

    __str__ = __repr__


class Browser:
    """What a browser tab keeps: a cookie jar; like the UI it sends
    `X-Padlock-CSRF: 1` with every write unless told not to."""

    def __init__(self, gateway: GatewayServer):
        self.gateway = gateway
        self.jar: dict[str, str] = {}

    def request(self, method: str, path: str, *, json_body=None, raw: bytes | None = None,
                content_type: str | None = None, csrf: str | None = "1",
                headers: dict | None = None) -> Reply:
        hdrs = {"Accept": "application/json"}
        if csrf is not None and method not in ("GET", "HEAD"):
            hdrs["X-Padlock-CSRF"] = csrf
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        elif raw is not None:
            body = raw
            hdrs["Content-Type"] = content_type or "application/octet-stream"
        if self.jar:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        hdrs.update(headers or {})
        URLS.append(path)
        host, port = self.gateway.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=RPC_TIMEOUT_S)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            reply = Reply(method, path, resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()
        self._remember(reply)
        return reply

    def headers_only(self, method: str, path: str, headers: dict) -> Reply:
        """Send only the request head (e.g. announcing a huge body) and read
        the answer: what a server that refuses early sees."""
        URLS.append(path)
        host, port = self.gateway.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=RPC_TIMEOUT_S)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            all_headers = {**headers}
            if self.jar:
                all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
            for k, v in all_headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            reply = Reply(method, path, resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()
        self._remember(reply)
        return reply

    def _remember(self, reply: Reply) -> None:
        for cookie in reply.set_cookies.values():
            if cookie.value:
                COOKIE_VALUES.add(secret(cookie.value))
            if cookie.attributes.get("max-age") == "0":
                self.jar.pop(cookie.name, None)
            else:
                self.jar[cookie.name] = cookie.value

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body=None, **kw) -> Reply:
        return self.request("POST", path, json_body={} if json_body is None and "raw" not in kw else json_body,
                            **kw)

    def delete(self, path: str, **kw) -> Reply:
        return self.request("DELETE", path, **kw)

    @property
    def access_claims(self) -> dict:
        return jwt.decode(self.jar["padlock_access"], options={"verify_signature": False})


def expect(reply: Reply, status: int, error: str | None = None) -> Msg | None:
    """Assert the status (and error reason); every answer is no-store."""
    assert reply.status == status, f"expected {status} {error or ''}, got {reply}"
    assert reply.header("Cache-Control") == "no-store", f"{reply}: Cache-Control {reply.header('Cache-Control')}"
    if reply.status == 204 or not reply.body:
        return None
    if not (reply.header("Content-Type") or "").startswith("application/json"):
        assert error is None, f"expected a JSON error body, got {reply}"
        return None
    body = reply.json
    if error is not None:
        assert body.get("error") == error, f"expected error {error}, got {reply}"
        assert isinstance(body.get("message"), str), f"{reply}: an error without a message"
    return body


def fields_of(body: Msg) -> list[str]:
    return [f["field"] for f in body.get("fields", [])]


# ---------------------------------------------------------------- people


@dataclass
class Person:
    username: str
    password: str
    roles: list[str]
    browser: Browser | None = None
    signed_in: Reply | None = None
    totp_secret: str = ""
    last_code_at: int = 0
    history: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Person({self.username!r})"


def next_code(person: Person) -> str:
    """A code for a TOTP step this person never used: now, or the step after
    the last one used (one step of drift is accepted)."""
    at = max(int(time.time()), person.last_code_at + STEP)
    while at // STEP - int(time.time()) // STEP > 1:
        time.sleep(STEP - time.time() % STEP + 0.05)
    person.last_code_at = at
    return totp_code(person.totp_secret, at)


def a_wrong_code(secret_b32: str) -> str:
    """Six digits that are no code of this secret within five steps of now."""
    t = int(time.time())
    out = subprocess.run(
        [require_tool("oathtool"), "--totp", "-b", secret_b32, "--now", f"@{t - 5 * STEP}", "-w", "10"],
        capture_output=True, text=True, timeout=10, check=True,
    )
    near = set(out.stdout.split())
    return next(c for c in ("000000", "123456", "654321", "999999") if c not in near)


def sign_in(gateway: GatewayServer, person: Person) -> Person:
    person.browser = Browser(gateway)
    person.signed_in = person.browser.post("/api/v1/sessions",
                                           {"username": person.username, "password": person.password})
    expect(person.signed_in, 201)
    return person


def enroll_totp(person: Person) -> tuple[Msg, Reply]:
    """Start TOTP enrollment and confirm it with oathtool's code, through
    the gateway; returns the enrollment and the confirmation reply."""
    started = expect(person.browser.post("/api/v1/me/factor/totp"), 200)
    person.totp_secret = secret(started["secret"])
    secret(started["otpauth_uri"])
    confirmed = person.browser.post("/api/v1/me/factor/confirmation",
                                    {"enrollment_id": started["enrollment_id"], "code": next_code(person)})
    expect(confirmed, 200)
    return started, confirmed


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def twilio() -> FakeTwilio:
    fake = FakeTwilio()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, twilio: FakeTwilio) -> AuthServer:
    """padlock-auth texting through the fake Twilio."""
    yield from watched(AuthServer(tmp_path_factory.mktemp("padlock-auth"), twilio.flags()))


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory, server: AuthServer, deploy_server: DeployServer) -> GatewayServer:
    """This module's gateway takes at most 1 MiB per upload."""
    yield from watched(GatewayServer(tmp_path_factory.mktemp("padlock-gateway"), server, deploy_server,
                                     ["--max-upload-bytes", str(MAX_UPLOAD)]))


@pytest.fixture(scope="module")
def anonymous(gateway_server: GatewayServer) -> Browser:
    return Browser(gateway_server)


@pytest.fixture(scope="module")
def people(server: AuthServer) -> dict[str, Person]:
    """Provisioned with the CLI, as an operator would."""
    out = {}
    for username, roles in (("olga", ["operator"]), ("tina", []), ("dev", []), ("mia", []), ("sara", [])):
        password = secret(secrets.token_urlsafe(18))
        role_args = [a for r in roles for a in ("--role", r)]
        added = server.cli("users", "add", "--username", username, *role_args, stdin=password + "\n")
        assert added.returncode == 0, redact(f"users add {username} exited {added.returncode}: "
                                             f"{added.stderr[-500:]}")
        out[username] = Person(username, password, roles)
    return out


@pytest.fixture(scope="module")
def tina(gateway_server, people) -> Person:
    return sign_in(gateway_server, people["tina"])


@pytest.fixture(scope="module")
def dev(gateway_server, people) -> Person:
    return sign_in(gateway_server, people["dev"])


@pytest.fixture(scope="module")
def mia(gateway_server, people) -> Person:
    return sign_in(gateway_server, people["mia"])


@pytest.fixture(scope="module")
def sara(gateway_server, people) -> Person:
    return sign_in(gateway_server, people["sara"])


@pytest.fixture(scope="module")
def tina_password_only(gateway_server, people) -> Person:
    """tina in a second browser, signed in with her password only: a second
    factor counts only in the session it was verified in."""
    tina = people["tina"]
    return sign_in(gateway_server, Person(tina.username, tina.password, tina.roles))


@pytest.fixture(scope="module")
def shop(grpc: Grpcurl, deploy: Grpcurl, people, tina: Person) -> Msg:
    """olga creates the app with grpcurl (the gateway has no CreateApp),
    stepped up with her authenticator app as CreateApp requires."""
    olga = people["olga"]
    operator = GrpcPerson(olga.username, olga.password, olga.roles)
    step_up(grpc, operator)
    return deploy.call("padlock.deploy.v1.AppService/CreateApp",
                       {"name": "Shop", "technicalContact": "tina"}, token=operator.token)


@pytest.fixture(scope="module")
def team(shop: Msg, tina: Person, tina_stepped_up, dev: Person, mia: Person) -> dict[str, Reply]:
    """tina, stepped up through the gateway (a team change is padlocked),
    adds dev with the Deploy role and mia as a plain member, and grants dev
    TRANSPORT on test and acceptance."""
    app = f"/api/v1/apps/{shop['id']}"
    replies = {
        "dev": tina.browser.post(f"{app}/members", {"username": "dev", "role": "deploy"}),
        "mia": tina.browser.post(f"{app}/members", {"username": "mia", "role": "member"}),
    }
    for env in ("test", "acceptance"):
        replies[f"grant-{env}"] = tina.browser.post(
            f"{app}/permissions/grants", {"environment": env, "username": "dev", "permissions": ["transport"]})
    return replies


@dataclass
class Upload:
    version: str
    content: bytes
    sha256: str
    reply: Reply


def upload(person: Person, app_id: str, version: str, content: bytes) -> Upload:
    reply = person.browser.request(
        "POST", f"/api/v1/apps/{app_id}/packages?version={version}&file_name=shop-{version}.mda", raw=content)
    return Upload(version, content, hashlib.sha256(content).hexdigest(), reply)


@pytest.fixture(scope="module")
def package(shop: Msg, team, dev: Person) -> Upload:
    # Three full chunks and a short one.
    return upload(dev, shop["id"], "1.0.0", secrets.token_bytes(3 * CHUNK + 1234))


@pytest.fixture(scope="module")
def package_id(package: Upload) -> str:
    return expect(package.reply, 201)["id"]


@pytest.fixture(scope="module")
def on_acceptance(package_id: str, dev: Person) -> dict[str, Reply]:
    """dev deploys to test and transports to acceptance: no padlock there."""
    return {
        "test": dev.browser.post(f"/api/v1/packages/{package_id}/deployments", {"environment": "test"}),
        "acceptance": dev.browser.post(f"/api/v1/packages/{package_id}/transports",
                                       {"from_environment": "test", "to_environment": "acceptance"}),
    }


@pytest.fixture(scope="module")
def tina_stepped_up(tina: Person) -> tuple[Msg, Reply]:
    return enroll_totp(tina)


def to_production() -> dict:
    return {"from_environment": "acceptance", "to_environment": "production"}


def deployment_ids(person: Person, app_id: str) -> list[str]:
    body = expect(person.browser.get(f"/api/v1/apps/{app_id}/deployments"), 200)
    return [d["id"] for d in body["deployments"]]


# ---------------------------------------------------------------- the gateway itself


def test_healthz_and_readyz_answer(anonymous: Browser):
    reply = anonymous.get("/healthz")
    expect(reply, 200)
    assert reply.body == b"ok"
    body = expect(anonymous.get("/readyz"), 200)
    assert body == {"status": "ready", "auth": "serving", "deploy": "serving"}


@pytest.mark.parametrize("path,content_type", [
    ("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css"),
    ("/reasons.js", "text/javascript")])
def test_the_ui_is_embedded_and_served_with_a_strict_csp(anonymous: Browser, path: str, content_type: str):
    reply = anonymous.get(path)
    assert reply.status == 200, f"{reply}"
    assert (reply.header("Content-Type") or "").startswith(content_type), reply.header("Content-Type")
    assert reply.header("Content-Security-Policy") == CSP
    assert reply.header("Cache-Control") == "no-store"
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.body, f"{path} is empty"


def test_the_ui_gets_the_contracts_reasons(anonymous: Browser):
    body = anonymous.get("/reasons.js").body.decode()
    served = re.findall(r"^  ([A-Z][A-Z0-9_]*): '([A-Z][A-Z0-9_]*)',$", body, re.M)
    assert served and all(name == value for name, value in served), body
    assert {name for name, _ in served} == set(vars(Reason)), body


def test_the_jwks_is_auths(anonymous: Browser, grpc: Grpcurl):
    body = expect(anonymous.get("/.well-known/jwks.json"), 200)
    from_auth = grpc.call("padlock.auth.v1.KeyService/GetJwks")
    assert body == {"keys": [dict(k) for k in from_auth["keys"]]}
    assert {k["kty"] for k in body["keys"]} == {"OKP"} and {k["alg"] for k in body["keys"]} == {"EdDSA"}


def test_unknown_routes_and_methods_are_json_errors(anonymous: Browser):
    expect(anonymous.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    reply = anonymous.request("PUT", "/api/v1/me", json_body={})
    expect(reply, 405, Reason.METHOD_NOT_ALLOWED)


# ---------------------------------------------------------------- sign-in, cookies, CSRF


def test_signing_in_sets_two_http_only_secure_strict_cookies(tina: Person, anonymous: Browser):
    reply = tina.signed_in
    body = expect(reply, 201)
    assert set(body) == {"user"}
    user = body["user"]
    assert (user["username"], user["roles"]) == ("tina", []) and uuid.UUID(user["id"])

    cookies = reply.set_cookies
    assert set(cookies) == {"padlock_session", "padlock_access"}, f"{list(cookies)}"
    for cookie in cookies.values():
        for attr, value in COOKIE_ATTRIBUTES.items():
            assert cookie.attributes.get(attr) == value, f"{cookie}: {attr}"
        assert cookie.value, f"{cookie.name} is empty"
    session, access = cookies["padlock_session"], cookies["padlock_access"]
    assert session.attributes.get("max-age") == str(SESSION_TTL), f"{session}"
    assert "max-age" not in access.attributes and "expires" not in access.attributes, \
        f"the access cookie should end with the browser session: {access}"

    # No token in the body or in a Location header.
    for value in (session.value, access.value):
        assert value.encode() not in reply.body
        assert all(value not in v for k, v in reply.headers if k.lower() != "set-cookie")
    assert reply.header("Location") is None

    # The access cookie is an access token for deploy, signed by a key the
    # gateway publishes.
    jwks = jwt.PyJWKSet.from_dict(dict(expect(anonymous.get("/.well-known/jwks.json"), 200)))
    kid = jwt.get_unverified_header(access.value)["kid"]
    claims = jwt.decode(access.value, key=jwks[kid], algorithms=["EdDSA"], audience=AUDIENCE,
                        issuer=ISSUER, leeway=60)
    assert (claims["sub"], claims["preferred_username"]) == (user["id"], "tina")
    assert "mfa_at" not in claims


def test_a_wrong_password_is_401_invalid_token_without_cookies(gateway_server, people):
    browser = Browser(gateway_server)
    reply = browser.post("/api/v1/sessions", {"username": "tina", "password": people["tina"].password + "x"})
    expect(reply, 401, Reason.CREDENTIALS_INVALID)
    assert reply.header("WWW-Authenticate") == INVALID_TOKEN_CHALLENGE
    assert not reply.all("Set-Cookie") and not browser.jar
    reply = browser.post("/api/v1/sessions", {"username": "nobody", "password": "whatever-it-is"})
    expect(reply, 401, Reason.CREDENTIALS_INVALID)


def test_without_the_csrf_header_nothing_is_called(gateway_server, people, shop: Msg, tina: Person):
    browser = Browser(gateway_server)
    reply = browser.post("/api/v1/sessions", {"username": "tina", "password": people["tina"].password},
                         csrf=None)
    expect(reply, 403, Reason.CSRF_HEADER_MISSING)
    assert not reply.all("Set-Cookie") and not browser.jar

    app = f"/api/v1/apps/{shop['id']}"
    before = expect(tina.browser.get(app), 200)["members"]
    for csrf in (None, "0", "yes"):
        reply = tina.browser.post(f"{app}/members", {"username": "mia", "role": "member"}, csrf=csrf)
        expect(reply, 403, Reason.CSRF_HEADER_MISSING)
    assert expect(tina.browser.get(app), 200)["members"] == before, "a write without the header went through"

    expect(tina.browser.delete("/api/v1/sessions/current", csrf=None), 403, Reason.CSRF_HEADER_MISSING)
    expect(tina.browser.get("/api/v1/me"), 200)


def test_malformed_input_is_400_with_fields_and_nothing_is_called(gateway_server, shop: Msg, tina: Person):
    browser = Browser(gateway_server)
    reply = browser.request("POST", "/api/v1/sessions", raw=b'{"username": "tina", "password": ',
                            content_type="application/json")
    body = expect(reply, 400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["body"]
    body = expect(browser.post("/api/v1/sessions", {"username": "tina"}), 400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["password"]
    assert not browser.jar

    app = f"/api/v1/apps/{shop['id']}"
    before = expect(tina.browser.get(app), 200)["members"]
    body = expect(tina.browser.post(f"{app}/members", {"username": 5, "role": "boss"}), 400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["username", "role"]
    assert all(f["description"] for f in body["fields"])
    body = expect(tina.browser.post(f"{app}/permissions/grants",
                                    {"environment": "prod", "username": "mia", "permissions": ["root"]}),
                  400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["environment", "permissions"]
    assert expect(tina.browser.get(app), 200)["members"] == before

    body = expect(tina.browser.get(f"{app}/access?action=fly"), 400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["action", "environment"]
    body = expect(tina.browser.get(f"{app}/nodes/staging"), 400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["environment"]


def test_me_shows_tina_without_a_second_factor(tina: Person):
    body = expect(tina.browser.get("/api/v1/me"), 200)
    assert body["user"] == tina.signed_in.json["user"]
    assert body["factor"] == {"method": "none", "state": "none", "locked": False, "locked_until": None,
                              "attempts_left": 5, "masked_phone_number": None, "enrolled_at": None,
                              "reset": None}
    assert (body["mfa_at"], body["mfa_expires_at"]) == (None, None)


# ---------------------------------------------------------------- the team, a package, test and acceptance


def test_tinas_team_change_is_401_mfa_required(shop: Msg, tina: Person):
    """Adding a member, even on a page about test, decides who reaches
    production: without a second factor tina gets the step-up challenge."""
    assert "mfa_at" not in tina.browser.access_claims
    app = f"/api/v1/apps/{shop['id']}"
    before = expect(tina.browser.get(app), 200)["members"]
    reply = tina.browser.post(f"{app}/members", {"username": "dev", "role": "technical_contact"})
    body = expect(reply, 401, Reason.MFA_REQUIRED)
    assert reply.header("WWW-Authenticate") == MFA_REQUIRED_CHALLENGE
    assert (body["max_age"], body["action"], body["environment"]) == (EIGHT_HOURS, "change_team", "production")
    assert expect(tina.browser.get(app), 200)["members"] == before


def test_tina_builds_the_team_through_the_gateway(shop: Msg, team: dict[str, Reply], tina: Person):
    dev = expect(team["dev"], 201)
    assert (dev["username"], dev["role"]) == ("dev", "deploy")
    assert abs(parse_timestamp(dev["added_at"]) - now()) <= 60
    assert (expect(team["mia"], 201)["role"]) == "member"
    for env in ("test", "acceptance"):
        assert expect(team[f"grant-{env}"], 200) == {"environment": env, "username": "dev",
                                                     "permissions": ["transport"]}

    body = expect(tina.browser.get(f"/api/v1/apps/{shop['id']}"), 200)
    assert body["app"] == {"id": shop["id"], "name": "Shop", "technical_contact": "tina",
                           "created_at": body["app"]["created_at"]}
    assert abs(parse_timestamp(body["app"]["created_at"]) - parse_timestamp(shop["createdAt"])) < 1
    assert {m["username"]: m["role"] for m in body["members"]} == \
           {"tina": "technical_contact", "dev": "deploy", "mia": "member"}
    apps = expect(tina.browser.get("/api/v1/apps"), 200)["apps"]
    assert [a["id"] for a in apps] == [shop["id"]]

    entries = expect(tina.browser.get(f"/api/v1/apps/{shop['id']}/permissions"), 200)["entries"]
    devs = {e["environment"]: e["permissions"] for e in entries if e["username"] == "dev" and e["permissions"]}
    assert devs == {"test": ["transport"], "acceptance": ["transport"]}


def test_dev_uploads_a_package_through_the_gateway(shop: Msg, package: Upload, dev: Person):
    body = expect(package.reply, 201)
    assert (body["version"], body["file_name"]) == ("1.0.0", "shop-1.0.0.mda")
    assert (body["size"], body["sha256"]) == (len(package.content), package.sha256)
    assert body["uploaded_by"] == "dev"
    listed = expect(dev.browser.get(f"/api/v1/apps/{shop['id']}/packages"), 200)["packages"]
    assert listed == [body]


def test_dev_deploys_to_test_and_transports_to_acceptance(shop: Msg, package_id: str, on_acceptance, dev: Person):
    on_test = expect(on_acceptance["test"], 201)
    assert (on_test["package_id"], on_test["environment"], on_test["from_environment"]) == \
           (package_id, "test", None)
    assert (on_test["mfa_at"], on_test["mfa_method"]) == (None, None)
    moved = expect(on_acceptance["acceptance"], 201)
    assert (moved["environment"], moved["from_environment"], moved["deployed_by"]) == \
           ("acceptance", "test", "dev")
    envs = expect(dev.browser.get(f"/api/v1/apps/{shop['id']}/environments"), 200)["environments"]
    current = {e["environment"]: (e["current"] or {}).get("id") for e in envs}
    assert current == {"test": on_test["id"], "acceptance": moved["id"], "production": None}
    assert all(e["node_name"] for e in envs)
    only_test = expect(dev.browser.get(f"/api/v1/apps/{shop['id']}/deployments?environment=test"), 200)
    assert [d["id"] for d in only_test["deployments"]] == [on_test["id"]]


def test_the_policy_lists_padlocks_on_production(tina: Person):
    actions = expect(tina.browser.get("/api/v1/policy/actions"), 200)["actions"]
    row = {(a["action"], a["environment"]): a for a in actions}
    assert row[("transport_package", "production")] == {
        "action": "transport_package", "environment": "production", "padlock": True,
        "max_age_seconds": EIGHT_HOURS, "permission": "transport"}
    assert row[("transport_package", "acceptance")]["padlock"] is False
    assert row[("change_node_permissions", "production")]["permission"] is None
    assert all(row[("change_team", env)]["padlock"] for env in ("test", "acceptance", "production"))


# ---------------------------------------------------------------- step-up


def test_tinas_transport_to_production_is_401_mfa_required(shop: Msg, package_id: str, on_acceptance,
                                                            tina_password_only: Person):
    """From a browser where she signed in with her password only."""
    tina = tina_password_only
    before = deployment_ids(tina, shop["id"])
    access = expect(tina.browser.get(
        f"/api/v1/apps/{shop['id']}/access?action=transport_package&environment=production"), 200)
    assert access == {"allowed": False, "reason": Reason.MFA_REQUIRED, "padlock": True,
                      "max_age_seconds": EIGHT_HOURS, "mfa_expires_at": None}

    reply = tina.browser.post(f"/api/v1/packages/{package_id}/transports", to_production())
    body = expect(reply, 401, Reason.MFA_REQUIRED)
    assert reply.header("WWW-Authenticate") == MFA_REQUIRED_CHALLENGE
    assert (body["max_age"], body["action"], body["environment"]) == \
           (EIGHT_HOURS, "transport_package", "production")
    assert deployment_ids(tina, shop["id"]) == before


def test_tina_enrolls_totp_through_the_gateway(tina: Person, tina_stepped_up):
    started, confirmed = tina_stepped_up
    assert re.fullmatch(r"[A-Z2-7]{32}", started["secret"]), "not a 160-bit base32 secret"
    assert started["otpauth_uri"].startswith("otpauth://totp/")
    assert started["qr_svg"].lstrip().startswith(("<svg", "<?xml"))
    assert abs(parse_timestamp(started["expires_at"]) - now() - 600) <= 60
    prefix = "data:image/png;base64,"
    assert started["qr_png"].startswith(prefix)
    png = base64.b64decode(started["qr_png"][len(prefix):])
    out = subprocess.run([require_tool("zbarimg"), "--raw", "-q", "-"], input=png,
                         capture_output=True, timeout=30)
    assert out.returncode == 0, f"zbarimg found no QR code (exit {out.returncode})"
    assert out.stdout.decode().rstrip("\n") == started["otpauth_uri"], "the QR code does not hold otpauth_uri"

    body = confirmed.json
    assert set(body) == {"mfa_at", "mfa_expires_at", "method"} and body["method"] == "totp"
    mfa_at = parse_timestamp(body["mfa_at"])
    assert abs(mfa_at - now()) <= 60
    assert parse_timestamp(body["mfa_expires_at"]) == mfa_at + EIGHT_HOURS
    # The stepped-up token went into the cookie, not the body.
    new_access = confirmed.set_cookies["padlock_access"]
    for attr, value in COOKIE_ATTRIBUTES.items():
        assert new_access.attributes.get(attr) == value
    assert new_access.value.encode() not in confirmed.body
    assert tina.browser.access_claims["mfa_at"] == int(mfa_at)
    assert "padlock_session" not in confirmed.set_cookies

    me = expect(tina.browser.get("/api/v1/me"), 200)
    assert (me["factor"]["method"], me["factor"]["state"], me["factor"]["locked"]) == ("totp", "active", False)
    assert me["mfa_at"] == body["mfa_at"] and me["mfa_expires_at"] == body["mfa_expires_at"]
    assert me["factor"]["enrolled_at"]


def test_with_totp_tina_transports_to_production(shop: Msg, package_id: str, on_acceptance, tina: Person,
                                                 tina_stepped_up):
    mfa_at = tina.browser.access_claims["mfa_at"]
    access = expect(tina.browser.get(
        f"/api/v1/apps/{shop['id']}/access?action=transport_package&environment=production"), 200)
    assert (access["allowed"], access["reason"]) == (True, None)
    assert parse_timestamp(access["mfa_expires_at"]) == mfa_at + EIGHT_HOURS

    before = deployment_ids(tina, shop["id"])
    done = expect(tina.browser.post(f"/api/v1/packages/{package_id}/transports", to_production()), 201)
    assert (done["environment"], done["from_environment"], done["deployed_by"]) == \
           ("production", "acceptance", "tina")
    assert (parse_timestamp(done["mfa_at"]), done["mfa_method"]) == (mfa_at, "totp")
    assert deployment_ids(tina, shop["id"]) == [done["id"], *before]

    node = expect(tina.browser.get(f"/api/v1/apps/{shop['id']}/nodes/production"), 200)
    assert (node["app_id"], node["environment"], node["package_version"]) == (shop["id"], "production", "1.0.0")


def test_tina_steps_up_again_with_the_next_code(tina: Person, tina_stepped_up):
    _, confirmed = tina_stepped_up
    mfa_at = tina.browser.access_claims["mfa_at"]
    wrong = a_wrong_code(tina.totp_secret)
    reply = tina.browser.post("/api/v1/me/factor/verification", {"code": wrong})
    assert expect(reply, 401, Reason.CODE_INVALID)["attempts_left"] == 4
    assert reply.header("WWW-Authenticate") == INVALID_TOKEN_CHALLENGE
    used = totp_code(tina.totp_secret, tina.last_code_at)
    expect(tina.browser.post("/api/v1/me/factor/verification", {"code": used}), 401, Reason.CODE_REUSED)

    reply = tina.browser.post("/api/v1/me/factor/verification", {"code": next_code(tina)})
    body = expect(reply, 200)
    assert body["method"] == "totp" and set(body) == {"mfa_at", "mfa_expires_at", "method"}
    new_mfa_at = int(parse_timestamp(body["mfa_at"]))
    assert new_mfa_at >= mfa_at
    assert reply.set_cookies["padlock_access"].value.encode() not in reply.body
    assert tina.browser.access_claims["mfa_at"] == new_mfa_at
    assert expect(tina.browser.get("/api/v1/me"), 200)["factor"]["attempts_left"] == 5, \
        "a right code did not reset the count of wrong ones"


def test_sara_enrolls_her_phone_and_a_resend_is_429(sara: Person, twilio: FakeTwilio):
    with Sent(twilio) as sent:
        reply = sara.browser.post("/api/v1/me/factor/sms", {"phone_number": SARA_PHONE})
    started = expect(reply, 200)
    assert len(sent.messages) == 1 and sent.messages[0].to == SARA_PHONE
    assert set(started) == {"enrollment_id", "masked_phone_number", "code_expires_at", "resend_allowed_at"}
    assert SARA_PHONE not in started["masked_phone_number"] and started["masked_phone_number"].endswith("21")
    assert abs(parse_timestamp(started["code_expires_at"]) - now() - 300) <= 60
    me = expect(sara.browser.get("/api/v1/me"), 200)
    assert (me["factor"]["method"], me["factor"]["state"]) == ("sms", "pending")

    code = sent.messages[0].code
    reply = sara.browser.post("/api/v1/me/factor/confirmation",
                              {"enrollment_id": started["enrollment_id"], "code": code})
    assert expect(reply, 200)["method"] == "sms"
    assert sara.browser.access_claims["mfa_method"] == "sms"
    assert code.encode() not in reply.body

    with Sent(twilio) as sent:
        reply = sara.browser.post("/api/v1/me/factor/sms/code")
    body = expect(reply, 429, Reason.SMS_RESEND_TOO_SOON)
    assert sent.requests == [], "a refused resend reached Twilio"
    retry_after = int(reply.header("Retry-After"))
    assert 1 <= retry_after <= 30 and body["retry_after"] == retry_after
    expect(sara.browser.post("/api/v1/me/factor/totp"), 409, Reason.FACTOR_LOCKED)


def test_a_second_enrollment_is_409_factor_locked(tina: Person, tina_stepped_up):
    expect(tina.browser.post("/api/v1/me/factor/totp"), 409, Reason.FACTOR_LOCKED)
    expect(tina.browser.post("/api/v1/me/factor/sms", {"phone_number": PHONE}), 409, Reason.FACTOR_LOCKED)
    body = expect(tina.browser.post("/api/v1/me/factor/sms", {"phone_number": "12"}), 400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["phone_number"]


def test_dev_with_a_second_factor_lacks_the_production_permission(shop: Msg, package_id: str, on_acceptance,
                                                                   dev: Person, tina: Person):
    enroll_totp(dev)
    before = deployment_ids(tina, shop["id"])
    reply = dev.browser.post(f"/api/v1/packages/{package_id}/transports", to_production())
    body = expect(reply, 403, Reason.NODE_PERMISSION_MISSING)
    assert (body["action"], body["environment"]) == ("transport_package", "production")
    assert reply.header("WWW-Authenticate") is None
    access = expect(dev.browser.get(
        f"/api/v1/apps/{shop['id']}/access?action=transport_package&environment=production"), 200)
    assert (access["allowed"], access["reason"]) == (False, Reason.NODE_PERMISSION_MISSING)
    assert deployment_ids(tina, shop["id"]) == before


def test_only_the_technical_contact_changes_permissions(shop: Msg, dev: Person):
    reply = dev.browser.post(f"/api/v1/apps/{shop['id']}/permissions/grants",
                             {"environment": "test", "username": "dev", "permissions": ["logs"]})
    expect(reply, 403, Reason.TECHNICAL_CONTACT_REQUIRED)


# ---------------------------------------------------------------- the other rows of the mapping


def test_unknown_ids_are_404(tina: Person, dev: Person):
    nobody = str(uuid.uuid4())
    expect(tina.browser.get(f"/api/v1/apps/{nobody}"), 404, Reason.APP_NOT_FOUND)
    expect(dev.browser.post(f"/api/v1/packages/{nobody}/deployments", {"environment": "test"}),
           404, Reason.PACKAGE_NOT_FOUND)


def test_conflicts_are_409(shop: Msg, package: Upload, package_id: str, on_acceptance, dev: Person,
                           tina: Person, tina_stepped_up):
    again = upload(dev, shop["id"], "1.0.0", secrets.token_bytes(1000))
    expect(again.reply, 409, Reason.PACKAGE_VERSION_EXISTS)

    newer = upload(dev, shop["id"], "1.1.0", secrets.token_bytes(1000))
    newer_id = expect(newer.reply, 201)["id"]
    expect(dev.browser.post(f"/api/v1/packages/{newer_id}/deployments", {"environment": "test"}), 201)
    before = deployment_ids(tina, shop["id"])
    reply = tina.browser.post(f"/api/v1/packages/{newer_id}/transports", to_production())
    expect(reply, 409, Reason.PACKAGE_NOT_DEPLOYED_IN_SOURCE)
    assert deployment_ids(tina, shop["id"]) == before


def test_skipping_acceptance_is_400_from_deploy(shop: Msg, package_id: str, tina: Person, tina_stepped_up):
    before = deployment_ids(tina, shop["id"])
    reply = tina.browser.post(f"/api/v1/packages/{package_id}/transports",
                              {"from_environment": "test", "to_environment": "production"})
    body = expect(reply, 400, "INVALID_ARGUMENT")
    assert fields_of(body) == ["to_environment"]
    assert deployment_ids(tina, shop["id"]) == before


def test_an_upload_over_the_limit_is_413_before_anything_is_sent(shop: Msg, package: Upload, dev: Person):
    path = f"/api/v1/apps/{shop['id']}/packages?version=9.9.9&file_name=huge.mda"
    reply = dev.browser.headers_only("POST", path, {
        "Content-Type": "application/octet-stream", "Content-Length": str(MAX_UPLOAD + 1),
        "X-Padlock-CSRF": "1"})
    body = expect(reply, 413, Reason.PAYLOAD_TOO_LARGE)
    assert body["max_bytes"] == MAX_UPLOAD
    listed = expect(dev.browser.get(f"/api/v1/apps/{shop['id']}/packages"), 200)["packages"]
    assert "9.9.9" not in {p["version"] for p in listed}


def test_five_wrong_codes_are_429_with_retry_after(mia: Person, team):
    enroll_totp(mia)
    wrong = a_wrong_code(mia.totp_secret)
    for left in (4, 3, 2, 1):
        reply = mia.browser.post("/api/v1/me/factor/verification", {"code": wrong})
        body = expect(reply, 401, Reason.CODE_INVALID)
        assert reply.header("WWW-Authenticate") == INVALID_TOKEN_CHALLENGE
        assert body["attempts_left"] == left, f"{reply}"
    # The fifth wrong code locks the factor; then even the right one waits.
    for code in (wrong, next_code(mia)):
        reply = mia.browser.post("/api/v1/me/factor/verification", {"code": code})
        body = expect(reply, 429, Reason.TOO_MANY_ATTEMPTS)
        retry_after = reply.header("Retry-After")
        assert retry_after and retry_after.isdigit(), f"Retry-After {retry_after!r}"
        assert 15 * 60 - 60 <= int(retry_after) <= 15 * 60, f"Retry-After {retry_after}"
        assert body["retry_after"] == int(retry_after)
        assert reply.header("WWW-Authenticate") is None

    factor = expect(mia.browser.get("/api/v1/me"), 200)["factor"]
    assert (factor["locked"], factor["attempts_left"]) == (True, 0)
    assert abs(parse_timestamp(factor["locked_until"]) - now() - int(retry_after)) <= 60


def test_signing_out_expires_both_cookies_and_ends_the_session(gateway_server, mia: Person):
    saved = dict(mia.browser.jar)
    reply = mia.browser.delete("/api/v1/sessions/current")
    expect(reply, 204)
    cookies = reply.set_cookies
    assert set(cookies) == {"padlock_session", "padlock_access"}
    for cookie in cookies.values():
        assert (cookie.value, cookie.attributes.get("max-age")) == ("", "0"), f"{cookie}"
        for attr, value in COOKIE_ATTRIBUTES.items():
            assert cookie.attributes.get(attr) == value
    assert not mia.browser.jar

    reply = mia.browser.get("/api/v1/apps")
    expect(reply, 401, Reason.SESSION_INVALID)
    assert reply.header("WWW-Authenticate") == INVALID_TOKEN_CHALLENGE
    # Signing out twice is fine.
    expect(mia.browser.delete("/api/v1/sessions/current"), 204)

    # The old cookies, replayed: auth knows the session has ended.
    replay = Browser(gateway_server)
    replay.jar = {"padlock_session": saved["padlock_session"]}
    reply = replay.get("/api/v1/me")
    expect(reply, 401, Reason.SESSION_INVALID)
    assert reply.header("WWW-Authenticate") == INVALID_TOKEN_CHALLENGE
    assert not replay.jar, "the dead session's cookies were not expired"
    replay.jar = dict(saved)
    expect(replay.get("/api/v1/me"), 401, Reason.SESSION_INVALID)


# ---------------------------------------------------------------- restarts (last: they move the clocks)


def test_readyz_is_503_while_deploy_is_stopped(anonymous: Browser, deploy_server: DeployServer,
                                                gateway_server: GatewayServer, tina: Person):
    deploy_server.terminate()
    try:
        reply = anonymous.get("/readyz")
        body = expect(reply, 503, "UNAVAILABLE")
        assert (body["auth"], body["deploy"]) == ("serving", "not_serving")
        assert "deploy" in body["message"]
        expect(tina.browser.get("/api/v1/apps"), 503, "UNAVAILABLE")
        # auth alone still answers.
        expect(tina.browser.get("/api/v1/me"), 200)
    finally:
        deploy_server.restart()
        gateway_server.restart("--max-upload-bytes", str(MAX_UPLOAD))
    expect(anonymous.get("/readyz"), 200)
    expect(tina.browser.get("/api/v1/apps"), 200)


def test_an_expired_access_token_is_refreshed_transparently(
        server: AuthServer, twilio: FakeTwilio, deploy_server: DeployServer, gateway_server: GatewayServer,
        shop: Msg, tina: Person, dev: Person, tina_stepped_up):
    """auth and deploy restart with their clocks 700 s ahead, past the
    cookies' access tokens (600 s, 60 s leeway): the gateway refreshes each
    once with the session cookie, sets the new cookie and retries (an
    upload too, streaming its buffered body again). deploy
    also shortens get_node_details' window to 600 s, so a refreshed call
    can still be refused: with MFA_EXPIRED and the new cookie."""
    old = tina.browser.jar["padlock_access"]
    claims_before = tina.browser.access_claims
    offset = str(CLOCK_JUMP_S)
    server.restart(*twilio.flags(), "--clock-offset-secs", offset)
    deploy_server.restart("--clock-offset-secs", offset, "--max-age", "get_node_details=600")
    gateway_server.restart("--max-upload-bytes", str(MAX_UPLOAD))
    try:
        # The first call after the jump is an upload: deploy refuses the old
        # token only after the gateway has read the body, so the retry
        # streams the buffered package a second time.
        sent = upload(tina, shop["id"], "2.0.0", secrets.token_bytes(CHUNK + 99))
        reply = sent.reply
        body = expect(reply, 201)
        assert (body["size"], body["sha256"], body["uploaded_by"]) == (CHUNK + 99, sent.sha256, "tina")
        fresh = reply.set_cookies.get("padlock_access")
        assert fresh is not None and fresh.value != old, "no new access cookie after the token expired"
        for attr, value in COOKIE_ATTRIBUTES.items():
            assert fresh.attributes.get(attr) == value
        claims = tina.browser.access_claims
        assert claims["iat"] >= now() + CLOCK_JUMP_S - 60, "the new token was not issued by the shifted auth"
        assert (claims["sid"], claims["mfa_at"]) == (claims_before["sid"], claims_before["mfa_at"]), \
            "a refresh must keep the session and carry mfa_at over unchanged"
        assert "padlock_session" not in reply.set_cookies

        reply = tina.browser.get("/api/v1/apps")
        assert [a["id"] for a in expect(reply, 200)["apps"]] == [shop["id"]]
        assert not reply.all("Set-Cookie"), "a fresh token was refreshed again"

        # Refreshed, retried, and refused: the 401 still carries the new cookie.
        old_dev = dev.browser.jar["padlock_access"]
        reply = dev.browser.get(f"/api/v1/apps/{shop['id']}/nodes/production")
        body = expect(reply, 401, Reason.MFA_EXPIRED)
        assert reply.header("WWW-Authenticate") == (
            'Bearer error="insufficient_user_authentication", '
            'error_description="More recent authentication is required", max_age=600')
        assert (body["max_age"], body["action"], body["environment"]) == (600, "get_node_details", "production")
        assert reply.set_cookies["padlock_access"].value not in ("", old_dev)
    finally:
        server.restart(*twilio.flags())
        deploy_server.restart()
        gateway_server.restart("--max-upload-bytes", str(MAX_UPLOAD))
    # Back in the present the new tokens were issued "in the future"; the
    # gateway copes either way.
    expect(tina.browser.get("/api/v1/apps"), 200)
    expect(tina.browser.get(f"/api/v1/apps/{shop['id']}/nodes/production"), 200)


def test_no_token_code_or_password_in_any_url_or_log(server: AuthServer, deploy_server: DeployServer,
                                                     gateway_server: GatewayServer, people, shop: Msg):
    assert len(COOKIE_VALUES) >= 6, "the module saw fewer tokens than it set up"
    needles = set(COOKIE_VALUES) | {p.password for p in people.values()}
    needles |= {p.totp_secret for p in people.values() if p.totp_secret}
    needles |= {PHONE, SARA_PHONE}
    for url in URLS:
        leaked = [n for n in needles if n in url]
        assert not leaked, redact(f"a secret in the URL {url}")
        assert "eyJ" not in url, redact(f"a JWT in the URL {url}")
    for srv in (server, deploy_server, gateway_server):
        srv._log.flush()
        log = srv.log_path.read_text(errors="replace")
        leaked = [n for n in needles if n in log]
        assert not leaked, f"{srv.name}'s log holds {len(leaked)} secret(s) ({srv.log_path})"
        assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", log), f"{srv.name}'s log holds a JWT ({srv.log_path})"

    # The gateway logs route templates, never the paths themselves.
    log = gateway_server.log_path.read_text(errors="replace")
    assert "route=/api/v1/packages/{package_id}/transports" in log
    assert "status=401" in log and "latency_us=" in log
    assert shop["id"] not in log, "the gateway logged a concrete path"
