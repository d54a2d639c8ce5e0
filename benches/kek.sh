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
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
bench_setup
subjects="${SUBJECTS:-1000}"
values="${VALUES:-100}"
concurrency="${CONCURRENCY:-16}"

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

start() { start_tokenvault "tv-$1" --config "$work/$1.toml" --data-dir "$work/data-$1"; }
stop() { stop_tokenvault; }
bench() { # provider phase
  TOKENVAULT_API_KEY="$key" "$bin" bench --addr "http://$addr" --data-dir "$work/data-$1" \
    --subjects "$subjects" --kek-values "$values" --concurrency "$concurrency" \
    --kek-phase "$2" --kek-state "$work/state-$1" --label "$1"
}

echo "machine: $(nproc) cores; tokenvault $("$bin" --version | cut -d' ' -f2); $subjects subjects x $values values, concurrency $concurrency, calls of $values values; peer KEK: $(bao version | head -1)"
for provider in local vault; do
  # One table: the header only from the first provider's first phase.
  if [ "$provider" = local ]; then skip=1; else skip=3; fi
  start "$provider"; bench "$provider" load | tail -n +"$skip"
  stop
  start "$provider"; bench "$provider" cold | tail -n +3
  stop
done
