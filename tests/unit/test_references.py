"""Every name and file the code and the docs cite exists.

Comments, docstrings and documents point readers at modules (``logstream.shared.records``), at
names in them (``logstream.shared.web.limit_request_headers``), at files
(``services/gateway/hub.py``, ``docs/reference/stream.md``) and, in Markdown, at other pages
(``[settings](settings.md#...)``). A rename that leaves one of those behind sends the next reader
nowhere; this finds them.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".venv-ci", "__pycache__", "node_modules", "build"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".js", ".html", ".conf", ".txt"}
# Generated measurement output: the profile rows name functions as they were when it ran.
GENERATED = {"bench/RESULTS.md", "bench/gateway-profile.txt"}

# (not inside a string literal: a logger's or a storage key's name is not a module)
DOTTED = re.compile(r"(?<![\w./'\"-])logstream(?:\.[A-Za-z_]\w*)+")
# a name that is not a module: a logger's (getLogger("logstream.x")), or one a constant holds
# (AUDIT_LOGGER = "logstream.audit", an attribute key such as CHANNEL_ATTRIBUTE)
LOGGER = re.compile(r"(?:getLogger\(\s*|\b[A-Z][A-Z_]* = )[\"'](logstream(?:\.\w+)*)[\"']")
FILE = re.compile(
    r"(?<![\w./-])((?:services|shared|logstream|tests|bench|docs|deploy|examples|client|\.ci)"
    r"/[\w./-]*\w\.(?:py|md|toml|yaml|yml|conf|json|js|html|css|txt))\b"
)
MD_LINK = re.compile(r"\]\(([\w./-]+)(#[^)\s]*)?\)")


def _texts() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if SKIP_DIRS & set(rel.parts) or any(part.endswith(".egg-info") for part in rel.parts):
            continue
        if rel.parts[:2] in (("logstream", "services"), ("logstream", "shared")):
            continue  # the links to services/ and shared/: read once, there
        if path.is_file() and path.suffix in TEXT_SUFFIXES and rel.as_posix() not in GENERATED:
            found.append(path)
    return sorted(found)


TEXTS = _texts()
# Loggers and keys are named like modules (``logstream.audit``); a document may name one.
LOGGERS = {
    name for path in TEXTS if path.suffix == ".py" for name in LOGGER.findall(path.read_text())
}


def _resolves(dotted: str) -> bool:
    """A module, or a name (attribute chain) in one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                # a method or attribute set in __init__ (a class's instance attribute) counts
                annotations = getattr(target, "__annotations__", {})
                slots = getattr(target, "__slots__", ())
                if isinstance(target, type) and (name in annotations or name in slots):
                    return True
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_dotted_name_the_repo_cites_exists():
    missing = []
    for path in TEXTS:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for found in DOTTED.findall(line):
                name = found.rstrip(".")
                if name.endswith((".py", ".md")) or "__main__" in name or name in LOGGERS:
                    continue
                if not _resolves(name):
                    missing.append(f"{path.relative_to(REPO)}:{number}: {name}")
    assert not missing, "\n".join(missing)


def test_every_file_the_repo_cites_exists():
    missing = []
    for path in TEXTS:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for found in FILE.findall(line):
                if not (REPO / found).exists():
                    missing.append(f"{path.relative_to(REPO)}:{number}: {found}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "page", [p for p in TEXTS if p.suffix == ".md"], ids=lambda p: str(p.relative_to(REPO))
)
def test_every_relative_link_in_a_document_leads_somewhere(page):
    missing = []
    for target, _ in MD_LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(REPO)} links to {missing}"


def test_nothing_cites_a_document_outside_the_repo():
    # The working agreement the project started from lives outside it; the repo's own
    # reference is docs/reference, and that is what the code and the docs cite.
    outside = re.compile(r"\bCONTRACT(?:\.md)?\b(?!_)|\.\./shared/")
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in TEXTS
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not found, found
