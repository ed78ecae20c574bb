#!/usr/bin/env bash
# The whole test suite, from a fresh machine (Debian 12, Rust with
# cargo-nextest, Python 3.11 with pip, PostgreSQL 15 binaries not running):
#
#   tests/run-all.sh
#
# 1. installs what the tests need (apt and pip), skipping what is present;
# 2. starts a throwaway PostgreSQL (tests/pg.sh) and exports
#    PADLOCK_TEST_DATABASE_URL; it is stopped and removed on exit;
# 3. runs fmt, clippy, build, the compose/Kubernetes/Dockerfile checks
#    (tests/validate-manifests.sh), the Rust tests, the end-to-end suite
#    (tests/e2e), the browser test (tests/browser: installs Debian's
#    chromium and the npm packages first) and a few-second smoke run of the
#    load tool that must see zero errors (tests/bench-smoke.sh), stopping
#    at the first step that fails. The Rust tests include the replay of
#    every fuzz target's committed corpus (crates/fuzz/tests/corpus.rs) and
#    the OTel end-to-end test of the three binaries (tests/system); real
#    fuzzing is tests/fuzz.sh, not run here. Cargo runs --locked: a stale
#    Cargo.lock fails instead of being rewritten;
# 4. prints one summary line with each step's time; exits non-zero on failure.
#
# Environment:
#   CI=true               PostgreSQL must start; plain CI-friendly output.
#   PADLOCK_SKIP_PG=1     outside CI only: run without PostgreSQL (its tests
#                         then skip).
#   PADLOCK_SKIP_INSTALL=1  do not install anything; only check the tools.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

in_ci() { [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; }

if in_ci; then
  export CARGO_TERM_COLOR=never CARGO_TERM_PROGRESS_WHEN=never CARGO_INCREMENTAL=0
  export PIP_PROGRESS_BAR=off
  export npm_config_progress=false npm_config_color=false
fi
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

START=$SECONDS
TIMES=()      # "step=Ns" for the summary
CURRENT=""    # the step running now, for the failure message
PG_DIR=""

summary() {
  local rc=$?
  if [ -n "$PG_DIR" ]; then
    "$ROOT/tests/pg.sh" stop "$PG_DIR" || true
  fi
  local total=$((SECONDS - START))
  if [ "$rc" -eq 0 ]; then
    echo "run-all: PASSED in ${total}s (${TIMES[*]})"
  else
    echo "run-all: FAILED at '${CURRENT:-setup}' (exit $rc) after ${total}s (${TIMES[*]:-no step finished})" >&2
  fi
  exit "$rc"
}
trap summary EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step NAME COMMAND...: run one step, timed; stop everything if it fails.
step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  CURRENT=$name
  echo "==> $name: $*"
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "==> $name FAILED (exit $rc) after $((SECONDS - t0))s" >&2
    exit "$rc"
  fi
  TIMES+=("$name=$((SECONDS - t0))s")
}

install_tools() {
  local pkgs=(oathtool zbar-tools libssl-dev pkg-config curl) missing=() p
  for p in "${pkgs[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${PADLOCK_SKIP_INSTALL:-}" = 1 ]; then
      echo "missing Debian packages: ${missing[*]}" >&2
      return 1
    fi
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  if [ "${PADLOCK_SKIP_INSTALL:-}" != 1 ]; then
    local pip_env=()
    # Debian's own python3 refuses pip installs (PEP 668); CI's machine is
    # throwaway, so allow them there.
    in_ci && pip_env=(PIP_BREAK_SYSTEM_PACKAGES=1)
    env "${pip_env[@]}" python3 -m pip install -q --root-user-action=ignore \
      -r tests/e2e/requirements.txt
  fi
  # pip puts the grpcurl launcher in the interpreter's scripts dir; pyenv's
  # shims only learn about it on rehash, so put the dir on PATH directly.
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  export PATH="$scripts:$PATH"
  if command -v pyenv >/dev/null; then pyenv rehash || true; fi

  local ok=1
  grpcurl -version >/dev/null 2>&1 || { echo "grpcurl does not run" >&2; ok=0; }
  oathtool --totp -b JBSWY3DPEHPK3PXP >/dev/null 2>&1 || { echo "oathtool does not run" >&2; ok=0; }
  zbarimg --version >/dev/null 2>&1 || { echo "zbarimg does not run" >&2; ok=0; }
  # The attack suite sends over-limit HTTP/2 header blocks with curl.
  curl --version 2>/dev/null | grep HTTP2 >/dev/null || { echo "curl with HTTP/2 does not run" >&2; ok=0; }
  command -v cargo >/dev/null || { echo "no cargo on PATH" >&2; ok=0; }
  [ "$ok" = 1 ] && echo "tools: $(grpcurl -version 2>&1), $(oathtool --version | head -1), zbarimg $(zbarimg --version)"
  [ "$ok" = 1 ]
}

