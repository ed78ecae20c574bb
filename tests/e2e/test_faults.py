"""Faults: the database going away, a replica killed, a replica told to stop.

The module starts a PostgreSQL 15 cluster of its own (tests/pg.sh), which one
test stops and starts again; each test gets fresh databases and its own
replicas (`Replicas` in conftest.py: same database, signing keys and data
keys, own data directories), with the database health watcher pinging every
200 ms (`PADLOCK_HEALTH_INTERVAL_MS`).

- PostgreSQL stopped (`pg_ctl stop -m fast`) and started again while a
  bounded loop creates users (SupportService.CreateUser, distinct names):
  calls fail fast with UNAVAILABLE, `grpc.health.v1.Health` turns NOT_SERVING
  on auth and deploy, and both serve again without a restart; every name
  that answered OK exists once with its audit event, every name that
  answered UNAVAILABLE either exists whole or not at all, and a retry never
  creates it twice.
- A replica killed with SIGKILL between StartTotpEnrollment and
  ConfirmEnrollment leaves the enrollment pending (not active, no step-up
  with it), and the other replica confirms it or starts it again; killed
  in the middle of an enrollment storm, every user's factor is whole: none,
  pending or active, and each finishes on the other replica.
- SIGTERM in the middle of a 5 MB client-streamed upload: the upload
  completes OK and the process exits 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from reasons import Reason
from conftest import (
    RPC_TIMEOUT_S,
    Msg,
    Replicas,
    RpcError,
    RpcFailed,
    redact,
    replicas,
    SETUP_TICKET,
    secret,
    step_up,
    totp_code,
    wait_until,
)

AUTH = "padlock.auth.v1"
SESSION = f"{AUTH}.SessionService"
TWO_FACTOR = f"{AUTH}.TwoFactorService"
SUPPORT = f"{AUTH}.SupportService"
DEPLOY = "padlock.deploy.v1"
APPS = f"{DEPLOY}.AppService"
PACKAGES = f"{DEPLOY}.PackageService"
STEP = 30

HEALTH_INTERVAL_MS = 200
HEALTH_ENV = {"PADLOCK_HEALTH_INTERVAL_MS": str(HEALTH_INTERVAL_MS)}
# The pool waits 2 s for a connection (crates/runtime/src/db.rs); a call
# that fails because the database is down must return well within this.
FAIL_FAST_S = 5.0
# The watcher's ping to a stopped database fails after the same 2 s.
NOT_SERVING_WITHIN_S = 2.0 + 5 * HEALTH_INTERVAL_MS / 1000 + 2.0
UNAVAILABLE = "UNAVAILABLE UNAVAILABLE"


def outcome(result) -> str:
    if isinstance(result, RpcError):
        return f"{result.code} {result.reason}"
    if isinstance(result, Msg):
        return "OK"
    raise result


def timed(call) -> tuple[str, float]:
    """(outcome, seconds) of one call; a call that got no gRPC status at
    all (the server is gone) is "NO_STATUS"."""
    t = time.monotonic()
    try:
        result = outcome(call())
    except RpcFailed:
        result = "NO_STATUS"
    return result, time.monotonic() - t


# ---------------------------------------------------------------- the database goes away


@dataclass
class Call:
    name: str
    outcome: str
    started: float
    took: float


class CreateUsers(threading.Thread):
    """A light load: users with distinct names created one after another
    until told to stop (at most `limit`)."""

    def __init__(self, cluster: Replicas, password: str, limit: int = 600):
        super().__init__(daemon=True)
        self.cluster, self.password, self.limit = cluster, password, limit
        self.calls: list[Call] = []
        self.stopping = threading.Event()

    def run(self):
        grpc = self.cluster.auth_grpc[0]
        for n in range(self.limit):
            if self.stopping.is_set():
                return
            name = f"load{n:04d}"
            started = time.monotonic()
            result, took = timed(lambda: grpc.attempt(
                f"{SUPPORT}/CreateUser", {"username": name, "password": self.password, "ticket": SETUP_TICKET},
                token=self.cluster.support_token))
            self.calls.append(Call(name, result, started, took))

    def count(self, result: str, since: float = 0.0) -> int:
        return sum(1 for c in list(self.calls) if c.outcome == result and c.started >= since)

    def finish(self):
        self.stopping.set()
        self.join(timeout=RPC_TIMEOUT_S + 10)
        assert not self.is_alive(), "the load did not stop"


def users_and_audit(cluster: Replicas) -> dict[str, int]:
    """username -> its `user_created` audit events, for the load's users."""
    rows = cluster.postgres.psql(cluster.auth_db, """
        SELECT u.username, count(a.id) FROM users u
        LEFT JOIN audit_events a ON a.subject = u.id AND a.kind = 'user_created'
        WHERE u.username LIKE 'load%' GROUP BY u.username""")
    return {name: int(n) for name, n in rows}


