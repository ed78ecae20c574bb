"""A package's way to production, end to end, as the people involved do it.

One `padlock-auth` and one `padlock-deploy` serve the whole module; the
tests run in file order and build on each other through module fixtures:

- olga, an operator, creates the app "Shop" with tina as its Technical
  Contact, once she has stepped up (with her password only: MFA_REQUIRED,
  action create_app); tina, password only, cannot change the team
  (MFA_REQUIRED, action change_team); stepped up (`step_up`: TOTP with
  oathtool) she adds dev (an external developer) with the Deploy role and
  mia as a plain member, and grants dev TRANSPORT on test and acceptance only;
- dev uploads a package in chunks, deploys it to test and transports it to
  acceptance, all without a second factor;
- tina's transport to production from a password-only session is refused
  with MFA_REQUIRED (and CheckAccess says so without changing anything);
  with her authenticator app it goes through; dev, even with a fresh second
  factor, lacks the production node permission and is no Technical Contact
  (TECHNICAL_CONTACT_REQUIRED for a team change);
- wrong paths (test -> production, a package never in acceptance, also
  deployed straight to production: PACKAGE_NOT_PROMOTED) are
  refused; the step-up window expires (deploy restarted with a shorter
  `--max-age`, and with its clock moved past eight hours), and a refresh
  does not renew it;
- auth rotates its signing key and deploy accepts tokens signed with the new
  key without a restart.

Everything goes through grpcurl against the real binaries; tokens are
checked with PyJWT. Tokens and TOTP secrets never appear in failure output.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import signal
import time
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reasons import Reason
from conftest import (  # noqa: F401 - Person and the sign-in helpers are used by other modules too
    AuthServer,
    DeployServer,
    Grpcurl,
    Msg,
    Person,
    RpcError,
    enroll_totp,
    next_code,
    now,
    parse_timestamp,
    provision,
    refresh,
    secret,
    sign_in,
    step_up,
    totp_code,
    verify_again,
)

AUTH = "padlock.auth.v1"
SESSION = f"{AUTH}.SessionService"
TWO_FACTOR = f"{AUTH}.TwoFactorService"
KEYS = f"{AUTH}.KeyService"

DEPLOY = "padlock.deploy.v1"
APPS = f"{DEPLOY}.AppService"
PACKAGES = f"{DEPLOY}.PackageService"
NODES = f"{DEPLOY}.NodeService"
PERMISSIONS = f"{DEPLOY}.PermissionService"
POLICY = f"{DEPLOY}.PolicyService"
DEPLOY_SERVICES = {APPS, PACKAGES, NODES, PERMISSIONS, POLICY}

TEST, ACCEPTANCE, PRODUCTION = "ENVIRONMENT_TEST", "ENVIRONMENT_ACCEPTANCE", "ENVIRONMENT_PRODUCTION"
ENV_NAMES = {TEST: "test", ACCEPTANCE: "acceptance", PRODUCTION: "production"}
TRANSPORT = "NODE_PERMISSION_TRANSPORT"
EIGHT_HOURS = 8 * 60 * 60
STEP = 30
CLOCK_SLACK_S = 5
CHUNK = 64 * 1024


# ---------------------------------------------------------------- people


def claims_of(token: str) -> dict:
    """The token's claims, read without checking the signature (the auth
    suite checks signatures; here only mfa_at and the key id matter)."""
    return jwt.decode(token, options={"verify_signature": False})


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


# ---------------------------------------------------------------- assertions


def assert_refusal(err: RpcError, code: str, reason: str):
    assert err.code == code, f"expected {code} {reason}, got {err}"
    info = err.error_info
    assert info is not None, f"no google.rpc.ErrorInfo in {err}"
    assert info.get("domain") == "padlock", f"ErrorInfo domain in {err}"
    assert info.get("reason") == reason, f"expected reason {reason}, got {err}"


def assert_padlock_refusal(err: RpcError, code: str, reason: str, *, action: str,
                           environment: str = "production", max_age: int = EIGHT_HOURS):
    """A step-up refusal: the RFC 9470 `insufficient_user_authentication`
    in gRPC form, with exactly the metadata a client needs to step up."""
    assert_refusal(err, code, reason)
    metadata = err.error_info.get("metadata", {})
    assert metadata == {"max_age": str(max_age), "action": action, "environment": environment}, \
        f"ErrorInfo metadata of {err}"


def assert_no_mfa(deployment: Msg):
    assert deployment.get("mfaAt") in (None, ""), f"mfaAt set on an action without a padlock: {deployment}"
    assert deployment.get("mfaMethod", "") == "", f"mfaMethod set on an action without a padlock: {deployment}"


def deployment_ids(deploy: Grpcurl, person: Person, app_id: str) -> list[str]:
    resp = deploy.call(f"{PACKAGES}/ListDeployments", {"appId": app_id}, token=person.token)
    return [d["id"] for d in resp["deployments"]]


def permissions_of(deploy: Grpcurl, person: Person, app_id: str, username: str) -> dict[str, list[str]]:
    resp = deploy.call(f"{PERMISSIONS}/ListNodePermissions", {"appId": app_id}, token=person.token)
    return {e["environment"]: sorted(e["permissions"]) for e in resp["entries"]
            if e["username"] == username and e["permissions"]}


def check_access(deploy: Grpcurl, person: Person, app_id: str, action: str, environment: str) -> Msg:
    return deploy.call(f"{POLICY}/CheckAccess",
                       {"action": action, "appId": app_id, "environment": environment},
                       token=person.token)


# ---------------------------------------------------------------- packages


@dataclass
class Upload:
    version: str
    content: bytes
    sha256: str
    messages: list[dict]


def package_upload(app_id: str, version: str, content: bytes, *, sha256: str | None = None) -> Upload:
    """The metadata message, then the file in CHUNK-sized chunks."""
    digest = hashlib.sha256(content).hexdigest()
    messages = [{"metadata": {"appId": app_id, "version": version, "fileName": f"shop-{version}.mda",
                              "size": len(content), "sha256": sha256 or digest}}]
    messages += [{"chunk": base64.b64encode(content[i:i + CHUNK]).decode()}
                 for i in range(0, len(content), CHUNK)]
    return Upload(version, content, digest, messages)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def people(server: AuthServer) -> dict[str, Person]:
    """Provisioned with the CLI, as an operator would; each signs in."""
    return {username: provision(server, username, roles)
            for username, roles in (("olga", ["operator"]), ("tina", []), ("dev", []), ("mia", []))}


@pytest.fixture(scope="module")
def olga(grpc: Grpcurl, people) -> Person:
    sign_in(grpc, people["olga"])
    return people["olga"]


@pytest.fixture(scope="module")
def tina(grpc: Grpcurl, people) -> Person:
    sign_in(grpc, people["tina"])
    return people["tina"]


@pytest.fixture(scope="module")
def dev(grpc: Grpcurl, people) -> Person:
    sign_in(grpc, people["dev"])
    return people["dev"]


@pytest.fixture(scope="module")
def mia(grpc: Grpcurl, people) -> Person:
    sign_in(grpc, people["mia"])
    return people["mia"]


@pytest.fixture(scope="module")
def olga_stepped_up(grpc: Grpcurl, olga: Person) -> Msg:
    """Creating an app names who reaches its production: olga needs a
    fresh second factor for it."""
    return step_up(grpc, olga)


@pytest.fixture(scope="module")
def shop(deploy: Grpcurl, olga: Person, olga_stepped_up: Msg, tina: Person) -> Msg:
    return deploy.call(f"{APPS}/CreateApp", {"name": "Shop", "technicalContact": tina.username},
                       token=olga.token)


@pytest.fixture(scope="module")
def tina_password_only(grpc: Grpcurl, people) -> Person:
    """tina in a second session (another laptop), signed in with her
    password only: a second factor counts only in the session it was
    verified in."""
    tina = people["tina"]
    other = Person(tina.username, tina.password, tina.roles)
    sign_in(grpc, other)
    return other


@pytest.fixture(scope="module")
def team(deploy: Grpcurl, shop: Msg, tina: Person, tina_stepped_up: Msg, dev: Person, mia: Person) -> dict[str, Msg]:
    """tina, stepped up (a team change is padlocked), adds dev (an external
    developer) with the Deploy role, and mia as a plain member."""
    return {
        who.username: deploy.call(f"{APPS}/AddTeamMember",
                                  {"appId": shop["id"], "username": who.username, "role": role},
                                  token=tina.token)
        for who, role in ((dev, "TEAM_ROLE_DEPLOY"), (mia, "TEAM_ROLE_MEMBER"))
    }


@pytest.fixture(scope="module")
def grants(deploy: Grpcurl, shop: Msg, team, tina: Person, dev: Person) -> dict[str, Msg]:
    """TRANSPORT on test and acceptance; external developers get no more."""
    return {
        env: deploy.call(f"{PERMISSIONS}/GrantNodePermissions",
                         {"appId": shop["id"], "environment": env, "username": dev.username,
                          "permissions": [TRANSPORT]},
                         token=tina.token)
        for env in (TEST, ACCEPTANCE)
    }


@pytest.fixture(scope="module")
def release(shop: Msg) -> Upload:
    # Three full chunks and a short one.
    return package_upload(shop["id"], "1.0.0", secrets.token_bytes(3 * CHUNK + 1234))


@pytest.fixture(scope="module")
def package(deploy: Grpcurl, grants, dev: Person, release: Upload) -> Msg:
    return deploy.call_stream(f"{PACKAGES}/UploadPackage", release.messages, token=dev.token)


@pytest.fixture(scope="module")
def on_test(deploy: Grpcurl, package: Msg, dev: Person) -> Msg:
    return deploy.call(f"{PACKAGES}/DeployPackage", {"packageId": package["id"], "environment": TEST},
                       token=dev.token)


@pytest.fixture(scope="module")
def on_acceptance(deploy: Grpcurl, package: Msg, on_test: Msg, dev: Person) -> Msg:
    return deploy.call(f"{PACKAGES}/TransportPackage",
                       {"packageId": package["id"], "fromEnvironment": TEST, "toEnvironment": ACCEPTANCE},
                       token=dev.token)


@pytest.fixture(scope="module")
def tina_stepped_up(grpc: Grpcurl, tina: Person) -> Msg:
    """tina enrolls an authenticator app (oathtool): her session carries a
    fresh second factor from then on."""
    return step_up(grpc, tina)


@pytest.fixture(scope="module")
def dev_stepped_up(grpc: Grpcurl, dev: Person) -> Msg:
    return enroll_totp(grpc, dev)


def to_production(package_id: str) -> dict:
    return {"packageId": package_id, "fromEnvironment": ACCEPTANCE, "toEnvironment": PRODUCTION}


# ---------------------------------------------------------------- the service


def test_reflection_lists_the_five_deploy_services_and_health(deploy: Grpcurl):
    out = deploy.run(deploy.addr, "list")
    assert out.returncode == 0, f"grpcurl list failed: {out.stderr}"
    services = set(out.stdout.split())
    expected = DEPLOY_SERVICES | {"grpc.health.v1.Health"}
    assert expected <= services, f"missing from `grpcurl list`: {sorted(expected - services)}"


def test_reflection_lists_no_service_that_deploy_does_not_serve(deploy: Grpcurl):
    out = deploy.run(deploy.addr, "list")
    assert out.returncode == 0, f"grpcurl list failed: {out.stderr}"
    foreign = sorted(s for s in out.stdout.split() if s.startswith(f"{AUTH}."))
    assert not foreign, f"deploy advertises services it does not serve: {foreign}"


def test_reflection_describes_the_package_service(deploy: Grpcurl):
    out = deploy.run(deploy.addr, "describe", PACKAGES)
    assert out.returncode == 0, f"grpcurl describe failed: {out.stderr}"
    assert f"{PACKAGES} is a service" in out.stdout
    assert re.search(rf"rpc UploadPackage\s*\(\s*stream\s+\.?{DEPLOY}\.UploadPackageRequest\s*\)", out.stdout), \
        f"UploadPackage is not client streaming in:\n{out.stdout}"
    for rpc in ("ListPackages", "DeployPackage", "TransportPackage", "ListDeployments"):
        assert re.search(rf"rpc {rpc}\s*\(", out.stdout), f"describe shows no rpc {rpc}"


def test_health_check_reports_serving(deploy: Grpcurl):
    assert deploy.call("grpc.health.v1.Health/Check", {"service": ""}).get("status") == "SERVING"


def _forged(token: str) -> str:
    """The real token's header and claims, signed with a key padlock never
    had (same kid, so deploy does not spend its JWKS refresh on it)."""
    header = jwt.get_unverified_header(token)
    return secret(jwt.encode(claims_of(token), Ed25519PrivateKey.generate(), algorithm="EdDSA",
                             headers={"kid": header["kid"]}))


@pytest.mark.parametrize("how", ["no-header", "garbage", "forged-signature"])
def test_calls_without_a_valid_token_are_refused(deploy: Grpcurl, olga: Person, how: str):
    token = {"no-header": None, "garbage": "not-a-token", "forged-signature": None}[how]
    if how == "forged-signature":
        token = _forged(olga.token)
    err = deploy.call_error(f"{APPS}/ListApps", token=token)
    assert_refusal(err, "UNAUTHENTICATED", Reason.TOKEN_INVALID)


# ---------------------------------------------------------------- the app and its team


def test_an_operator_needs_a_second_factor_to_create_an_app(deploy: Grpcurl, olga: Person):
    """Naming an app's Technical Contact decides who reaches its
    production: olga's password alone creates nothing."""
    assert "mfa_at" not in claims_of(olga.token)
    err = deploy.call_error(f"{APPS}/CreateApp", {"name": "Shop", "technicalContact": "olga"}, token=olga.token)
    assert_refusal(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED)
    assert err.error_info.get("metadata") == {"max_age": str(EIGHT_HOURS), "action": "create_app"}, f"{err}"
    assert deploy.call(f"{APPS}/ListApps", token=olga.token)["apps"] == []


