#!/usr/bin/env bash
# Runs every cargo-fuzz target of tests/fuzz for a bounded time (FUZZ_SECONDS
# each, default 30) and fails on the first crash; CI runs it. cargo-fuzz
# needs nightly features: RUSTC_BOOTSTRAP lets the stable toolchain build
# them. Crashes are left in tests/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-formats scan redact json}"
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi
# Its own target directory: fuzz builds use sanitizer flags, and must not
# invalidate the main build's artifacts.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/tokenvault/fuzz-target}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in $targets; do
    echo "fuzz: $target for ${seconds}s"
    status=0
    # Seeds checked in beside the (ignored) working corpus, when a target
    # has them: new inputs go to the first directory.
    corpora=()
    if [ -d "tests/fuzz/seeds/$target" ]; then
        mkdir -p "tests/fuzz/corpus/$target"
        corpora=("tests/fuzz/corpus/$target" "tests/fuzz/seeds/$target")
    fi
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 >"$log" 2>&1 || status=$?
    grep -E "^Done [0-9]+ runs" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target failed (exit $status; crash inputs in tests/fuzz/artifacts/$target/)" >&2
        exit 1
    fi
done
echo "fuzz: all targets ran ${seconds}s without a crash"
