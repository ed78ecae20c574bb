"""Secrets at rest and data-key rotation, end to end, with the real binary.

One `padlock-auth` on its default SQLite database, its data keys in a file
outside the data directory (`PADLOCK_DATA_KEYS_FILE`), as production keeps
them. The tests run in file order: alice enrolls an authenticator app; the
operator rotates the signing keys and the data keys with the CLI and sends
SIGHUP; old secrets still open; `data-keys reseal` re-encrypts everything
while bob steps up; `data-keys status` then says the old key protects
nothing, and after it is removed the service still verifies both users.
Finally every byte of the data directory (database, WAL, key files) is
searched for the secrets the test handled: none is there in clear.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    AuthServer,
    Grpcurl,
    Msg,
    auth_binary,
    child_env,
    now,
    redact,
    run_together,
    secret,
    totp_code,
    wait_until,
    watched,
)

PKG = "padlock.auth.v1"
SESSION = f"{PKG}.SessionService"
TWO_FACTOR = f"{PKG}.TwoFactorService"
STEP = 30
RELOAD_TIMEOUT_S = 30


@dataclass
class Person:
    username: str
    password: str
    session: Msg | None = None
    seed_b32: str = ""


def data_key(key_id: str) -> str:
    return f"{key_id}:{secret(base64.b64encode(secrets.token_bytes(32)).decode())}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("secrets-at-rest")


@pytest.fixture(scope="module")
def keys_file(workdir: Path) -> Path:
    path = workdir / "secrets" / "data-keys"
    path.parent.mkdir(mode=0o700)
    path.write_text(data_key("k1") + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def server(workdir: Path, keys_file: Path) -> AuthServer:
    yield from watched(AuthServer(workdir / "auth", env={"PADLOCK_DATA_KEYS_FILE": str(keys_file)}))


@pytest.fixture(scope="module")
def grpc(server: AuthServer) -> Grpcurl:
    return Grpcurl(lambda: server.addr)


@pytest.fixture(scope="module")
def people(server: AuthServer) -> dict[str, Person]:
    out = {}
    for name in ("alice", "bob"):
        person = Person(name, secret(f"{name}-{secrets.token_urlsafe(18)}"))
        added = server.cli("users", "add", "--username", name, stdin=person.password + "\n")
        assert added.returncode == 0, redact(added.stderr[-500:])
        out[name] = person
    return out


def cli(server: AuthServer, *args: str) -> str:
    out = server.cli(*args)
    assert out.returncode == 0, redact(f"padlock-auth {' '.join(args)} exited {out.returncode}: {out.stderr[-800:]}")
    return out.stdout


def sign_in(grpc: Grpcurl, person: Person) -> None:
    resp = grpc.call(f"{SESSION}/SignIn", {"username": person.username, "password": person.password})
    secret(resp["sessionToken"])
    secret(resp["accessToken"])
    person.session = resp


def enroll_totp(grpc: Grpcurl, person: Person) -> None:
    token = person.session["accessToken"]
    started = grpc.call(f"{TWO_FACTOR}/StartTotpEnrollment", {}, token=token)
    person.seed_b32 = secret(started["secret"])
    confirmed = grpc.call(f"{TWO_FACTOR}/ConfirmEnrollment",
                          {"enrollmentId": started["enrollmentId"],
                           "code": totp_code(person.seed_b32, int(now()))}, token=token)
    secret(confirmed["accessToken"])


def verify(grpc: Grpcurl, person: Person, at: float) -> Msg:
    resp = grpc.call(f"{TWO_FACTOR}/Verify", {"code": totp_code(person.seed_b32, int(at))},
                     token=person.session["accessToken"])
    secret(resp["accessToken"])
    return resp


def reloads(server: AuthServer) -> int:
    return server.log_path.read_text(errors="replace").count("keys reloaded")


def sighup(server: AuthServer) -> None:
    """SIGHUP, then wait until the service says it reloaded its keys."""
    before = reloads(server)
    server.signal(signal.SIGHUP)
    wait_until(lambda: reloads(server) > before, timeout=RELOAD_TIMEOUT_S, what="the keys to reload on SIGHUP")


def status_row(status: str, key_id: str) -> list[str]:
    """`data-keys status`'s row for `key_id`: role, secrets, live codes, key files."""
    for line in status.splitlines():
        fields = line.split()
        if fields and fields[0] == key_id:
            return fields[1:]
    pytest.fail(f"no row for {key_id} in data-keys status:\n{status}")


def test_alice_enrolls_with_k1(grpc, server, people, keys_file):
    sign_in(grpc, people["alice"])
    enroll_totp(grpc, people["alice"])
    status = cli(server, "data-keys", "status")
    assert status_row(status, "k1") == ["current", "1", "0", "1"], status
    assert "sealed under k1" in status and "in clear" not in status, status


def test_signing_keys_rotate_sealed(server):
    cli(server, "keys", "rotate")
    sighup(server)
    status = cli(server, "data-keys", "status")
    assert status_row(status, "k1") == ["current", "1", "0", "2"], status


