"""Cookie names and picking some cookies out of a ``Cookie`` header, as the browser sent them.

The proxy passes the gateway only the cookies it names (``forward_cookies``), and the gateway's
auth callout only those it names (``auth_callout_cookies``): a browser's other cookies (its
analytics, its preferences) are not their business, and would make every change of one of
them look like a new credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from logstream.shared.errors import SettingsError
from logstream.shared.settings import env_name

__all__ = ["cookie_names", "is_token", "pick_cookies"]

# RFC 9110's token: what a header name is, and a cookie name (RFC 6265 section 4.1.1).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_COOKIE_NAME_CHARS = 128


def is_token(text: str, max_chars: int) -> bool:
    """``text`` is an RFC 9110 token (a header or cookie name) of at most ``max_chars``."""
    return len(text) <= max_chars and _TOKEN.fullmatch(text) is not None


def cookie_names(text: str, *, setting: str) -> tuple[str, ...]:
    """The names in a comma-separated setting, each once; a name that is none stops the
    service naming ``setting``."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    for name in names:
        if not is_token(name, MAX_COOKIE_NAME_CHARS):
            raise SettingsError(
                f"invalid setting {setting} ({env_name(setting)}): {name[:64]!r} is not a "
                "cookie name"
            )
    return names


def pick_cookies(header: str, names: Iterable[str]) -> str:
    """The ``name=value`` pairs of ``header`` whose name is one of ``names`` and whose value is
    not empty, in the header's order and bytes (not parsed and re-quoted); "" for none."""
    wanted = set(names)
    return "; ".join(
        piece.strip()
        for piece in header.split(";")
        if piece.partition("=")[0].strip() in wanted and piece.partition("=")[2].strip()
    )
