"""Tabs of one origin share ONE gateway connection carrying the union of their channels
(services/proxy/static/logs-subscription.js with ``streamUrl``): the leader tab learns each tab's
channels over a BroadcastChannel, reopens its stream with the new union from its exact cursor,
and every tab keeps only its own channels' records, a newly watched channel's history first.

The client module is driven directly in pages of the proxy's origin (no page UI), against the
real stack. Each tab keeps a "view" the way a page would: 'records' appends, 'reset' replaces,
'older' prepends. The ledgers compare, per channel, the seqs ingest accepted with the seqs a tab
shows: no gap, no duplicate, ascending.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support import ledger
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

# Bounds a failing wait; a passing one moves on as soon as the condition holds.
DEADLINE_S = 15.0

# Loaded in every tab: `startTab(channels, options)` makes `window.sub` (a union subscription
# on the proxy's /api/logs routes) and `window.view` (what a page would show), `window.seen`
# (errors, notices, states).
TAB_SCRIPT = """
window.startTab = async (channels, options = {}) => {
  const signedIn = await fetch('/dev/token?user=user123', { cache: 'no-store' });
  if (!signedIn.ok) throw new Error(`sign-in: HTTP ${signedIn.status}`);
  const { LogsSubscription } = await import('/static/logs-subscription.js');
  const list = (chs) => encodeURIComponent(chs.join(','));
  const sub = new LogsSubscription({
    streamUrl: (chs) => `/api/logs/stream?channels=${list(chs)}`,
    historyUrl: (chs, before, limit) =>
      `/api/logs/history?channels=${list(chs)}&before=${before}&limit=${limit}`,
    channels, key: options.key || 'union-test', historyLimit: options.historyLimit ?? 100,
    storage: options.storage ? sessionStorage : null,
  });
  window.sub = sub;
  window.view = sub.records.slice();
  window.seen = { errors: [], notices: [], states: [], resets: 0 };
  sub.on('records', (records) => window.view.push(...records));
  sub.on('reset', ({ records }) => { window.view = records.slice(); window.seen.resets++; });
  sub.on('older', (records) => window.view.unshift(...records));
  sub.on('error', (error) => window.seen.errors.push(error));
  sub.on('notice', (notice) => window.seen.notices.push(notice));
  sub.on('state', (state) => window.seen.states.push(state));
  if (options.start !== false) sub.start();
  return sub.records.map((r) => r.seq);
};
window.shown = () => window.view.map((r) => [r.seq, r.channel]);
true;  // (a script whose value is a function would be called by page.evaluate)
"""


class Tab:
    """One page of the proxy's origin running a union subscription."""

    def __init__(self, page) -> None:
        self.page = page

    async def start(self, channels: list[str], **options) -> list[int]:
        return await self.page.evaluate(
            "([channels, options]) => startTab(channels, options)", [channels, options]
        )

    async def set_channels(self, channels: list[str]) -> None:
        await self.page.evaluate("(channels) => sub.setChannels(channels)", channels)

    async def shown(self) -> list[tuple[int, str]]:
        return [(seq, channel) for seq, channel in await self.page.evaluate("shown()")]

    async def seqs(self, channel: str) -> list[int]:
        return [seq for seq, name in await self.shown() if name == channel]

    async def info(self) -> dict:
        return await self.page.evaluate(
            """() => ({ role: sub.role, state: sub.state, detail: sub.detail, error: sub.error,
                        channels: sub.channels, seen,
                        records: sub.records.map((r) => r.seq), view: view.map((r) => r.seq) })"""
        )

    async def has(self, channel: str, seqs: list[int]) -> bool:
        return set(seqs) <= set(await self.seqs(channel))


@pytest.fixture
def open_tabs(new_context, stack):
    """``await open_tabs(n)``: n pages of one browser context (one origin, one set of locks)."""

    async def open_many(count: int, context=None) -> list[Tab]:
        context = context or await new_context()
        tabs = []
        for _ in range(count):
            page = await context.new_page()
            await page.goto(stack.proxy.url + "/health")
            await page.evaluate(TAB_SCRIPT)
            tabs.append(Tab(page))
        return tabs

    return open_many


