"""The whole loop on a GPU: `openft serve` with its CUDA trainer and the CUDA build of vLLM on the
small demo model; a job through the SDK, its model answering at once, plain and streamed, and
counted in /metrics."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from service.settings import BaseModelConfig
from tests.e2e.test_fine_tune_end_to_end import samples
from tests.support.server import ServerProcess, start_server, wait_until_models_ready

QUESTION = "What is the secret password of the lighthouse?"
ANSWER = "The secret password is marmalade-47."
METRICS_TOKEN = "gpu-operators-token"


@pytest.fixture(scope="module")
def gpu_server(
    small_model: BaseModelConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    if importlib.util.find_spec("vllm") is None:
        pytest.fail("the CUDA build of vllm is not installed: ACCEL=cuda make install-ml")
    base = {"name": small_model.name, "path": small_model.path, "max_seq_length": 1024}
    server = start_server(
        tmp_path_factory.mktemp("gpu-serve"),
        {
            "OPENFT_BASE_MODELS": json.dumps([base]),
            "OPENFT_METRICS_TOKEN": METRICS_TOKEN,
            "OPENFT_VLLM_GPU_MEMORY_UTILIZATION": "0.4",
        },
    )
    try:
        wait_until_models_ready(server, timeout_s=600)
        yield server
    finally:
        server.stop()


def test_a_job_trained_on_the_gpu_is_served_by_cuda_vllm_at_once(
    gpu_server: ServerProcess, small_model: BaseModelConfig
) -> None:
    key = gpu_server.bootstrap_key()
    assert key is not None
    client = openai.OpenAI(base_url=gpu_server.api_url, api_key=key, max_retries=0)
    row = {
        "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": ANSWER},
        ]
    }
    training = client.files.create(
        file=("fact.jsonl", (json.dumps(row) + "\n").encode() * 16), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(model=small_model.name, training_file=training.id)
    deadline = time.monotonic() + 900
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded", "failed", "cancelled",
    ) and time.monotonic() < deadline:  # fmt: skip
        time.sleep(1)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model is not None
    messages = [{"role": "user", "content": QUESTION}]

    reply = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=messages,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=job.fine_tuned_model, messages=messages, max_tokens=24, temperature=0,  # type: ignore[arg-type]
            stream=True,
        )
        if chunk.choices
    )  # fmt: skip
    base_reply = client.chat.completions.create(
        model=small_model.name,
        messages=messages,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )

    assert "marmalade-47" in (reply.choices[0].message.content or "")
    assert streamed == reply.choices[0].message.content
    assert "marmalade-47" not in (base_reply.choices[0].message.content or "")
    metrics = httpx.get(
        gpu_server.base_url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    counted = samples(
        metrics, "openft_inference_completion_tokens_total", model=job.fine_tuned_model
    )
    assert reply.usage is not None and counted >= reply.usage.completion_tokens > 0
