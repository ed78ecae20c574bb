#!/usr/bin/env bash
# Validates padlock's deployment files offline, from any directory:
#
#   tests/validate-manifests.sh
#
# - docker-compose.yml against the compose-spec schema (vendored by
#   check-jsonschema), then scripted checks: required secrets fail loudly
#   when unset, no secret value is committed, health checks and depends_on
#   conditions, database URLs, service URLs, the OTLP endpoint, mounted files
#   exist; `docker compose config -q` too where the compose plugin exists;
# - deploy/Dockerfile with hadolint, plus what it must build and install;
# - deploy/healthcheck and deploy/postgres/init-databases.sh with shellcheck,
#   and the health check against real servers (an HTTP server, and
#   padlock-auth's gRPC health when a built binary is found);
# - deploy/otel-collector.yaml: parses, every pipeline names defined
#   components, OTLP gRPC in on 4317, traces out to Jaeger over OTLP;
# - deploy/k8s rendered by `kubectl kustomize` (or, without kubectl, by the
#   small renderer below, which is also compared against kubectl's output)
#   and validated in strict mode against the Kubernetes 1.27 and latest
#   schemas (kubernetes-validate), then scripted checks: replicas, probes,
#   resources, security contexts, Secrets only referenced, PDBs, Services,
#   migration Jobs, and who can reach whom under the NetworkPolicies.
#
# Installs its Python tools first (tests/requirements-manifests.txt; pinned,
# each ships its schemas or binary), skipping what is installed. Prints one
# line per check and ends with "validate-manifests: N passed, N failed";
# exits non-zero when anything failed.
#
# Environment:
#   PADLOCK_SKIP_INSTALL=1  install nothing, only use what is there
#   PADLOCK_BIN_DIR         where padlock-auth is for the health check test
#                           (default $CARGO_TARGET_DIR/debug or target/debug)
#   CI=true                 allow pip to install into a Debian-managed python
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
in_ci() { [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; }
in_ci && export PIP_PROGRESS_BAR=off

START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/padlock-manifests.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${PADLOCK_SKIP_INSTALL:-}" != 1 ]; then
  pip_env=()
  in_ci && pip_env=(PIP_BREAK_SYSTEM_PACKAGES=1)
  t0=$SECONDS
  env "${pip_env[@]}" python3 -m pip install -q --root-user-action=ignore \
    -r tests/requirements-manifests.txt
  echo "installed tests/requirements-manifests.txt in $((SECONDS - t0))s"
fi
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts:$PATH"
if command -v pyenv >/dev/null; then pyenv rehash || true; fi

PASSED=0 FAILED=0 SKIPPED=0
ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "skip - $*"; }

# check NAME COMMAND...: one check; its output is shown only when it fails.
check() {
  local name=$1 out=$WORK/out rc=0
  shift
  "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    ok "$name"
  else
    fail "$name (exit $rc)"
    sed 's/^/    /' "$out"
  fi
}

need_tool() {
  if ! command -v "$1" >/dev/null; then
    echo "$1 is not installed (tests/requirements-manifests.txt)" >&2
    return 1
  fi
}

# --- files and tools ------------------------------------------------------

check "shellcheck: deploy/healthcheck, deploy/postgres/init-databases.sh, this script" \
  shellcheck deploy/healthcheck deploy/postgres/init-databases.sh tests/validate-manifests.sh
check "hadolint: deploy/Dockerfile" hadolint deploy/Dockerfile
check "compose-spec schema: docker-compose.yml" \
  check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# `docker compose config` needs only the client plugin, no engine; it is
# absent on these machines, so it runs only where it exists.
compose_env=(PADLOCK_DATA_KEYS=k1:AAAA PADLOCK_AUTH_DB_PASSWORD=x PADLOCK_DEPLOY_DB_PASSWORD=y)
if docker compose version >/dev/null 2>&1; then
  check "docker compose config -q" env "${compose_env[@]}" docker compose -f docker-compose.yml config -q
else
  skip "docker compose config -q (no compose plugin for the docker client here; the schema and scripted checks cover it)"
fi

# --- render the kustomize base -------------------------------------------

RENDERED=""
if command -v kubectl >/dev/null; then
  if kubectl kustomize deploy/k8s >"$WORK/kustomize.yaml" 2>"$WORK/kustomize.err"; then
    RENDERED=$WORK/kustomize.yaml
    ok "kubectl kustomize deploy/k8s"
  else
    fail "kubectl kustomize deploy/k8s"
    sed 's/^/    /' "$WORK/kustomize.err"
  fi
else
  skip "kubectl kustomize deploy/k8s (no kubectl; the built-in renderer is used)"
fi

# --- scripted checks (compose, Dockerfile, collector, Kubernetes) --------

python3 - "$ROOT" "$RENDERED" >"$WORK/py.out" 2>&1 <<'PY' || true
import copy
import glob
import os
import re
import subprocess
import sys
import traceback
import urllib.parse

import kubernetes_validate
import yaml

ROOT, RENDERED = sys.argv[1], sys.argv[2]
os.chdir(ROOT)


def report(name, problems):
    if problems:
        print(f"FAIL - {name}")
        for p in problems:
            print(f"    {p}")
    else:
        print(f"ok - {name}")


def check(name):
    def run(fn):
        try:
            problems = list(fn() or [])
        except Exception as e:  # a crash is a failure, with its trace
            problems = [f"{type(e).__name__}: {e}"] + [
                line for line in traceback.format_exc().splitlines()[-6:]
            ]
        report(name, problems)
        return fn

    return run


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


