"""Unauthenticated liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.deps import State
from service.errors import ServiceUnavailableError

router = APIRouter(tags=["Health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> dict[str, str]:
    try:
        await run_in_threadpool(state.db.ping)
    except Exception as exc:
        raise ServiceUnavailableError("The database is not reachable.") from exc
    return {"status": "ready"}
