// Helpers for the browser tests: headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core,
// and the test page's own web server. The page lives on http://localhost:<page port>, the gateway on
// http://127.0.0.1:<gateway port>: another host and port, so every HTTP request ably-js makes from the page
// is cross-origin and needs the gateway's CORS headers.
//
// The page server hands out the pinned ably package's browser build (/ably.min.js), the page
// (browser/page.html, browser/page.js) and Supabase-style access tokens (/supabase-token?sub=…, HS256
// with the secret the gateway is started with), as a Supabase project would hand them to supabase-js.

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { after, afterEach, before } from 'node:test';

import { chromium } from 'playwright-core';

import { safeJson, withTimeout } from './helpers.mjs';
import { FULL_KEY, startServer } from './server.mjs';
import { signJwt, userClaims } from './supabase-helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
// The package's browser build (UMD: window.Ably) sits beside its Node entry point, build/ably-node.js.
const ablyBuildDir = path.dirname(createRequire(import.meta.url).resolve('ably'));
const ablyBrowserBuild = path.join(ablyBuildDir, 'ably.min.js');
// ably-js's push plugin, browser build (UMD: window.AblyPushPlugin), for `push.activate()`.
const ablyPushBuild = path.join(ablyBuildDir, 'push.umd.min.js');
/** The installed (pinned) ably version; the page's WebSocket names it in its `agent` parameter. */
export const ABLY_VERSION = JSON.parse(readFileSync(path.join(ablyBuildDir, '../package.json'), 'utf8')).version;

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/** The gateway's --supabase-jwt-secret (Supabase's legacy HS256 JWT secret). */
export const SUPABASE_SECRET = 'browser-test-jwt-secret-with-at-least-32-chars';
/** Gateway flags for these tests: Supabase tokens signed with SUPABASE_SECRET, the default policy. */
export const GATEWAY_ARGS = ['--supabase-jwt-secret', SUPABASE_SECRET];
/** Bound for one step in the page (connect, attach, a REST call). */
export const STEP_MS = 10_000;

/** Headless Chromium; as root (containers, CI) without the sandbox, which needs an unprivileged user. */
export function launchChromium() {
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  return withTimeout(
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: asRoot ? ['--no-sandbox'] : [] }),
    30_000,
    `Chromium (${CHROMIUM}) to start`,
  );
}

/** The test page's origin: serves the page, ably-js and Supabase tokens. `tokensIssued` counts tokens. */
export class PageServer {
  constructor() {
    this.tokensIssued = 0;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err));
      });
    });
  }

  async handle(req, res) {
    const url = new URL(req.url, 'http://page');
    const file = { '/': 'browser/page.html', '/page.js': 'browser/page.js', '/sw.js': 'browser/sw.js' }[url.pathname];
    if (file) {
      const type = file.endsWith('.html') ? 'text/html; charset=utf-8' : 'text/javascript';
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(await readFile(path.join(here, file)));
    } else if (url.pathname === '/ably.min.js' || url.pathname === '/push.umd.min.js') {
      const build = url.pathname === '/ably.min.js' ? ablyBrowserBuild : ablyPushBuild;
      res.writeHead(200, { 'content-type': 'text/javascript', 'cache-control': 'no-store' }).end(await readFile(build));
    } else if (url.pathname === '/supabase-token' && url.searchParams.get('sub')) {
      this.tokensIssued += 1;
      const token = signJwt(userClaims({ sub: url.searchParams.get('sub') }), { alg: 'HS256', secret: SUPABASE_SECRET });
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(token);
    } else if (url.pathname === '/favicon.ico') {
      res.writeHead(204).end(); // or Chromium logs a 404 as a console error
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  }

  /** Listens on 127.0.0.1; the page is addressed as http://localhost:<port>, a different origin from the gateway's. */
  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.origin = `http://localhost:${this.server.address().port}`;
    return this;
  }

  /** The page URL for one tab: which gateway, which Supabase user, which wire format. */
  url({ gatewayPort, sub, format }) {
    return `${this.origin}/?${new URLSearchParams({ gateway: String(gatewayPort), sub, format })}`;
  }

  async stop() {
    if (!this.server.listening) return;
    const closed = new Promise((resolve) => this.server.close(resolve));
    this.server.closeAllConnections();
    await closed;
  }
}

/**
 * Open the page in a new tab of `context` and keep what the browser saw: `sockets` (every WebSocket: its URL,
 * frames received as { binary, text }, socket errors, whether it closed), `responses` (every HTTP response
 * from `gatewayUrl`: url, method, status, promises of its and its request's headers), `failedRequests` and
 * `errors` (page errors and console errors).
 */