async def check_ledger(scenario: str, tab: Tab, published: dict[str, list[int]]) -> None:
    """Every seq published to the tab's channels is shown once, in order, and nothing else."""
    await wait_until(
        lambda: all_shown(tab, published),
        f"{scenario}: every published seq shown",
        timeout=DEADLINE_S,
    )
    shown = await tab.shown()
    seqs = [seq for seq, _ in shown]
    assert seqs == sorted(set(seqs)), f"{scenario}: out of order or repeated: {seqs}"
    for channel, sent in published.items():
        got = [seq for seq, name in shown if name == channel]
        ledger.account(f"{scenario} {channel.rsplit(':', 1)[-1]}", sent, got)
        assert got == sent, f"{scenario} {channel}: sent {sent}, shown {got}"
    assert {name for _, name in shown} <= set(published), f"{scenario}: foreign rows {shown}"
    info = await tab.info()
    assert info["records"] == info["view"], "the events and sub.records disagree"


async def all_shown(tab: Tab, published: dict[str, list[int]]) -> bool:
    shown = await tab.shown()
    return all(
        set(sent) <= {seq for seq, name in shown if name == channel}
        for channel, sent in published.items()
    )


async def one_connection(gateway_stats, channels: list[str]) -> dict:
    """Until the gateway has one connection, subscribed to exactly ``channels``."""

    async def check():
        stats = await gateway_stats()
        return (
            stats if stats["connections"] == 1 and set(stats["channels"]) == set(channels) else None
        )

    return await wait_until(check, f"one connection for {channels}", timeout=DEADLINE_S)


class Publisher:
    """Publishes one record to each channel every ``every_s`` until stopped; notes the seqs."""

    def __init__(self, publish, records, channels: list[str], every_s: float = 0.05) -> None:
        self.publish, self.records = publish, records
        self.sent: dict[str, list[int]] = {channel: [] for channel in channels}
        self.every_s = every_s
        self.rounds = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Publisher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        if self._task:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            batch = [self.records(channel, 1, f"round {self.rounds}")[0] for channel in self.sent]
            seqs = await self.publish(batch)
            for channel, seq in zip(self.sent, seqs, strict=True):
                self.sent[channel].append(seq)
            self.rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)

    async def until_rounds(self, count: int) -> None:
        await wait_until(lambda: self.rounds >= count, f"{count} publishing rounds")


def names(unique_id: str, count: int) -> list[str]:
    return [f"logs:etl:workspace123:{unique_id}-{index}" for index in range(count)]


async def test_three_tabs_with_three_channels_share_one_connection(
    open_tabs, publish, records, gateway_stats, unique_id
):
    channels = names(unique_id, 3)
    earlier = {
        channel: await publish(records(channel, 3, "before the tabs")) for channel in channels
    }
    tabs = await open_tabs(3)
    for tab, channel in zip(tabs, channels, strict=True):
        await tab.start([channel])
    stats = await one_connection(gateway_stats, channels)
    assert stats["users"] == 1
    roles = sorted([(await tab.info())["role"] for tab in tabs])
    assert roles == ["follower", "follower", "leader"]

    later = {channel: await publish(records(channel, 2, "live")) for channel in channels}
    for tab, channel in zip(tabs, channels, strict=True):
        await check_ledger("three tabs", tab, {channel: earlier[channel] + later[channel]})
        assert (await tab.info())["state"] == "CONNECTED"
    assert (await gateway_stats())["connections"] == 1


async def test_a_fourth_channel_joins_while_records_flow_without_gap_or_duplicate(
    open_tabs, publish, records, gateway_stats, unique_id
):
    a, b, c, d = names(unique_id, 4)
    tabs = await open_tabs(3)
    for tab, channel in zip(tabs, (a, b, c), strict=True):
        await tab.start([channel])
    await one_connection(gateway_stats, [a, b, c])
    async with Publisher(publish, records, [a, b, c, d]) as publisher:
        await publisher.until_rounds(10)
        await tabs[0].set_channels([a, d])
        await wait_until(
            lambda: tabs[0].has(d, publisher.sent[d][:12]), "d's history and live rows"
        )
        await publisher.until_rounds(publisher.rounds + 10)
    await one_connection(gateway_stats, [a, b, c, d])
    sent = publisher.sent
    await check_ledger("added d: tab a", tabs[0], {a: sent[a], d: sent[d]})
    await check_ledger("added d: tab b", tabs[1], {b: sent[b]})
    await check_ledger("added d: tab c", tabs[2], {c: sent[c]})


