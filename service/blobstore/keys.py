"""Where each kind of blob lives. Keys are built from object ids only, never from names."""

from __future__ import annotations


def file_key(file_id: str) -> str:
    return f"files/{file_id}"


def adapter_key(job_id: str, filename: str) -> str:
    """A file of the final adapter a job published (PEFT format)."""
    return f"adapters/{job_id}/final/{filename}"
