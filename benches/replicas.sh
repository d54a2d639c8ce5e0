#!/usr/bin/env bash
# Throughput of the storage backends, measured by `tokenvault bench` over
# gRPC on loopback: 1 replica on RocksDB, 1 on PostgreSQL and 3 on one
# PostgreSQL (the load spread evenly over the three). Every run uses synced
# writes (RocksDB WAL sync / PostgreSQL synchronous_commit) and the local
# KEK. Needs the PostgreSQL of tests/setup-machine.sh (or
# TOKENVAULT_TEST_PG_URL); each PostgreSQL run gets a fresh database.
#
#   bash benches/replicas.sh                       # c=64, batch 1 and 100
#   SECONDS_PER_CELL=3 bash benches/replicas.sh --concurrency 16
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tokenvault/target}"
cargo build --release --bin tokenvault >&2
bin="$CARGO_TARGET_DIR/release/tokenvault"
pg_admin="${TOKENVAULT_TEST_PG_URL:-postgres://postgres@127.0.0.1:55432/postgres}"
pg_base="${pg_admin%/*}"
command -v psql >/dev/null || { echo "bench: psql not found; run tests/setup-machine.sh" >&2; exit 1; }
psql -q "$pg_admin" -c 'select 1' >/dev/null || { echo "bench: PostgreSQL unreachable at $pg_admin; run tests/setup-machine.sh" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

api_key="tvk_bench_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
key_sha=$(printf %s "$api_key" | sha256sum | cut -d' ' -f1)
head -c 32 /dev/urandom >"$work/kek.key"
chmod 600 "$work/kek.key"

# config NAME STORAGE_TOML: a config file with the shared KEK and principal.
config() {
  cat >"$work/$1.toml" <<CONF
$2
[kek]
provider = "local"
path = "$work/kek.key"
[[principals]]
name = "bench"
api_key_sha256 = "$key_sha"
allow = ["tokenize", "detokenize"]
reveal = { default = "full" }
CONF
}

# start NAME: serves $work/NAME.toml; appends its address to $addrs.
start() {
  "$bin" serve --config "$work/$1.toml" --data-dir "$work/$1" --listen 127.0.0.1:0 \
    >"$work/$1.out" 2>>"$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q "listening on" "$work/$1.out" 2>/dev/null && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/^tokenvault listening on //p' "$work/$1.out")
  [ -n "$addr" ] || { cat "$work/$1.log" >&2; exit 1; }
  addrs+=("http://$addr")
}

stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid"; wait "$pid" || true; done
  pids=()
}

# run LABEL: benches the replicas in $addrs.
run() {
  local label=$1 first=${addrs[0]} rest
  shift
  rest=$(IFS=,; echo "${addrs[*]:1}")
  echo
  echo "## $label"
  TOKENVAULT_API_KEY="$api_key" "$bin" bench --addr "$first" ${rest:+--also-addr "$rest"} \
    --seconds "${SECONDS_PER_CELL:-5}" --concurrency 64 --batch 1,100 "$@" 2>&1 | grep -v '^audit' || true
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(psql -At "$pg_admin" -c 'select version()' | cut -d, -f1); tokenvault $("$bin" --version | cut -d' ' -f2)"

addrs=()
config rocks '[storage]
backend = "rocksdb"'
start rocks
run "1 replica, RocksDB" "$@"
stop_all

for n in 1 3; do
  db="tv_bench_$$_$n"
  psql -q "$pg_admin" -c "CREATE DATABASE $db"
  addrs=()
  for i in $(seq 1 "$n"); do
    config "pg$n-$i" "[storage]
backend = \"postgres\"
[storage.postgres]
url = \"$pg_base/$db\"
replica = \"bench-$i\"
pool_size = 16"
    start "pg$n-$i"
  done
  run "$n replica(s), PostgreSQL" "$@"
  stop_all
  psql -q "$pg_admin" -c "DROP DATABASE $db"
done