def test_an_operator_creates_shop_with_tina_as_technical_contact(
        deploy: Grpcurl, shop: Msg, tina: Person):
    assert shop.get("id"), "no app id"
    assert (shop["name"], shop["technicalContact"]) == ("Shop", "tina")
    assert abs(parse_timestamp(shop["createdAt"]) - now()) <= 60
    assert deploy.call(f"{APPS}/GetApp", {"appId": shop["id"]}, token=tina.token) == shop
    apps = deploy.call(f"{APPS}/ListApps", token=tina.token)["apps"]
    assert [a["id"] for a in apps] == [shop["id"]], f"tina's apps: {apps}"
    members = deploy.call(f"{APPS}/ListTeamMembers", {"appId": shop["id"]}, token=tina.token)["members"]
    assert [(m["username"], m["role"]) for m in members] == [("tina", "TEAM_ROLE_TECHNICAL_CONTACT")]


@pytest.mark.parametrize("who", ["tina", "dev"])
def test_only_operators_create_apps(deploy: Grpcurl, shop: Msg, request, who: str):
    person = request.getfixturevalue(who)
    err = deploy.call_error(f"{APPS}/CreateApp", {"name": f"Shop of {who}", "technicalContact": who},
                            token=person.token)
    assert_refusal(err, "PERMISSION_DENIED", Reason.ROLE_REQUIRED)


