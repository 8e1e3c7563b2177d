"""Every call OpenFT makes to a vLLM server, on one shared HTTP client: its health, the models it
serves (its base model and the adapters it holds), loading and unloading adapters, and forwarding
OpenAI requests. Callers name the server by its base URL; errors stay ``httpx`` errors for the
caller to map (the gateway turns them into OpenAI's 503)."""

from __future__ import annotations

import asyncio

import httpx

from service.settings import Settings

CONNECT_ATTEMPTS = 3
CONNECT_RETRY_S = 0.5
HEALTH_TIMEOUT_S = 5.0
# vLLM's uvicorn drops idle connections after 5 s; never reuse one that old.
KEEPALIVE_EXPIRY_S = 2.0
MAX_CONNECTIONS = 256


class VLLMClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.http = client

    @classmethod
    def open(cls, settings: Settings) -> VLLMClient:
        """The client every vLLM call of this process shares (timeouts, pool, vLLM's key)."""
        key = settings.vllm_api_key
        return cls(
            httpx.AsyncClient(
                timeout=httpx.Timeout(settings.vllm_request_timeout_seconds, connect=5.0),
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_EXPIRY_S
                ),
                # Uncompressed: the gateway relays vLLM's bytes as they come.
                headers={"accept-encoding": "identity"}
                | ({"authorization": f"Bearer {key}"} if key else {}),
            )
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def healthy(self, base_url: str) -> bool:
        """Whether the server answers its health check (False when it cannot be reached)."""
        try:
            response = await self.http.get(f"{base_url}/health", timeout=HEALTH_TIMEOUT_S)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def served_models(self, base_url: str) -> set[str]:
        """The names the server serves: its base model and every adapter it holds (vLLM's list
        is the truth, whichever API process or replica loaded an adapter)."""
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                response = await self.http.get(f"{base_url}/v1/models")
                break
            except httpx.ConnectError:  # refused: vLLM is (re)binding; nothing was sent
                if attempt == CONNECT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(CONNECT_RETRY_S)
        response.raise_for_status()
        return {card["id"] for card in response.json().get("data", [])}

    async def load_adapter(self, base_url: str, name: str, path: str) -> bool:
        """Load the adapter folder ``path`` as ``name``; True once it is served (also when it
        already was)."""
        response = await self.http.post(
            f"{base_url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}
        )
        return response.status_code == 200 or "already" in response.text

    async def unload_adapter(self, base_url: str, name: str) -> None:
        await self.http.post(f"{base_url}/v1/unload_lora_adapter", json={"lora_name": name})

    async def send(self, base_url: str, path: str, body: dict[str, object]) -> httpx.Response:
        """POST an OpenAI request; the response is open for streaming (the caller closes it)."""
        request = self.http.build_request("POST", base_url + path, json=body)
        try:
            return await self.http.send(request, stream=True)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            # No answer has started: the connection was refused, or a pooled keep-alive
            # connection was closed by vLLM just as we reused it (seen as a protocol error or
            # an empty read). A completion has no side effects: one more try is safe.
            return await self.http.send(request, stream=True)
