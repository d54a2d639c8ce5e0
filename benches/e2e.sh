#!/usr/bin/env bash
# End-to-end load test: a release tokenvault (serve --dev, synced writes) and
# the peer baseline, OpenBao transit (`bao server -dev`), both on loopback,
# measured by `tokenvault bench` in one run. Bounded: each cell runs
# SECONDS seconds (default 5). Prints a markdown table, then the audit log's
# cost per cell: audited Detokenize next to Tokenize of known values (the same
# lookups and key work, no audit record).
#
#   bash benches/e2e.sh                 # full matrix
#   SECONDS_PER_CELL=2 bash benches/e2e.sh --concurrency 16 --batch 100
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup
start_tokenvault tv --dev --data-dir "$work/data"

echo "machine: $(nproc) cores; tokenvault $("$bin" --version | cut -d' ' -f2), synced writes, local KEK; peer: $(bao version | head -1)"
BENCH_PEER_TOKEN=bench-root "$bin" bench --addr "http://$addr" --data-dir "$work/data" \
  --peer-addr "$BAO_ADDR" --seconds "${SECONDS_PER_CELL:-5}" "$@"

stop_tokenvault
grep 'key provider calls' "$work/tv.log" | sed 's/\x1b\[[0-9;]*m//g' || true
