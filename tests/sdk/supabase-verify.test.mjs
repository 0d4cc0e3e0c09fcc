// Supabase access tokens, verification matrix (brief part A). Every token is made here with node:crypto and
// presented to the real binary over a raw WebSocket (`access_token=`, as ably-js sends it), so each case sees
// the exact frame the server answers with: CONNECTED (clientId = sub) or ERROR/DISCONNECTED with the code.
//
// Server "both": --supabase-jwt-secret + --supabase-url pointing at a local JWKS server (EC P-256 key, RSA key
// and an `oct` key that must be ignored), so the iss check is on. Server "jwks-only": --supabase-jwks-url only
// (no secret, no iss check). REST cases use `Authorization: Bearer base64(jwt)` like the SDKs.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Ably from 'ably';

import { clientOptions, startServer } from './server.mjs';
import { ClientPool, Collector, uniq, withTimeout } from './helpers.mjs';
import { ACTION, JwksServer, WireProbe, actionName, ecKey, nowSec, probeToken, restWithBearer, rsaKey, signJwt, signWith, stopAfter, userClaims } from './supabase-helpers.mjs';

const SECRET = 'test-jwt-secret-with-at-least-32-characters-long';
const OCT_SECRET = 'an-oct-key-published-in-the-jwks-must-be-ignored';

/** Assert the server's answer is a CONNECTED for `sub`. */
function assertConnected(frame, sub, what) {
  assert.equal(
    frame.action,
    ACTION.CONNECTED,
    `${what}: expected CONNECTED, got ${actionName(frame.action)} ${JSON.stringify(frame.error ?? frame)}`,
  );
  assert.equal(frame.connectionDetails?.clientId, sub, `${what}: clientId is the token's sub`);
  assert.ok(frame.connectionId, `${what}: has a connectionId`);
}

/** Assert the server's answer is a connection-level `action` (ERROR by default) with `code`/`statusCode`/message. */
function assertRefused(frame, { action = ACTION.ERROR, code, statusCode = 401, message }, what) {
  assert.equal(
    frame.action,
    action,
    `${what}: expected ${actionName(action)}, got ${actionName(frame.action)} ${JSON.stringify(frame.error ?? frame)}`,
  );
  assert.equal(frame.channel, undefined, `${what}: connection-level, not a channel error`);
  assert.equal(frame.error?.code, code, `${what}: code; error ${JSON.stringify(frame.error)}`);
  assert.equal(frame.error?.statusCode, statusCode, `${what}: statusCode; error ${JSON.stringify(frame.error)}`);
  if (message) assert.match(frame.error?.message ?? '', message, `${what}: message`);
}

