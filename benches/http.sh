#!/usr/bin/env bash
# HTTP/JSON against gRPC against the peer, in one run: a release tokenvault
# (serve --dev, synced writes, its HTTP API on a port of its own) and
# OpenBao transit (`bao server -dev`), both on loopback, measured by
# `tokenvault bench --http-addr`: every cell has Tokenize of known values
# and Detokenize over gRPC and over HTTP/JSON, and transit encrypt over
# HTTP, with the same values. Bounded: SECONDS_PER_CELL seconds a cell.
#
#   bash benches/http.sh                                  # c=16, batch 1 and 100
#   SECONDS_PER_CELL=2 bash benches/http.sh --concurrency 64
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup
start_tokenvault tv --dev --data-dir "$work/data"
http=$(sed -n 's/^tokenvault http listening on //p' "$work/tv.out")
[ -n "$http" ] || { echo "bench: the server printed no HTTP address" >&2; cat "$work/tv.out" >&2; exit 1; }

echo "machine: $(nproc) cores; tokenvault $("$bin" --version | cut -d' ' -f2), synced writes, local KEK; peer: $(bao version | head -1)"
BENCH_PEER_TOKEN=bench-root "$bin" bench --addr "http://$addr" --data-dir "$work/data" \
  --http-addr "http://$http" --peer-addr "$BAO_ADDR" --seconds "${SECONDS_PER_CELL:-5}" \
  --concurrency 16 --batch 1,100 "$@"

stop_tokenvault
