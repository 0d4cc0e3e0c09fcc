// Idle connections stay up with the production timers (maxIdleInterval 15 s). ably-js drops a transport
// that hears nothing for maxIdleInterval + realtimeRequestTimeout (15 + 10 s), so the server must write to
// every client at least every 15 s however quiet its channels are: a HEARTBEAT to clients that asked for
// them (browsers: they cannot see WebSocket pings), a ping to the rest (ably-js in Node, heartbeats=false).
//
// One window of 62 s (> 2 × 25 s: a client that missed a beat would have dropped at least once) with four
// clients attached to a quiet channel at once: Chromium running ably-js' browser build, ably-js in Node
// with JSON and with msgpack (pings), and ably-js in Node asking for protocol heartbeats. None may leave
// `connected`; each ends on the transport it started with and still receives a message.

import { randomUUID } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { ClientPool, Collector, awaitConnected, safeJson, uniq, withTimeout, WireLog } from './helpers.mjs';
import { browserSuite, describeTab, inPage, openTab } from './browser-helpers.mjs';

const IDLE_WINDOW_MS = 62_000;
/** The default maxIdleInterval the server announces (and keeps). */
const MAX_IDLE_INTERVAL_MS = 15_000;
/** Keep-alives each client must have had in the window (one every 15 s makes four). */
const MIN_KEEPALIVES = 3;

const NODE_CLIENTS = [
  { name: 'node json (pings)', useBinaryProtocol: false, heartbeats: false },
  { name: 'node msgpack (pings)', useBinaryProtocol: true, heartbeats: false },
  // ably-js mixes transportParams into the connect query last, so this overrides Node's heartbeats=false.
  { name: 'node json (protocol heartbeats)', useBinaryProtocol: false, heartbeats: true, transportParams: { heartbeats: true } },
];

/** Rejects as soon as `realtime` leaves `connected`; `changes` records every state change. */
function leftConnected(name, realtime, changes) {
  return new Promise((_, reject) => {
    realtime.connection.on((change) => {
      changes.push(`${change.previous}->${change.current}${change.reason ? ` (${change.reason.code} ${change.reason.message})` : ''}`);
      if (change.current !== 'connected') reject(new Error(`${name} went ${change.current} while idle: ${safeJson(changes)}`));
    });
  });
}

