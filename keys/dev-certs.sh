#!/usr/bin/env bash
# Development PKI for tokenvault's TLS / mTLS ([tls] cert, key, client_ca)
# and for the negative tests. NOT for production.
#
#   keys/dev-certs.sh [--out DIR] [--days N] [--force] [PRINCIPAL ...]
#
# Default DIR: keys/dev/ beside this script (ignored by git). Default
# principals: local-admin. Writes, all keys EC P-256 in PKCS#8 PEM, mode 0600:
#
#   ca.pem, ca.key                  dev CA (reused on later runs; --force
#                                   makes a new one, and a new untrusted CA)
#   server.pem, server.key          CN=localhost, SAN DNS:localhost,
#                                   IP:127.0.0.1, IP:::1; EKU serverAuth
#   server-chain.pem                server.pem followed by ca.pem
#   client-NAME.pem, .key           one per PRINCIPAL: CN=NAME, SAN
#                                   URI:urn:tokenvault:principal:NAME and,
#                                   when NAME is a valid DNS name, DNS:NAME;
#                                   EKU clientAuth
#   client-expired.pem, .key        CN = first principal, signed by the dev CA,
#                                   valid 2020-01-01 .. 2020-01-02 (expired)
#   untrusted-ca.pem, .key          a second CA that the server must NOT trust
#   client-untrusted.pem, .key      CN = first principal, signed by the
#                                   untrusted CA (same name, wrong issuer)
#
# Leaf certificates are issued afresh on every run. At the end every file is
# checked with `openssl verify` (good ones verify against ca.pem, the expired
# and the untrusted one must not); any surprise is an error (exit 1).
set -euo pipefail

prog=dev-certs
die() { echo "$prog: $*" >&2; exit 1; }
say() { echo "$prog: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/dev"
days=365
force=false
principals=()

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    --*) die "unknown option '$1' (see --help)" ;;
    *) principals+=("$1"); shift ;;
  esac
