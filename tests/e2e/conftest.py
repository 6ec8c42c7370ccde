"""Fixtures for end-to-end tests."""

from __future__ import annotations

import pytest

from tests.support.up_process import Up


@pytest.fixture
def running(tmp_path):
    """Starts ``up`` runs for a test, and kills whatever a failed test left."""
    runs: list[Up] = []

    def start(*flags: str, **options) -> Up:
        runs.append(Up(tmp_path, *flags, **options).start())
        return runs[-1].wait_banner()

    yield start
    for up in runs:
        up.kill_everything()
