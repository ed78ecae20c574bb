"""The attack suite (issue 7): forged and tampered tokens, oversized
metadata and password guessing, against the real binaries on SQLite and on
PostgreSQL, with independent tools only.

Tokens are forged with PyJWT (and `cryptography` for Ed25519 and HMAC) or
composed byte by byte where PyJWT refuses to (duplicate JSON members, `crit`,
`alg: none` spellings), and sent with grpcurl to auth
(`TwoFactorService.GetFactor`, `Verify`) and deploy
(`PolicyService.CheckAccess`, `PackageService.TransportPackage` to
production), and with http.client to the gateway as a cookie. Each must be
refused with the exact gRPC status and `ErrorInfo` reason, and must write
nothing: every table of both databases (row count and digest) is compared
before and after.

auth runs on signing keys of the module's own, in clear PKCS#8 PEM
(`--signing-key-file`, `--previous-signing-key-file`), so the suite can sign
tokens with padlock's real key: a token that is valid in every respect but
one (expired, not yet valid, wrong `iss`/`aud`, `mfa_at` ahead, a session of
someone else) shows that exactly that one check refuses it. A control token
built the same way with nothing wrong is accepted.

Password guessing: auth trusts `padlock-client-ip` from 127.0.0.1
(`--trusted-proxies`, as it trusts the gateway), so grpcurl can play
clients at other addresses. Guesses are throttled per username and per
address (`SIGN_IN_THROTTLED` with `RetryInfo`, no password check, no audit
record), never touch the second-factor lockout, and the owner still signs in
from an address they used before. The waits run on the real clock, so these
tests count what the throttle let through against what the elapsed time
allows instead of expecting an exact number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import math
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    Postgres,
    RpcError,
    provision,
    secret,
    step_up,
    wait_until,
    watched,
)
from test_totp_enrollment import a_wrong_code
from test_transport_to_production import (
    ACCEPTANCE,
    APPS,
    PACKAGES,
    PERMISSIONS,
    POLICY,
    PRODUCTION,
    SESSION,
    TEST,
    TRANSPORT,
    TWO_FACTOR,
    Person,
    assert_padlock_refusal,
    assert_refusal,
    claims_of,
    next_code,
    package_upload,
    sign_in,
    to_production,
)

KEYS = "padlock.auth.v1.KeyService"
LEEWAY_S = 60
# Tokens longer than this are refused before parsing (crates/token).
MAX_TOKEN_BYTES = 8 * 1024
# The largest header block a server accepts (crates/runtime server limits).
MAX_HEADER_LIST_BYTES = 16 * 1024
USER_FREE = 5
ADDRESS_FREE = 50
ATTACKER_ADDRESS = "203.0.113.66"


# ---------------------------------------------------------------- keys and tokens


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of_key(key: Ed25519PrivateKey) -> str:
    """RFC 7638 thumbprint of the public key, as auth names its keys."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64(public_raw(key))},
                           separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def pem_of(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def compose(header: dict | str, payload: dict | str, sign) -> str:
    """A JWS compact token from raw JSON text (dicts are serialised), with
    `sign(signing_input) -> bytes` for the signature (None: empty)."""
    text = lambda part: part if isinstance(part, str) else json.dumps(part, separators=(",", ":"))
    signing_input = f"{b64(text(header).encode())}.{b64(text(payload).encode())}"
    signature = b64(sign(signing_input.encode())) if sign else ""
    return secret(f"{signing_input}.{signature}")


def eddsa(key: Ed25519PrivateKey):
    return key.sign


@dataclass
class SigningKeys:
    """The module's keys: k1 signs (current), k0 is the previous one, k2 the
    next; `attacker` is in no key set."""
    dir: Path
    k0: Ed25519PrivateKey
    k1: Ed25519PrivateKey
    k2: Ed25519PrivateKey
    attacker: Ed25519PrivateKey

    @property
    def current_file(self) -> Path:
        return self.dir / "current.pem"

    @property
    def previous_file(self) -> Path:
        return self.dir / "previous.pem"

    def install(self, current: Ed25519PrivateKey, previous: Ed25519PrivateKey) -> None:
        for path, key in ((self.current_file, current), (self.previous_file, previous)):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pem_of(key))
            tmp.chmod(0o600)
            tmp.replace(path)


def fresh_claims(template: dict, **changes) -> dict:
    """`template`'s identity with times of now and a second factor from a
    minute ago; `changes` override (None removes a claim)."""
    t = int(time.time())
    claims = {**template, "iat": t, "exp": t + 600, "jti": str(uuid.uuid4()),
              "mfa_at": t - 60, "mfa_method": "totp", "amr": ["pwd", "otp", "mfa"], "acr": "aal2"}
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def signed(key: Ed25519PrivateKey, claims: dict, **header) -> str:
    """PyJWT's EdDSA token with `kid` of `key` unless `header` names one."""
    headers = {"kid": kid_of_key(key), **header}
    return secret(jwt.encode(claims, key, algorithm="EdDSA", headers=headers))


# ---------------------------------------------------------------- databases


@dataclass
class Engine:
    name: str
    postgres: Postgres | None = None
    auth_url: str = ""
    deploy_url: str = ""

    def db_args(self, url: str) -> list[str]:
        return ["--database-url", url] if url else []


