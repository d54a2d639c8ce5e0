#!/usr/bin/env bash
# Key-provider benchmark: the same load against a release tokenvault on the
# local KEK and on the Vault KEK (OpenBao transit, `bao server -dev`), both
# on loopback, in one run:
#   1. tokenize --kek-values new values for each of --subjects NEW subjects
#      (KEK calls: one wrap per new subject), then as many again for the
#      same, now KNOWN, subjects (KEK calls: none);
#   2. restart the server and detokenize one token per subject in calls of
#      100 (every subject's key is cold: unwrapped in batches).
# Prints one markdown table. Bounded by the load's size.
#
#   bash benches/kek.sh                       # 1,000 subjects x 100 values
#   SUBJECTS=200 bash benches/kek.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tokenvault/target}"
cargo build --release --bin tokenvault >&2
bin="$CARGO_TARGET_DIR/release/tokenvault"
command -v bao >/dev/null || { echo "bench: bao not found; run tests/setup-machine.sh" >&2; exit 1; }
subjects="${SUBJECTS:-1000}"
values="${VALUES:-100}"
concurrency="${CONCURRENCY:-16}"

work=$(mktemp -d)
tv_pid=
cleanup() {
  [ -n "$tv_pid" ] && kill -TERM "$tv_pid" 2>/dev/null && wait "$tv_pid" 2>/dev/null || true
  [ -n "${bao_pid:-}" ] && kill "$bao_pid" 2>/dev/null && wait "$bao_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bao_port=$(free_port)
export BAO_ADDR="http://127.0.0.1:$bao_port" BAO_TOKEN=bench-root
bao server -dev -dev-root-token-id=bench-root -dev-listen-address="127.0.0.1:$bao_port" >"$work/bao.log" 2>&1 &
bao_pid=$!
for _ in $(seq 1 300); do bao status >/dev/null 2>&1 && break; sleep 0.1; done
bao secrets enable transit >/dev/null
bao write -f transit/keys/tokenvault >/dev/null

key=tvk_bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
key_sha=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
principal="[[principals]]
name = \"bench\"
api_key_sha256 = \"$key_sha\"
allow = [\"tokenize\", \"detokenize\"]"
head -c 32 /dev/urandom >"$work/kek.key"; chmod 600 "$work/kek.key"
cat >"$work/local.toml" <<TOML
[kek]
provider = "local"
path = "$work/kek.key"
$principal
TOML
cat >"$work/vault.toml" <<TOML
[kek]
provider = "vault"
address = "$BAO_ADDR"
key_name = "tokenvault"
token_env = "BAO_TOKEN"
$principal
TOML

start() { # provider
  "$bin" serve --config "$work/$1.toml" --listen 127.0.0.1:0 --data-dir "$work/data-$1" \
    >"$work/tv-$1.out" 2>>"$work/tv-$1.log" &
  tv_pid=$!
  for _ in $(seq 1 300); do grep -q "listening on" "$work/tv-$1.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^tokenvault listening on //p' "$work/tv-$1.out")
  [ -n "$addr" ] || { cat "$work/tv-$1.log" >&2; exit 1; }
}
stop() { kill -TERM "$tv_pid"; wait "$tv_pid" || true; tv_pid=; }
bench() { # provider phase
  TOKENVAULT_API_KEY="$key" "$bin" bench --addr "http://$addr" --data-dir "$work/data-$1" \
    --subjects "$subjects" --kek-values "$values" --concurrency "$concurrency" \
    --kek-phase "$2" --kek-state "$work/state-$1" --label "$1"
}

echo "machine: $(nproc) cores; tokenvault $("$bin" --version | cut -d' ' -f2); $subjects subjects x $values values, concurrency $concurrency, calls of $values values; peer KEK: $(bao version | head -1)"
for provider in local vault; do
  start "$provider"; bench "$provider" load | { [ "$provider" = local ] && cat || tail -n +3; }
  stop
  start "$provider"; bench "$provider" cold | tail -n +3
  stop
done
