"""The rules of ``graders.validate`` and ``graders.run``; also checks an RFT job's grader."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from graders.config import (
    Grader,
    GraderConfigError,
    LabelModelGrader,
    MultiGrader,
    ScoreModelGrader,
    check_servable,
    parse_grader,
    walk,
)
from graders.grading import GradingServices, grade_batch
from graders.python_grader import sandbox_unavailable
from graders.python_sandbox import SandboxLimits
from graders.samples import Sample
from service.auth.principal import Principal
from service.errors import InvalidRequestError
from service.gateway import ModelGateway
from service.graders.judge import GatewayJudge, embeddings_problem, judge_model_problem
from service.graders.schemas import (
    RunGraderMetadata,
    RunGraderRequest,
    RunGraderResponse,
    ValidateGraderRequest,
    ValidateGraderResponse,
)
from service.limits import RateLimiter
from service.settings import Settings


def sandbox_limits(settings: Settings) -> SandboxLimits:
    return SandboxLimits(
        timeout_s=settings.grader_python_timeout_seconds,
        memory_bytes=settings.grader_python_memory_mib * 1024 * 1024,
    )


def checked_grader(settings: Settings, data: Any, param: str) -> Grader:
    """``data`` as a grader this server can run, or a 400 whose ``param`` starts with
    ``param`` (``grader``, ``method.reinforcement.grader``)."""
    try:
        grader = parse_grader(data)
        check_servable(
            grader,
            model_problem=lambda model: judge_model_problem(settings, model),
            embeddings_problem=embeddings_problem(settings),
            python_problem=sandbox_unavailable,
        )
    except GraderConfigError as error:
        where = f"{param}.{error.param}" if error.param else param
        raise InvalidRequestError(error.message, param=where.replace(".[", "[")) from None
    return grader


class GradersService:
    def __init__(self, gateway: ModelGateway, limiter: RateLimiter, settings: Settings) -> None:
        self.gateway = gateway
        self.limiter = limiter
        self.settings = settings

    def validate(self, request: ValidateGraderRequest) -> ValidateGraderResponse:
        checked_grader(self.settings, request.grader, "grader")
        return ValidateGraderResponse(grader=request.grader)

    async def run(self, principal: Principal, request: RunGraderRequest) -> RunGraderResponse:
        grader = checked_grader(self.settings, request.grader, "grader")
        judge = GatewayJudge(
            self.gateway, self.limiter, self.settings, principal, asyncio.get_running_loop()
        )
        services = GradingServices(judge=judge, sandbox=sandbox_limits(self.settings))
        case = (Sample.from_text(request.model_sample), request.item or {})
        started = time.perf_counter()
        (grade,) = await run_in_threadpool(grade_batch, grader, [case], services)
        elapsed = time.perf_counter() - started
        usage = {model: tokens.as_dict() for model, tokens in grade.token_usage.items()}
        return RunGraderResponse(
            reward=grade.reward,
            metadata=RunGraderMetadata(
                name=grader.name,
                type=grader.type,
                errors=grade.errors.as_dict(),
                execution_time=elapsed,
                scores=dict(grade.sub_rewards) if isinstance(grader, MultiGrader) else {},
                token_usage=_total(usage) if usage else None,
                sampled_model_name=_judge_name(grader),
            ),
            sub_rewards=dict(grade.sub_rewards),
            model_grader_token_usage_per_model=usage,
        )


def _total(usage: dict[str, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for tokens in usage.values():
        for key, value in tokens.items():
            total[key] = total.get(key, 0) + value
    return total


def _judge_name(grader: Grader) -> str | None:
    for _, sub in walk(grader):
        if isinstance(sub, ScoreModelGrader | LabelModelGrader):
            return sub.model
    return None
