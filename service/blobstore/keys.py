"""Where each kind of blob lives. Keys are built from object ids only, never from names."""

from __future__ import annotations

FINAL = "final"
# Every blob lives under one of these folders (backups copy them all).
FOLDERS = ("files", "adapters", "snapshots", "uploads")


def file_key(file_id: str) -> str:
    return f"files/{file_id}"


def adapter_prefix(job_id: str, variant: str = FINAL) -> str:
    """The folder of one adapter of a job: ``final``, or ``step-N`` for an epoch's checkpoint."""
    return f"adapters/{job_id}/{variant}"


def adapter_key(job_id: str, filename: str, variant: str = FINAL) -> str:
    """A file of an adapter a job published (PEFT format)."""
    return f"{adapter_prefix(job_id, variant)}/{filename}"


def checkpoint_variant(step: int) -> str:
    # Named by step, not by checkpoint id: a resumed run re-publishing a step overwrites the same
    # blobs instead of leaving orphans.
    return f"step-{step}"


def snapshot_prefix(job_id: str) -> str:
    return f"snapshots/{job_id}"


def snapshot_key(job_id: str, step: int) -> str:
    """A resume snapshot; zero-padded so keys sort by step."""
    return f"{snapshot_prefix(job_id)}/step-{step:09d}.pt"


def upload_part_key(upload_id: str, part_id: str) -> str:
    return f"uploads/{upload_id}/{part_id}"
