// Browser (Chromium): the live-stream chat example (examples/live-chat) as shipped, on the published
// `ably` and `@ably/chat` browser bundles. The gateway runs with the example's policy.toml and a Supabase
// JWT secret; a viewer (app_metadata.badge "vip") and the stream's creator (badge "creator", creator_of the
// stream) open the page, each with their own Supabase-style HS256 token. Everything is asserted through the
// DOM: the viewer count, "… is typing", the viewer's message with its badge on the creator's page, heart
// counts on both pages, floating room-reaction hearts, the creator's delete making the message vanish
// for everyone (a viewer's own delete refused by the gateway), and a late viewer's history.

import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { safeJson, withTimeout } from './helpers.mjs';
import { SUPABASE_SECRET, STEP_MS, describeTab, inPage, launchChromium, openTab } from './browser-helpers.mjs';
import { startServer } from './server.mjs';
import { signJwt, userClaims } from './supabase-helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const exampleDir = path.join(here, '../../examples/live-chat');
const require = createRequire(import.meta.url);

/** What the example's static server hands out: the page, its module, and the two published bundles. */
const FILES = {
  '/': path.join(exampleDir, 'index.html'),
  '/app.js': path.join(exampleDir, 'app.js'),
  '/vendor/ably.min.js': path.join(path.dirname(require.resolve('ably')), 'ably.min.js'),
  '/vendor/ably-chat.umd.js': path.join(path.dirname(require.resolve('@ably/chat/package.json')), 'dist/chat/ably-chat.umd.cjs'),
};

/** A plain static file server for the example, as a user would run one (python3 -m http.server). */
class StaticServer {
  constructor() {
    this.server = http.createServer((req, res) => {
      const file = FILES[new URL(req.url, 'http://page').pathname];
      if (!file) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      const type = file.endsWith('.html') ? 'text/html; charset=utf-8' : 'text/javascript';
      readFile(file).then(
        (body) => res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body),
        (err) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err)),
      );
    });
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    // localhost, not 127.0.0.1: another origin than the gateway's, so the Chat REST calls are cross-origin.
    this.origin = `http://localhost:${this.server.address().port}`;
    return this;
  }

  async stop() {
    if (!this.server.listening) return;
    const closed = new Promise((resolve) => this.server.close(resolve));
    this.server.closeAllConnections();
    await closed;
  }
}

/** A Supabase user's access token: a display name and the app_metadata only the backend can set. */
function supabaseToken(name, appMetadata) {
  const claims = userClaims({
    sub: randomUUID(),
    email: `${name}@example.com`,
    app_metadata: { provider: 'email', ...appMetadata },
    user_metadata: { name },
  });
  return { sub: claims.sub, token: signJwt(claims, { alg: 'HS256', secret: SUPABASE_SECRET }) };
}

/** Wait (bounded) until `fn(arg)` is truthy in the tab; on timeout say what the page showed. */
async function waitInPage(tab, fn, arg, what, ms = STEP_MS) {
  try {
    await tab.page.waitForFunction(fn, arg, { timeout: ms });
  } catch (err) {
    const shown = await tab.page
      .evaluate(() => ({
        status: document.querySelector('#status')?.textContent,
        error: document.querySelector('#error')?.textContent,
        viewers: document.querySelector('#viewers')?.textContent,
        typing: document.querySelector('#typing')?.textContent,
        messages: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
      }))
      .catch(() => '?');
    throw new Error(`${what}: ${err.message}; page shows ${safeJson(shown)}\n${describeTab(tab)}`);
  }
}

/** The rendered message whose text is `text`: { serial, author, badge, hearts, pressed, canDelete }, or null. */
function messageRow(tab, text) {
  return tab.page.evaluate((wanted) => {
    const item = [...document.querySelectorAll('#messages li')].find((li) => li.querySelector('.text')?.textContent === wanted);
    if (!item) return null;
    return {
      serial: item.dataset.serial,
      author: item.querySelector('.author')?.textContent,
      badge: item.querySelector('.badge')?.dataset.badge ?? null,
      hearts: item.querySelector('.heart .count')?.textContent,
      pressed: item.querySelector('.heart')?.getAttribute('aria-pressed'),
      canDelete: Boolean(item.querySelector('.delete')),
    };
  }, text);
}

