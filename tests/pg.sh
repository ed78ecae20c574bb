#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the tests.
#
#   eval "$(tests/pg.sh start)"   # sets PADLOCK_PG_DIR and PADLOCK_TEST_DATABASE_URL
#   tests/pg.sh stop "$PADLOCK_PG_DIR"
#
# `start` makes a temp dir, runs initdb and starts the server on a free
# loopback port it picks (unix socket in the temp dir, fsync on, trust auth),
# waits until it accepts connections, and prints shell assignments on stdout.
# Everything else goes to stderr. If it cannot start, it cleans up and exits
# non-zero. `stop` stops the server and removes the dir; it is safe to call
# twice or on a half-started dir.
#
# initdb refuses to run as root, so as root the server runs as the `postgres`
# user (runuser); as anyone else it runs as the caller.
#
# Environment: PADLOCK_PG_BIN (default /usr/lib/postgresql/15/bin).
set -euo pipefail

PG_BIN=${PADLOCK_PG_BIN:-/usr/lib/postgresql/15/bin}

log() { printf 'pg.sh: %s\n' "$*" >&2; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

stop() {
  local dir=${1:?usage: pg.sh stop DIR}
  [ -d "$dir" ] || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || log "pg_ctl stop failed; see $dir/log"
  fi
  rm -rf -- "$dir"
}

start() {
  for tool in initdb pg_ctl; do
    if [ ! -x "$PG_BIN/$tool" ]; then
      log "no $PG_BIN/$tool (set PADLOCK_PG_BIN to PostgreSQL's bin dir)"
      return 1
    fi
  done
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root but there is no 'postgres' user to run the server as"
    return 1
  fi

  local dir
  # Short path: the unix socket's full path must stay under 108 bytes.
  dir=$(mktemp -d /tmp/padlock-pg.XXXXXX)
  # Clean up on any failure below.
  trap 'stop "$dir"' ERR
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi

  as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { log "initdb failed:"; cat "$dir/initdb.log" >&2; false; }

  # The port is free when picked but could be taken before the server binds
  # it; pick again a few times rather than fail.
  local port attempt
  for attempt in 1 2 3; do
    port=$(free_port)
    if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 start \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on" >/dev/null 2>&1; then
      trap - ERR
      log "PostgreSQL is up on 127.0.0.1:$port (dir $dir)"
      printf 'export PADLOCK_PG_DIR=%q\n' "$dir"
      printf 'export PADLOCK_TEST_DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
    log "start on port $port failed (attempt $attempt)"
  done
  log "PostgreSQL did not start; its log:"
  cat "$dir/log" >&2 || true
  false
}

case ${1:-} in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
