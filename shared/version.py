"""The installed Logstream version, for the client (``logstream.__version__``) and the services'
API documents alike: the full package's, else the client package's."""

from __future__ import annotations

from importlib import metadata

__all__ = ["VERSION"]


def _installed_version() -> str:
    for distribution in ("logstream", "logstream-client"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "0+unknown"  # a source checkout nobody installed


VERSION = _installed_version()
