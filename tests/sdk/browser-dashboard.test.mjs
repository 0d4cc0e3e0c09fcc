// The operator dashboard in a real browser (Chromium through playwright-core): it asks for
// credentials, shows live counters, publishes through its form, and the counters and the channel
// inspector move without a reload. Message data shows as text, never as markup.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import Ably from 'ably';
import { chromium } from 'playwright-core';

import { FULL_KEY, LIMITED_KEY, clientOptions, startServer } from './server.mjs';
import { uniq } from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WAIT_MS = 10_000;

const basic = (key) => `Basic ${Buffer.from(key).toString('base64')}`;
const [keyName, keySecret] = [FULL_KEY.slice(0, FULL_KEY.indexOf(':')), FULL_KEY.slice(FULL_KEY.indexOf(':') + 1)];

// The number an element shows ("1,234" → 1234), NaN while it shows a placeholder.
const shown = (page, id) =>
  page.$eval(`#${id}`, (el) => Number(el.textContent.replace(/,/g, '')));

describe('operator dashboard in a browser', () => {
  let server;
  let browser;
  let subscriber;

  before(async () => {
    server = await startServer();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox'],
    });
  });
  after(async () => {
    subscriber?.close();
    await browser?.close();
    await server?.stop();
  });

  test('without credentials the page answers 401 and asks for them; a lesser key gets 403', async () => {
    const anonymous = await fetch(`${server.url}/dashboard`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    assert.equal((await anonymous.json()).error.code, 40100);

    const limited = await fetch(`${server.url}/dashboard`, { headers: { authorization: basic(LIMITED_KEY) } });
    assert.equal(limited.status, 403);
    assert.equal((await limited.json()).error.code, 40160);

    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      // Headless Chromium cannot show the prompt, so it gives up on the challenge.
      const outcome = await page.goto(`${server.url}/dashboard`).then(
        (response) => `HTTP ${response.status()}`,
        (error) => error.message,
      );
      assert.match(outcome, /HTTP 401|ERR_INVALID_AUTH_CREDENTIALS/, 'a browser without credentials is refused');
    } finally {
      await context.close();
    }
  });

  test('publishing through the form moves the counters and shows in the inspector', async () => {
    const channelName = uniq('dash');
    // A realtime subscriber, so the publish is also delivered (messages out moves).
    subscriber = new Ably.Realtime(clientOptions(server.port, { key: FULL_KEY, clientId: 'watcher' }));
    const channel = subscriber.channels.get(channelName);
    const received = new Promise((resolve) => channel.subscribe((message) => resolve(message)));
    await channel.attach();
    await channel.presence.enter('watching');

    const context = await browser.newContext({ httpCredentials: { username: keyName, password: keySecret } });
    try {
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (error) => errors.push(error.message));
      // Content-Security-Policy violations and failed loads show up as console errors.
      page.on('console', (message) => {
        if (message.type() === 'error') errors.push(message.text());
      });
      const response = await page.goto(`${server.url}/dashboard`);
      assert.equal(response.status(), 200);

      // Live numbers arrive without a reload.
      await page.waitForFunction(() => /^\d/.test(document.getElementById('m-messages-in').textContent), null, {
        timeout: WAIT_MS,
      });
      const inBefore = await shown(page, 'm-messages-in');
      const outBefore = await shown(page, 'm-messages-out');
      assert.ok(await shown(page, 'm-connections') >= 1, 'the subscriber is counted');
      assert.equal(await page.$eval('#node-state', (el) => el.textContent), 'ready');
      assert.equal(await page.$$eval('#nodes tbody tr', (rows) => rows.length), 1, 'one node, embedded');

      // Publish through the form; the data is markup that must stay text.
      const data = `<img src=x onerror="window.__pwned=1">${channelName}`;
      await page.fill('#publish-channel', channelName);
      await page.fill('#publish-name', 'from-form');
      await page.fill('#publish-data', data);
      await page.click('#publish-form button[type=submit]');

      await page.waitForFunction(
        (before) => Number(document.getElementById('m-messages-in').textContent.replace(/,/g, '')) > before,
        inBefore,
        { timeout: WAIT_MS },
      );
      await page.waitForFunction(
        (before) => Number(document.getElementById('m-messages-out').textContent.replace(/,/g, '')) > before,
        outBefore,
        { timeout: WAIT_MS },
      );
      await page.waitForFunction(
        (expected) => [...document.querySelectorAll('#i-messages tbody td')].some((td) => td.textContent === expected),
        data,
        { timeout: WAIT_MS },
      );
      await page.waitForFunction(
        () => document.getElementById('i-member-list').textContent.includes('watcher'),
        null,
        { timeout: WAIT_MS },
      );
      assert.match(await page.textContent('#publish-result'), /^published/);
      assert.equal(await page.$$eval('#i-messages img', (imgs) => imgs.length), 0, 'data is text, not markup');
      assert.equal(await page.evaluate(() => window.__pwned), undefined);

      const message = await Promise.race([
        received,
        new Promise((_, reject) => setTimeout(() => reject(new Error('not delivered')), WAIT_MS)),
      ]);
      assert.equal(message.data, data);
      assert.equal(message.name, 'from-form');

      // The channel list picks the channel up.
      await page.waitForFunction(
        (name) => [...document.querySelectorAll('#channels tbody tr')].some((tr) => tr.dataset.channel === name),
        channelName,
        { timeout: WAIT_MS },
      );
      assert.deepEqual(errors, [], 'no script errors');
    } finally {
      await context.close();
    }
  });
});
