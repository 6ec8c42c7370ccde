"""Reading a service's own Prometheus metrics, as an operator would."""

from __future__ import annotations

import httpx


def metric_value(base_url: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` on ``base_url``/metrics."""
    text = httpx.get(f"{base_url}/metrics").text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))
