"""`padlock-auth audit verify` and `padlock-deploy audit verify`, the real
binaries on SQLite and PostgreSQL.

- auth: three users provisioned with `users add` leave three chained audit
  records; verify prints `intact: 3 records, head 3:HASH` and exits 0, and
  on SQLite that head is recomputed here from the table with the encoding
  documented in `crates/runtime/src/audit.rs`, independently of padlock;
  `--expect-head` with that head passes. A record edited by hand is named
  as edited (exit 1), and passes again once restored; records cut off the
  end are found only against the recorded head; a deleted record is
  reported as missing at the next id.
- deploy: a migrated, empty trail verifies as `0 records`; a record chained
  here by hand with the documented encoding verifies; a row inserted
  without a chain position is reported.
- checkpoints (`crates/runtime/src/checkpoint.rs`), auth on SQLite and on
  PostgreSQL, deploy on SQLite: the service serves, audited actions happen
  (sign-ins; apps created), SIGTERM stops it and it writes its shutdown
  checkpoint: its seq and head are the table's (the head recomputed here),
  its Ed25519 signature checks out here with `cryptography` over the
  documented encoding, under the key `audit checkpoint-key` prints and the
  service logged at start. The untouched trail verifies (exit 0); the
  checkpoint line edited is a bad signature (exit 1); a torn last line is a
  warning and still exit 0; the newest records deleted by hand are reported
  as deleted against the shutdown checkpoint, also after a restart has
  checkpointed the shorter trail; all rows deleted is reported as an
  emptied trail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conftest import (AuthServer, DeployServer, Grpcurl, Service, child_env, provision, redact, secret, step_up,
                      service_binary, watched)

HEAD_RE = re.compile(r"audit chain intact: (\d+) records, head (\d+):([0-9a-f]{64})")
AUTH_DOMAIN = "padlock-auth audit_events v1"
AUTH_COLUMNS = ["at", "kind", "outcome", "actor", "subject", "session_id", "detail"]
DEPLOY_DOMAIN = "padlock-deploy audit_events v1"
DEPLOY_COLUMNS = ["at", "actor", "action", "app_id", "environment", "outcome", "reason",
                  "mfa_at", "mfa_method", "detail"]


def enc(value) -> bytes:
    if value is None:
        return b"\0"
    if isinstance(value, int):
        return b"\1" + struct.pack(">q", value)
    data = value.encode()
    return b"\2" + struct.pack(">I", len(data)) + data


def record_hash(domain: str, seq: int, prev_hex: str, values: list) -> str:
    data = enc(domain) + enc(seq) + bytes.fromhex(prev_hex) + b"".join(map(enc, values))
    return hashlib.sha256(data).hexdigest()


@dataclass
class Db:
    """One service's database: the flags that point a binary at it, how to
    run SQL on it, and (SQLite only) the file, for exact values."""

    backend: str
    url: str
    execute: Callable[[str], None]
    sqlite_path: Path | None = None

    def flags(self, data_dir: Path) -> list[str]:
        return ["--data-dir", str(data_dir), "--database-url", self.url]


def sqlite_db(path: Path) -> Db:
    def execute(sql: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(sql)

    return Db("sqlite", f"sqlite://{path}?mode=rwc", execute, path)


@pytest.fixture(params=["sqlite", "postgres"])
def new_db(request, tmp_path) -> Callable[[str], Db]:
    """Makes a fresh database per service on the parametrised backend."""
    if request.param == "sqlite":
        return lambda name: sqlite_db(tmp_path / f"{name}.db")
    pg = request.getfixturevalue("postgres")

    def make(name: str) -> Db:
        url = pg.create_database(f"audit_{name}")
        return Db("postgres", url, lambda sql: pg.psql(url, sql))

    return make


def run(binary: str, db: Db, data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(service_binary(binary)), *db.flags(data_dir), *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=child_env())


def verify(binary: str, db: Db, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run(binary, db, data_dir, "audit", "verify", *args)


def assert_intact(out: subprocess.CompletedProcess, records: int) -> str:
    assert out.returncode == 0, redact(f"verify exited {out.returncode}: {out.stderr[-800:]}")
    found = HEAD_RE.search(out.stdout)
    assert found, f"no head in {out.stdout!r}"
    assert int(found.group(1)) == records and int(found.group(2)) == records, out.stdout
    return f"{found.group(2)}:{found.group(3)}"


def assert_broken(out: subprocess.CompletedProcess, *phrases: str) -> None:
    assert out.returncode == 1, f"verify exited {out.returncode}: {out.stdout} {out.stderr[-800:]}"
    last = out.stderr.strip().splitlines()[-1]
    for phrase in phrases:
        assert phrase in last, f"{phrase!r} not in {last!r}"


def sqlite_rows(path: Path, columns: list[str]) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {', '.join(columns)}, seq FROM audit_events ORDER BY seq").fetchall()


def recompute_head(path: Path, domain: str, columns: list[str]) -> str:
    prev = "00" * 32
    rows = sqlite_rows(path, columns)
    for row in rows:
        prev = record_hash(domain, row[-1], prev, list(row[:-1]))
    return f"{len(rows)}:{prev}"


def test_auth_audit_verify_finds_an_edited_and_a_deleted_record(new_db, tmp_path):
    db = new_db("auth")
    data = tmp_path / "auth"
    for username in ["sam", "alice", "bob"]:
        out = run("padlock-auth", db, data, "users", "add", "--username", username,
                  stdin=secret("pw-" + "x" * 16 + username) + "\n")
        assert out.returncode == 0, redact(out.stderr[-800:])

    head = assert_intact(verify("padlock-auth", db, data), 3)
    if db.sqlite_path:
        assert recompute_head(db.sqlite_path, AUTH_DOMAIN, AUTH_COLUMNS) == head
    assert_intact(verify("padlock-auth", db, data, "--expect-head", head), 3)

    # alice's creation (record 2) claims she got a role; put back, it checks out again.
    db.execute("UPDATE audit_events SET detail = 'roles=support' WHERE id = 2")
    assert_broken(verify("padlock-auth", db, data), "record id 2 ", "edited")
    db.execute("UPDATE audit_events SET detail = 'roles=' WHERE id = 2")
    assert_intact(verify("padlock-auth", db, data), 3)

    # The tail cut off: a shorter chain is intact; only the recorded head shows the cut.
    db.execute("DELETE FROM audit_events WHERE id = 3")
    assert_intact(verify("padlock-auth", db, data), 2)
    assert_broken(verify("padlock-auth", db, data, "--expect-head", head), "truncated")

    db.execute("DELETE FROM audit_events WHERE id = 1")
    assert_broken(verify("padlock-auth", db, data), "record id 2 ", "missing")


def test_deploy_audit_verify_checks_the_documented_encoding(new_db, tmp_path):
    db = new_db("deploy")
    data = tmp_path / "deploy"
    out = run("padlock-deploy", db, data, "migrate")
    assert out.returncode == 0, out.stderr[-800:]
    assert_intact(verify("padlock-deploy", db, data), 0)

    values = [1_800_000_000, "tina", "transport_package", "app-1", "production", "ok", None,
              1_799_999_000, "totp", "package p-1"]
    hashed = record_hash(DEPLOY_DOMAIN, 1, "00" * 32, values)
    literal = ", ".join("NULL" if v is None else str(v) if isinstance(v, int) else f"'{v}'" for v in values)
    db.execute(f"INSERT INTO audit_events ({', '.join(DEPLOY_COLUMNS)}, seq, prev_hash, hash) "
               f"VALUES ({literal}, 1, '{'0' * 64}', '{hashed}')")
    assert assert_intact(verify("padlock-deploy", db, data), 1) == f"1:{hashed}"

    db.execute("INSERT INTO audit_events (at, actor, action, outcome, detail) "
               "VALUES (1800000000, 'mallory', 'download_backup', 'ok', '')")
    assert_broken(verify("padlock-deploy", db, data), "record id 2", "inserted outside the chain")


# ---------------------------------------------------------------- checkpoints

KEY_RE = re.compile(r"ed25519:[0-9a-f]{64}")


def checkpoint_signature_holds(c: dict) -> bool:
    """The documented check (crates/runtime/src/checkpoint.rs), independent
    of padlock."""
    fields = ["padlock audit checkpoint v1", c["chain"], c["seq"], c["head"], c["at"],
              c["instance"], c["reason"]]
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(c["key"].removeprefix("ed25519:")))
    try:
        key.verify(bytes.fromhex(c["sig"]), b"".join(map(enc, fields)))
    except Exception:  # noqa: BLE001 - cryptography's InvalidSignature
        return False
    return True


@dataclass
class Trail:
    """A service (stopped by the checks), its audit table, how to query it
    (`query` returns rows of strings) and the flags it was started with."""

    srv: Service
    db: Db
    query: Callable[[str], list]
    domain: str
    columns: list[str]
    flags: list[str]

    @property
    def checkpoints(self) -> Path:
        return self.srv.data_dir / "audit-checkpoints"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.srv.cli(*self.flags, *args)

    def verify(self, *args: str) -> subprocess.CompletedProcess:
        return self.cli("audit", "verify", *args)

    def rows(self) -> int:
        return int(self.query("SELECT count(*) FROM audit_events")[0][0])

    def head(self) -> str:
        """The chain's head, recomputed here on SQLite; on PostgreSQL as
        stored."""
        if self.db.sqlite_path:
            return recompute_head(self.db.sqlite_path, self.domain, self.columns)
        rows = self.query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        return f"{rows[0][0]}:{rows[0][1]}" if rows else "0:" + "0" * 64

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.checkpoints.read_text().splitlines()]


def sqlite_query(path: Path) -> Callable[[str], list]:
    def query(sql: str) -> list:
        with sqlite3.connect(path) as conn:
            return [[str(v) for v in row] for row in conn.execute(sql).fetchall()]

    return query


def failed(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, redact(f"verify exited {out.returncode}: {out.stdout} {out.stderr[-800:]}")
    return out.stderr


def check_checkpoints(trail: Trail, records: int) -> None:
    """The checks every variant shares: the shutdown checkpoint, then the
    trail untouched, a checkpoint edited, a torn line, records cut off the
    end (also across a restart), and all rows deleted."""
    srv = trail.srv
    assert srv.terminate() == 0, srv.stderr_tail()
    lines = trail.lines()
    last = lines[-1]
    assert [c["reason"] for c in lines] == ["start", "shutdown"], lines
    head = trail.head()
    assert f"{last['seq']}:{last['head']}" == head
    assert last["seq"] == records
    assert last["chain"] == f"{srv.name}/audit_events"
    assert all(checkpoint_signature_holds(c) for c in lines)
    assert oct(trail.checkpoints.stat().st_mode & 0o777) == "0o600"
    key_file = srv.data_dir / "audit-checkpoint.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    # auth seals it under its data keys like its signing keys; deploy has none.
    armour = "PADLOCK SEALED PRIVATE KEY" if srv.name == "padlock-auth" else "PRIVATE KEY"
    assert key_file.read_text().startswith(f"-----BEGIN {armour}-----\n")

    # The key the operator pins: printed by the CLI and logged at start.
    printed = trail.cli("audit", "checkpoint-key")
    assert printed.returncode == 0, printed.stderr[-800:]
    assert KEY_RE.fullmatch(printed.stdout.strip()) and printed.stdout.strip() == last["key"]
    logged = srv.log_path.read_text(errors="replace")
    assert "audit checkpoint key" in logged and last["key"] in logged
    # Each checkpoint is also a log event; the key file's body never is.
    assert last["sig"] in logged
    assert not [line for line in key_file.read_text().splitlines() if len(line) >= 40 and line in logged]

    out = trail.verify()
    assert_intact(out, records)
    assert f"checkpoints: 2 in {trail.checkpoints}, all consistent" in out.stdout, out.stdout

    # One field of the shutdown checkpoint edited: a bad signature.
    original = trail.checkpoints.read_text()
    trail.checkpoints.write_text(original.replace(f'"seq":{records},', f'"seq":{records - 1},'))
    assert trail.checkpoints.read_text() != original
    assert f"{trail.checkpoints} line 2: bad signature" in failed(trail.verify())
    trail.checkpoints.write_text(original)

    # A line cut short by a crash: a warning; the lines before it count.
    torn = trail.checkpoints.with_name("torn-checkpoints")
    torn.write_text(original + original.splitlines()[0][:70])
    out = trail.verify("--checkpoints", str(torn))
    assert_intact(out, records)
    assert f"{torn} line 3: the last line is cut short" in out.stderr, out.stderr

    # The two newest records deleted by hand: the chain left is intact, the
    # shutdown checkpoint saw more.
    trail.db.execute(f"DELETE FROM audit_events WHERE seq > {records - 2}")
    expected = (f"the audit trail ends at seq {records - 2} but the checkpoint of {last['at']} "
                f"({last['instance']}, shutdown) saw seq {records}: records were deleted")
    assert expected in failed(trail.verify())
    # A restart checkpoints the shorter trail, says so in its log, and the
    # cut is still found.
    srv.restart(*trail.flags)
    assert srv.terminate() == 0
    assert len(trail.lines()) == 4 and trail.lines()[-1]["seq"] == records - 2
    assert "the audit trail is shorter than the last checkpoint saw" in srv.log_path.read_text()
    assert expected in failed(trail.verify())

    # Every row deleted.
    trail.db.execute("DELETE FROM audit_events")
    assert (f"the audit trail is empty but the checkpoint of {last['at']} ({last['instance']}, "
            f"shutdown) saw seq {records}: all its records were deleted") in failed(trail.verify())


# A server for one test, its log attached to a failure, stopped afterwards.
serving = contextlib.contextmanager(watched)


def sign_in(grpc: Grpcurl, username: str, password: str) -> str:
    resp = grpc.call("padlock.auth.v1.SessionService/SignIn", {"username": username, "password": password})
    secret(resp["sessionToken"])
    return secret(resp["accessToken"])


def add_user(srv: Service, flags: list[str], username: str, *roles: str) -> str:
    password = secret("pw-" + "y" * 16 + username)
    out = srv.cli(*flags, "users", "add", "--username", username,
                  *[a for r in roles for a in ("--role", r)], stdin=password + "\n")
    assert out.returncode == 0, redact(out.stderr[-800:])
    return password


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_auth_checkpoints_find_records_deleted_from_the_end(backend, request, tmp_path):
    if backend == "sqlite":
        # The default database in the data directory, as `padlock up` and the README run it.
        db = sqlite_db(tmp_path / "auth" / "data" / "auth.db")
        query, flags = sqlite_query(db.sqlite_path), []
    else:
        pg = request.getfixturevalue("postgres")
        url = pg.create_database("audit_checkpoints")
        db = Db("postgres", url, lambda sql: pg.psql(url, sql))
        query, flags = (lambda sql: pg.psql(url, sql)), ["--database-url", url]
    with serving(AuthServer(tmp_path / "auth", flags)) as srv:
        password = add_user(srv, flags, "olga")
        grpc = Grpcurl(lambda: srv.addr)
        for _ in range(3):
            sign_in(grpc, "olga", password)
        trail = Trail(srv, db, query, AUTH_DOMAIN, AUTH_COLUMNS, flags)
        assert trail.rows() == 4, "users add and three sign-ins"
        check_checkpoints(trail, 4)


def test_deploy_checkpoints_find_records_deleted_from_the_end(tmp_path):
    with serving(AuthServer(tmp_path / "auth")) as auth:
        # Creating an app needs an operator with a fresh second factor.
        olga = provision(auth, "olga", ["operator"])
        step_up(Grpcurl(lambda: auth.addr), olga)
        token = olga.token
        with serving(DeployServer(tmp_path / "deploy", auth)) as deploy:
            grpc = Grpcurl(lambda: deploy.addr)
            for name in ["Shop", "Bank", "Zoo"]:
                grpc.call("padlock.deploy.v1.AppService/CreateApp",
                          {"name": name, "technicalContact": "olga"}, token=token)
            path = deploy.data_dir / "deploy.db"
            trail = Trail(deploy, sqlite_db(path), sqlite_query(path), DEPLOY_DOMAIN, DEPLOY_COLUMNS, [])
            assert trail.rows() == 3, "three apps created"
            check_checkpoints(trail, 3)
