// useLogsSubscription: a thin React hook over LogsSubscription (logs-subscription.js).
//
// This file does not import React: the caller hands its React in, so the Logs page and any
// app without React can load the client modules with no framework and no build step.
//
//   import * as React from 'react';
//   import { createLogsSubscriptionHook } from '/static/use-logs-subscription.js';
//   export const useLogsSubscription = createLogsSubscriptionHook(React);
//
//   function WorkflowLogs({ workspaceId, workflowId }) {
//     const url = `/api/dapadmin/l5-etl/sse/logs/stream?workspace_id=${workspaceId}` +
//                 `&workflow_id=${workflowId}`;
//     const { records, state, detail, error, connect, disconnect, clear } =
//       useLogsSubscription({ url, history: { tail: 100 } });
//     if (error) return <p role="alert">HTTP {error.status}: {error.message}</p>;
//     return <>
//       <p role="status">{state} {detail}</p>
//       <ol>{records.map((r) => <li key={r.seq}>{r.level} {r.message}</li>)}</ol>
//     </>;
//   }
//
// The union mode (tabs share one connection carrying every tab's channels):
//
//   const { records, channels, setChannels, loadOlder, state } = useLogsSubscription({
//     streamUrl: (channels) => `/api/logs/stream?channels=${encodeURIComponent(channels.join(','))}`,
//     historyUrl: (channels, before, limit) => `/api/logs/history?channels=` +
//       `${encodeURIComponent(channels.join(','))}&before=${before}&limit=${limit}`,
//     channels: watched,           // a new list (by content) calls sub.setChannels, no reopen
//     key: 'filters:',
//   });
//   <button onClick={() => loadOlder(100)}>Load older</button>
//
// Options are LogsSubscription's (url or streamUrl/historyUrl/channels, key, history,
// historyLimit, maxRecords, headers, credentials, renewCredential, storage, share, ...) plus
// `enabled` (default true: connect on mount unless a reload restored a disconnected session).
// A new `key` (default: the url; in the union mode the key option, default '') or `enabled`
// opens a new subscription; `channels` is applied to the open one; other options are read when
// it opens. Unmounting releases the stream but keeps the saved session, so React StrictMode's
// double mount and a reload both resume from the cursor instead of starting over.

import { ConnectionState } from './logs-sse-client.js';
import { LogsSubscription } from './logs-subscription.js';

const IDLE = Object.freeze({ records: [], channels: [], state: ConnectionState.DISCONNECTED,
                             detail: '', role: null, error: null, lastEventId: null });
const EVENTS = ['records', 'reset', 'older', 'channels', 'state', 'error', 'connected'];

function snapshotOf(sub) {
  return { records: sub.records.slice(), channels: sub.channels ? sub.channels.slice() : [],
           state: sub.state, detail: sub.detail, role: sub.role, error: sub.error,
           lastEventId: sub.lastEventId };
}

function keyOf(options) {
  if (!options) return null;
  if (typeof options.streamUrl === 'function') return `union:${options.key || ''}`;
  return options.url ? options.key || options.url : null;
}

export function createLogsSubscriptionHook(React) {
  const { useCallback, useEffect, useRef, useState } = React;

  return function useLogsSubscription(options) {
    const key = keyOf(options);
    const enabled = Boolean(key) && options.enabled !== false;
    // The channels by content: a new array with the same channels is no change.
    const channelsKey = options && Array.isArray(options.channels)
      ? JSON.stringify(options.channels) : null;
    const [snapshot, setSnapshot] = useState(IDLE);
    const subRef = useRef(null);
    const optionsRef = useRef(options);
    optionsRef.current = options;

    useEffect(() => {
      if (!key) return undefined;
      const sub = new LogsSubscription(optionsRef.current);
      subRef.current = sub;
      const refresh = () => setSnapshot(snapshotOf(sub));
      const offs = EVENTS.map((type) => sub.on(type, refresh));
      const restoredIdle = sub.restored && sub.restored.active === false;
      if (enabled && !restoredIdle) sub.start();
      refresh();
      return () => {
        offs.forEach((off) => off());
        sub.dispose();
        if (subRef.current === sub) subRef.current = null;
      };
    }, [key, enabled]);

    useEffect(() => {
      const sub = subRef.current;
      if (!sub || channelsKey === null || typeof sub.setChannels !== 'function' || !sub.channels) {
        return;
      }
      sub.setChannels(JSON.parse(channelsKey));
    }, [channelsKey, key, enabled]);

    const connect = useCallback(() => subRef.current && subRef.current.start(), []);
    const disconnect = useCallback(() => subRef.current && subRef.current.stop(), []);
    const clear = useCallback(() => {
      if (!subRef.current) return;
      subRef.current.clear();
      setSnapshot(snapshotOf(subRef.current));
    }, []);
    const setChannels = useCallback((channels) => {
      if (subRef.current && subRef.current.channels) subRef.current.setChannels(channels);
    }, []);
    const loadOlder = useCallback((limit) => (subRef.current && subRef.current.channels
      ? subRef.current.loadOlder(limit) : Promise.resolve({ records: [], done: true })), []);
    return { ...snapshot, connect, disconnect, clear, setChannels, loadOlder };
  };
}
