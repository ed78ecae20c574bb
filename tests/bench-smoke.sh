#!/usr/bin/env bash
# A few-second smoke run of the load tool (BENCHMARKS.md): not a benchmark,
# only proof that every padlock-bench scenario works end to end against the
# real binaries and that none of its requests fails.
#
#   tests/bench-smoke.sh
#
# 1. builds padlock-auth, padlock-deploy and padlock-bench (debug; a no-op
#    after `cargo build --workspace --bins`);
# 2. provisions a support+operator user with `padlock-auth users add`, then
#    starts auth, deploy and the gateway on 127.0.0.1:0 with SQLite in a
#    temp directory; the first padlock-bench run enrolls that user's TOTP
#    (support and CreateApp need a second factor) and keeps the secret in
#    the temp directory for the later runs;
# 3. runs `padlock-bench health`, `check-access --users 20` (and
#    `--refused`), `verify --users 20`, `sign-in`, `refresh` and
#    `transport` (through a gateway), about two seconds each, writing JSON;
# 4. fails if padlock-bench exits non-zero (any failed request, a phase with
#    no answer, a setup error) or a report lacks the expected phases;
# 5. stops everything it started and removes the temp directory, whatever
#    happens.
#
# Environment:
#   PADLOCK_BENCH_SMOKE_DURATION  measured time per phase (default 2s)
#   PADLOCK_BENCH_PROFILE         debug (default) or release
#   CARGO_TARGET_DIR              honoured
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PROFILE=${PADLOCK_BENCH_PROFILE:-debug}
DURATION=${PADLOCK_BENCH_SMOKE_DURATION:-2s}
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/$PROFILE
READY_TIMEOUT_S=30

# The services must use SQLite in the temp directory, whatever the caller's
# environment says.
unset DATABASE_URL PADLOCK_LISTEN PADLOCK_DATA_DIR PADLOCK_AUTH_URL PADLOCK_CLOCK_OFFSET_SECS

WORK=""
PIDS=()

cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Give each a few seconds to drain, then make sure it is gone.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -n "$WORK" ]; then
    for log in "$WORK"/*.err; do
      [ -f "$log" ] || continue
      echo "--- last lines of $(basename "$log")" >&2
      tail -n 20 "$log" >&2
    done
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then
    echo "bench-smoke: PASSED"
  else
    echo "bench-smoke: FAILED (exit $rc)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ready NAME PID: the address from NAME's "listening on HOST:PORT" line.
ready() {
  local name=$1 pid=$2 addr="" i
  for i in $(seq $((READY_TIMEOUT_S * 10))); do
    addr=$(sed -n 's/.*listening on \([^ ]*\)$/\1/p' "$WORK/$name.out" | head -n 1)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before it was ready" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$name not ready after ${READY_TIMEOUT_S}s" >&2
  return 1
}

# expect NAME RPC [FLOOR]: NAME's JSON report has the floor (gRPC health
# unless FLOOR names another) and an RPC phase that answered without failures.
expect() {
  python3 - "$WORK/$1.json" "$2" "${3:-grpc.health.v1.Health/Check}" <<'EOF'
import json, sys
path, rpc, floor = sys.argv[1], sys.argv[2], sys.argv[3]
report = json.load(open(path))
phases = {p["rpc"]: p for p in report["phases"]}
for name in (floor, rpc):
    p = phases.get(name)
    assert p is not None, f"{path}: no phase for {name}"
    assert p["ok"] > 0, f"{path}: {name} got no answer"
    assert not p["errors"], f"{path}: {name} failed: {p['errors']}"
EOF
}

build_flags=()
[ "$PROFILE" = release ] && build_flags=(--release)
cargo build --locked "${build_flags[@]}" --workspace --bins  # the same set as run-all's build step, so CI reuses it

WORK=$(mktemp -d "${TMPDIR:-/tmp}/padlock-bench-smoke.XXXXXX")
PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

echo "==> provisioning the support user bench-support (support, operator)"
printf '%s\n' "$PASSWORD" | "$BIN/padlock-auth" --data-dir "$WORK/auth" \
  users add --username bench-support --role support --role operator \
  >"$WORK/users-add.out" 2>"$WORK/users-add.err"

"$BIN/padlock-auth" --listen 127.0.0.1:0 --data-dir "$WORK/auth" \
  >"$WORK/auth.out" 2>"$WORK/auth.err" &
PIDS+=("$!")
AUTH=$(ready auth "$!")
"$BIN/padlock-deploy" --listen 127.0.0.1:0 --data-dir "$WORK/deploy" --auth-url "http://$AUTH" \
  >"$WORK/deploy.out" 2>"$WORK/deploy.err" &
PIDS+=("$!")
DEPLOY=$(ready deploy "$!")
"$BIN/padlock-gateway" --listen 127.0.0.1:0 --auth-url "http://$AUTH" --deploy-url "http://$DEPLOY" \
  >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
PIDS+=("$!")
GATEWAY=$(ready gateway "$!")
echo "==> auth on $AUTH, deploy on $DEPLOY, gateway on $GATEWAY"

export PADLOCK_BENCH_SUPPORT_USERNAME=bench-support
export PADLOCK_BENCH_SUPPORT_PASSWORD=$PASSWORD
export PADLOCK_BENCH_SUPPORT_TOTP_FILE=$WORK/support-totp

# bench NAME ARGS...: one padlock-bench run, its report in $WORK/NAME.json.
bench() {
  local name=$1
  shift
  echo "==> padlock-bench $* --duration $DURATION --warmup 0s"
  "$BIN/padlock-bench" "$@" --duration "$DURATION" --warmup 0s --json "$WORK/$name.json"
}

bench health health --addr "$DEPLOY"
python3 - "$WORK/health.json" <<'EOF'
import json, sys
[p] = json.load(open(sys.argv[1]))["phases"]
assert p["floor"] and p["ok"] > 0 and not p["errors"], p
EOF
bench check-access check-access --auth "$AUTH" --deploy "$DEPLOY" --users 20
expect check-access padlock.deploy.v1.PolicyService/CheckAccess
bench check-access-refused check-access --auth "$AUTH" --deploy "$DEPLOY" --users 10 --refused
expect check-access-refused padlock.deploy.v1.PolicyService/CheckAccess
bench verify verify --auth "$AUTH" --users 20
expect verify padlock.auth.v1.TwoFactorService/Verify
bench sign-in sign-in --auth "$AUTH" --users 8 --concurrency 8
expect sign-in padlock.auth.v1.SessionService/SignIn
bench refresh refresh --auth "$AUTH" --users 10
expect refresh padlock.auth.v1.SessionService/Refresh
bench transport transport --auth "$AUTH" --deploy "$DEPLOY" --gateway "$GATEWAY" --users 5 --concurrency 4
expect transport "POST /api/v1/packages/{id}/transports" "GET /healthz"