done
[ ${#principals[@]} -gt 0 ] || principals=(local-admin)
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive number"
command -v openssl >/dev/null 2>&1 || die "openssl is not on PATH"

name_re='^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
dns_re='^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
for p in "${principals[@]}"; do
  [[ $p =~ $name_re ]] || die "principal '$p': use 1-64 letters, digits, '.', '_', '-' (starting with a letter or digit)"
  case "$p" in expired|untrusted) die "principal name '$p' would clash with client-$p.pem" ;; esac
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
chmod 700 "$out"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
errf="$tmp/err"

# o WHAT ARGS...: run openssl, die with WHAT and its first error line.
o() {
  local what="$1"; shift
  openssl "$@" 2>"$errf" >/dev/null || die "$what failed: $(grep -v '^\s*$' "$errf" | head -1)"
}
newkey() { o "generating key $1" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; chmod 600 "$1"; }
serial() { echo "0x$(openssl rand -hex 16)"; }

# make_ca NAME CN: self-signed CA NAME.pem / NAME.key
make_ca() {
  newkey "$out/$1.key"
  cat >"$tmp/$1.ext" <<EOF
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  o "creating $1.pem" req -new -x509 -key "$out/$1.key" -out "$out/$1.pem" -days 3650 \
    -subj "/O=tokenvault dev/CN=$2" -config "$tmp/$1.ext" -extensions v3_ca -set_serial "$(serial)" -sha256
  chmod 644 "$out/$1.pem"
}

# leaf NAME CA CN EKU SAN [ca-args...]: key + CSR + cert signed by CA
leaf() {
  local name="$1" cn="$3" eku="$4" san="$5"  # $2 (the CA) is used by sign
  newkey "$out/$name.key"
  o "creating the request for $name" req -new -key "$out/$name.key" -out "$tmp/$name.csr" \
    -subj "/O=tokenvault dev/CN=$cn" -config /dev/null
  cat >"$tmp/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $eku
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
}
sign() { # sign NAME CA
  o "signing $1.pem" x509 -req -in "$tmp/$1.csr" -CA "$out/$2.pem" -CAkey "$out/$2.key" \
    -set_serial "$(serial)" -days "$days" -sha256 -extfile "$tmp/$1.ext" -out "$out/$1.pem"
  chmod 644 "$out/$1.pem"
}

# --- CAs -------------------------------------------------------------------------
if $force || [ ! -s "$out/ca.pem" ] || [ ! -s "$out/ca.key" ]; then
  make_ca ca "tokenvault dev CA"; say "new dev CA: $out/ca.pem"
else
  say "reusing dev CA $out/ca.pem (--force for a new one)"
fi
if $force || [ ! -s "$out/untrusted-ca.pem" ] || [ ! -s "$out/untrusted-ca.key" ]; then
  make_ca untrusted-ca "tokenvault UNTRUSTED dev CA"
fi

# --- server --------------------------------------------------------------------------
leaf server ca localhost serverAuth "DNS:localhost, IP:127.0.0.1, IP:::1"
sign server ca
cat "$out/server.pem" "$out/ca.pem" >"$out/server-chain.pem"; chmod 644 "$out/server-chain.pem"

# --- clients ---------------------------------------------------------------------------
san_for() {
  local s="URI:urn:tokenvault:principal:$1"
  if [[ $1 =~ $dns_re ]]; then s="$s, DNS:$1"; fi
  echo "$s"
}
for p in "${principals[@]}"; do
  leaf "client-$p" ca "$p" clientAuth "$(san_for "$p")"
  sign "client-$p" ca
done
first="${principals[0]}"

# Expired: `openssl ca` is the only 3.0 tool that takes explicit dates.
leaf client-expired ca "$first" clientAuth "$(san_for "$first")"
mkdir -p "$tmp/ca-db"; : >"$tmp/ca-db/index.txt"
cat >"$tmp/ca.cnf" <<EOF
[ca]
default_ca = dev
[dev]
database = $tmp/ca-db/index.txt
new_certs_dir = $tmp/ca-db
serial = $tmp/ca-db/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
organizationName = optional
commonName = supplied
EOF
openssl rand -hex 16 >"$tmp/ca-db/serial"
o "signing client-expired.pem" ca -batch -config "$tmp/ca.cnf" -cert "$out/ca.pem" -keyfile "$out/ca.key" \
  -in "$tmp/client-expired.csr" -out "$out/client-expired.pem" -notext \
  -startdate 20200101000000Z -enddate 20200102000000Z -extfile "$tmp/client-expired.ext"
chmod 644 "$out/client-expired.pem"

leaf client-untrusted untrusted-ca "$first" clientAuth "$(san_for "$first")"
sign client-untrusted untrusted-ca

# --- self-check ------------------------------------------------------------------------
verify_ok() { # verify_ok PURPOSE FILE
  openssl verify -CAfile "$out/ca.pem" -purpose "$1" "$out/$2" >"$errf" 2>&1 \
    || die "$2 does not verify against ca.pem: $(grep -v '^\s*$' "$errf" | tail -1)"
}
verify_fails() { # verify_fails FILE EXPECTED-ERROR
  if openssl verify -CAfile "$out/ca.pem" -purpose sslclient "$out/$1" >"$errf" 2>&1; then
    die "$1 verifies against ca.pem but must not"
  fi
  grep -q "$2" "$errf" || die "$1 fails for another reason than '$2': $(tail -1 "$errf")"
}
verify_ok sslserver server.pem
for p in "${principals[@]}"; do verify_ok sslclient "client-$p.pem"; done
verify_fails client-expired.pem "certificate has expired"
verify_fails client-untrusted.pem "unable to get local issuer certificate"
find "$out" -name '*.key' -exec chmod 600 {} +

say "wrote to $out: ca.pem server.pem server-chain.pem $(printf 'client-%s.pem ' "${principals[@]}")client-expired.pem untrusted-ca.pem client-untrusted.pem (+ .key, mode 0600)"
cat <<EOF
# [tls] for tokenvault.toml (planned keys):
[tls]
cert = "$out/server-chain.pem"
key = "$out/server.key"
client_ca = "$out/ca.pem"
EOF
