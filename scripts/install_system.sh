#!/usr/bin/env bash
# System packages from Debian: Prometheus and promtool (package `prometheus`) for the monitoring
# tests, and bubblewrap (`bwrap`), the sandbox that runs python graders.
# Idempotent and quick when they are present. Needs apt-get and root (or sudo).
set -euo pipefail

missing=()
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    missing+=(prometheus)
fi
if ! command -v bwrap >/dev/null; then
    missing+=(bubblewrap)
fi
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install ${missing[*]} (prometheus and promtool, bwrap on PATH) to run the tests that use them" >&2
    exit 0  # the tests that need them say so (and fail in CI)
fi
run_as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive
run_as_root apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" \
    || { run_as_root apt-get update && run_as_root apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"; }