export async function openTab(context, url, gatewayUrl) {
  const page = await context.newPage();
  const tab = { page, sockets: [], responses: [], failedRequests: [], errors: [] };
  page.on('websocket', (ws) => {
    const socket = { url: ws.url(), received: [], closed: false, errors: [] };
    socket.closedPromise = new Promise((resolve) => ws.on('close', resolve)).then(() => {
      socket.closed = true;
    });
    ws.on('framereceived', ({ payload }) => {
      socket.received.push(typeof payload === 'string' ? { binary: false, text: payload } : { binary: true, bytes: payload.length });
    });
    ws.on('socketerror', (err) => socket.errors.push(String(err)));
    tab.sockets.push(socket);
  });
  page.on('response', (response) => {
    if (!response.url().startsWith(gatewayUrl)) return;
    // `headers`, `requestHeaders`: promises of every header (CORS ones, Authorization included).
    const headers = response.allHeaders().catch(() => ({}));
    const requestHeaders = response.request().allHeaders().catch(() => ({}));
    tab.responses.push({ url: response.url(), method: response.request().method(), status: response.status(), headers, requestHeaders });
  });
  page.on('requestfailed', (request) => tab.failedRequests.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`));
  page.on('pageerror', (err) => tab.errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') tab.errors.push(`console: ${msg.text()}`);
  });
  await withTimeout(page.goto(url), STEP_MS, `page ${url} to load`);
  return tab;
}

/** `page.evaluate(fn, arg)`, bounded: a page that never answers fails the test instead of hanging it. */
export function inPage(tab, fn, arg, what) {
  return withTimeout(tab.page.evaluate(fn, arg), STEP_MS, `${what} (in the page)`).catch((err) => {
    throw new Error(`${err.message}\n${describeTab(tab)}`);
  });
}

/** The `seq` of every message the page rendered, in DOM order. */
export function renderedSeqs(tab) {
  return tab.page.$$eval('#messages li', (items) => items.map((item) => Number(item.dataset.seq)));
}

/** Wait until the page has rendered at least `n` messages. */
export async function waitForRendered(tab, n, ms, what) {
  try {
    await tab.page.waitForFunction((count) => document.querySelectorAll('#messages li').length >= count, n, { timeout: ms });
  } catch (err) {
    const rendered = await renderedSeqs(tab).catch(() => '?');
    throw new Error(`${what}: ${err.message}; rendered ${safeJson(rendered)}\n${describeTab(tab)}`);
  }
}

/** Wait until the page's connection state is `state`. */
export async function waitForState(tab, state, ms, what) {
  try {
    await tab.page.waitForFunction((wanted) => window.app.realtime?.connection.state === wanted, state, { timeout: ms });
  } catch (err) {
    const changes = await tab.page.evaluate(() => window.app.stateChanges).catch(() => '?');
    throw new Error(`${what}: ${err.message}; state changes ${safeJson(changes)}\n${describeTab(tab)}`);
  }
}

/** The clientIds the page lists as present, in DOM order. */
export function renderedPresence(tab) {
  return tab.page.$$eval('#presence li', (items) => items.map((item) => item.dataset.clientId));
}

/** Diagnostics: sockets, failed requests and errors the tab saw. */
export function describeTab(tab) {
  const sockets = tab.sockets.map((s) => `${s.url.replace(/access_token=[^&]+/, 'access_token=…')} (${s.received.length} frames, ${s.closed ? 'closed' : 'open'}${s.errors.length ? `, errors ${safeJson(s.errors)}` : ''})`);
  return `sockets: ${safeJson(sockets)}; failed requests: ${safeJson(tab.failedRequests)}; errors: ${safeJson(tab.errors)}`;
}

/** The sum of a Prometheus counter or gauge on the gateway's /metrics over the series whose labels include `labels`. */
export async function gatewayMetric(gatewayUrl, name, labels = {}) {
  // /metrics on the public port needs one of the server's keys.
  const headers = { authorization: `Basic ${Buffer.from(FULL_KEY).toString('base64')}` };
  const res = await withTimeout(fetch(`${gatewayUrl}/metrics`, { headers }), STEP_MS, 'GET /metrics');
  if (!res.ok) throw new Error(`GET /metrics: ${res.status} ${await res.text()}`);
  const text = await res.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(match[3]);
  }
  return sum;
}

/**
 * The setup every browser test file shares, registered as hooks of the enclosing `describe`: one
 * gateway (Supabase secret set), one page server on another origin and one Chromium for the file;
 * a test puts its browser context in `env.context`, closed after the test even when it fails.
 */
export function browserSuite(extraArgs = []) {
  const env = { server: undefined, pages: undefined, browser: undefined, context: undefined };
  before(async () => {
    env.pages = await new PageServer().start();
    // ably-js sends REST requests with credentials when it has an Authorization header, which
    // only a listed origin may do.
    env.server = await startServer({ args: [...GATEWAY_ARGS, '--cors-origins', env.pages.origin, ...extraArgs] });
    env.browser = await launchChromium();
  });
  afterEach(async () => {
    await env.context?.close();
    env.context = undefined;
  });
  after(async () => {
    await env.context?.close();
    await env.browser?.close();
    await env.pages?.stop();
    await env.server?.stop();
  });
  return env;
}