const hasMessage = (text) => [...document.querySelectorAll('#messages li .text')].some((el) => el.textContent === text);
const lacksMessage = (text) => ![...document.querySelectorAll('#messages li .text')].some((el) => el.textContent === text);
const heartsAre = ([text, count]) =>
  [...document.querySelectorAll('#messages li')].some(
    (li) => li.querySelector('.text')?.textContent === text && li.querySelector('.heart .count')?.textContent === count,
  );
/** `#selector`'s text is `wanted`. */
const shows = ([selector, wanted]) => document.querySelector(selector)?.textContent === wanted;

describe('browser (Chromium): the live-stream chat example', () => {
  let pages;
  let server;
  let browser;
  let context;

  before(async () => {
    pages = await new StaticServer().start();
    server = await startServer({
      args: ['--supabase-jwt-secret', SUPABASE_SECRET, '--policy', path.join(exampleDir, 'policy.toml'), '--cors-origins', pages.origin],
    });
    browser = await launchChromium();
  });
  after(async () => {
    await context?.close();
    await browser?.close();
    await pages?.stop();
    await server?.stop();
  });

  test('viewer and creator: count, typing, badges, hearts, room reactions, creator deletes for everyone, history', async () => {
    context = await browser.newContext();
    const stream = `stream-${randomUUID().slice(0, 8)}`;
    const room = `room:${stream}`;
    const viewer = supabaseToken('vera', { badge: 'vip' });
    const creator = supabaseToken('cora', { badge: 'creator', creator_of: stream });
    const url = ({ token }) => `${pages.origin}/?${new URLSearchParams({ token, gateway: server.url, room })}`;
    const ready = () => document.body.dataset.ready === 'true';

    const viewerTab = await openTab(context, url(viewer), server.url);
    await waitInPage(viewerTab, ready, undefined, 'the viewer joins the room');
    const creatorTab = await openTab(context, url(creator), server.url);
    await waitInPage(creatorTab, ready, undefined, 'the creator joins the room');
    assert.equal(await viewerTab.page.textContent('#status'), 'connected');

    // Occupancy: two connections in the room, on both pages.
    for (const [tab, who] of [[viewerTab, 'viewer'], [creatorTab, 'creator']]) {
      await waitInPage(tab, shows, ['#viewers', '2'], `2 watching on the ${who}'s page`);
    }

    // Typing: the viewer types; the creator sees it by the viewer's presence name.
    await viewerTab.page.fill('#text', 'hello from the front row');
    await waitInPage(creatorTab, shows, ['#typing', 'vera is typing…'], 'typing on the creator\'s page');
    assert.equal(await viewerTab.page.textContent('#typing'), '', 'nobody else is typing on the viewer\'s page');

    // The viewer sends: the creator sees it with the viewer's name and badge (userClaim from app_metadata),
    // and the typing indicator goes away.
    await viewerTab.page.click('#send');
    const text = 'hello from the front row';
    await waitInPage(creatorTab, hasMessage, text, 'the viewer\'s message on the creator\'s page');
    const atCreator = await messageRow(creatorTab, text);
    assert.equal(atCreator.author, 'vera');
    assert.equal(atCreator.badge, 'vip', `the viewer's badge: ${safeJson(atCreator)}`);
    assert.equal(atCreator.canDelete, true, 'the creator may delete any message');
    await waitInPage(creatorTab, shows, ['#typing', ''], 'typing cleared after sending');
    await waitInPage(viewerTab, hasMessage, text, 'the viewer\'s own message on their page');
    const atViewer = await messageRow(viewerTab, text);
    assert.equal(atViewer.serial, atCreator.serial);
    assert.equal(atViewer.badge, 'vip');
    assert.equal(atViewer.canDelete, false, 'a viewer has no delete button');

    // The creator answers: the creator badge on the viewer's page.
    const reply = 'welcome, vera!';
    await creatorTab.page.fill('#text', reply);
    await creatorTab.page.press('#text', 'Enter');
    await waitInPage(viewerTab, hasMessage, reply, 'the creator\'s reply on the viewer\'s page');
    const replyAtViewer = await messageRow(viewerTab, reply);
    assert.equal(replyAtViewer.author, 'cora');
    assert.equal(replyAtViewer.badge, 'creator');

    // Hearts on the viewer's message (message reactions, counted by summaries): one from each, on both pages.
    const selector = (tab, serial) => tab.page.locator(`#messages li[data-serial="${serial}"] .heart`);
    await selector(creatorTab, atCreator.serial).click();
    for (const [tab, who] of [[viewerTab, 'viewer'], [creatorTab, 'creator']]) {
      await waitInPage(tab, heartsAre, [text, '1'], `1 heart on the ${who}'s page`);
    }
    await selector(viewerTab, atViewer.serial).click();
    for (const [tab, who] of [[viewerTab, 'viewer'], [creatorTab, 'creator']]) {
      await waitInPage(tab, heartsAre, [text, '2'], `2 hearts on the ${who}'s page`);
    }
    assert.equal((await messageRow(viewerTab, text)).pressed, 'true', 'the viewer\'s heart shows as given');
    // Taking it back: distinct reactions, one per user.
    await selector(viewerTab, atViewer.serial).click();
    await waitInPage(creatorTab, heartsAre, [text, '1'], 'back to 1 heart on the creator\'s page');

    // Room reactions: the viewer's ❤️ floats up on the creator's page.
    await viewerTab.page.click('#love');
    await waitInPage(
      creatorTab,
      (sub) => [...document.querySelectorAll('#hearts .floating-heart')].some((el) => el.dataset.clientId === sub),
      viewer.sub,
      'a floating heart from the viewer on the creator\'s page',
    );

    // A viewer cannot delete even without the button: the gateway refuses (40160), the message stays.
    assert.deepEqual(viewerTab.errors, [], 'no errors in the viewer\'s page so far');
    const refused = await inPage(
      viewerTab,
      (serial) => window.liveChat.room.messages.delete(serial).then(() => 'deleted', (err) => err.code),
      atViewer.serial,
      'a viewer deleting',
    );
    assert.equal(refused, 40160, `a viewer's delete: ${refused}`);
    assert.ok(await messageRow(creatorTab, text), 'still there after the refused delete');

    // The creator deletes the viewer's message: it vanishes on both pages.
    await creatorTab.page.locator(`#messages li[data-serial="${atCreator.serial}"] .delete`).click();
    await waitInPage(viewerTab, lacksMessage, text, 'the deleted message gone from the viewer\'s page');
    await waitInPage(creatorTab, lacksMessage, text, 'the deleted message gone from the creator\'s page');
    assert.equal(await creatorTab.page.textContent('#error'), '', 'the creator\'s delete succeeded');
    assert.ok(await messageRow(viewerTab, reply), 'the reply stays');

    // A late viewer gets the room's history: the reply, not the deleted message; three watching now.
    const late = supabaseToken('lou', {});
    const lateTab = await openTab(context, url(late), server.url);
    await waitInPage(lateTab, ready, undefined, 'the late viewer joins the room');
    await waitInPage(lateTab, hasMessage, reply, 'the reply in the late viewer\'s history');
    assert.equal(await messageRow(lateTab, text), null, 'the deleted message is not in history');
    assert.equal((await messageRow(lateTab, reply)).badge, 'creator');
    await waitInPage(viewerTab, shows, ['#viewers', '3'], '3 watching on the viewer\'s page');

    for (const tab of [viewerTab, creatorTab, lateTab]) {
      assert.deepEqual(tab.failedRequests, [], describeTab(tab));
    }
    assert.deepEqual([...creatorTab.errors, ...lateTab.errors], [], 'no errors in the creator\'s and late viewer\'s pages');
    // The viewer's page logged only the refused delete (the browser's 401, the Chat SDK's error log).
    assert.ok(
      viewerTab.errors.length > 0 && viewerTab.errors.every((e) => e.includes('401') || e.includes('40160')),
      `the viewer's errors: ${safeJson(viewerTab.errors)}`,
    );
    await withTimeout(context.close(), STEP_MS, 'closing the pages');
    context = undefined;
  });
});
