// Browser: two tabs, each signed in as its own Supabase user, enter presence on one session channel. Each
// tab lists both users (from its realtime presence set, and from a cross-origin REST presence request);
// when one tab is closed the other shows that user leaving.

import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startServer } from './server.mjs';
import { safeJson, uniq } from './helpers.mjs';
import { GATEWAY_ARGS, PageServer, describeTab, inPage, launchChromium, openTab, renderedPresence } from './browser-helpers.mjs';

/** Wait until the tab lists exactly `clientIds` (sorted) as present. */
async function waitForPresent(tab, clientIds, ms, what) {
  try {
    await tab.page.waitForFunction(
      (wanted) => [...document.querySelectorAll('#presence li')].map((li) => li.dataset.clientId).join(',') === wanted.join(','),
      [...clientIds].sort(),
      { timeout: ms },
    );
  } catch {
    const events = await tab.page.evaluate(() => window.app.presenceEvents).catch(() => '?');
    throw new Error(
      `timed out after ${ms} ms waiting for ${what}: listed ${safeJson(await renderedPresence(tab).catch(() => '?'))}, events ${safeJson(events)}\n${describeTab(tab)}`,
    );
  }
}

describe('browser (Chromium): presence across two tabs', () => {
  let server;
  let pages;
  let browser;
  let context;

  before(async () => {
    server = await startServer({ args: GATEWAY_ARGS });
    pages = await new PageServer().start();
    browser = await launchChromium();
  });
  afterEach(async () => {
    await context?.close();
    context = undefined;
  });
  after(async () => {
    await context?.close();
    await browser?.close();
    await pages?.stop();
    await server?.stop();
  });

  test('msgpack: two tabs (two users) both see both; closing one tab shows it leaving in the other', async () => {
    context = await browser.newContext();
    const channelName = uniq('session:browser-presence');
    const alice = randomUUID();
    const bob = randomUUID();
    const tabs = [];
    for (const sub of [alice, bob]) {
      const tab = await openTab(context, pages.url({ gatewayPort: server.port, sub, format: 'msgpack' }), server.url);
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

    // The user closes Bob's tab: the browser runs its unload handlers (ably-js closes the connection).
    await bobTab.page.close({ runBeforeUnload: true });
    await waitForPresent(aliceTab, [alice], 10_000, "Bob gone from Alice's tab");
    const events = await inPage(aliceTab, () => window.app.presenceEvents, undefined, 'presence events');
    assert.ok(events.some((e) => e.action === 'leave' && e.clientId === bob), `Alice's tab saw Bob leave: ${safeJson(events)}`);
    assert.deepEqual(aliceTab.errors, []);
  });
});