async def test_closing_the_leader_hands_the_union_to_a_follower_without_loss(
    open_tabs, publish, records, gateway_stats, unique_id
):
    a, b, c = names(unique_id, 3)
    tabs = await open_tabs(3)
    for tab, channel in zip(tabs, (a, b, c), strict=True):
        await tab.start([channel])
    await one_connection(gateway_stats, [a, b, c])
    roles = [(await tab.info())["role"] for tab in tabs]
    assert sorted(roles) == ["follower", "follower", "leader"]
    leader = tabs[roles.index("leader")]
    followers = [tab for tab in tabs if tab is not leader]
    async with Publisher(publish, records, [a, b, c]) as publisher:
        await publisher.until_rounds(8)
        await leader.page.close()
        await wait_until(lambda: _has_leader(followers), "a follower took over", timeout=DEADLINE_S)
        await publisher.until_rounds(publisher.rounds + 8)
    channel_of = {tabs[0]: a, tabs[1]: b, tabs[2]: c}
    for tab in followers:
        channel = channel_of[tab]
        await check_ledger(f"leader closed: {channel[-1]}", tab, {channel: publisher.sent[channel]})
    gone = channel_of[leader]
    # The closed tab said goodbye: its channel leaves the union, still one connection.
    await one_connection(gateway_stats, [channel_of[tab] for tab in followers])
    assert gone not in (await gateway_stats())["channels"]


async def _has_leader(tabs: list[Tab]) -> bool:
    infos = await asyncio.gather(*(tab.info() for tab in tabs))
    return any(info["role"] == "leader" and info["state"] == "CONNECTED" for info in infos)


async def test_removing_a_channel_drops_its_rows_and_shrinks_the_union(
    open_tabs, publish, records, gateway_stats, unique_id
):
    a, b = names(unique_id, 2)
    (tab,) = await open_tabs(1)
    await tab.start([a, b])
    first = {a: await publish(records(a, 2, "a")), b: await publish(records(b, 2, "b"))}
    await check_ledger("two channels", tab, first)
    await tab.set_channels([a])
    assert await tab.seqs(b) == []
    await one_connection(gateway_stats, [a])
    more = {a: await publish(records(a, 2, "a again")), b: await publish(records(b, 2, "b again"))}
    await check_ledger("b removed", tab, {a: first[a] + more[a]})
    assert (await tab.info())["seen"]["resets"] >= 1


async def test_too_many_channels_is_an_error_for_the_tab_that_asked_only(
    open_tabs, publish, records, gateway_stats, stack, unique_id
):
    limit = 20  # the gateway's max_channels (services/gateway/settings.py), the stack's default
    channels = names(unique_id, limit + 1)
    first, second, third = await open_tabs(3)
    await first.start(channels[:10])
    await second.start(channels[10:limit])
    await third.start([channels[0]])
    await one_connection(gateway_stats, channels[:limit])
    # The gateway has the stream before the leader reads its `connected` event: a record of the
    # second tab's newest channel, shown there, says the tabs have the full union too.
    opened = await publish(records(channels[limit - 1], 1, "the union is open"))
    await check_ledger("the union is open: second", second, {channels[limit - 1]: opened})

    await third.set_channels([channels[0], channels[limit]])
    third_info = await wait_until(
        lambda: _errored(third), "the third tab's error", timeout=DEADLINE_S
    )
    assert third_info["error"]["status"] == 400
    assert third_info["channels"] == [channels[0]]  # it keeps what it had
    assert third_info["state"] == "CONNECTED"
    for tab in (first, second):
        assert (await tab.info())["error"] is None

    live = {
        channel: await publish(records(channel, 1, "after the refusal"))
        for channel in (channels[0], channels[limit - 1])
    }
    await check_ledger("after the refusal: first", first, {channels[0]: live[channels[0]]})
    await check_ledger(
        "after the refusal: second",
        second,
        {channels[limit - 1]: opened + live[channels[limit - 1]]},
    )
    await check_ledger("after the refusal: third", third, {channels[0]: live[channels[0]]})
    await one_connection(gateway_stats, channels[:limit])


