#!/usr/bin/env bash
# The audit log's cost under each durability, in one run: a release
# tokenvault with `[audit] durability = "write"` (the default: the record is
# written to the database's WAL and the JSON-lines file before the reveal,
# both synced every sync_interval_ms) and then with "sync" (both synced
# before the reveal). For each, `tokenvault bench` prints its matrix and the
# audit cost table: audited Detokenize next to Tokenize of known values (the
# same lookups and key work, no audit record).
#
#   bash benches/audit.sh                       # 5 s per cell
#   SECONDS_PER_CELL=3 bash benches/audit.sh --concurrency 16,64
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); tokenvault $("$bin" --version | cut -d' ' -f2), synced token writes, local KEK"
for durability in write sync; do
  audited_config "$durability" "$durability"
  start_tokenvault "$durability" --config "$work/$durability.toml"
  echo
  echo "## [audit] durability = \"$durability\""
  "$bin" bench --addr "http://$addr" --seconds "${SECONDS_PER_CELL:-5}" "$@"
  stop_tokenvault
done
