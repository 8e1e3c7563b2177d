"""Named fault-injection points: tests kill a worker at an exact place instead of sleeping.

``OPENFT_FAULT=after_snapshot_upload`` SIGKILLs the process the first time it passes that point;
``OPENFT_FAULT=after_step:3`` the third time. Unset (always, outside tests), a point costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = (
    "after_validation",  # the job is queued, its files validated
    "after_step",  # a step's metrics are written
    "after_signal",  # an overfitting or underfitting warning is written
    "after_snapshot_upload",  # a resume snapshot is in the blob store
    "after_checkpoint_publish",  # an epoch's checkpoint row is committed
    "before_success",  # the final adapter and result file are stored, the job not yet succeeded
)
_passes: Counter[str] = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("OPENFT_FAULT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _passes[name] += 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