describe('Supabase tokens: HS256 secret + JWKS under --supabase-url (iss checked)', () => {
  const ec = ecKey('ec-1');
  const rsa = rsaKey('rsa-1');
  let jwks;
  let server;
  let pool;
  let iss;

  before(async () => {
    const oct = { kty: 'oct', k: Buffer.from(OCT_SECRET).toString('base64url'), kid: 'oct-1', alg: 'HS256', use: 'sig' };
    jwks = await new JwksServer([ec.jwk, rsa.jwk, oct]).start();
    iss = jwks.issuer;
    server = await startServer({
      args: ['--supabase-jwt-secret', SECRET, '--supabase-url', jwks.url, '--supabase-jwks-refresh-ms', '200'],
    });
    pool = new ClientPool(server.port);
    await jwks.waitForRequests(1); // the background fetch at start reached the JWKS server
  });
  stopAfter(() => ({ pool, server, jwks }));

  const hs = (claims) => signJwt(claims, { alg: 'HS256', secret: SECRET });

  // --- accepted ---------------------------------------------------------------------------------------
  test('HS256 signed with the project secret: CONNECTED, clientId = sub', async () => {
    assertConnected(await probeToken(server.port, hs(userClaims({ sub: 'hs-user', iss }))), 'hs-user', 'HS256');
  });

  test('ES256 signed by the JWKS EC P-256 key: CONNECTED, clientId = sub', async () => {
    assertConnected(await probeToken(server.port, signWith(ec, userClaims({ sub: 'es-user', iss }))), 'es-user', 'ES256');
  });

  test('RS256 signed by the JWKS RSA key: CONNECTED, clientId = sub', async () => {
    assertConnected(await probeToken(server.port, signWith(rsa, userClaims({ sub: 'rs-user', iss }))), 'rs-user', 'RS256');
  });

  test('a clientId query param equal to sub is accepted', async () => {
    const frame = await probeToken(server.port, signWith(ec, userClaims({ sub: 'same-user', iss })), { clientId: 'same-user' });
    assertConnected(frame, 'same-user', 'clientId=sub');
  });

  // --- time claims --------------------------------------------------------------------------------------
  test('expired (exp 60 s ago, beyond the 10 s leeway): ERROR 40142 "expired"', async () => {
    const t = signWith(ec, userClaims({ sub: 'late', iss, iat: nowSec() - 3600, exp: nowSec() - 60 }));
    assertRefused(await probeToken(server.port, t), { code: 40142, message: /expired/i }, 'expired');
  });

  test('exp 3 s ago is inside the 10 s leeway: accepted', async () => {
    const t = signWith(ec, userClaims({ sub: 'skewed', iss, iat: nowSec() - 3600, exp: nowSec() - 3 }));
    assertConnected(await probeToken(server.port, t), 'skewed', 'exp within leeway');
  });

  test('not yet valid (nbf 60 s ahead): ERROR 40140 naming nbf', async () => {
    const t = signWith(ec, userClaims({ sub: 'early', iss, nbf: nowSec() + 60 }));
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /nbf/ }, 'nbf');
  });

  test('a token without exp is refused', async () => {
    const t = signWith(ec, userClaims({ sub: 'forever', iss, exp: undefined }));
    const frame = await probeToken(server.port, t);
    assert.equal(frame.action, ACTION.ERROR, `expected ERROR, got ${JSON.stringify(frame)}`);
    assert.ok(frame.error.code >= 40140 && frame.error.code < 40150, `token error code, got ${JSON.stringify(frame.error)}`);
  });

  // --- audience and issuer ----------------------------------------------------------------------------
  test('nbf 5 s ahead is inside the 10 s leeway: accepted', async () => {
    const t = signWith(ec, userClaims({ sub: 'almost', iss, nbf: nowSec() + 5 }));
    assertConnected(await probeToken(server.port, t), 'almost', 'nbf within leeway');
  });

  test('aud as an array containing "authenticated": accepted', async () => {
    const t = signWith(ec, userClaims({ sub: 'multi-aud', iss, aud: ['some-other-api', 'authenticated'] }));
    assertConnected(await probeToken(server.port, t), 'multi-aud', 'aud array');
  });

  test('a token without sub (e.g. a project API key JWT) is refused with a token error', async () => {
    const t = hs(userClaims({ sub: undefined, iss, role: 'service_role' }));
    const frame = await probeToken(server.port, t);
    assert.equal(frame.action, ACTION.ERROR, `expected ERROR, got ${JSON.stringify(frame)}`);
    assert.ok(frame.error.code >= 40140 && frame.error.code < 40150, `token error code, got ${JSON.stringify(frame.error)}`);
  });

  test('wrong aud: ERROR 40140 naming "audience (aud)"', async () => {
    const t = signWith(ec, userClaims({ sub: 'aud-user', iss, aud: 'some-other-api' }));
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /audience \(aud\)/ }, 'wrong aud');
  });

  test('no aud claim at all: ERROR 40140 (aud is required, default "authenticated")', async () => {
    const t = signWith(ec, userClaims({ sub: 'no-aud', iss, aud: undefined }));
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /audience \(aud\)/ }, 'missing aud');
  });

  test('wrong iss: ERROR 40140 naming "issuer (iss)"', async () => {
    const t = signWith(ec, userClaims({ sub: 'iss-user', iss: 'https://evil.supabase.co/auth/v1' }));
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /issuer \(iss\)/ }, 'wrong iss');
  });

  test('iss of the project URL without /auth/v1 is wrong too', async () => {
    const t = signWith(ec, userClaims({ sub: 'iss-user', iss: jwks.url }));
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /issuer \(iss\)/ }, 'iss without /auth/v1');
  });

  test('no iss claim at all while --supabase-url is set: ERROR 40140 (iss is required)', async () => {
    const t = signWith(ec, userClaims({ sub: 'no-iss' })); // userClaims adds no iss unless given
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /issuer \(iss\)/ }, 'missing iss');
  });

  test('HS256 tokens are held to the same iss check', async () => {
    const t = hs(userClaims({ sub: 'hs-iss', iss: 'https://evil.supabase.co/auth/v1' }));
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /issuer \(iss\)/ }, 'HS256 wrong iss');
  });

  // --- signatures and algorithms ------------------------------------------------------------------------
  test('alg none (empty signature): ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'none-user', iss, role: 'service_role' }), { alg: 'none', kid: 'ec-1' });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'alg none');
  });

  test('alg none without kid: ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'none-user', iss, role: 'service_role' }), { alg: 'none' });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'alg none, no kid');
  });

  test('HS256 "signed" with the RSA public key PEM as HMAC secret (secret also configured): ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'confused', iss, role: 'service_role' }), { alg: 'HS256', secret: rsa.publicPem, kid: 'rsa-1' });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'HS/RS confusion');
  });

  test('HS256 signed with an `oct` key listed in the JWKS (kid of that key): ERROR 40144 (oct keys are ignored)', async () => {
    const t = signJwt(userClaims({ sub: 'oct-user', iss }), { alg: 'HS256', secret: OCT_SECRET, kid: 'oct-1' });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'oct key');
  });

  test('ES256 token signed by another key but claiming the JWKS kid: ERROR 40144 (bad signature)', async () => {
    const impostor = ecKey('ec-1');
    const t = signWith(impostor, userClaims({ sub: 'forger', iss }));
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'bad ES256 signature');
  });

  test('tampered payload (sub changed after signing): ERROR 40144', async () => {
    const t = signWith(ec, userClaims({ sub: 'honest', iss }));
    const [h, , s] = t.split('.');
    const forged = Buffer.from(JSON.stringify(userClaims({ sub: 'victim', iss, role: 'service_role' }))).toString('base64url');
    assertRefused(await probeToken(server.port, `${h}.${forged}.${s}`), { code: 40144 }, 'tampered payload');
  });

  test('HS256 signed with a wrong secret: ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'wrong-secret', iss }), { alg: 'HS256', secret: `${SECRET}x` });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'wrong HS256 secret');
  });

  test('ES256 header with the RSA key\'s kid (alg does not match the key): ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'mixup', iss }), { alg: 'ES256', privateKey: ec.privateKey, kid: 'rsa-1' });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'ES256 with RSA kid');
  });

  test('RS256 header with the EC key\'s kid (alg does not match the key): ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'mixup', iss }), { alg: 'RS256', privateKey: rsa.privateKey, kid: 'ec-1' });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'RS256 with EC kid');
  });

  test('ES256 with a kid the JWKS does not have: ERROR 40143', async () => {
    const t = signWith(ecKey('kid-nobody-knows'), userClaims({ sub: 'stranger', iss }));
    assertRefused(await probeToken(server.port, t), { code: 40143 }, 'unknown kid');
  });

  // --- policy -------------------------------------------------------------------------------------------
  test('role anon (policy grants nothing): ERROR 40160', async () => {
    const t = signWith(ec, userClaims({ sub: 'anon-user', iss, role: 'anon', is_anonymous: true }));
    assertRefused(await probeToken(server.port, t), { code: 40160 }, 'anon');
  });

  test('default policy: user:{sub} and session:* attach, another user\'s user:other is refused with channel ERROR 40160', async () => {
    const probe = new WireProbe(server.port, signWith(ec, userClaims({ sub: 'alice', iss })));
    try {
      assertConnected(await probe.first(), 'alice', 'alice');
      const own = await probe.attach('user:alice');
      assert.equal(own.action, ACTION.ATTACHED, `attach user:alice: ${probe.describe()}`);
      const session = await probe.attach(uniq('session:s'));
      assert.equal(session.action, ACTION.ATTACHED, `attach session:*: ${probe.describe()}`);
      const other = await probe.attach('user:bob');
      assert.equal(other.action, ACTION.ERROR, `attach user:bob must be refused: ${probe.describe()}`);
      assert.equal(other.error?.code, 40160, `user:bob refusal code: ${JSON.stringify(other.error)}`);
      assert.equal(other.error?.statusCode, 401);
      // A channel error leaves the connection up: another permitted attach still works.
      const call = await probe.attach(uniq('call:c'));
      assert.equal(call.action, ACTION.ATTACHED, `connection still usable after the channel error: ${probe.describe()}`);
    } finally {
      await probe.close();
    }
  });

  // --- in-band AUTH on a raw socket ----------------------------------------------------------------------
  test('AUTH with a fresh token of the same user: CONNECTED with the same connectionId; with another user\'s token: ERROR 40102', async () => {
    const probe = new WireProbe(server.port, signWith(ec, userClaims({ sub: 'carol', iss })));
    try {
      const first = await probe.first();
      assertConnected(first, 'carol', 'carol');
      probe.send({ action: ACTION.AUTH, auth: { accessToken: signWith(rsa, userClaims({ sub: 'carol', iss })) } });
      const renewed = await probe.next((f) => [ACTION.CONNECTED, ACTION.ERROR, ACTION.DISCONNECTED].includes(f.action), 5_000, 'answer to AUTH');
      assertConnected(renewed, 'carol', 'renewed carol');
      assert.equal(renewed.connectionId, first.connectionId, 'same connectionId after the renewal');
      assert.equal(renewed.connectionDetails.connectionKey, first.connectionDetails.connectionKey, 'same connectionKey');

      probe.send({ action: ACTION.AUTH, auth: { accessToken: signWith(ec, userClaims({ sub: 'mallory', iss, role: 'service_role' })) } });
      const refused = await probe.next((f) => [ACTION.CONNECTED, ACTION.ERROR, ACTION.DISCONNECTED].includes(f.action), 5_000, 'answer to AUTH as another user');
      assertRefused(refused, { code: 40102 }, 'AUTH switching identity');
    } finally {
      await probe.close();
    }
  });

  // --- REST with Authorization: Bearer base64(jwt) ------------------------------------------------------
  test('REST publish with a service_role token is accepted and delivered; an authenticated token gets 401/40160', async () => {
    const channelName = uniq('session:rest');
    // A signed-in user listens on the session channel through ably-js.
    const listener = pool.realtime({ authCallback: (_, cb) => cb(null, signWith(ec, userClaims({ sub: 'listener', iss }))) });
    const got = await new Collector().subscribe(listener.channels.get(channelName));

    const service = hs(userClaims({ sub: 'backend', iss, role: 'service_role' }));
    const ok = await restWithBearer(server.url, service, `/channels/${encodeURIComponent(channelName)}/messages`, {
      method: 'POST',
      body: { name: 'from-service', data: 'hello' },
    });
    assert.equal(ok.status, 201, `service_role publish: HTTP ${ok.status} ${JSON.stringify(ok.body)}`);
    const msg = await got.waitFor((m) => m.name === 'from-service', 5_000, 'the service_role REST message');
    assert.equal(msg.data, 'hello');
    assert.equal(msg.clientId, 'backend', 'REST message carries the token sub as clientId');

    // The same through ably-js REST with the JWT as its token (it sends Bearer base64(token) itself).
    const sdkRest = new Ably.Rest(clientOptions(server.port, { token: service }));
    await withTimeout(sdkRest.channels.get(channelName).publish('from-sdk', { n: 42 }), 10_000, 'ably-js REST publish with the service_role JWT');
    await got.waitFor((m) => m.name === 'from-sdk' && m.data?.n === 42, 5_000, 'the ably-js REST message');

    // A signed-in user may not publish (publish is not in the default policy).
    const user = signWith(ec, userClaims({ sub: 'user-pub', iss }));
    const denied = await restWithBearer(server.url, user, `/channels/${encodeURIComponent(channelName)}/messages`, {
      method: 'POST',
      body: { name: 'from-user', data: 'nope' },
    });
    assert.equal(denied.status, 401, `authenticated publish: HTTP ${denied.status} ${JSON.stringify(denied.body)}`);
    assert.equal(denied.body?.error?.code, 40160, `body ${JSON.stringify(denied.body)}`);
    assert.equal(denied.headers.get('x-ably-errorcode'), '40160');

    // And the server-side verdicts hold for REST too: an expired token and a bad signature.
    const expired = await restWithBearer(server.url, hs(userClaims({ sub: 'backend', iss, role: 'service_role', iat: nowSec() - 7200, exp: nowSec() - 3600 })), '/channels/x/messages', {
      method: 'POST',
      body: { name: 'x' },
    });
    assert.equal(expired.status, 401, `expired REST: ${JSON.stringify(expired.body)}`);
    assert.equal(expired.body?.error?.code, 40142);
    const forged = await restWithBearer(server.url, signJwt(userClaims({ sub: 'backend', iss, role: 'service_role' }), { alg: 'HS256', secret: rsa.publicPem, kid: 'rsa-1' }), '/channels/x/messages', {
      method: 'POST',
      body: { name: 'x' },
    });
    assert.equal(forged.status, 401, `HS/RS confusion on REST: ${JSON.stringify(forged.body)}`);
    assert.equal(forged.body?.error?.code, 40144);

    // The listener never saw the refused publish: a later accepted one arrives, and nothing else did.
    const marker = await restWithBearer(server.url, service, `/channels/${encodeURIComponent(channelName)}/messages`, {
      method: 'POST',
      body: { name: 'marker' },
    });
    assert.equal(marker.status, 201);
    await got.waitFor((m) => m.name === 'marker', 5_000, 'the marker message');
    assert.deepEqual(got.messages.map((m) => m.name), ['from-service', 'from-sdk', 'marker'], `delivered: ${got.describe()}`);
  });
});

