// Helpers for the continuity tests (history, rewind, resume/recover, presence).

import assert from 'node:assert/strict';

import { Collector, WireLog, safeJson, uniq, withTimeout } from './helpers.mjs';
import { FULL_KEY } from './server.mjs';

/**
 * Drop a realtime client's transport WITHOUT closing the connection, the way ably-js' own test suite does it
 * (`simulateDroppedConnection` in ably-js test/common/modules/shared_helper.js):
 *
 *   realtime.connection.once('disconnected', () => connectionManager.disconnectAllTransports());
 *   connectionManager.requestState({ state: 'disconnected' });
 *
 * Requesting `disconnected` first matters: a transport that dies while the connection is `connected` makes
 * ably-js reconnect (resume) immediately, so a test could not publish "while it is away". A *requested*
 * `disconnected` starts no retry timer, and the transport's own `disconnected` event afterwards is a no-op
 * (already in that state). The client therefore stays disconnected, keeping its connectionId, connectionKey,
 * channel serials and attached channels, until the test calls `realtime.connection.connect()` — which is
 * exactly what ably-js' resume tests do. Everything the test publishes in between is published while this
 * client has no transport at all.
 *
 * `abrupt: false` (the ably-js way): `transport.disconnect()` sends a DISCONNECT frame, then closes the socket.
 * `abrupt: true`: no DISCONNECT frame and no WebSocket close handshake: the TCP socket is destroyed
 * (`ws.terminate()`), as when a network path dies.
 *
 * Resolves once the socket is closed on the client side; returns the old connection id and key.
 */
export async function dropTransport(realtime, { abrupt = false } = {}) {
  const connection = realtime.connection;
  const manager = connection.connectionManager;
  assert.equal(connection.state, 'connected', 'dropTransport needs a connected client');
  const transport = manager.activeProtocol?.getTransport();
  const ws = transport?.wsConnection;
  assert.ok(ws, 'the client has an active WebSocket transport');
  const before = { id: connection.id, key: connection.key };

  const socketClosed = new Promise((resolve) => {
    if (ws.readyState === 3 /* CLOSED */) resolve();
    else ws.once('close', () => resolve());
  });
  const disconnected = new Promise((resolve) => {
    connection.once('disconnected', () => {
      if (abrupt) ws.terminate();
      else manager.disconnectAllTransports();
      resolve();
    });
  });
  manager.requestState({ state: 'disconnected' });
  await withTimeout(Promise.all([disconnected, socketClosed]), 5_000, 'the transport to drop');
  assert.equal(connection.state, 'disconnected');
  assert.equal(connection.id, before.id, 'ably-js keeps the connection id while disconnected');
  return before;
}

/**
 * Drop the transport as far as the CLIENT knows, but leave the socket open underneath, so the server still
 * sees a live connection (a half-open path: the client moved networks, the server has not noticed yet).
 * ably-js forgets the socket (its handlers are detached), then the test reconnects with `resume=`.
 * Returns { id, key, ws } — close `ws` yourself at the end.
 */
export async function abandonTransport(realtime) {
  const connection = realtime.connection;
  const manager = connection.connectionManager;
  assert.equal(connection.state, 'connected');
  const transport = manager.activeProtocol?.getTransport();
  const ws = transport?.wsConnection;
  assert.ok(ws, 'the client has an active WebSocket transport');
  const before = { id: connection.id, key: connection.key, ws };
  // ably-js would close the socket it disposes (and disconnectAllTransports would first send DISCONNECT):
  // keep this one open and silent. The transport is told its socket closed (what ably-js sees when a
  // socket dies), so it is disposed without writing anything.
  const realClose = ws.close.bind(ws);
  ws.close = () => {};
  const disconnected = new Promise((resolve) => {
    connection.once('disconnected', () => {
      ws.onclose = null;
      ws.onerror = null;
      ws.onmessage = null;
      transport.onWsClose(1006);
      resolve();
    });
  });
  manager.requestState({ state: 'disconnected' });
  await withTimeout(disconnected, 5_000, 'the client to consider itself disconnected');
  assert.equal(ws.readyState, 1 /* OPEN */, 'the abandoned socket is still open');
  before.close = () => {
    ws.close = realClose;
    try {
      ws.terminate();
    } catch {
      /* already closed */
    }
  };
  return before;
}

/** Resolves with the next channel state change matching `pred` (default: any). */
export function nextChannelChange(channel, pred = () => true, ms = 10_000, what = 'a channel state change') {
  return withTimeout(
    new Promise((resolve) => {
      const listener = (change) => {
        if (pred(change)) {
          channel.off(listener);
          resolve(change);
        }
      };
      channel.on(listener);
    }),
    ms,
    what,
  );
}

/** Records every channel state change (attached/attaching/update/…) for later assertions. */
export function recordChannelChanges(channel) {
  const changes = [];
  channel.on((change) => changes.push(change));
  return changes;
}

/** Publish `count` messages named `${prefix}-${i}` with data {i} over REST, one request each, in order. */
export async function publishNumbered(restChannel, prefix, count, from = 0) {
  const published = [];
  for (let i = from; i < from + count; i += 1) {
    const name = `${prefix}-${i}`;
    await withTimeout(restChannel.publish(name, { i }), 10_000, `REST publish of ${name}`);
    published.push(name);
  }
  return published;
}

/** All items of a paginated result, page by page; returns { pages: [[items]...], items }. */
export async function allPages(firstPage, maxPages = 50) {
  const pages = [];
  let page = firstPage;
  for (;;) {
    pages.push(page.items);
    if (!page.hasNext()) break;
    assert.ok(pages.length < maxPages, `more than ${maxPages} pages`);
    page = await withTimeout(page.next(), 10_000, 'next page');
    assert.ok(page, 'next() returned a page while hasNext() was true');
  }
  return { pages, items: pages.flat() };
}

/**
 * Collects presence events of a channel (`presence.subscribe`); `waitFor(pred)` resolves once a matching
 * event has arrived.
 */
/** Presence events, waited on like messages (the same waiting as `Collector`). */
export class PresenceCollector extends Collector {
  /** The events so far, in arrival order. */
  get events() {
    return this.messages;
  }

  async subscribe(channel, ms = 10_000) {
    this.channel = channel;
    await withTimeout(channel.presence.subscribe(this.listener), ms, `presence subscribe to ${channel.name}`);
    return this;
  }

  describe() {
    return `[${this.messages.map((e) => `${e.action}:${e.clientId}=${safeJson(e.data)}`).join(', ')}]`;
  }
}

/**
 * A JSON subscriber (with a wire log) on a fresh `prefix` channel, which it has heard one REST publish on
 * (the REST client in msgpack if `restBinary`).
 */
export async function jsonSubscriberAfterOne(pool, prefix, { restBinary = false } = {}) {
  const wire = new WireLog();
  const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: restBinary });
  const [sub] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: false, ...wire.options });
  const channelName = uniq(prefix);
  const channel = sub.channels.get(channelName);
  const got = await new Collector().subscribe(channel);
  const restChannel = rest.channels.get(channelName);
  await publishNumbered(restChannel, 'before', 1);
  await got.waitForCount(1, 10_000, 'the message before the drop');
  return { wire, sub, channelName, channel, got, restChannel };
}

export const names = (messages) => messages.map((m) => m.name);
