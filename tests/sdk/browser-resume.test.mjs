// Browser: the page's network goes away and comes back (Chromium's network emulation, which also fires
// the window `offline`/`online` events ably-js listens to). The test proves the transport was really lost:
// the page left `connected`, its immediate reconnect attempt was refused by the browser
// (ERR_INTERNET_DISCONNECTED), nothing reached the old socket while offline, and that socket closed only
// once the page was back. It proves the connection was resumed: a new WebSocket with `resume=`, the same
// connection id, CONNECTED without an error, the gateway counting one successful resume, the channel
// re-attached with resumed=true. And every message the backend published before, during and after the
// outage shows up exactly once, in order.

import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { ClientPool, FORMATS, pollUntil, safeJson, uniq, withTimeout } from './helpers.mjs';
import {
  browserSuite,
  describeTab,
  gatewayMetric,
  inPage,
  openTab,
  renderedSeqs,
  waitForRendered,
  waitForState,
} from './browser-helpers.mjs';

const PER_PHASE = 5;

describe('browser (Chromium): offline and back online resumes without loss', () => {
  const env = browserSuite();

  for (const format of FORMATS) {
    test(`${format.name}: offline → disconnected, socket gone; online → resumed, same id; every message once, in order`, async () => {
      env.context = await env.browser.newContext();
      const sub = randomUUID();
      const tab = await openTab(env.context, env.pages.url({ gatewayPort: env.server.port, sub, format: format.name }), env.server.url);
      const { connectionId } = await inPage(tab, () => window.app.connect(), undefined, 'connect');
      const channelName = uniq(`session:browser-resume-${format.name}`);
      await inPage(tab, (name) => window.app.subscribe(name), channelName, `subscribe to ${channelName}`);

      const backend = new ClientPool(env.server.port).rest({ key: FULL_KEY }).channels.get(channelName);
      let seq = 0;
      const publishPhase = async (phase) => {
        for (let i = 0; i < PER_PHASE; i += 1) {
          await withTimeout(backend.publish('tick', { seq, phase }), 10_000, `REST publish ${seq} (${phase})`);
          seq += 1;
        }
      };

      await publishPhase('before');
      await waitForRendered(tab, PER_PHASE, 10_000, 'the messages published before the outage');
      assert.equal(tab.sockets.length, 1);
      const [first] = tab.sockets;

      const channelChangesBefore = (await inPage(tab, () => window.app.snapshot(), undefined, 'snapshot')).channelChanges.length;

      const resumesBefore = await gatewayMetric(env.server.url, 'realtime_resumes_total', { outcome: 'resumed' });

      // Offline: ably-js sees the window `offline` event and drops its transport at once. Chromium's offline
      // emulation refuses new connections (ERR_INTERNET_DISCONNECTED) and holds back all traffic on the open
      // socket, ably-js' close frame included: like a real outage, the gateway is not told and still counts
      // the old connection open until the page is back.
      await env.context.setOffline(true);
      await waitForState(tab, 'disconnected', 10_000, 'disconnected after going offline');
      const framesAtOffline = first.received.length;

      await publishPhase('offline');
      assert.deepEqual(await renderedSeqs(tab), [0, 1, 2, 3, 4], 'nothing reaches an offline page');
      assert.equal(first.received.length, framesAtOffline, `no frame reached the old socket while offline; ${describeTab(tab)}`);
      // ably-js retries at once (the transport dropped while connected); the browser refuses it.
      await pollUntil(() => tab.sockets.slice(1), (tried) => tried.some((s) => s.closed), 10_000, 'a reconnect attempt while offline');
      const triedOffline = tab.sockets.slice(1);
      assert.ok(
        triedOffline.every((s) => s.closed && s.received.length === 0 && s.errors.some((e) => e.includes('ERR_INTERNET_DISCONNECTED'))),
        `reconnect attempts while offline fail with ERR_INTERNET_DISCONNECTED; ${describeTab(tab)}`,
      );

      await env.context.setOffline(false);
      await waitForState(tab, 'connected', 15_000, 'connected again after going online');
      await withTimeout(first.closedPromise, 10_000, `the old WebSocket to close; ${describeTab(tab)}`);
      await publishPhase('after');
      await withTimeout(backend.publish('tick', { seq, phase: 'last' }), 10_000, 'REST publish (last)');
      const total = seq + 1;
      await waitForRendered(tab, total, 10_000, `all ${total} messages`);

      const snapshot = await inPage(tab, () => window.app.snapshot(), undefined, 'snapshot');
      const diag = `state changes ${safeJson(snapshot.stateChanges)}; channel changes ${safeJson(snapshot.channelChanges)}; ${describeTab(tab)}`;
      assert.deepEqual(await renderedSeqs(tab), Array.from({ length: total }, (_, i) => i), `every message once, in order; ${diag}`);

      // Resumed, not a new connection: same id, the reconnect came without an error, the socket that got
      // through asked to resume, and the channel never reported lost continuity.
      assert.equal(snapshot.connectionId, connectionId, `same connection id; ${diag}`);
      const lastConnected = snapshot.stateChanges.filter((c) => c.current === 'connected').at(-1);
      assert.equal(lastConnected.reason, null, `CONNECTED after the outage carries no error; ${diag}`);
      const resumedSocket = tab.sockets.at(-1);
      assert.notEqual(resumedSocket, first, `a new WebSocket after going online; ${diag}`);
      assert.ok(new URL(resumedSocket.url).searchParams.get('resume'), `the new WebSocket resumes (resume=…): ${resumedSocket.url}`);
      assert.ok(!resumedSocket.closed, 'the resumed socket is open');
      const resumes = (await gatewayMetric(env.server.url, 'realtime_resumes_total', { outcome: 'resumed' })) - resumesBefore;
      assert.equal(resumes, 1, 'the gateway counted one successful resume');
      // After the outage the channel at most re-attached with resumed=true: no `update`, no resumed=false.
      const afterOutage = snapshot.channelChanges.slice(channelChangesBefore);
      for (const change of afterOutage) {
        assert.ok(change.event !== 'update' && ['attaching', 'attached'].includes(change.current), `unexpected channel change ${safeJson(change)}; ${diag}`);
        if (change.current === 'attached') assert.equal(change.resumed, true, `re-attached with resumed=true; ${diag}`);
      }
      assert.ok(afterOutage.some((c) => c.current === 'attached'), `the channel re-attached after the outage; ${diag}`);
    });
  }
});
