"""A connection's ``Subscription`` owns its state: the hub, the coalescer, the ticker and the
writer ask it (logstream.services.gateway.subscription), and nothing else assigns it."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
from pathlib import Path

from logstream.services.gateway.direct import Coalescer
from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.subscription import Subscription
from logstream.shared.channels import parse_pattern

GATEWAY = Path(__file__).resolve().parents[2] / "services" / "gateway"
STATE = {f.name for f in dataclasses.fields(Subscription)}


def subscription() -> Subscription:
    return Subscription("c", "u", (parse_pattern("logs:etl:ws"),), Outbox(1 << 16))


class Sink:
    gone = False

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> bool:
        self.written.append(data)
        return True


def pokes(tree: ast.AST) -> list[str]:
    """Assignments to another object's Subscription-named attribute (``sub.sink = ...``,
    ``self.sub.rewind += ...``) and calls on its pending frames (``sub.pending.append``)."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "pending":
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}()")
        while targets:
            target = targets.pop()
            if isinstance(target, (ast.Tuple, ast.List)):
                targets += target.elts
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
            elif (
                isinstance(target, ast.Attribute)
                and target.attr in STATE
                and not (isinstance(target.value, ast.Name) and target.value.id == "self")
            ):
                found.append(f"line {target.lineno}: {ast.unparse(target)} =")
    return found


def test_only_the_subscription_assigns_its_state():
    assert "sink" in STATE and "last_sent" in STATE  # the fields are what this looks for
    found = {
        path.name: hits
        for path in sorted(GATEWAY.glob("*.py"))
        if path.name != "subscription.py" and (hits := pokes(ast.parse(path.read_text())))
    }
    assert found == {}


def test_records_up_to_the_cursor_are_not_taken_on_either_path():
    async def scenario():
        coalescer = Coalescer()
        queued, direct, sink = subscription(), subscription(), Sink()
        direct.go_direct(sink)
        for sub in (queued, direct):
            sub.start_after(5)
        taken = [
            (sub.last_sent <= 5 and sub.deliver(6, b"six", coalescer)) for sub in (queued, direct)
        ]
        coalescer.flush()
        return queued, direct, sink, taken

    queued, direct, sink, taken = asyncio.run(scenario())
    assert taken == [True, True]
    assert queued.outbox.floor == 5 and queued.outbox.take() == b"six"
    assert sink.written and direct.last_sent == queued.last_sent == 6
    assert direct.written_at > 0


def test_a_record_read_back_after_later_ones_rewinds_to_before_the_oldest_missed():
    sub = subscription()
    sub.start_after(10)
    sub.missed(10)  # at the cursor: never this connection's
    assert not sub.outbox.overflowed and sub.rewind is None
    sub.missed(14)
    sub.missed(12)
    sub.missed(13)
    assert sub.outbox.overflowed and sub.rewind == 11 and sub.sink is None
