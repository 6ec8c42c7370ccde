"""The README's configuration tables, generated from the settings classes.

    python -m logstream.config_doc      prints them; tests/unit/test_readme.py checks the README
"""

from __future__ import annotations

import importlib

from shared.settings import settings_table

__all__ = ["configuration_tables"]

SERVICES = ("ingest", "gateway", "proxy")


def configuration_tables() -> str:
    parts = []
    for service in SERVICES:
        settings = importlib.import_module(f"services.{service}.settings").Settings
        parts.append(f"#### {service}\n\n{settings_table(settings)}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(configuration_tables(), end="")
