"""FastAPI dependencies: the wired application state, the caller's project, per-feature services.

Dependencies that only pick something out of the state are ``async``: FastAPI runs those on the
event loop, where a sync one would cost a hop to the thread pool on every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth.principal import Principal
from service.auth.service import AccessService
from service.blobstore import BlobStore
from service.db.database import Database
from service.files.service import FilesService
from service.jobs.service import JobsService
from service.limits import RateLimiter
from service.logs import add_log_ids
from service.metrics import Metrics
from service.models.service import ModelsService
from service.settings import Settings
from service.uploads.service import UploadsService


@dataclass
class AppState:
    """Everything ``create_app`` builds once and routes share."""

    settings: Settings
    db: Database
    blobs: BlobStore
    access: AccessService
    files: FilesService
    jobs: JobsService
    models: ModelsService
    uploads: UploadsService
    metrics: Metrics
    limiter: RateLimiter


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.openft
    return state


State = Annotated[AppState, Depends(app_state)]


bearer = HTTPBearer(auto_error=False, description="An OpenFT API key: `sk-openft-...`")


def authenticate(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    openai_project: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    principal = state.access.authenticate(authorization, openai_project)
    add_log_ids(project_id=principal.project_id, project=principal.project_slug)
    # Counted once the key is known good; RequestIdMiddleware puts the headers on the response.
    request.state.rate_limit_headers = state.limiter.admit(principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def files_service(state: State) -> FilesService:
    return state.files


Files = Annotated[FilesService, Depends(files_service)]


async def jobs_service(state: State) -> JobsService:
    return state.jobs


Jobs = Annotated[JobsService, Depends(jobs_service)]


async def models_service(state: State) -> ModelsService:
    return state.models


Models = Annotated[ModelsService, Depends(models_service)]


async def uploads_service(state: State) -> UploadsService:
    return state.uploads


Uploads = Annotated[UploadsService, Depends(uploads_service)]
