// Browser: a page in headless Chromium loads the pinned ably-js browser build, signs in with a Supabase
// access token through authCallback, connects to the gateway on another origin and shows every message the
// backend publishes over REST to a session channel: all of them, in order, once, in JSON (text frames) and
// msgpack (binary frames). The page's own REST requests to the gateway (a preflighted, Bearer-authenticated
// cross-origin request) succeed because the gateway answers them with CORS headers for the page's origin.

import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { ClientPool, FORMATS, safeJson, uniq, withTimeout } from './helpers.mjs';
import { ABLY_VERSION, browserSuite, describeTab, inPage, openTab, renderedSeqs, waitForRendered } from './browser-helpers.mjs';

const COUNT = 20;

describe('browser (Chromium): Supabase sign-in, cross-origin, REST → page', () => {
  const env = browserSuite();

  for (const format of FORMATS) {
    test(`${format.name}: the page shows all ${COUNT} backend messages in order, once; ${format.useBinaryProtocol ? 'binary' : 'text'} frames; CORS`, async () => {
      env.context = await env.browser.newContext();
      const sub = randomUUID();
      const tab = await openTab(env.context, env.pages.url({ gatewayPort: env.server.port, sub, format: format.name }), env.server.url);
      assert.notEqual(new URL(env.pages.origin).origin, new URL(env.server.url).origin, 'page and gateway are different origins');

      const connected = await inPage(tab, () => window.app.connect(), undefined, 'connect');
      assert.equal(connected.state, 'connected');
      assert.equal(connected.clientId, sub, 'clientId is the Supabase user id (sub)');
      assert.ok(env.pages.tokensIssued >= 1, 'the token came from the page origin through authCallback');

      const channelName = uniq(`session:browser-${format.name}`);
      await inPage(tab, (name) => window.app.subscribe(name), channelName, `subscribe to ${channelName}`);

      // The Digis backend: REST with its API key.
      const backend = new ClientPool(env.server.port).rest({ key: FULL_KEY }).channels.get(channelName);
      for (let seq = 0; seq < COUNT; seq += 1) {
        await withTimeout(backend.publish('tick', { seq }), 10_000, `REST publish ${seq}`);
      }
      // A last message behind them: a duplicate of any earlier one would have arrived before it.
      await withTimeout(backend.publish('tick', { seq: COUNT }), 10_000, 'REST publish (last)');
      await waitForRendered(tab, COUNT + 1, 10_000, `${COUNT + 1} rendered messages`);
      assert.deepEqual(await renderedSeqs(tab), Array.from({ length: COUNT + 1 }, (_, i) => i), 'every message once, in order');

      // The WebSocket went to the gateway's origin, in the format asked for.
      assert.equal(tab.sockets.length, 1, `one WebSocket; ${describeTab(tab)}`);
      const [socket] = tab.sockets;
      assert.equal(new URL(socket.url).host, `127.0.0.1:${env.server.port}`);
      assert.equal(new URL(socket.url).searchParams.get('format'), format.name);
      assert.equal(new URL(socket.url).searchParams.get('agent'), `ably-js/${ABLY_VERSION} browser`, 'the pinned ably-js, its browser build');
      assert.ok(socket.received.length > COUNT / 2, `frames received: ${socket.received.length}`);
      if (format.useBinaryProtocol) {
        assert.ok(socket.received.every((f) => f.binary), `msgpack: every frame binary; text ones: ${safeJson(socket.received.filter((f) => !f.binary).slice(0, 3))}`);
      } else {
        assert.ok(socket.received.every((f) => !f.binary), 'json: every frame text');
        for (const frame of socket.received) JSON.parse(frame.text);
      }

      // Cross-origin HTTP from the page: time and presence over REST with the user's token.
      const rest = await inPage(tab, (name) => window.app.restRequests(name), channelName, 'REST requests from the page');
      assert.ok(Math.abs(rest.serverTime - Date.now()) < 60_000, `server time ${rest.serverTime}`);
      assert.deepEqual(rest.presentClientIds, []);
      const presenceResponse = tab.responses.find((r) => r.url.includes('/presence'));
      assert.ok(presenceResponse, `a presence response was seen: ${safeJson(tab.responses.map((r) => r.url))}`);
      assert.equal(presenceResponse.status, 200);
      // Authorization makes it a non-simple request: the browser sent it only after a successful preflight.
      const requestHeaders = await withTimeout(presenceResponse.requestHeaders, 5_000, 'presence request headers');
      assert.match(requestHeaders.authorization ?? '', /^Bearer /, 'the page authenticated with its token');
      assert.equal(requestHeaders.origin, env.pages.origin);
      const headers = await withTimeout(presenceResponse.headers, 5_000, 'presence response headers');
      assert.equal(headers['access-control-allow-origin'], env.pages.origin, 'CORS allows the page origin');
      assert.deepEqual(tab.failedRequests, [], 'no request failed');
      assert.deepEqual(tab.errors, [], 'no page errors');
    });
  }
});
