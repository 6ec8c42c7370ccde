"""The package as users get it: ``pip install .`` must carry the proxy's page and route table.

An editable install reads them from the source tree and would hide a missing ``package-data``
entry; these tests look at what a real install and a real wheel contain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the proxy serves from its package: without them `logstream proxy` starts with no page.
PACKAGED_FILES = ("services/proxy/static/index.html", "services/proxy/routes.toml")
# What `pip wheel .` reads; copied so that the build never writes into the working tree.
BUILD_INPUTS = ("pyproject.toml", "README.md", "logstream", "shared", "services")
# Building the wheel (setuptools in an isolated build environment) takes 5-30 s.
WHEEL_TIMEOUT_S = 180


def _installed() -> metadata.Distribution | None:
    """The install in site-packages (not the source tree's egg-info, which a run from the
    repository root would find first), unless it is an editable one."""
    site = sysconfig.get_paths()["purelib"]
    found = [d for d in metadata.distributions(path=[site]) if d.metadata["Name"] == "logstream"]
    if not found:
        return None
    direct_url = json.loads(found[0].read_text("direct_url.json") or "{}")
    return None if direct_url.get("dir_info", {}).get("editable") else found[0]


@pytest.mark.skipif(_installed() is None, reason="not installed, or editable (as in dev)")
def test_installed_package_ships_the_proxy_page_and_route_table():
    dist = _installed()
    installed = {str(path) for path in dist.files or ()}

    missing = [name for name in PACKAGED_FILES if name not in installed]

    assert not missing, f"not installed by pip install .: {missing}"
    assert any(ep.name == "logstream" and ep.group == "console_scripts" for ep in dist.entry_points)


@pytest.mark.skipif(
    os.environ.get("LOGSTREAM_TEST_INSTALL") != "1",
    reason="builds a wheel (slow): set LOGSTREAM_TEST_INSTALL=1",
)
def test_wheel_ships_the_proxy_page_and_route_table(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in BUILD_INPUTS:
        original = REPO / name
        assert original.exists(), f"{name} is missing: pip install . needs it"
        if original.is_dir():
            shutil.copytree(
                original, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(original, source / name)

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        timeout=WHEEL_TIMEOUT_S,
    )

    wheel = next((tmp_path / "dist").glob("logstream-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [name for name in PACKAGED_FILES if name not in names]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "logstream = logstream.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
