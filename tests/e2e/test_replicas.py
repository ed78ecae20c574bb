"""Replicas on one PostgreSQL: every single-use rule and every limit holds
across them, because it lives in the database (docs/design.md "Data").

The module starts a PostgreSQL 15 cluster of its own (tests/pg.sh); each test
gets fresh databases and its own replicas (`Replicas` in conftest.py): two
padlock-auth processes, each with its own data directory but the same
database, signing keys and data keys, and where a test needs them two
padlock-deploy processes on a database of their own. Requests go to both
replicas at the same moment (threads released by a barrier, each running
the real grpcurl), several rounds:

- the same TOTP code, sent to both auth replicas at once, confirms an
  enrollment once and steps up once; every other copy is refused;
- wrong codes spread over both replicas lock the factor after 5 in total,
  one after another or all at once;
- SMS caps: eight users enrolling one phone number through both replicas at
  once get exactly 5 texts (the per-number hourly cap), counted by a
  Twilio-compatible fake; the resend cooldown holds across replicas;
- one app name, created on both deploy replicas at once, exists once;
- `migrate`, run again and again from one replica's configuration while the
  other replicas serve reads and writes, breaks none of their calls.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from reasons import Reason
from conftest import (
    Msg,
    Replicas,
    RpcError,
    redact,
    replicas,
    run_together,
    SETUP_TICKET,
    secret,
    sign_in,
    step_up,
    totp_code,
    wait_until,
)
from test_sms_enrollment import FakeTwilio
from test_totp_enrollment import a_wrong_code

AUTH = "padlock.auth.v1"
TWO_FACTOR = f"{AUTH}.TwoFactorService"
SUPPORT = f"{AUTH}.SupportService"
DEPLOY = "padlock.deploy.v1"
APPS = f"{DEPLOY}.AppService"
POLICY = f"{DEPLOY}.PolicyService"
STEP = 30
MAX_FAILURES = 5
PER_NUMBER_HOUR = 5
ROUNDS = 4
COPIES = 4  # copies of one request per round, alternating between the replicas


# ---------------------------------------------------------------- helpers


def outcome(result) -> str:
    """"OK", or "CODE REASON" for a refusal; anything else fails the test."""
    if isinstance(result, RpcError):
        return f"{result.code} {result.reason}"
    if isinstance(result, Msg):
        return "OK"
    raise result


def exactly_one_ok(results: list, allowed: set[str]) -> Msg:
    """Exactly one result is OK and every other is one of `allowed`."""
    outcomes = [outcome(r) for r in results]
    assert outcomes.count("OK") == 1, f"expected exactly one success, got {outcomes}"
    assert set(outcomes) - {"OK"} <= allowed, f"unexpected refusals in {outcomes}"
    return next(r for r in results if isinstance(r, Msg))


def on_both(cluster: Replicas, copies: int, method: str, data: dict, token: str) -> list:
    """`copies` identical calls, alternating between the two auth replicas,
    all released at once."""
    grpcs = cluster.auth_grpc
    return run_together(*[
        (lambda g=grpcs[i % 2]: g.attempt(method, data, token=token)) for i in range(copies)
    ])


def start_totp(cluster: Replicas, token: str, replica: int = 0) -> tuple[str, str]:
    started = cluster.auth_grpc[replica].call(f"{TWO_FACTOR}/StartTotpEnrollment", token=token)
    secret(started.get("otpauthUri", ""))
    return started["enrollmentId"], secret(started["secret"])


def user_id(cluster: Replicas, username: str) -> str:
    rows = cluster.postgres.psql(cluster.auth_db, f"SELECT id FROM users WHERE username = '{username}'")
    assert len(rows) == 1, f"{username}: {len(rows)} user rows"
    return rows[0][0]


def audit_counts(cluster: Replicas, username: str) -> collections.Counter:
    """(kind, outcome) -> how many audit events the database holds about the user."""
    rows = cluster.postgres.psql(
        cluster.auth_db,
        f"SELECT kind, outcome, count(*) FROM audit_events WHERE subject = '{user_id(cluster, username)}' "
        "GROUP BY kind, outcome")
    return collections.Counter({(k, o): int(n) for k, o, n in rows})


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def cluster(tmp_path, postgres):
    """Two auth replicas on a fresh database."""
    yield from replicas(tmp_path, postgres)


@pytest.fixture
def twilio():
    fake = FakeTwilio()
    yield fake
    fake.close()


@pytest.fixture
def sms_cluster(tmp_path, postgres, twilio: FakeTwilio):
    """Two auth replicas texting through the fake Twilio. Their clocks are
    moved to half past the hour, so the hourly caps' window cannot turn over
    in the middle of the test."""
    offset = 1800 - int(time.time()) % 3600
    yield from replicas(tmp_path, postgres, auth_args=[*twilio.flags(), f"--clock-offset-secs={offset}"])


@pytest.fixture
def deploy_cluster(tmp_path, postgres):
    """Two auth and two deploy replicas (deploy i trusts auth i)."""
    yield from replicas(tmp_path, postgres, deploys=2)


# ---------------------------------------------------------------- TOTP: single use


def test_the_same_totp_code_sent_to_both_replicas_at_once_succeeds_once(cluster: Replicas):
    for n in range(ROUNDS):
        username = f"ann{n}"
        account = cluster.create_user(username, replica=n % 2)
        token = cluster.sign_in(account, replica=(n + 1) % 2)
        enrollment_id, totp_secret = start_totp(cluster, token, replica=n % 2)
        t0 = int(time.time())

        # The confirmation code, to both replicas at once: one activates the
        # factor; the others find the step used or the factor active.
        confirm = {"enrollmentId": enrollment_id, "code": secret(totp_code(totp_secret, t0))}
        confirmed = exactly_one_ok(
            on_both(cluster, COPIES, f"{TWO_FACTOR}/ConfirmEnrollment", confirm, token),
            {"UNAUTHENTICATED CODE_REUSED", "FAILED_PRECONDITION FACTOR_LOCKED"})
        step_up = secret(confirmed["accessToken"])

        # The next step's code (one step of drift is accepted), likewise.
        verify = {"code": secret(totp_code(totp_secret, t0 + STEP))}
        exactly_one_ok(on_both(cluster, COPIES, f"{TWO_FACTOR}/Verify", verify, step_up),
                       {"UNAUTHENTICATED CODE_REUSED"})

        # Both replicas see one active factor, not locked: reuse is no failure.
        for grpc in cluster.auth_grpc:
            factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=step_up)
            assert (factor["state"], factor["locked"], factor["attemptsLeft"]) == \
                ("FACTOR_STATE_ACTIVE", False, MAX_FAILURES), f"{username}: {factor}"
        counts = audit_counts(cluster, username)
        assert counts[("enrollment_confirmed", "ok")] == 1, f"{username}: {counts}"
        assert counts[("verify", "ok")] == 1, f"{username}: {counts}"


# ---------------------------------------------------------------- TOTP: lockout


def enrolled(cluster: Replicas, username: str) -> tuple[str, str, int]:
    """A user with an active TOTP factor: (step-up token, secret, time of the
    last code used)."""
    account = cluster.create_user(username)
    token = cluster.sign_in(account)
    enrollment_id, totp_secret = start_totp(cluster, token)
    t0 = int(time.time())
    resp = cluster.auth_grpc[1].call(f"{TWO_FACTOR}/ConfirmEnrollment",
                                     {"enrollmentId": enrollment_id, "code": totp_code(totp_secret, t0)},
                                     token=token)
    return secret(resp["accessToken"]), totp_secret, t0


def assert_locked(cluster: Replicas, token: str, totp_secret: str, t0: int):
    """The right, unused code is refused on both replicas, and both report the lock."""
    right = {"code": secret(totp_code(totp_secret, t0 + STEP))}
    for grpc in cluster.auth_grpc:
        err = grpc.call_error(f"{TWO_FACTOR}/Verify", right, token=token)
        assert (err.code, err.reason) == ("RESOURCE_EXHAUSTED", Reason.TOO_MANY_ATTEMPTS), str(err)
        assert err.retry_delay_s and err.retry_delay_s > 0, f"no RetryInfo in {err}"
        factor = grpc.call(f"{TWO_FACTOR}/GetFactor", token=token)
        assert factor["locked"] is True, f"{grpc.addr} does not report the lock: {factor}"


def test_wrong_codes_spread_over_both_replicas_lock_after_five_in_total(cluster: Replicas):
    token, totp_secret, t0 = enrolled(cluster, "walt")
    wrong = {"code": a_wrong_code(totp_secret)}
    left = []
    for n in range(MAX_FAILURES - 1):
        err = cluster.auth_grpc[n % 2].call_error(f"{TWO_FACTOR}/Verify", wrong, token=token)
        assert (err.code, err.reason) == ("UNAUTHENTICATED", Reason.CODE_INVALID), str(err)
        left.append(int(err.error_info["metadata"]["attempts_left"]))
    assert left == [4, 3, 2, 1], "each replica counts the other's failures"
    err = cluster.auth_grpc[(MAX_FAILURES - 1) % 2].call_error(f"{TWO_FACTOR}/Verify", wrong, token=token)
    assert (err.code, err.reason) == ("RESOURCE_EXHAUSTED", Reason.TOO_MANY_ATTEMPTS), \
        f"the fifth wrong code in total should lock: {err}"
    assert_locked(cluster, token, totp_secret, t0)
    assert audit_counts(cluster, "walt")[("lockout", "ok")] == 1


def test_parallel_guesses_on_both_replicas_get_five_tries_in_total(cluster: Replicas):
    token, totp_secret, t0 = enrolled(cluster, "gus")
    wrong = {"code": a_wrong_code(totp_secret)}
    results = on_both(cluster, 2 * MAX_FAILURES + 2, f"{TWO_FACTOR}/Verify", wrong, token)
    outcomes = [outcome(r) for r in results]
    invalid = [r for r in results if outcome(r) == "UNAUTHENTICATED CODE_INVALID"]
    # Four wrong codes are told how many tries are left (4..1, each once);
    # the fifth locks, and every later guess meets the lock.
    assert sorted(int(r.error_info["metadata"]["attempts_left"]) for r in invalid) == [1, 2, 3, 4], outcomes
    assert outcomes.count("RESOURCE_EXHAUSTED TOO_MANY_ATTEMPTS") == len(results) - 4, outcomes
    assert_locked(cluster, token, totp_secret, t0)
    rows = cluster.postgres.psql(cluster.auth_db,
                                 f"SELECT failed_attempts, lockouts FROM factors "
                                 f"WHERE user_id = '{user_id(cluster, 'gus')}'")
    assert rows == [[str(MAX_FAILURES), "1"]], f"failed_attempts, lockouts: {rows}"
    assert audit_counts(cluster, "gus")[("lockout", "ok")] == 1


# ---------------------------------------------------------------- SMS limits


SHARED_PHONE = "+31612000111"
OTHER_PHONE = "+31612000222"


def test_sms_caps_hold_across_both_replicas(sms_cluster: Replicas, twilio: FakeTwilio):
    cluster = sms_cluster
    users = 8
    tokens = []
    for n in range(users):
        account = cluster.create_user(f"sam{n}", replica=n % 2)
        tokens.append(cluster.sign_in(account, replica=n % 2))
    grpcs = cluster.auth_grpc
    results = run_together(*[
        (lambda n=n: grpcs[n % 2].attempt(f"{TWO_FACTOR}/StartSmsEnrollment",
                                          {"phoneNumber": SHARED_PHONE}, token=tokens[n]))
        for n in range(users)
    ])
    outcomes = [outcome(r) for r in results]
    to_shared = [m for m in twilio.messages if m.to == SHARED_PHONE]
    assert len(to_shared) == PER_NUMBER_HOUR, \
        f"{len(to_shared)} texts to one number through two replicas; outcomes {outcomes}"
    assert outcomes.count("OK") == PER_NUMBER_HOUR, outcomes
    assert outcomes.count("RESOURCE_EXHAUSTED SMS_LIMIT_REACHED") == users - PER_NUMBER_HOUR, outcomes
    assert not twilio.problems, f"requests Twilio would refuse: {twilio.problems}"

    # Only that number is capped: another user's number still gets a text.
    other = cluster.create_user("sam-other")
    other_token = cluster.sign_in(other, replica=1)
    grpcs[1].call(f"{TWO_FACTOR}/StartSmsEnrollment", {"phoneNumber": OTHER_PHONE}, token=other_token)
    assert [m.to for m in twilio.messages].count(OTHER_PHONE) == 1

    # The resend cooldown started on one replica holds on the other, and a
    # resend sent to both at once sends nothing.
    first_ok = outcomes.index("OK")
    sent = len(twilio.messages)
    on = grpcs[(first_ok + 1) % 2]
    err = on.call_error(f"{TWO_FACTOR}/SendSmsCode", token=tokens[first_ok])
    assert (err.code, err.reason) == ("RESOURCE_EXHAUSTED", Reason.SMS_RESEND_TOO_SOON), str(err)
    results = run_together(*[
        (lambda g=g: g.attempt(f"{TWO_FACTOR}/SendSmsCode", token=other_token)) for g in (*grpcs, *grpcs)
    ])
    assert {outcome(r) for r in results} == {"RESOURCE_EXHAUSTED SMS_RESEND_TOO_SOON"}, \
        [outcome(r) for r in results]
    assert len(twilio.messages) == sent, "a refused resend sent a text"


# ---------------------------------------------------------------- deploy


def test_one_app_name_created_on_both_deploy_replicas_at_once_exists_once(deploy_cluster: Replicas):
    cluster = deploy_cluster
    olga = cluster.provision("olga", ["operator"])
    cluster.create_user("tina")
    # A token from either auth replica is good on either deploy replica:
    # they sign with the same key. olga steps up in a session on each
    # (CreateApp needs a fresh second factor).
    tokens = []
    for i in (0, 1):
        sign_in(cluster.auth_grpc[i], olga)
        step_up(cluster.auth_grpc[i], olga)
        tokens.append(olga.token)
    d = cluster.deploy_grpc
    for n in range(ROUNDS):
        name = f"Shop {n}"
        results = run_together(*[
            (lambda i=i: d[i % 2].attempt(f"{APPS}/CreateApp", {"name": name, "technicalContact": "tina"},
                                          token=tokens[(i // 2) % 2]))
            for i in range(COPIES)
        ])
        app = exactly_one_ok(results, {"ALREADY_EXISTS APP_NAME_TAKEN"})
        # The other replica sees it at once.
        for grpc in d:
            got = grpc.call(f"{APPS}/GetApp", {"appId": app["id"]}, token=tokens[0])
            assert (got["name"], got["technicalContact"]) == (name, "tina")
    rows = cluster.postgres.psql(cluster.deploy_db, "SELECT name, count(*) FROM apps GROUP BY name ORDER BY name")
    assert rows == [[f"Shop {n}", "1"] for n in range(ROUNDS)], rows


# ---------------------------------------------------------------- migrations


def test_migrating_from_one_replica_while_the_others_serve_breaks_nothing(deploy_cluster: Replicas):
    cluster = deploy_cluster
    olga = cluster.provision("olga", ["operator"])
    cluster.create_user("tina")
    cluster.sign_in(olga, replica=1)
    step_up(cluster.auth_grpc[1], olga)
    token = olga.token
    auth, deploy = cluster.auth_grpc[1], cluster.deploy_grpc[1]

    stop = threading.Event()
    calls: list[tuple[str, str, float]] = []  # (method, outcome, when it started)

    def serve_load():
        """Reads and writes on the replicas that do not migrate, until told
        to stop (at most 400 rounds)."""
        for n in range(400):
            if stop.is_set():
                return
            for what, call in (
                ("CreateUser", lambda: auth.attempt(f"{SUPPORT}/CreateUser",
                                                    {"username": f"load{n}", "password": "p" * 16,
                                                     "ticket": SETUP_TICKET},
                                                    token=cluster.support_token)),
                ("GetFactor", lambda: auth.attempt(f"{TWO_FACTOR}/GetFactor", token=token)),
                ("CreateApp", lambda: deploy.attempt(f"{APPS}/CreateApp",
                                                     {"name": f"App {n}", "technicalContact": "tina"},
                                                     token=token)),
                ("ListApps", lambda: deploy.attempt(f"{APPS}/ListApps", token=token)),
            ):
                started = time.monotonic()
                try:
                    calls.append((what, outcome(call()), started))
                except Exception as e:  # noqa: BLE001 - reported below
                    calls.append((what, f"no status: {redact(str(e))[:300]}", started))

    load = threading.Thread(target=serve_load, daemon=True)
    load.start()
    try:
        wait_until(lambda: len(calls) >= 4, timeout=30, what="the load under way")
        migrations = []
        began = time.monotonic()
        # A no-op migration takes tens of milliseconds: rounds until a dozen
        # calls ran beside them (at least 3 rounds, at most 200).
        for n in range(200):
            if n >= 3 and sum(1 for c in calls if c[2] >= began) >= 12:
                break
            # Each service's migration three times at once, from the first
            # replicas' configuration (the way a rollout Job would run it).
            migrations += run_together(
                *[(lambda: cluster.auths[0].cli("--database-url", cluster.auth_db, "migrate"))] * 3,
                *[(lambda: cluster.deploys[0].cli("--database-url", cluster.deploy_db, "migrate"))] * 3,
            )
        ended = time.monotonic()
    finally:
        stop.set()
        load.join(timeout=120)
    assert not load.is_alive()
    for out in migrations:
        assert not isinstance(out, BaseException), out
        assert out.returncode == 0, redact(f"migrate exited {out.returncode}: {out.stderr[-800:]}")
    during = [c for c in calls if began <= c[2] <= ended]
    assert len(during) >= 8, f"only {len(during)} calls overlapped the migrations"
    failed = [c[:2] for c in calls if c[1] != "OK"]
    assert not failed, f"{len(failed)} of {len(calls)} calls failed during migrations: {failed[:10]}"
    # The migrating replicas still serve too.
    cluster.auth_grpc[0].call(f"{TWO_FACTOR}/GetFactor", token=token)
    cluster.deploy_grpc[0].call(f"{APPS}/ListApps", token=token)
