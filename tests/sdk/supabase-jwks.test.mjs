// Supabase signing keys (JWKS) over time (brief part A): rotation, rate-limited refresh on an unknown kid,
// last good keys kept when the JWKS server fails, and fail-closed (DISCONNECTED 50003/503, a retry, never
// `failed`) when no key set was ever fetched. The JWKS server is local; --supabase-url points at it, so
// the server fetches `{url}/auth/v1/.well-known/jwks.json` and requires iss = `{url}/auth/v1`.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { freePort, startServer } from './server.mjs';
import { ClientPool, WireLog, awaitConnected, awaitConnectionState, safeJson, withTimeout } from './helpers.mjs';
import { ACTION, JwksServer, actionName, ecKey, leaveRefreshWindow, probeToken, restWithBearer, rsaKey, signJwt, signWith, stopAfter, userClaims } from './supabase-helpers.mjs';

const REFRESH_MS = 200;
const SECRET = 'test-jwt-secret-with-at-least-32-characters-long';

/** A server whose `--supabase-url` points at a free port nothing listens on yet, and a pool. */
async function startBeforeTheJwks() {
  const jwksPort = await freePort();
  const server = await startServer({
    args: [
      '--supabase-url', `http://127.0.0.1:${jwksPort}`,
      '--supabase-jwt-secret', SECRET,
      '--supabase-jwks-refresh-ms', String(REFRESH_MS),
    ],
  });
  return { jwksPort, server, pool: new ClientPool(server.port) };
}

/**
 * The hooks of a block whose server starts before its JWKS: `startBeforeTheJwks` before the block, its
 * `pool` and `server` and the `jwks` a test starts stopped after (see `stopAfter`). Returns that state.
 */
function useServerBeforeTheJwks(stopOptions) {
  const state = {};
  before(async () => {
    Object.assign(state, await startBeforeTheJwks());
  });
  stopAfter(() => state, stopOptions);
  return state;
}

function assertFrame(frame, expected, what) {
  const shown = `${actionName(frame.action)} ${safeJson(frame.error ?? frame.connectionDetails)}`;
  if (expected.sub) {
    assert.equal(frame.action, ACTION.CONNECTED, `${what}: expected CONNECTED, got ${shown}`);
    assert.equal(frame.connectionDetails?.clientId, expected.sub, `${what}: clientId`);
    return;
  }
  assert.equal(frame.action, expected.action ?? ACTION.ERROR, `${what}: expected ${actionName(expected.action ?? ACTION.ERROR)}, got ${shown}`);
  assert.equal(frame.error?.code, expected.code, `${what}: code, got ${shown}`);
  // statusCode only where the case is about it (50003/503); 4014x statusCodes are covered in supabase-verify.
  if (expected.statusCode !== undefined) assert.equal(frame.error?.statusCode, expected.statusCode, `${what}: statusCode, got ${shown}`);
}

describe('JWKS key rotation', () => {
  let jwks;
  let server;
  const keyA = ecKey('kid-A');
  const keyB = rsaKey('kid-B');

  before(async () => {
    jwks = await new JwksServer([keyA.jwk]).start();
    server = await startServer({ args: ['--supabase-url', jwks.url, '--supabase-jwks-refresh-ms', String(REFRESH_MS)] });
    await jwks.waitForRequests(1); // the fetch at start
  });
  stopAfter(() => ({ server, jwks }));

  test('A accepted; after the JWKS switches to B only, B is accepted (one refresh) and A is refused 40143', async () => {
    const iss = jwks.issuer;
    assertFrame(await probeToken(server.port, signWith(keyA, userClaims({ sub: 'before-rotation', iss }))), { sub: 'before-rotation' }, 'kid A before rotation');
    assert.equal(jwks.requests, 1, 'a cached kid costs no JWKS fetch');

    jwks.setKeys([keyB.jwk]);
    await leaveRefreshWindow(jwks.lastRequestAt, REFRESH_MS);
    const tokenB = signWith(keyB, userClaims({ sub: 'after-rotation', iss }));
    assertFrame(await probeToken(server.port, tokenB), { sub: 'after-rotation' }, 'kid B after rotation');
    assert.equal(jwks.requests, 2, 'the unknown kid B triggered exactly one refresh');

    // The refreshed set no longer has A.
    assertFrame(await probeToken(server.port, signWith(keyA, userClaims({ sub: 'stale-key', iss }))), { code: 40143 }, 'kid A after rotation');
    // B stays accepted from the cache.
    assertFrame(await probeToken(server.port, tokenB), { sub: 'after-rotation' }, 'kid B again');
  });

  test('unknown kids trigger at most one JWKS fetch per --supabase-jwks-refresh-ms, and concurrent ones share it', async () => {
    const iss = jwks.issuer;
    await leaveRefreshWindow(jwks.lastRequestAt, REFRESH_MS);
    const before = jwks.requests;
    // A burst of tokens with kids nobody knows, all at once and then again: one fetch at most.
    const burst = () =>
      Promise.all(Array.from({ length: 6 }, (_, i) => probeToken(server.port, signWith(ecKey(`kid-unknown-${i}`), userClaims({ sub: `u${i}`, iss })))));
    const t0 = Date.now();
    const frames = [...(await burst()), ...(await burst())];
    const elapsed = Date.now() - t0;
    for (const [i, f] of frames.entries()) assertFrame(f, { code: 40143 }, `unknown kid #${i}`);
    // One fetch per started refresh window at most (normally the burst fits in one window: exactly one fetch).
    const allowed = 1 + Math.floor(elapsed / REFRESH_MS);
    const fetched = jwks.requests - before;
    assert.ok(fetched >= 1 && fetched <= allowed, `JWKS fetches during 12 unknown kids in ${elapsed} ms: ${fetched} (allowed 1..${allowed})`);

    // A key published now becomes usable once the window has passed (next unknown kid refreshes again).
    const keyC = ecKey('kid-C');
    jwks.setKeys([keyB.jwk, keyC.jwk]);
    await leaveRefreshWindow(jwks.lastRequestAt, REFRESH_MS);
    assertFrame(await probeToken(server.port, signWith(keyC, userClaims({ sub: 'new-key', iss }))), { sub: 'new-key' }, 'kid C after the window');
  });
});

