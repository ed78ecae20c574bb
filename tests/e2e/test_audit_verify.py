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
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import child_env, redact, secret, service_binary

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
