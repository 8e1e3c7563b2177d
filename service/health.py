"""Unauthenticated liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.deps import State
from service.errors import ServiceUnavailableError

router = APIRouter(tags=["Health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, state: State) -> dict[str, Any]:
    """Ready when the database answers; ``models`` tells which model servers are up."""
    try:
        await run_in_threadpool(state.db.ping)
    except Exception as exc:
        raise ServiceUnavailableError("The database is not reachable.") from exc
    return {"status": "ready", "models": request.app.state.gateway.upstreams.status()}