async def _errored(tab: Tab):
    info = await tab.info()
    return info if info["error"] and info["state"] == "CONNECTED" else None


async def test_a_new_channel_shows_its_last_records_first_and_load_older_pages_back(
    open_tabs, publish, records, unique_id
):
    (a,) = names(unique_id, 1)
    seqs = await publish(records(a, 150, "history"))
    (tab,) = await open_tabs(1)
    await tab.start([a], historyLimit=100)
    await wait_until(lambda: tab.has(a, seqs[-100:]), "the last 100 records", timeout=DEADLINE_S)
    assert await tab.seqs(a) == seqs[-100:]
    page = await tab.page.evaluate("sub.loadOlder(100)")
    assert [record["seq"] for record in page["records"]] == seqs[:50] and page["done"] is True
    assert await tab.seqs(a) == seqs
    live = await publish(records(a, 2, "live"))
    await check_ledger("load older", tab, {a: seqs + live})


async def test_a_reload_restores_the_rows_and_fills_what_was_published_meanwhile(
    open_tabs, publish, records, unique_id
):
    a, b = names(unique_id, 2)
    (tab,) = await open_tabs(1)
    await tab.start([a, b], storage=True)
    first = {a: await publish(records(a, 3, "a")), b: await publish(records(b, 3, "b"))}
    await check_ledger("before the reload", tab, first)
    await tab.page.evaluate("sub._saveNow()")
    await tab.page.reload()
    await tab.page.evaluate(TAB_SCRIPT)
    away = {a: await publish(records(a, 2, "a away")), b: await publish(records(b, 2, "b away"))}
    restored = await tab.start([a, b], storage=True, start=False)
    assert restored == sorted(first[a] + first[b])
    await tab.page.evaluate("sub.start()")
    await check_ledger("after the reload", tab, {c: first[c] + away[c] for c in (a, b)})


async def test_a_tab_that_vanishes_without_goodbye_leaves_the_union(
    open_tabs, publish, records, gateway_stats, unique_id
):
    a, b = names(unique_id, 2)
    first, second = await open_tabs(2)
    await first.start([a])
    await second.start([b])
    await one_connection(gateway_stats, [a, b])
    # The second tab goes silent as a crashed one would: no answer to pings, no goodbye.
    await second.page.evaluate("() => { sub._relay.onmessage = null; sub._post = () => {}; }")
    await one_connection(gateway_stats, [a])
    live = await publish(records(a, 2, "after the silent tab"))
    await check_ledger("a silent tab left", first, {a: live})


async def test_tabs_on_one_fixed_url_still_share_one_connection(
    open_tabs, publish, records, gateway_stats, unique_id
):
    """The `url` option (no channel list): tabs with the same url share, as before the union."""
    channel = f"logs:etl:workspace123:{unique_id}"
    earlier = await publish(records(channel, 2, "before"))
    tabs = await open_tabs(2)
    script = """async (url) => {
      await fetch('/dev/token?user=user123');
      const { LogsSubscription } = await import('/static/logs-subscription.js');
      window.sub = new LogsSubscription({ url, history: { tail: 100 }, storage: null });
      window.view = [];
      window.seen = {};
      sub.on('records', (records) => window.view.push(...records));
      sub.start();
    }"""
    url = f"/api/dapadmin/l5-etl/sse/logs/stream?workspace_id=workspace123&workflow_id={unique_id}"
    for tab in tabs:
        await tab.page.evaluate(script, url)
        await wait_until(lambda tab=tab: tab.has(channel, earlier), "the earlier rows")
    stats = await one_connection(gateway_stats, [channel])
    assert stats["channels"][channel] == 1
    assert sorted([(await tab.info())["role"] for tab in tabs]) == ["follower", "leader"]
    live = await publish(records(channel, 2, "live"))
    for tab in tabs:
        await check_ledger("one url", tab, {channel: earlier + live})
