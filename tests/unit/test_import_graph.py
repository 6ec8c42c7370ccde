"""The rooms and their doors: which part of the code may import which.

- each service (``logstream.services.<name>``) imports only itself and ``logstream.shared``:
  services meet through ``shared`` and the wire, never each other;
- ``logstream.shared`` imports only itself;
- the client (``logstream.publisher``, ``sender``, ``handler``, ``tail``) imports only itself and
  the shared modules the client package ships (``client/pyproject.toml``), so it installs alone;
- the CLI reaches the services by name at run time (``logstream.cli``), and only there.

Every import statement counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())
CLIENT_MODULES = set(CLIENT["tool"]["setuptools"]["py-modules"])


def _imports(path: Path) -> set[str]:
    """Every ``logstream...`` module a file imports (``from x import y`` counts as x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "logstream" or name.startswith("logstream.")}


def _modules_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module of the repo (not a name imported from one)."""
    parts = name.split(".")[1:]
    base = REPO / "logstream"
    path = base.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize("service", ["ingest", "gateway", "proxy", "simulator"])
def test_a_service_imports_only_itself_and_shared(service):
    own = f"logstream.services.{service}"
    for path in _modules_of(REPO / "services" / service):
        strays = {
            name
            for name in _imports(path)
            if _is_module(name)
            and not (name == own or name.startswith(own + "."))
            and not (name == "logstream.shared" or name.startswith("logstream.shared."))
        }
        assert not strays, f"{path.relative_to(REPO)} imports {sorted(strays)}"


def test_shared_imports_only_shared():
    for path in _modules_of(REPO / "shared"):
        strays = {
            name
            for name in _imports(path)
            if _is_module(name) and not name.startswith("logstream.shared")
        }
        assert not strays, f"{path.relative_to(REPO)} imports {sorted(strays)}"


@pytest.mark.parametrize("module", sorted(CLIENT_MODULES - {"logstream.__main__"}))
def test_the_client_imports_only_what_the_client_package_ships(module):
    path = REPO.joinpath(*module.split(".")).with_suffix(".py")
    shipped = CLIENT_MODULES | {"logstream", "logstream.shared"}
    # the CLI names the server's modules too, but imports them only in the full install
    allowed_elsewhere = module == "logstream.cli"
    strays = {
        name
        for name in _imports(path)
        if _is_module(name) and name not in shipped and not allowed_elsewhere
    }
    assert not strays, f"{module} imports {sorted(strays)}, which the client package lacks"
