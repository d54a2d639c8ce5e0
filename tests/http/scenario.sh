#!/usr/bin/env bash
# The HTTP/JSON API with curl, as docs/http.md shows it:
#
#   scenario.sh BASE_URL API_KEY
#
# tokenize -> detokenize -> redact -> restore -> export -> forget for one
# subject, failing (non-zero, the step named on stderr) on a wrong HTTP
# status or body. JSON is read with python3's json module only.
set -euo pipefail

base="$1"
key="$2"
subject="cust-curl-5b21"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "scenario.sh: $*" >&2; exit 1; }

# call METHOD PATH [BODY]: the body goes to $tmp/out, the status is printed.
call() {
  local args=(-sS -o "$tmp/out" -w '%{http_code}' -X "$1" -H "authorization: Bearer $key")
  if [ $# -ge 3 ]; then args+=(-H 'content-type: application/json' --data-binary "$3"); fi
  curl "${args[@]}" "$base$2"
}

# field EXPR: a Python expression over the JSON body `b`.
field() { python3 -c "import json,sys; b=json.load(open(sys.argv[1])); print($1)" "$tmp/out"; }

expect() { # expect STEP STATUS GOT
  [ "$3" = "$2" ] || fail "$1: HTTP $3, expected $2: $(head -c 300 "$tmp/out")"
}

status=$(call POST /v1/tokenize "{\"subjectId\":\"$subject\",\"items\":[{\"value\":\"+7 912 345-67-89\",\"format\":\"phone\"}]}")
expect tokenize 200 "$status"
token=$(field 'b["tokens"][0]')
[ -n "$token" ] && [ "$token" != "+7 912 345-67-89" ] || fail "tokenize: token $token"
[ "${token:0:3}" = "+7 " ] || fail "tokenize: the token keeps the country code: $token"

status=$(call POST /v1/detokenize "{\"tokens\":[\"$token\"],\"purpose\":\"curl test\"}")
expect detokenize 200 "$status"
[ "$(field 'b["results"][0]["value"]')" = "+7 912 345-67-89" ] || fail "detokenize: $(cat "$tmp/out")"
[ "$(field 'b["results"][0]["status"]')" = TOKEN_STATUS_FOUND ] || fail "detokenize: $(cat "$tmp/out")"

status=$(call POST /v1/redact "{\"subjectId\":\"$subject\",\"text\":\"call +7 912 345-67-89 today\"}")
expect redact 200 "$status"
redacted=$(field 'b["text"]')
[ "$redacted" = "call $token today" ] || fail "redact: $redacted"

status=$(call POST /v1/restore "{\"text\":\"$redacted\",\"purpose\":\"curl test\"}")
expect restore 200 "$status"
[ "$(field 'b["text"]')" = "call +7 912 345-67-89 today" ] || fail "restore: $(cat "$tmp/out")"
[ "$(field 'b["restored"]')" = 1 ] || fail "restore: $(cat "$tmp/out")"

status=$(call GET "/v1/subjects/$subject/export?purpose=art.%2015")
expect export 200 "$status"
lines=$(grep -c '"result"' "$tmp/out" || true)
[ "$lines" = 1 ] || fail "export: $lines lines: $(cat "$tmp/out")"
grep -q '"value":"+7 912 345-67-89"' "$tmp/out" || fail "export: $(cat "$tmp/out")"

status=$(call POST "/v1/subjects/$subject:forget" '{"reason":"curl ticket"}')
expect forget 200 "$status"
[ "$(field 'b["tokensErased"]')" = 1 ] || fail "forget: $(cat "$tmp/out")"

status=$(call POST /v1/detokenize "{\"tokens\":[\"$token\"],\"purpose\":\"curl test\"}")
expect "detokenize after forget" 200 "$status"
[ "$(field 'b["results"][0]["status"]')" = TOKEN_STATUS_ERASED ] || fail "after forget: $(cat "$tmp/out")"

status=$(call POST /v1/tokenize '{"subjectId":')
expect "malformed json" 400 "$status"
[ "$(field 'b["code"]')" = 3 ] || fail "malformed json: $(cat "$tmp/out")"

echo "scenario.sh: ok"
