"""Building a base-model folder once: into a staging sibling, renamed into place when complete,
so a crash never leaves half a model and two builders never mix their files."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A leftover staging folder this old comes from a crashed build, not a running one.
STALE_STAGING_SECONDS = 600.0


def build_once(
    target: Path,
    *,
    complete: Callable[[Path], bool],
    ours: Callable[[Path], bool],
    build: Callable[[Path], None],
) -> Path:
    """``build`` the folder into a staging sibling and rename it onto ``target``, unless
    ``complete(target)`` already. ``ours`` says whether an incomplete or outdated folder at
    ``target`` is one of these builds (replaced) or something else (refused)."""
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    try:
        build(staging)
        make_readable(staging)
        _move_into_place(staging, target, complete, ours)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def make_readable(folder: Path) -> None:
    """Open up mkdtemp's private modes: the model is read by other users (e.g. a vLLM container)."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _remove_stale_staging(target: Path) -> None:
    cutoff = time.time() - STALE_STAGING_SECONDS
    for leftover in target.parent.glob(_staging_prefix(target) + "*"):
        if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
            shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(
    staging: Path, target: Path, complete: Callable[[Path], bool], ours: Callable[[Path], bool]
) -> None:
    """Rename the finished build onto ``target`` (absent, empty, or an older build of ours)."""
    if complete(target):  # another process finished first
        return
    if ours(target):
        shutil.rmtree(target)
    elif target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty and is not a model OpenFT built")
    try:
        staging.rename(target)
    except OSError:
        if not complete(target):  # lost a race to another builder: theirs is as good
            raise
