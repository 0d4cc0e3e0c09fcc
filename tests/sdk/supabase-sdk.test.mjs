// Supabase sign-in through the real ably-js client (brief part B): the browser-style setup
// `authCallback: (_, cb) => cb(null, supabaseAccessToken)` connects as the user (clientId = sub) and hears
// what the backend publishes over REST with its API key; short-lived tokens are renewed in band (AUTH →
// authCallback → CONNECTED, same connection id) without losing a message; a renewal that narrows the
// capability fails the channels no longer permitted (40160); an already-expired token is refused with 40142
// and ably-js gets a fresh one; a revoked user is thrown out (40141) and cannot get back in with the old
// token, while a newer token works.
//
// Tokens are ES256, signed by a key the server fetches from a local JWKS server via --supabase-url (so the
// iss check is active); the service-role token in one test is HS256 with --supabase-jwt-secret.

import { randomUUID } from 'node:crypto';
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY, startServer } from './server.mjs';
import { ClientPool, Collector, FORMATS, WireLog, awaitConnected, awaitConnectionState, expectRejection, safeJson, stoppableAuthCallback, uniq, withTimeout } from './helpers.mjs';
import { ACTION, JwksServer, ecKey, nowSec, probeToken, restWithBearer, signJwt, signWith, stopAfter, userClaims } from './supabase-helpers.mjs';

const SECRET = 'test-jwt-secret-with-at-least-32-characters-long';
const PUBLISH_INTERVAL_MS = 75;

/** State changes as readable strings, for diagnostics. */
function recordStates(realtime) {
  const changes = [];
  realtime.connection.on((c) => changes.push(c));
  changes.describe = () =>
    safeJson(changes.map((c) => `${c.previous}->${c.current}${c.reason ? ` (${c.reason.code}/${c.reason.statusCode} ${c.reason.message})` : ''}`));
  return changes;
}

/** Resolve with the channel's next `failed` state change (bounded). */
function channelFailed(channel, ms, what) {
  return withTimeout(
    new Promise((resolve) => {
      if (channel.state === 'failed') {
        resolve({ current: 'failed', reason: channel.errorReason });
        return;
      }
      const listener = (change) => {
        if (change.current === 'failed') {
          channel.off(listener);
          resolve(change);
        }
      };
      channel.on(listener);
    }),
    ms,
    what,
  );
}