def test_a_stranger_sees_nothing_of_the_app(deploy: Grpcurl, shop: Msg, dev: Person):
    err = deploy.call_error(f"{PACKAGES}/ListPackages", {"appId": shop["id"]}, token=dev.token)
    assert_refusal(err, "PERMISSION_DENIED", Reason.NOT_A_MEMBER)
    assert deploy.call(f"{APPS}/ListApps", token=dev.token)["apps"] == []


def test_a_password_only_technical_contact_cannot_change_the_team(
        deploy: Grpcurl, shop: Msg, tina: Person, dev: Person):
    """A team change decides who reaches production, so it is padlocked
    like production itself, on every environment."""
    assert "mfa_at" not in claims_of(tina.token), "tina has not stepped up yet"
    for method, request_ in (
            ("AddTeamMember", {"appId": shop["id"], "username": dev.username, "role": "TEAM_ROLE_DEPLOY"}),
            ("AddTeamMember", {"appId": shop["id"], "username": dev.username, "role": "TEAM_ROLE_TECHNICAL_CONTACT"}),
            ("RemoveTeamMember", {"appId": shop["id"], "username": tina.username})):
        err = deploy.call_error(f"{APPS}/{method}", request_, token=tina.token)
        assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, action="change_team")
    members = deploy.call(f"{APPS}/ListTeamMembers", {"appId": shop["id"]}, token=tina.token)["members"]
    assert [(m["username"], m["role"]) for m in members] == [("tina", "TEAM_ROLE_TECHNICAL_CONTACT")]


