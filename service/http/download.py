"""The ``Content-Disposition`` of a download: the one place a stored file name reaches a header."""

from __future__ import annotations

import re
from urllib.parse import quote

# RFC 8187's attr-char beyond what ``quote`` always leaves alone (letters, digits, "-._~").
_ATTR_CHAR_EXTRA = "!#$&+^`|"
# What an ASCII quoted-string fallback may carry: printable ASCII but the quote, the backslash
# and "%" (which some clients decode), and never a path separator.
_NOT_SAFE_IN_FALLBACK = re.compile(r'[^\x20-\x7e]|["\\%/]')


def attachment(filename: str) -> str:
    """``attachment; filename="..."; filename*=UTF-8''...`` for a name as the client uploaded it.

    ``filename*`` carries the whole name, every character outside RFC 8187's ``attr-char``
    percent-encoded (``/`` included, so no client is handed a path); ``filename`` is the ASCII
    fallback for clients that do not read ``filename*``: the last path segment, with anything
    unsafe replaced by ``_``.
    """
    last = re.split(r"[/\\]", filename)[-1]
    fallback = _NOT_SAFE_IN_FALLBACK.sub("_", last).strip(" .") or "download"
    encoded = quote(filename, safe=_ATTR_CHAR_EXTRA, encoding="utf-8", errors="replace")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