describe('Supabase sign-in with ably-js', () => {
  let jwks;
  let server;
  let pool;
  let key;
  let iss;

  /** A Supabase user access token for `sub`, signed with the JWKS key. */
  const userToken = (sub, extra = {}) => signWith(key, userClaims({ sub, iss, ...extra }));
  /** Same, expiring in 4.5–5.5 s. */
  const shortToken = (sub, extra = {}) => userToken(sub, { exp: Math.ceil((Date.now() + 4500) / 1000), ...extra });

  before(async () => {
    key = ecKey('project-key-1');
    jwks = await new JwksServer([key.jwk]).start();
    iss = jwks.issuer;
    server = await startServer({
      // The backend key may revoke Supabase users (keys revoke only their own tokens otherwise).
      args: ['--supabase-url', jwks.url, '--supabase-jwt-secret', SECRET, '--supabase-jwks-refresh-ms', '200', '--supabase-revoke-keys', 'app1.full'],
    });
    await jwks.waitForRequests(1);
  });
  stopAfter(() => ({ pool, server, jwks }), { eachTest: true });

  for (const format of FORMATS) {
    test(`${format.name}: connects as the user (clientId = sub) and receives session:<id> messages the backend publishes over REST`, async () => {
      pool = new ClientPool(server.port);
      const sub = randomUUID();
      let calls = 0;
      const realtime = pool.realtime({
        useBinaryProtocol: format.useBinaryProtocol,
        authCallback: (_, cb) => {
          calls += 1;
          cb(null, userToken(sub));
        },
      });
      await awaitConnected(realtime);
      assert.equal(realtime.connection.state, 'connected');
      assert.ok(realtime.connection.id, 'has a connection id');
      assert.equal(realtime.auth.clientId, sub, 'auth.clientId is the Supabase user id');
      assert.equal(calls, 1);

      const channelName = uniq(`session:${format.name}`);
      const got = await new Collector().subscribe(realtime.channels.get(channelName));
      const backend = pool.rest({ key: FULL_KEY });
      const count = 5;
      for (let i = 0; i < count; i += 1) {
        await withTimeout(backend.channels.get(channelName).publish('tick', { i, text: `message ${i}` }), 10_000, `REST publish ${i}`);
      }
      const msgs = await got.waitForCount(count, 10_000, `${count} backend messages`);
      assert.deepEqual(msgs.map((m) => m.data.i), [0, 1, 2, 3, 4]);
      assert.deepEqual(msgs.map((m) => m.data.text), [0, 1, 2, 3, 4].map((i) => `message ${i}`));

      // Its own user channel is allowed; someone else's is refused by the server with 40160.
      await withTimeout(realtime.channels.get(`user:${sub}`).attach(), 10_000, 'attach own user channel');
      const other = realtime.channels.get(`user:${randomUUID()}`);
      const err = await expectRejection(other.attach(), 10_000, 'attach another user channel');
      assert.equal(err.code, 40160, `other user's channel: ${err.code} ${err.message}`);
      assert.equal(realtime.connection.state, 'connected', 'a channel refusal leaves the connection up');
    });
  }

  test('json: a token expiring mid-stream (exp ~5 s) is renewed in band ≥ 2 times; every message once, in order, same connection', { timeout: 30_000 }, async () => {
    pool = new ClientPool(server.port);
    const sub = randomUUID();
    // After the measurement no more tokens are handed out (`stop()`).
    const authCallback = stoppableAuthCallback((_, cb) => cb(null, shortToken(sub)));
    const authCallTimes = authCallback.times;
    const wire = new WireLog();
    const realtime = pool.realtime({ authCallback, useBinaryProtocol: false, autoConnect: false, ...wire.options });
    const changes = recordStates(realtime);
    const idsAtConnected = [];
    realtime.connection.on((c) => {
      if (c.current === 'connected') idsAtConnected.push(realtime.connection.id);
    });
    realtime.connect();
    await awaitConnected(realtime);
    const connectionId = realtime.connection.id;
    assert.equal(realtime.auth.clientId, sub);

    const channelName = uniq('session:renew');
    const collector = await new Collector().subscribe(realtime.channels.get(channelName));
    const restChannel = pool.rest({ key: FULL_KEY }).channels.get(channelName);

    // Publish numbered messages until the token was renewed at least twice and the token handed out at the
    // first renewal has itself expired (≤ 5.5 s life): the connection then outlived two tokens' exp, which the
    // server enforces with DISCONNECTED 40142 unless the renewal took effect.
    const start = Date.now();
    let n = 0;
    for (;;) {
      const renewedTwice = authCallTimes.length >= 3 && Date.now() - authCallTimes[1] >= 5_500;
      if (renewedTwice || Date.now() - start > 16_000) break;
      await withTimeout(restChannel.publish('n', { n }), 5_000, `REST publish #${n}`);
      n += 1;
      await new Promise((r) => setTimeout(r, PUBLISH_INTERVAL_MS)); // pacing of the load, not a correctness wait
    }
    const published = n;
    const diag = () =>
      `authCallback at +ms ${safeJson(authCallTimes.map((t) => t - start))} (+${authCallback.refused} refused after the test); ` +
      `states ${changes.describe()}; AUTH frames ${wire.receivedAction('AUTH').length}; ` +
      `CONNECTED ${safeJson(wire.receivedAction('CONNECTED'))}; DISCONNECTED/ERROR ${safeJson([...wire.receivedAction('DISCONNECTED'), ...wire.receivedAction('ERROR')])}`;

    assert.ok(authCallTimes.length >= 3, `authCallback called ${authCallTimes.length} times (want ≥ 3: first token + 2 renewals); ${diag()}`);
    await collector.waitForCount(published, 10_000, `all ${published} numbered messages`).catch((err) => {
      throw new Error(`${err.message}; ${diag()}`);
    });
    // Let any straggler (a duplicate) arrive behind one more message before comparing.
    await withTimeout(restChannel.publish('end', { end: true }), 5_000, 'final publish');
    await collector.waitFor((m) => m.name === 'end', 10_000, 'the final message');
    assert.deepEqual(
      collector.messages.filter((m) => m.name === 'n').map((m) => m.data.n),
      Array.from({ length: published }, (_, i) => i),
      `every message exactly once, in order; ${diag()}`,
    );

    authCallback.stop();
    const isUpdate = (c) => c.previous === 'connected' && c.current === 'connected';
    const afterConnect = changes.slice(changes.findIndex((c) => c.current === 'connected') + 1);
    assert.deepEqual(afterConnect.filter((c) => !isUpdate(c)).map((c) => `${c.previous}->${c.current}`), [], `never left connected; ${diag()}`);
    assert.equal(realtime.connection.id, connectionId, 'same connection id');
    assert.ok(idsAtConnected.every((id) => id === connectionId), `every CONNECTED kept the id: ${safeJson(idsAtConnected)}`);
    assert.ok(wire.receivedAction('AUTH').length >= 2, `server asked for renewal (AUTH) ≥ 2 times; ${diag()}`);
    assert.ok(afterConnect.filter(isUpdate).length >= 2, `≥ 2 CONNECTED answers to renewed tokens; ${diag()}`);
    assert.equal(wire.receivedAction('DISCONNECTED').length, 0, `no DISCONNECTED; ${diag()}`);
    assert.equal(realtime.auth.clientId, sub, 'clientId unchanged');
  });

  test('a renewal that narrows the capability fails the channels no longer permitted (40160) and keeps the rest', { timeout: 30_000 }, async () => {
    pool = new ClientPool(server.port);
    const sub = randomUUID();
    let calls = 0;
    // First a short service_role token (HS256 with the project secret), then ordinary user tokens.
    const authCallback = (_, cb) => {
      calls += 1;
      if (calls === 1) {
        cb(null, signJwt(userClaims({ sub, iss, role: 'service_role', exp: Math.ceil((Date.now() + 4000) / 1000) }), { alg: 'HS256', secret: SECRET }));
      } else {
        cb(null, userToken(sub));
      }
    };
    const wire = new WireLog();
    const realtime = pool.realtime({ authCallback, useBinaryProtocol: false, ...wire.options });
    const changes = recordStates(realtime);
    await awaitConnected(realtime);
    const connectionId = realtime.connection.id;

    const adminChannel = realtime.channels.get(uniq('admin:ops'));
    const sessionName = uniq('session:narrow');
    const session = realtime.channels.get(sessionName);
    await withTimeout(adminChannel.attach(), 10_000, 'attach admin channel as service_role');
    const got = await new Collector().subscribe(session);
    await withTimeout(session.publish('as-service', {}), 10_000, 'service_role may publish on session:*');

    const failed = await channelFailed(adminChannel, 10_000, 'the admin channel to fail after the renewal').catch((err) => {
      throw new Error(`${err.message}; authCallback calls ${calls}; states ${changes.describe()}; frames ${safeJson(wire.received().slice(-10))}`);
    });
    assert.equal(failed.reason?.code, 40160, `admin channel failure reason: ${safeJson(failed.reason)}`);
    assert.ok(
      wire.receivedAction('ERROR').some((l) => l.includes(`channel=${adminChannel.name}`) && l.includes('code=40160')),
      `server sent a channel ERROR 40160 for ${adminChannel.name}: ${safeJson(wire.receivedAction('ERROR'))}`,
    );
    assert.equal(calls, 2, 'renewed once (AUTH → authCallback)');
    assert.equal(realtime.connection.state, 'connected');
    assert.equal(realtime.connection.id, connectionId, 'same connection');
    assert.equal(session.state, 'attached', 'the session channel stays attached');

    // The session channel still delivers; but the user token may no longer publish there.
    await withTimeout(pool.rest({ key: FULL_KEY }).channels.get(sessionName).publish('from-backend', {}), 10_000, 'REST publish');
    await got.waitFor((m) => m.name === 'from-backend', 10_000, 'backend message after the renewal');
    const nack = await expectRejection(session.publish('as-user', {}), 10_000, 'publish after narrowing');
    assert.equal(nack.code, 40160, `publish after narrowing: ${nack.code} ${nack.message}`);
    assert.deepEqual(
      changes.filter((c) => c.current !== 'connected' && c.current !== 'connecting').map((c) => c.current),
      [],
      `the connection never dropped: ${changes.describe()}`,
    );
  });

  test('an already-expired token is refused with ERROR 40142; ably-js calls authCallback again and connects', async () => {
    pool = new ClientPool(server.port);
    const sub = randomUUID();
    let calls = 0;
    const authCallback = (_, cb) => {
      calls += 1;
      cb(null, calls === 1 ? userToken(sub, { iat: nowSec() - 3600, exp: nowSec() - 60 }) : userToken(sub));
    };
    const wire = new WireLog();
    const realtime = pool.realtime({ authCallback, ...wire.options });
    const changes = recordStates(realtime);
    await awaitConnected(realtime, 10_000).catch((err) => {
      throw new Error(`${err.message}; states ${changes.describe()}; frames ${safeJson(wire.received())}`);
    });
    assert.equal(calls, 2, `authCallback: the expired token, then a fresh one; states ${changes.describe()}`);
    assert.equal(realtime.auth.clientId, sub);
    const errors = wire.receivedAction('ERROR');
    assert.equal(errors.length, 1, `one ERROR frame: ${safeJson(errors)}`);
    assert.match(errors[0], /code=40142/);
    assert.match(errors[0], /expired/);
    assert.ok(!changes.some((c) => c.current === 'failed'), `never failed: ${changes.describe()}`);
  });

  test('revokeTokens(clientId): the user is thrown out with 40141 at once, the old token cannot get back in, a newer one can', { timeout: 30_000 }, async () => {
    pool = new ClientPool(server.port);
    const sub = randomUUID();
    const bystanderSub = randomUUID();
    const oldToken = userToken(sub, { iat: nowSec() - 30 });
    let mode = 'old';
    let newToken;
    let calls = 0;
    const wire = new WireLog();
    const realtime = pool.realtime({
      ...wire.options,
      authCallback: (_, cb) => {
        calls += 1;
        cb(null, mode === 'old' ? oldToken : newToken);
      },
    });
    const changes = recordStates(realtime);
    await awaitConnected(realtime);
    const channelName = uniq('session:revoke');
    await new Collector().subscribe(realtime.channels.get(channelName));

    // Another user, and a second connection of the same user made with an API key, are not affected.
    const bystander = pool.realtime({ authCallback: (_, cb) => cb(null, userToken(bystanderSub)) });
    await awaitConnected(bystander);
    const bystanderChanges = recordStates(bystander);
    const keyClient = pool.realtime({ key: FULL_KEY, clientId: sub });
    await awaitConnected(keyClient);
    const keyClientChanges = recordStates(keyClient);

    // The REST API takes the old token before the revocation.
    const before = await restWithBearer(server.url, oldToken, `/channels/${encodeURIComponent(channelName)}/messages`, { method: 'POST', body: { name: 'x' } });
    assert.equal(before.body?.error?.code, 40160, `old token is valid before revocation (refused only for lack of publish): ${safeJson(before.body)}`);

    const calledBefore = calls;
    const kicked = awaitConnectionState(realtime, 'disconnected', 10_000);
    const backend = pool.rest({ key: FULL_KEY });
    const result = await withTimeout(backend.auth.revokeTokens([{ type: 'clientId', value: sub }]), 10_000, 'revokeTokens');
    assert.equal(result.successCount, 1, `revokeTokens result ${safeJson(result)}`);
    assert.equal(result.failureCount, 0);
    assert.equal(result.results?.length, 1);
    assert.equal(result.results[0].target, `clientId:${sub}`);
    const issuedBefore = result.results[0].issuedBefore;
    assert.equal(typeof issuedBefore, 'number', `issuedBefore: ${safeJson(result.results[0])}`);
    assert.equal(typeof result.results[0].appliesAt, 'number', `appliesAt: ${safeJson(result.results[0])}`);
    assert.ok(Math.abs(issuedBefore - Date.now()) < 60_000, 'issuedBefore is about now');

    const change = await kicked;
    assert.equal(change.reason?.code, 40141, `kicked with 40141: ${changes.describe()}`);

    // ably-js asks authCallback for a token (gets the old one again) and retries; the server refuses it.
    await withTimeout(
      new Promise((resolve) => {
        const check = () => {
          if (wire.receivedAction('ERROR').filter((l) => l.includes('code=40141')).length >= 2 && realtime.connection.state === 'disconnected') {
            realtime.connection.off(check);
            resolve();
          }
        };
        realtime.connection.on(check);
        check();
      }),
      10_000,
      'the reconnect with the old token to be refused (second ERROR 40141)',
    ).catch((err) => {
      throw new Error(`${err.message}; states ${changes.describe()}; ERRORs ${safeJson(wire.receivedAction('ERROR'))}`);
    });
    assert.ok(calls > calledBefore, 'ably-js asked authCallback for a new token after the kick');
    const kickIndex = changes.findIndex((c) => c.current === 'disconnected' && c.reason?.code === 40141);
    assert.ok(kickIndex >= 0, `kick recorded: ${changes.describe()}`);
    const connectedAfterKick = changes.slice(kickIndex).filter((c) => c.current === 'connected');
    assert.deepEqual(connectedAfterKick, [], `the old token never got back in: ${changes.describe()}`);
    const oldRest = await restWithBearer(server.url, oldToken, `/channels/${encodeURIComponent(channelName)}/messages`, { method: 'POST', body: { name: 'x' } });
    assert.equal(oldRest.body?.error?.code, 40141, `REST with the old token: ${safeJson(oldRest.body)}`);

    // Other users and key connections were untouched.
    assert.equal(bystander.connection.state, 'connected');
    assert.equal(bystanderChanges.length, 0, `bystander untouched: ${bystanderChanges.describe()}`);
    assert.equal(keyClient.connection.state, 'connected');
    assert.equal(keyClientChanges.length, 0, `API-key connection of the same clientId untouched: ${keyClientChanges.describe()}`);

    // A token issued after the revocation works (iat ≥ issuedBefore).
    newToken = userToken(sub, { iat: Math.ceil(issuedBefore / 1000) });
    mode = 'new';
    realtime.connect(); // retry now rather than after disconnectedRetryTimeout
    await awaitConnected(realtime, 10_000).catch((err) => {
      throw new Error(`${err.message}; states ${changes.describe()}; ERRORs ${safeJson(wire.receivedAction('ERROR'))}`);
    });
    assert.equal(realtime.auth.clientId, sub);
  });

  test('a revoked token is a 401 token error: ERROR 40141/401 on the socket, HTTP 401 on REST', async () => {
    const sub = randomUUID();
    const oldToken = userToken(sub, { iat: nowSec() - 30 });
    const res = await fetch(`${server.url}/keys/app1.full/revokeTokens`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(FULL_KEY).toString('base64')}`, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ targets: [`clientId:${sub}`] }),
    });
    const body = await res.json();
    assert.equal(res.status, 200, `revokeTokens: ${res.status} ${safeJson(body)}`);
    assert.equal(body.successCount, 1, safeJson(body));
    const frame = await probeToken(server.port, oldToken);
    assert.equal(frame.action, ACTION.ERROR, `socket answer: ${safeJson(frame)}`);
    assert.equal(frame.error?.code, 40141, safeJson(frame.error));
    const rest = await restWithBearer(server.url, oldToken, '/channels/session:x/messages', { method: 'POST', body: { name: 'x' } });
    assert.equal(rest.body?.error?.code, 40141, safeJson(rest.body));
    assert.equal(frame.error?.statusCode, 401, `statusCode in the ERROR frame: ${safeJson(frame.error)}`);
    assert.equal(rest.status, 401, `HTTP status on REST: ${rest.status} ${safeJson(rest.body)}`);
  });

  test('revokeTokens needs Basic auth with the key that names it', async () => {
    const service = signJwt(userClaims({ sub: 'svc', iss, role: 'service_role' }), { alg: 'HS256', secret: SECRET });
    const withToken = await restWithBearer(server.url, service, '/keys/app1.full/revokeTokens', { method: 'POST', body: { targets: ['clientId:someone'] } });
    assert.equal(withToken.body?.error?.code, 40162, `token-authenticated revokeTokens: ${withToken.status} ${safeJson(withToken.body)}`);
    const otherKey = await fetch(`${server.url}/keys/app1.full/revokeTokens`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('app1.limited:secretlim').toString('base64')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ targets: ['clientId:someone'] }),
    });
    const otherBody = await otherKey.json();
    // As Ably: 40133, only the key that issued the tokens may revoke them.
    assert.equal(otherBody?.error?.code, 40133, `revokeTokens with another key: ${otherKey.status} ${safeJson(otherBody)}`);
    assert.equal(otherKey.status, 401);
  });
});