describe('Supabase tokens: --supabase-jwks-url only (no secret, no iss check)', () => {
  const ec = ecKey('only-ec');
  const rsa = rsaKey('only-rsa');
  let jwks;
  let server;

  before(async () => {
    jwks = await new JwksServer([ec.jwk, rsa.jwk]).start();
    server = await startServer({ args: ['--supabase-jwks-url', `${jwks.url}/jwks.json`, '--supabase-jwks-refresh-ms', '200'] });
    await jwks.waitForRequests(1);
  });
  stopAfter(() => ({ server, jwks }));

  test('ES256 and RS256 accepted whatever their iss (none is configured)', async () => {
    assertConnected(await probeToken(server.port, signWith(ec, userClaims({ sub: 'e1', iss: 'https://anything.example/auth/v1' }))), 'e1', 'ES256');
    assertConnected(await probeToken(server.port, signWith(rsa, userClaims({ sub: 'r1' }))), 'r1', 'RS256 without iss');
  });

  test('HS256 "signed" with the RSA public key PEM as HMAC secret: ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'confused', role: 'service_role' }), { alg: 'HS256', secret: rsa.publicPem, kid: 'only-rsa' });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'HS/RS confusion, JWKS only');
  });

  test('HS256 with the RSA PEM as secret and no kid: ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'confused', role: 'service_role' }), { alg: 'HS256', secret: rsa.publicPem });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'HS/RS confusion without kid');
  });

  test('any HS256 token is refused without --supabase-jwt-secret: ERROR 40144', async () => {
    const t = signJwt(userClaims({ sub: 'hs' }), { alg: 'HS256', secret: SECRET });
    assertRefused(await probeToken(server.port, t), { code: 40144 }, 'HS256 without secret');
  });

  test('wrong aud is still checked: ERROR 40140', async () => {
    const t = signWith(ec, userClaims({ sub: 'x', aud: 'nope' }));
    assertRefused(await probeToken(server.port, t), { code: 40140, message: /audience \(aud\)/ }, 'wrong aud');
  });

  test('--supabase-audience replaces the accepted audiences', async () => {
    const custom = await startServer({
      args: ['--supabase-jwks-url', `${jwks.url}/jwks.json`, '--supabase-audience', 'app-a, app-b'],
    });
    try {
      assertConnected(await probeToken(custom.port, signWith(ec, userClaims({ sub: 'a', aud: 'app-b' }))), 'a', 'aud app-b');
      assertRefused(
        await probeToken(custom.port, signWith(ec, userClaims({ sub: 'a', aud: 'authenticated' }))),
        { code: 40140, message: /audience \(aud\)/ },
        'aud authenticated no longer accepted',
      );
    } finally {
      await custom.stop();
    }
  });
});
