"""The browser client modules on their own, run in a real Chromium (no node, no build step):
the SSE parser, the backoff, LogsSseClient's reactions to the server's events, and the React
hook adapter. Parsing and reactions are fed from a stub fetch (unit tests of logic); resuming
and the hook run against the real stack.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# A stub fetch that answers each call with the next scripted SSE body (or a JSON refusal), and
# records the headers it was given. Used by the tests of the client's reactions.
STUB_FETCH = """
window.stubFetch = (answers) => {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, headers: init.headers });
    const answer = answers[Math.min(calls.length - 1, answers.length - 1)];
    if (answer.status) {
      return new Response(JSON.stringify(answer.body), { status: answer.status,
        headers: { 'Content-Type': 'application/json' } });
    }
    const body = new ReadableStream({ start(controller) {
      controller.enqueue(new TextEncoder().encode(answer.sse));
      if (!answer.open) controller.close();
    } });
    return new Response(body, { headers: { 'Content-Type': 'text/event-stream' } });
  };
  return { fetch, calls };
};
"""


@pytest.fixture
async def module_page(page, stack):
    """A same-origin page with no app of its own, where tests import the static modules."""
    await page.goto(stack.proxy.url + "/health")
    await page.evaluate(STUB_FETCH)
    return page


async def test_the_sse_parser_handles_split_lines_crlf_comments_and_multiline_data(module_page):
    events = await module_page.evaluate("""async () => {
      const { SseParser } = await import('/static/sse-parser.js');
      const parser = new SseParser();
      const out = [];
      for (const chunk of ['retry: 2000\\r', '\\nid: 7\\nevent: log\\nda', 'ta: {"a":\\n',
                           'data: 1}\\n\\n: hb\\n\\n', 'id: bad\\0id\\ndata: x\\r\\n\\r\\n']) {
        out.push(...parser.push(chunk));
      }
      return { out, retry: parser.retryMs, comments: parser.comments };
    }""")
    assert events["out"] == [
        {"type": "log", "data": '{"a":\n1}', "id": "7"},
        {"type": "message", "data": "x", "id": "7"},
    ]
    assert events["retry"] == 2000 and events["comments"] == 1


async def test_the_backoff_doubles_with_jitter_up_to_its_cap(module_page):
    delays = await module_page.evaluate("""async () => {
      const { backoffDelay } = await import('/static/logs-sse-client.js');
      const options = { initialMs: 1000, maxMs: 8000, factor: 2 };
      return [0, 1, 2, 3, 6].map((attempt) =>
        [backoffDelay(attempt, options, () => 0), backoffDelay(attempt, options, () => 1)]);
    }""")
    assert delays == [[500, 1000], [1000, 2000], [2000, 4000], [4000, 8000], [4000, 8000]]


async def test_overflow_reconnects_from_the_cursor_and_a_gap_is_reported(module_page):
    seen = await module_page.evaluate("""async () => {
      const { LogsSseClient } = await import('/static/logs-sse-client.js');
      const { fetch, calls } = stubFetch([
        { sse: 'id: 10\\nevent: connected\\ndata: {}\\n\\n' +
               'event: gap\\ndata: {"from": 11, "to": 14}\\n\\n' +
               'id: 15\\nevent: log\\ndata: {"seq": 15}\\n\\n' +
               'event: overflow\\ndata: {"reason": "slow"}\\n\\n' },
        { sse: 'id: 15\\nevent: connected\\ndata: {}\\n\\nid: 16\\nevent: log\\ndata: {"seq": 16}\\n\\n',
          open: true },
      ]);
      const client = new LogsSseClient({ url: '/stream', history: { tail: 100 }, fetch });
      const got = { records: [], gaps: [], overflows: 0 };
      client.on('records', (records) => got.records.push(...records.map((r) => r.seq)));
      client.on('gap', (gap) => got.gaps.push(gap));
      client.on('overflow', () => got.overflows++);
      const done = new Promise((resolve) => client.on('records', () => {
        if (got.records.includes(16)) resolve(); }));
      client.start();
      await done;
      client.stop();
      return { ...got, calls, state: client.state };
    }""")
    assert seen["records"] == [15, 16]
    assert seen["gaps"] == [{"from": 11, "to": 14}] and seen["overflows"] == 1
    first, second = seen["calls"]
    assert "tail=100" in first["url"] and "Last-Event-ID" not in first["headers"]
    assert second["headers"]["Last-Event-ID"] == "15" and "tail" not in second["url"]
    assert seen["state"] == "DISCONNECTED"


async def test_auth_expired_renews_once_then_a_second_401_gives_up_with_the_message(module_page):
    seen = await module_page.evaluate("""async () => {
      const { LogsSseClient } = await import('/static/logs-sse-client.js');
      const { fetch, calls } = stubFetch([
        { sse: 'id: 3\\nevent: connected\\ndata: {}\\n\\nevent: auth-expired\\ndata: {}\\n\\n' },
        { status: 401, body: { error: 'unauthenticated', message: 'the token expired' } },
      ]);
      let renewals = 0;
      const client = new LogsSseClient({ url: '/stream', fetch,
                                         renewCredential: async () => { renewals++; return true; } });
      const error = new Promise((resolve) => client.on('error', resolve));
      client.start();
      return { error: await error, renewals, calls: calls.length, state: client.state,
               resumedFrom: calls[1].headers['Last-Event-ID'] };
    }""")
    assert seen["error"]["status"] == 401 and seen["error"]["message"] == "the token expired"
    assert seen["renewals"] == 1 and seen["calls"] == 2 and seen["resumedFrom"] == "3"
    assert seen["state"] == "DISCONNECTED"


async def test_a_server_error_is_retried_with_backoff_and_a_403_is_final(module_page):
    seen = await module_page.evaluate("""async () => {
      const { LogsSseClient } = await import('/static/logs-sse-client.js');
      const { fetch, calls } = stubFetch([
        { status: 503, body: { error: 'broker_unavailable', message: 'retry shortly' } },
        { status: 403, body: { error: 'forbidden', message: 'not your workspace' } },
      ]);
      const client = new LogsSseClient({ url: '/stream', fetch,
                                         backoff: { initialMs: 20, maxMs: 40 } });
      const retries = [];
      client.on('retry', (retry) => retries.push(retry.reason));
      const error = new Promise((resolve) => client.on('error', resolve));
      client.start();
      return { error: await error, retries, calls: calls.length };
    }""")
    assert seen["retries"] == ["HTTP 503: retry shortly"]
    assert seen["error"]["status"] == 403 and seen["calls"] == 2


async def test_the_client_resumes_after_its_last_event_id_on_the_real_stack(
    module_page, publish, records, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    seqs = await publish(records(channel, 5, "resume"))
    got = await module_page.evaluate(
        """async ([workflow, after, last]) => {
      await fetch('/dev/token?user=user123');
      const { LogsSseClient } = await import('/static/logs-sse-client.js');
      const client = new LogsSseClient({ lastEventId: String(after),
        url: `/api/dapadmin/l5-etl/sse/logs/stream?workspace_id=workspace123&workflow_id=${workflow}` });
      const seen = [];
      const done = new Promise((resolve) => client.on('records', (records) => {
        seen.push(...records.map((r) => r.seq));
        if (seen.includes(last)) resolve();
      }));
      client.start();
      await done;
      client.stop();
      return seen;
    }""",
        [unique_id, seqs[1], seqs[-1]],
    )
    assert got == seqs[2:]


# A stand-in for React's hooks, enough for one component: state cells, refs, callbacks, and
# effects run after each render when their dependencies change.
MINI_REACT = """
window.miniReact = () => {
  const cells = [], effects = [];
  let index = 0, render = null, renders = 0;
  const React = {
    useState(initial) {
      const i = index++;
      if (!(i in cells)) cells[i] = typeof initial === 'function' ? initial() : initial;
      return [cells[i], (value) => { cells[i] = value; queueMicrotask(run); }];
    },
    useRef(initial) {
      const i = index++;
      if (!(i in cells)) cells[i] = { current: initial };
      return cells[i];
    },
    useCallback(fn) { index++; return fn; },
    useEffect(effect, deps) {
      const i = index++;
      const old = effects[i];
      if (old && deps.every((d, k) => d === old.deps[k])) return;
      effects[i] = { deps, pending: effect, cleanup: old && old.cleanup };
    },
  };
  function run() {
    index = 0;
    renders++;
    const out = render();
    for (const e of effects) {
      if (e && e.pending) {
        if (e.cleanup) e.cleanup();
        e.cleanup = e.pending();
        e.pending = null;
      }
    }
    window.lastRender = out;
  }
  const unmount = () => effects.forEach((e) => e && e.cleanup && e.cleanup());
  return { React, mount(component) { render = component; run(); }, unmount };
};
"""


async def test_the_react_hook_adapter_follows_a_real_stream(
    module_page, publish, records, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    earlier = await publish(records(channel, 3, "hook"))
    await module_page.evaluate(MINI_REACT)
    got = await module_page.evaluate(
        """async ([workflow, last]) => {
      await fetch('/dev/token?user=user123');
      const { createLogsSubscriptionHook } = await import('/static/use-logs-subscription.js');
      const react = miniReact();
      const useLogsSubscription = createLogsSubscriptionHook(react.React);
      const url = `/api/dapadmin/l5-etl/sse/logs/stream?workspace_id=workspace123&workflow_id=${workflow}`;
      const states = [];
      const done = new Promise((resolve) => react.mount(() => {
        const result = useLogsSubscription({ url, history: { tail: 100 }, storage: null });
        states.push(result.state);
        if (result.records.some((r) => r.seq === last)) resolve(result);
        return result;
      }));
      const result = await done;
      result.disconnect();
      await new Promise((resolve) => setTimeout(resolve, 0));
      const after = window.lastRender.state;
      react.unmount();
      return { seqs: result.records.map((r) => r.seq), states, after };
    }""",
        [unique_id, earlier[-1]],
    )
    assert got["seqs"] == earlier
    assert got["states"][0] == "DISCONNECTED" and "CONNECTED" in got["states"]
    assert got["after"] == "DISCONNECTED"


async def test_the_react_hook_exposes_channels_set_channels_and_load_older(
    module_page, publish, records, unique_id
):
    a, b = (f"logs:etl:workspace123:{unique_id}-{n}" for n in "ab")
    earlier_a = await publish(records(a, 3, "hook a"))
    earlier_b = await publish(records(b, 5, "hook b"))
    await module_page.evaluate(MINI_REACT)
    got = await module_page.evaluate(
        """async ([a, b, lastA, lastB]) => {
      await fetch('/dev/token?user=user123');
      const { createLogsSubscriptionHook } = await import('/static/use-logs-subscription.js');
      const react = miniReact();
      const useLogsSubscription = createLogsSubscriptionHook(react.React);
      const list = (chs) => encodeURIComponent(chs.join(','));
      const options = {
        streamUrl: (chs) => `/api/logs/stream?channels=${list(chs)}`,
        historyUrl: (chs, before, limit) =>
          `/api/logs/history?channels=${list(chs)}&before=${before}&limit=${limit}`,
        channels: [a], key: 'hook', historyLimit: 2, storage: null };
      let latest = null;
      const waitFor = (test) => new Promise((resolve) => {
        const check = () => (latest && test(latest) ? resolve(latest) : setTimeout(check, 20));
        check();
      });
      react.mount(() => (latest = useLogsSubscription(options)));
      const first = await waitFor((r) => r.records.some((x) => x.seq === lastA));
      first.setChannels([a, b]);
      const both = await waitFor((r) => r.records.some((x) => x.seq === lastB)
                                       && r.channels.length === 2);
      const older = await both.loadOlder(100);
      const all = await waitFor((r) => r.records.length === 8);
      react.unmount();
      return { first: first.records.map((r) => r.seq), channels: both.channels,
               both: both.records.map((r) => r.seq), older: older.records.map((r) => r.seq),
               done: older.done, all: all.records.map((r) => r.seq), role: first.role };
    }""",
        [a, b, earlier_a[-1], earlier_b[-1]],
    )
    assert got["first"] == earlier_a[-2:]
    assert got["channels"] == [a, b]
    assert got["both"] == sorted(earlier_a[-2:] + earlier_b[-2:])
    assert got["older"] == sorted(earlier_a[:1] + earlier_b[:3]) and got["done"] is True
    assert got["all"] == sorted(earlier_a + earlier_b)
    assert got["role"] == "leader"
