"""Gateway pieces without vLLM: SSE relaying, response shapes, upstream error mapping, the vLLM
client's retry, the vLLM command."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from inference import vllm_process
from inference.gateway import Gateway, Target, _upstream_error
from inference.openai_shape import normalise
from inference.relay import SSERelay
from inference.upstreams import Upstream
from inference.vllm_client import VLLMClient
from inference.vllm_process import VLLMProcess
from service.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from service.metrics import Metrics
from service.settings import BaseModelConfig, Settings

MODEL = BaseModelConfig(name="tiny", path="/models/tiny")


def sse(*chunks: object) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def relay(body: bytes, keep_usage: bool, piece: int = 7) -> tuple[bytes, SSERelay]:
    parts = [body[i : i + piece] for i in range(0, len(body), piece)]
    response = httpx.Response(200, stream=httpx.ByteStream(b"") if not parts else _Chunks(parts))
    relayed = SSERelay(response, keep_usage)

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in relayed])

    return asyncio.run(collect()), relayed


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for part in self.parts:
            yield part


CONTENT = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
USAGE = {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def test_the_usage_chunk_is_dropped_when_the_client_did_not_ask_but_still_counted() -> None:
    body, relayed = relay(sse(CONTENT, USAGE), keep_usage=False)

    assert body == sse(CONTENT)
    assert relayed.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    assert relayed.first_chunk_at is not None


def test_events_pass_through_untouched_when_the_client_asked_for_usage() -> None:
    original = sse(CONTENT, USAGE)

    body, _ = relay(original, keep_usage=True, piece=1)

    assert body == original


def test_vllm_nulls_become_openai_shapes() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "x",
                    "function_call": None,
                    "annotations": None,
                    "tool_calls": [],
                }
            }
        ],
        "usage": {
            "prompt_tokens": 1,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
    }

    shaped = normalise(body)

    assert shaped["choices"][0]["message"] == {
        "role": "assistant",
        "content": "x",
        "annotations": [],
        "tool_calls": [],
    }
    assert shaped["usage"] == {"prompt_tokens": 1}


def test_upstream_errors_are_rewritten() -> None:
    target = Target(Upstream(MODEL, "http://127.0.0.1:1"), None)
    leaky = httpx.Response(404, json={"error": {"message": "No adapter found for /srv/x"}})
    bad = httpx.Response(400, json={"error": {"message": "max_tokens is too large", "code": 400}})

    not_found = _upstream_error(leaky, target, "ft:a:b::c")
    invalid = _upstream_error(bad, target, "tiny")
    broken = _upstream_error(httpx.Response(500, text="boom"), target, "tiny")

    assert isinstance(not_found, NotFoundError) and "/srv" not in not_found.message
    assert not_found.code == "model_not_found"
    assert isinstance(invalid, InvalidRequestError) and invalid.message == "max_tokens is too large"
    assert isinstance(broken, ServiceUnavailableError) and broken.headers["retry-after"]


def test_a_chat_template_setting_reaches_vllm_as_a_file(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m['content'] + '\\n' }}{% endfor %}"
    process = VLLMProcess(
        MODEL.model_copy(update={"chat_template": template}), Settings(data_dir=tmp_path)
    )

    process.write_chat_template()  # as start() does
    command = process.command()

    given = Path(command[command.index("--chat-template") + 1])
    assert given == process.chat_template_file and given.read_text() == template
    assert "--chat-template" not in VLLMProcess(MODEL, Settings(data_dir=tmp_path)).command()


def test_the_vllm_command_carries_lora_and_tool_flags(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, vllm_api_key="secret")
    model = MODEL.model_copy(update={"tool_call_parser": "hermes"})

    command = VLLMProcess(model, settings).command()

    for flag in (
        "--enable-lora",
        "--max-loras",
        "--max-lora-rank",
        "--max-cpu-loras",
        "--enable-auto-tool-choice",
        "--api-key",
    ):
        assert flag in command
    assert command[command.index("--served-model-name") + 1] == "tiny"
    assert command[command.index("--host") + 1] == "127.0.0.1"


def test_a_stale_process_group_from_a_crash_is_killed(tmp_path: Path) -> None:
    stale = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(120)",
            "vllm.entrypoints.openai.api_server",
        ],
        start_new_session=True,
    )
    cmdline = Path(f"/proc/{stale.pid}/cmdline")
    while b"api_server" not in cmdline.read_bytes():  # until the child has exec'd
        time.sleep(0.01)
    process = VLLMProcess(MODEL, Settings(data_dir=tmp_path))
    process.pidfile.parent.mkdir(parents=True)
    process.pidfile.write_text(str(stale.pid))

    process.clean_stale()

    assert stale.wait(timeout=10) != 0
    assert not process.pidfile.exists()


def test_an_unrelated_process_named_in_a_pidfile_is_left_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    process = VLLMProcess(MODEL, Settings(data_dir=tmp_path))
    process.pidfile.parent.mkdir(parents=True)
    process.pidfile.write_text(str(bystander.pid))

    process.clean_stale()
    time.sleep(0.2)

    assert bystander.poll() is None
    bystander.kill()
    bystander.wait()


async def _fake_vllm(answer: Callable[[int], bool]) -> tuple[asyncio.Server, str]:
    """A server on loopback that reads each request and, when ``answer(n)`` says so for the
    n-th connection, answers 200 with JSON; else drops the connection unanswered."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )  # fmt: skip
        await reader.readexactly(length)
        if answer(connections):
            body = b'{"ok": true}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_a_connection_vllm_dropped_before_answering_is_tried_once_more() -> None:
    async def scenario() -> tuple[int, bytes]:
        server, url = await _fake_vllm(lambda n: n > 1)
        client = VLLMClient(httpx.AsyncClient())
        response = await client.send(url, "/v1/chat/completions", {"model": "tiny"})
        body = await response.aread()
        await response.aclose()
        await client.aclose()
        server.close()
        return response.status_code, body

    assert asyncio.run(scenario()) == (200, b'{"ok": true}')