def test_tina_adds_dev_with_the_deploy_role(deploy: Grpcurl, shop: Msg, team, tina: Person, dev: Person):
    added = team["dev"]
    assert (added["appId"], added["username"], added["role"]) == (shop["id"], "dev", "TEAM_ROLE_DEPLOY")
    assert abs(parse_timestamp(added["addedAt"]) - now()) <= 60
    members = deploy.call(f"{APPS}/ListTeamMembers", {"appId": shop["id"]}, token=tina.token)["members"]
    assert sorted((m["username"], m["role"]) for m in members) == [
        ("dev", "TEAM_ROLE_DEPLOY"), ("mia", "TEAM_ROLE_MEMBER"), ("tina", "TEAM_ROLE_TECHNICAL_CONTACT")]
    assert [a["id"] for a in deploy.call(f"{APPS}/ListApps", token=dev.token)["apps"]] == [shop["id"]]


def test_only_the_technical_contact_adds_members(deploy: Grpcurl, shop: Msg, team, dev: Person, olga: Person):
    """dev, password only, is asked for a second factor first (the padlock
    comes before the app's checks); stepped up he is still no Technical
    Contact (test_dev_with_a_fresh_second_factor_cannot_change_the_team)."""
    err = deploy.call_error(f"{APPS}/AddTeamMember",
                            {"appId": shop["id"], "username": olga.username, "role": "TEAM_ROLE_DEPLOY"},
                            token=dev.token)
    assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, action="change_team")
    members = deploy.call(f"{APPS}/ListTeamMembers", {"appId": shop["id"]}, token=dev.token)["members"]
    assert "olga" not in {m["username"] for m in members}


# ---------------------------------------------------------------- node permissions


def test_tina_grants_dev_transport_on_test_and_acceptance_only(
        deploy: Grpcurl, shop: Msg, grants, tina: Person):
    for env, resp in grants.items():
        assert (resp["appId"], resp["environment"], resp["username"], resp["permissions"]) == \
               (shop["id"], env, "dev", [TRANSPORT])
    assert permissions_of(deploy, tina, shop["id"], "dev") == {TEST: [TRANSPORT], ACCEPTANCE: [TRANSPORT]}


def _dev_grants_himself_operate(deploy: Grpcurl, shop: Msg, dev: Person, method: str) -> RpcError:
    return deploy.call_error(f"{PERMISSIONS}/{method}",
                             {"appId": shop["id"], "environment": ACCEPTANCE, "username": "dev",
                              "permissions": ["NODE_PERMISSION_OPERATE", TRANSPORT]},
                             token=dev.token)


@pytest.mark.parametrize("method", ["GrantNodePermissions", "RevokeNodePermissions"])
def test_only_the_technical_contact_grants_and_revokes(
        deploy: Grpcurl, shop: Msg, grants, dev: Person, tina: Person, method: str):
    err = _dev_grants_himself_operate(deploy, shop, dev, method)
    assert err.code == "PERMISSION_DENIED", f"expected PERMISSION_DENIED, got {err}"
    assert permissions_of(deploy, tina, shop["id"], "dev") == {TEST: [TRANSPORT], ACCEPTANCE: [TRANSPORT]}


@pytest.mark.parametrize("method", ["GrantNodePermissions", "RevokeNodePermissions"])
def test_a_grant_by_a_non_technical_contact_says_technical_contact_required(
        deploy: Grpcurl, shop: Msg, grants, dev: Person, method: str):
    err = _dev_grants_himself_operate(deploy, shop, dev, method)
    assert_refusal(err, "PERMISSION_DENIED", Reason.TECHNICAL_CONTACT_REQUIRED)


def test_only_deploy_members_hold_node_permissions(deploy: Grpcurl, shop: Msg, team, tina: Person):
    err = deploy.call_error(f"{PERMISSIONS}/GrantNodePermissions",
                            {"appId": shop["id"], "environment": TEST, "username": "mia",
                             "permissions": [TRANSPORT]},
                            token=tina.token)
    assert_refusal(err, "FAILED_PRECONDITION", Reason.DEPLOY_ROLE_REQUIRED)
    assert permissions_of(deploy, tina, shop["id"], "mia") == {}


def test_granting_on_production_carries_a_padlock(
        deploy: Grpcurl, shop: Msg, grants, tina: Person, tina_password_only: Person):
    err = deploy.call_error(f"{PERMISSIONS}/GrantNodePermissions",
                            {"appId": shop["id"], "environment": PRODUCTION, "username": "dev",
                             "permissions": [TRANSPORT]},
                            token=tina_password_only.token)
    assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, action="change_node_permissions")
    assert PRODUCTION not in permissions_of(deploy, tina, shop["id"], "dev")


# ---------------------------------------------------------------- packages


def test_dev_uploads_a_package_in_chunks(deploy: Grpcurl, shop: Msg, package: Msg, release: Upload, dev: Person):
    assert len(release.messages) == 5, "metadata and four chunks"
    assert package.get("id")
    assert (package["appId"], package["version"], package["fileName"]) == (shop["id"], "1.0.0", "shop-1.0.0.mda")
    assert int(package["size"]) == len(release.content)
    assert package["sha256"] == release.sha256
    assert package["uploadedBy"] == "dev"
    assert abs(parse_timestamp(package["uploadedAt"]) - now()) <= 60
    listed = deploy.call(f"{PACKAGES}/ListPackages", {"appId": shop["id"]}, token=dev.token)["packages"]
    assert listed == [package]


def test_a_version_is_uploaded_once(deploy: Grpcurl, shop: Msg, package: Msg, dev: Person):
    again = package_upload(shop["id"], "1.0.0", b"another build of 1.0.0")
    err = deploy.call_stream_error(f"{PACKAGES}/UploadPackage", again.messages, token=dev.token)
    assert_refusal(err, "ALREADY_EXISTS", Reason.PACKAGE_VERSION_EXISTS)


