#!/usr/bin/env bash
# Soak and fault run (tests/soak.rs): a mixed Tokenize / Detokenize /
# RedactText load for SOAK_SECONDS (default 60) while the server is killed
# with SIGKILL and restarted, its tmpfs data directory is filled to the
# brim and drained, malformed HTTP/2 and gRPC frames, raw garbage and an
# oversized message are sent, and it is stopped with SIGTERM and restarted.
# Prints calls, errors by code, acknowledged tokens lost and panics; exits
# non-zero if a token was lost or the server panicked. Loopback only; needs
# root (mount -t tmpfs). SOAK_LOG=FILE keeps the server log.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tokenvault/target}"
export SOAK_SECONDS="${SOAK_SECONDS:-60}"
cargo test --release --locked --test soak -- --ignored --nocapture --test-threads 1
