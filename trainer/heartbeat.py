"""The lease heartbeat: keeps a claimed job ours while it trains, and notices when it is not."""

from __future__ import annotations

import threading

from service import queue
from service.db.database import Database
from service.errors import ServiceUnavailableError
from service.queue import Claim


class Heartbeat(threading.Thread):
    """Renews the lease every third of its length; sets ``lost`` when the job is gone."""

    def __init__(self, db: Database, claim: Claim, lease_s: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{claim.job_id}")
        self.db, self.claim, self.lease_s = db, claim, lease_s
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                renewed = queue.renew(self.db, self.claim, self.lease_s)
            except ServiceUnavailableError:
                continue  # the database is away: try again at the next beat
            if not renewed:
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()
