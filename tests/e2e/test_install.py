"""The package as users get it: ``pip install .`` must carry the proxy's page and route table.

An editable install reads them from the source tree and would hide a missing ``package-data``
entry; this looks at what a real install contains (the wheel itself, and what else it holds, is
tests/integration/test_packaging.py's).
"""

from __future__ import annotations

import json
import sysconfig
from importlib import metadata

import pytest

# What the proxy serves from its package: without them `logstream proxy` starts with no page.
PACKAGED_FILES = (
    "logstream/services/proxy/static/index.html",
    "logstream/services/proxy/routes.toml",
)


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