def table_digests_sqlite(path: Path) -> dict[str, tuple[int, str]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {}
        for table in tables:
            rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{table}"'))
            out[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
        return out
    finally:
        con.close()


def table_digests_postgres(pg: Postgres, url: str) -> dict[str, tuple[int, str]]:
    tables = [r[0] for r in pg.psql(url, "SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
    sql = " UNION ALL ".join(
        f"SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
        f'FROM "{t}" x' for t in tables)
    return {t: (int(n), digest) for t, n, digest in pg.psql(url, sql)}


@dataclass
class Stack:
    """The three services of one engine and what the tests need of them."""
    engine: Engine
    auth: AuthServer
    deploy: DeployServer
    gateway: GatewayServer
    grpc: Grpcurl
    deployg: Grpcurl
    keys: SigningKeys

    def digests(self) -> dict[str, tuple[int, str]]:
        """(rows, digest) of every table of both databases."""
        if self.engine.postgres:
            pg = self.engine.postgres
            auth = table_digests_postgres(pg, self.engine.auth_url)
            deploy = table_digests_postgres(pg, self.engine.deploy_url)
        else:
            auth = table_digests_sqlite(self.auth.data_dir / "auth.db")
            deploy = table_digests_sqlite(self.deploy.data_dir / "deploy.db")
        return {**{f"auth.{t}": v for t, v in auth.items()}, **{f"deploy.{t}": v for t, v in deploy.items()}}

    def auth_rows(self, sql: str) -> list[list[str]]:
        if self.engine.postgres:
            return self.engine.postgres.psql(self.engine.auth_url, sql)
        con = sqlite3.connect(f"file:{self.auth.data_dir / 'auth.db'}?mode=ro", uri=True, timeout=30)
        try:
            return [[str(v) for v in row] for row in con.execute(sql)]
        finally:
            con.close()

    def refused_sign_ins(self) -> int:
        """Audit records of password checks that failed."""
        return int(self.auth_rows("SELECT count(*) FROM audit_events "
                                  "WHERE kind = 'sign_in' AND outcome = 'refused'")[0][0])


@contextmanager
def nothing_written(stack: Stack):
    before = stack.digests()
    yield
    after = stack.digests()
    changed = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
    counts = {t: (before.get(t, (None,))[0], after.get(t, (None,))[0]) for t in changed}
    assert not changed, f"the attack changed {changed} (rows before, after: {counts})"


# ---------------------------------------------------------------- the stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def engine(request) -> Engine:
    if request.param == "sqlite":
        return Engine("sqlite")
    pg: Postgres = request.getfixturevalue("postgres")
    return Engine("postgres", pg, pg.create_database("attack_auth"), pg.create_database("attack_deploy"))


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory, engine: Engine) -> SigningKeys:
    keys = SigningKeys(tmp_path_factory.mktemp(f"keys-{engine.name}"),
                       *(Ed25519PrivateKey.generate() for _ in range(4)))
    keys.dir.chmod(0o700)
    keys.install(current=keys.k1, previous=keys.k0)
    return keys


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine: Engine, signing_keys: SigningKeys):
    args = [*engine.db_args(engine.auth_url),
            "--signing-key-file", str(signing_keys.current_file),
            "--previous-signing-key-file", str(signing_keys.previous_file),
            "--trusted-proxies", "127.0.0.1"]
    yield from watched(AuthServer(tmp_path_factory.mktemp(f"auth-{engine.name}"), args))


@pytest.fixture(scope="module")
def deploy_server(tmp_path_factory, engine: Engine, server: AuthServer):
    yield from watched(DeployServer(tmp_path_factory.mktemp(f"deploy-{engine.name}"), server,
                                    engine.db_args(engine.deploy_url)))


@pytest.fixture(scope="module")
def stack(engine, server, deploy_server, gateway_server, grpc, deploy, signing_keys) -> Stack:
    return Stack(engine, server, deploy_server, gateway_server, grpc, deploy, signing_keys)


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, Person]:
    """Provisioned with the CLI on the same database; each signs in once
    from 127.0.0.1, which makes it an address they are known at."""
    out = {}
    for username, roles in (("olga", ["operator"]), ("tina", []), ("dev", []), ("mallory", [])):
        person = provision(stack.auth, username, roles, *stack.engine.db_args(stack.engine.auth_url))
        sign_in(stack.grpc, person)
        out[username] = person
    return out


@pytest.fixture(scope="module")
def shop(stack: Stack, people) -> dict:
    """Shop, with tina as Technical Contact and a package on acceptance,
    moved there by dev: a transport to production is one token away.
    olga (CreateApp) and tina (team changes) step up for it: tina's
    session has an authenticator app (oathtool) from here on."""
    olga, tina, dev = people["olga"], people["tina"], people["dev"]
    step_up(stack.grpc, olga)
    step_up(stack.grpc, tina)
    d = stack.deployg
    app = d.call(f"{APPS}/CreateApp", {"name": "Shop", "technicalContact": "tina"}, token=olga.token)
    d.call(f"{APPS}/AddTeamMember", {"appId": app["id"], "username": "dev", "role": "TEAM_ROLE_DEPLOY"},
           token=tina.token)
    for env in (TEST, ACCEPTANCE):
        d.call(f"{PERMISSIONS}/GrantNodePermissions",
               {"appId": app["id"], "environment": env, "username": "dev", "permissions": [TRANSPORT]},
               token=tina.token)
    upload = package_upload(app["id"], "1.0.0", b"MDA" * 1000)
    package = d.call_stream(f"{PACKAGES}/UploadPackage", upload.messages, token=dev.token)
    d.call(f"{PACKAGES}/DeployPackage", {"packageId": package["id"], "environment": TEST}, token=dev.token)
    d.call(f"{PACKAGES}/TransportPackage",
           {"packageId": package["id"], "fromEnvironment": TEST, "toEnvironment": ACCEPTANCE}, token=dev.token)
    return {"app_id": app["id"], "package_id": package["id"]}


@pytest.fixture(scope="module")
def tina_enrolled(stack: Stack, people, shop) -> Person:
    """tina with an authenticator app (oathtool, enrolled when she built
    Shop's team) and one wrong code of her own: four attempts left."""
    tina = people["tina"]
    assert tina.totp_secret, "tina enrolled when she set up Shop"
    err = stack.grpc.call_error(f"{TWO_FACTOR}/Verify", {"code": a_wrong_code(tina.totp_secret)},
                                token=tina.token)
    assert_refusal(err, "UNAUTHENTICATED", Reason.CODE_INVALID)
    return tina


# ---------------------------------------------------------------- sending


def check_access_request(shop: dict) -> dict:
    return {"action": "ACTION_TRANSPORT_PACKAGE", "appId": shop["app_id"], "environment": PRODUCTION}


def grpcurl_with(grpc: Grpcurl, method: str, data: dict, headers: list[str],
                 env: dict[str, str]) -> Msg | RpcError:
    """A call whose headers may expand `${NAME}` from `env`, so tokens stay
    out of argv (as `Grpcurl` does for one bearer token)."""
    args = ["-format-error", "-emit-defaults", "-expand-headers"]
    for h in headers:
        args += ["-H", h]
    out = grpc.run(*args, "-d", "@", grpc.addr, method, stdin=json.dumps(data), env={**os.environ, **env})
    if out.returncode == 0:
        return Msg(json.loads(out.stdout))
    return grpc._refused(method, out)


def refused_everywhere(stack: Stack, shop: dict, token: str, *, auth_reason: str = Reason.TOKEN_INVALID,
                       check_access_reason: str = Reason.TOKEN_INVALID,
                       transport_reason: str = Reason.TOKEN_INVALID) -> None:
    """auth's GetFactor and Verify, deploy's CheckAccess and the transport
    to production all refuse `token`, and nothing is written anywhere."""
    with nothing_written(stack):
        for method, data in ((f"{TWO_FACTOR}/GetFactor", {}), (f"{TWO_FACTOR}/Verify", {"code": "123456"})):
            err = stack.grpc.call_error(method, data, token=token)
            assert_refusal(err, "UNAUTHENTICATED", auth_reason)
        err = stack.deployg.call_error(f"{POLICY}/CheckAccess", check_access_request(shop), token=token)
        assert_refusal(err, "UNAUTHENTICATED", check_access_reason)
        err = stack.deployg.call_error(f"{PACKAGES}/TransportPackage", to_production(shop["package_id"]),
                                       token=token)
        assert_padlock_refusal(err, "UNAUTHENTICATED", transport_reason, action="transport_package")


# ---------------------------------------------------------------- the control


def test_auth_publishes_the_module_keys_under_their_thumbprints(stack: Stack):
    jwks = stack.grpc.call(f"{KEYS}/GetJwks")
    kids = [k["kid"] for k in jwks["keys"]]
    assert kids == [kid_of_key(stack.keys.k1), kid_of_key(stack.keys.k0)], f"JWKS kids {kids}"


def test_a_token_signed_like_auth_with_nothing_wrong_is_accepted(stack: Stack, people, shop):
    """The control: the forging route makes valid tokens, so each refusal
    below is about the one thing that is wrong."""
    token = signed(stack.keys.k1, fresh_claims(claims_of(people["tina"].token)))
    with nothing_written(stack):
        access = stack.deployg.call(f"{POLICY}/CheckAccess", check_access_request(shop), token=token)
        assert (access["allowed"], access["reason"]) == (True, ""), f"{access}"
        factor = stack.grpc.call(f"{TWO_FACTOR}/GetFactor", token=token)
        assert "state" in factor, f"{factor}"
    # A token of the previous key is still good (rotation keeps it).
    token = signed(stack.keys.k0, fresh_claims(claims_of(people["tina"].token)))
    access = stack.deployg.call(f"{POLICY}/CheckAccess", check_access_request(shop), token=token)
    assert access["allowed"] is True, f"{access}"


# ---------------------------------------------------------------- key rotation


def test_a_key_dropped_by_a_rotation_is_refused(stack: Stack, people, shop, signing_keys: SigningKeys):
    """k0 was the previous key (its tokens verified in the control test).
    Rotate: k2 current, k1 previous, k0 gone; SIGHUP auth. deploy learns of
    the rotation from the first token of the new key, as a running system
    does, and from then on trusts k0 no more. (Until that token comes,
    deploy still holds k0: it refreshes its keys on an unknown `kid` only,
    at most once per 30 s, which is why this test runs before the forged
    `kid`s below spend that refresh.)"""
    signing_keys.install(current=signing_keys.k2, previous=signing_keys.k1)
    stack.auth.signal(signal.SIGHUP)

    def rotated():
        kids = [k["kid"] for k in stack.grpc.call(f"{KEYS}/GetJwks")["keys"]]
        return kids == [kid_of_key(signing_keys.k2), kid_of_key(signing_keys.k1)]

    wait_until(rotated, timeout=30, what="auth to load the rotated keys")
    tina = claims_of(people["tina"].token)
    fresh = signed(signing_keys.k2, fresh_claims(tina))
    access = stack.deployg.call(f"{POLICY}/CheckAccess", check_access_request(shop), token=fresh)
    assert access["allowed"] is True, f"{access}"
    refused_everywhere(stack, shop, signed(signing_keys.k0, fresh_claims(tina)))
    # k1, now previous, still verifies.
    access = stack.deployg.call(f"{POLICY}/CheckAccess", check_access_request(shop),
                                token=signed(signing_keys.k1, fresh_claims(tina)))
    assert access["allowed"] is True, f"{access}"


# ---------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["empty", "garbage", "real-eddsa"])
def test_alg_none_is_refused(stack: Stack, people, shop, alg: str, signature: str):
    header = {"alg": alg, "typ": "JWT", "kid": kid_of_key(stack.keys.k1)}
    sign = {"empty": None, "garbage": lambda _: b"\x00" * 64, "real-eddsa": eddsa(stack.keys.k1)}[signature]
    token = compose(header, fresh_claims(claims_of(people["tina"].token)), sign)
    refused_everywhere(stack, shop, token)


def test_pyjwt_alg_none_is_refused(stack: Stack, people, shop):
    token = secret(jwt.encode(fresh_claims(claims_of(people["tina"].token)), None, algorithm="none",
                              headers={"kid": kid_of_key(stack.keys.k1)}))
    refused_everywhere(stack, shop, token)


@pytest.mark.filterwarnings("ignore:The HMAC key is")  # short on purpose: it is the public key
@pytest.mark.parametrize("secret_form", ["raw-32-bytes", "jwk-x", "spki-pem"])
@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_hmac_signed_with_the_public_key_is_refused(stack: Stack, people, shop, secret_form: str, alg: str):
    """The classic confusion: the verifier's public key used as an HMAC
    secret. PyJWT itself refuses a PEM as HMAC key, so that one is composed."""
    k1 = stack.keys.k1
    key = {
        "raw-32-bytes": public_raw(k1),
        "jwk-x": b64(public_raw(k1)).encode(),
        "spki-pem": k1.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo),
    }[secret_form]
    claims = fresh_claims(claims_of(people["tina"].token))
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    if secret_form == "spki-pem":
        token = compose({"alg": alg, "typ": "JWT", "kid": kid_of_key(k1)}, claims,
                        lambda data: hmac.new(key, data, digest).digest())
    else:
        token = secret(jwt.encode(claims, key, algorithm=alg, headers={"kid": kid_of_key(k1)}))
    refused_everywhere(stack, shop, token)


