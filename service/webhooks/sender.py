"""Sends due webhook deliveries from the outbox, in the background of each API process.

Deliveries are leased before they are sent, so several API processes (or replicas) never send
the same one at the same time; a process that dies mid-send leaves a lease that expires, and the
delivery is sent again (at least once, as Standard Webhooks expects). Any 2xx answer delivers;
anything else, or no answer within the timeout, is retried with backoff until given up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

import httpx

from service.db.database import Database
from service.metrics import Metrics
from service.settings import Settings
from service.webhooks import repository
from service.webhooks.repository import DueDelivery, Outcome
from service.webhooks.retry import retry_delay
from service.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16
LEASE_MARGIN_S = 30
KEEP_FINISHED_S = 30 * 86400  # delivered and given-up rows, for operators to look into
PRUNE_EVERY_S = 3600


class WebhookSender:
    """One per API process: claims due deliveries, POSTs them concurrently, records outcomes."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
    ) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s = int(settings.webhook_timeout_seconds) + LEASE_MARGIN_S
        # Its own client: the gateway's carries vLLM's key, which receivers must never see.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds),
            follow_redirects=False,
            transport=transport,
        )

    async def run(self) -> None:
        """Send until cancelled, up to ``MAX_IN_FLIGHT`` at once: a receiver that is slow to
        answer holds one slot until its timeout, never the deliveries to other receivers."""
        in_flight: set[asyncio.Task[None]] = set()
        next_prune = time.monotonic()
        try:
            while True:
                if time.monotonic() >= next_prune:
                    await self._prune()
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                room = MAX_IN_FLIGHT - len(in_flight)
                due = await self._claim(room) if room else []
                for delivery in due:
                    task = asyncio.create_task(self._deliver(delivery))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if len(due) < room or room == 0:  # nothing more is due, or no room: wait
                    await asyncio.sleep(self.settings.webhook_poll_seconds)
        finally:
            for task in in_flight:
                task.cancel()

    async def send_due(self) -> int:
        """One round (for tests): lease what is due, send it all, record each outcome."""
        due = await self._claim(MAX_IN_FLIGHT)
        await asyncio.gather(*(self._deliver(d) for d in due))
        return len(due)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _prune(self) -> None:
        try:
            cutoff = int(time.time()) - KEEP_FINISHED_S
            pruned = await asyncio.to_thread(repository.prune_finished, self.db, cutoff)
        except Exception:
            log.exception("could not prune old webhook deliveries; will retry")
            return
        if pruned:
            log.info("deleted %d webhook deliveries older than 30 days", pruned)

    async def _claim(self, limit: int) -> list[DueDelivery]:
        try:
            return await asyncio.to_thread(
                repository.claim_due, self.db, self.owner, self.lease_s, limit
            )
        except Exception:
            log.exception("could not claim webhook deliveries; will retry")
            return []

    async def _deliver(self, delivery: DueDelivery) -> None:
        """Send one delivery and record the outcome (a failure here leaves the lease to expire,
        and the delivery is sent again)."""
        try:
            outcome = await self._attempt(delivery)
            await asyncio.to_thread(repository.record, self.db, self.owner, delivery.id, outcome)
        except Exception:
            log.exception("webhook %s: could not send or record it; will retry", delivery.id)
            return
        self.metrics.webhook_deliveries.labels(outcome.result).inc()
        if outcome.result == "failed":
            log.warning("webhook %s given up: %s", delivery.id, outcome.error)

    async def _attempt(self, delivery: DueDelivery) -> Outcome:
        if delivery.endpoint_gone:
            return Outcome(delivered=False, error="the endpoint was deleted")
        error = await self._post(delivery)
        if error is None:
            return Outcome(delivered=True)
        delay = retry_delay(
            delivery.attempts + 1,
            base_s=self.settings.webhook_retry_base_seconds,
            max_attempts=self.settings.webhook_max_attempts,
        )
        return Outcome(delivered=False, error=error, retry_in_s=delay)

    async def _post(self, delivery: DueDelivery) -> str | None:
        """POST the signed payload; None when the receiver acknowledged it (any 2xx)."""
        headers = signed_headers(delivery.secret, delivery.id, int(time.time()), delivery.payload)
        try:
            response = await self.client.post(
                delivery.url, content=delivery.payload.encode(), headers=headers
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"
