// Helpers for the Supabase sign-in tests: key pairs and JWTs made with node:crypto (no JWT library),
// a local JWKS server standing in for `{SUPABASE_URL}/auth/v1/.well-known/jwks.json`, and a raw WebSocket
// probe that shows exactly which frame (CONNECTED / ERROR / DISCONNECTED) the server answers a token with.

import crypto from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import { after, afterEach } from 'node:test';

import { withTimeout } from './helpers.mjs';

// `ws` is the WebSocket library ably-js itself depends on (no new dependency): resolve it from ably's location.
const requireFromAbly = createRequire(createRequire(import.meta.url).resolve('ably'));
export const WebSocket = requireFromAbly('ws');

/** Ably protocol actions used here. */
export const ACTION = {
  HEARTBEAT: 0,
  ACK: 1,
  NACK: 2,
  CONNECTED: 4,
  DISCONNECTED: 6,
  CLOSE: 7,
  CLOSED: 8,
  ERROR: 9,
  ATTACH: 10,
  ATTACHED: 11,
  MESSAGE: 15,
  AUTH: 17,
};
const ACTION_NAMES = Object.fromEntries(Object.entries(ACTION).map(([k, v]) => [v, k]));
export const actionName = (a) => ACTION_NAMES[a] ?? `action ${a}`;

export const JWKS_PATH = '/auth/v1/.well-known/jwks.json';
export const nowSec = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------------------------------------
// Keys and JWTs

const b64url = (input) => Buffer.from(input).toString('base64url');

/** An EC P-256 signing key; `jwk` is its public JWK as a JWKS would list it. */
export function ecKey(kid) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { kid, alg: 'ES256', privateKey, publicKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' } };
}

/** An RSA 2048 signing key; `jwk` is its public JWK; `publicPem` the SPKI PEM (for the HS/RS confusion attack). */
export function rsaKey(kid) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    kid,
    alg: 'RS256',
    privateKey,
    publicKey,
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }),
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' },
  };
}

/**
 * Sign a JWT. `alg` HS256 (secret: string|Buffer), ES256 / RS256 (privateKey: KeyObject), or `none` (empty
 * signature). `kid` goes into the header when given; `header` adds/overrides header fields.
 */