describe('JWKS server failing after the keys were fetched: last good keys kept', () => {
  let jwks;
  let server;
  const keyA = ecKey('good-A');

  before(async () => {
    jwks = await new JwksServer([keyA.jwk]).start();
    server = await startServer({ args: ['--supabase-url', jwks.url, '--supabase-jwks-refresh-ms', String(REFRESH_MS)] });
    await jwks.waitForRequests(1);
  });
  stopAfter(() => ({ server, jwks }));

  test('HTTP 500, then a non-JSON body, then the server gone: the known kid is still accepted; unknown kids get 40143, not 50003', async () => {
    const iss = jwks.issuer;
    const known = () => probeToken(server.port, signWith(keyA, userClaims({ sub: 'still-here', iss })));
    const unknown = () => probeToken(server.port, signWith(ecKey('never-published'), userClaims({ sub: 'x', iss })));

    for (const failure of ['http500', 'garbage']) {
      jwks.setFailure(failure);
      await leaveRefreshWindow(jwks.lastRequestAt, REFRESH_MS);
      const before = jwks.requests;
      assertFrame(await unknown(), { code: 40143 }, `unknown kid while the JWKS answers ${failure}`);
      assert.equal(jwks.requests, before + 1, `the unknown kid made the server try a refresh (${failure})`);
      assertFrame(await known(), { sub: 'still-here' }, `known kid after a failed refresh (${failure})`);
    }

    await jwks.stop(); // connections refused from now on
    const stoppedAt = Date.now();
    await leaveRefreshWindow(Math.max(stoppedAt, jwks.lastRequestAt), REFRESH_MS);
    assertFrame(await unknown(), { code: 40143 }, 'unknown kid with the JWKS server down');
    assertFrame(await known(), { sub: 'still-here' }, 'known kid with the JWKS server down');
  });
});

