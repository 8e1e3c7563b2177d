#!/usr/bin/env bash
# The third-party clients the e2e tests drive against OpenFT (tests/clients/): the Python ones in
# their own virtual environment, .venv-clients (openai-agents pins websockets < 17, which vLLM's
# stack does not allow), and the official Node SDK in tests/clients/node (npm ci, from its lock).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
CLIENTS_VENV="${CLIENTS_VENV:-.venv-clients}"

if [ ! -x "$CLIENTS_VENV/bin/python" ]; then
  "$PYTHON" -m venv "$CLIENTS_VENV"
fi
"$CLIENTS_VENV/bin/python" -m pip --disable-pip-version-check install --quiet \
  -r tests/clients/requirements.txt

if command -v npm >/dev/null 2>&1; then
  (cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "install_clients.sh: npm not found; tests/e2e/test_third_party_clients.py needs it" >&2
fi