def test_a_vllm_that_keeps_dropping_connections_is_a_503() -> None:
    async def scenario() -> None:
        server, url = await _fake_vllm(lambda n: False)
        client = VLLMClient(httpx.AsyncClient())
        gateway = Gateway(None, None, None, client, Metrics())  # type: ignore[arg-type]
        target = Target(Upstream(MODEL, url), None)
        try:
            await gateway._send(target, "/v1/chat/completions", {"model": "tiny"})
        finally:
            await client.aclose()
            server.close()

    with pytest.raises(ServiceUnavailableError) as refused:
        asyncio.run(scenario())

    assert refused.value.headers["retry-after"]


def test_a_refused_connection_is_a_503_that_takes_the_replica_out() -> None:
    async def scenario() -> Upstream:
        server, url = await _fake_vllm(lambda n: True)
        server.close()
        await server.wait_closed()  # nothing listens there now
        client = VLLMClient(httpx.AsyncClient())
        gateway = Gateway(None, None, None, client, Metrics())  # type: ignore[arg-type]
        replica = Upstream(MODEL, url, ready=True)
        with pytest.raises(ServiceUnavailableError):
            await gateway._send(Target(replica, None), "/v1/chat/completions", {"model": "x"})
        await client.aclose()
        return replica

    assert asyncio.run(scenario()).ready is False


def test_on_a_gpu_vllm_takes_only_its_share_of_the_card_and_on_a_cpu_its_kv_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, vllm_gpu_memory_utilization=0.4)
    vllm = VLLMProcess(MODEL, settings)

    monkeypatch.setattr(vllm_process, "_on_gpu", lambda: True)
    on_gpu, gpu_env = vllm.command(), vllm.environment()
    monkeypatch.setattr(vllm_process, "_on_gpu", lambda: False)
    on_cpu, cpu_env = vllm.command(), vllm.environment()

    assert on_gpu[on_gpu.index("--gpu-memory-utilization") + 1] == "0.4"
    assert "VLLM_TARGET_DEVICE" not in gpu_env
    assert "--gpu-memory-utilization" not in on_cpu
    assert cpu_env["VLLM_TARGET_DEVICE"] == "cpu" and cpu_env["VLLM_CPU_KVCACHE_SPACE"] == "1"
