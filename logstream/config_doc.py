"""The README's configuration tables, generated from the settings classes.

    python -m logstream.config_doc           prints them
    python -m logstream.config_doc --write   rewrites them in README.md (from the repo root)

tests/unit/test_readme.py checks that the README holds exactly these tables.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from logstream.shared.settings import settings_table

__all__ = ["configuration_tables"]

SERVICES = ("ingest", "gateway", "proxy")


def configuration_tables() -> str:
    parts = []
    for service in SERVICES:
        settings = importlib.import_module(f"services.{service}.settings").Settings
        parts.append(f"#### {service}\n\n{settings_table(settings)}\n")
    return "\n".join(parts)


def rewrite_readme(readme: Path) -> None:
    """Replace everything from the first service's heading to the next ``## `` heading."""
    text = readme.read_text()
    start = text.index(f"#### {SERVICES[0]}\n")
    end = text.index("\n## ", start)
    readme.write_text(text[:start] + configuration_tables() + text[end:])


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        rewrite_readme(Path("README.md"))
    else:
        print(configuration_tables(), end="")
