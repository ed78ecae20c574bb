#!/usr/bin/env bash
# The soak (BENCHMARKS.md "Soak"): padlock under steady load at half its
# measured peak for a long time, watching for errors and for memory or file
# descriptors that grow. Not run in CI: it takes minutes and wants the
# machine to itself.
#
#   tests/soak.sh [MINUTES] [SCENARIO]
#
#   MINUTES   how long the steady load runs (default 10)
#   SCENARIO  check-access (default: deploy, 1,000 users' tokens) or refresh
#             (auth, 100 sessions; every request a database write). verify
#             cannot be soaked at half its peak: each TOTP code is used
#             once, so it would need 30 x rate users (BENCHMARKS.md).
#
# 1. builds the release binaries;
# 2. provisions a support+operator user, then starts padlock-auth (access
#    tokens valid for two hours, so none expires mid-run) and padlock-deploy
#    on 127.0.0.1:0 with SQLite in a temp directory;
# 3. measures the scenario's peak for 20 s (padlock-bench, no floor);
# 4. runs it for MINUTES at half that rate (`--rate`), sampling each
#    service's resident memory (VmRSS) and open file descriptors at the
#    start, every minute and at the end;
# 5. prints the samples, the errors by kind, the rate and the latencies, and
#    exits 1 if any request failed.
#
# Environment: CARGO_TARGET_DIR honoured; PADLOCK_SOAK_PEAK_DURATION (20s)
# and PADLOCK_SOAK_CONCURRENCY (64) shape the peak measurement and the
# soak's workers.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
MINUTES=${1:-10}
SCENARIO=${2:-check-access}
PEAK_DURATION=${PADLOCK_SOAK_PEAK_DURATION:-20s}
CONCURRENCY=${PADLOCK_SOAK_CONCURRENCY:-64}
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/release
READY_TIMEOUT_S=30

case $MINUTES in '' | *[!0-9]* | 0)
  echo "usage: tests/soak.sh [MINUTES >= 1] [check-access|refresh]" >&2
  exit 2
  ;;
esac
case $SCENARIO in
  check-access) USERS=1000 ;;
  refresh) USERS=100 ;;
  *)
    echo "unknown scenario $SCENARIO: check-access or refresh" >&2
    exit 2
    ;;
esac

unset DATABASE_URL PADLOCK_LISTEN PADLOCK_DATA_DIR PADLOCK_AUTH_URL PADLOCK_CLOCK_OFFSET_SECS

WORK=""
PIDS=()

cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
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
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ready NAME PID: the address from NAME's "listening on HOST:PORT" line.
ready() {
  local name=$1 pid=$2 addr=""
  for _ in $(seq $((READY_TIMEOUT_S * 10))); do
    addr=$(sed -n 's/.*listening on \([^ ]*\)$/\1/p' "$WORK/$name.out" | head -n 1)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "$name exited before it was ready" >&2; return 1; }
    sleep 0.1
  done
  echo "$name not ready after ${READY_TIMEOUT_S}s" >&2
  return 1
}

# sample LABEL: one line of resident memory (MiB) and open descriptors per
# service, into $WORK/samples.
sample() {
  local line=$1 pid rss fds
  for pid in "$AUTH_PID" "$DEPLOY_PID"; do
    rss=$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    line="$line $rss $fds"
  done
  echo "$line" >>"$WORK/samples"
}

cargo build --release -p padlock-auth -p padlock-deploy -p padlock-bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/padlock-soak.XXXXXX")
PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$PASSWORD" | "$BIN/padlock-auth" --data-dir "$WORK/auth" \
  users add --username bench-support --role support --role operator \
  >"$WORK/users-add.out" 2>"$WORK/users-add.err"

"$BIN/padlock-auth" --listen 127.0.0.1:0 --data-dir "$WORK/auth" --access-token-ttl 7200 \
  >"$WORK/auth.out" 2>"$WORK/auth.err" &
AUTH_PID=$!
PIDS+=("$AUTH_PID")
AUTH=$(ready auth "$AUTH_PID")
"$BIN/padlock-deploy" --listen 127.0.0.1:0 --data-dir "$WORK/deploy" --auth-url "http://$AUTH" \
  >"$WORK/deploy.out" 2>"$WORK/deploy.err" &
