"""nats-py, and the internals of it Logstream hooks: the one module that knows them.

The hooks, each checked at start against the installed nats-py (``check_client``,
``check_subscription``) and reported in ``logstream_fast_path{path=...}``
(``logstream.shared.fast_paths``):

- ``nats_batch_writes`` (ingest, required): ``send_commands`` hands a batch's ``PUB``/``HPUB``
  lines to the connection's write buffer in one go and kicks its flusher, as nats-py's own
  ``_send_publish`` does for one message (``Client._send_command``, ``_flush_queue``,
  ``_flush_pending``, ``stats``). Ingest has no other way to write a batch, so without them it
  does not start.
- ``nats_ack_intercept`` (ingest): ``take_messages_first`` puts a handler in front of
  ``Client._process_msg`` for one subscription, so its acks skip building a ``Msg`` and a trip
  through the subscription's queue; off, the subscription's ordinary callback gets them.
- ``nats_ack_parser`` (ingest): ``install_ack_parser`` swaps the connection's protocol parser
  (``Client._ps``) for ``AckParser``, below; off, nats-py's parser reads every frame.
- ``nats_live_inbox`` (gateway, required): ``share_pending_queue`` makes one subscription's
  pending queue a queue shared by all (``Subscription._pending_queue``,
  ``_message_iterator``), so the records of every subject come out in arrival order, which is
  the stream's. Callbacks would hand them over out of order, so without it the gateway does
  not start.

``AckParser``:
Reading JetStream's publish acks off the wire with less work than nats-py's parser.

nats-py's ``Parser.parse`` handles one message per loop turn: six regular expressions tried in
turn, a dict of arguments, two ``bytearray`` deletions, a payload copy and an awaited
``_process_msg`` coroutine; about a quarter of an ingest core at 30,000 acks/s. ``AckParser``
is that parser with a fast lane in front: a run of complete ``MSG`` frames for the ack
subscription (no reply subject, no headers: what JetStream answers a publish with) is read
with two regular expression calls for the whole run, handed over in one plain call (the
writer decodes all their JSON in one go), and the buffer is trimmed once. Anything else (an
``HMSG`` such as a no-responders 503, another subscription's message, ``PING``, ``INFO``,
``-ERR``, a line nats-py would call malformed) goes to nats-py's own parser, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

__all__ = [
    "ACK_INTERCEPT",
    "ACK_PARSER",
    "BATCH_WRITES",
    "LIVE_INBOX",
    "AckParser",
    "check_ack_lane",
    "check_batch_writes",
    "check_client",
    "check_subscription",
    "install_ack_parser",
    "send_commands",
    "share_pending_queue",
    "subscription_id",
    "take_messages_first",
]

BATCH_WRITES = "nats_batch_writes"
ACK_INTERCEPT = "nats_ack_intercept"
ACK_PARSER = "nats_ack_parser"
LIVE_INBOX = "nats_live_inbox"

# What the hooks read or replace, on a Client, its Parser and a Subscription.
_WRITE_ATTRIBUTES = ("_send_command", "_flush_queue", "_flush_pending", "stats")
_ACK_ATTRIBUTES = ("_process_msg", "_ps")
_CLIENT_ATTRIBUTES = _WRITE_ATTRIBUTES + _ACK_ATTRIBUTES
_PARSER_ATTRIBUTES = ("buf", "state", "needed", "header_needed", "msg_arg", "parse")
_SUBSCRIPTION_ATTRIBUTES = ("_id", "_pending_queue", "_message_iterator")

# nats-py's handler of one message: (sid, subject, reply, data, raw headers)
MessageHandler = Callable[[int, bytes, bytes, bytes, "bytes | None"], Awaitable[None]]


def check_client(names: tuple[str, ...] | None = None) -> list[str]:
    """What the installed nats-py's ``Client`` (and its ``Parser``) lack of what the hooks use:
    all of them, or the attributes ``names``."""
    client = Client()
    wanted = _CLIENT_ATTRIBUTES if names is None else names
    missing = [f"nats.aio.client.Client.{name}" for name in wanted if not hasattr(client, name)]
    if "_ps" not in wanted:
        return missing
    parser = getattr(client, "_ps", None)
    if not isinstance(parser, Parser):
        missing.append("nats.aio.client.Client._ps is not a nats.protocol.parser.Parser")
    else:
        missing += [
            f"nats.protocol.parser.Parser.{name}"
            for name in _PARSER_ATTRIBUTES
            if not hasattr(parser, name)
        ]
    return missing


def check_batch_writes() -> list[str]:
    """What ``send_commands`` needs and this nats-py lacks."""
    return check_client(_WRITE_ATTRIBUTES)


def check_ack_lane() -> list[str]:
    """What ``take_messages_first`` and ``install_ack_parser`` need and this nats-py lacks."""
    return check_client(_ACK_ATTRIBUTES)


def check_subscription() -> list[str]:
    """What the installed nats-py's ``Subscription`` lacks of what the live inbox uses."""
    sub = Subscription(None)
    return [
        f"nats.aio.subscription.Subscription.{name}"
        for name in _SUBSCRIPTION_ATTRIBUTES
        if not hasattr(sub, name)
    ]