export function signJwt(claims, { alg, secret, privateKey, kid, header = {} }) {
  const head = { alg, typ: 'JWT', ...(kid !== undefined ? { kid } : {}), ...header };
  const signingInput = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(claims))}`;
  let signature;
  switch (alg) {
    case 'HS256':
      signature = crypto.createHmac('sha256', secret).update(signingInput).digest();
      break;
    case 'ES256': // JWS wants raw r||s, not DER
      signature = crypto.sign('sha256', Buffer.from(signingInput), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      break;
    case 'RS256': // RSASSA-PKCS1-v1_5 with SHA-256 (node's default padding for RSA keys)
      signature = crypto.sign('sha256', Buffer.from(signingInput), privateKey);
      break;
    case 'none':
      signature = Buffer.alloc(0);
      break;
    default:
      throw new Error(`signJwt: unsupported alg ${alg}`);
  }
  return `${signingInput}.${b64url(signature)}`;
}

/** Sign with a key made by ecKey()/rsaKey() (alg and kid taken from it unless overridden). */
export function signWith(key, claims, overrides = {}) {
  return signJwt(claims, { alg: key.alg, privateKey: key.privateKey, kid: key.kid, ...overrides });
}

/**
 * Supabase-shaped access-token claims: a signed-in user (`role: authenticated`) valid for an hour unless
 * overridden. `iss` only when given (the server checks it only when --supabase-url is set).
 */
export function userClaims({ sub, iss, ttlSec = 3600, ...extra } = {}) {
  const now = nowSec();
  return {
    sub,
    aud: 'authenticated',
    role: 'authenticated',
    aal: 'aal1',
    is_anonymous: false,
    iat: now,
    exp: now + ttlSec,
    session_id: crypto.randomUUID(),
    ...(iss !== undefined ? { iss } : {}),
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------------------
// JWKS server

/**
 * A local stand-in for a Supabase project's auth server: serves `{keys: [...]}` at JWKS_PATH (and at
 * /jwks.json, for --supabase-jwks-url). `setKeys()` swaps the set; `setFailure()` makes fetches fail while
 * still observable; `stop()` takes it down (connections refused). Every answered JWKS request (good or
 * failed) is counted; `waitForRequests(n)` resolves once n have been answered.
 */
export class JwksServer {
  constructor(keys = []) {
    this.keys = keys;
    this.requests = 0;
    this.lastRequestAt = 0;
    this.waiters = [];
    this.server = http.createServer((req, res) => {
      const pathname = new URL(req.url, 'http://x').pathname;
      if (req.method !== 'GET' || (pathname !== JWKS_PATH && pathname !== '/jwks.json')) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
        return;
      }
      res.on('finish', () => {
        this.requests += 1;
        this.lastRequestAt = Date.now();
        for (const w of [...this.waiters]) w();
      });
      if (this.failure === 'http500') {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"internal"}');
        return;
      }
      if (this.failure === 'garbage') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys": [ this is not json');
        return;
      }
      const body = JSON.stringify({ keys: this.keys });
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(body);
    });
  }

  /** Listen on 127.0.0.1 (`port` 0 = any free port). */
  async start(port = 0) {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = this.server.address().port;
    this.url = `http://127.0.0.1:${this.port}`; // what --supabase-url gets
    this.issuer = `${this.url}/auth/v1`;
    this.jwksUrl = `${this.url}${JWKS_PATH}`;
    return this;
  }

  setKeys(keys) {
    this.keys = keys;
  }

  /** Make every later fetch fail: 'http500' (HTTP 500), 'garbage' (200 with a body that is not JSON), or null (serve keys). */
  setFailure(failure) {
    this.failure = failure;
  }

  waitForRequests(n, ms = 5_000) {
    return withTimeout(
      new Promise((resolve) => {
        const check = () => {
          if (this.requests >= n) {
            this.waiters.splice(this.waiters.indexOf(check), 1);
            resolve(this.requests);
          }
        };
        this.waiters.push(check);
        check();
      }),
      ms,
      `JWKS request #${n} (served ${this.requests} so far)`,
    );
  }

  /** Stop listening and drop kept-alive connections: from now on fetches fail with ECONNREFUSED. */
  async stop() {
    if (!this.server.listening) return;
    const closed = new Promise((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Raw WebSocket probe

/**
 * Open `ws://127.0.0.1:port/?access_token=…&format=json` like ably-js does and keep every frame received.
 * `next(pred)` waits for the next matching frame (heartbeats skipped); `first()` is the server's answer to
 * the credentials (CONNECTED, ERROR or DISCONNECTED).
 */
export class WireProbe {
  constructor(port, token, { clientId } = {}) {
    const params = new URLSearchParams({ access_token: token, format: 'json', heartbeats: 'false', v: '6' });
    if (clientId) params.set('clientId', clientId);
    this.frames = [];
    this.cursor = 0;
    this.waiters = [];
    this.closed = false;
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/?${params}`);
    this.ws.on('message', (data, isBinary) => {
      let msg;
      try {
        msg = isBinary ? { binary: true } : JSON.parse(String(data));
      } catch (err) {
        msg = { unparsable: String(data), error: String(err) };
      }
      this.frames.push(msg);
      this.notify();
    });
    this.ws.on('close', (code) => {
      this.closed = true;
      this.closeCode = code;
      this.notify();
    });
    this.ws.on('error', (err) => {
      this.socketError = err;
    });
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  /** Wait for the next frame (after those already consumed) satisfying `pred`, skipping heartbeats. */
  next(pred = () => true, ms = 5_000, what = 'a frame') {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          while (this.cursor < this.frames.length) {
            const f = this.frames[this.cursor++];
            if (f.action === ACTION.HEARTBEAT) continue;
            if (pred(f)) {
              this.waiters.splice(this.waiters.indexOf(check), 1);
              resolve(f);
              return;
            }
          }
          if (this.closed) {
            this.waiters.splice(this.waiters.indexOf(check), 1);
            reject(new Error(`socket closed (${this.closeCode}) before ${what}; frames: ${this.describe()}`));
          }
        };
        this.waiters.push(check);
        check();
      }),
      ms,
      `${what}; frames so far: ${this.describe()}`,
    );
  }

  /** The server's answer to the credentials. */
  first(ms = 5_000) {
    return this.next((f) => [ACTION.CONNECTED, ACTION.ERROR, ACTION.DISCONNECTED].includes(f.action), ms, 'CONNECTED/ERROR/DISCONNECTED');
  }

  send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  /** ATTACH and resolve with the reply for that channel: ATTACHED or a channel ERROR. */
  attach(channel, ms = 5_000) {
    this.send({ action: ACTION.ATTACH, channel });
    return this.next(
      (f) => f.channel === channel && [ACTION.ATTACHED, ACTION.ERROR, ACTION.DETACHED].includes(f.action),
      ms,
      `reply to ATTACH ${channel}`,
    );
  }

  describe() {
    return JSON.stringify(
      this.frames
        .filter((f) => f.action !== ACTION.HEARTBEAT)
        .map((f) => ({ action: actionName(f.action), ...(f.channel ? { channel: f.channel } : {}), ...(f.error ? { error: f.error } : {}) })),
    );
  }

  /** Close the socket (if still open) and wait for it to be closed. */
  async close() {
    if (this.closed) return;
    const done = new Promise((resolve) => this.ws.once('close', resolve));
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) this.ws.terminate();
    await withTimeout(done, 5_000, 'probe socket to close').catch(() => {});
  }
}

/** Connect with `token`, take the server's first answer, close. Returns that frame. */
export async function probeToken(port, token, opts) {
  const probe = new WireProbe(port, token, opts);
  try {
    return await probe.first();
  } finally {
    await probe.close();
  }
}

/** `Authorization: Bearer base64(token)` request against the REST API. Returns { status, body, headers }. */
export async function restWithBearer(baseUrl, token, path, { method = 'GET', body } = {}) {
  const res = await withTimeout(
    fetch(`${baseUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${Buffer.from(token).toString('base64')}`,
        accept: 'application/json',
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    }),
    10_000,
    `${method} ${path}`,
  );
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/**
 * Resolve once `windowMs` (plus a small margin) has passed since `since` (ms epoch). The server refreshes its
 * JWKS at most once per --supabase-jwks-refresh-ms; a test that needs the NEXT unknown kid to trigger a fetch
 * must first leave that documented window. This waits out a rate limit; it is not a wait for a result.
 */
export async function leaveRefreshWindow(since, windowMs) {
  const wait = since + windowMs + 30 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

/**
 * Run the realtime binary with `args` and wait (bounded) for it to exit on its own. Resolves with
 * { code, signal, output }; if it is still running after `ms` it is killed and the promise rejects.
 */
export async function runToExit(bin, args, ms = 10_000) {
  const { spawn } = await import('node:child_process');
  const child = spawn(bin, args, { env: { ...process.env, RUST_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c) => (output += c));
  child.stderr.on('data', (c) => (output += c));
  const exited = new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  try {
    const { code, signal } = await withTimeout(exited, ms, `realtime ${args.join(' ')} to exit`);
    return { code, signal, output };
  } catch (err) {
    child.kill('SIGKILL');
    await exited.catch(() => {});
    throw new Error(`${err.message}; output so far: ${output}`);
  }
}

/**
 * The end of a `describe` that runs a server against a JWKS server: what `resources()` returns
 * then (`pool`, `server`, `jwks`, any of them absent) is closed after the block; with `eachTest`,
 * the pool also after each test.
 */
export function stopAfter(resources, { eachTest = false } = {}) {
  if (eachTest) {
    afterEach(async () => {
      await resources().pool?.closeAll();
    });
  }
  after(async () => {
    const { pool, server, jwks } = resources();
    await pool?.closeAll();
    await server?.stop();
    await jwks?.stop();
  });
}
