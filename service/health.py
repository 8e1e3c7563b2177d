"""Operations endpoints: liveness and readiness (no key) and metrics (the operators' token)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from service.db.database import Database
from service.deps import Gateway, provided
from service.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router
from service.metrics import Metrics
from service.settings import Settings

router = api_router(tags=["Health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: ERROR_RESPONSES["5XX"]})
async def readyz(db: Annotated[Database, provided(Database)], gateway: Gateway) -> dict[str, Any]:
    """Ready when the database answers; ``models`` tells which model servers are up."""
    try:
        await run_in_threadpool(db.ping)
    except Exception as exc:
        raise ServiceUnavailableError("The database is not reachable.") from exc
    servers = gateway.status()
    return {
        "status": "ready",
        "models": {n: "ready" if s.ready else "starting" for n, s in servers.items()},
        # For base models served by external replicas: how many answer (no addresses here).
        "replicas": {
            n: {"ready": sum(up for _, up in s.replicas), "total": len(s.replicas)}
            for n, s in servers.items()
            if s.replicas
        },
    }


@router.get("/metrics", include_in_schema=False)
async def metrics(
    request: Request,
    settings: Annotated[Settings, provided(Settings)],
    found: Annotated[Metrics, provided(Metrics)],
) -> Response:
    """Prometheus metrics, for operators: ``Authorization: Bearer $OPENFT_METRICS_TOKEN``."""
    token = settings.metrics_token
    if not token:
        raise PermissionDeniedError(
            "Metrics are off: set OPENFT_METRICS_TOKEN and scrape with it as a bearer token."
        )
    sent = request.headers.get("authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise AuthenticationError("The metrics endpoint needs the operators' metrics token.")
    body = await run_in_threadpool(generate_latest, found.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