@pytest.fixture
def served(tmp_path, postgres):
    """One auth and one deploy replica, watching the database every 200 ms."""
    yield from replicas(tmp_path, postgres, auths=1, deploys=1, env=HEALTH_ENV)


@pytest.fixture
def single(tmp_path, postgres):
    """One auth replica."""
    yield from replicas(tmp_path, postgres, auths=1)


def test_database_stopped_and_started_under_load(served: Replicas, postgres):
    cluster = served
    auth, deploy = cluster.auth_grpc[0], cluster.deploy_grpc[0]
    olga = cluster.provision("olga", ["operator"])
    step_up(auth, olga)
    olga_token = olga.token
    pids = [s.proc.pid for s in (*cluster.auths, *cluster.deploys)]
    for grpc, service in ((auth, f"{SESSION}"), (deploy, APPS)):
        assert (grpc.health(), grpc.health(service)) == ("SERVING", "SERVING")

    password = secret("load-password-" + "x" * 8)
    load = CreateUsers(cluster, password)
    load.start()
    try:
        wait_until(lambda: load.count("OK") >= 5, timeout=30, what="5 users created before the fault")

        postgres.stop_server()
        down = time.monotonic()
        for grpc, service in ((auth, SESSION), (deploy, APPS)):
            wait_until(lambda: grpc.health() == "NOT_SERVING", timeout=NOT_SERVING_WITHIN_S,
                       what=f"{grpc.addr} health NOT_SERVING")
            assert grpc.health(service) == "NOT_SERVING", f"{service} still SERVING"
        not_serving_after = time.monotonic() - down
        # deploy fails fast too.
        result, took = timed(lambda: deploy.attempt(f"{APPS}/ListApps", token=olga_token))
        assert (result, took < FAIL_FAST_S) == (UNAVAILABLE, True), f"ListApps: {result} after {took:.1f}s"
        wait_until(lambda: load.count(UNAVAILABLE, since=down) >= 3, timeout=30,
                   what="3 CreateUser calls refused while PostgreSQL is down")
    finally:
        if not postgres.running():
            postgres.start_server()
    try:
        up = time.monotonic()
        for grpc, service in ((auth, SESSION), (deploy, APPS)):
            wait_until(lambda: grpc.health() == "SERVING", timeout=15, what=f"{grpc.addr} health SERVING")
            assert grpc.health(service) == "SERVING"
        serving_after = time.monotonic() - up
        wait_until(lambda: load.count("OK", since=up) >= 5, timeout=30,
                   what="5 users created after PostgreSQL came back")
    finally:
        load.finish()

    # The same processes serve again: nobody restarted them.
    assert [s.proc.pid for s in (*cluster.auths, *cluster.deploys)] == pids
    assert all(s.proc.poll() is None for s in (*cluster.auths, *cluster.deploys))
    deploy.call(f"{APPS}/CreateApp", {"name": "After the outage", "technicalContact": "olga"},
                token=olga_token)

    calls = load.calls
    outcomes = {c.outcome for c in calls}
    assert outcomes <= {"OK", UNAVAILABLE}, f"unexpected outcomes: {sorted(outcomes)}"
    refused = [c.took for c in calls if c.outcome == UNAVAILABLE]
    print(f"outage: NOT_SERVING {not_serving_after:.1f}s after the stop, SERVING {serving_after:.1f}s after "
          f"the start; {len(calls)} calls, {len(refused)} UNAVAILABLE in {min(refused):.1f}-{max(refused):.1f}s")
    slow = [(c.name, round(c.took, 1)) for c in calls if c.outcome == UNAVAILABLE and c.took >= FAIL_FAST_S]
    assert not slow, f"UNAVAILABLE only after {FAIL_FAST_S}s or more: {slow}"

    # No lost write: every OK exists, once, with its audit event.
    stored = users_and_audit(cluster)
    attempted = {c.name for c in calls}
    assert set(stored) <= attempted, f"users nobody asked for: {sorted(set(stored) - attempted)}"
    for c in calls:
        if c.outcome == "OK":
            assert stored.get(c.name) == 1, f"{c.name} answered OK; user_created events: {stored.get(c.name)}"
    # No doubled write: retrying a refused name creates it at most once; a
    # name whose commit went through before the connection died is taken.
    for c in calls:
        if c.outcome != UNAVAILABLE:
            continue
        retry = outcome(auth.attempt(f"{SUPPORT}/CreateUser",
                                     {"username": c.name, "password": password, "ticket": SETUP_TICKET},
                                     token=cluster.support_token))
        expected = "ALREADY_EXISTS USERNAME_TAKEN" if c.name in stored else "OK"
        assert retry == expected, f"retrying {c.name} (stored before: {c.name in stored}): {retry}"
        # Whole: the stored user signs in with the password it was given.
        auth.call(f"{SESSION}/SignIn", {"username": c.name, "password": password})
    after = users_and_audit(cluster)
    assert set(after) == attempted, f"missing users: {sorted(attempted - set(after))}"
    assert all(n <= 1 for n in after.values()), \
        f"doubled user_created events: {[k for k, n in after.items() if n > 1]}"