# ---------------------------------------------------------------- key ids and key headers


@pytest.mark.parametrize("kid", [
    "unknown-key-id",
    "../../etc/passwd",
    "/dev/zero",
    "file:///etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "' OR '1'='1",
    "k" * 4000,
    "\u0000",
    "",
])
def test_unknown_or_path_like_kid_is_refused(stack: Stack, people, shop, kid: str):
    token = signed(stack.keys.attacker, fresh_claims(claims_of(people["tina"].token)), kid=kid)
    refused_everywhere(stack, shop, token)


@pytest.mark.parametrize("kid", [None, 42, {"kid": "x"}, ["a"]])
def test_missing_or_non_string_kid_is_refused(stack: Stack, people, shop, kid):
    header = {"alg": "EdDSA", "typ": "JWT"} | ({} if kid is None else {"kid": kid})
    token = compose(header, fresh_claims(claims_of(people["tina"].token)), eddsa(stack.keys.k1))
    refused_everywhere(stack, shop, token)


class KeyServerSpy:
    """An HTTP server on 127.0.0.1 that would serve the attacker's keys
    (`jku`, `x5u`) and counts every request: none may come."""

    def __init__(self, jwks: dict):
        import http.server
        import threading

        spy = self
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                spy.requests.append(self.path)
                body = json.dumps(jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def key_spy(stack: Stack):
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(public_raw(stack.keys.attacker)),
           "kid": kid_of_key(stack.keys.attacker), "use": "sig", "alg": "EdDSA"}
    spy = KeyServerSpy({"keys": [jwk]})
    yield spy, jwk
    spy.close()