def subscription_id(sub: Subscription) -> int:
    """The sid nats-py gave ``sub`` (the number in the server's ``MSG`` lines)."""
    return int(sub._id)


async def send_commands(nc: Client, command: bytes, count: int) -> None:
    """``command`` (the protocol lines of ``count`` messages) into the connection's write
    buffer, then kick its flusher, as ``Client._send_publish`` does for one message."""
    nc.stats["out_msgs"] += count
    nc.stats["out_bytes"] += len(command)
    await nc._send_command(command)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


def take_messages_first(
    nc: Client, sid: int, handler: Callable[[bytes, bytes, bytes | None], None]
) -> bool:
    """Messages of subscription ``sid`` go to ``handler(subject, data, raw headers)`` straight
    from the protocol reader; others as before. False when this nats-py has no
    ``_process_msg`` (the subscription's own callback then gets them)."""
    original: MessageHandler | None = getattr(nc, "_process_msg", None)
    if original is None:
        return False

    async def process_msg(
        msg_sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if msg_sid != sid:
            await original(msg_sid, subject, reply, data, headers)
        else:
            handler(subject, data, headers)

    # nats-py types `headers` as bytes, but its parser passes None for a message without any.
    nc._process_msg = process_msg  # type: ignore[method-assign, assignment]
    return True


def share_pending_queue(sub: Subscription, queue: Any) -> None:
    """Make ``queue`` (``put_nowait``, ``empty``, ``qsize``) the pending queue of ``sub``, a
    subscription made without a callback, and let its own queue and iterator (about 3 KiB) go."""
    sub._pending_queue = queue
    sub._message_iterator = None


_CRLF = len(b"\r\n")

# Called with the acks read in one go: (batch, index, size, payload) as the wire spells them.
AcksHandler = Callable[[list[tuple[bytes, bytes, bytes, bytes]]], None]


class AckParser(Parser):
    """nats-py's ``Parser`` reading, in a fast lane, the ``MSG`` frames of subscription
    ``sid`` whose subject is ``<reply_prefix><batch>.<index>``."""

    def __init__(self, nc, sid: int, reply_prefix: bytes, on_acks: AcksHandler) -> None:
        super().__init__(nc)
        # nats-server writes single spaces and no reply subject for a JetStream ack, and an
        # ack's JSON holds no line break (a payload that does is left to nats-py's parser).
        subject, sid_ = re.escape(reply_prefix), b"%d" % sid
        head = b"MSG %s(\\d+)\\.(\\d+) %s (\\d+)\r\n" % (subject, sid_)
        self._head = re.compile(head)
        self._frame = re.compile(head + b"([^\r\n]*)\r\n")
        self._run = re.compile(b"(?:MSG %s\\d+\\.\\d+ %s \\d+\r\n[^\r\n]*\r\n)+" % (subject, sid_))
        self._on_acks = on_acks

    async def parse(self, data: bytes = b"") -> None:
        if self.state != AWAITING_CONTROL_LINE:  # nats-py is half-way through a message
            await super().parse(data)
            return
        buf = self.buf
        buf.extend(data)
        acks: list[tuple[bytes, bytes, bytes, bytes]] = []
        read, other = self._fast_lane(buf, acks)
        if read:
            del buf[:read]
        if acks:
            self._on_acks(acks)
        if other:
            await super().parse()

    def _fast_lane(self, buf: bytearray, acks: list) -> tuple[int, bool]:
        """Reads the run of complete ack frames at the head into ``acks`` (two regular
        expression calls for all of them): how many bytes were read, and whether what follows
        is something else than the end of the buffer or a partial ack."""
        run = self._run.match(buf)
        read = 0 if run is None else run.end()
        if read:
            frames = self._frame.findall(buf, 0, read)
            if [int(frame[2]) for frame in frames] != [len(frame[3]) for frame in frames]:
                return 0, True  # a payload that is not what its size says: not ours to read
            acks.extend(frames)
        head = self._head.match(buf, read)
        if head is not None and head.end() + int(head[3]) + _CRLF > len(buf):
            return read, False  # the rest of this ack is still on its way
        # (a partial line also goes to nats-py's parser, which then waits for more)
        return read, read < len(buf)


def install_ack_parser(nc: Any, sid: int, reply_prefix: bytes, on_acks: AcksHandler) -> bool:
    """Swap ``nc``'s parser for an ``AckParser`` (before the next read: the buffer is carried
    over); ``False`` when this nats-py has no parser where expected (the slow path stays)."""
    old = getattr(nc, "_ps", None)
    if type(old) is not Parser:
        return False
    parser = AckParser(nc, sid, reply_prefix, on_acks)
    parser.buf, parser.state = old.buf, old.state
    parser.needed, parser.header_needed, parser.msg_arg = (
        old.needed,
        old.header_needed,
        old.msg_arg,
    )
    nc._ps = parser
    return True
