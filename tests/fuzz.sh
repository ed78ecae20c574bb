#!/usr/bin/env bash
# Fuzzes every place padlock reads outside input (crates/fuzz):
#
#   tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Real fuzzing, run by hand (or a scheduled job), NOT by tests/run-all.sh:
# the suite instead replays every committed corpus file through the same
# library calls as ordinary tests (crates/fuzz/tests/corpus.rs), without
# cargo-fuzz. Needs cargo-fuzz (cargo install cargo-fuzz --locked
# --version 0.13.2). The targets are the workspace of their own in
# crates/fuzz/cargo-fuzz (its own Cargo.lock and target/); the harnesses
# they call are the root workspace's padlock-fuzz.
#
# builds the cargo-fuzz targets (stable Rust: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its nightly-only flags), then runs each target for
# SECONDS_PER_TARGET (default 60) in turn, one at a time, starting from the
# committed seeds (crates/fuzz/corpus/<target>, read only) plus what earlier
# runs found (the working corpus, $PADLOCK_FUZZ_WORK/corpus/<target>), and
# prints per target: runs, runs/s, corpus size, time and result. Exits
# non-zero when a target crashed; its input is in
# crates/fuzz/cargo-fuzz/artifacts/<target>/ and the log says how to
# reproduce it.
#
# Environment:
#   PADLOCK_FUZZ_WORK       working corpus and logs (default crates/fuzz/cargo-fuzz/target/fuzz-work)
#   PADLOCK_FUZZ_SANITIZER  address (default) or none: none runs faster but
#                           misses memory errors in the C code (SQLite) and
#                           in dependencies' unsafe code.
#   PADLOCK_FUZZ_PROFILE    release (default: optimised, with debug assertions
#                           and overflow checks) or dev (unoptimised: builds
#                           much faster, runs much slower).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
FUZZ_DIR=crates/fuzz/cargo-fuzz
SEEDS=crates/fuzz/corpus

SECONDS_PER_TARGET=${1:-60}
shift || true
case $SECONDS_PER_TARGET in
  '' | *[!0-9]*) echo "usage: tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

command -v cargo-fuzz >/dev/null || {
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 1
}

export RUSTC_BOOTSTRAP=1
SANITIZER=${PADLOCK_FUZZ_SANITIZER:-address}
WORK=${PADLOCK_FUZZ_WORK:-$ROOT/$FUZZ_DIR/target/fuzz-work}
FUZZ=(cargo fuzz)
FLAGS=(--fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER")
case ${PADLOCK_FUZZ_PROFILE:-release} in
  release) ;;
  dev) FLAGS+=(--dev) ;;
  *) echo "PADLOCK_FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
esac

if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <("${FUZZ[@]}" list --fuzz-dir "$FUZZ_DIR")
fi

t0=$SECONDS
echo "==> building ${#TARGETS[@]} fuzz targets (${PADLOCK_FUZZ_PROFILE:-release}, sanitizer: $SANITIZER)"
"${FUZZ[@]}" build "${FLAGS[@]}"
echo "==> built in $((SECONDS - t0))s"

mkdir -p "$WORK/logs"
ROWS=()
FAILED=()
for target in "${TARGETS[@]}"; do
  corpus=$WORK/corpus/$target
  log=$WORK/logs/$target.log
  mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$target"
  echo "==> fuzzing $target for ${SECONDS_PER_TARGET}s"
  started=$SECONDS
  rc=0
  # -rss_limit_mb: the store grows in memory over a long run; 2 GiB is
  # libFuzzer's default, stated so a leak shows up as a failure here.
  "${FUZZ[@]}" run "${FLAGS[@]}" "$target" "$corpus" "$SEEDS/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=2048 \
    -max_len=4096 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  took=$((SECONDS - started))
  runs=$(sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$log" | tail -1)
  [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
  size=$(find "$corpus" -type f | wc -l)
  per_sec=-
  [ -n "$runs" ] && [ "$took" -gt 0 ] && per_sec=$((runs / took))
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc)"
    FAILED+=("$target")
    echo "--- $target: last lines of $log" >&2
    tail -n 40 "$log" >&2
    echo "--- reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir $FUZZ_DIR $target <artifact from $FUZZ_DIR/artifacts/$target/>" >&2
  fi
  ROWS+=("$(printf '%-14s %10s %8s %8s %6ss  %s' "$target" "${runs:-?}" "$per_sec" "$size" "$took" "$result")")
done

echo
printf '%-14s %10s %8s %8s %7s  %s\n' target runs runs/s corpus time result
printf '%s\n' "${ROWS[@]}"
echo "fuzz: ${#TARGETS[@]} targets, ${SECONDS_PER_TARGET}s each, $((SECONDS - t0))s in all; working corpus in $WORK/corpus"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${FAILED[*]}" >&2
  exit 1
fi