def test_an_upload_whose_sha256_does_not_match_leaves_nothing(
        deploy: Grpcurl, shop: Msg, package: Msg, dev: Person):
    bad = package_upload(shop["id"], "1.0.1", secrets.token_bytes(CHUNK + 1),
                         sha256=hashlib.sha256(b"something else").hexdigest())
    err = deploy.call_stream_error(f"{PACKAGES}/UploadPackage", bad.messages, token=dev.token)
    assert err.code == "INVALID_ARGUMENT", f"expected INVALID_ARGUMENT, got {err}"
    assert any(f.endswith("sha256") for f in err.violated_fields), f"no violation on sha256: {err}"
    listed = deploy.call(f"{PACKAGES}/ListPackages", {"appId": shop["id"]}, token=dev.token)["packages"]
    assert [p["version"] for p in listed] == ["1.0.0"]


def test_a_member_without_the_deploy_role_cannot_upload(deploy: Grpcurl, shop: Msg, team, mia: Person):
    upload = package_upload(shop["id"], "9.9.9", b"mia's build")
    err = deploy.call_stream_error(f"{PACKAGES}/UploadPackage", upload.messages, token=mia.token)
    assert_refusal(err, "PERMISSION_DENIED", Reason.DEPLOY_ROLE_REQUIRED)


# ---------------------------------------------------------------- test and acceptance


def test_dev_deploys_to_test_without_a_second_factor(shop: Msg, package: Msg, on_test: Msg, dev: Person):
    assert "mfa_at" not in claims_of(dev.token), "dev has not stepped up yet"
    assert (on_test["appId"], on_test["packageId"], on_test["packageVersion"]) == \
           (shop["id"], package["id"], "1.0.0")
    assert (on_test["environment"], on_test["fromEnvironment"]) == (TEST, "ENVIRONMENT_UNSPECIFIED")
    assert on_test["deployedBy"] == "dev"
    assert abs(parse_timestamp(on_test["deployedAt"]) - now()) <= 60
    assert_no_mfa(on_test)


def test_dev_transports_it_to_acceptance(package: Msg, on_test: Msg, on_acceptance: Msg):
    assert (on_acceptance["packageId"], on_acceptance["packageVersion"]) == (package["id"], "1.0.0")
    assert (on_acceptance["fromEnvironment"], on_acceptance["environment"]) == (TEST, ACCEPTANCE)
    assert on_acceptance["deployedBy"] == "dev"
    assert on_acceptance["id"] != on_test["id"]
    assert_no_mfa(on_acceptance)


def test_environments_show_what_runs_where(deploy: Grpcurl, shop: Msg, on_acceptance: Msg, tina: Person):
    envs = deploy.call(f"{APPS}/ListEnvironments", {"appId": shop["id"]}, token=tina.token)["environments"]
    assert [e["environment"] for e in envs] == [TEST, ACCEPTANCE, PRODUCTION]
    current = {e["environment"]: (e.get("current") or {}).get("packageVersion") for e in envs}
    assert current == {TEST: "1.0.0", ACCEPTANCE: "1.0.0", PRODUCTION: None}, f"environments: {envs}"
    assert all(e.get("nodeName") for e in envs), "an environment without its node"


# ---------------------------------------------------------------- production


def test_tina_cannot_transport_to_production_without_a_second_factor(
        deploy: Grpcurl, shop: Msg, package: Msg, on_acceptance: Msg, tina: Person, tina_password_only: Person):
    """In a session with her password only (her other session stepped up
    to build the team)."""
    assert "mfa_at" not in claims_of(tina_password_only.token)
    before = deployment_ids(deploy, tina, shop["id"])
    err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(package["id"]),
                            token=tina_password_only.token)
    assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, action="transport_package")
    assert deployment_ids(deploy, tina, shop["id"]) == before, "a refused transport changed the deployments"


def test_check_access_says_the_same_and_changes_nothing(
        deploy: Grpcurl, shop: Msg, on_acceptance: Msg, tina: Person, tina_password_only: Person):
    before = deployment_ids(deploy, tina, shop["id"])
    tina = tina_password_only
    access = check_access(deploy, tina, shop["id"], "ACTION_TRANSPORT_PACKAGE", PRODUCTION)
    assert (access["allowed"], access["reason"], access["padlock"], int(access["maxAgeSeconds"])) == \
           (False, Reason.MFA_REQUIRED, True, EIGHT_HOURS), f"{access}"
    assert access.get("mfaExpiresAt") in (None, ""), "mfaExpiresAt without a second factor"
    # Acceptance carries no padlock: the Technical Contact may transport there now.
    access = check_access(deploy, tina, shop["id"], "ACTION_TRANSPORT_PACKAGE", ACCEPTANCE)
    assert (access["allowed"], access["reason"], access["padlock"], int(access["maxAgeSeconds"])) == \
           (True, "", False, 0), f"{access}"
    assert deployment_ids(deploy, tina, shop["id"]) == before, "CheckAccess changed the deployments"


