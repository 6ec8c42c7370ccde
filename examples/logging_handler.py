"""Send an application's ``logging`` to Logstream: two lines of setup, then log as usual.

Run the stack first (``logstream up``), then::

    python examples/logging_handler.py [CHANNEL] [INGEST_URL]

The token comes from ``LOGSTREAM_SERVICE_TOKEN`` (dev default: l5-etl-token). Watch the records
arrive with ``logstream tail CHANNEL``.
"""

import logging
import os
import sys

from logstream import LogstreamHandler

channel = sys.argv[1] if len(sys.argv) > 1 else "logs:etl:workspace123:workflow456"
ingest_url = (
    sys.argv[2]
    if len(sys.argv) > 2
    else os.environ.get("LOGSTREAM_INGEST_URL", "http://127.0.0.1:3001")
)
token = os.environ.get("LOGSTREAM_SERVICE_TOKEN", "l5-etl-token")

# The two lines: everything logged under "etl" now also goes to the channel.
handler = LogstreamHandler(channel, token=token, url=ingest_url)
logging.getLogger("etl").addHandler(handler)

log = logging.getLogger("etl.orders")
log.setLevel(logging.INFO)
log.info("loaded %d rows", 1200, extra={"table": "orders", "rows": 1200})
log.warning("slow query", extra={"table": "orders", "duration_ms": 2300})
try:
    {}["customer_id"]
except KeyError:
    log.exception("load failed", extra={"table": "orders"})

# Records are sent from a background thread; they are also flushed at exit. Doing it here
# makes "stored" explicit before the program says so.
handler.close()
print(f"logged 3 records to {channel}")