def test_a_user_lost_with_the_connection_is_created_whole_or_not_at_all(single: Replicas, postgres):
    """The connection dies exactly between the two writes: a trigger on the
    audit table ends its own session when the victim's event arrives, as a
    `pg_ctl stop -m fast` or a network cut would at that moment."""
    cluster = single
    postgres.psql(cluster.auth_db, """
        CREATE FUNCTION cut_connection() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM users WHERE id = NEW.subject AND username = 'victim') THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER cut_connection BEFORE INSERT ON audit_events
          FOR EACH ROW EXECUTE FUNCTION cut_connection();""")
    auth = cluster.auth_grpc[0]
    password = secret("victim-password-xyz")
    first = outcome(auth.attempt(f"{SUPPORT}/CreateUser",
                                 {"username": "victim", "password": password, "ticket": SETUP_TICKET},
                                 token=cluster.support_token))
    assert first == UNAVAILABLE, f"the lost connection should answer UNAVAILABLE, got {first}"
    postgres.psql(cluster.auth_db, "DROP TRIGGER cut_connection ON audit_events")
    rows = postgres.psql(cluster.auth_db, """
        SELECT count(a.id) FROM users u
        LEFT JOIN audit_events a ON a.subject = u.id AND a.kind = 'user_created'
        WHERE u.username = 'victim' GROUP BY u.id""")
    # Whole (the user and its event) or nothing.
    assert rows in ([], [["1"]]), f"half-created: the user exists with {rows[0][0]} user_created events"


# ---------------------------------------------------------------- a replica is killed


@pytest.fixture
def pair(tmp_path, postgres):
    """Two auth replicas."""
    yield from replicas(tmp_path, postgres, auths=2, env=HEALTH_ENV)


def factor_state(grpc, token: str) -> str:
    factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=token)
    assert factor["locked"] is False, f"locked: {factor}"
    return factor["state"]


def confirm(grpc, token: str, enrollment_id: str, totp_secret: str, at: int) -> str:
    resp = grpc.call(f"{TWO_FACTOR}/ConfirmEnrollment",
                     {"enrollmentId": enrollment_id, "code": secret(totp_code(totp_secret, at))},
                     token=token)
    return secret(resp["accessToken"])


def start(grpc, token: str) -> tuple[str, str]:
    started = grpc.call(f"{TWO_FACTOR}/StartTotpEnrollment", token=token)
    secret(started.get("otpauthUri", ""))
    return started["enrollmentId"], secret(started["secret"])


