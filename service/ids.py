"""Random, URL-safe object ids in the formats OpenAI uses (``file-``, ``ftjob-`` ...)."""

from __future__ import annotations

import random
import secrets
import string
from typing import NamedTuple

_BASE62 = string.ascii_letters + string.digits


_UNBIASED = 248  # 4 x 62: bytes below it map evenly onto the alphabet


def base62(length: int) -> str:
    """``length`` characters from the OS's secure random source, in one read of it (not one
    read per character)."""
    chosen: list[str] = []
    while len(chosen) < length:
        chosen += [_BASE62[b % 62] for b in secrets.token_bytes(2 * length) if b < _UNBIASED]
    return "".join(chosen[:length])


def new_project_id() -> str:
    return "proj_" + base62(24)


def new_api_key_id() -> str:
    return "key_" + base62(24)


def new_file_id() -> str:
    return "file-" + base62(22)


def new_request_id() -> str:
    """Unique, not secret: the process's Mersenne Twister (seeded from the OS, re-seeded in a
    forked child), not a read of the OS's random source on every request."""
    return f"req_{random.getrandbits(128):032x}"


def new_job_id() -> str:
    return "ftjob-" + base62(24)


def new_event_id() -> str:
    return "ftevent-" + base62(24)


def new_model_tag() -> str:
    """The 8-character tail of a fine-tuned model name (``ft:...:AbCd1234``)."""
    return base62(8)


def new_fine_tuned_model_name(
    base: str, project_slug: str, suffix: str | None, *, checkpoint_step: int | None = None
) -> str:
    """A new fine-tuned model's name, ``ft:{base}:{project}:{suffix}:{tag}``, as OpenAI forms it
    (``...:ckpt-step-{N}`` for a checkpoint); no part holds a colon."""
    name = f"ft:{base}:{project_slug}:{suffix or ''}:{new_model_tag()}"
    return name if checkpoint_step is None else f"{name}:ckpt-step-{checkpoint_step}"


class FineTunedName(NamedTuple):
    base: str
    project_slug: str


def parse_fine_tuned_model_name(name: str) -> FineTunedName | None:
    """The parts of ``ft:{base}:{project}:{suffix}:{tag}[:ckpt-step-N]`` that name its base and
    project; None when ``name`` is not shaped so."""
    parts = name.split(":")
    if parts[0] != "ft" or len(parts) < 5:
        return None
    return FineTunedName(base=parts[1], project_slug=parts[2])


def new_checkpoint_id() -> str:
    return "ftckpt_" + base62(24)


def new_upload_id() -> str:
    return "upload_" + secrets.token_hex(16)


def new_upload_part_id() -> str:
    return "part_" + secrets.token_hex(16)


def new_webhook_endpoint_id() -> str:
    return "whep_" + base62(24)


def new_webhook_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def new_webhook_delivery_id() -> str:
    """The ``webhook-id`` header: the same on every retry of one delivery."""
    return "wh_" + secrets.token_hex(16)


def new_response_id() -> str:
    """``resp_`` and 50 hex digits, as api.openai.com forms a response's id."""
    return "resp_" + secrets.token_hex(25)


def new_output_item_id(prefix: str) -> str:
    """An output or input item's id: ``msg_``, ``fc_`` (function call) or ``fco_`` (its output)."""
    return f"{prefix}_" + secrets.token_hex(25)


def new_batch_id() -> str:
    """``batch_`` and 32 hex digits, as api.openai.com forms a batch's id."""
    return "batch_" + secrets.token_hex(16)


def new_batch_request_id() -> str:
    """An output line's ``id``: ``batch_req_`` and 32 hex digits."""
    return "batch_req_" + secrets.token_hex(16)


def new_batch_line_request_id() -> str:
    """An output line's ``response.request_id``: 32 hex digits, no prefix (as api.openai.com)."""
    return secrets.token_hex(16)


def new_admin_key_id() -> str:
    return "key_" + base62(24)


def new_checkpoint_permission_id() -> str:
    """``cp_`` and 24 base62 characters, as api.openai.com forms a checkpoint permission's id."""
    return "cp_" + base62(24)