@pytest.mark.parametrize("kid_choice", ["attacker", "trusted"])
def test_jku_x5u_and_jwk_headers_are_ignored(stack: Stack, people, shop, key_spy, kid_choice: str):
    spy, jwk = key_spy
    kid = jwk["kid"] if kid_choice == "attacker" else kid_of_key(stack.keys.k1)
    token = signed(stack.keys.attacker, fresh_claims(claims_of(people["tina"].token)), kid=kid,
                   jku=f"{spy.url}/jwks.json", x5u=f"{spy.url}/cert.pem", jwk=jwk)
    refused_everywhere(stack, shop, token)
    assert spy.requests == [], f"a service fetched the attacker's keys: {spy.requests}"


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["padlock-ext"], []])
def test_crit_header_is_refused(stack: Stack, people, shop, crit: list):
    """RFC 7515 §4.1.11: extensions listed in `crit` must be understood;
    padlock understands none, so even a genuinely signed token is refused."""
    header = {"alg": "EdDSA", "typ": "JWT", "kid": kid_of_key(stack.keys.k1), "crit": crit, "b64": True}
    token = compose(header, fresh_claims(claims_of(people["tina"].token)), eddsa(stack.keys.k1))
    refused_everywhere(stack, shop, token)


# ---------------------------------------------------------------- claims, validly signed


