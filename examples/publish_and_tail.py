"""Publish a few log records from Python, then read them back with ``logstream tail``.

Run the stack first (``logstream up``), then::

    python examples/publish_and_tail.py [INGEST_URL] [GATEWAY_URL]
"""

import logging
import subprocess
import sys
import uuid

from logstream import LogPublisher, LogstreamHandler

ingest_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3001"
gateway_url = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:3002"
channel = f"logs:etl:workspace123:example-{uuid.uuid4().hex[:8]}"

# 1. Records, explicitly. Leaving the block waits until ingest has stored them all.
with LogPublisher(token="l5-etl-token", url=ingest_url) as logs:
    logs.publish(channel, "extract started", source="etl.extract")
    logs.publish(channel, "extract done", source="etl.extract", rows=1200)

# 2. Or from the logging module: the logger's name is the source, `extra` goes to fields.
handler = LogstreamHandler(channel, token="l5-etl-token", url=ingest_url)
log = logging.getLogger("etl.load")
log.addHandler(handler)
try:
    {}["orders"]
except KeyError:
    log.exception("load failed", extra={"table": "orders"})
handler.close()

# 3. Read them back: the channel's last 3 records, then exit (without --count it follows).
sys.exit(
    subprocess.call(
        [
            sys.executable,
            "-m",
            "logstream",
            "tail",
            channel,
            "--url",
            gateway_url,
            "--tail",
            "3",
            "--count",
            "3",
        ]
    )
)