describe('idle connections with the default 15 s maxIdleInterval', () => {
  const env = browserSuite();
  let pool;
  afterEach(async () => {
    await pool?.closeAll();
  });

  test(`browser, node json, node msgpack and node with heartbeats idle for ${IDLE_WINDOW_MS / 1000} s: never disconnected, same transport, still delivering`, { timeout: IDLE_WINDOW_MS + 60_000 }, async () => {
    pool = new ClientPool(env.server.port);
    const channelName = uniq('session:idle');

    env.context = await env.browser.newContext();
    const tab = await openTab(env.context, env.pages.url({ gatewayPort: env.server.port, sub: randomUUID(), format: 'json' }), env.server.url);
    const { connectionId: browserId } = await inPage(tab, () => window.app.connect(), undefined, 'connect');
    await inPage(tab, (name) => window.app.subscribe(name), channelName, 'subscribe');
    const browserStateChanges = await inPage(
      tab,
      () => {
        window.idleTransport = window.app.realtime.connection.connectionManager.activeProtocol.getTransport();
        return window.app.stateChanges.length;
      },
      undefined,
      'note the transport',
    );

    const clients = [];
    for (const spec of NODE_CLIENTS) {
      const wire = new WireLog();
      const realtime = pool.realtime({
        key: FULL_KEY,
        useBinaryProtocol: spec.useBinaryProtocol,
        ...(spec.transportParams ? { transportParams: spec.transportParams } : {}),
        ...wire.options,
      });
      await awaitConnected(realtime);
      const collector = await new Collector().subscribe(realtime.channels.get(channelName));
      const transport = realtime.connection.connectionManager.activeProtocol.getTransport();
      const client = { spec, wire, realtime, collector, transport, id: realtime.connection.id, pings: 0, changes: [] };
      transport.wsConnection.on('ping', () => {
        client.pings += 1;
      });
      client.left = leftConnected(spec.name, realtime, client.changes);
      clients.push(client);
    }
    for (const { spec, wire } of clients) {
      const uri = wire.connectUris()[0];
      assert.equal(new URL(uri).searchParams.get('heartbeats'), String(spec.heartbeats), `${spec.name} connected with heartbeats=${spec.heartbeats}: ${uri}`);
    }
    const [browserSocket] = tab.sockets;
    assert.equal(new URL(browserSocket.url).searchParams.get('heartbeats'), 'true', `the browser asks for heartbeats: ${browserSocket.url}`);
    const announced = await inPage(tab, () => window.app.realtime.connection.connectionManager.maxIdleInterval, undefined, 'maxIdleInterval');
    assert.equal(announced, MAX_IDLE_INTERVAL_MS, 'CONNECTED announces the default maxIdleInterval');

    // The window: nothing is published; any client leaving `connected` fails the test at once.
    const browserLeft = tab.page
      .waitForFunction((from) => window.app.stateChanges.length > from, browserStateChanges, { timeout: 0, polling: 500 })
      .then(
        async () => {
          const changes = await tab.page.evaluate(() => window.app.stateChanges).catch(() => '?');
          throw new Error(`the browser left connected while idle: ${safeJson(changes)}; ${describeTab(tab)}`);
        },
        () => new Promise(() => {}), // the page closed at the end of the test
      );
    let windowTimer;
    await Promise.race([
      new Promise((resolve) => {
        windowTimer = setTimeout(resolve, IDLE_WINDOW_MS);
      }),
      browserLeft,
      ...clients.map((c) => c.left),
    ]).finally(() => clearTimeout(windowTimer));

    // Same connection on the same transport, with keep-alives of the kind each asked for.
    const browser = await inPage(
      tab,
      () => ({
        state: window.app.realtime.connection.state,
        id: window.app.realtime.connection.id,
        sameTransport: window.app.realtime.connection.connectionManager.activeProtocol?.getTransport() === window.idleTransport,
      }),
      undefined,
      'the browser connection after the window',
    );
    assert.deepEqual(browser, { state: 'connected', id: browserId, sameTransport: true }, `browser: ${describeTab(tab)}`);
    assert.equal(tab.sockets.length, 1, `the browser opened one WebSocket only: ${describeTab(tab)}`);
    assert.equal(browserSocket.closed, false);
    const browserHeartbeats = browserSocket.received.filter((f) => !f.binary && JSON.parse(f.text).action === 0).length;
    assert.ok(browserHeartbeats >= MIN_KEEPALIVES, `the browser got ${browserHeartbeats} HEARTBEATs`);
    for (const c of clients) {
      const heartbeats = c.wire.receivedAction('HEARTBEAT').length;
      const diag = `${c.spec.name}: changes ${safeJson(c.changes)}, ${heartbeats} HEARTBEATs, ${c.pings} pings`;
      assert.equal(c.realtime.connection.state, 'connected', diag);
      assert.equal(c.realtime.connection.id, c.id, `same connection id; ${diag}`);
      assert.equal(c.realtime.connection.connectionManager.activeProtocol?.getTransport(), c.transport, `same transport; ${diag}`);
      assert.deepEqual(c.changes, [], `no state change at all; ${diag}`);
      assert.equal(c.wire.connectUris().length, 1, `one WebSocket only; ${diag}`);
      assert.ok(c.pings >= MIN_KEEPALIVES, `a ping every interval; ${diag}`);
      if (c.spec.heartbeats) assert.ok(heartbeats >= MIN_KEEPALIVES, `a HEARTBEAT every interval; ${diag}`);
      else assert.equal(heartbeats, 0, `pings, not HEARTBEATs, for heartbeats=false; ${diag}`);
    }

    // And the idle connections still deliver.
    await withTimeout(pool.rest({ key: FULL_KEY }).channels.get(channelName).publish('wake', { seq: 1 }), 10_000, 'REST publish');
    await Promise.all(clients.map((c) => c.collector.waitFor((m) => m.name === 'wake', 10_000, `${c.spec.name}: the message after the window`)));
    await tab.page.waitForFunction(() => window.app.received.some((m) => m.name === 'wake'), undefined, { timeout: 10_000 });
  });
});