def _times(case: str) -> dict:
    t = int(time.time())
    return {
        "expired": {"iat": t - 3600, "exp": t - LEEWAY_S - 300},
        "expired-just-past-leeway": {"iat": t - 900, "exp": t - LEEWAY_S - 30},
        "not-yet-valid": {"iat": t + 3600, "exp": t + 4200},
        "iat-past-leeway": {"iat": t + LEEWAY_S + 300, "exp": t + 900},
        "exp-not-a-number": {"exp": "tomorrow"},
        "exp-missing": {"exp": None},
        "iat-missing": {"iat": None},
    }[case]


@pytest.mark.parametrize("case", ["expired", "expired-just-past-leeway", "not-yet-valid", "iat-past-leeway",
                                  "exp-not-a-number", "exp-missing", "iat-missing"])
def test_out_of_time_tokens_are_refused(stack: Stack, people, shop, case: str):
    token = signed(stack.keys.k1, fresh_claims(claims_of(people["tina"].token), **_times(case)))
    refused_everywhere(stack, shop, token)


@pytest.mark.parametrize("claim,value", [
    ("iss", "https://evil.example"),
    ("iss", ISSUER + "/"),
    ("iss", ISSUER.upper()),
    ("iss", None),
    ("aud", "padlock-gateway"),
    ("aud", [AUDIENCE]),
    ("aud", [AUDIENCE, "other"]),
    ("aud", None),
    ("sub", None),
    ("sid", None),
    ("roles", "support"),
])
def test_wrong_issuer_audience_or_shape_is_refused(stack: Stack, people, shop, claim: str, value):
    token = signed(stack.keys.k1, fresh_claims(claims_of(people["tina"].token), **{claim: value}))
    refused_everywhere(stack, shop, token)


@pytest.mark.parametrize("edit", ["roles-support", "become-tina", "add-mfa", "re-encoded-same-claims"])
def test_a_valid_signature_over_an_edited_payload_is_refused(stack: Stack, people, shop, edit: str):
    """mallory's genuine token (from SignIn), payload edited, signature kept."""
    genuine = people["mallory"].token
    header, payload, signature = genuine.split(".")
    claims = claims_of(genuine)
    tina = claims_of(people["tina"].token)
    if edit == "roles-support":
        claims["roles"] = ["support", "operator"]
    elif edit == "become-tina":
        claims.update(sub=tina["sub"], preferred_username="tina", sid=tina["sid"])
    elif edit == "add-mfa":
        claims.update(mfa_at=int(time.time()) - 60, mfa_method="totp", amr=["pwd", "otp", "mfa"], acr="aal2")
    payload_json = json.dumps(claims, indent=1 if edit == "re-encoded-same-claims" else None)
    forged = secret(f"{header}.{b64(payload_json.encode())}.{signature}")
    refused_everywhere(stack, shop, forged)


def test_an_mfa_at_in_the_future_is_refused(stack: Stack, people, shop):
    """auth and CheckAccess refuse the token; the padlocked transport
    answers the step-up rule's MFA_EXPIRED (docs/design.md "The step-up rule")."""
    t = int(time.time())
    token = signed(stack.keys.k1, fresh_claims(claims_of(people["tina"].token), mfa_at=t + LEEWAY_S + 600))
    refused_everywhere(stack, shop, token, transport_reason=Reason.MFA_EXPIRED)


@pytest.mark.parametrize("where", ["header", "payload-sub", "payload-mfa_at"])
def test_duplicate_json_members_are_refused(stack: Stack, people, shop, where: str):
    """Two parsers could read different values of a duplicated member;
    padlock reads neither."""
    k1, tina = stack.keys.k1, claims_of(people["tina"].token)
    kid = kid_of_key(k1)
    claims = fresh_claims(tina)
    payload = json.dumps(claims)
    header = f'{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}'
    if where == "header":
        header = f'{{"alg":"EdDSA","kid":"{kid}","alg":"none","kid":"{kid}"}}'
    elif where == "payload-sub":
        payload = payload[:-1] + f',"sub":{json.dumps(claims_of(people["mallory"].token)["sub"])}}}'
    else:
        payload = payload[:-1] + f',"mfa_at":{int(time.time())}}}'
    refused_everywhere(stack, shop, compose(header, payload, eddsa(k1)))


# ---------------------------------------------------------------- sessions


def test_another_users_token_with_a_stolen_session_id_is_refused_by_auth(stack: Stack, people):
    """A token for mallory that names tina's session (and the other way
    round), signed with the real key: auth ties the token's subject to the
    session's owner. (deploy never looks at sessions: it is stateless by
    design and trusts the token until it expires.)"""
    tina, mallory = claims_of(people["tina"].token), claims_of(people["mallory"].token)
    for claims in (fresh_claims(mallory, sid=tina["sid"]), fresh_claims(tina, sid=mallory["sid"]),
                   fresh_claims(tina, sid=str(uuid.uuid4()))):
        token = signed(stack.keys.k1, claims)
        with nothing_written(stack):
            for method, data in ((f"{TWO_FACTOR}/GetFactor", {}), (f"{TWO_FACTOR}/Verify", {"code": "123456"}),
                                 (f"{TWO_FACTOR}/StartTotpEnrollment", {})):
                assert_refusal(stack.grpc.call_error(method, data, token=token), "UNAUTHENTICATED",
                               Reason.SESSION_INVALID)


