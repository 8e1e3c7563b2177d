"""The application factory: all wiring of the API process happens here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from inference import router as inference_router
from inference.adapters import AdapterLoader
from inference.evals import EvalRunner
from inference.gateway import Gateway
from inference.token_drift import TokenDriftCounter
from inference.upstreams import Upstreams
from service import health, idempotency
from service.auth.service import AccessService
from service.blobstore import open_blob_store
from service.db.database import Database
from service.deps import AppState
from service.files import router as files_router
from service.files.service import FilesService
from service.http.body_limit import BodySizeLimitMiddleware
from service.http.error_handlers import install_error_handlers
from service.http.metrics_middleware import HttpMetricsMiddleware
from service.http.request_id import RequestIdMiddleware
from service.jobs import router as jobs_router
from service.jobs.service import JobsService
from service.limits import RATE_LIMITED, RateLimiter
from service.logs import configure_logging
from service.metrics import AdaptersCollector, JobsCollector, Metrics
from service.models import router as models_router
from service.models.service import ModelsService
from service.settings import Settings
from service.uploads import router as uploads_router
from service.uploads.service import UploadsService
from service.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

API_VERSION = "0.1.0"


def build_state(settings: Settings) -> AppState:
    db = Database(settings.database_url)
    blobs = open_blob_store(settings)
    files = FilesService(db, blobs, settings)
    metrics = Metrics()
    metrics.registry.register(
        JobsCollector(db, settings.base_models_by_name, settings.project_budgets_usd)
    )
    return AppState(
        settings=settings,
        db=db,
        blobs=blobs,
        access=AccessService(db),
        files=files,
        jobs=JobsService(db, settings),
        models=ModelsService(db, settings, blobs),
        uploads=UploadsService(db, blobs, files, settings),
        metrics=metrics,
        limiter=RateLimiter(db, settings),
    )


def build_gateway(state: AppState, *, spawn_vllm: bool) -> tuple[Gateway, Upstreams]:
    settings = state.settings
    headers = {"authorization": f"Bearer {settings.vllm_api_key}"} if settings.vllm_api_key else {}
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.vllm_request_timeout_seconds, connect=5.0),
        # vLLM's uvicorn drops idle connections after 5 s; never reuse one that old.
        limits=httpx.Limits(max_connections=256, keepalive_expiry=2.0),
        headers=headers,
    )
    upstreams = Upstreams(settings, client, spawn=spawn_vllm)
    state.metrics.registry.register(AdaptersCollector(upstreams.listed_adapters))
    adapters = AdapterLoader(state.blobs, settings.data_dir / "adapters", client)
    token_drift = TokenDriftCounter(state.metrics) if settings.drift_enabled else None
    gateway = Gateway(
        state.db, upstreams, adapters, client, state.metrics, token_drift, state.limiter
    )
    return gateway, upstreams


def create_app(settings: Settings, *, serve_models: bool = False) -> FastAPI:
    """The API over an already-migrated database (the CLI migrates before serving).

    ``serve_models`` starts a vLLM child per base model (``openft serve`` does; tests of the
    API alone and the OpenAPI export do not).
    """
    state = build_state(settings)
    gateway, upstreams = build_gateway(state, spawn_vllm=serve_models)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.blobs.prepare)
        await run_in_threadpool(state.files.sweep_orphans, settings.orphan_grace_seconds)
        await run_in_threadpool(state.uploads.sweep_orphans, settings.orphan_grace_seconds)
        housekeeping = asyncio.create_task(_expire_files(state, settings.expiry_sweep_seconds))
        webhooks = WebhookSender(state.db, settings, state.metrics)
        sending = asyncio.create_task(webhooks.run())
        await upstreams.start()
        try:
            yield
        finally:
            for task in (housekeeping, sending):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await webhooks.aclose()
            await gateway.drain()
            await upstreams.stop()
            if gateway.token_drift is not None:
                await run_in_threadpool(gateway.token_drift.stop)
            await gateway.client.aclose()
            state.db.dispose()

    app = FastAPI(
        title="OpenFT",
        version=API_VERSION,
        description="Self-hosted, OpenAI-compatible fine-tuning API.",
        lifespan=lifespan,
    )
    app.state.openft = state
    app.state.gateway = gateway
    app.state.evals = EvalRunner(gateway, state.files)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(files_router.router, prefix="/v1", responses=RATE_LIMITED)
    app.include_router(uploads_router.router, prefix="/v1", responses=RATE_LIMITED)
    app.include_router(jobs_router.router, prefix="/v1", responses=RATE_LIMITED)
    app.include_router(models_router.router, prefix="/v1", responses=RATE_LIMITED)
    app.include_router(inference_router.router, prefix="/v1", responses=RATE_LIMITED)
    return app


def app_from_environment() -> FastAPI:
    """One of several API processes (``openft serve --api-workers N``): settings come from the
    environment, where the parent put the URLs of the vLLM servers it runs."""
    settings = Settings()
    configure_logging(os.environ.get("OPENFT_LOG_LEVEL", "info"), settings.log_format)
    return create_app(settings, serve_models=False)


def _forget_old_limits(state: AppState) -> None:
    """Idempotency keys past their time and rate-limit windows past their minute."""
    state.limiter.sweep()
    with state.db.write() as session:
        idempotency.forget_expired(session, state.settings.idempotency_key_hours * 3600)


async def _expire_files(state: AppState, every_s: float) -> None:
    """Delete expired files, close uploads past their hour, forget old idempotency keys and
    rate-limit windows, forever."""
    while True:
        try:
            purged = await run_in_threadpool(state.files.purge_expired)
            expired = await run_in_threadpool(state.uploads.expire_stale)
            if purged or expired:
                log.info("deleted %d expired files; %d uploads expired", purged, expired)
            await run_in_threadpool(_forget_old_limits, state)
        except Exception:
            log.exception("expiry sweep failed; will retry")
        await asyncio.sleep(every_s)