def test_the_data_keys_rotate_and_old_secrets_still_open(grpc, server, people, keys_file):
    out = cli(server, "data-keys", "rotate")
    assert "new current data key k2" in out, out
    assert [e.split(":")[0] for e in keys_file.read_text().strip().split(",")] == ["k2", "k1"]
    sighup(server)
    # alice's secret is still under k1, and opens.
    verify(grpc, people["alice"], now() + STEP)
    # bob's is sealed under k2 by the reloaded service.
    sign_in(grpc, people["bob"])
    enroll_totp(grpc, people["bob"])
    status = cli(server, "data-keys", "status")
    assert status_row(status, "k2") == ["current", "1", "0", "0"], status
    assert status_row(status, "k1") == ["older", "1", "0", "2"], status
    assert "k1 still protects 3 value(s)" in status, status


def test_reseal_runs_while_the_service_verifies(grpc, server, people):
    resealed, verified = run_together(
        lambda: server.cli("data-keys", "reseal", "--batch", "1"),
        lambda: verify(grpc, people["bob"], now() + STEP),
    )
    assert not isinstance(verified, BaseException), redact(str(verified))
    assert resealed.returncode == 0, redact(resealed.stderr[-800:])
    assert "from k1: 1 resealed under k2, 0 changed meanwhile, 0 failed" in resealed.stdout, resealed.stdout
    assert resealed.stdout.count("resealed under k2") == 3, resealed.stdout
    status = cli(server, "data-keys", "status")
    assert status_row(status, "k2") == ["current", "2", "0", "2"], status
    assert status_row(status, "k1") == ["older", "0", "0", "0"], status
    assert "k1 protects nothing: it can be removed" in status, status
    again = cli(server, "data-keys", "reseal")
    assert "every secret is already sealed under k2" in again, again


def test_the_old_key_goes_and_everything_still_opens(grpc, server, people, keys_file):
    keys_file.write_text(keys_file.read_text().strip().split(",")[0] + "\n")
    sighup(server)
    status = cli(server, "data-keys", "status")
    assert [line.split()[0] for line in status.splitlines()[1:] if not line.startswith("signing key")] == ["k2"], \
        status
    # A restart reads everything from disk again; its clock is a minute
    # ahead, so both people have fresh TOTP steps to verify with.
    server.restart("--clock-offset-secs", "60")
    for person in people.values():
        sign_in(grpc, person)
        verify(grpc, person, now() + 60)


def test_a_spec_from_the_environment_cannot_be_rotated_from_the_cli(server):
    out = subprocess.run([str(auth_binary()), "--data-dir", str(server.data_dir), "data-keys", "rotate"],
                         capture_output=True, text=True, timeout=60,
                         env={**child_env(), "PADLOCK_DATA_KEYS": data_key("k9")})
    assert out.returncode != 0
    assert "put the new key first there" in out.stderr, redact(out.stderr)


def test_nothing_secret_is_in_the_data_directory(server, people, keys_file):
    files = sorted(p for p in server.data_dir.rglob("*") if p.is_file())
    names = {p.relative_to(server.data_dir).as_posix() for p in files}
    assert "auth.db" in names and "keys/current.pem" in names, names
    assert not any(n.endswith("data-keys") for n in names), names
    needles: dict[str, bytes] = {}
    for person in people.values():
        raw = base64.b32decode(person.seed_b32 + "=" * (-len(person.seed_b32) % 8))
        needles[f"{person.username}'s password"] = person.password.encode()
        needles[f"{person.username}'s session token"] = person.session["sessionToken"].encode()
        needles[f"{person.username}'s access token"] = person.session["accessToken"].encode()
        needles[f"{person.username}'s TOTP seed (base32)"] = person.seed_b32.encode()
        needles[f"{person.username}'s TOTP seed (base32, lower case)"] = person.seed_b32.lower().encode()
        needles[f"{person.username}'s TOTP seed (hex)"] = binascii.hexlify(raw)
        needles[f"{person.username}'s TOTP seed (raw)"] = raw
    key_id, key = keys_file.read_text().strip().split(":")
    needles[f"data key {key_id}"] = key.encode()
    needles[f"data key {key_id} (raw)"] = base64.b64decode(key)
    needles["a PEM private key in clear"] = b"BEGIN PRIVATE KEY"
    leaks = []
    for path in files:
        data = path.read_bytes()
        leaks += [f"{what} in {path.name}" for what, needle in needles.items() if needle in data]
    assert not leaks, f"in clear in the data directory: {leaks}"
    for pem in server.data_dir.glob("keys/*.pem"):
        assert re.match(r"-----BEGIN PADLOCK SEALED PRIVATE KEY-----\nData-Key-Id: k2\n", pem.read_text()), pem
    log = server.log_path.read_text(errors="replace")
    assert not [what for what, needle in needles.items() if needle in log.encode()], "a secret in the log"
