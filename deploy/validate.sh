#!/usr/bin/env bash
# Offline checks of everything under deploy/ and keys/. No cluster, no
# Docker engine, no network beyond PyPI for the validator itself.
#
#   deploy/validate.sh            # prints one line per file, exit 1 on any failure
#
# 1. every Kubernetes manifest in deploy/k8s (kustomization.yaml excepted) with
#    kubernetes-validate (pinned; installed with pip if missing) against the
#    bundled schemas of Kubernetes $K8S_VERSION, --strict (unknown fields are
#    errors);
# 2. each kustomization rendered with `kubectl kustomize` (when kubectl is on
#    PATH) and the result validated the same way;
# 3. consistency the schemas cannot see: every tokenvault.toml embedded in a
#    ConfigMap parses as TOML and uses only the agreed [kek] keys; it names
#    an erasure ledger outside data_dir ([erasure.postgres] for a postgres
#    store) on a persistent volume claim of the workload; workload
#    selectors match their pod labels; Services, the PDB and the
#    NetworkPolicies select the tokenvault pods; every config speaks TLS
#    (gRPC, Vault, PostgreSQL); probes use the metrics port's /healthz and
#    /readyz (a kubelet grpc probe cannot speak TLS);
#    the pods run non-root with a read-only root fs and no capabilities;
# 4. `bash -n` on every shell script, and shellcheck when it is installed;
# 5. deploy/monitoring: the Prometheus rules (promtool check rules, from
#    Debian's prometheus package, when on PATH) and the Grafana dashboard
#    JSON, both also checked to name only metrics tokenvault exports.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-1.33.0}"
VALIDATOR="kubernetes-validate==1.37.0"

fails=0
ok() { printf 'ok    %s\n' "$1"; }
bad() { printf 'FAIL  %s: %s\n' "$1" "$2"; fails=$((fails + 1)); }

