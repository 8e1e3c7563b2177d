"""FastAPI dependencies every feature shares: what ``create_app`` wired, and who is calling.

Features name the services they need beside their routes (``Annotated[FilesService,
provided(FilesService)]``), so this module knows no feature: features import it, never the other
way round. Dependencies that only pick something out of the app's state are ``async``: FastAPI runs
those on the event loop, where a sync one would cost a hop to the thread pool on every request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from service.auth.principal import Admin, Principal
from service.auth.service import AccessService
from service.gateway import ModelGateway
from service.limits import RateLimiter
from service.logs import add_log_ids


def provided(kind: object) -> Any:
    """A dependency on the one ``kind`` (a class, or a port's Protocol) that ``create_app``
    wired (``app.state.provided``, keyed by the types ``service.app.AppState`` declares)."""

    async def lookup(request: Request) -> Any:
        return request.app.state.provided[kind]

    return Depends(lookup)


Gateway = Annotated[ModelGateway, provided(ModelGateway)]
Limiter = Annotated[RateLimiter, provided(RateLimiter)]
Access = Annotated[AccessService, provided(AccessService)]

bearer = HTTPBearer(auto_error=False, description="An OpenFT API key: `sk-openft-...`")


async def authenticate(
    request: Request,
    access: Access,
    limiter: Limiter,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    openai_project: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """The caller: a key this process checked good and nothing changed since costs no query
    and no hop to the thread pool; any other goes to the database."""
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    principal = access.remembered(authorization, openai_project)
    if principal is None:
        principal = await run_in_threadpool(access.authenticate, authorization, openai_project)
    add_log_ids(project_id=principal.project_id, project=principal.project_slug)
    # Counted once the key is known good; RequestIdMiddleware puts the headers on the response.
    if limiter.limits_of(principal).unlimited:
        request.state.rate_limit_headers = {}
    else:
        request.state.rate_limit_headers = await run_in_threadpool(limiter.admit, principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def admit_tokens(
    request: Request, principal: Principal, limiter: RateLimiter, body: dict[str, Any]
) -> None:
    """Tokens per minute for an inference request ``body`` (chat or completions): charged here;
    their headers join the requests-per-minute ones."""
    headers = await limiter.admit_tokens(principal, [body])
    if headers:
        request.state.rate_limit_headers = {**request.state.rate_limit_headers, **headers}


def authenticate_admin(
    access: Access,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Admin:
    """An admin route's caller: an operator's admin key (``openft keys create --admin``)."""
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    admin = access.authenticate_admin(authorization)
    add_log_ids(admin_key_id=admin.key_id)
    return admin


CurrentAdmin = Annotated[Admin, Depends(authenticate_admin)]
