#!/usr/bin/env bash
# System packages the tests use: Prometheus and promtool (Debian's package `prometheus`).
# Idempotent and quick when they are present. Needs apt-get and root (or sudo).
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install Prometheus (prometheus and promtool on PATH) to run the monitoring tests" >&2
    exit 0  # the tests that need it say so (and fail in CI)
fi
run_as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive
run_as_root apt-get install -y --no-install-recommends prometheus \
    || { run_as_root apt-get update && run_as_root apt-get install -y --no-install-recommends prometheus; }