start_postgres() {
  if [ "${PADLOCK_SKIP_PG:-}" = 1 ]; then
    if in_ci; then
      echo "PADLOCK_SKIP_PG=1 is not allowed in CI: PostgreSQL tests must run" >&2
      return 1
    fi
    echo "PADLOCK_SKIP_PG=1: running without PostgreSQL; its tests will skip" >&2
    unset PADLOCK_TEST_DATABASE_URL
    return 0
  fi
  local out
  out=$("$ROOT/tests/pg.sh" start) || {
    echo "could not start PostgreSQL (see above); set PADLOCK_SKIP_PG=1 outside CI to run without it" >&2
    return 1
  }
  eval "$out"
  PG_DIR=$PADLOCK_PG_DIR
  echo "PADLOCK_TEST_DATABASE_URL=$PADLOCK_TEST_DATABASE_URL"
}

rust_fmt() {
  local color=()
  in_ci && color=(-- --color never)
  cargo fmt --all --check "${color[@]}" || return 1
  # The cargo-fuzz targets are outside the workspace (crates/fuzz/cargo-fuzz).
  rustfmt --edition 2024 --check crates/fuzz/fuzz_targets/*.rs
}

rust_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    local ci_flags=()
    in_ci && ci_flags=(--hide-progress-bar --color never)
    cargo nextest run --locked --workspace --no-fail-fast --no-tests=warn \
      --failure-output final --status-level fail --final-status-level slow "${ci_flags[@]}"
  else
    echo "cargo-nextest not found; using cargo test"
    cargo test --locked --workspace --no-fail-fast
  fi
}

e2e_tests() {
  local target=${CARGO_TARGET_DIR:-target}
  case $target in /*) ;; *) target=$ROOT/$target ;; esac
  PADLOCK_BIN_DIR=$target/debug python3 -m pytest -q -p no:cacheprovider tests/e2e
}

# apt-get install the Debian packages that are missing; apt-get update first.
# (Steps run in an `||` context, where set -e does not apply: return codes
# are checked by hand.)
apt_install() {
  local missing=() p
  for p in "$@"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
      missing+=("$p")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "${PADLOCK_SKIP_INSTALL:-}" = 1 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    return 1
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq || return 1
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The browser test's needs: Debian's Chromium (playwright cannot download
# browsers here) and playwright-core at the version package-lock.json pins.
install_browser() {
  apt_install chromium || return 1
  command -v node >/dev/null || { echo "no node on PATH: the browser test needs Node.js 20" >&2; return 1; }
  if [ "${PADLOCK_SKIP_INSTALL:-}" = 1 ]; then
    [ -d tests/browser/node_modules/playwright-core ] \
      || { echo "tests/browser/node_modules is missing: run npm ci there" >&2; return 1; }
  else
    (cd tests/browser && npm ci --no-audit --no-fund) || return 1
  fi
  [ -x /usr/bin/chromium ] || [ -n "${PADLOCK_CHROMIUM:-}" ] || { echo "no /usr/bin/chromium" >&2; return 1; }
  echo "browser: $(chromium --version 2>/dev/null), node $(node --version)," \
    "playwright-core $(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version')"
}

browser_tests() {
  local target=${CARGO_TARGET_DIR:-target}
  case $target in /*) ;; *) target=$ROOT/$target ;; esac
  PADLOCK_BIN_DIR=$target/debug node --test tests/browser/
}

step install install_tools
step postgres start_postgres
step fmt rust_fmt
step clippy cargo clippy --locked --workspace --all-targets -- -D warnings
step build cargo build --locked --workspace --bins
step manifests "$ROOT/tests/validate-manifests.sh"
step rust-tests rust_tests
step e2e e2e_tests
step browser-install install_browser
step browser browser_tests
step bench-smoke bash "$ROOT/tests/bench-smoke.sh"
CURRENT=""