def test_sigkill_between_start_and_confirm_leaves_the_enrollment_pending(pair: Replicas):
    cluster = pair
    a, b = cluster.auth_grpc
    kim, lou = cluster.create_user("kim"), cluster.create_user("lou")
    kim_token, lou_token = cluster.sign_in(kim, 0), cluster.sign_in(lou, 0)
    kim_enrollment, kim_secret = start(a, kim_token)
    lou_enrollment, lou_secret = start(a, lou_token)

    assert cluster.auths[0].kill() == -signal.SIGKILL

    # Pending on the other replica: not active, and no step-up with it.
    for token, enrollment_secret in ((kim_token, kim_secret), (lou_token, lou_secret)):
        assert factor_state(b, token) == "FACTOR_STATE_PENDING"
        err = b.call_error(f"{TWO_FACTOR}/Verify",
                           {"code": secret(totp_code(enrollment_secret, int(time.time())))}, token=token)
        assert (err.code, err.reason) == ("FAILED_PRECONDITION", Reason.FACTOR_NOT_ENROLLED), str(err)

    # kim confirms the enrollment the dead replica started.
    now = int(time.time())
    step_up = confirm(b, kim_token, kim_enrollment, kim_secret, now)
    assert factor_state(b, step_up) == "FACTOR_STATE_ACTIVE"
    b.call(f"{TWO_FACTOR}/Verify", {"code": secret(totp_code(kim_secret, now + STEP))}, token=step_up)

    # lou starts again instead: the old enrollment is gone with its secret.
    new_enrollment, new_secret = start(b, lou_token)
    assert new_enrollment != lou_enrollment
    err = b.call_error(f"{TWO_FACTOR}/ConfirmEnrollment",
                       {"enrollmentId": lou_enrollment, "code": secret(totp_code(lou_secret, now))},
                       token=lou_token)
    assert (err.code, err.reason) == ("NOT_FOUND", Reason.ENROLLMENT_NOT_FOUND), str(err)
    confirm(b, lou_token, new_enrollment, new_secret, now)
    assert factor_state(b, lou_token) == "FACTOR_STATE_ACTIVE"


@dataclass
class Enrollment:
    username: str
    token: str = field(repr=False)
    enrollment_id: str = ""
    totp_secret: str = field(default="", repr=False)
    started: str = ""  # outcome of StartTotpEnrollment on the doomed replica
    confirmed: str = ""  # outcome of ConfirmEnrollment there


def test_sigkill_in_an_enrollment_storm_leaves_every_factor_whole(pair: Replicas):
    cluster = pair
    doomed, survivor = cluster.auth_grpc
    people = []
    for n in range(8):
        account = cluster.create_user(f"storm{n}", replica=1)
        people.append(Enrollment(account.username, cluster.sign_in(account, replica=1)))

    killing = threading.Event()

    def enroll(e: Enrollment):
        if killing.is_set():
            return  # no new calls to a dead replica (grpcurl would retry to dial it for 5 s)
        try:
            started = doomed.attempt(f"{TWO_FACTOR}/StartTotpEnrollment", token=e.token)
        except RpcFailed:
            e.started = "NO_STATUS"
            return
        e.started = outcome(started)
        if e.started != "OK":
            return
        secret(started.get("otpauthUri", ""))
        e.enrollment_id, e.totp_secret = started["enrollmentId"], secret(started["secret"])
        if killing.is_set():
            return
        e.confirmed, _ = timed(lambda: doomed.attempt(
            f"{TWO_FACTOR}/ConfirmEnrollment",
            {"enrollmentId": e.enrollment_id, "code": secret(totp_code(e.totp_secret, int(time.time())))},
            token=e.token))

    workers = [threading.Thread(target=lambda chunk=people[i::4]: [enroll(e) for e in chunk], daemon=True)
               for i in range(4)]
    for w in workers:
        w.start()

    def mid_storm() -> bool:
        """Some enrollments confirmed, and some started whose confirmation
        is still to come or in flight (or the storm is over)."""
        confirmed = sum(1 for e in people if e.confirmed)
        waiting = sum(1 for e in people if e.started == "OK" and not e.confirmed)
        return (confirmed >= 2 and waiting >= 2) or not any(w.is_alive() for w in workers)

    wait_until(mid_storm, timeout=60, what="the enrollment storm under way", every=0.005)
    killing.set()
    assert cluster.auths[0].kill() == -signal.SIGKILL
    for w in workers:
        w.join(timeout=RPC_TIMEOUT_S + 10)
    assert not any(w.is_alive() for w in workers)

    states = {}
    for e in people:
        state = factor_state(survivor, e.token)
        states[e.username] = (e.started, e.confirmed, state)
        now = int(time.time())
        if e.confirmed == "OK":
            assert state == "FACTOR_STATE_ACTIVE", f"{e.username}: confirmed OK but {state}"
        if state == "FACTOR_STATE_ACTIVE":
            # Whole: the next code steps up on the other replica.
            survivor.call(f"{TWO_FACTOR}/Verify", {"code": secret(totp_code(e.totp_secret, now + STEP))},
                          token=e.token)
            continue
        if state == "FACTOR_STATE_PENDING":
            err = survivor.call_error(f"{TWO_FACTOR}/Verify",
                                      {"code": secret(totp_code(e.totp_secret or "AAAAAAAA", now))},
                                      token=e.token)
            assert (err.code, err.reason) == ("FAILED_PRECONDITION", Reason.FACTOR_NOT_ENROLLED), \
                f"{e.username}: a pending factor must not step up: {err}"
            if e.enrollment_id:
                confirm(survivor, e.token, e.enrollment_id, e.totp_secret, now)
                continue
        else:
            assert state == "FACTOR_STATE_NONE", f"{e.username}: {state}"
        # Never answered (or nothing stored): start again on the survivor.
        enrollment_id, totp_secret = start(survivor, e.token)
        confirm(survivor, e.token, enrollment_id, totp_secret, now)
    for e in people:
        assert factor_state(survivor, e.token) == "FACTOR_STATE_ACTIVE", states[e.username]
    # The kill really happened mid-storm for some, unless every call was done.
    print("storm:", {k: v for k, v in states.items()})


