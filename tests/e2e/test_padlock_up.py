"""`padlock up`, end to end: the one command that runs the whole system.

One `padlock up` on port 0 serves the module's first tests; they read the
addresses, the web UI's URL and the demo passwords from its banner, the way
a person would, check that the gateway serves the UI and signs tina in, and
check the seeded demo with grpcurl: tina sees Shop with its package on
test, dev may transport it to acceptance, production is refused without a
second factor, and the banner's own grpcurl commands (run through bash)
walk through the step-up to production. Then SIGTERM must stop everything,
a second start on the same data must not seed again, the operator commands
a `--no-seed` banner prints (a user, an app, a team member, on the server)
must work against the running services, a dying service must take padlock
down with it, and missing service binaries must be named.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from reasons import Reason
from conftest import (
    Grpcurl,
    bin_dir,
    child_env,
    grpcurl_path,
    now,
    redact,
    secret,
    totp_code,
)

AUTH = "padlock.auth.v1"
DEPLOY = "padlock.deploy.v1"
BANNER_TIMEOUT_S = 120  # seeding hashes three passwords (argon2id)
STOP_TIMEOUT_S = 40
LAST_LINE = "Stop with Ctrl-C"
DEMO_USERS = ("ops", "tina", "dev")


def padlock_binary() -> Path:
    path = bin_dir() / "padlock"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: run `cargo build --bins` or set PADLOCK_BIN_DIR")
    return path


def children_of(pid: int) -> dict[int, str]:
    """The live child processes of `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pid: int, cmdline: str) -> bool:
    """Whether `pid` still runs the same program (a reused pid does not count)."""
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() == cmdline
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")
    except OSError:
        return False


@dataclass
class Banner:
    text: str
    auth: str
    deploy: str
    gateway: str
    open_url: str | None
    passwords: dict[str, str]
    package_id: str | None


def parse_banner(text: str) -> Banner:
    auth = re.search(r"^\s+padlock-auth\s+(\S+)$", text, re.M)
    deploy = re.search(r"^\s+padlock-deploy\s+(\S+)$", text, re.M)
    gateway = re.search(r"^\s+padlock-gateway\s+(http://\S+/)$", text, re.M)
    assert auth and deploy and gateway, redact(f"the banner names no addresses:\n{text}")
    open_url = re.search(r"^Open (http://\S+/) and sign in", text, re.M)
    passwords = {}
    for user in DEMO_USERS:
        m = re.search(rf"^\s+{user}\s+(\S+)\s", text, re.M)
        if m:
            passwords[user] = secret(m.group(1))
    pkg = re.search(r"\bPKG=(\S+)", text)
    return Banner(text, auth.group(1), deploy.group(1), gateway.group(1),
                  open_url.group(1) if open_url else None, passwords, pkg.group(1) if pkg else None)


class PadlockUp:
    """A running `padlock up --data-dir DIR` with all three services on port 0."""

    def __init__(self, data_dir: Path, log_path: Path, *extra: str, binary: Path | None = None):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.stdout_lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(binary or padlock_binary()), "up", "--data-dir", str(data_dir),
             "--auth-listen", "127.0.0.1:0", "--deploy-listen", "127.0.0.1:0",
             "--gateway-listen", "127.0.0.1:0", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
            env=child_env(), text=True,
        )
        # One thread reads stdout for the whole run, so padlock never blocks
        # on a full pipe and the banner's lines are never stuck in a buffer.
        self._banner_done = threading.Event()
        self._drain = threading.Thread(target=self._read_stdout, daemon=True)
        self._drain.start()
        self.banner = parse_banner(self._wait_for_banner())
        self.children = children_of(self.proc.pid)

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            if line.startswith(LAST_LINE):
                self._banner_done.set()
        self._banner_done.set()  # EOF: padlock exited or closed stdout

    def _wait_for_banner(self) -> str:
        deadline = time.monotonic() + BANNER_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._banner_done.wait(timeout=0.1):
                break
        text = "".join(self.stdout_lines)
        if any(line.startswith(LAST_LINE) for line in self.stdout_lines):
            return text
        exited = self.proc.poll()
        self.stop()
        why = (f"exited with {exited} before" if exited is not None
               else f"did not finish within {BANNER_TIMEOUT_S}s")
        pytest.fail(redact(f"padlock up {why} printing its banner; stdout {text!r}; "
                           f"stderr tail:\n{self.stderr_tail()}"), pytrace=False)

    def stderr(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 40) -> str:
        return redact("\n".join(self.stderr().splitlines()[-lines:]))

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal padlock and wait; kill whatever is left if it hangs. Returns
        padlock's exit code, or None if it had to be killed."""
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            code = self.wait()
            if code is None:
                self.proc.kill()
                self.proc.wait()
        else:
            code = self.proc.returncode
        for pid, cmdline in getattr(self, "children", {}).items():
            if alive(pid, cmdline):
                os.kill(pid, signal.SIGKILL)
        if getattr(self, "_drain", None):
            self._drain.join(timeout=5)
        self._log.close()
        return code


def sign_in(grpc: Grpcurl, username: str, password: str) -> str:
    resp = grpc.call(f"{AUTH}.SessionService/SignIn", {"username": username, "password": password})
    secret(resp.get("sessionToken", ""))
    return secret(resp["accessToken"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("padlock-up")


@pytest.fixture(scope="module")
def up(workdir):
    run = PadlockUp(workdir / "data", workdir / "padlock-up.stderr.log")
    yield run
    run.stop()


@pytest.fixture(scope="module")
def auth(up) -> Grpcurl:
    return Grpcurl(up.banner.auth)


@pytest.fixture(scope="module")
def deploy(up) -> Grpcurl:
    return Grpcurl(up.banner.deploy)


@pytest.fixture(scope="module")
def shop(up, deploy) -> dict:
    """Shop as tina sees it, with her token."""
    token = sign_in(Grpcurl(up.banner.auth), "tina", up.banner.passwords["tina"])
    apps = deploy.call(f"{DEPLOY}.AppService/ListApps", token=token)["apps"]
    assert [a["name"] for a in apps] == ["Shop"], f"tina's apps: {apps}"
    return {"app": apps[0], "token": token}


def test_the_banner_names_the_services_on_their_real_ports_and_the_demo_users(up, workdir, auth, deploy):
    b = up.banner
    for addr in (b.auth, b.deploy):
        assert re.fullmatch(r"127\.0\.0\.1:\d+", addr) and not addr.endswith(":0"), f"address {addr!r}"
    m = re.fullmatch(r"http://(127\.0\.0\.1:\d+)/", b.gateway)
    assert m and not m.group(1).endswith(":0"), f"gateway {b.gateway!r}"
    assert len({b.auth, b.deploy, m.group(1)}) == 3
    for grpc in (auth, deploy):
        health = grpc.call("grpc.health.v1.Health/Check")
        assert health["status"] == "SERVING", f"{grpc.addr}: {health}"
    assert sorted(b.passwords) == sorted(DEMO_USERS), "the banner names ops, tina and dev with passwords"
    for password in b.passwords.values():
        assert re.fullmatch(r"[A-Za-z0-9]{16,}", password), "a demo password is short or needs quoting"
    assert len(set(b.passwords.values())) == 3, "each demo user has a password of their own"
    assert b.package_id, "the banner names the demo package"
    assert b.open_url == b.gateway, "the banner says which URL to open"
    assert f"Open {b.gateway} and sign in as tina / {b.passwords['tina']}" in b.text, \
        "the banner says whom to sign in as"

    creds = workdir / "data" / "demo-credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    stored = creds.read_text()
    for user, password in b.passwords.items():
        assert re.search(rf"^{user} {password}$", stored, re.M), f"{user}'s password is not in {creds}"
    assert (workdir / "data" / "seeded").is_file()
    children = sorted(Path(c.split()[0]).name for c in up.children.values())
    assert children == ["padlock-auth", "padlock-deploy", "padlock-gateway"], f"children of padlock: {children}"


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    """(status, headers, body text) of one HTTP request; errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_the_gateway_serves_the_web_ui_and_signs_tina_in(up):
    url = up.banner.gateway
    status, headers, body = http("GET", url)
    assert status == 200 and "text/html" in headers["Content-Type"], f"GET / -> {status}"
    assert '<script src="/app.js"' in body and "default-src 'self'" in headers["Content-Security-Policy"]
    status, _, body = http("GET", url + "readyz")
    assert status == 200, f"/readyz -> {status} {body}: the gateway reaches auth and deploy"
    status, headers, body = http("POST", url + "api/v1/sessions",
                                 {"username": "tina", "password": up.banner.passwords["tina"]},
                                 {"X-Padlock-CSRF": "1"})
    assert status == 201, redact(f"signing in through the gateway: {status} {body}")
    assert json.loads(body)["user"]["username"] == "tina"
    cookies = headers.get_all("Set-Cookie") or []
    assert any(c.startswith("padlock_session=") for c in cookies), "a session cookie"


def test_tina_sees_shop_with_its_package_on_test(up, deploy, shop):
    app, token = shop["app"], shop["token"]
    assert app["technicalContact"] == "tina"
    envs = deploy.call(f"{DEPLOY}.AppService/ListEnvironments", {"appId": app["id"]}, token=token)
    current = {e["environment"]: e.get("current") for e in envs["environments"]}
    assert set(current) == {"ENVIRONMENT_TEST", "ENVIRONMENT_ACCEPTANCE", "ENVIRONMENT_PRODUCTION"}
    test = current["ENVIRONMENT_TEST"]
    assert test and test["packageId"] == up.banner.package_id and test["packageVersion"] == "1.0.0", \
        f"test runs {test}"
    assert not current["ENVIRONMENT_ACCEPTANCE"] and not current["ENVIRONMENT_PRODUCTION"], f"{current}"

    packages = deploy.call(f"{DEPLOY}.PackageService/ListPackages", {"appId": app["id"]}, token=token)["packages"]
    assert len(packages) == 1, f"{packages}"
    pkg = packages[0]
    assert pkg["fileName"] == "shop-1.0.0.mda" and pkg["uploadedBy"] == "tina"
    assert 1024 < int(pkg["size"]) <= 64 * 1024, f"size {pkg['size']}"
    assert re.fullmatch(r"[0-9a-f]{64}", pkg["sha256"]), f"sha256 {pkg['sha256']!r}"

    members = deploy.call(f"{DEPLOY}.AppService/ListTeamMembers", {"appId": app["id"]}, token=token)["members"]
    assert {m["username"]: m["role"] for m in members} == {
        "tina": "TEAM_ROLE_TECHNICAL_CONTACT", "dev": "TEAM_ROLE_DEPLOY"}

    entries = deploy.call(f"{DEPLOY}.PermissionService/ListNodePermissions", {"appId": app["id"]},
                          token=token)["entries"]
    devs = {e["environment"]: e["permissions"] for e in entries if e["username"] == "dev"}
    assert devs == {"ENVIRONMENT_TEST": ["NODE_PERMISSION_TRANSPORT"],
                    "ENVIRONMENT_ACCEPTANCE": ["NODE_PERMISSION_TRANSPORT"]}, \
        f"dev, an external developer, gets test and acceptance only: {entries}"


def test_dev_transports_the_package_from_test_to_acceptance(up, auth, deploy, shop):
    token = sign_in(auth, "dev", up.banner.passwords["dev"])
    moved = deploy.call(f"{DEPLOY}.PackageService/TransportPackage", {
        "packageId": up.banner.package_id,
        "fromEnvironment": "ENVIRONMENT_TEST",
        "toEnvironment": "ENVIRONMENT_ACCEPTANCE",
    }, token=token)
    assert moved["environment"] == "ENVIRONMENT_ACCEPTANCE" and moved["deployedBy"] == "dev", f"{moved}"


def test_production_is_refused_without_a_second_factor(up, deploy, shop):
    err = deploy.call_error(f"{DEPLOY}.PackageService/TransportPackage", {
        "packageId": up.banner.package_id,
        "fromEnvironment": "ENVIRONMENT_ACCEPTANCE",
        "toEnvironment": "ENVIRONMENT_PRODUCTION",
    }, token=shop["token"])
    assert err.code == "UNAUTHENTICATED" and err.reason == Reason.MFA_REQUIRED, str(err)
    info = err.error_info
    assert info["domain"] == "padlock" and info["metadata"].get("environment") == "production", str(err)


class BannerShell:
    """Runs the banner's command lines in bash, with grpcurl on PATH."""

    def __init__(self, banner: Banner):
        self.lines = [line.strip() for line in banner.text.splitlines()]
        self.env = dict(child_env(), PATH=f"{Path(grpcurl_path()).parent}{os.pathsep}{os.environ['PATH']}")

    def line(self, pattern: str, nth: int = 0) -> str:
        found = [line for line in self.lines if not line.startswith("#") and re.search(pattern, line)]
        assert len(found) > nth, f"the banner has no command matching {pattern!r}"
        return found[nth]

    def run(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              timeout=60, env=self.env)


def test_the_banners_grpcurl_commands_walk_through_the_step_up(up):
    sh = BannerShell(up.banner)
    setup = sh.line(r"^A=\S+ D=\S+ PKG=\S+$")
    sign_in_line = sh.line(r"^TOKEN=.*SessionService/SignIn")

    out = sh.run(f'{setup}\n{sign_in_line}\necho "TOKEN=$TOKEN"')
    m = re.search(r"^TOKEN=(eyJ\S+)$", out.stdout, re.M)
    assert out.returncode == 0 and m, redact(f"signing in as the banner says: {out.stderr}")
    token = secret(m.group(1))
    state = f"{setup}\nTOKEN={token}\n"

    to_acceptance = sh.run(state + sh.line(r"ENVIRONMENT_TEST.*TransportPackage"))
    assert to_acceptance.returncode == 0 and '"ENVIRONMENT_ACCEPTANCE"' in to_acceptance.stdout, \
        redact(f"test -> acceptance: {to_acceptance.stdout} {to_acceptance.stderr}")

    to_production = sh.line(r"ENVIRONMENT_PRODUCTION.*TransportPackage")
    refused = sh.run(state + to_production)
    assert refused.returncode != 0 and Reason.MFA_REQUIRED in refused.stdout + refused.stderr, \
        redact(f"acceptance -> production without 2FA: {refused.stdout} {refused.stderr}")

    started = sh.run(state + sh.line(r"StartTotpEnrollment"))
    assert started.returncode == 0, redact(f"StartTotpEnrollment: {started.stderr}")
    enrollment_id, totp_secret = started.stdout.split()
    secret(totp_secret)

    confirm = sh.line(r"^TOKEN=.*ConfirmEnrollment")
    assert "<id>" in confirm and "<6 digits>" in confirm, "the banner shows where the id and code go"
    confirm = confirm.replace("<id>", enrollment_id).replace("<6 digits>", totp_code(totp_secret, int(now())))
    out = sh.run(f'{state}{confirm}\necho "TOKEN=$TOKEN"')
    m = re.search(r"^TOKEN=(eyJ\S+)$", out.stdout, re.M)
    assert out.returncode == 0 and m, redact(f"ConfirmEnrollment as the banner says: {out.stderr}")
    stepped_up = secret(m.group(1))

    allowed = sh.run(f"{setup}\nTOKEN={stepped_up}\n{to_production}")
    assert allowed.returncode == 0 and '"ENVIRONMENT_PRODUCTION"' in allowed.stdout, \
        redact(f"acceptance -> production after 2FA: {allowed.stdout} {allowed.stderr}")
    assert '"mfaMethod": "totp"' in allowed.stdout, redact(allowed.stdout)


def test_sigterm_stops_padlock_and_both_services(up):
    assert len(up.children) == 3
    assert all(alive(pid, cmd) for pid, cmd in up.children.items())
    code = up.stop(signal.SIGTERM)
    assert code == 0, f"padlock up exited {code} on SIGTERM; stderr tail:\n{up.stderr_tail()}"
    left = [cmd for pid, cmd in up.children.items() if alive(pid, cmd)]
    assert not left, f"still running after padlock exited: {left}"
    stdout = "".join(up.stdout_lines)
    assert stdout.count("padlock is up") == 1, redact(f"one banner on stdout, got:\n{stdout}")


def test_a_second_start_keeps_the_demo_and_prints_the_same_passwords(up, workdir):
    assert up.proc.poll() is not None, "the first padlock up still runs"
    again = PadlockUp(workdir / "data", workdir / "padlock-up-again.stderr.log")
    try:
        assert again.banner.passwords == up.banner.passwords
        assert again.banner.package_id == up.banner.package_id
        assert "seeding" not in again.stderr(), "the second start seeded again"
        token = sign_in(Grpcurl(again.banner.auth), "tina", again.banner.passwords["tina"])
        deploy = Grpcurl(again.banner.deploy)
        apps = deploy.call(f"{DEPLOY}.AppService/ListApps", token=token)["apps"]
        assert [a["name"] for a in apps] == ["Shop"], f"{apps}"
        packages = deploy.call(f"{DEPLOY}.PackageService/ListPackages", {"appId": apps[0]["id"]},
                               token=token)["packages"]
        assert len(packages) == 1, f"{packages}"
        code = again.stop(signal.SIGINT)
        assert code == 0, f"padlock up exited {code} on SIGINT; stderr tail:\n{again.stderr_tail()}"
        left = [cmd for pid, cmd in again.children.items() if alive(pid, cmd)]
        assert not left, f"still running after SIGINT: {left}"
    finally:
        again.stop()


def test_the_no_seed_banners_operator_commands_make_a_user_an_app_and_its_team(tmp_path):
    run = PadlockUp(tmp_path / "data", tmp_path / "padlock-up.stderr.log", "--no-seed")
    try:
        sh = BannerShell(run.banner)
        add_user = sh.line(r"users add --username alice$")
        create_app = sh.line(r"apps create --name Shop --technical-contact alice$")
        add_member = sh.line(r"team add --app Shop --username bob --role deploy$")
        for line in (add_user, create_app, add_member):
            out = sh.run(line)
            assert out.returncode == 0, redact(f"{line}: {out.stderr[-2000:]}")
        again = sh.run(create_app)
        assert again.returncode != 0 and "an app with that name exists" in again.stderr, \
            redact(f"a second app called Shop: {again.stdout} {again.stderr[-2000:]}")
        password = re.search(r"echo '([^']+)'", add_user).group(1)
        token = sign_in(Grpcurl(run.banner.auth), "alice", password)
        deploy = Grpcurl(run.banner.deploy)
        apps = deploy.call(f"{DEPLOY}.AppService/ListApps", token=token)["apps"]
        assert [(a["name"], a["technicalContact"]) for a in apps] == [("Shop", "alice")], f"{apps}"
        members = deploy.call(f"{DEPLOY}.AppService/ListTeamMembers", {"appId": apps[0]["id"]},
                              token=token)["members"]
        assert {m["username"]: m["role"] for m in members} == {
            "alice": "TEAM_ROLE_TECHNICAL_CONTACT", "bob": "TEAM_ROLE_DEPLOY"}
    finally:
        run.stop()


def test_when_a_service_dies_padlock_stops_the_other_and_fails(tmp_path):
    run = PadlockUp(tmp_path / "data", tmp_path / "padlock-up.stderr.log", "--no-seed")
    try:
        assert "No demo seeded" in run.banner.text and not run.banner.passwords
        assert not (tmp_path / "data" / "seeded").exists()
        by_name = {Path(cmd.split()[0]).name: (pid, cmd) for pid, cmd in run.children.items()}
        os.kill(by_name["padlock-deploy"][0], signal.SIGKILL)
        code = run.wait()
        assert code not in (None, 0), f"padlock up exited {code} after padlock-deploy died"
        assert not alive(*by_name["padlock-auth"]), "padlock-auth outlived padlock up"
        assert not alive(*by_name["padlock-gateway"]), "padlock-gateway outlived padlock up"
        assert "padlock-deploy exited unexpectedly" in run.stderr(), run.stderr_tail()
    finally:
        run.stop()


def test_missing_service_binaries_are_named(tmp_path):
    lonely = tmp_path / "bin" / "padlock"
    lonely.parent.mkdir()
    shutil.copy2(padlock_binary(), lonely)
    out = subprocess.run([str(lonely), "up", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=30, env=child_env())
    assert out.returncode != 0
    assert "padlock-auth not found" in out.stderr and "cargo build --bins" in out.stderr, out.stderr
    assert out.stdout == "", "no banner without services"


def test_a_missing_gateway_binary_is_named(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy2(padlock_binary(), bindir / "padlock")
    for name in ("padlock-auth", "padlock-deploy"):
        (bindir / name).symlink_to(bin_dir() / name)
    out = subprocess.run([str(bindir / "padlock"), "up", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=30, env=child_env())
    assert out.returncode != 0
    assert "padlock-gateway not found" in out.stderr and "cargo build --bins" in out.stderr, out.stderr
    assert out.stdout == "" and not (tmp_path / "data").exists(), "nothing started, nothing created"