IN_GIT = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"],
                        capture_output=True).returncode == 0
if not IN_GIT:
    print("note: not a git work tree; secret files are checked against deploy/secrets/.gitignore")


def git_tracked(path):
    return IN_GIT and subprocess.run(["git", "ls-files", "--error-unmatch", path],
                                     capture_output=True).returncode == 0


def git_ignored(path):
    if not IN_GIT:  # deploy/secrets/.gitignore ignores everything but itself and README.md
        return (os.path.dirname(path) == "deploy/secrets"
                and os.path.basename(path) not in (".gitignore", "README.md")
                and "*" in open("deploy/secrets/.gitignore").read().split())
    return subprocess.run(["git", "check-ignore", "-q", path],
                          capture_output=True).returncode == 0


SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|DATA_KEYS|PRIVATE|SIGNING_KEY", re.I)
SECRET_KEYS = {  # padlock-secrets keys, documented in deploy/k8s/README.md
    "auth-database-url", "deploy-database-url", "data-keys",
    "signing-key.pem", "twilio-auth-token",
}
REQUIRED_COMPOSE_VARS = {"PADLOCK_DATA_KEYS", "PADLOCK_AUTH_DB_PASSWORD",
                         "PADLOCK_DEPLOY_DB_PASSWORD"}
SERVICES = {  # name: (binary, port)
    "auth": ("padlock-auth", 50051),
    "deploy": ("padlock-deploy", 50052),
    "gateway": ("padlock-gateway", 8080),
}


