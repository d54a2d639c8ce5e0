#!/usr/bin/env bash
# End-to-end load test: a release tokenvault (serve --dev, synced writes) and
# the peer baseline, OpenBao transit (`bao server -dev`), both on loopback,
# measured by `tokenvault bench` in one run. Bounded: each cell runs
# SECONDS seconds (default 5). Prints a markdown table.
#
#   bash benches/e2e.sh                 # full matrix
#   SECONDS_PER_CELL=2 bash benches/e2e.sh --concurrency 16 --batch 100
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tokenvault/target}"
cargo build --release --bin tokenvault >&2
bin="$CARGO_TARGET_DIR/release/tokenvault"
command -v bao >/dev/null || { echo "bench: bao not found; run tests/setup-machine.sh" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
  [ -n "${tv_pid:-}" ] && kill -TERM "$tv_pid" 2>/dev/null && wait "$tv_pid" 2>/dev/null || true
  [ -n "${bao_pid:-}" ] && kill "$bao_pid" 2>/dev/null && wait "$bao_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bao_port=$(free_port)
bao server -dev -dev-root-token-id=bench-root -dev-listen-address="127.0.0.1:$bao_port" \
  >"$work/bao.log" 2>&1 &
bao_pid=$!

"$bin" serve --dev --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/tv.out" 2>"$work/tv.log" &
tv_pid=$!
for _ in $(seq 1 300); do
  grep -q "listening on" "$work/tv.out" 2>/dev/null && \
    BAO_ADDR="http://127.0.0.1:$bao_port" bao status >/dev/null 2>&1 && break
  sleep 0.1
done
addr=$(sed -n 's/^tokenvault listening on //p' "$work/tv.out")
[ -n "$addr" ] || { cat "$work/tv.log" >&2; exit 1; }

echo "machine: $(nproc) cores; tokenvault $("$bin" --version | cut -d' ' -f2), synced writes, local KEK; peer: $(bao version | head -1)"
BENCH_PEER_TOKEN=bench-root "$bin" bench --addr "http://$addr" --data-dir "$work/data" \
  --peer-addr "http://127.0.0.1:$bao_port" --seconds "${SECONDS_PER_CELL:-5}" "$@"

kill -TERM "$tv_pid"; wait "$tv_pid" || true; tv_pid=
grep 'key provider calls' "$work/tv.log" | sed 's/\x1b\[[0-9;]*m//g' || true