def test_a_token_of_a_signed_out_session_is_refused_by_auth(stack: Stack, people):
    tina = people["tina"]
    second = Person(tina.username, tina.password, tina.roles)
    sign_in(stack.grpc, second)
    stack.grpc.call(f"{SESSION}/SignOut", {"sessionToken": second.session_token})
    with nothing_written(stack):
        for method, data in ((f"{TWO_FACTOR}/GetFactor", {}), (f"{TWO_FACTOR}/Verify", {"code": "123456"})):
            assert_refusal(stack.grpc.call_error(method, data, token=second.token), "UNAUTHENTICATED",
                           Reason.SESSION_INVALID)
        err = stack.grpc.call_error(f"{SESSION}/Refresh", {"sessionToken": second.session_token})
        assert_refusal(err, "UNAUTHENTICATED", Reason.SESSION_INVALID)


# ---------------------------------------------------------------- sizes


def padded_token(stack: Stack, people, size: int) -> str:
    """A validly signed token of `size` to `size + 3` bytes (a long `jti`)."""
    claims = fresh_claims(claims_of(people["tina"].token), jti="")
    token = signed(stack.keys.k1, claims)
    while len(token) < size:
        claims["jti"] += "x" * max(1, (size - len(token)) * 3 // 4)
        token = signed(stack.keys.k1, claims)
    return token


def test_a_token_just_under_the_size_limit_is_accepted(stack: Stack, people, shop):
    token = padded_token(stack, people, MAX_TOKEN_BYTES - 3)
    assert MAX_TOKEN_BYTES - 3 <= len(token) <= MAX_TOKEN_BYTES, len(token)
    access = stack.deployg.call(f"{POLICY}/CheckAccess", check_access_request(shop), token=token)
    assert access["allowed"] is True, f"{access}"


@pytest.mark.parametrize("size", [MAX_TOKEN_BYTES + 1, 12 * 1024])
def test_a_token_over_8_kib_is_refused_though_validly_signed(stack: Stack, people, shop, size: int):
    token = padded_token(stack, people, size)
    assert len(token) > MAX_TOKEN_BYTES
    refused_everywhere(stack, shop, token)


def test_two_authorization_headers_are_refused_whatever_their_order(stack: Stack, people, shop):
    """Which of two tokens a proxy in front checked is unknown: no token."""
    genuine, forged = people["tina"].token, signed(stack.keys.attacker, fresh_claims(claims_of(people["tina"].token)))
    for first, second in ((genuine, forged), (forged, genuine), (genuine, genuine)):
        env = {"PADLOCK_E2E_A": first, "PADLOCK_E2E_B": second}
        headers = ["authorization: Bearer ${PADLOCK_E2E_A}", "authorization: Bearer ${PADLOCK_E2E_B}"]
        with nothing_written(stack):
            err = grpcurl_with(stack.grpc, f"{TWO_FACTOR}/GetFactor", {}, headers, env)
            assert isinstance(err, RpcError), "two authorization headers were accepted by auth"
            assert_refusal(err, "UNAUTHENTICATED", Reason.TOKEN_INVALID)
            err = grpcurl_with(stack.deployg, f"{POLICY}/CheckAccess", check_access_request(shop), headers, env)
            assert isinstance(err, RpcError), "two authorization headers were accepted by deploy"
            assert_refusal(err, "UNAUTHENTICATED", Reason.TOKEN_INVALID)


def raw_grpc_post(addr: str, method: str, headers: list[tuple[str, str]]) -> tuple[str, str, str]:
    """An HTTP/2 gRPC POST from curl (which sends whatever header block it
    is given, unlike grpcurl, which refuses to exceed the server's limit):
    (HTTP status or "", grpc-status or "", curl's verbose log)."""
    args = ["curl", "-v", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "--max-time", "20",
            "-X", "POST", "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--data-binary", "@-"]
    for name, value in headers:
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, f"http://{addr}/{method}"], input=b"\x00\x00\x00\x00\x00",
                         capture_output=True, timeout=120)
    head = out.stdout.decode(errors="replace")
    status = next((line.split()[1] for line in head.splitlines() if line.startswith("HTTP/")), "")
    grpc_status = next((line.split(":", 1)[1].strip() for line in head.splitlines()
                        if line.lower().startswith("grpc-status:")), "")
    return status, grpc_status, out.stderr.decode(errors="replace")


def test_curl_reaches_the_servers_with_a_normal_header_block(stack: Stack):
    """The control for the next test: curl's request itself is fine."""
    for addr, method in ((stack.auth.addr, f"{TWO_FACTOR}/GetFactor"), (stack.deploy.addr, f"{POLICY}/CheckAccess")):
        status, grpc_status, _ = raw_grpc_post(addr, method, [("x-padding", "p" * 100)])
        assert (status, grpc_status) == ("200", "16"), f"{method}: HTTP {status} grpc-status {grpc_status}"