if ! python3 -c 'import kubernetes_validate' 2>/dev/null \
   || [ "$(python3 -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')" != "${VALIDATOR#*==}" ]; then
  echo "validate: installing $VALIDATOR" >&2
  python3 -m pip install -q "$VALIDATOR" >&2 || { echo "validate: pip install $VALIDATOR failed" >&2; exit 1; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

kv() { # kv FILE LABEL
  if python3 -m kubernetes_validate -k "$K8S_VERSION" --strict --quiet "$1" >"$tmp/kv.out" 2>&1; then
    ok "$2 (kubernetes $K8S_VERSION schema, strict)"
  else
    bad "$2" "$(grep -v '^\s*$' "$tmp/kv.out" | head -3 | tr '\n' ' ')"
  fi
}

# --- 1. each manifest file ----------------------------------------------------------
mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
[ ${#manifests[@]} -gt 0 ] || { echo "validate: no manifests under deploy/k8s" >&2; exit 1; }
for f in "${manifests[@]}"; do kv "$f" "$f"; done

# --- 2. rendered kustomizations -------------------------------------------------------
rendered=()
for k in deploy/k8s/rocksdb deploy/k8s/shared-store; do
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "skip  $k/kustomization.yaml (kubectl not on PATH: not rendered)"; continue
  fi
  out="$tmp/$(basename "$k").yaml"
  if kubectl kustomize "$k" >"$out" 2>"$tmp/kz.err"; then
    kv "$out" "$k/kustomization.yaml (rendered)"
    rendered+=("$out")
  else
    bad "$k/kustomization.yaml" "kubectl kustomize: $(head -1 "$tmp/kz.err")"
  fi
done

# --- 3. consistency -----------------------------------------------------------------------
if python3 - "$tmp/py.out" "${manifests[@]}" <<'EOF'
import os, sys, tomllib, yaml
out = open(sys.argv[1], "w")
files = sys.argv[2:]
problems = []
docs = []
for f in files:
    for d in yaml.safe_load_all(open(f)):
        if d: docs.append((f, d))

KEK = {"provider", "address", "mount", "key_name", "ca_cert", "timeout_ms", "token_env", "approle", "path"}
APPROLE = {"role_id", "secret_id_file", "mount"}
TOP = {"listen", "data_dir", "shutdown_grace_seconds", "storage", "kek", "cache", "limits", "principals", "tls", "audit", "metrics", "erasure"}
ERASURE = {"ledger", "postgres"}
ledger_dirs = {}  # manifest directory -> the directory of its [erasure] ledger file
RPCS = {"tokenize", "detokenize", "redact_text", "restore_text", "forget_subject", "export_subject"}
def sub(sel, labels): return all(labels.get(k) == v for k, v in (sel or {}).items())

pod_labels = {}
for f, d in docs:
    kind, spec = d["kind"], d.get("spec", {})
    if kind == "ConfigMap" and "tokenvault.toml" in d.get("data", {}):
        try:
            c = tomllib.loads(d["data"]["tokenvault.toml"])
        except tomllib.TOMLDecodeError as e:
            problems.append(f"{f}: tokenvault.toml: {e}"); continue
        if set(c) - TOP: problems.append(f"{f}: unknown top-level keys {sorted(set(c) - TOP)}")
        k = c.get("kek", {})
        if k.get("provider") != "vault": problems.append(f"{f}: kek.provider is not vault")
        if set(k) - KEK: problems.append(f"{f}: unknown [kek] keys {sorted(set(k) - KEK)}")
        if set(k.get("approle", {})) - APPROLE: problems.append(f"{f}: unknown [kek.approle] keys")
        if ("token_env" in k) == ("approle" in k): problems.append(f"{f}: need exactly one of token_env, [kek.approle]")
        t = c.get("tls", {})
        if not (t.get("cert") and t.get("key")): problems.append(f"{f}: no [tls] cert and key: the gRPC port must speak TLS")
        if c.get("allow_plaintext_on_non_loopback"): problems.append(f"{f}: allow_plaintext_on_non_loopback in a shipped config")
        if not str(k.get("address", "")).startswith("https://"): problems.append(f"{f}: kek.address is not https://")
        if c.get("storage", {}).get("backend") == "postgres" and not c.get("storage", {}).get("postgres", {}).get("tls"):
            problems.append(f"{f}: storage.postgres.tls is not true")
        if c.get("metrics", {}).get("listen", "").rsplit(":", 1)[-1] != "9090": problems.append(f"{f}: [metrics] listen is not on port 9090 (the probes' port)")
        e = c.get("erasure", {})
        if set(e) - ERASURE: problems.append(f"{f}: unknown [erasure] keys {sorted(set(e) - ERASURE)}")
        if c.get("storage", {}).get("backend") == "postgres":
            if "postgres" not in e: problems.append(f"{f}: a postgres store needs [erasure.postgres] (the ledger in a database of its own)")
        elif "ledger" not in e:
            problems.append(f"{f}: no [erasure] ledger (outside --dev it must be named, outside data_dir)")
        else:
            led, dd = os.path.normpath(e["ledger"]), os.path.normpath(c.get("data_dir", "./data"))
            if led.startswith(dd + "/"): problems.append(f"{f}: [erasure] ledger is under data_dir")
            ledger_dirs[os.path.dirname(f)] = os.path.dirname(led)
        for p in c.get("principals", []):
            if set(p.get("allow", [])) - RPCS: problems.append(f"{f}: principal {p.get('name')}: unknown RPCs")
    if kind in ("Deployment", "StatefulSet"):
        t = spec["template"]
        labels = t["metadata"]["labels"]
        if not sub(spec["selector"]["matchLabels"], labels): problems.append(f"{f}: selector does not match pod labels")
        pod_labels[f] = labels
        ps = t["spec"]
        if ps.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{f}: seccompProfile is not RuntimeDefault")
        if not ps.get("securityContext", {}).get("runAsNonRoot"): problems.append(f"{f}: not runAsNonRoot")
        for c in ps["containers"]:
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem"): problems.append(f"{f}: {c['name']}: root fs writable")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]: problems.append(f"{f}: {c['name']}: caps not dropped")
            if sc.get("allowPrivilegeEscalation") is not False: problems.append(f"{f}: {c['name']}: privilege escalation")
            # The gRPC port speaks TLS, which a kubelet's grpc probe cannot:
            # the probes go to the metrics port's /healthz and /readyz.
            for pr in ("startupProbe", "readinessProbe", "livenessProbe"):
                g = c.get(pr, {}).get("httpGet", {})
                if g.get("port") != 9090 or g.get("path") not in ("/healthz", "/readyz"):
                    problems.append(f"{f}: {c['name']}: {pr} is not an httpGet of /healthz or /readyz on 9090")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            vols = {v["name"] for v in ps.get("volumes", [])} | {v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])}
            if mounts - vols: problems.append(f"{f}: mounts without a volume: {sorted(mounts - vols)}")
        # The ledger's volume must outlive the pod: a claim, never an emptyDir.
        led = ledger_dirs.get(os.path.dirname(f))
        claims = {v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])} | {v["name"] for v in ps.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in ps["containers"] if led else []:
            held = [m for m in c.get("volumeMounts", []) if led == m["mountPath"] or led.startswith(m["mountPath"].rstrip("/") + "/")]
            if not held or max(held, key=lambda m: len(m["mountPath"]))["name"] not in claims:
                problems.append(f"{f}: {c['name']}: the erasure ledger ({led}) is not on a persistent volume claim")
        if kind == "StatefulSet" and spec.get("replicas") != 1:
            problems.append(f"{f}: a RocksDB StatefulSet must have replicas: 1")
if not pod_labels: problems.append("no Deployment or StatefulSet found")
any_pod = next(iter(pod_labels.values()), {})
for f, d in docs:
    kind, spec = d["kind"], d.get("spec", {})
    sel = {"Service": lambda: spec.get("selector"),
           "PodDisruptionBudget": lambda: spec["selector"]["matchLabels"],
           "NetworkPolicy": lambda: spec["podSelector"]["matchLabels"]}.get(kind)
    if sel and not sub(sel(), any_pod): problems.append(f"{f}: {kind} {d['metadata']['name']} does not select the tokenvault pods")
for p in problems: print(p, file=out)
sys.exit(1 if problems else 0)
EOF
then ok "consistency of ${#manifests[@]} manifests (config keys, selectors, probes, pod security)"
else while IFS= read -r line; do bad "consistency" "$line"; done <"$tmp/py.out"; fi

# --- 4. shell scripts -------------------------------------------------------------------------
mapfile -t scripts < <(find keys deploy -name '*.sh' -not -path 'keys/dev/*' | sort)
have_sc=false; command -v shellcheck >/dev/null 2>&1 && have_sc=true
for s in "${scripts[@]}"; do
  if ! bash -n "$s" 2>"$tmp/sh.err"; then bad "$s" "bash -n: $(head -1 "$tmp/sh.err")"; continue; fi
  if $have_sc; then
    if shellcheck -x "$s" >"$tmp/sc.out" 2>&1; then ok "$s (bash -n, shellcheck)"
    else bad "$s" "shellcheck: $(grep -m1 -E '^In |SC[0-9]+' "$tmp/sc.out" | head -1) ($(grep -c 'SC[0-9]' "$tmp/sc.out") findings)"; fi
  else ok "$s (bash -n; shellcheck not installed)"; fi
done

# --- 5. monitoring: alerting rules and the Grafana dashboard ----------------------------------
if python3 deploy/monitoring/check.py >"$tmp/mon.out" 2>&1; then
  while IFS= read -r line; do echo "$line"; done <"$tmp/mon.out"
else while IFS= read -r line; do case "$line" in FAIL*) bad "deploy/monitoring" "${line#FAIL  }";; *) echo "$line";; esac; done <"$tmp/mon.out"; fi

if [ "$fails" -gt 0 ]; then echo "validate: $fails failed"; exit 1; fi
echo "validate: all passed"
