"""Runs a held-out chat file through a fine-tuned model and its base, through the gateway.

Every request takes the path a client's chat completion takes (ownership of the ``ft:`` model,
adapter loading, usage and metrics), greedy (temperature 0), at most ``CONCURRENCY`` at a time.
A key's tokens-per-minute limit is charged the whole run's estimate before the first request, so
a run either fits or is refused at once, never cut off half-way with its answers lost. A request
vLLM refuses (an example longer than the context) marks that example failed; a model server that
is down fails the whole evaluation with its 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool

from graders.config import Grader
from graders.grading import GradingServices, grade_batch
from graders.samples import Sample
from service.auth.principal import Principal
from service.errors import InvalidRequestError, NotFoundError, no_such_object
from service.evals.examples import Example, HeldOut, read_examples
from service.evals.report import Reply, build_report, max_tokens_for
from service.evals.schemas import CreateEvalRequest, EvalReport
from service.files.service import FilesService
from service.gateway import ModelGateway
from service.graders.judge import GatewayJudge
from service.graders.service import checked_grader, sandbox_limits
from service.limits import RateLimiter
from service.settings import Settings

CONCURRENCY = 8


class EvalRunner:
    def __init__(
        self,
        gateway: ModelGateway,
        files: FilesService,
        limiter: RateLimiter,
        settings: Settings,
    ) -> None:
        self.gateway = gateway
        self.files = files
        self.limiter = limiter
        self.settings = settings

    async def run(self, principal: Principal, request: CreateEvalRequest) -> EvalReport:
        """The grader (400), the file (404, or 400 without chat examples), then the model (404,
        400 for a base model, 503 while its server is down), then both models answer every
        example, and the grader scores both answers."""
        grader = None
        if request.grader is not None:
            grader = await run_in_threadpool(
                checked_grader, self.settings, request.grader, "grader"
            )
        held = await run_in_threadpool(self._held_out, principal, request)
        if not request.model.startswith("ft:"):
            raise InvalidRequestError(
                f"`{request.model}` is not a fine-tuned model: name an ft: model of the project.",
                param="model",
            )
        base_model = await self.gateway.load(principal, request.model)
        bodies = [self._body(request, e) for e in held.examples]
        await self.limiter.admit_tokens(
            principal, [{**b, "model": m} for b in bodies for m in (base_model, request.model)]
        )
        limit = asyncio.Semaphore(CONCURRENCY)
        jobs = [
            asyncio.ensure_future(self._both(principal, base_model, request.model, body, limit))
            for body in bodies
        ]
        try:
            replies = await asyncio.gather(*jobs)
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
        grades = None
        if grader is not None:
            grades = await self._grades(principal, grader, held, replies)
        return build_report(
            model=request.model,
            base_model=base_model,
            file_id=request.file,
            held=held,
            replies=replies,
            grades=grades,
        )

    async def _grades(
        self,
        principal: Principal,
        grader: Grader,
        held: HeldOut,
        replies: list[tuple[Reply, Reply]],
    ) -> list[tuple[float | None, float | None]]:
        """The grader's reward of every answer (None where a model gave none), all graded in
        one batch: a python grader starts one sandbox."""
        cases, places = [], []
        for index, (example, pair) in enumerate(zip(held.examples, replies, strict=True)):
            for side, reply in enumerate(pair):
                if reply.message is not None:
                    cases.append(
                        (Sample.from_message(reply.message, parse_json=True), example.item)
                    )
                    places.append((index, side))
        judge = GatewayJudge(
            self.gateway, self.limiter, self.settings, principal, asyncio.get_running_loop()
        )
        services = GradingServices(judge=judge, sandbox=sandbox_limits(self.settings))
        found = await run_in_threadpool(grade_batch, grader, cases, services)
        grades: list[list[float | None]] = [[None, None] for _ in replies]
        for (index, side), grade in zip(places, found, strict=True):
            grades[index][side] = grade.reward
        return [(base, tuned) for base, tuned in grades]

    def _held_out(self, principal: Principal, request: CreateEvalRequest) -> HeldOut:
        try:
            content = self.files.content(principal, request.file)
        except NotFoundError as exc:
            raise no_such_object("File", request.file, param="file") from exc
        prompts = request.grader is not None
        return read_examples(content.chunks, request.limit, request.file, prompts=prompts)

    @staticmethod
    def _body(request: CreateEvalRequest, example: Example) -> dict[str, Any]:
        """The chat request asking ``example`` (without the model)."""
        body: dict[str, Any] = {
            "messages": example.messages,
            "temperature": 0,
            "max_tokens": max_tokens_for(example, request.max_tokens),
        }
        if example.tools:
            body["tools"] = example.tools
        return body

    async def _both(
        self,
        principal: Principal,
        base_model: str,
        model: str,
        body: dict[str, Any],
        limit: asyncio.Semaphore,
    ) -> tuple[Reply, Reply]:
        base = self._reply(principal, {**body, "model": base_model}, limit)
        tuned = self._reply(principal, {**body, "model": model}, limit)
        base_reply, tuned_reply = await asyncio.gather(base, tuned)
        return base_reply, tuned_reply

    async def _reply(
        self, principal: Principal, body: dict[str, Any], limit: asyncio.Semaphore
    ) -> Reply:
        async with limit:
            try:
                completion = await self.gateway.completion(principal, body)
            except InvalidRequestError as exc:
                return Reply(None, exc.message)
        message = completion["choices"][0]["message"]
        return Reply(message.get("content") or "", message=message)
