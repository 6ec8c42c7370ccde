"""Read a log stream from Python with httpx-sse, resuming after a dropped connection.

Run the stack first (``logstream up``), then::

    python examples/tail.py CHANNEL [--url GATEWAY_URL] [--tail N] [--count N] [--drop-after K]

The user token comes from ``--token`` or ``LOGSTREAM_TOKEN``; in dev mode, without one, the
proxy's ``/dev/token`` gives one for user123. Prints ``seq level message`` per record.
``--drop-after K`` closes the connection after K records to show the resume: the next
request sends ``Last-Event-ID`` (the last seq seen) and the stream goes on after it, with no
gap and no duplicate. ``--count N`` exits after N records (else it follows for ever).
"""

import argparse
import json
import os
import sys
import time

import httpx
from httpx_sse import connect_sse

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("channel")
parser.add_argument("--url", default=os.environ.get("LOGSTREAM_TAIL_URL", "http://127.0.0.1:3002"))
parser.add_argument("--token", default=os.environ.get("LOGSTREAM_TOKEN"))
parser.add_argument("--proxy", default="http://127.0.0.1:3000", help="for a dev token")
parser.add_argument("--tail", type=int, default=0, help="history first: the last N records")
parser.add_argument("--count", type=int, default=0, help="exit after N records")
parser.add_argument("--drop-after", type=int, default=0, help="drop the connection once")
args = parser.parse_args()

token = (
    args.token or httpx.get(f"{args.proxy}/dev/token", params={"user": "user123"}).json()["token"]
)
last_event_id, seen, dropped = None, 0, False

with httpx.Client(
    base_url=args.url,
    timeout=httpx.Timeout(5.0, read=90.0),
    headers={"Authorization": f"Bearer {token}"},
) as client:
    while not args.count or seen < args.count:
        params = {"channels": args.channel}
        headers = {}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id  # resume: history is not asked again
        elif args.tail:
            params["tail"] = str(args.tail)
        try:
            with connect_sse(
                client, "GET", "/api/logs/stream", params=params, headers=headers
            ) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    sys.exit(f"{source.response.status_code}: {source.response.text}")
                for event in source.iter_sse():
                    if event.event == "connected" and last_event_id is None and not args.tail:
                        last_event_id = event.id  # a drop before any record resumes from here
                    if event.event != "log":
                        continue
                    record = json.loads(event.data)
                    last_event_id = event.id
                    seen += 1
                    print(event.id, record["level"], record["message"], flush=True)
                    if args.count and seen >= args.count:
                        break
                    if args.drop_after and seen == args.drop_after and not dropped:
                        dropped = True
                        print(f"dropping the connection after #{last_event_id}", file=sys.stderr)
                        break
        except httpx.TransportError as exc:
            print(f"connection lost ({exc!r}); resuming after #{last_event_id}", file=sys.stderr)
            time.sleep(1)
