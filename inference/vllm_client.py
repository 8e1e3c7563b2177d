"""Every call OpenFT makes to a vLLM server: its health, the models it serves (its base model and
the adapters it holds), loading and unloading adapters on one shared httpx client, and forwarding
OpenAI requests on one shared aiohttp session (the serving path: it costs a fraction of httpx's
CPU per streamed request, see README's benchmarks). Callers name the server by its base URL;
errors are ``httpx`` errors either way, for the caller to map (the gateway's 503)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp
import httpx
import orjson

from service.settings import Settings

CONNECT_ATTEMPTS = 3
CONNECT_RETRY_S = 0.5
HEALTH_TIMEOUT_S = 5.0
# vLLM's uvicorn drops idle connections after 5 s; never reuse one that old.
KEEPALIVE_EXPIRY_S = 2.0
MAX_CONNECTIONS = 256


class ReadAnswer(Protocol):
    """An answer read whole (what the gateway's error mapping looks at)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...


class RawStream(Protocol):
    """An answer whose body is relayed as it arrives."""

    def aiter_raw(self) -> AsyncIterator[bytes]: ...


class UpstreamResponse:
    """vLLM's answer to a forwarded request, open: read it whole or relay its bytes, then
    ``aclose`` (before the end, that drops the connection, which aborts vLLM's request)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.content = b""

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    async def aread(self) -> bytes:
        try:
            self.content = await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from exc
        return self.content

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes in the reads they arrive in."""
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from exc

    async def aclose(self) -> None:
        self._response.release()  # pooled again when fully read, else closed


class VLLMClient:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        read_timeout_s: float = 600.0,
        api_key: str | None = None,
    ) -> None:
        self.http = client
        self._read_timeout_s = read_timeout_s
        self._api_key = api_key
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def open(cls, settings: Settings) -> VLLMClient:
        """The clients every vLLM call of this process shares (timeouts, pool, vLLM's key)."""
        key = settings.vllm_api_key
        timeout = settings.vllm_request_timeout_seconds
        return cls(
            httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=5.0),
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_EXPIRY_S
                ),
                headers={"authorization": f"Bearer {key}"} if key else {},
            ),
            read_timeout_s=timeout,
            api_key=key,
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            await self._session.close()

    async def healthy(self, base_url: str) -> bool:
        """Whether the server answers its health check (False when it cannot be reached)."""
        try:
            response = await self.http.get(f"{base_url}/health", timeout=HEALTH_TIMEOUT_S)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def queue_depth(self, base_url: str) -> int | None:
        """The requests the server is running and holding in its queue, from its own metrics
        (every API process's requests, not only this one's); None when it does not say."""
        try:
            response = await self.http.get(f"{base_url}/metrics", timeout=HEALTH_TIMEOUT_S)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        return requests_in_server(response.text)

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

    async def send(self, base_url: str, path: str, body: dict[str, object]) -> UpstreamResponse:
        """POST an OpenAI request; the response is open for streaming (the caller closes it)."""
        data = orjson.dumps(body)
        try:
            return await self._post(base_url + path, data)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            # No answer has started: the connection was refused, or a pooled keep-alive
            # connection was closed by vLLM just as we reused it (seen as a protocol error or
            # an empty read). A completion has no side effects: one more try is safe.
            return await self._post(base_url + path, data)

    async def _post(self, url: str, data: bytes) -> UpstreamResponse:
        try:
            response = await self._forwarding().post(url, data=data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from exc
        return UpstreamResponse(response)

    def _forwarding(self) -> aiohttp.ClientSession:
        """The session of forwarded requests, made on first use on this event loop."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session_loop = loop
            headers = {"content-type": "application/json", "accept-encoding": "identity"}
            if self._api_key:
                headers["authorization"] = f"Bearer {self._api_key}"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_EXPIRY_S
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=5.0, sock_read=self._read_timeout_s
                ),
                headers=headers,
                auto_decompress=False,  # the gateway relays vLLM's bytes as they come
            )
        return self._session


def _transport_error(exc: Exception) -> httpx.TransportError:
    """An aiohttp failure as the httpx error the callers map (refused, dropped, timed out)."""
    message = repr(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(message)
    return httpx.ReadError(message)


QUEUE_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def requests_in_server(exposition: str) -> int | None:
    """The sum of vLLM's running and waiting gauges (over engines) in Prometheus text; None
    when neither is there."""
    total, seen = 0.0, False
    for line in exposition.splitlines():
        if line.startswith(QUEUE_GAUGES) and line.split("{", 1)[0].split(" ", 1)[0] in QUEUE_GAUGES:
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
    return round(total) if seen else None