# ---------------------------------------------------------------- SIGTERM drains


PACKAGE_BYTES = 5 * 1024 * 1024
CHUNK = 64 * 1024


def test_sigterm_drains_an_upload_in_flight(served: Replicas, postgres):
    cluster = served
    olga, tina = cluster.provision("olga", ["operator"]), cluster.create_user("tina")
    step_up(cluster.auth_grpc[0], olga)
    olga_token, tina_token = olga.token, cluster.sign_in(tina)
    deploy_srv, deploy = cluster.deploys[0], cluster.deploy_grpc[0]
    app = deploy.call(f"{APPS}/CreateApp", {"name": "Shop", "technicalContact": "tina"}, token=olga_token)

    content = bytes(range(256)) * (PACKAGE_BYTES // 256)
    digest = hashlib.sha256(content).hexdigest()
    messages = [{"metadata": {"appId": app["id"], "version": "5.0.0", "fileName": "shop-5.0.0.mda",
                              "size": len(content), "sha256": digest}}]
    messages += [{"chunk": base64.b64encode(content[i:i + CHUNK]).decode()}
                 for i in range(0, len(content), CHUNK)]
    lines = [json.dumps(m) + "\n" for m in messages]
    half = len(lines) // 2

    # grpcurl sends each message as it reads it from stdin: feed half.
    cmd = [deploy.exe, "-plaintext", "-connect-timeout", "5", "-max-time", str(RPC_TIMEOUT_S),
           "-format-error", "-expand-headers", "-H", "authorization: Bearer ${PADLOCK_E2E_BEARER}",
           "-d", "@", deploy.addr, f"{PACKAGES}/UploadPackage"]
    env = {**os.environ, "PADLOCK_E2E_BEARER": tina_token}
    upload = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
    try:
        upload.stdin.write("".join(lines[:half]))
        upload.stdin.flush()
        tmp = deploy_srv.data_dir / "packages" / "tmp"

        def partial() -> bool:
            try:
                return any(p.stat().st_size > 0 for p in tmp.glob("*.part"))
            except FileNotFoundError:
                return False

        wait_until(partial, timeout=20, what="the upload's first bytes on the server")

        # Mid-way: the server is told to stop, then the rest arrives.
        deploy_srv.signal(signal.SIGTERM)
        out, err = upload.communicate("".join(lines[half:]), timeout=RPC_TIMEOUT_S + 10)
    finally:
        if upload.poll() is None:
            upload.kill()
            upload.wait()
    assert upload.returncode == 0, redact(f"the upload in flight failed: {err.strip()} {out.strip()}")
    package = json.loads(out)
    assert (package["sha256"], int(package["size"])) == (digest, len(content)), package

    code = deploy_srv.proc.wait(timeout=15)
    assert code == 0, f"padlock-deploy exited {code} on SIGTERM:\n{deploy_srv.stderr_tail()}"
    rows = postgres.psql(cluster.deploy_db, "SELECT version, sha256 FROM packages")
    assert rows == [["5.0.0", digest]], rows
    stored = list((deploy_srv.data_dir / "packages").glob(f"sha256/*/{digest}*"))
    assert stored and stored[0].stat().st_size == len(content), f"blob for {digest}: {stored}"
