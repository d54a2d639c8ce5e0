# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run): a release build of
# tokenvault, a work directory removed on exit, and an OpenBao dev server
# with transit on a free loopback port. After `bench_setup`:
#   $bin       the tokenvault binary        $work  the work directory
#   BAO_ADDR / BAO_TOKEN exported, transit enabled
# A script sets tv_pid while a tokenvault runs, so the exit trap stops it.

bench_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tokenvault/target}"
  cargo build --release --bin tokenvault >&2
  bin="$CARGO_TARGET_DIR/release/tokenvault"
  command -v bao >/dev/null || { echo "bench: bao not found; run tests/setup-machine.sh" >&2; exit 1; }
  work=$(mktemp -d)
  tv_pid=
  trap bench_cleanup EXIT
  start_bao
}

bench_cleanup() {
  if [ -n "${tv_pid:-}" ]; then kill -TERM "$tv_pid" 2>/dev/null; wait "$tv_pid" 2>/dev/null; fi
  if [ -n "${bao_pid:-}" ]; then kill "$bao_pid" 2>/dev/null; wait "$bao_pid" 2>/dev/null; fi
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_bao() {
  local port
  port=$(free_port)
  export BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN=bench-root
  bao server -dev -dev-root-token-id="$BAO_TOKEN" -dev-listen-address="127.0.0.1:$port" \
    >"$work/bao.log" 2>&1 &
  bao_pid=$!
  for _ in $(seq 1 300); do bao status >/dev/null 2>&1 && break; sleep 0.1; done
  bao secrets enable transit >/dev/null
}

# start_tokenvault NAME ARGS...: runs `tokenvault serve ARGS` with its output
# in $work/NAME.out and .log, waits for it to listen, sets tv_pid and addr.
start_tokenvault() {
  local name=$1; shift
  "$bin" serve "$@" --listen 127.0.0.1:0 >"$work/$name.out" 2>>"$work/$name.log" &
  tv_pid=$!
  for _ in $(seq 1 300); do grep -q "listening on" "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^tokenvault listening on //p' "$work/$name.out")
  [ -n "$addr" ] || { cat "$work/$name.log" >&2; exit 1; }
}

stop_tokenvault() { kill -TERM "$tv_pid"; wait "$tv_pid" || true; tv_pid=; }

# audited_config NAME DURABILITY: writes $work/NAME.toml, a server with its
# data in $work/NAME, a local KEK ($work/kek.key, made once) and one
# principal, bench-admin, allowed every RPC with full reveal, whose API key
# is exported as TOKENVAULT_API_KEY for the load tool.
audited_config() {
  local name=$1 durability=$2
  [ -f "$work/kek.key" ] || head -c 32 /dev/urandom >"$work/kek.key"
  export TOKENVAULT_API_KEY=tvk_bench_audit_admin_key
  cat >"$work/$name.toml" <<EOF
data_dir = "$work/$name"
[erasure]
ledger = "$work/$name-ledger/erasure-ledger.jsonl"
[kek]
provider = "local"
path = "$work/kek.key"
[audit]
durability = "$durability"
[[principals]]
name = "bench-admin"
api_key_sha256 = "$(printf %s "$TOKENVAULT_API_KEY" | sha256sum | cut -d' ' -f1)"
allow = ["tokenize", "detokenize", "redact_text", "restore_text", "forget_subject", "export_subject"]
reveal = { default = "full" }
EOF
}