def test_list_actions_puts_padlocks_on_production_and_on_team_changes(deploy: Grpcurl, tina: Person):
    actions = deploy.call(f"{POLICY}/ListActions", token=tina.token)["actions"]
    table = {(a["action"], a["environment"]): a for a in actions}
    needs = {
        "ACTION_DEPLOY_PACKAGE": TRANSPORT,
        "ACTION_TRANSPORT_PACKAGE": TRANSPORT,
        "ACTION_GET_NODE_DETAILS": "NODE_PERMISSION_OPERATE",
        "ACTION_DOWNLOAD_BACKUP": "NODE_PERMISSION_BACKUPS",
        "ACTION_CHANGE_NODE_PERMISSIONS": "NODE_PERMISSION_UNSPECIFIED",  # the Technical Contact
        "ACTION_CHANGE_TEAM": "NODE_PERMISSION_UNSPECIFIED",  # the Technical Contact
    }
    assert set(table) == {(a, e) for a in needs for e in (TEST, ACCEPTANCE, PRODUCTION)}, \
        f"ListActions rows: {sorted(table)}"
    for (action, env), row in table.items():
        # A team change decides who reaches production: padlocked everywhere.
        padlocked = env == PRODUCTION or action == "ACTION_CHANGE_TEAM"
        assert (row["padlock"], int(row["maxAgeSeconds"])) == (padlocked, EIGHT_HOURS if padlocked else 0), \
            f"{action} on {env}: {row}"
        assert row["permission"] == needs[action], f"{action} on {env}: {row}"


def test_a_garbage_token_on_a_padlocked_action_is_token_invalid(
        deploy: Grpcurl, package: Msg, on_acceptance: Msg):
    err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token="not-a-token")
    assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.TOKEN_INVALID, action="transport_package")


@pytest.mark.parametrize("method", ["DeployPackage", "TransportPackage"])
def test_unauthenticated_callers_learn_nothing_about_packages(deploy: Grpcurl, method: str):
    """The token is checked first (docs/design.md, the step-up rule): without
    one, a package id nobody has must not tell whether the package exists."""
    nobody = "00000000-0000-4000-8000-000000000000"
    request = (to_production(nobody) if method == "TransportPackage"
               else {"packageId": nobody, "environment": PRODUCTION})
    err = deploy.call_error(f"{PACKAGES}/{method}", request)
    assert err.code == "UNAUTHENTICATED", f"expected UNAUTHENTICATED, got {err}"
    assert err.reason == Reason.TOKEN_INVALID, f"expected TOKEN_INVALID, got {err}"


def test_with_totp_tina_transports_to_production(
        deploy: Grpcurl, shop: Msg, package: Msg, on_acceptance: Msg, tina: Person, tina_stepped_up: Msg):
    mfa_at = claims_of(tina.token)["mfa_at"]
    assert int(parse_timestamp(tina_stepped_up["mfaAt"])) == mfa_at
    access = check_access(deploy, tina, shop["id"], "ACTION_TRANSPORT_PACKAGE", PRODUCTION)
    assert (access["allowed"], access["reason"], access["padlock"]) == (True, "", True), f"{access}"
    assert int(parse_timestamp(access["mfaExpiresAt"])) == mfa_at + EIGHT_HOURS

    before = deployment_ids(deploy, tina, shop["id"])
    done = deploy.call(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=tina.token)
    assert (done["packageId"], done["packageVersion"]) == (package["id"], "1.0.0")
    assert (done["fromEnvironment"], done["environment"]) == (ACCEPTANCE, PRODUCTION)
    assert done["deployedBy"] == "tina"
    assert done.get("mfaAt"), f"the transport does not record the second factor: {done}"
    assert int(parse_timestamp(done["mfaAt"])) == mfa_at
    assert done["mfaMethod"] == "totp"

    after = deploy.call(f"{PACKAGES}/ListDeployments", {"appId": shop["id"]}, token=tina.token)["deployments"]
    assert [d["id"] for d in after] == [done["id"], *before], "ListDeployments is not newest first"
    assert after[0] == done
    prod = deploy.call(f"{PACKAGES}/ListDeployments", {"appId": shop["id"], "environment": PRODUCTION},
                       token=tina.token)["deployments"]
    assert [d["id"] for d in prod] == [done["id"]]
    envs = deploy.call(f"{APPS}/ListEnvironments", {"appId": shop["id"]}, token=tina.token)["environments"]
    assert {e["environment"]: (e.get("current") or {}).get("id") for e in envs}[PRODUCTION] == done["id"]


def test_dev_needs_a_second_factor_before_anything_else_on_production(
        deploy: Grpcurl, shop: Msg, package: Msg, on_acceptance: Msg, dev: Person):
    assert "mfa_at" not in claims_of(dev.token)
    err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=dev.token)
    assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_REQUIRED, action="transport_package")


def test_dev_with_a_fresh_second_factor_lacks_the_production_permission(
        deploy: Grpcurl, shop: Msg, package: Msg, on_acceptance: Msg, dev: Person, dev_stepped_up: Msg,
        tina: Person):
    claims = claims_of(dev.token)
    assert abs(claims["mfa_at"] - now()) <= 60, "dev's second factor is not fresh"
    before = deployment_ids(deploy, tina, shop["id"])

    err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=dev.token)
    assert_padlock_refusal(err, "PERMISSION_DENIED", Reason.NODE_PERMISSION_MISSING, action="transport_package")
    err = deploy.call_error(f"{PACKAGES}/DeployPackage", {"packageId": package["id"], "environment": PRODUCTION},
                            token=dev.token)
    assert_padlock_refusal(err, "PERMISSION_DENIED", Reason.NODE_PERMISSION_MISSING, action="deploy_package")
    access = check_access(deploy, dev, shop["id"], "ACTION_TRANSPORT_PACKAGE", PRODUCTION)
    assert (access["allowed"], access["reason"], access["padlock"]) == \
           (False, Reason.NODE_PERMISSION_MISSING, True), f"{access}"
    # On acceptance, where tina granted it, dev may transport.
    access = check_access(deploy, dev, shop["id"], "ACTION_TRANSPORT_PACKAGE", ACCEPTANCE)
    assert (access["allowed"], access["reason"]) == (True, ""), f"{access}"
    assert deployment_ids(deploy, tina, shop["id"]) == before