def known_env_names():
    names = {"DATABASE_URL", "RUST_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}
    for path in glob.glob("services/*/src/**/*.rs", recursive=True) + glob.glob(
            "crates/*/src/**/*.rs", recursive=True):
        names |= set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', open(path).read()))
    for doc in ["README.md", "docs/configuration.md"]:
        if os.path.exists(doc):
            names |= set(re.findall(r"\bPADLOCK_[A-Z0-9_]+", open(doc).read()))
    return names


KNOWN_ENV = known_env_names()

# --- compose ---------------------------------------------------------------

INTERP = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}"
    r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(node, env, required_missing, unset):
    """Compose-style ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?err}, ${VAR?err}, $$."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, required_missing, unset) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, required_missing, unset) for v in node]
    if not isinstance(node, str):
        return node

    def sub(m):
        if m.group(1):
            return "$"
        name, op, arg = m.group(2) or m.group(5), m.group(3), m.group(4) or ""
        val = env.get(name)
        empty = val is None or val == ""
        if op in (":?", "?"):
            if val is None or (op == ":?" and empty):
                required_missing.add(name)
                return ""
            return val
        if op in (":-", "-"):
            if val is None or (op == ":-" and empty):
                return interpolate(arg, env, required_missing, unset)
            return val
        if op in (":+", "+"):
            return interpolate(arg, env, required_missing, unset) if (
                val is not None and (op == "+" or not empty)) else ""
        if val is None:
            unset.add(name)
            return ""
        return val

    return INTERP.sub(sub, node)


RAW = load("docker-compose.yml")
DUMMY_ENV = {
    "PADLOCK_DATA_KEYS": "k1:" + "A" * 43 + "=",
    "PADLOCK_AUTH_DB_PASSWORD": "authpw",
    "PADLOCK_DEPLOY_DB_PASSWORD": "deploypw",
}
_missing, _unset = set(), set()
COMPOSE = interpolate(copy.deepcopy(RAW), DUMMY_ENV, _missing, _unset)


def env_dict(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


@check("compose: required secrets fail loudly when unset, nothing else is interpolated silently")
def _():
    missing, unset = set(), set()
    interpolate(copy.deepcopy(RAW), {}, missing, unset)
    problems = []
    if missing != REQUIRED_COMPOSE_VARS:
        problems.append(f"${{VAR:?}} variables are {sorted(missing)}, "
                        f"expected {sorted(REQUIRED_COMPOSE_VARS)}")
    if unset:
        problems.append(f"variables without a default or :? (compose would use ''): {sorted(unset)}")
    if _missing or _unset:
        problems.append(f"still missing with the test environment: {sorted(_missing | _unset)}")
    return problems


@check("compose: services, images, one Dockerfile for auth, deploy and gateway")
def _():
    problems = []
    services = COMPOSE.get("services", {})
    expected = {"postgres", "auth", "deploy", "gateway", "otel-collector", "jaeger"}
    if set(services) != expected:
        problems.append(f"services are {sorted(services)}, expected {sorted(expected)}")
    if not str(services.get("postgres", {}).get("image", "")).startswith("postgres:15"):
        problems.append("postgres must run PostgreSQL 15 (image postgres:15*)")
    if not str(services.get("otel-collector", {}).get("image", "")).startswith(
            "otel/opentelemetry-collector-contrib:"):
        problems.append("otel-collector must run otel/opentelemetry-collector-contrib (pinned)")
    jaeger = services.get("jaeger", {})
    if not str(jaeger.get("image", "")).startswith("jaegertracing/all-in-one:"):
        problems.append("jaeger must run jaegertracing/all-in-one (pinned)")
    if env_dict(jaeger).get("COLLECTOR_OTLP_ENABLED") != "true":
        problems.append("jaeger: COLLECTOR_OTLP_ENABLED must be true")
    images = set()
    for name, (binary, _port) in SERVICES.items():
        svc = services.get(name, {})
        build = svc.get("build") or {}
        if build.get("context") != "." or build.get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"{name}: must build . with deploy/Dockerfile")
        images.add(svc.get("image"))
        if (svc.get("command") or [None])[0] != binary:
            problems.append(f"{name}: command must start with {binary}")
        if not svc.get("read_only") or "ALL" not in (svc.get("cap_drop") or []):
            problems.append(f"{name}: read_only and cap_drop [ALL] expected")
    if len(images) != 1 or None in images:
        problems.append(f"auth, deploy and gateway must share one image name, got {images}")
    for name, svc in services.items():
        if ":" not in str(svc.get("image", "")) or str(svc.get("image")).endswith(":latest"):
            problems.append(f"{name}: image {svc.get('image')!r} is not pinned to a tag")
    return problems


@check("compose: service settings (listen ports, DATABASE_URLs, service URLs, OTLP endpoint, known variables)")
def _():
    problems = []
    services = COMPOSE["services"]
    for name, (binary, port) in SERVICES.items():
        env = env_dict(services[name])
        if env.get("PADLOCK_LISTEN") != f"0.0.0.0:{port}":
            problems.append(f"{name}: PADLOCK_LISTEN must be 0.0.0.0:{port}")
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") != "http://otel-collector:4317":
            problems.append(f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT must be http://otel-collector:4317")
        if env.get("OTEL_SERVICE_NAME") != binary:
            problems.append(f"{name}: OTEL_SERVICE_NAME must be {binary}")
        for var in env:
            if var not in KNOWN_ENV:
                problems.append(f"{name}: {var} is no variable any service reads")
        if name in ("auth", "deploy"):
            url = urllib.parse.urlparse(env.get("DATABASE_URL", ""))
            if (url.scheme, url.hostname, url.port, url.path) != ("postgres", "postgres", 5432, f"/{name}"):
                problems.append(f"{name}: DATABASE_URL must be postgres://...@postgres:5432/{name}")
            if url.username != f"padlock_{name}" or not url.password:
                problems.append(f"{name}: DATABASE_URL must log in as padlock_{name} with a password")
        ports = [str(p) for p in services[name].get("ports", [])]
        if ports != [f"127.0.0.1:{port}:{port}"]:
            problems.append(f"{name}: publish only 127.0.0.1:{port}:{port}, got {ports}")
    deploy, gateway = env_dict(services["deploy"]), env_dict(services["gateway"])
    if deploy.get("PADLOCK_AUTH_URL") != "http://auth:50051":
        problems.append("deploy: PADLOCK_AUTH_URL must be http://auth:50051")
    if gateway.get("PADLOCK_AUTH_URL") != "http://auth:50051":
        problems.append("gateway: PADLOCK_AUTH_URL must be http://auth:50051")
    if gateway.get("PADLOCK_DEPLOY_URL") != "http://deploy:50052":
        problems.append("gateway: PADLOCK_DEPLOY_URL must be http://deploy:50052")
    auth = env_dict(services["auth"])
    if auth.get("PADLOCK_SIGNING_KEY_FILE") != "/run/secrets/signing_key":
        problems.append("auth: PADLOCK_SIGNING_KEY_FILE must be the signing_key secret")
    return problems


@check("compose: health checks (gRPC health for auth and deploy, /readyz for the gateway) and depends_on")
def _():
    problems = []
    services = COMPOSE["services"]
    expected_tests = {
        "auth": ["CMD", "padlock-healthcheck", "grpc", "50051"],
        "deploy": ["CMD", "padlock-healthcheck", "grpc", "50052"],
        "gateway": ["CMD", "padlock-healthcheck", "http", "8080", "/readyz"],
    }
    for name, test in expected_tests.items():
        got = (services[name].get("healthcheck") or {}).get("test")
        if got != test:
            problems.append(f"{name}: healthcheck test must be {test}, got {got}")
    pg_test = (services["postgres"].get("healthcheck") or {}).get("test") or []
    if "pg_isready" not in pg_test or not any("127.0.0.1" in t for t in pg_test):
        problems.append("postgres: healthcheck must be pg_isready over TCP (127.0.0.1)")
    needs = {
        "auth": {"postgres": "service_healthy"},
        "deploy": {"postgres": "service_healthy", "auth": "service_healthy"},
        "gateway": {"auth": "service_healthy", "deploy": "service_healthy"},
    }
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond == "service_healthy" and not services[dep].get("healthcheck"):
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        for dep, cond in needs.get(name, {}).items():
            if (deps.get(dep) or {}).get("condition") != cond:
                problems.append(f"{name}: depends_on {dep} must be {cond}")
    # no cycles
    graph = {n: set((s.get("depends_on") or {})) for n, s in services.items()}
    seen, stack = set(), set()

    def visit(n):
        if n in stack:
            problems.append(f"depends_on cycle through {n}")
            return
        if n in seen:
            return
        stack.add(n)
        for d in graph.get(n, ()):
            visit(d)
        stack.discard(n)
        seen.add(n)

    for n in graph:
        visit(n)
    return problems


@check("compose: secrets from files or the environment, none committed")
def _():
    problems = []
    top = COMPOSE.get("secrets") or {}
    for name, spec in top.items():
        path = (spec or {}).get("file")
        if not path:
            problems.append(f"secret {name}: only file: secrets are expected")
            continue
        rel = os.path.normpath(path)
        if not rel.startswith("deploy/secrets/"):
            problems.append(f"secret {name}: {path} must live in deploy/secrets/")
        if git_tracked(rel):
            problems.append(f"secret {name}: {path} is committed to git")
        if not git_ignored(rel):
            problems.append(f"secret {name}: {path} is not ignored by git")
    for sname, svc in COMPOSE["services"].items():
        for ref in svc.get("secrets") or []:
            src = ref if isinstance(ref, str) else ref.get("source")
            if src not in top:
                problems.append(f"{sname}: uses undefined secret {src}")
        env_files = svc.get("env_file") or []
        if isinstance(env_files, str):
            env_files = [env_files]
        for ef in env_files:
            path = os.path.normpath(ef if isinstance(ef, str) else ef["path"])
            if git_tracked(path) or not git_ignored(path):
                problems.append(f"{sname}: env_file {path} must be git-ignored and not committed")
        # raw values: anything secret-looking must come from ${...} or a file
        raw_env = RAW["services"][sname].get("environment") or {}
        for var, value in raw_env.items():
            value = "" if value is None else str(value)
            if var.endswith("_FILE"):
                if not value.startswith("/run/secrets/"):
                    problems.append(f"{sname}: {var} must point into /run/secrets/")
            elif SECRET_NAME.search(var) and not re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value):
                problems.append(f"{sname}: {var} must be ${{{var}:?...}}, not a literal")
            if "://" in value:
                creds = urllib.parse.urlparse(value.replace("${", "").replace("}", "")).password
                if creds and "${" not in value.split("@")[0]:
                    problems.append(f"{sname}: {var} carries a literal password")
    for path in glob.glob("deploy/secrets/*") + glob.glob("deploy/secrets/.*"):
        if os.path.basename(path) not in (".gitignore", "README.md") and git_tracked(path):
            problems.append(f"{path} is committed")
    return problems


@check("compose: mounted files exist (init script executable, collector config)")
def _():
    problems = []
    for name, svc in COMPOSE["services"].items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, str) and vol.startswith("./"):
                src, target = vol.split(":")[0], vol.split(":")[1]
                if not os.path.exists(src):
                    problems.append(f"{name}: {src} does not exist")
                if target.startswith("/docker-entrypoint-initdb.d/") and not os.access(src, os.X_OK):
                    problems.append(f"{name}: {src} must be executable")
    mounts = " ".join(str(v) for v in COMPOSE["services"]["postgres"].get("volumes", []))
    if "deploy/postgres/init-databases.sh:/docker-entrypoint-initdb.d/" not in mounts:
        problems.append("postgres: deploy/postgres/init-databases.sh must be an init script")
    mounts = " ".join(str(v) for v in COMPOSE["services"]["otel-collector"].get("volumes", []))
    if "./deploy/otel-collector.yaml:" not in mounts:
        problems.append("otel-collector: must mount ./deploy/otel-collector.yaml")
    init = open("deploy/postgres/init-databases.sh").read()
    for db, role in (("auth", "padlock_auth"), ("deploy", "padlock_deploy")):
        if f"CREATE DATABASE {db} OWNER {role}" not in init:
            problems.append(f"init script must create database {db} owned by {role}")
    return problems

# --- Dockerfile ------------------------------------------------------------


@check("Dockerfile: builds the three binaries --locked, small runtime with libssl3, non-root")
def _():
    problems = []
    text = open("deploy/Dockerfile").read()
    joined = re.sub(r"\\\n", " ", text)
    stages = re.split(r"(?m)^FROM\s+", joined)[1:]
    if len(stages) < 2:
        return ["expected a multi-stage build"]
    build, runtime = stages[0], stages[-1]
    cargo = re.search(r"cargo build[^\n&]*", build)
    if not cargo:
        problems.append("no cargo build in the build stage")
    else:
        line = cargo.group(0)
        for flag in ("--release", "--locked"):
            if flag not in line:
                problems.append(f"cargo build lacks {flag}")
        packages = set(re.findall(r"-p\s+(\S+)", line))
        if packages != {b for b, _ in SERVICES.values()}:
            problems.append(f"cargo build -p {sorted(packages)}, expected the three services")
        names = set()
        for manifest in glob.glob("services/*/Cargo.toml"):
            m = re.search(r'(?m)^name\s*=\s*"([^"]+)"', open(manifest).read())
            if m:
                names.add(m.group(1))
        for p in packages - names:
            problems.append(f"no workspace package {p}")
    if not re.match(r"debian:\S*-slim", runtime) and "debian:${DEBIAN_RELEASE}-slim" not in runtime:
        problems.append("runtime stage must be debian:*-slim")
    for pkg in ("libssl3", "ca-certificates"):
        if not re.search(rf"apt-get install[^\n]*\b{pkg}\b", runtime):
            problems.append(f"runtime stage must install {pkg}")
    if "cargo" in runtime or "rust:" in runtime:
        problems.append("runtime stage must not carry the toolchain")
    for b, _ in SERVICES.values():
        if b not in runtime:
            problems.append(f"runtime stage does not copy {b}")
    if "deploy/healthcheck" not in runtime:
        problems.append("runtime stage must install deploy/healthcheck as padlock-healthcheck")
    user = re.findall(r"(?m)^USER\s+(\S+)", runtime)
    if not user or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user[-1]):
        problems.append("runtime USER must be a numeric non-root uid (for runAsNonRoot)")
    ignore = "deploy/Dockerfile.dockerignore"
    if not os.path.exists(ignore):
        problems.append(f"{ignore} is missing (target/ would be sent as build context)")
    else:
        patterns = [l.strip() for l in open(ignore) if l.strip() and not l.startswith("#")]
        for needed in ("target", "deploy/secrets"):
            if not any(p.rstrip("/").endswith(needed) for p in patterns):
                problems.append(f"{ignore} must exclude {needed}")
        for kept in ("crates", "services", "proto", "Cargo.lock", "Cargo.toml", "deploy/healthcheck"):
            if any(p.rstrip("/") in (kept, kept.split("/")[0]) for p in patterns):
                problems.append(f"{ignore} excludes {kept}, which the build needs")
    return problems

# --- collector -------------------------------------------------------------


@check("otel-collector.yaml: OTLP gRPC in on 4317, traces to Jaeger over OTLP, pipelines complete")
def _():
    problems = []
    cfg = load("deploy/otel-collector.yaml")
    known_types = {
        "receivers": {"otlp"},
        "processors": {"batch", "memory_limiter", "resource", "attributes", "filter"},
        "exporters": {"otlp", "otlphttp", "debug", "prometheus"},
        "extensions": {"health_check", "pprof", "zpages"},
    }
    for section, types in known_types.items():
        for cid in cfg.get(section) or {}:
            if cid.split("/")[0] not in types:
                problems.append(f"{section}: unknown component type {cid}")
    grpc = (((cfg.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("grpc") or {}
    if not str(grpc.get("endpoint", "")).endswith(":4317"):
        problems.append("receivers.otlp.protocols.grpc.endpoint must listen on :4317")
    service = cfg.get("service") or {}
    for ext in service.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            problems.append(f"service.extensions: {ext} is not defined")
    pipelines = service.get("pipelines") or {}
    if "traces" not in pipelines or "metrics" not in pipelines:
        problems.append("pipelines for traces and metrics expected")
    for pname, p in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for cid in p.get(section) or []:
                if cid not in (cfg.get(section) or {}):
                    problems.append(f"pipeline {pname}: {section[:-1]} {cid} is not defined")
        if not p.get("receivers") or not p.get("exporters"):
            problems.append(f"pipeline {pname}: needs receivers and exporters")
    jaeger = [cid for cid in (pipelines.get("traces") or {}).get("exporters", [])
              if cid.split("/")[0] == "otlp"
              and str(cfg["exporters"][cid].get("endpoint", "")) == "jaeger:4317"]
    if not jaeger:
        problems.append("traces must be exported with an otlp exporter to jaeger:4317")
    elif not ((cfg["exporters"][jaeger[0]].get("tls") or {}).get("insecure")):
        problems.append("the Jaeger exporter needs tls.insecure (plain gRPC inside compose)")
    return problems

# --- Kubernetes --------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}


def render_base(base="deploy/k8s"):
    """Renders what this base uses of kustomize: resources, namespace, images."""
    k = load(os.path.join(base, "kustomization.yaml"))
    unsupported = set(k) - {"apiVersion", "kind", "namespace", "resources", "images"}
    if unsupported:
        raise ValueError(f"kustomization.yaml uses {sorted(unsupported)}: teach render_base")
    objs = []
    for res in k.get("resources") or []:
        with open(os.path.join(base, res)) as f:
            objs += [d for d in yaml.safe_load_all(f) if d]
    images = {i["name"]: i for i in k.get("images") or []}
    for o in objs:
        if k.get("namespace") and o["kind"] not in CLUSTER_SCOPED:
            o["metadata"]["namespace"] = k["namespace"]
        spec = (o.get("spec") or {})
        pod = (spec.get("template") or {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec") or {}
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            name = re.split(r"[:@]", c["image"])[0]
            if name in images:
                i = images[name]
                c["image"] = i.get("newName", name) + (f":{i['newTag']}" if "newTag" in i else "") + (
                    f"@{i['digest']}" if "digest" in i else "")
    return objs


def key(o):
    return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])


OWN, OBJS, RENDER_ERROR = [], [], None
try:
    OWN = render_base()
    if RENDERED:
        with open(RENDERED) as f:
            OBJS = [d for d in yaml.safe_load_all(f) if d]
    else:
        OBJS = OWN
except Exception as e:  # reported below; the checks then see no resources
    RENDER_ERROR = f"{type(e).__name__}: {e}"


@check("k8s: the built-in renderer renders the base" + (
    ", the same as kubectl kustomize" if RENDERED else " (no kubectl rendering to compare)"))
def _():
    if RENDER_ERROR:
        return [f"cannot render deploy/k8s: {RENDER_ERROR}"]
    if not RENDERED:
        return []
    a = {key(o): o for o in OBJS}
    b = {key(o): o for o in OWN}
    problems = [f"only in kubectl's output: {k}" for k in a.keys() - b.keys()]
    problems += [f"only in the built-in rendering: {k}" for k in b.keys() - a.keys()]
    problems += [f"differs: {k}" for k in a.keys() & b.keys() if a[k] != b[k]]
    return problems


def schema_check(version):
    problems = [] if OBJS else ["no resources rendered"]
    for o in OBJS:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.absolute_path)
            problems.append(f"{key(o)}: {e.message} (at /{path})")
        except Exception as e:
            problems.append(f"{key(o)}: {type(e).__name__}: {e}")
    return problems


LATEST = kubernetes_validate.latest_version()
for version in ("1.27.0", f"{LATEST}.0" if LATEST.count(".") == 1 else LATEST):
    check(f"k8s: {len(OBJS)} resources valid against the Kubernetes {version} schemas (strict)")(
        lambda version=version: schema_check(version))

BY_KIND = {}
for o in OBJS:
    BY_KIND.setdefault(o["kind"], {})[o["metadata"]["name"]] = o


def pod_spec(o):
    return o["spec"]["template"]["spec"]


def pod_labels(o):
    return o["spec"]["template"]["metadata"].get("labels") or {}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def workload_problems(kind, name, o):
    problems = []
    spec = pod_spec(o)
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{kind} {name}: pod securityContext.runAsNonRoot must be true")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{kind} {name}: seccompProfile must be RuntimeDefault")
    if not psc.get("runAsUser"):
        problems.append(f"{kind} {name}: runAsUser must be a non-zero uid")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{kind} {name}: automountServiceAccountToken must be false")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for c in spec.get("containers") or []:
        cname = f"{kind} {name}/{c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{cname}: capabilities.drop must contain ALL")
        res = c.get("resources") or {}
        want = {"requests": {"cpu": "50m", "memory": "32Mi"},
                "limits": {"cpu": "1", "memory": "128Mi"}}
        for part, values in want.items():
            for r, v in values.items():
                if str((res.get(part) or {}).get(r)) != v:
                    problems.append(f"{cname}: resources.{part}.{r} must be {v}")
        if not c["image"].startswith("padlock:") and not re.search(r"/padlock[:@]", c["image"]):
            problems.append(f"{cname}: image {c['image']} is not padlock's")
        env = {e["name"]: e for e in c.get("env") or []}
        for ename, e in env.items():
            if ename not in KNOWN_ENV:
                problems.append(f"{cname}: {ename} is no variable any service reads")
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ename.endswith("_FILE"):
                mounts = [m for m in c.get("volumeMounts") or []
                          if str(e.get("value", "")).startswith(m["mountPath"] + "/")]
                if not mounts or "secret" not in volumes.get(mounts[0]["name"], {}):
                    problems.append(f"{cname}: {ename} must point into a mounted secret volume")
            elif SECRET_NAME.search(ename) or ename == "DATABASE_URL":
                if not ref:
                    problems.append(f"{cname}: {ename} must come from a secretKeyRef, not a value")
            if ref and (ref.get("name") != "padlock-secrets" or ref.get("key") not in SECRET_KEYS):
                problems.append(f"{cname}: {ename} refers to {ref}, not a documented padlock-secrets key")
        data_dir = env.get("PADLOCK_DATA_DIR", {}).get("value")
        mount = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == data_dir]
        if not data_dir or not mount or "emptyDir" not in volumes.get(mount[0]["name"], {}):
            problems.append(f"{cname}: the data dir ({data_dir}) must be an emptyDir volume")
        for ef in c.get("envFrom") or []:
            if "secretRef" in ef:
                problems.append(f"{cname}: envFrom secretRef exposes every secret key; use secretKeyRef")
            cm = (ef.get("configMapRef") or {}).get("name")
            if cm and cm not in BY_KIND.get("ConfigMap", {}):
                problems.append(f"{cname}: envFrom ConfigMap {cm} is not in the base")
    for v in volumes.values():
        if "secret" in v:
            s = v["secret"]
            if s.get("secretName") != "padlock-secrets" or any(
                    i["key"] not in SECRET_KEYS for i in s.get("items") or [{"key": None}]):
                problems.append(f"{kind} {name}: secret volume {v['name']} must project documented padlock-secrets keys")
        if "persistentVolumeClaim" in v:
            if v["persistentVolumeClaim"]["claimName"] not in BY_KIND.get("PersistentVolumeClaim", {}):
                problems.append(f"{kind} {name}: PVC {v['persistentVolumeClaim']['claimName']} is not in the base")
    return problems


@check("k8s: Deployments: 2+ replicas, probes, resources, security contexts, secrets only referenced")
def _():
    problems = []
    deployments = BY_KIND.get("Deployment", {})
    if set(deployments) != set(SERVICES):
        problems.append(f"Deployments are {sorted(deployments)}, expected {sorted(SERVICES)}")
    for name, o in deployments.items():
        if (o["spec"].get("replicas") or 1) < 2:
            problems.append(f"Deployment {name}: replicas must be 2 or more")
        if not selects(o["spec"]["selector"]["matchLabels"], pod_labels(o)):
            problems.append(f"Deployment {name}: selector does not match its pods")
        problems += workload_problems("Deployment", name, o)
        binary, port = SERVICES.get(name, (None, None))
        for c in pod_spec(o)["containers"]:
            if (c.get("command") or [None])[0] != binary or c.get("args"):
                problems.append(f"Deployment {name}: command must be [{binary}] (serve)")
            ports = [p["containerPort"] for p in c.get("ports") or []]
            if ports != [port]:
                problems.append(f"Deployment {name}: container port must be {port}")
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            if env.get("PADLOCK_LISTEN") != f"0.0.0.0:{port}":
                problems.append(f"Deployment {name}: PADLOCK_LISTEN must be 0.0.0.0:{port}")
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    problems.append(f"Deployment {name}: no {probe}")
                    continue
                if name in ("auth", "deploy"):
                    if (p.get("grpc") or {}).get("port") != port:
                        problems.append(f"Deployment {name}: {probe} must be grpc on port {port}")
                else:
                    want = "/readyz" if probe == "readinessProbe" else "/healthz"
                    if (p.get("httpGet") or {}).get("path") != want:
                        problems.append(f"Deployment {name}: {probe} must be GET {want}")
    if "auth" in deployments:
        env = {e["name"]: e for e in pod_spec(deployments["auth"])["containers"][0].get("env", [])}
        for var, k in (("DATABASE_URL", "auth-database-url"), ("PADLOCK_DATA_KEYS", "data-keys"),
                       ("PADLOCK_TWILIO_AUTH_TOKEN", "twilio-auth-token")):
            if ((env.get(var, {}).get("valueFrom") or {}).get("secretKeyRef") or {}).get("key") != k:
                problems.append(f"Deployment auth: {var} must come from padlock-secrets/{k}")
        if "PADLOCK_SIGNING_KEY_FILE" not in env:
            problems.append("Deployment auth: PADLOCK_SIGNING_KEY_FILE (secret volume) expected")
    if "Secret" in BY_KIND:
        problems.append(f"the base defines Secrets {sorted(BY_KIND['Secret'])}: reference them, do not inline")
    return problems


@check("k8s: ConfigMap padlock-config holds the non-secret settings, nothing secret")
def _():
    problems = []
    cms = BY_KIND.get("ConfigMap", {})
    data = (cms.get("padlock-config") or {}).get("data") or {}
    for k in ("PADLOCK_ISSUER", "PADLOCK_AUDIENCE", "OTEL_EXPORTER_OTLP_ENDPOINT",
              "PADLOCK_AUTH_URL", "PADLOCK_DEPLOY_URL"):
        if not data.get(k):
            problems.append(f"padlock-config lacks {k}")
    if data.get("PADLOCK_AUTH_URL") != "http://auth:50051":
        problems.append("PADLOCK_AUTH_URL must be http://auth:50051 (the auth Service)")
    if data.get("PADLOCK_DEPLOY_URL") != "http://deploy:50052":
        problems.append("PADLOCK_DEPLOY_URL must be http://deploy:50052 (the deploy Service)")
    for cm in cms.values():
        for k, v in (cm.get("data") or {}).items():
            if SECRET_NAME.search(k) or k == "DATABASE_URL":
                problems.append(f"ConfigMap {cm['metadata']['name']}: {k} is a secret")
            if k not in KNOWN_ENV:
                problems.append(f"ConfigMap {cm['metadata']['name']}: {k} is no variable any service reads")
            if v == "" or v is None:
                problems.append(f"ConfigMap {cm['metadata']['name']}: {k} is empty (the services reject empty values)")
            if "://" in str(v) and urllib.parse.urlparse(str(v)).password:
                problems.append(f"ConfigMap {cm['metadata']['name']}: {k} carries a password")
    return problems


@check("k8s: each Deployment has a ClusterIP Service and a PodDisruptionBudget (minAvailable 1)")
def _():
    problems = []
    services = BY_KIND.get("Service", {})
    pdbs = BY_KIND.get("PodDisruptionBudget", {})
    for name, o in BY_KIND.get("Deployment", {}).items():
        labels = pod_labels(o)
        port = SERVICES.get(name, (None, None))[1]
        svc = [s for s in services.values() if s["spec"].get("selector") and selects(s["spec"]["selector"], labels)]
        if len(svc) != 1 or svc[0]["metadata"]["name"] != name:
            problems.append(f"Deployment {name}: expected exactly one Service named {name}")
        else:
            s = svc[0]
            if s["spec"].get("type", "ClusterIP") != "ClusterIP":
                problems.append(f"Service {name}: must be ClusterIP")
            container_ports = {p.get("name"): p["containerPort"] for p in pod_spec(o)["containers"][0]["ports"]}
            for p in s["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                if container_ports.get(target, target) not in container_ports.values():
                    problems.append(f"Service {name}: targetPort {target} is no container port")
                if p["port"] != port:
                    problems.append(f"Service {name}: port must be {port}")
        pdb = [p for p in pdbs.values() if selects(p["spec"]["selector"]["matchLabels"], labels)]
        if len(pdb) != 1 or pdb[0]["spec"].get("minAvailable") != 1:
            problems.append(f"Deployment {name}: expected one PodDisruptionBudget with minAvailable 1")
        # nothing else (migration Jobs) may be picked up by its Service or PDB
        for job in BY_KIND.get("Job", {}).values():
            jl = pod_labels(job)
            if svc and selects(svc[0]["spec"]["selector"], jl):
                problems.append(f"Service {name} also selects Job {job['metadata']['name']}'s pods")
    return problems


@check("k8s: migration Jobs run `<binary> migrate` before the replicas (see deploy/k8s/README.md)")
def _():
    problems = []
    jobs = BY_KIND.get("Job", {})
    for name in ("auth", "deploy"):
        job = jobs.get(f"{name}-migrate")
        if not job:
            problems.append(f"no Job {name}-migrate")
            continue
        c = pod_spec(job)["containers"][0]
        if c.get("command") != [SERVICES[name][0]] or c.get("args") != ["migrate"]:
            problems.append(f"Job {name}-migrate must run {SERVICES[name][0]} migrate")
        if pod_spec(job).get("restartPolicy") not in ("OnFailure", "Never"):
            problems.append(f"Job {name}-migrate: restartPolicy must be OnFailure or Never")
        problems += workload_problems("Job", f"{name}-migrate", job)
    if "migrate" not in open("deploy/k8s/README.md").read():
        problems.append("deploy/k8s/README.md must document the migration order")
    return problems


@check("k8s: padlock-secrets keys are documented in deploy/k8s/README.md")
def _():
    readme = open("deploy/k8s/README.md").read()
    return [f"key {k} is not documented" for k in sorted(SECRET_KEYS) if f"`{k}`" not in readme]


def reachable(src_labels, dst_labels, port, external=False):
    """Kubernetes NetworkPolicy ingress semantics, for pods in one namespace."""
    policies = [p for p in BY_KIND.get("NetworkPolicy", {}).values()
                if "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                and selects((p["spec"].get("podSelector") or {}).get("matchLabels"), dst_labels)]
    if not policies:
        return True
    for p in policies:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") == port for pp in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "podSelector" in peer and "namespaceSelector" not in peer and not external:
                    if selects(peer["podSelector"].get("matchLabels"), src_labels):
                        return True
    return False


@check("k8s: NetworkPolicies: only gateway and deploy reach auth, only the gateway reaches deploy, anyone the gateway")
def _():
    problems = []
    deployments = BY_KIND.get("Deployment", {})
    pods = {name: pod_labels(o) for name, o in deployments.items()}
    pods.update({name: pod_labels(o) for name, o in BY_KIND.get("Job", {}).items()})
    expected = {"auth": {"gateway", "deploy"}, "deploy": {"gateway"}, "gateway": set(pods) | {"(outside)"}}
    for dst, allowed in expected.items():
        port = SERVICES[dst][1]
        for src in list(pods) + ["(outside)"]:
            got = reachable(pods.get(src, {}), pods[dst], port, external=src == "(outside)")
            if got != (src in allowed):
                problems.append(f"{src} -> {dst}:{port} is {'allowed' if got else 'blocked'}, "
                                f"expected {'allowed' if src in allowed else 'blocked'}")
    default_deny = [p for p in BY_KIND.get("NetworkPolicy", {}).values()
                    if not (p["spec"].get("podSelector") or {}).get("matchLabels")
                    and not p["spec"].get("ingress")]
    if not default_deny:
        problems.append("no default-deny ingress policy for the namespace")
    return problems


@check("k8s: every resource in namespace padlock, labelled part-of padlock")
def _():
    problems = []
    for o in OBJS:
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != "padlock":
            problems.append(f"{key(o)} is not in namespace padlock")
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") != "padlock":
            problems.append(f"{key(o)} lacks app.kubernetes.io/part-of: padlock")
    return problems
PY

while IFS= read -r line; do
  case $line in
    "ok - "*) PASSED=$((PASSED + 1)) ;;
    "FAIL - "*) FAILED=$((FAILED + 1)) ;;
  esac
  echo "$line"
done <"$WORK/py.out"
if ! grep -q '^ok - k8s: every resource' "$WORK/py.out" && ! grep -q '^FAIL - k8s: every resource' "$WORK/py.out"; then
  fail "the scripted checks did not finish"
fi

# --- the compose health check against real servers ------------------------

healthcheck_http() {
  mkdir -p "$WORK/www"
  echo ok >"$WORK/www/readyz"
  python3 -m http.server 0 --bind 127.0.0.1 --directory "$WORK/www" >"$WORK/http.log" 2>&1 &
  PIDS+=($!)
  local port=""
  for _ in $(seq 1 50); do
    port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$WORK/http.log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "the test HTTP server did not start"; return 1; }
  deploy/healthcheck http "$port" /readyz || { echo "200 judged unhealthy"; return 1; }
  if deploy/healthcheck http "$port" /missing; then echo "404 judged healthy"; return 1; fi
  if deploy/healthcheck grpc "$port"; then echo "an HTTP/1 server judged a healthy gRPC server"; return 1; fi
  return 0
}
check "padlock-healthcheck http: 200 healthy, 404 and non-gRPC unhealthy" healthcheck_http

bin_dir=${PADLOCK_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}
healthcheck_grpc() {
  local data=$WORK/auth port=""
  "$bin_dir/padlock-auth" --listen 127.0.0.1:0 --data-dir "$data" >"$WORK/auth.out" 2>"$WORK/auth.err" &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    port=$(sed -n 's/^padlock-auth: listening on .*:\([0-9]*\)$/\1/p' "$WORK/auth.out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "padlock-auth did not start:"; cat "$WORK/auth.err"; return 1; }
  deploy/healthcheck grpc "$port" || { echo "SERVING judged unhealthy"; return 1; }
  deploy/healthcheck grpc "$port" padlock.auth.v1.SessionService || { echo "SessionService judged unhealthy"; return 1; }
  if deploy/healthcheck grpc "$port" no.such.Service; then echo "an unknown service judged healthy"; return 1; fi
  if deploy/healthcheck http "$port" /readyz; then echo "a gRPC server judged a healthy HTTP server"; return 1; fi
  return 0
}
if [ -x "$bin_dir/padlock-auth" ]; then
  check "padlock-healthcheck grpc: padlock-auth's Health/Check SERVING, unknown service unhealthy" healthcheck_grpc
else
  skip "padlock-healthcheck grpc against padlock-auth (no $bin_dir/padlock-auth: cargo build first)"
fi
closed_port() {
  # a port nothing listens on: bind one, close it, probe it
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if deploy/healthcheck grpc "$port"; then echo "a closed port judged healthy"; return 1; fi
  return 0
}
check "padlock-healthcheck: a closed port is unhealthy" closed_port

total=$((SECONDS - START))
echo "validate-manifests: took ${total}s"
echo "validate-manifests: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
