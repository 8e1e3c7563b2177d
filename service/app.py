"""The application factory: all wiring of the API process happens here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service import health
from service.auth.service import AccessService
from service.blobstore import LocalBlobStore
from service.db.database import Database
from service.deps import AppState
from service.files import router as files_router
from service.files.service import FilesService
from service.http.error_handlers import install_error_handlers
from service.http.request_id import RequestIdMiddleware
from service.jobs import router as jobs_router
from service.jobs.service import JobsService
from service.models import router as models_router
from service.models.registry import ModelRegistry
from service.models.service import ModelsService
from service.settings import Settings

log = logging.getLogger(__name__)

API_VERSION = "0.1.0"


def build_state(settings: Settings) -> AppState:
    db = Database(settings.database_url)
    blobs = LocalBlobStore(settings.blob_root)
    registry = ModelRegistry(settings)
    return AppState(
        settings=settings,
        db=db,
        blobs=blobs,
        access=AccessService(db),
        files=FilesService(db, blobs, settings),
        jobs=JobsService(db, registry),
        models=ModelsService(db, registry),
    )


def create_app(settings: Settings) -> FastAPI:
    """The API over an already-migrated database (the CLI migrates before serving)."""
    state = build_state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.files.sweep_orphans)
        housekeeping = asyncio.create_task(_expire_files(state, settings.expiry_sweep_seconds))
        try:
            yield
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            state.db.dispose()

    app = FastAPI(
        title="OpenFT",
        version=API_VERSION,
        description="Self-hosted, OpenAI-compatible fine-tuning API.",
        lifespan=lifespan,
    )
    app.state.openft = state
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(files_router.router, prefix="/v1")
    app.include_router(jobs_router.router, prefix="/v1")
    app.include_router(models_router.router, prefix="/v1")
    return app


async def _expire_files(state: AppState, every_s: float) -> None:
    while True:
        try:
            purged = await run_in_threadpool(state.files.purge_expired)
            if purged:
                log.info("deleted %d expired files", purged)
        except Exception:
            log.exception("expired-file sweep failed; will retry")
        await asyncio.sleep(every_s)
