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
git worktree remove --force "$work/tree"
# Cargo keys its freshness check on paths relative to the package and on
# mtimes, so it would take the experiment's build for this tree's: the
# patched file is touched to force the rebuild, and the result checked.
touch src/api/service.rs
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

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); tokenvault $("$bin" --version | cut -d' ' -f2) at $(git rev-parse --short HEAD) + the experiment patch, [audit] durability = \"write\""
for round in $(seq 1 "${ROUNDS:-2}"); do
  run "audited-$round" "$@"
  TOKENVAULT_EXPERIMENT_UNAUDITED=1 run "unaudited-$round" "$@"
  # The unaudited run must have written no Detokenize record, or it
  # measured nothing.
  if grep -q '"rpc":"detokenize"' "$work/unaudited-$round/audit.jsonl" 2>/dev/null; then
    echo "audit-share: the unaudited run wrote Detokenize records; the experiment switch did not take" >&2
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
    trim($2) == "detokenize(audited)" { detok[file, trim($3), trim($4)] = trim($6); cells[trim($3) "|" trim($4)] = 1; order[++n] = trim($3) "|" trim($4) }
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