def test_dev_with_a_fresh_second_factor_cannot_change_the_team(
        deploy: Grpcurl, shop: Msg, team, dev: Person, dev_stepped_up: Msg, tina: Person):
    """An external developer who stepped up is still no Technical Contact:
    he can neither make himself one nor remove tina."""
    before = deploy.call(f"{APPS}/ListTeamMembers", {"appId": shop["id"]}, token=tina.token)["members"]
    for method, request_ in (
            ("AddTeamMember", {"appId": shop["id"], "username": dev.username, "role": "TEAM_ROLE_TECHNICAL_CONTACT"}),
            ("RemoveTeamMember", {"appId": shop["id"], "username": tina.username})):
        err = deploy.call_error(f"{APPS}/{method}", request_, token=dev.token)
        assert_padlock_refusal(err, "PERMISSION_DENIED", Reason.TECHNICAL_CONTACT_REQUIRED, action="change_team")
    assert deploy.call(f"{APPS}/ListTeamMembers", {"appId": shop["id"]}, token=tina.token)["members"] == before


def test_test_to_production_skips_acceptance_and_is_refused(
        deploy: Grpcurl, shop: Msg, package: Msg, tina_stepped_up: Msg, tina: Person):
    before = deployment_ids(deploy, tina, shop["id"])
    err = deploy.call_error(f"{PACKAGES}/TransportPackage",
                            {"packageId": package["id"], "fromEnvironment": TEST, "toEnvironment": PRODUCTION},
                            token=tina.token)
    assert err.code == "INVALID_ARGUMENT", f"expected INVALID_ARGUMENT, got {err}"
    assert err.violated_fields == ["to_environment"], f"field violations of {err}"
    assert deployment_ids(deploy, tina, shop["id"]) == before


def test_a_package_never_in_acceptance_cannot_go_to_production(
        deploy: Grpcurl, shop: Msg, package: Msg, on_acceptance: Msg, dev: Person, tina: Person,
        tina_stepped_up: Msg):
    newer = deploy.call_stream(f"{PACKAGES}/UploadPackage",
                               package_upload(shop["id"], "1.1.0", secrets.token_bytes(1000)).messages,
                               token=dev.token)
    deploy.call(f"{PACKAGES}/DeployPackage", {"packageId": newer["id"], "environment": TEST}, token=dev.token)
    before = deployment_ids(deploy, tina, shop["id"])
    err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(newer["id"]), token=tina.token)
    assert_refusal(err, "FAILED_PRECONDITION", Reason.PACKAGE_NOT_DEPLOYED_IN_SOURCE)
    # Nor by deploying it there directly: production only takes a package
    # that ran on acceptance.
    err = deploy.call_error(f"{PACKAGES}/DeployPackage", {"packageId": newer["id"], "environment": PRODUCTION},
                            token=tina.token)
    assert_refusal(err, "FAILED_PRECONDITION", Reason.PACKAGE_NOT_PROMOTED)
    assert err.error_info["metadata"] == {"environment": "production", "required_environment": "acceptance"}, \
        f"{err}"
    assert deployment_ids(deploy, tina, shop["id"]) == before


# ---------------------------------------------------------------- the step-up window


def _old_enough(person: Person, seconds: int) -> int:
    """Wait (briefly, only if needed) until the person's mfa_at is at least
    `seconds` old; return mfa_at."""
    mfa_at = claims_of(person.token)["mfa_at"]
    time.sleep(max(0.0, mfa_at + seconds - now()))
    return mfa_at


def test_a_per_action_max_age_overrides_the_window(
        deploy: Grpcurl, deploy_server: DeployServer, grpc: Grpcurl, shop: Msg, package: Msg,
        on_acceptance: Msg, tina: Person, tina_stepped_up: Msg):
    window = 5
    mfa_at = _old_enough(tina, window + 1)
    before = deployment_ids(deploy, tina, shop["id"])
    deploy_server.restart("--max-age", f"transport_package={window}")
    try:
        assert deployment_ids(deploy, tina, shop["id"]) == before, "a restart lost deployments"
        rows = {(a["action"], a["environment"]): a
                for a in deploy.call(f"{POLICY}/ListActions", token=tina.token)["actions"]}
        assert int(rows[("ACTION_TRANSPORT_PACKAGE", PRODUCTION)]["maxAgeSeconds"]) == window
        assert int(rows[("ACTION_DEPLOY_PACKAGE", PRODUCTION)]["maxAgeSeconds"]) == EIGHT_HOURS

        err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=tina.token)
        assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_EXPIRED, action="transport_package", max_age=window)
        access = check_access(deploy, tina, shop["id"], "ACTION_TRANSPORT_PACKAGE", PRODUCTION)
        assert (access["allowed"], access["reason"], int(access["maxAgeSeconds"])) == \
               (False, Reason.MFA_EXPIRED, window), f"{access}"
        assert int(parse_timestamp(access["mfaExpiresAt"])) == mfa_at + window

        # A refresh carries mfa_at over; it does not renew the second factor.
        refreshed = refresh(grpc, tina)
        assert int(parse_timestamp(refreshed["mfaAt"])) == mfa_at
        assert claims_of(tina.token)["mfa_at"] == mfa_at
        err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=tina.token)
        assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_EXPIRED, action="transport_package", max_age=window)

        # Other actions keep the eight hours.
        access = check_access(deploy, tina, shop["id"], "ACTION_DEPLOY_PACKAGE", PRODUCTION)
        assert (access["allowed"], access["reason"], int(access["maxAgeSeconds"])) == \
               (True, "", EIGHT_HOURS), f"{access}"
        assert deployment_ids(deploy, tina, shop["id"]) == before

        # A new verification does renew it.
        stepped = verify_again(grpc, tina)
        new_mfa_at = int(parse_timestamp(stepped["mfaAt"]))
        assert new_mfa_at > mfa_at and claims_of(tina.token)["mfa_at"] == new_mfa_at
        done = deploy.call(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=tina.token)
        assert (done["environment"], done["fromEnvironment"], done["deployedBy"]) == (PRODUCTION, ACCEPTANCE, "tina")
        assert int(parse_timestamp(done["mfaAt"])) == new_mfa_at
        assert deployment_ids(deploy, tina, shop["id"]) == [done["id"], *before]
    finally:
        deploy_server.restart()


