"""The application factory: all wiring of the API process happens here (and in the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import get_type_hints

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from inference.gateway import Gateway
from service import health, idempotency
from service.auth.service import AccessService
from service.batches import router as batches_router
from service.batches.runner import BatchRunner
from service.batches.service import BatchesService
from service.blobstore import BlobStore, open_blob_store
from service.checkpoint_permissions import router as checkpoint_permissions_router
from service.checkpoint_permissions.service import CheckpointPermissionsService
from service.completions import router as completions_router
from service.completions.stored import ChatCompletionStore
from service.db.database import Database
from service.distillation import router as distillation_router
from service.distillation.service import Distiller
from service.evals import router as evals_router
from service.evals.runner import EvalRunner
from service.files import router as files_router
from service.files.service import FilesService
from service.gateway import ModelGateway
from service.graders import router as graders_router
from service.graders.service import GradersService
from service.http.body_limit import BodySizeLimitMiddleware
from service.http.error_handlers import install_error_handlers
from service.http.error_responses import RATE_LIMITED
from service.http.metrics_middleware import HttpMetricsMiddleware
from service.http.request_id import RequestIdMiddleware
from service.jobs import router as jobs_router
from service.jobs.service import JobsService
from service.limits import RateLimiter
from service.logs import configure_logging
from service.metrics import AdaptersCollector, JobsCollector, Metrics
from service.models import router as models_router
from service.models.service import ModelsService
from service.responses import router as responses_router
from service.responses.service import ResponsesService
from service.settings import Settings
from service.uploads import router as uploads_router
from service.uploads.service import UploadsService
from service.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

API_VERSION = "0.1.0"


@dataclass
class AppState:
    """Everything ``create_app`` builds once and routes share; each field is what a route gets
    when it depends on its type (``service.deps.provided``)."""

    settings: Settings
    db: Database
    blobs: BlobStore
    access: AccessService
    limiter: RateLimiter
    metrics: Metrics
    gateway: ModelGateway
    files: FilesService
    uploads: UploadsService
    jobs: JobsService
    models: ModelsService
    evals: EvalRunner
    responses: ResponsesService
    stored_completions: ChatCompletionStore
    distiller: Distiller
    graders: GradersService
    batches: BatchesService
    batch_runner: BatchRunner
    checkpoint_permissions: CheckpointPermissionsService

    def provided(self) -> dict[object, object]:
        """The objects routes may depend on, by the type this class declares for each."""
        return {kind: getattr(self, name) for name, kind in get_type_hints(AppState).items()}


def build_state(settings: Settings, *, serve_models: bool = False) -> AppState:
    """Wire the API's pieces over ``settings``; ``serve_models`` runs a vLLM child per base model
    (``openft serve`` does; tests of the API alone and the OpenAPI export do not)."""
    db = Database(settings.database_url)
    blobs = open_blob_store(settings)
    metrics = Metrics()
    metrics.registry.register(
        JobsCollector(db, settings.base_models_by_name, settings.project_budgets_usd)
    )
    limiter = RateLimiter(db, settings)
    gateway = Gateway.open(settings, db, blobs, metrics, limiter, spawn_vllm=serve_models)
    metrics.registry.register(AdaptersCollector(gateway.status))
    files = FilesService(db, blobs, settings)
    responses = ResponsesService(db, gateway, settings)
    stored_completions = ChatCompletionStore(db, settings)
    return AppState(
        settings=settings,
        db=db,
        blobs=blobs,
        access=AccessService(db, key_cache_seconds=settings.key_cache_seconds),
        limiter=limiter,
        metrics=metrics,
        gateway=gateway,
        files=files,
        uploads=UploadsService(db, blobs, files, settings),
        jobs=JobsService(db, settings),
        models=ModelsService(db, settings, blobs),
        evals=EvalRunner(gateway, files, limiter, settings),
        responses=responses,
        stored_completions=stored_completions,
        distiller=Distiller(db, blobs, files),
        graders=GradersService(gateway, limiter, settings),
        batches=BatchesService(db),
        checkpoint_permissions=CheckpointPermissionsService(db),
        batch_runner=BatchRunner(
            db, blobs, gateway, limiter, responses, stored_completions, metrics, settings
        ),
    )


def create_app(settings: Settings, *, serve_models: bool = False) -> FastAPI:
    """The API over an already-migrated database (the CLI migrates before serving)."""
    state = build_state(settings, serve_models=serve_models)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.blobs.prepare)
        await run_in_threadpool(state.files.sweep_orphans, settings.orphan_grace_seconds)
        await run_in_threadpool(state.uploads.sweep_orphans, settings.orphan_grace_seconds)
        housekeeping = asyncio.create_task(_expire_files(state, settings.expiry_sweep_seconds))
        webhooks = WebhookSender(state.db, settings, state.metrics)
        sending = asyncio.create_task(webhooks.run())
        await state.gateway.start()
        batches = asyncio.create_task(state.batch_runner.run())
        try:
            yield
        finally:
            batches.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batches
            await state.batch_runner.aclose()
            for task in (housekeeping, sending):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await webhooks.aclose()
            await state.gateway.aclose()
            state.access.close()
            state.db.dispose()

    app = FastAPI(
        title="OpenFT",
        version=API_VERSION,
        description="Self-hosted, OpenAI-compatible fine-tuning API.",
        lifespan=lifespan,
    )
    app.state.openft = state
    app.state.provided = state.provided()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    features = (
        files_router,
        uploads_router,
        jobs_router,
        models_router,
        completions_router,
        responses_router,
        evals_router,
        distillation_router,
        graders_router,
        batches_router,
        checkpoint_permissions_router,
    )
    for feature in features:
        app.include_router(feature.router, prefix="/v1", responses=RATE_LIMITED)
    return app


def app_from_environment() -> FastAPI:
    """One of several API processes (``openft serve --api-workers N``): settings come from the
    environment, where the parent put the URLs of the vLLM servers it runs."""
    settings = Settings()
    configure_logging(os.environ.get("OPENFT_LOG_LEVEL", "info"), settings.log_format)
    return create_app(settings, serve_models=False)


def _forget_old_limits(state: AppState) -> None:
    """Idempotency keys past their time and rate-limit seconds that left the minute."""
    state.limiter.sweep()
    with state.db.write() as session:
        idempotency.forget_expired(session, state.settings.idempotency_key_hours * 3600)


async def _expire_files(state: AppState, every_s: float) -> None:
    """Delete expired files, stored responses and stored chat completions, close uploads past
    their hour, forget old idempotency keys and rate-limit windows, forever."""
    while True:
        try:
            purged = await run_in_threadpool(state.files.purge_expired)
            await run_in_threadpool(state.responses.purge_expired)
            await run_in_threadpool(state.stored_completions.purge_expired)
            expired = await run_in_threadpool(state.uploads.expire_stale)
            if purged or expired:
                log.info("deleted %d expired files; %d uploads expired", purged, expired)
            await run_in_threadpool(_forget_old_limits, state)
        except Exception:
            log.exception("expiry sweep failed; will retry")
        await asyncio.sleep(every_s)
