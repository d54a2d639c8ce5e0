#!/usr/bin/env bash
# Throughput of the storage backends, measured by `tokenvault bench` over
# gRPC on loopback: 1 replica on RocksDB, 1 on PostgreSQL and 3 on one
# PostgreSQL (the load spread evenly over the three), each next to the peer
# baseline (OpenBao transit `encrypt` of the same values, `bao server -dev`
# on the same machine) at the same concurrency and batch, in the same run.
# The PostgreSQL configurations run with group commit on (the default) and
# off (`group_max_calls = 1`: a transaction per call, as before it). Every
# run uses synced writes (RocksDB WAL sync / PostgreSQL synchronous_commit)
# and the local KEK. Needs the PostgreSQL of tests/setup-machine.sh (or
# TOKENVAULT_TEST_PG_URL) and `bao`; each PostgreSQL run gets a fresh
# database.
#
#   bash benches/replicas.sh                       # c=16 and 64, batch 1 and 100
#   SECONDS_PER_CELL=3 CONCURRENCY=16 SECTIONS="pg1 pg3" bash benches/replicas.sh --batch 1
#
# SECTIONS (default "rocks pg1 pg3 pg1-off pg3-off") picks the
# configurations; GROUP_OPTIONS adds [storage.postgres] lines to the
# grouped ones (e.g. GROUP_OPTIONS="group_in_flight = 1").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tokenvault/target}"
cargo build --release --bin tokenvault >&2
bin="$CARGO_TARGET_DIR/release/tokenvault"
pg_admin="${TOKENVAULT_TEST_PG_URL:-postgres://postgres@127.0.0.1:55432/postgres}"
pg_base="${pg_admin%/*}"
command -v psql >/dev/null || { echo "bench: psql not found; run tests/setup-machine.sh" >&2; exit 1; }
psql -q "$pg_admin" -c 'select 1' >/dev/null || { echo "bench: PostgreSQL unreachable at $pg_admin; run tests/setup-machine.sh" >&2; exit 1; }

command -v bao >/dev/null || { echo "bench: bao not found; run tests/setup-machine.sh" >&2; exit 1; }
# shellcheck source=benches/lib.sh
. benches/lib.sh

work=$(mktemp -d)
pids=()
bao_pid=
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [ -n "$bao_pid" ]; then kill "$bao_pid" 2>/dev/null; wait "$bao_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
start_bao

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
# The load tool makes millions of new values for 64 subjects: a bulk
# importer's limits (docs/security.md, "Tokenize limits").
[new_value_limits.principals.bench]
per_subject_per_principal = 1000000000
per_subject = 1000000000
per_principal = 1000000000
per_shape_per_principal_permille = 1000
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
  TOKENVAULT_API_KEY="$api_key" BENCH_PEER_TOKEN="$BAO_TOKEN" "$bin" bench --addr "$first" \
    ${rest:+--also-addr "$rest"} --peer-addr "$BAO_ADDR" --seconds "${SECONDS_PER_CELL:-5}" \
    --concurrency "${CONCURRENCY:-16,64}" --batch "${BATCH:-1,100}" "$@" 2>&1 | grep -v '^audit' || true
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(psql -At "$pg_admin" -c 'select version()' | cut -d, -f1); tokenvault $("$bin" --version | cut -d' ' -f2); peer: $(bao version | head -1)"

# postgres N GROUPING LABEL: N replicas on a fresh database, group commit
# on (GROUP_OPTIONS) or off.
postgres() {
  local n=$1 grouping=$2 label=$3 db="tv_bench_$$_$1_$2" group
  shift 3
  if [ "$grouping" = on ]; then group="${GROUP_OPTIONS:-}"; else group="group_max_calls = 1"; fi
  psql -q "$pg_admin" -c "CREATE DATABASE $db"
  psql -q "$pg_admin" -c "CREATE DATABASE ${db}_ledger"
  addrs=()
  for i in $(seq 1 "$n"); do
    config "pg$n$grouping-$i" "[storage]
backend = \"postgres\"
[storage.postgres]
url = \"$pg_base/$db\"
replica = \"bench-$i\"
pool_size = 16
$group
[erasure.postgres]
url = \"$pg_base/${db}_ledger\""
    start "pg$n$grouping-$i"
  done
  run "$label" "$@"
  stop_all
  psql -q "$pg_admin" -c "DROP DATABASE $db"
  psql -q "$pg_admin" -c "DROP DATABASE ${db}_ledger"
}

for section in ${SECTIONS:-rocks pg1 pg3 pg1-off pg3-off}; do
  case $section in
    rocks)
      addrs=()
      config rocks "[storage]
backend = \"rocksdb\"
[erasure]
ledger = \"$work/rocks-ledger/erasure-ledger.jsonl\""
      start rocks
      run "1 replica, RocksDB" "$@"
      stop_all ;;
    pg1) postgres 1 on "1 replica, PostgreSQL, group commit" "$@" ;;
    pg3) postgres 3 on "3 replicas, PostgreSQL, group commit" "$@" ;;
    pg1-off) postgres 1 off "1 replica, PostgreSQL, group commit off" "$@" ;;
    pg3-off) postgres 3 off "3 replicas, PostgreSQL, group commit off" "$@" ;;
    *) echo "bench: unknown section $section" >&2; exit 1 ;;
  esac
done
