"""Runs batches inside the API processes: claim one with a lease, check its input file, send its
lines through the gateway (the same ownership checks, rate limits, usage rows, cost and metrics
as interactive requests) with at most ``batch_concurrency_per_model`` in flight per base model and
at vLLM's lower priority, record each line's outcome as it finishes, then write the output and
error files.

A line's outcome is a ``batch_lines`` row written with the batch's counts in one transaction, so
a runner that dies (SIGKILL, lost lease) is followed by one that skips the finished lines: a line
may be sent twice, but it appears in the output exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.auth import repository as keys
from service.auth.principal import Principal
from service.batches import repository
from service.batches.repository import BatchClaim, BatchLeaseLostError
from service.batches.requests import BatchRequest, InputCheck, requests_of
from service.blobstore import BlobStore, BlobWriter
from service.blobstore.keys import file_key
from service.completions.stored import ChatCompletionStore, StoreRequest
from service.db.clock import database_now
from service.db.database import Database
from service.db.models import Batch, BatchLine, File
from service.errors import InvalidRequestError, OpenFTError, ServiceUnavailableError
from service.files import repository as files
from service.gateway import ModelGateway
from service.ids import (
    new_batch_line_request_id,
    new_batch_request_id,
    new_request_id,
    parse_fine_tuned_model_name,
)
from service.limits import RateLimiter, RateLimitError
from service.metrics import Metrics
from service.responses.service import ResponsesService
from service.settings import Settings
from service.webhooks import outbox

log = logging.getLogger(__name__)

BATCH_PRIORITY = 10  # vLLM runs lower values first; interactive requests have 0
POLL_S = 1.0  # how often a runner looks for batches, and a running batch for a cancel
RETRY_WAIT_S = 2.0
READ_AHEAD = 256  # input lines read per trip to the blob store
OUTPUT_RETENTION_S = 30 * 24 * 3600  # output and error files, unless output_expires_after
NOT_RUN = {
    "cancelled": (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
}  # fmt: skip


@dataclass
class _Run:
    """A batch this runner holds, and why it should stop sending lines (None: keep going)."""

    claim: BatchClaim
    stop: str | None = None  # "cancelled", "expired" or "lost"


class BatchRunner:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        gateway: ModelGateway,
        limiter: RateLimiter,
        responses: ResponsesService,
        stored_completions: ChatCompletionStore,
        metrics: Metrics,
        settings: Settings,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.gateway = gateway
        self.limiter = limiter
        self.responses = responses
        self.stored_completions = stored_completions
        self.metrics = metrics
        self.settings = settings
        self.owner = f"batches@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._runs: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Claim and run batches, forever (up to ``batch_runs_per_process`` at once)."""
        while True:
            try:
                while len(self._runs) < self.settings.batch_runs_per_process:
                    claim = await run_in_threadpool(
                        repository.claim, self.db, self.owner, self.settings.batch_lease_seconds
                    )
                    if claim is None:
                        break
                    task = asyncio.create_task(self._run(_Run(claim)))
                    self._runs[claim.batch_id] = task
                    task.add_done_callback(self._forget)
            except Exception:
                log.exception("claiming batches failed; will retry")
            await asyncio.sleep(POLL_S)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for batch_id, running in list(self._runs.items()):
            if running is task:
                del self._runs[batch_id]

    async def aclose(self) -> None:
        """Stop every batch this process runs and free their leases (another runner resumes
        them at once; lines in flight are sent again there)."""
        runs = list(self._runs.values())
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    async def _run(self, run: _Run) -> None:
        claim = run.claim
        watching = asyncio.create_task(self._watch(run))
        try:
            status = claim.status
            if status == "validating":
                status = await run_in_threadpool(self._validate, claim)
            if status == "in_progress" and time.time() >= claim.expires_at:
                run.stop = "expired"
            elif status == "in_progress":
                await self._send_lines(run)
                if run.stop is None and not await run_in_threadpool(self._all_recorded, claim):
                    # A line's outcome could not be written: resume (its lines are sent again).
                    await run_in_threadpool(repository.release, self.db, claim)
                    return
                if run.stop is None:
                    status = await run_in_threadpool(self._begin_finalizing, claim)
            if run.stop == "lost" or status == "failed":
                return
            outcome = "cancelled" if status == "cancelling" else run.stop or "completed"
            await run_in_threadpool(self._finalize, claim, outcome)
            log.info("batch %s ended %s", claim.batch_id, outcome)
        except BatchLeaseLostError:
            log.info("batch %s is no longer this runner's", claim.batch_id)
        except asyncio.CancelledError:
            await run_in_threadpool(repository.release, self.db, claim)
            raise
        except Exception:  # its lease runs out and a runner tries again then
            log.exception("batch %s failed in the runner; it is retried when its lease expires",
                          claim.batch_id)  # fmt: skip
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    async def _watch(self, run: _Run) -> None:
        """Renew the lease, and notice a cancel, the end of the window or a lost lease."""
        renew_every = self.settings.batch_lease_seconds / 3
        renewed = time.monotonic()
        while run.stop != "lost":
            await asyncio.sleep(POLL_S)
            if time.monotonic() - renewed >= renew_every:
                status = await run_in_threadpool(
                    repository.renew, self.db, run.claim, self.settings.batch_lease_seconds
                )
                renewed = time.monotonic()
            else:
                status = await run_in_threadpool(self._status, run.claim)
            if status is None:
                run.stop = "lost"
            elif status == "cancelling":
                run.stop = "cancelled"
            elif time.time() >= run.claim.expires_at and run.stop is None:
                run.stop = "expired"

    def _status(self, claim: BatchClaim) -> str | None:
        with self.db.read() as session:
            batch = repository.get(session, claim.project_id, claim.batch_id)
            if batch is None or (batch.lease_owner, batch.attempt) != (claim.owner, claim.attempt):
                return None
            return batch.status

    # --- validating ---

    def _validate(self, claim: BatchClaim) -> str:
        """Read the whole input file: ``in_progress`` with its counts, or ``failed`` with OpenAI's
        ``errors`` (line numbers included); a batch cancelled meanwhile stays ``cancelling``."""
        check = InputCheck(claim.endpoint, self.settings.batch_max_requests)
        missing = not self._input_exists(claim)
        if not missing:
            check.read(self.blobs.read(file_key(claim.input_file_id)))
        with repository.held(self.db, claim) as (session, batch):
            if batch.status != "validating":
                return batch.status
            now = database_now(session)
            if missing or check.problems:
                batch.status, batch.failed_at = "failed", now
                batch.errors = (
                    [_file_gone(claim.input_file_id)]
                    if missing
                    else [problem.as_dict() for problem in check.problems]
                )
                batch.lease_owner = batch.lease_expires_at = None
                outbox.enqueue_batch_event(session, batch)
                return "failed"
            batch.status, batch.in_progress_at = "in_progress", now
            batch.total, batch.model = check.total, check.model
            return "in_progress"

    def _input_exists(self, claim: BatchClaim) -> bool:
        with self.db.read() as session:
            found = files.get(session, claim.project_id, claim.input_file_id, int(time.time()))
        return found is not None and self.blobs.exists(file_key(claim.input_file_id))

    # --- in progress ---

    async def _send_lines(self, run: _Run) -> None:
        """Send every line not yet finished, bounded per base model; lines in flight when the
        batch is cancelled or expires still finish and count."""
        claim = run.claim
        principal = await run_in_threadpool(self._principal, claim)
        finished = await run_in_threadpool(self._finished, claim.batch_id)
        lines = iter(requests_of(self.blobs.read(file_key(claim.input_file_id)), claim.endpoint))
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while run.stop is None:
                ahead = await run_in_threadpool(_take, lines, READ_AHEAD)
                if not ahead:
                    break
                for request in ahead:
                    if request.line in finished:
                        continue
                    slot = self._slot(request.model)
                    await slot.acquire()
                    if run.stop is not None:
                        slot.release()
                        break
                    task = asyncio.create_task(self._line(run, principal, request, slot))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    def _all_recorded(self, claim: BatchClaim) -> bool:
        with self.db.read() as session:
            batch = repository.get(session, claim.project_id, claim.batch_id)
            return batch is not None and batch.completed + batch.failed >= batch.total

    def _principal(self, claim: BatchClaim) -> Principal:
        """The project the batch runs as, with its creating key's per-minute limits."""
        with self.db.read() as session:
            key = keys.key_by_id(session, claim.key_id)
        return Principal(
            claim.project_id,
            claim.project_slug,
            claim.key_id,
            requests_per_minute=key.requests_per_minute if key is not None else None,
            tokens_per_minute=key.tokens_per_minute if key is not None else None,
        )

    def _finished(self, batch_id: str) -> set[int]:
        with self.db.read() as session:
            return repository.finished_lines(session, batch_id)

    def _slot(self, model: str) -> asyncio.Semaphore:
        """The per-base-model bound on this process's batch lines in flight."""
        named = parse_fine_tuned_model_name(model)
        base = named.base if named is not None else model
        if base not in self._slots:
            self._slots[base] = asyncio.Semaphore(self.settings.batch_concurrency_per_model)
        return self._slots[base]

    async def _line(
        self, run: _Run, principal: Principal, request: BatchRequest, slot: asyncio.Semaphore
    ) -> None:
        try:
            status, body = await self._answer(run, principal, request.body)
        except Exception:  # a fault of OpenFT's, not the line's: it is answered as one
            log.exception("batch %s line %d failed", run.claim.batch_id, request.line)
            fault = OpenFTError("The request failed inside OpenFT; the operator's log says why.")
            status, body = fault.status_code, fault.envelope()
        finally:
            slot.release()
        output = {
            "id": new_batch_request_id(),
            "custom_id": request.custom_id,
            "response": {
                "status_code": status,
                "request_id": new_batch_line_request_id(),
                "body": body,
            },
            "error": None,
        }
        try:
            await run_in_threadpool(self._record, run.claim, request.line, output)
        except BatchLeaseLostError:
            run.stop = "lost"
            return
        except Exception:  # not recorded: the line is sent again when the batch resumes
            log.exception("batch %s could not record line %d", run.claim.batch_id, request.line)
            return
        outcome = "completed" if status == 200 else "failed"
        self.metrics.batch_lines.labels(run.claim.endpoint, outcome).inc()

    async def _answer(
        self, run: _Run, principal: Principal, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """The line's status code and body, as the endpoint would have answered it; a model
        server that is down is waited for (``batch_retry_seconds``), a rate limit too."""
        if body.get("stream"):
            refused = InvalidRequestError(
                "A batch line cannot stream: remove 'stream' from its body.", param="stream"
            )
            return refused.status_code, refused.envelope()
        deadline = time.monotonic() + self.settings.batch_retry_seconds
        while True:
            try:
                return 200, await self._call(principal, run.claim.endpoint, body)
            except RateLimitError as exc:  # the key's minute is full: wait for the next one
                if run.stop is not None:
                    return exc.status_code, exc.envelope()
                await asyncio.sleep(RETRY_WAIT_S)
            except ServiceUnavailableError as exc:
                if time.monotonic() >= deadline or run.stop is not None:
                    return exc.status_code, exc.envelope()
                await asyncio.sleep(RETRY_WAIT_S)
            except OpenFTError as exc:
                return exc.status_code, exc.envelope()

    async def _call(
        self, principal: Principal, endpoint: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        if endpoint == "/v1/responses":
            prepared = await run_in_threadpool(self.responses.prepare, principal, body)
            await self.limiter.admit_tokens(principal, [prepared.chat])
            prepared = replace(prepared, chat=self._lowered(prepared.chat))
            return await self.responses.create(principal, prepared)
        chat = endpoint == "/v1/chat/completions"
        asked = StoreRequest.of(body, new_request_id()) if chat else None
        forwarded = asked.forwarded if asked is not None else body
        await self.limiter.admit_tokens(principal, [forwarded])
        response = await self.gateway.forward(principal, endpoint, self._lowered(forwarded))
        # The line's outcome is written after its usage row: a crash never drops the row of a
        # finished line (nor sends the line again).
        await self.gateway.usage_written()
        answer: dict[str, Any] = orjson.loads(bytes(response.body))
        if asked is not None and asked.store:
            await run_in_threadpool(
                self.stored_completions.add, principal, forwarded, answer, asked
            )
        return answer

    def _lowered(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body vLLM gets: after interactive requests, where its servers schedule so."""
        if not self.settings.vllm_priority_scheduling:
            return body
        return {**body, "priority": BATCH_PRIORITY}

    def _record(self, claim: BatchClaim, line: int, output: dict[str, Any]) -> None:
        """The line's outcome and the batch's counts, in one transaction."""
        response = output["response"]
        ok = response["status_code"] == 200
        with repository.held(self.db, claim) as (session, batch):
            session.add(BatchLine(batch_id=claim.batch_id, line=line, ok=ok, output=output))
            if ok:
                batch.completed += 1
                prompt, completion = _tokens(response["body"])
                batch.input_tokens += prompt
                batch.output_tokens += completion
            else:
                batch.failed += 1

    # --- finalizing ---

    def _begin_finalizing(self, claim: BatchClaim) -> str:
        with repository.held(self.db, claim) as (session, batch):
            if batch.status == "in_progress":
                batch.status, batch.finalizing_at = "finalizing", database_now(session)
            return batch.status

    def _finalize(self, claim: BatchClaim, outcome: str) -> None:
        """Write the output file (successful lines) and the error file (failed lines, and the
        lines never sent when the batch was cancelled or expired), then end the batch: blobs
        first, then their rows and the batch's end in one transaction."""
        output, errors = self.blobs.stage(), self.blobs.stage()
        rows: dict[str, File] = {}
        try:
            self._write_outputs(claim, outcome, output, errors)
            now = int(time.time())
            expires_at = now + (claim.output_expires_after or OUTPUT_RETENTION_S)
            for name, writer in (("output", output), ("error", errors)):
                if writer.size == 0:
                    writer.abort()
                    continue
                row = repository.output_file(claim, name, writer.size, now, expires_at)
                writer.commit(file_key(row.id))
                rows[name] = row
            with repository.held(self.db, claim) as (session, batch):
                session.add_all(rows.values())
                batch.output_file_id = rows["output"].id if "output" in rows else None
                batch.error_file_id = rows["error"].id if "error" in rows else None
                _end(session, batch, outcome)
        except BaseException:
            for writer in (output, errors):
                with contextlib.suppress(Exception):
                    writer.abort()
            for row in rows.values():
                with contextlib.suppress(Exception):
                    self.blobs.delete(file_key(row.id))
            raise

    def _write_outputs(
        self, claim: BatchClaim, outcome: str, output: BlobWriter, errors: BlobWriter
    ) -> None:
        with self.db.read() as session:
            for row in repository.line_outputs(session, claim.batch_id):
                (output if row.ok else errors).write(orjson.dumps(row.output) + b"\n")
            finished = repository.finished_lines(session, claim.batch_id)
        if outcome not in NOT_RUN or not self._input_exists(claim):
            return
        code, message = NOT_RUN[outcome]
        source = self.blobs.read(file_key(claim.input_file_id))
        for request in requests_of(source, claim.endpoint):
            if request.line not in finished:
                errors.write(orjson.dumps(_not_run(request, code, message)) + b"\n")


def _end(session: Session, batch: Batch, outcome: str) -> None:
    """The batch's end, and its webhook event in the same transaction."""
    now = database_now(session)
    batch.status = outcome
    if outcome == "completed":
        batch.completed_at = now
    elif outcome == "cancelled":
        batch.cancelled_at = now
    else:
        batch.expired_at = now
    batch.lease_owner = batch.lease_expires_at = None
    outbox.enqueue_batch_event(session, batch)


def _take(lines: Any, count: int) -> list[BatchRequest]:
    taken: list[BatchRequest] = []
    for request in lines:
        taken.append(request)
        if len(taken) == count:
            break
    return taken


def _tokens(body: dict[str, Any]) -> tuple[int, int]:
    """Prompt and completion tokens of an answer (chat and completions, or a response)."""
    usage = body.get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return int(prompt or 0), int(completion or 0)


def _not_run(request: BatchRequest, code: str, message: str) -> dict[str, Any]:
    return {
        "id": new_batch_request_id(),
        "custom_id": request.custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def _file_gone(file_id: str) -> dict[str, Any]:
    return {
        "code": "file_not_found",
        "message": f"The input file {file_id} was deleted before the batch could read it.",
        "param": "input_file_id",
        "line": None,
    }