DEPLOY_PID=$!
PIDS+=("$DEPLOY_PID")
DEPLOY=$(ready deploy "$DEPLOY_PID")
echo "==> auth on $AUTH (pid $AUTH_PID), deploy on $DEPLOY (pid $DEPLOY_PID)"

export PADLOCK_BENCH_SUPPORT_USERNAME=bench-support
export PADLOCK_BENCH_SUPPORT_PASSWORD=$PASSWORD
target_args=(--auth "$AUTH")
[ "$SCENARIO" = check-access ] && target_args+=(--deploy "$DEPLOY")
RPC=$( [ "$SCENARIO" = check-access ] && echo padlock.deploy.v1.PolicyService/CheckAccess \
  || echo padlock.auth.v1.SessionService/Refresh)

# phase FILE FIELD: FIELD of the scenario's phase in the JSON report FILE.
phase() {
  python3 - "$1" "$RPC" "$2" <<'EOF'
import json, sys
path, rpc, field = sys.argv[1:]
[p] = [p for p in json.load(open(path))["phases"] if p["rpc"] == rpc]
value = p
for key in field.split("."):
    value = value[key]
print(value if not isinstance(value, float) else f"{value:.2f}")
EOF
}

echo "==> measuring the peak of $SCENARIO for $PEAK_DURATION"
"$BIN/padlock-bench" "$SCENARIO" "${target_args[@]}" --users "$USERS" \
  --concurrency "$CONCURRENCY" --duration "$PEAK_DURATION" --warmup 2s --no-floor \
  --json "$WORK/peak.json" >"$WORK/peak.out"
PEAK=$(phase "$WORK/peak.json" requests_per_s)
RATE=$(python3 -c "print(max(1, int(float('$PEAK') / 2)))")
echo "==> peak $PEAK requests/s; soaking at $RATE/s for $MINUTES min"

echo "minute auth_rss_mib auth_fds deploy_rss_mib deploy_fds" >"$WORK/samples"
"$BIN/padlock-bench" "$SCENARIO" "${target_args[@]}" --users "$USERS" \
  --concurrency "$CONCURRENCY" --rate "$RATE" --duration "${MINUTES}m" --warmup 0s --no-floor \
  --json "$WORK/soak.json" >"$WORK/soak.out" 2>"$WORK/soak.err" &
BENCH_PID=$!
# The bench's setup (users, tokens) comes first: start the clock when
# the measurement does.
until grep -q '^measuring' "$WORK/soak.err" 2>/dev/null; do
  kill -0 "$BENCH_PID" 2>/dev/null || break
  sleep 0.2
done
sample start
for minute in $(seq "$MINUTES"); do
  for _ in $(seq 60); do
    kill -0 "$BENCH_PID" 2>/dev/null || break 2
    sleep 1
  done
  sample "$minute"
done
BENCH_RC=0
wait "$BENCH_PID" || BENCH_RC=$?
sample end
hwm() { awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }

echo
echo "== soak: $SCENARIO, $MINUTES min at $RATE/s (half of the measured peak $PEAK/s), $CONCURRENCY workers"
column -t "$WORK/samples"
echo "peak resident (VmHWM): auth $(hwm "$AUTH_PID"), deploy $(hwm "$DEPLOY_PID")"
echo "requests ok: $(phase "$WORK/soak.json" ok), at $(phase "$WORK/soak.json" requests_per_s)/s"
echo "errors: $(phase "$WORK/soak.json" errors)"
echo "latency ms: p50 $(phase "$WORK/soak.json" latency_ms.p50)," \
  "p99 $(phase "$WORK/soak.json" latency_ms.p99), max $(phase "$WORK/soak.json" latency_ms.max)"
if [ "$BENCH_RC" -ne 0 ]; then
  echo "soak: FAILED (padlock-bench exit $BENCH_RC)" >&2
  cat "$WORK/soak.err" >&2
  exit 1
fi
echo "soak: PASSED"