@pytest.mark.parametrize("shape", ["one-huge-header", "many-small-headers", "huge-authorization"])
def test_an_oversized_header_block_is_refused_and_the_server_lives_on(stack: Stack, people, shop, shape: str):
    """Over the servers' 16 KiB header list limit (HTTP/2
    SETTINGS_MAX_HEADER_LIST_SIZE): HTTP 431, or the stream refused
    (REFUSED_STREAM) before any handler runs."""
    filler = "a" * 100
    headers = {
        "one-huge-header": [("x-padding", "p" * (64 * 1024))],
        "many-small-headers": [(f"x-padding-{i}", filler) for i in range(1000)],
        "huge-authorization": [("authorization", "Bearer " + "e" * (MAX_HEADER_LIST_BYTES * 4))],
    }[shape]
    targets = ((stack.auth.addr, f"{TWO_FACTOR}/GetFactor"), (stack.deploy.addr, f"{POLICY}/CheckAccess"))
    with nothing_written(stack):
        for addr, method in targets:
            status, grpc_status, log = raw_grpc_post(addr, method, headers)
            refused = status == "431" or "REFUSED_STREAM" in log
            assert refused, f"{method}, {shape}: HTTP {status!r} grpc-status {grpc_status!r}; curl: {log[-300:]}"
    # Both still serve, and a normal call still works.
    assert stack.grpc.health() == "SERVING"
    assert stack.deployg.health() == "SERVING"
    access = stack.deployg.call(f"{POLICY}/CheckAccess", check_access_request(shop),
                                token=signed(stack.keys.k1, fresh_claims(claims_of(people["tina"].token))))
    assert access["allowed"] is True


# ---------------------------------------------------------------- the gateway


def http_request(stack: Stack, method: str, path: str, cookies: dict[str, str],
                 body: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) from the gateway."""
    host, port = stack.gateway.addr.rsplit(":", 1)
    headers = {"Accept": "application/json", "X-Padlock-CSRF": "1"}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(host, int(port), timeout=RPC_TIMEOUT_S)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        parsed = json.loads(raw) if raw and resp.getheader("Content-Type", "").startswith("application/json") else {}
        return resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def gateway_forgeries(stack: Stack, people) -> dict[str, str]:
    tina = claims_of(people["tina"].token)
    header, _, signature = people["mallory"].token.split(".")
    return {
        "alg-none": compose({"alg": "none", "kid": kid_of_key(stack.keys.k1)}, fresh_claims(tina), None),
        "attacker-key": signed(stack.keys.attacker, fresh_claims(tina)),
        "edited-payload": secret(f"{header}.{b64(json.dumps(fresh_claims(tina)).encode())}.{signature}"),
        "expired": signed(stack.keys.k1, fresh_claims(tina, **_times("expired"))),
    }


@pytest.mark.parametrize("forgery", ["alg-none", "attacker-key", "edited-payload", "expired"])
def test_the_gateway_refuses_a_forged_access_cookie(stack: Stack, people, shop, forgery: str):
    token = gateway_forgeries(stack, people)[forgery]
    path = f"/api/v1/packages/{shop['package_id']}/transports"
    with nothing_written(stack):
        # Alone: no session to refresh with, so the browser must sign in.
        status, body, headers = http_request(stack, "POST", path, {"padlock_access": token},
                                             {"from_environment": "acceptance", "to_environment": "production"})
        assert (status, body.get("error")) == (401, Reason.SESSION_INVALID), f"{status} {body}"
        assert "max-age=0" in headers.get("set-cookie", "").lower(), "the forged cookie was not cleared"
        # With mallory's own session: the gateway refreshes *her* token,
        # so the forged identity buys nothing.
        status, body, _ = http_request(stack, "GET", "/api/v1/me",
                                       {"padlock_access": token, "padlock_session": people["mallory"].session_token})
        assert status == 200 and body["user"]["username"] == "mallory", f"{status} {body}"


@pytest.mark.parametrize("size", [MAX_TOKEN_BYTES + 1, 17 * 1024, 64 * 1024])
def test_the_gateway_takes_an_oversized_cookie_for_none(stack: Stack, people, size: int):
    """It never reaches auth or deploy (whose header limit would answer
    with a confusing 431, 500 or 429): no session, or the session's own."""
    token = padded_token(stack, people, size) if size < 16 * 1024 else "e" * size
    assert len(token) > MAX_TOKEN_BYTES
    with nothing_written(stack):
        status, body, _ = http_request(stack, "GET", "/api/v1/me", {"padlock_access": token})
        assert (status, body.get("error")) == (401, Reason.SESSION_INVALID), f"{status} {body}"
        status, body, _ = http_request(stack, "GET", "/api/v1/me",
                                       {"padlock_access": token, "padlock_session": people["mallory"].session_token})
        assert status == 200 and body["user"]["username"] == "mallory", f"{status} {body}"


# ---------------------------------------------------------------- password guessing


def sign_in_from(stack: Stack, address: str, username: str, password: str) -> Msg | RpcError:
    """SignIn as a client at `address` (auth trusts 127.0.0.1's word for it)."""
    result = stack.grpc.attempt(f"{SESSION}/SignIn", {"username": username, "password": password},
                                headers=[f"padlock-client-ip: {address}"])
    if isinstance(result, Msg):
        secret(result["sessionToken"])
        secret(result["accessToken"])
    return result