# ---------------------------------------------------------------- key rotation


def _jwks_kids(grpc: Grpcurl) -> list[str]:
    return [k["kid"] for k in grpc.call(f"{KEYS}/GetJwks")["keys"]]


def test_deploy_accepts_tokens_signed_with_a_rotated_key_without_a_restart(
        server: AuthServer, grpc: Grpcurl, deploy: Grpcurl, deploy_server: DeployServer, shop: Msg,
        tina: Person, tina_stepped_up: Msg):
    old_token, old_kid = tina.token, kid_of(tina.token)
    # deploy has the current keys cached.
    deploy.call(f"{APPS}/ListApps", token=old_token)
    kids_before = _jwks_kids(grpc)
    assert kids_before[0] == old_kid, "the token is not signed with the current key"
    deploy_pid = deploy_server.proc.pid

    rotated = server.cli("keys", "rotate")
    assert rotated.returncode == 0, redact(f"keys rotate exited {rotated.returncode}: {rotated.stderr[-500:]}")
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (kids := _jwks_kids(grpc))[0] == old_kid and time.monotonic() < deadline:
        time.sleep(0.1)
    new_kid = kids[0]
    assert new_kid != old_kid, "padlock-auth did not load the new key on SIGHUP within 10 s"
    assert old_kid in kids, "the previous key left the JWKS at once"

    fresh = Person(tina.username, tina.password, tina.roles)
    sign_in(grpc, fresh)
    assert kid_of(fresh.token) == new_kid, "a new sign-in is not signed with the new key"
    assert kid_of(fresh.token) != old_kid
    apps = deploy.call(f"{APPS}/ListApps", token=fresh.token)["apps"]
    assert [a["id"] for a in apps] == [shop["id"]]

    # A refresh of the stepped-up session: new key, mfa_at carried over,
    # good for a padlocked action on the same running deploy.
    mfa_at = claims_of(tina.token)["mfa_at"]
    refresh(grpc, tina)
    assert kid_of(tina.token) == new_kid
    assert claims_of(tina.token)["mfa_at"] == mfa_at
    access = check_access(deploy, tina, shop["id"], "ACTION_TRANSPORT_PACKAGE", PRODUCTION)
    assert (access["allowed"], access["reason"]) == (True, ""), f"{access}"

    # Tokens signed with the previous key stay good until they expire.
    assert [a["id"] for a in deploy.call(f"{APPS}/ListApps", token=old_token)["apps"]] == [shop["id"]]
    assert deploy_server.proc.pid == deploy_pid and deploy_server.proc.poll() is None, \
        "padlock-deploy was restarted"


# ------------------------------------------------- last: it moves the clocks


def test_after_eight_hours_the_second_factor_expires(
        deploy: Grpcurl, deploy_server: DeployServer, grpc: Grpcurl, server, shop: Msg, package: Msg,
        on_acceptance: Msg, tina: Person, tina_stepped_up: Msg):
    """Both services restart with their clocks moved to 8 h + 1 s after
    tina's second factor (`--clock-offset-secs`), as if a working day had
    passed: her session refreshes to a valid token whose mfa_at no longer
    counts, and only a new verification lets the transport through."""
    mfa_at = claims_of(tina.token)["mfa_at"]
    offset = mfa_at + EIGHT_HOURS + 1 - int(now())
    before = deployment_ids(deploy, tina, shop["id"])
    server.restart("--clock-offset-secs", str(offset))
    deploy_server.restart("--clock-offset-secs", str(offset))
    try:
        refreshed = refresh(grpc, tina)
        assert int(parse_timestamp(refreshed["mfaAt"])) == mfa_at, "Refresh changed mfa_at"
        err = deploy.call_error(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=tina.token)
        assert_padlock_refusal(err, "UNAUTHENTICATED", Reason.MFA_EXPIRED, action="transport_package")
        access = check_access(deploy, tina, shop["id"], "ACTION_TRANSPORT_PACKAGE", PRODUCTION)
        assert (access["allowed"], access["reason"]) == (False, Reason.MFA_EXPIRED), f"{access}"
        assert deployment_ids(deploy, tina, shop["id"]) == before

        # The phone shows the code of the (shifted) present.
        at = int(now()) + offset
        stepped = grpc.call(f"{TWO_FACTOR}/Verify", {"code": totp_code(tina.totp_secret, at)}, token=tina.token)
        tina.token = secret(stepped["accessToken"])
        new_mfa_at = int(parse_timestamp(stepped["mfaAt"]))
        assert new_mfa_at >= mfa_at + EIGHT_HOURS
        done = deploy.call(f"{PACKAGES}/TransportPackage", to_production(package["id"]), token=tina.token)
        assert (done["environment"], done["deployedBy"]) == (PRODUCTION, "tina")
        assert int(parse_timestamp(done["mfaAt"])) == new_mfa_at
    finally:
        # Back to the real present. tina's last TOTP step now lies eight
        # hours ahead, so this test runs last in the module.
        server.restart()
        deploy_server.restart()
