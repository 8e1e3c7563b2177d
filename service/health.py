"""Operations endpoints: liveness and readiness (no key) and metrics (the operators' token)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from service.deps import State
from service.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from service.http.error_responses import ERROR_RESPONSES

router = APIRouter(tags=["Health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: ERROR_RESPONSES["5XX"]})
async def readyz(request: Request, state: State) -> dict[str, Any]:
    """Ready when the database answers; ``models`` tells which model servers are up."""
    try:
        await run_in_threadpool(state.db.ping)
    except Exception as exc:
        raise ServiceUnavailableError("The database is not reachable.") from exc
    return {"status": "ready", "models": request.app.state.gateway.upstreams.status()}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response:
    """Prometheus metrics, for operators: ``Authorization: Bearer $OPENFT_METRICS_TOKEN``."""
    token = state.settings.metrics_token
    if not token:
        raise PermissionDeniedError(
            "Metrics are off: set OPENFT_METRICS_TOKEN and scrape with it as a bearer token."
        )
    sent = request.headers.get("authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise AuthenticationError("The metrics endpoint needs the operators' metrics token.")
    body = await run_in_threadpool(generate_latest, state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
