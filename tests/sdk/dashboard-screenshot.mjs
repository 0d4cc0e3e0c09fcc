// Writes the README's dashboard screenshots: starts a server, makes some traffic with ably-js
// (subscribers, presence members, publishes at a varying rate), opens /dashboard in headless
// Chromium and saves docs/dashboard.png and docs/dashboard-channel.png, overwriting the tracked
// images (review them with `git diff --stat docs/` before committing).
//
//   cargo build && (cd tests/sdk && node dashboard-screenshot.mjs)

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Ably from 'ably';
import { chromium } from 'playwright-core';

import { FULL_KEY, clientOptions, startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const docs = path.resolve(here, '../../docs');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TRAFFIC_SECONDS = Number(process.env.TRAFFIC_SECONDS || 25);

const CHANNELS = ['room:lobby', 'call:8812', 'session:42', 'user:ana'];
const PEOPLE = ['ana', 'bo', 'chen', 'dee', 'eli', 'fay'];

const server = await startServer();
const clients = [];
let browser;
try {
  // Subscribers (some present) on each channel, busier channels first.
  for (const [i, name] of CHANNELS.entries()) {
    for (let n = 0; n < CHANNELS.length - i + 1; n++) {
      const clientId = PEOPLE[(i + n) % PEOPLE.length];
      const client = new Ably.Realtime(clientOptions(server.port, { key: FULL_KEY, clientId }));
      clients.push(client);
      const channel = client.channels.get(name);
      await channel.attach();
      channel.subscribe(() => {});
      if (n < 3) await channel.presence.enter({ status: n === 0 ? 'speaking' : 'listening' });
    }
  }

  const rest = new Ably.Rest(clientOptions(server.port, { key: FULL_KEY }));
  const started = Date.now();
  let sent = 0;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const [keyName, secret] = [FULL_KEY.slice(0, FULL_KEY.indexOf(':')), FULL_KEY.slice(FULL_KEY.indexOf(':') + 1)];
  const context = await browser.newContext({
    httpCredentials: { username: keyName, password: secret },
    viewport: { width: 1360, height: 1000 },
    deviceScaleFactor: 1,
  });
  const page = await context.newPage();
  await page.goto(`${server.url}/dashboard`);

  // A wave of publishes so the sparklines have a shape.
  while (Date.now() - started < TRAFFIC_SECONDS * 1000) {
    const t = (Date.now() - started) / 1000;
    const perTick = Math.max(1, Math.round(6 + 5 * Math.sin(t / 3)));
    await Promise.all(
      Array.from({ length: perTick }, (_, k) => {
        const name = CHANNELS[(sent + k) % CHANNELS.length];
        return rest.channels.get(name).publish('chat', { text: `message ${sent + k}`, from: PEOPLE[k % PEOPLE.length] });
      }),
    );
    sent += perTick;
    await new Promise((r) => setTimeout(r, 100));
  }

  // Inspect the busiest channel and publish one through the form.
  await page.click('#channels tbody tr[data-channel="room:lobby"]');
  await page.fill('#publish-data', 'hello from the dashboard');
  await page.click('#publish-form button[type=submit]');
  await page.waitForFunction(
    () => [...document.querySelectorAll('#i-messages tbody td')].some((td) => td.textContent === 'hello from the dashboard'),
    null,
    { timeout: 10_000 },
  );
  await page.waitForTimeout(1200); // one more overview tick, for the picture only
  await page.screenshot({ path: path.join(docs, 'dashboard.png'), fullPage: true });
  await page.locator('.columns').screenshot({ path: path.join(docs, 'dashboard-channel.png') });
  console.log(`wrote ${path.join(docs, 'dashboard.png')} and dashboard-channel.png (${sent} messages published)`);
} finally {
  for (const client of clients) client.close();
  await browser?.close();
  await server.stop();
}