describe('JWKS unreachable from the start: fail closed, as a retry', () => {
  const state = useServerBeforeTheJwks({ eachTest: true });
  const key = ecKey('late-key');

  const iss = () => `http://127.0.0.1:${state.jwksPort}/auth/v1`;

  test('raw socket: an ES256 token gets DISCONNECTED 50003/503 (not ERROR), REST 503; HS256 with the secret still works', async () => {
    const frame = await probeToken(state.server.port, signWith(key, userClaims({ sub: 'early-bird', iss: iss() })));
    assertFrame(frame, { action: ACTION.DISCONNECTED, code: 50003, statusCode: 503 }, 'asymmetric token, no keys ever fetched');
    assert.match(frame.error.message, /unavailable/i);
    const hs = signJwt(userClaims({ sub: 'hs-user', iss: iss() }), { alg: 'HS256', secret: SECRET });
    assertFrame(await probeToken(state.server.port, hs), { sub: 'hs-user' }, 'HS256 does not need the JWKS');
    // REST says the same with HTTP 503 (ably-js REST treats 5xx as retriable).
    const rest = await restWithBearer(state.server.url, signWith(key, userClaims({ sub: 'early-bird', iss: iss(), role: 'service_role' })), '/channels/session:x/messages', {
      method: 'POST',
      body: { name: 'x' },
    });
    assert.equal(rest.status, 503, `REST: ${rest.status} ${safeJson(rest.body)}`);
    assert.equal(rest.body?.error?.code, 50003);
  });

  test('ably-js goes `disconnected` (50003), never `failed`, and connects once the JWKS server comes up', { timeout: 30_000 }, async () => {
    const wire = new WireLog();
    let calls = 0;
    const realtime = state.pool.realtime({
      ...wire.options,
      autoConnect: false,
      disconnectedRetryTimeout: 500,
      authCallback: (_, cb) => {
        calls += 1;
        cb(null, signWith(key, userClaims({ sub: 'patient-user', iss: iss() })));
      },
    });
    const states = [];
    realtime.connection.on((c) => states.push(`${c.current}${c.reason ? `(${c.reason.code}/${c.reason.statusCode})` : ''}`));
    realtime.connect();

    const change = await awaitConnectionState(realtime, 'disconnected', 10_000);
    assert.equal(change.reason?.code, 50003, `disconnect reason: ${safeJson(change.reason)}`);
    assert.equal(change.reason?.statusCode, 503);
    assert.ok(
      wire.receivedAction('DISCONNECTED').some((l) => l.includes('code=50003')),
      `the server sent DISCONNECTED 50003; received: ${safeJson(wire.receivedAction('DISCONNECTED'))} ${safeJson(wire.receivedAction('ERROR'))}`,
    );
    assert.equal(wire.receivedAction('ERROR').length, 0, `no ERROR frame: ${safeJson(wire.receivedAction('ERROR'))}`);

    // The keys become available: the client's own retry gets in.
    state.jwks = await new JwksServer([key.jwk]).start(state.jwksPort);
    await awaitConnected(realtime, 15_000).catch((err) => {
      throw new Error(`${err.message}; states ${safeJson(states)}; JWKS requests ${state.jwks.requests}`);
    });
    assert.equal(realtime.auth.clientId, 'patient-user');
    assert.ok(!states.some((s) => s.startsWith('failed')), `never failed: ${safeJson(states)}`);
    assert.ok(state.jwks.requests >= 1, 'the server fetched the keys once they were there');
    assert.ok(calls >= 1);
  });
});

describe('JWKS unreachable during an in-band renewal: a retry, not a failure', () => {
  const state = useServerBeforeTheJwks();
  const key = ecKey('migrated-key');

  test('HS256 session renewed with an ES256 token while no keys could be fetched: DISCONNECTED 50003 (ably-js disconnected, not failed), then back once the JWKS is up', { timeout: 30_000 }, async () => {
    const iss = `http://127.0.0.1:${state.jwksPort}/auth/v1`;
    let calls = 0;
    const wire = new WireLog();
    // The project moves from the legacy secret to signing keys: the first token is HS256 (short-lived),
    // the renewed ones ES256, at a moment the server cannot reach the JWKS.
    const realtime = state.pool.realtime({
      ...wire.options,
      disconnectedRetryTimeout: 500,
      authCallback: (_, cb) => {
        calls += 1;
        cb(
          null,
          calls === 1
            ? signJwt(userClaims({ sub: 'migrating-user', iss, exp: Math.ceil((Date.now() + 3000) / 1000) }), { alg: 'HS256', secret: SECRET })
            : signWith(key, userClaims({ sub: 'migrating-user', iss })),
        );
      },
    });
    const states = [];
    realtime.connection.on((c) => states.push(`${c.current}${c.reason ? `(${c.reason.code}/${c.reason.statusCode})` : ''}`));
    await awaitConnected(realtime);

    // The renewal (AUTH → authCallback → ES256 token) cannot be verified: the client must end up retrying.
    const outcome = await withTimeout(
      new Promise((resolve) => {
        const listener = (c) => {
          if (c.current === 'disconnected' || c.current === 'failed') {
            realtime.connection.off(listener);
            resolve(c);
          }
        };
        realtime.connection.on(listener);
      }),
      10_000,
      'the renewal to be refused',
    );
    const frames = () => safeJson(wire.received().filter((l) => !l.includes('action=HEARTBEAT')));
    assert.equal(outcome.current, 'disconnected', `state after the unverifiable renewal: ${safeJson(states)}; frames ${frames()}`);
    assert.equal(outcome.reason?.code, 50003, `reason: ${safeJson(outcome.reason)}`);
    assert.equal(
      wire.receivedAction('ERROR').filter((l) => !l.includes('channel=')).length,
      0,
      `no connection-level ERROR frame (ably-js would fail the connection): ${frames()}`,
    );

    state.jwks = await new JwksServer([key.jwk]).start(state.jwksPort);
    await awaitConnected(realtime, 15_000).catch((err) => {
      throw new Error(`${err.message}; states ${safeJson(states)}; frames ${frames()}`);
    });
    assert.equal(realtime.auth.clientId, 'migrating-user');
    assert.ok(!states.some((s) => s.startsWith('failed')), `never failed: ${safeJson(states)}`);
  });
});
