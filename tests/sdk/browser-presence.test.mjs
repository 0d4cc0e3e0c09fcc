// Browser: two tabs, each signed in as its own Supabase user, enter presence on one session channel. Each
// tab lists both users (from its realtime presence set, and from a cross-origin REST presence request);
// when one tab is closed (unload handlers run, as when a user closes it) the other shows that user leaving.

import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FORMATS, pollUntil, safeJson, uniq } from './helpers.mjs';
import { browserSuite, describeTab, gatewayMetric, inPage, openTab, renderedPresence } from './browser-helpers.mjs';

/** Wait until the tab lists exactly `clientIds` (sorted) as present. */
async function waitForPresent(tab, clientIds, ms, what) {
  try {
    await tab.page.waitForFunction(
      (wanted) => [...document.querySelectorAll('#presence li')].map((li) => li.dataset.clientId).join(',') === wanted.join(','),
      [...clientIds].sort(),
      { timeout: ms },
    );
  } catch (err) {
    const events = await tab.page.evaluate(() => window.app.presenceEvents).catch(() => '?');
    throw new Error(
      `${what}: ${err.message}; listed ${safeJson(await renderedPresence(tab).catch(() => '?'))}, events ${safeJson(events)}\n${describeTab(tab)}`,
    );
  }
}

describe('browser (Chromium): presence across two tabs', () => {
  const env = browserSuite();

  for (const format of FORMATS) {
    test(`${format.name}: two tabs (two users) both see both; closing one tab shows it leaving in the other`, async () => {
      env.context = await env.browser.newContext();
      const channelName = uniq(`session:browser-presence-${format.name}`);
      const alice = randomUUID();
      const bob = randomUUID();
      const tabs = [];
      for (const sub of [alice, bob]) {
        const tab = await openTab(env.context, env.pages.url({ gatewayPort: env.server.port, sub, format: format.name }), env.server.url);
        const { clientId } = await inPage(tab, () => window.app.connect(), undefined, 'connect');
        assert.equal(clientId, sub);
        await inPage(tab, (name) => window.app.enterPresence(name), channelName, `enter presence on ${channelName}`);
        tabs.push(tab);
      }
      const [aliceTab, bobTab] = tabs;

      await waitForPresent(aliceTab, [alice, bob], 10_000, "both users in Alice's tab");
      await waitForPresent(bobTab, [alice, bob], 10_000, "both users in Bob's tab");
      const rest = await inPage(aliceTab, (name) => window.app.restRequests(name), channelName, 'REST presence from the page');
      assert.deepEqual(rest.presentClientIds, [alice, bob].sort(), 'REST presence (cross-origin) lists both');

      // The user closes Bob's tab: the browser runs its unload handlers, where ably-js (closeOnUnload)
      // closes the connection, so Bob leaves at once rather than after the resume grace period.
      const closedBefore = await gatewayMetric(env.server.url, 'realtime_connections_closed_total', { reason: 'client_closed' });
      await bobTab.page.close({ runBeforeUnload: true });
      await waitForPresent(aliceTab, [alice], 10_000, "Bob gone from Alice's tab");
      await pollUntil(
        () => gatewayMetric(env.server.url, 'realtime_connections_closed_total', { reason: 'client_closed' }),
        (closed) => closed === closedBefore + 1,
        5_000,
        "the gateway to count Bob's tab closing its connection",
      );
      const events = await inPage(aliceTab, () => window.app.presenceEvents, undefined, 'presence events');
      assert.ok(events.some((e) => e.action === 'leave' && e.clientId === bob), `Alice's tab saw Bob leave: ${safeJson(events)}`);
      assert.deepEqual(aliceTab.errors, []);
    });
  }
});
