"""The security holes closed on main, tried the way an attacker would, with
grpcurl against the real binaries, on SQLite and on PostgreSQL (a cluster of
the module's own): each attempt gets the secure answer (gRPC status and
`google.rpc.ErrorInfo` reason and metadata), and nothing changed or was
written: the team, users, factors, deployments and node permissions are read
back from the databases themselves (sqlite3, psql), and the audit trail has no
`ok` record for a refused change.

1. Team changes and app creation are padlocked: a Technical Contact with her
   password only cannot promote an external developer to Technical Contact,
   remove a member or demote the other Technical Contact (MFA_REQUIRED,
   action change_team); the developer, even stepped up, then reaches neither
   the transport to production, nor production's node details, nor its
   backup (NODE_PERMISSION_MISSING), which the stepped-up Technical Contact
   does; an operator with her password only creates no app (MFA_REQUIRED,
   action create_app).
3. Support is padlocked: a password-only support user neither resets a
   factor nor creates a user (MFA_REQUIRED, max_age 3600); stepped up, he
   still cannot mint a support or operator user (ROLE_NOT_GRANTABLE); a
   legitimate reset is shown to the user (GetFactor resetBy, resetTicket)
   and in ListAuditEvents with its ticket.
   A second factor past its window (both services restarted with their
   clocks moved past eight hours, sessions refreshed there) opens none of
   these padlocks: MFA_EXPIRED for change_team, create_app and support.
4. DeployPackage follows the promotion order (PACKAGE_NOT_PROMOTED): a
   package never on test or acceptance is not deployed to production.
6. One transaction per change under the app's lock: two stepped-up
   Technical Contacts demoting (or removing) each other at the same moment
   leave exactly one; a removal (or demotion) racing a production grant for
   the same member never leaves a non-deploy member with permissions.

Every method that `grpcurl list` and `describe` show on both services has
its rule in docs/rules.md.

Last, SIGKILL during writes: a stream of deploy changes (grants, revokes,
team changes, uploads, deployments, transports) from several threads, and
of auth changes (CreateUser, ResetFactor), killed mid-stream round after
round and started again on the same data: no change without its audit
record and no audit record without its change (replayed from the records
and compared with the tables), and `audit verify` reports the chain intact.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import itertools
import json
import re
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reasons import Reason
from conftest import (
    REPO_ROOT,
    RPC_TIMEOUT_S,
    AuthServer,
    DeployServer,
    Grpcurl,
    Msg,
    Person,
    Postgres,
    RpcError,
    RpcFailed,
    provision,
    refresh,
    run_together,
    sign_in,
    step_up,
    wait_until,
    watched,
)

AUTH = "padlock.auth.v1"
TWO_FACTOR = f"{AUTH}.TwoFactorService"
SUPPORT = f"{AUTH}.SupportService"
DEPLOY = "padlock.deploy.v1"
APPS = f"{DEPLOY}.AppService"
PACKAGES = f"{DEPLOY}.PackageService"
NODES = f"{DEPLOY}.NodeService"
PERMISSIONS = f"{DEPLOY}.PermissionService"

TEST, ACCEPTANCE, PRODUCTION = "ENVIRONMENT_TEST", "ENVIRONMENT_ACCEPTANCE", "ENVIRONMENT_PRODUCTION"
ENV_OF = {TEST: "test", ACCEPTANCE: "acceptance", PRODUCTION: "production"}
TC, DEPLOY_ROLE, MEMBER = "TEAM_ROLE_TECHNICAL_CONTACT", "TEAM_ROLE_DEPLOY", "TEAM_ROLE_MEMBER"
ROLE_OF = {TC: "technical_contact", DEPLOY_ROLE: "deploy", MEMBER: "member"}
TRANSPORT, OPERATE, BACKUPS = "NODE_PERMISSION_TRANSPORT", "NODE_PERMISSION_OPERATE", "NODE_PERMISSION_BACKUPS"
EIGHT_HOURS = 8 * 60 * 60
SUPPORT_MAX_AGE = 60 * 60
TICKET = "CHG0070001"
RACE_ROUNDS = 4
KILL_ROUNDS = 3


# ---------------------------------------------------------------- the databases


def q(value: str) -> str:
    """An SQL string literal (the values are the test's own)."""
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Engine:
    name: str
    postgres: Postgres | None = None
    auth_url: str = ""
    deploy_url: str = ""

    def db_args(self, url: str) -> list[str]:
        return ["--database-url", url] if url else []


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def engine(request) -> Engine:
    if request.param == "sqlite":
        return Engine("sqlite")
    pg: Postgres = request.getfixturevalue("postgres")
    return Engine("postgres", pg, pg.create_database("holes_auth"), pg.create_database("holes_deploy"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine: Engine):
    yield from watched(AuthServer(tmp_path_factory.mktemp(f"auth-{engine.name}"),
                                  engine.db_args(engine.auth_url)))


@pytest.fixture(scope="module")
def deploy_server(tmp_path_factory, engine: Engine, server: AuthServer):
    yield from watched(DeployServer(tmp_path_factory.mktemp(f"deploy-{engine.name}"), server,
                                    engine.db_args(engine.deploy_url)))


@dataclass
class Stack:
    engine: Engine
    auth: AuthServer
    deploy: DeployServer
    grpc: Grpcurl
    deployg: Grpcurl

    def _rows(self, url: str, path: Path, sql: str) -> list[list[str]]:
        if self.engine.postgres:
            return self.engine.postgres.psql(url, sql)
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return [["" if v is None else str(v) for v in row] for row in con.execute(sql)]
        finally:
            con.close()

    def auth_rows(self, sql: str) -> list[list[str]]:
        return self._rows(self.engine.auth_url, self.auth.data_dir / "auth.db", sql)

    def deploy_rows(self, sql: str) -> list[list[str]]:
        return self._rows(self.engine.deploy_url, self.deploy.data_dir / "deploy.db", sql)

    # What the deploy database holds about an app.

    def team(self, app_id: str) -> dict[str, str]:
        return dict(self.deploy_rows(f"SELECT username, role FROM team_members WHERE app_id = {q(app_id)}"))

    def grants(self, app_id: str) -> set[tuple[str, str, str]]:
        """(username, environment, permission) of every node permission."""
        return {tuple(r) for r in self.deploy_rows(
            f"SELECT username, environment, permission FROM node_permissions WHERE app_id = {q(app_id)}")}

    def deployments(self, app_id: str) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.deploy_rows(
            f"SELECT package_id, environment FROM deployments WHERE app_id = {q(app_id)} ORDER BY id")]

    def ok_records(self, app_id: str | None = None, actions: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        """(id, action, environment, actor, detail) of the deploy trail's ok records."""
        where = ["outcome = 'ok'"]
        if app_id:
            where.append(f"app_id = {q(app_id)}")
        if actions:
            where.append(f"action IN ({', '.join(q(a) for a in actions)})")
        return [tuple(r) for r in self.deploy_rows(
            f"SELECT id, action, coalesce(environment, ''), actor, detail FROM audit_events "
            f"WHERE {' AND '.join(where)} ORDER BY id")]

    # What the auth database holds.

    def users(self) -> dict[str, str]:
        return dict(self.auth_rows("SELECT username, roles FROM users"))

    def auth_ok_records(self, kind: str) -> list[tuple[str, ...]]:
        """(id, actor, subject, detail) of the auth trail's ok records of `kind`."""
        return [tuple(r) for r in self.auth_rows(
            f"SELECT id, coalesce(actor, ''), coalesce(subject, ''), detail FROM audit_events "
            f"WHERE outcome = 'ok' AND kind = {q(kind)} ORDER BY id")]

    def factor_row(self, username: str) -> list[list[str]]:
        return self.auth_rows(
            "SELECT f.method, f.state, f.activated_at, f.failed_attempts FROM factors f "
            f"JOIN users u ON u.id = f.user_id WHERE u.username = {q(username)}")


@pytest.fixture(scope="module")
def stack(engine, server, deploy_server, grpc, deploy) -> Stack:
    return Stack(engine, server, deploy_server, grpc, deploy)


# ---------------------------------------------------------------- people and Shop


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, Person]:
    """Provisioned with the CLI on the engine's database (the only way to
    grant operator and support); nobody has signed in yet."""
    cli = stack.engine.db_args(stack.engine.auth_url)
    return {username: provision(stack.auth, username, roles, *cli) for username, roles in (
        ("olga", ["operator"]), ("sam", ["support"]), ("tina", []), ("tom", []), ("dev", []),
        ("eve", []), ("alice", []))}


def password_only(stack: Stack, person: Person) -> Person:
    """A new session of `person`, signed in with the password alone (a
    second factor counts only in the session that verified it)."""
    other = Person(person.username, person.password, person.roles)
    sign_in(stack.grpc, other)
    return other


@pytest.fixture(scope="module")
def shop(stack: Stack, people) -> dict:
    """olga (stepped up) creates Shop with tina as Technical Contact; tina
    (stepped up) makes tom a second Technical Contact and adds dev, an
    external developer, with the Deploy role and TRANSPORT on test and
    acceptance; dev uploads 1.0.0 and moves it to acceptance."""
    olga, tina, tom, dev = (people[n] for n in ("olga", "tina", "tom", "dev"))
    for person in (olga, tina, tom, dev):
        step_up(stack.grpc, person)
    d = stack.deployg
    app = d.call(f"{APPS}/CreateApp", {"name": f"Shop {stack.engine.name}", "technicalContact": "tina"},
                 token=olga.token)
    for username, role in (("tom", TC), ("dev", DEPLOY_ROLE)):
        d.call(f"{APPS}/AddTeamMember", {"appId": app["id"], "username": username, "role": role}, token=tina.token)
    for env in (TEST, ACCEPTANCE):
        d.call(f"{PERMISSIONS}/GrantNodePermissions",
               {"appId": app["id"], "environment": env, "username": "dev", "permissions": [TRANSPORT]},
               token=tina.token)
    package = upload(d, dev, app["id"], "1.0.0")
    d.call(f"{PACKAGES}/DeployPackage", {"packageId": package["id"], "environment": TEST}, token=dev.token)
    d.call(f"{PACKAGES}/TransportPackage",
           {"packageId": package["id"], "fromEnvironment": TEST, "toEnvironment": ACCEPTANCE}, token=dev.token)
    return {"app_id": app["id"], "package_id": package["id"]}


def upload(d: Grpcurl, person: Person, app_id: str, version: str, size: int = 2000) -> Msg:
    content = hashlib.sha256(version.encode()).digest() * (size // 32)
    messages = [{"metadata": {"appId": app_id, "version": version, "fileName": f"shop-{version}.mda",
                              "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}},
                {"chunk": base64.b64encode(content).decode()}]
    return d.call_stream(f"{PACKAGES}/UploadPackage", messages, token=person.token)


# ---------------------------------------------------------------- assertions


def assert_refused(err: RpcError, code: str, reason: str, metadata: dict | None = None):
    assert (err.code, err.reason) == (code, reason), f"expected {code} {reason}, got {err}"
    assert err.error_info.get("domain") == "padlock", f"{err}"
    if metadata is not None:
        assert err.error_info.get("metadata") == metadata, f"ErrorInfo metadata of {err}"


def change_team_metadata() -> dict:
    return {"max_age": str(EIGHT_HOURS), "action": "change_team", "environment": "production"}


def outcome(result) -> str:
    if isinstance(result, RpcError):
        return f"{result.code} {result.reason}"
    if isinstance(result, Msg):
        return "OK"
    raise result


def download_backup(d: Grpcurl, person: Person, app_id: str, env: str) -> list[dict] | RpcError:
    """The server-streamed backup as its chunks, or the refusal."""
    out = d._invoke(f"{NODES}/DownloadBackup", {"appId": app_id, "environment": env}, person.token, [])
    if out.returncode != 0:
        return d._refused(f"{NODES}/DownloadBackup", out)
    decoder, text, chunks, i = json.JSONDecoder(), out.stdout, [], 0
    while text[i:].strip():
        while text[i].isspace():
            i += 1
        chunk, i = decoder.raw_decode(text, i)
        chunks.append(chunk)
    return chunks


# ---------------------------------------------------------------- 1. team changes, app creation


def test_a_password_only_technical_contact_cannot_change_the_team(stack: Stack, people, shop):
    app_id = shop["app_id"]
    tina = password_only(stack, people["tina"])
    team, grants, records = stack.team(app_id), stack.grants(app_id), stack.ok_records(app_id)
    assert team == {"tina": "technical_contact", "tom": "technical_contact", "dev": "deploy"}
    for method, request_ in (
            ("AddTeamMember", {"appId": app_id, "username": "dev", "role": TC}),  # promote
            ("AddTeamMember", {"appId": app_id, "username": "eve", "role": TC}),  # add
            ("AddTeamMember", {"appId": app_id, "username": "tom", "role": MEMBER}),  # demote
            ("RemoveTeamMember", {"appId": app_id, "username": "tom"}),
            ("RemoveTeamMember", {"appId": app_id, "username": "dev"})):
        err = stack.deployg.call_error(f"{APPS}/{method}", request_, token=tina.token)
        assert_refused(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, change_team_metadata())
    members = stack.deployg.call(f"{APPS}/ListTeamMembers", {"appId": app_id}, token=tina.token)["members"]
    assert {m["username"]: ROLE_OF[m["role"]] for m in members} == team
    assert (stack.team(app_id), stack.grants(app_id)) == (team, grants), "a refused team change changed the team"
    assert stack.ok_records(app_id) == records, "an ok record for a refused change"


def test_the_developer_stays_out_of_production(stack: Stack, people, shop):
    """dev, stepped up, was not made Technical Contact: production stays
    closed to him, and nothing is written for his tries but refusals."""
    app_id, dev = shop["app_id"], people["dev"]
    deployments, records = stack.deployments(app_id), stack.ok_records(app_id)
    d = stack.deployg
    err = d.call_error(f"{PACKAGES}/TransportPackage",
                       {"packageId": shop["package_id"], "fromEnvironment": ACCEPTANCE,
                        "toEnvironment": PRODUCTION}, token=dev.token)
    assert_refused(err, "PERMISSION_DENIED", Reason.NODE_PERMISSION_MISSING)
    err = d.call_error(f"{NODES}/GetNodeDetails", {"appId": app_id, "environment": PRODUCTION}, token=dev.token)
    assert_refused(err, "PERMISSION_DENIED", Reason.NODE_PERMISSION_MISSING)
    err = download_backup(d, dev, app_id, PRODUCTION)
    assert isinstance(err, RpcError), "dev downloaded production's backup"
    assert_refused(err, "PERMISSION_DENIED", Reason.NODE_PERMISSION_MISSING)
    assert stack.deployments(app_id) == deployments
    assert stack.ok_records(app_id) == records


def test_a_stepped_up_technical_contact_reaches_production_and_changes_the_team(stack: Stack, people, shop):
    app_id, tina = shop["app_id"], people["tina"]
    d = stack.deployg
    done = d.call(f"{PACKAGES}/TransportPackage",
                  {"packageId": shop["package_id"], "fromEnvironment": ACCEPTANCE, "toEnvironment": PRODUCTION},
                  token=tina.token)
    assert (done["environment"], done["deployedBy"]) == (PRODUCTION, "tina")
    node = d.call(f"{NODES}/GetNodeDetails", {"appId": app_id, "environment": PRODUCTION}, token=tina.token)
    assert node["packageVersion"] == "1.0.0"
    chunks = download_backup(d, tina, app_id, PRODUCTION)
    assert isinstance(chunks, list) and chunks, f"tina's backup download: {chunks}"
    added = d.call(f"{APPS}/AddTeamMember", {"appId": app_id, "username": "eve", "role": MEMBER}, token=tina.token)
    assert added["role"] == MEMBER
    assert stack.team(app_id)["eve"] == "member"
    d.call(f"{APPS}/RemoveTeamMember", {"appId": app_id, "username": "eve"}, token=tina.token)
    assert "eve" not in stack.team(app_id)
    actions = [(r[1], r[4]) for r in stack.ok_records(app_id)[-2:]]
    assert actions == [("add_team_member", "username=eve role=member"),
                       ("remove_team_member", "username=eve role=member")], actions


def test_a_password_only_operator_creates_no_app(stack: Stack, people):
    olga = password_only(stack, people["olga"])
    name = f"Side door {stack.engine.name}"
    records = stack.ok_records(actions=("create_app",))
    err = stack.deployg.call_error(f"{APPS}/CreateApp", {"name": name, "technicalContact": "eve"}, token=olga.token)
    assert_refused(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, {"max_age": str(EIGHT_HOURS), "action": "create_app"})
    assert stack.deploy_rows(f"SELECT id FROM apps WHERE name = {q(name)}") == []
    assert stack.ok_records(actions=("create_app",)) == records
    eve = password_only(stack, people["eve"])
    assert stack.deployg.call(f"{APPS}/ListApps", token=eve.token)["apps"] == []


# ---------------------------------------------------------------- 3. support


@pytest.fixture(scope="module")
def alice_enrolled(stack: Stack, people) -> Person:
    alice = people["alice"]
    step_up(stack.grpc, alice)
    return alice


def test_a_password_only_support_user_changes_nobody(stack: Stack, people, alice_enrolled: Person):
    sam = password_only(stack, people["sam"])
    users, factor = stack.users(), stack.factor_row("alice")
    resets, created = stack.auth_ok_records("factor_reset"), stack.auth_ok_records("user_created")
    assert factor and factor[0][1] == "active", f"alice's factor: {factor}"
    for method, request_, action in (
            ("ResetFactor", {"username": "alice", "ticket": TICKET, "reason": "lost phone"}, "support_reset_factor"),
            ("CreateUser", {"username": "mallory", "password": "m" * 16, "ticket": TICKET}, "support_create_user"),
            ("CreateUser", {"username": "mallory", "password": "m" * 16, "ticket": TICKET, "roles": ["support"]},
             "support_create_user")):
        err = stack.grpc.call_error(f"{SUPPORT}/{method}", request_, token=sam.token)
        assert_refused(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, {"max_age": str(SUPPORT_MAX_AGE), "action": action})
    assert (stack.users(), stack.factor_row("alice")) == (users, factor), "a password-only support call changed"
    assert (stack.auth_ok_records("factor_reset"), stack.auth_ok_records("user_created")) == (resets, created)
    got = stack.grpc.call(f"{TWO_FACTOR}/GetFactor", token=alice_enrolled.token)
    assert (got["state"], got.get("resetBy", "")) == ("FACTOR_STATE_ACTIVE", ""), f"{got}"


@pytest.mark.parametrize("roles", [["support"], ["operator"], ["deploy", "support"], ["operator", "support"]])
def test_stepped_up_support_cannot_mint_support_or_operators(stack: Stack, people, roles: list[str]):
    sam = people["sam"]
    if not sam.totp_secret:
        step_up(stack.grpc, sam)
    users, created = stack.users(), stack.auth_ok_records("user_created")
    name = "mint-" + "-".join(roles)
    err = stack.grpc.call_error(f"{SUPPORT}/CreateUser",
                                {"username": name, "password": "m" * 16, "ticket": TICKET, "roles": roles},
                                token=sam.token)
    assert_refused(err, "PERMISSION_DENIED", Reason.ROLE_NOT_GRANTABLE)
    assert stack.users() == users and name not in stack.users()
    assert stack.auth_ok_records("user_created") == created
    # He can create a plain user, under a ticket the trail keeps.
    plain = stack.grpc.call(f"{SUPPORT}/CreateUser",
                            {"username": f"plain-{len(users)}", "password": "p" * 16, "ticket": TICKET},
                            token=sam.token)
    assert plain["roles"] == []
    assert stack.auth_ok_records("user_created")[-1][3].startswith(f"ticket={TICKET} ")


def test_a_legit_reset_is_shown_to_the_user_and_in_the_audit_trail(stack: Stack, people, alice_enrolled: Person):
    sam, alice = people["sam"], alice_enrolled
    if not sam.totp_secret:
        step_up(stack.grpc, sam)
    assert stack.grpc.call(f"{SUPPORT}/ResetFactor",
                           {"username": "alice", "ticket": TICKET, "reason": "lost phone"}, token=sam.token) == {}
    factor = stack.grpc.call(f"{TWO_FACTOR}/GetFactor", token=alice.token)
    assert (factor["state"], factor["resetBy"], factor["resetTicket"]) == ("FACTOR_STATE_NONE", "sam", TICKET), \
        f"{factor}"
    assert factor.get("resetAt"), f"{factor}"
    events = stack.grpc.call(f"{SUPPORT}/ListAuditEvents", {"username": "alice", "kind": "factor_reset"},
                             token=sam.token)["events"]
    assert [(e["actor"], e["subject"], e["outcome"]) for e in events] == [("sam", "alice", "ok")], f"{events}"
    assert events[0]["detail"].startswith(f"ticket={TICKET} "), f"{events}"


# ---------------------------------------------------------------- 4. promotion order


def test_deploy_package_follows_the_promotion_order(stack: Stack, people, shop):
    app_id, tina = shop["app_id"], people["tina"]
    d = stack.deployg
    package = upload(d, tina, app_id, "2.0.0")
    before = d.call(f"{PACKAGES}/ListDeployments", {"appId": app_id}, token=tina.token)["deployments"]
    for env, required in ((PRODUCTION, "acceptance"), (ACCEPTANCE, "test")):
        err = d.call_error(f"{PACKAGES}/DeployPackage", {"packageId": package["id"], "environment": env},
                           token=tina.token)
        assert_refused(err, "FAILED_PRECONDITION", Reason.PACKAGE_NOT_PROMOTED,
                       {"environment": ENV_OF[env], "required_environment": required})
    assert d.call(f"{PACKAGES}/ListDeployments", {"appId": app_id}, token=tina.token)["deployments"] == before
    assert [e for p, e in stack.deployments(app_id) if p == package["id"]] == []
    assert not [r for r in stack.ok_records(app_id, ("deploy_package", "transport_package"))
                if f"package={package['id']} " in r[4]]

    # In order, it goes through: test, then acceptance, then production.
    d.call(f"{PACKAGES}/DeployPackage", {"packageId": package["id"], "environment": TEST}, token=tina.token)
    d.call(f"{PACKAGES}/TransportPackage",
           {"packageId": package["id"], "fromEnvironment": TEST, "toEnvironment": ACCEPTANCE}, token=tina.token)
    done = d.call(f"{PACKAGES}/DeployPackage", {"packageId": package["id"], "environment": PRODUCTION},
                  token=tina.token)
    assert (done["environment"], done["packageVersion"]) == (PRODUCTION, "2.0.0")
    assert [e for p, e in stack.deployments(app_id) if p == package["id"]] == ["test", "acceptance", "production"]


# ---------------------------------------------------------------- a second factor too old


def test_a_second_factor_too_old_opens_no_padlock(stack: Stack, people, shop):
    """Both services restarted with their clocks just past eight hours
    after the latest step-up (past create_app's and change_team's eight
    hours and support's one): sessions refreshed there carry their mfa_at
    over, and it no longer counts (MFA_EXPIRED); nothing changes. The
    refreshes go to copies of the people, so their own tokens never come
    from the shifted clock."""
    app_id = shop["app_id"]
    sam = people["sam"]
    if not sam.totp_secret:
        step_up(stack.grpc, sam)
    names = ("tina", "olga", "sam")
    mfa_at = max(int(jwt_claims(people[n].token)["mfa_at"]) for n in names)
    offset = mfa_at + EIGHT_HOURS + 1 - int(time.time())
    auth_args, deploy_args = (stack.engine.db_args(stack.engine.auth_url),
                              stack.engine.db_args(stack.engine.deploy_url))
    team, users, apps = stack.team(app_id), stack.users(), stack.deploy_rows("SELECT id FROM apps")
    stack.auth.restart(*auth_args, "--clock-offset-secs", str(offset))
    stack.deploy.restart(*deploy_args, "--clock-offset-secs", str(offset))
    try:
        later = {}
        for n in names:
            later[n] = Person(n, people[n].password, people[n].roles, session_token=people[n].session_token)
            refresh(stack.grpc, later[n])
            assert jwt_claims(later[n].token)["mfa_at"] == jwt_claims(people[n].token)["mfa_at"]
        err = stack.deployg.call_error(f"{APPS}/AddTeamMember", {"appId": app_id, "username": "dev", "role": TC},
                                       token=later["tina"].token)
        assert_refused(err, "UNAUTHENTICATED", Reason.MFA_EXPIRED, change_team_metadata())
        err = stack.deployg.call_error(f"{APPS}/RemoveTeamMember", {"appId": app_id, "username": "tom"},
                                       token=later["tina"].token)
        assert_refused(err, "UNAUTHENTICATED", Reason.MFA_EXPIRED, change_team_metadata())
        err = stack.deployg.call_error(f"{APPS}/CreateApp", {"name": "Late", "technicalContact": "eve"},
                                       token=later["olga"].token)
        assert_refused(err, "UNAUTHENTICATED", Reason.MFA_EXPIRED, {"max_age": str(EIGHT_HOURS), "action": "create_app"})
        for method, request_, action in (
                ("ResetFactor", {"username": "dev", "ticket": TICKET, "reason": "late"}, "support_reset_factor"),
                ("CreateUser", {"username": "late", "password": "l" * 16, "ticket": TICKET}, "support_create_user")):
            err = stack.grpc.call_error(f"{SUPPORT}/{method}", request_, token=later["sam"].token)
            assert_refused(err, "UNAUTHENTICATED", Reason.MFA_EXPIRED, {"max_age": str(SUPPORT_MAX_AGE), "action": action})
        assert (stack.team(app_id), stack.users(), stack.deploy_rows("SELECT id FROM apps")) == (team, users, apps)
    finally:
        stack.auth.restart(*auth_args)
        stack.deploy.restart(*deploy_args)
    # Back in the present, the people's own sessions still count.
    stack.grpc.call(f"{SUPPORT}/GetUserFactor", {"username": "dev"}, token=sam.token)
    stack.deployg.call(f"{APPS}/ListTeamMembers", {"appId": app_id}, token=people["tina"].token)


def jwt_claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))


# ---------------------------------------------------------------- 6. races


def test_two_technical_contacts_demoting_each_other_at_once_leave_exactly_one(stack: Stack, people, shop):
    app_id, tina, tom = shop["app_id"], people["tina"], people["tom"]
    d = stack.deployg
    seen = collections.Counter()
    for n in range(RACE_ROUNDS):
        remove = n % 2 == 1
        if remove:
            calls = [(p, f"{APPS}/RemoveTeamMember", {"appId": app_id, "username": other.username})
                     for p, other in ((tina, tom), (tom, tina))]
        else:
            calls = [(p, f"{APPS}/AddTeamMember", {"appId": app_id, "username": other.username, "role": DEPLOY_ROLE})
                     for p, other in ((tina, tom), (tom, tina))]
        results = run_together(*[(lambda p=p, m=m, r=r: d.attempt(m, r, token=p.token)) for p, m, r in calls])
        outcomes = [outcome(r) for r in results]
        seen.update(outcomes)
        assert outcomes.count("OK") == 1, f"round {n}: {outcomes}"
        assert set(outcomes) - {"OK"} <= {"PERMISSION_DENIED TECHNICAL_CONTACT_REQUIRED",
                                          "FAILED_PRECONDITION LAST_TECHNICAL_CONTACT"}, f"round {n}: {outcomes}"
        team = stack.team(app_id)
        contacts = sorted(u for u, r in team.items() if r == "technical_contact")
        assert len(contacts) == 1, f"round {n}: Technical Contacts {contacts} ({outcomes})"
        listed = d.call(f"{APPS}/ListTeamMembers", {"appId": app_id}, token=tina.token if contacts == ["tina"]
                        else tom.token)["members"]
        assert [m["username"] for m in listed if m["role"] == TC] == contacts
        # The survivor makes the other a Technical Contact again.
        survivor = tina if contacts == ["tina"] else tom
        other = tom if survivor is tina else tina
        d.call(f"{APPS}/AddTeamMember", {"appId": app_id, "username": other.username, "role": TC},
               token=survivor.token)
    print(f"demotion race on {stack.engine.name}: {dict(seen)}")
    assert sorted(u for u, r in stack.team(app_id).items() if r == "technical_contact") == ["tina", "tom"]


def test_a_removal_racing_a_production_grant_leaves_no_non_member_with_permissions(stack: Stack, people, shop):
    app_id, tina, tom = shop["app_id"], people["tina"], people["tom"]
    d = stack.deployg
    seen = collections.Counter()
    for n in range(RACE_ROUNDS):
        d.call(f"{APPS}/AddTeamMember", {"appId": app_id, "username": "eve", "role": DEPLOY_ROLE}, token=tina.token)
        demote = n % 2 == 1
        change = ((f"{APPS}/AddTeamMember", {"appId": app_id, "username": "eve", "role": MEMBER}) if demote
                  else (f"{APPS}/RemoveTeamMember", {"appId": app_id, "username": "eve"}))
        grant = (f"{PERMISSIONS}/GrantNodePermissions",
                 {"appId": app_id, "environment": PRODUCTION, "username": "eve", "permissions": [TRANSPORT, OPERATE]})
        results = run_together(lambda: d.attempt(*change, token=tina.token), lambda: d.attempt(*grant, token=tom.token))
        changed, granted = (outcome(r) for r in results)
        seen[(changed, granted)] += 1
        assert changed == "OK", f"round {n}: the team change answered {changed}"
        assert granted in {"OK", "NOT_FOUND MEMBER_NOT_FOUND", "FAILED_PRECONDITION DEPLOY_ROLE_REQUIRED"}, \
            f"round {n}: the grant answered {granted}"
        held = [g for g in stack.grants(app_id) if g[0] == "eve"]
        assert held == [], f"round {n}: eve ({'member' if demote else 'gone'}) holds {held}"
        entries = d.call(f"{PERMISSIONS}/ListNodePermissions", {"appId": app_id}, token=tina.token)["entries"]
        assert not [e for e in entries if e["username"] == "eve" and e["permissions"]], f"round {n}: {entries}"
        assert stack.team(app_id).get("eve") == ("member" if demote else None)
    d.call(f"{APPS}/RemoveTeamMember", {"appId": app_id, "username": "eve"}, token=tina.token)
    print(f"removal/grant race on {stack.engine.name}: {dict(seen)}")


# ---------------------------------------------------------------- the rule table


def test_every_served_method_has_a_rule_in_docs(stack: Stack):
    rules = (REPO_ROOT / "docs" / "rules.md").read_text()
    missing, methods = [], 0
    for g in (stack.grpc, stack.deployg):
        listed = g.run(g.addr, "list")
        assert listed.returncode == 0, listed.stderr
        for service in listed.stdout.split():
            if service.startswith("grpc.reflection."):
                continue  # reflection: open to anyone, changes nothing (rules.md says so)
            described = g.run(g.addr, "describe", service)
            assert described.returncode == 0, described.stderr
            for name in re.findall(r"^\s*rpc (\w+)\s*\(", described.stdout, re.MULTILINE):
                methods += 1
                if f"`{service}/{name}`" not in rules:
                    missing.append(f"{service}/{name}")
    assert methods >= 30, f"only {methods} methods described"
    assert not missing, f"served but without a rule in docs/rules.md: {missing}"


# ---------------------------------------------------------------- SIGKILL during writes


@dataclass
class Stream:
    """Calls made by worker threads until told to stop: (label, outcome)."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def ok(self) -> int:
        return sum(1 for _, o in self.calls if o == "OK")

    def run(self, work):
        """`work(n)` returns (label, call); a call that gets no status (the
        server died under it) is "NO_STATUS"."""
        for n in itertools.count():
            if self.stopping.is_set() or n >= 400:
                return
            label, call = work(n)
            try:
                result = outcome(call())
            except RpcFailed:
                result = "NO_STATUS"
            self.calls.append((label, result))


def kill_rounds(stack: Stack, srv, revive_args: list[str], workers: list, stream: Stream) -> list:
    """KILL_ROUNDS times: the workers write, the server gets SIGKILL in the
    middle of it and starts again on the same data."""
    history = []
    for n in range(KILL_ROUNDS):
        stream.stopping.clear()
        start = stream.ok()
        threads = [threading.Thread(target=stream.run, args=(w,), daemon=True) for w in workers]
        for t in threads:
            t.start()
        wait_until(lambda: stream.ok() - start >= 12 + 4 * n, timeout=60, what=f"writes before kill {n}",
                   every=0.01)
        stream.stopping.set()  # no new calls to a dead server (grpcurl would dial it for 5 s)
        assert srv.kill() == -signal.SIGKILL
        for t in threads:
            t.join(timeout=RPC_TIMEOUT_S + 10)
        assert not any(t.is_alive() for t in threads)
        srv.revive(*revive_args)
        history.append(stream.ok() - start)
    return history


def audit_verify(srv, url: str) -> str:
    out = srv.cli(*(["--database-url", url] if url else []), "audit", "verify")
    assert out.returncode == 0, f"{srv.name} audit verify exited {out.returncode}: {out.stdout} {out.stderr[-800:]}"
    assert re.search(r"audit chain intact: \d+ records", out.stdout), out.stdout
    return out.stdout.strip()


def replay_team_and_grants(records) -> tuple[dict, set]:
    """The team and node permissions that the ok records, in order, make."""
    team: dict[str, str] = {}
    grants: set[tuple[str, str, str]] = set()
    drop = lambda user: {g for g in grants if g[0] != user}  # noqa: E731
    for _, action, env, _, detail in records:
        fields = dict(part.split("=", 1) for part in detail.split() if "=" in part)
        if action == "create_app":
            team[fields["technical_contact"]] = "technical_contact"
        elif action == "add_team_member":
            role = fields["role"].split("->")[-1]
            team[fields["username"]] = role
            if role not in ("technical_contact", "deploy"):
                grants = drop(fields["username"])
        elif action == "remove_team_member":
            team.pop(fields["username"], None)
            grants = drop(fields["username"])
        elif action == "change_node_permissions":
            verb = detail.split()[0]
            perms = {(fields["username"], env, p) for p in fields["permissions"].split(",") if p}
            grants = grants | perms if verb == "grant" else grants - perms
    return team, grants


def test_sigkill_during_deploy_writes_leaves_every_change_with_its_audit_record(stack: Stack, people, shop):
    app_id, tina, tom, dev = shop["app_id"], people["tina"], people["tom"], people["dev"]
    d = stack.deployg
    envs = [TEST, ACCEPTANCE, PRODUCTION]
    packages = [shop["package_id"]]
    stream = Stream()

    def grants(n):
        verb = "GrantNodePermissions" if n % 2 == 0 else "RevokeNodePermissions"
        req = {"appId": app_id, "environment": envs[(n // 2) % 3], "username": "dev",
               "permissions": [[OPERATE], [BACKUPS, OPERATE], [OPERATE]][n % 3]}
        return verb, lambda: d.attempt(f"{PERMISSIONS}/{verb}", req, token=tina.token)

    def team(n):
        name = f"temp{n % 3}"
        if n % 3 == 2:
            return "RemoveTeamMember", lambda: d.attempt(f"{APPS}/RemoveTeamMember",
                                                         {"appId": app_id, "username": "temp0"}, token=tom.token)
        role = [DEPLOY_ROLE, MEMBER][n % 2]
        return "AddTeamMember", lambda: d.attempt(f"{APPS}/AddTeamMember",
                                                  {"appId": app_id, "username": name, "role": role}, token=tom.token)

    def deployments(n):
        version = f"3.{len(stream.calls)}.{n}"
        if n % 3 == 0:
            def up():
                result = d._refused("UploadPackage", out) if (out := d._invoke_raw(
                    f"{PACKAGES}/UploadPackage", upload_body(app_id, version), tina.token, [])).returncode \
                    else Msg(json.loads(out.stdout))
                if isinstance(result, Msg):
                    packages.append(result["id"])
                return result
            return "UploadPackage", up
        package = packages[-1]
        if n % 3 == 1:
            return "DeployPackage", lambda: d.attempt(f"{PACKAGES}/DeployPackage",
                                                      {"packageId": package, "environment": TEST}, token=dev.token)
        return "TransportPackage", lambda: d.attempt(
            f"{PACKAGES}/TransportPackage",
            {"packageId": package, "fromEnvironment": TEST, "toEnvironment": ACCEPTANCE}, token=dev.token)

    deployments_before = len(stack.deployments(app_id))
    history = kill_rounds(stack, stack.deploy, stack.engine.db_args(stack.engine.deploy_url),
                          [grants, team, deployments], stream)
    outcomes = collections.Counter(o for _, o in stream.calls)
    # Every deployment answered OK is there (durable), and none came of nothing.
    answered = collections.Counter(o for label, o in stream.calls if label in ("DeployPackage", "TransportPackage"))
    added = len(stack.deployments(app_id)) - deployments_before
    assert answered["OK"] <= added <= answered["OK"] + answered["NO_STATUS"] + answered["UNAVAILABLE None"], \
        f"{added} deployments added for {dict(answered)}"
    print(f"deploy SIGKILL on {stack.engine.name}: OK per round {history}, outcomes {dict(outcomes)}")
    assert set(outcomes) <= {"OK", "NO_STATUS", "UNAVAILABLE UNAVAILABLE", "UNAVAILABLE None", "NOT_FOUND MEMBER_NOT_FOUND",
                             "FAILED_PRECONDITION PACKAGE_NOT_DEPLOYED_IN_SOURCE", "CANCELLED None",
                             "UNKNOWN None"}, dict(outcomes)

    # Every deployment has its ok record (package and environment), and every record its deployment.
    rows = collections.Counter(stack.deployments(app_id))
    records = stack.ok_records(app_id)
    claimed = collections.Counter(
        (re.search(r"package=(\S+)", detail).group(1), env) for _, action, env, _, detail in records
        if action in ("deploy_package", "transport_package"))
    assert rows == claimed, f"deployments without a record: {rows - claimed}; records without one: {claimed - rows}"
    # Every package has its upload record and the other way round.
    stored = collections.Counter(r[0] for r in stack.deploy_rows(
        f"SELECT version FROM packages WHERE app_id = {q(app_id)}"))
    uploaded = collections.Counter(re.search(r"version=(\S+)", r[4]).group(1) for r in records
                                   if r[1] == "upload_package")
    assert stored == uploaded, f"packages without a record: {stored - uploaded}; records without one: {uploaded - stored}"
    # The team and the node permissions are what the records, replayed in order, make.
    team_now, grants_now = replay_team_and_grants(records)
    assert stack.team(app_id) == team_now, f"team {stack.team(app_id)} but the records make {team_now}"
    assert stack.grants(app_id) == grants_now, \
        f"grants without a record: {stack.grants(app_id) - grants_now}; records without one: " \
        f"{grants_now - stack.grants(app_id)}"
    print(audit_verify(stack.deploy, stack.engine.deploy_url))
    # The revived service serves on.
    d.call(f"{APPS}/ListTeamMembers", {"appId": app_id}, token=tina.token)


def upload_body(app_id: str, version: str) -> str:
    content = version.encode() * 100
    messages = [{"metadata": {"appId": app_id, "version": version, "fileName": f"shop-{version}.mda",
                              "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}},
                {"chunk": base64.b64encode(content).decode()}]
    return "\n".join(json.dumps(m) for m in messages) + "\n"


def test_sigkill_during_auth_writes_leaves_every_change_with_its_audit_record(stack: Stack, people):
    """Last in the module: auth comes back on another port, which the
    running deploy does not follow."""
    sam = people["sam"]
    if not sam.totp_secret:
        step_up(stack.grpc, sam)
    g = stack.grpc
    stream = Stream()
    reset_asked: collections.Counter = collections.Counter()
    reset_ok: collections.Counter = collections.Counter()
    serial = itertools.count()

    created_ok: list[str] = []

    def creates(n):
        name = f"k{next(serial)}"

        def create():
            result = g.attempt(f"{SUPPORT}/CreateUser", {"username": name, "password": "k" * 16, "ticket": TICKET},
                               token=sam.token)
            if isinstance(result, Msg):
                created_ok.append(name)
            return result
        return "CreateUser", create

    def resets(n):
        target = ["alice", "eve", "dev"][n % 3]

        def reset():
            reset_asked[target] += 1
            result = g.attempt(f"{SUPPORT}/ResetFactor", {"username": target, "ticket": f"INC-{n}",
                                                          "reason": "kill test"}, token=sam.token)
            if isinstance(result, Msg):
                reset_ok[target] += 1
            return result
        return "ResetFactor", reset

    history = kill_rounds(stack, stack.auth, stack.engine.db_args(stack.engine.auth_url),
                          [creates, creates, resets], stream)
    outcomes = collections.Counter(o for _, o in stream.calls)
    print(f"auth SIGKILL on {stack.engine.name}: OK per round {history}, outcomes {dict(outcomes)}")
    assert set(outcomes) <= {"OK", "NO_STATUS", "UNAVAILABLE UNAVAILABLE", "UNAVAILABLE None", "CANCELLED None", "UNKNOWN None"}, \
        dict(outcomes)

    # Every user has exactly one user_created record, and every record its user.
    ids = {r[0]: r[1] for r in stack.auth_rows("SELECT id, username FROM users")}
    created = collections.Counter(r[2] for r in stack.auth_ok_records("user_created"))
    assert set(created) == set(ids), f"users without a record: {set(ids) - set(created)}; " \
                                     f"records without a user: {set(created) - set(ids)}"
    assert set(created.values()) == {1}, f"users created twice: {[ids[k] for k, v in created.items() if v > 1]}"
    lost = set(created_ok) - set(ids.values())
    assert not lost, f"CreateUser answered OK but the user is gone: {sorted(lost)}"
    # Every reset answered OK has its record; none was recorded that was not asked for.
    by_name = {v: k for k, v in ids.items()}
    recorded = collections.Counter(ids[r[2]] for r in stack.auth_ok_records("factor_reset")
                                   if r[3].startswith("ticket=INC-"))
    for target in reset_asked:
        assert reset_ok[target] <= recorded[target] <= reset_asked[target], \
            f"{target}: {reset_ok[target]} OK, {recorded[target]} recorded, {reset_asked[target]} asked"
    assert set(recorded) <= set(reset_asked) and set(reset_asked) <= set(by_name)
    print(audit_verify(stack.auth, stack.engine.auth_url))
    g.call(f"{SUPPORT}/GetUserFactor", {"username": "alice"}, token=sam.token)