def outcome(result: Msg | RpcError) -> str:
    if isinstance(result, Msg):
        return "OK"
    if result.reason == Reason.SIGN_IN_THROTTLED:
        assert result.code == "RESOURCE_EXHAUSTED", str(result)
        assert result.retry_delay_s and result.retry_delay_s >= 1, f"no RetryInfo in {result}"
    return f"{result.code} {result.reason}"


def doublings_within(seconds: float) -> int:
    """How many waits of 1, 2, 4, ... s fit in `seconds`: what the throttle
    may let through beyond the free attempts in that time."""
    return int(math.log2(seconds + 1)) + 1


def guess(stack: Stack, address: str, usernames: list[str]) -> tuple[list[str], float]:
    """Wrong passwords for `usernames` in turn; the outcomes and how long
    it took."""
    started = time.monotonic()
    outcomes = [outcome(sign_in_from(stack, address, u, "not-the-password-123")) for u in usernames]
    return outcomes, time.monotonic() - started


def test_password_guessing_on_one_username_is_throttled(stack: Stack, people, tina_enrolled: Person):
    refused_before = stack.refused_sign_ins()
    outcomes, elapsed = guess(stack, ATTACKER_ADDRESS, ["tina"] * 12)
    checked = outcomes.count("UNAUTHENTICATED CREDENTIALS_INVALID")
    throttled = outcomes.count("RESOURCE_EXHAUSTED SIGN_IN_THROTTLED")
    assert checked + throttled == len(outcomes), outcomes
    assert outcomes[:USER_FREE] == ["UNAUTHENTICATED CREDENTIALS_INVALID"] * USER_FREE, outcomes
    assert throttled >= 1, f"never throttled in {elapsed:.1f}s: {outcomes}"
    assert checked <= USER_FREE + doublings_within(elapsed), f"{checked} checked in {elapsed:.1f}s: {outcomes}"
    # Only the checked guesses left an audit record: a throttled attempt
    # checks no password and writes nothing.
    assert stack.refused_sign_ins() - refused_before == checked


def test_password_guessing_leaves_the_second_factor_alone(stack: Stack, tina_enrolled: Person):
    tina = tina_enrolled
    factor = stack.grpc.call(f"{TWO_FACTOR}/GetFactor", token=tina.token)
    assert (factor["state"], factor["locked"], factor["attemptsLeft"]) == ("FACTOR_STATE_ACTIVE", False, 4), \
        f"{factor}"
    resp = stack.grpc.call(f"{TWO_FACTOR}/Verify", {"code": next_code(tina)}, token=tina.token)
    tina.token = secret(resp["accessToken"])


def test_the_owner_still_signs_in_from_an_address_she_used_before(stack: Stack, tina_enrolled: Person):
    """The guesser is being throttled on tina's username; tina, at
    127.0.0.1 where she signed in before, is not slowed at all, by grpcurl
    or through the gateway (which passes her address on)."""
    guess(stack, ATTACKER_ADDRESS, ["tina"] * 3)
    fresh = Person(tina_enrolled.username, tina_enrolled.password, tina_enrolled.roles)
    sign_in(stack.grpc, fresh)
    status, body, _ = http_request(stack, "POST", "/api/v1/sessions", {},
                                   {"username": "tina", "password": tina_enrolled.password})
    assert (status, body.get("user", {}).get("username")) == (201, "tina"), f"{status} {body}"


def test_the_gateway_answers_a_throttled_sign_in_with_429_and_retry_after(stack: Stack):
    started = time.monotonic()
    replies = [http_request(stack, "POST", "/api/v1/sessions", {},
                            {"username": "nobody-at-all", "password": "not-the-password-123"}) for _ in range(10)]
    elapsed = time.monotonic() - started
    statuses = [s for s, _, _ in replies]
    assert statuses[:USER_FREE] == [401] * USER_FREE, statuses
    throttled = [(b, h) for s, b, h in replies if s == 429]
    assert throttled, f"never throttled in {elapsed:.1f}s: {statuses}"
    assert statuses.count(401) <= USER_FREE + doublings_within(elapsed), statuses
    for body, headers in throttled:
        assert body.get("error") == Reason.SIGN_IN_THROTTLED, body
        assert int(headers.get("retry-after", "0")) >= 1, headers


def test_guessing_from_one_address_over_many_usernames_is_throttled(stack: Stack, people):
    address = "198.51.100.77"
    usernames = [f"sprayed-{i}" for i in range(ADDRESS_FREE)]
    outcomes, _ = guess(stack, address, usernames)
    assert outcomes == ["UNAUTHENTICATED CREDENTIALS_INVALID"] * ADDRESS_FREE, outcomes
    started = time.monotonic()
    after = [outcome(sign_in_from(stack, address, f"more-{i}", "not-the-password-123")) for i in range(5)]
    elapsed = time.monotonic() - started
    assert "RESOURCE_EXHAUSTED SIGN_IN_THROTTLED" in after, f"never throttled in {elapsed:.1f}s: {after}"
    assert after.count("UNAUTHENTICATED CREDENTIALS_INVALID") <= doublings_within(elapsed), after
    # Another address is not affected.
    assert outcome(sign_in_from(stack, "192.0.2.10", "olga", people["olga"].password)) == "OK"
