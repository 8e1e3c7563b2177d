"""What the ``openft`` commands share: the error console, and how an ``OpenFTError`` ends one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from service.errors import OpenFTError

err = Console(stderr=True, soft_wrap=True)  # names, keys and paths stay whole, copyable


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Print an ``OpenFTError``'s message (no traceback) and end the command with status 2."""
    try:
        yield
    except OpenFTError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from exc
