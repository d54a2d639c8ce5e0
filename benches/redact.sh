#!/usr/bin/env bash
# RedactText against Microsoft Presidio, in one run on the same corpus
# (tests/data/chat_corpus.jsonl):
#   1. Presidio's analyzer, pattern recognizers only (benches/presidio.py):
#      precision and recall per kind, analyze-only messages/s;
#   2. tokenvault's detection in process, precision and recall per kind
#      (tests/scan_corpus.rs prints them);
#   3. RedactText over gRPC, tokenizing every finding with synced writes,
#      at each concurrency (default 16,64);
# then the RedactText / Presidio ratio per concurrency. Needs
# `pip install presidio-analyzer` (tests/setup-machine.sh does not install
# it: it is a benchmark peer, not a test dependency).
#   bash benches/redact.sh [--concurrency 16,64] [--seconds 10]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
python3 -c 'import presidio_analyzer' 2>/dev/null || {
  echo "bench: presidio-analyzer is missing: pip install presidio-analyzer" >&2
  exit 1
}
bench_setup
corpus=tests/data/chat_corpus.jsonl

echo "== Presidio (pattern recognizers, no NER), same corpus"
python3 benches/presidio.py | tee "$work/presidio.txt"
presidio_rate=$(sed -n 's/^\([0-9]*\) messages\/s.*/\1/p' "$work/presidio.txt")

echo
echo "== tokenvault detection in process (precision / recall per kind)"
cargo test --release --test scan_corpus -- --nocapture 2>/dev/null | grep -E '^(kind|[a-z_]+ +[0-9])' || true

echo
echo "== tokenvault RedactText over gRPC (every finding tokenized, synced writes, local KEK)"
start_tokenvault tv --dev --data-dir "$work/data"
"$bin" bench --addr "http://$addr" --data-dir "$work/data" --redact-corpus "$corpus" \
  --concurrency 16,64 --seconds 10 "$@" | tee "$work/redact.txt"
stop_tokenvault

echo
echo "| concurrency | RedactText messages/s | Presidio analyze messages/s | ratio |"
echo "|---:|---:|---:|---:|"
awk -F'|' -v p="$presidio_rate" '/^\| redact_text/ {
  gsub(/ /, "", $3); gsub(/ /, "", $4);
  printf "| %s | %s | %s | %.1fx |\n", $3, $4, p, $4 / p }' "$work/redact.txt"
