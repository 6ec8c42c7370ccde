"""Keep Python's cycle collector from pausing every stream of a busy gateway.

A full (oldest-generation) collection walks every tracked object, and a gateway holding 10,000
streams has a million or so: each one stopped the event loop, and so every stream, for
hundreds of milliseconds (bench/README.md, "Many channels"). CPython runs one whenever the
objects that survived into the oldest generation grew by a quarter, which under steady churn
means every few thousand connects.

After each full collection the survivors (mostly the open streams' objects, which live as long
as their streams) are frozen: moved out of the collector's sight, so the next full collection
walks only what was created since. A stream's objects are freed by reference counting when it
ends (the gateway breaks the one cycle a request made, ``logstream.shared.web.limit_request_headers``), so
freezing them costs nothing. Cyclic garbage frozen by chance would never be collected, so once
per ``THAW_EVERY_S`` everything is unfrozen and the next full collection looks at all of it.
"""

from __future__ import annotations

import asyncio
import gc
import time

__all__ = ["keep_collections_short"]

# How often to look whether a full collection ran (and freeze its survivors).
CHECK_EVERY_S = 1.0
# How often to let one full collection see everything again (one long pause per period).
THAW_EVERY_S = 3600.0


async def keep_collections_short() -> None:
    """Run for the process's life (a task in the gateway's lifespan)."""
    full_runs = gc.get_stats()[2]["collections"]
    thawed_at = time.monotonic()
    try:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            now = time.monotonic()
            if now - thawed_at >= THAW_EVERY_S:
                gc.unfreeze()
                thawed_at = now
                continue
            runs = gc.get_stats()[2]["collections"]
            if runs != full_runs:
                full_runs = runs
                gc.freeze()
    finally:
        gc.unfreeze()
