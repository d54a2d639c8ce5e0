#!/usr/bin/env bash
# The audit log's own share of Detokenize throughput: the same Detokenize
# load with and without its audit record, on one binary.
#
# benches/audit.sh compares audited Detokenize with Tokenize of known values
# (no audit record); that also counts what Detokenize does that Tokenize
# does not (random token lookups instead of one subject's clustered index
# keys, decrypting every value, a larger response). This script isolates
# the audit: it builds HEAD with benches/experiments/unaudited-detokenize.patch
# (a switch, read from the environment at start, that skips Detokenize's
# audit record) and runs `tokenvault bench` against it twice per round:
# audited, then with TOKENVAULT_EXPERIMENT_UNAUDITED=1. That build is for
# this measurement only and is deleted with the work directory; the
# tree's own binary is rebuilt afterwards.
#
#   bash benches/audit-share.sh                    # 2 rounds, 5 s per cell
#   ROUNDS=1 SECONDS_PER_CELL=3 bash benches/audit-share.sh --batch 100
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup

# The experiment is built from HEAD in a throwaway worktree, with the
# shared target directory (RocksDB's C++ is not rebuilt).
git worktree add --detach --quiet "$work/tree" HEAD
git -C "$work/tree" apply "$PWD/benches/experiments/unaudited-detokenize.patch"
(cd "$work/tree" && cargo build --release --bin tokenvault >&2)
cp "$CARGO_TARGET_DIR/release/tokenvault" "$work/tokenvault-experiment"
# Cargo keys its freshness check on paths relative to the package and on
# mtimes, so it would take the experiment's build for this tree's: the
# patched file is touched at once (so that any later build, even after a
# failure here, rebuilds), the tree's binary rebuilt and checked.
touch src/api/service.rs
git worktree remove --force "$work/tree"
cargo build --release --bin tokenvault >&2
if grep -q TOKENVAULT_EXPERIMENT_UNAUDITED "$CARGO_TARGET_DIR/release/tokenvault"; then
  echo "audit-share: $CARGO_TARGET_DIR/release/tokenvault is still the experiment's build; rebuild it" >&2
  exit 1
fi
bin="$work/tokenvault-experiment"

# run NAME: one bench against a fresh data directory; its matrix in
# $work/NAME.bench.
run() {
  local name=$1; shift
  audited_config "$name" write
  start_tokenvault "$name" --config "$work/$name.toml"
  "$bin" bench --addr "http://$addr" --seconds "${SECONDS_PER_CELL:-5}" "$@" >"$work/$name.bench"
  stop_tokenvault
}

# detokenize_records NAME: how many Detokenize records NAME's audit file has.
detokenize_records() {
  cat "$work/$1/audit.jsonl" 2>/dev/null | grep -c '"rpc":"detokenize"' || true
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); tokenvault $("$bin" --version | cut -d' ' -f2) at $(git rev-parse --short HEAD) + the experiment patch, [audit] durability = \"write\""
for round in $(seq 1 "${ROUNDS:-2}"); do
  run "audited-$round" "$@"
  TOKENVAULT_EXPERIMENT_UNAUDITED=1 run "unaudited-$round" "$@"
  # The audited run must have written Detokenize records and the
  # unaudited one none, or the pair measured nothing.
  if [ "$(detokenize_records "audited-$round")" -eq 0 ] || [ "$(detokenize_records "unaudited-$round")" -ne 0 ]; then
    echo "audit-share: round $round: the audited run wrote $(detokenize_records "audited-$round") Detokenize records, the unaudited $(detokenize_records "unaudited-$round"); the experiment switch did not take" >&2
    exit 1
  fi
  echo
  echo "## round $round"
  echo "| batch | concurrency | detokenize audited values/s | detokenize unaudited values/s | audited / unaudited | tokenize (known) values/s, audited run |"
  echo "|---:|---:|---:|---:|---:|---:|"
  # Matrix rows: | scenario | batch | concurrency | calls/s | values/s | ...
  awk -F'|' '
    function trim(s) { gsub(/ /, "", s); return s }
    FNR == 1 { file++ }
    trim($2) == "detokenize(audited)" { detok[file, trim($3), trim($4)] = trim($6); order[++n] = trim($3) "|" trim($4) }
    trim($2) == "tokenize(knownvalues)" && file == 1 { known[trim($3), trim($4)] = trim($6) }
    END {
      for (i = 1; i <= n; i++) {
        if (seen[order[i]]++) continue
        split(order[i], k, "|")
        a = detok[1, k[1], k[2]]; u = detok[2, k[1], k[2]]
        printf "| %s | %s | %s | %s | %.2f | %s |\n", k[1], k[2], a, u, (u > 0 ? a / u : 0), known[k[1], k[2]]
      }
    }' "$work/audited-$round.bench" "$work/unaudited-$round.bench"
done
