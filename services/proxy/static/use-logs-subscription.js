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
// Options are LogsSubscription's (url, key, history, maxRecords, headers, credentials,
// renewCredential, storage, share, ...) plus `enabled` (default true: connect on mount unless a
// reload restored a disconnected session). A new `key` (default: the url) or `enabled` opens a
// new subscription; other options are read when it opens. Unmounting releases the stream but
// keeps the saved session, so React StrictMode's double mount and a reload both resume from the
// cursor instead of starting over.

import { ConnectionState } from './logs-sse-client.js';
import { LogsSubscription } from './logs-subscription.js';

const IDLE = Object.freeze({ records: [], state: ConnectionState.DISCONNECTED, detail: '',
                             role: null, error: null, lastEventId: null });

function snapshotOf(sub) {
  return { records: sub.records.slice(), state: sub.state, detail: sub.detail, role: sub.role,
           error: sub.error, lastEventId: sub.lastEventId };
}

export function createLogsSubscriptionHook(React) {
  const { useCallback, useEffect, useRef, useState } = React;

  return function useLogsSubscription(options) {
    const key = options && options.url ? options.key || options.url : null;
    const enabled = Boolean(key) && options.enabled !== false;
    const [snapshot, setSnapshot] = useState(IDLE);
    const subRef = useRef(null);
    const optionsRef = useRef(options);
    optionsRef.current = options;

    useEffect(() => {
      if (!key) return undefined;
      const sub = new LogsSubscription(optionsRef.current);
      subRef.current = sub;
      const refresh = () => setSnapshot(snapshotOf(sub));
      const offs = ['records', 'state', 'error', 'connected'].map((type) => sub.on(type, refresh));
      const restoredIdle = sub.restored && sub.restored.active === false;
      if (enabled && !restoredIdle) sub.start();
      refresh();
      return () => {
        offs.forEach((off) => off());
        sub.dispose();
        if (subRef.current === sub) subRef.current = null;
      };
    }, [key, enabled]);

    const connect = useCallback(() => subRef.current && subRef.current.start(), []);
    const disconnect = useCallback(() => subRef.current && subRef.current.stop(), []);
    const clear = useCallback(() => {
      if (!subRef.current) return;
      subRef.current.clear();
      setSnapshot(snapshotOf(subRef.current));
    }, []);
    return { ...snapshot, connect, disconnect, clear };
  };
}
