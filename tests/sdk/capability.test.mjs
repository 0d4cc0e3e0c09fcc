// Test 6: capability refusals surface as 40160 — realtime attach (channel ERROR), realtime publish (NACK)
// and REST publish (HTTP 401) — for a key and for tokens limited to `allowed:*`, while allowed channels work.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY, LIMITED_KEY } from './server.mjs';
import { awaitConnected, ClientPool, Collector, expectRejection, FORMATS, safeJson, tokenRequestAuthCallback, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';

function assertCapabilityError(err, what) {
  assert.equal(err?.code, 40160, `${what}: expected code 40160, got ${err?.code} (${err?.message})`);
  assert.equal(err?.statusCode, 401, `${what}: expected statusCode 401, got ${err?.statusCode}`);
}

/** Runs the realtime checks for a connected client whose capability is limited to `allowed:*` publish+subscribe. */
async function checkRealtimeRefusals(realtime, wire, label) {
  // Positive control: an allowed channel attaches, and publishing there is ACKed and delivered.
  const allowedName = uniq(`allowed:${label}`);
  const allowed = realtime.channels.get(allowedName);
  const got = await new Collector().subscribe(allowed);
  await withTimeout(allowed.publish('ok', 'allowed'), 10_000, 'ACK of a publish to an allowed channel');
  await got.waitFor((m) => m.name === 'ok', 10_000, 'own message on the allowed channel');

  // Attach to a channel outside the capability: channel ERROR 40160, channel failed.
  const forbiddenName = uniq(`forbidden-${label}`);
  const forbidden = realtime.channels.get(forbiddenName);
  const attachErr = await expectRejection(forbidden.attach(), 10_000, `attach to ${forbiddenName}`);
  assertCapabilityError(attachErr, 'attach to a forbidden channel');
  assert.equal(forbidden.state, 'failed', 'refused channel is failed');
  assert.equal(forbidden.errorReason?.code, 40160);
  const channelErrors = wire.receivedAction('ERROR').filter((l) => l.includes(`channel=${forbiddenName}`));
  assert.ok(
    channelErrors.some((l) => l.includes('code=40160')),
    `server sent a channel ERROR with 40160 for ${forbiddenName}; frames: ${safeJson(channelErrors)}`,
  );

  // Publish (without attaching) to another forbidden channel: NACK 40160 from the server.
  const forbiddenPubName = uniq(`forbidden-pub-${label}`);
  const nacksBefore = wire.receivedAction('NACK').length;
  const pubErr = await expectRejection(
    realtime.channels.get(forbiddenPubName).publish('nope', 'denied'),
    10_000,
    `publish to ${forbiddenPubName}`,
  );
  assertCapabilityError(pubErr, 'realtime publish to a forbidden channel');
  const nacks = wire.receivedAction('NACK').slice(nacksBefore);
  assert.ok(
    nacks.some((l) => l.includes('code=40160')),
    `server sent a NACK with 40160; frames: ${safeJson(nacks)}`,
  );

  // The connection and the allowed channel survive the refusals.
  assert.equal(realtime.connection.state, 'connected', 'connection still connected after refusals');
  assert.equal(allowed.state, 'attached', 'allowed channel still attached');
  await withTimeout(allowed.publish('ok-again', 'still allowed'), 10_000, 'ACK of a publish after the NACK');
  await got.waitFor((m) => m.name === 'ok-again', 10_000, 'own message after the refusals');
}

describe('capability refusals (40160)', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: realtime with the limited key`, async () => {
      pool = new ClientPool(server.port);
      const wire = new WireLog();
      const realtime = pool.realtime({ key: LIMITED_KEY, useBinaryProtocol: format.useBinaryProtocol, ...wire.options });
      await awaitConnected(realtime);
      await checkRealtimeRefusals(realtime, wire, `key-${format.name}`);
    });

    test(`${format.name}: realtime with a token issued from the limited key (authCallback)`, async () => {
      pool = new ClientPool(server.port);
      const signer = pool.rest({ key: LIMITED_KEY });
      const wire = new WireLog();
      const realtime = pool.realtime({
        authCallback: tokenRequestAuthCallback(signer, { clientId: `limited-${format.name}` }),
        useBinaryProtocol: format.useBinaryProtocol,
        ...wire.options,
      });
      await awaitConnected(realtime);
      await checkRealtimeRefusals(realtime, wire, `token-${format.name}`);
    });

    test(`${format.name}: token from the full key with an explicitly narrowed capability`, async () => {
      pool = new ClientPool(server.port);
      const signer = pool.rest({ key: FULL_KEY });
      const wire = new WireLog();
      const realtime = pool.realtime({
        authCallback: tokenRequestAuthCallback(signer, {
          clientId: `narrow-${format.name}`,
          capability: { 'allowed:*': ['subscribe'] },
        }),
        useBinaryProtocol: format.useBinaryProtocol,
        ...wire.options,
      });
      await awaitConnected(realtime);

      const channel = realtime.channels.get(uniq(`allowed:narrow-${format.name}`));
      await withTimeout(channel.attach(), 10_000, 'attach to an allowed channel with subscribe-only rights');
      const err = await expectRejection(channel.publish('nope', 'no publish right'), 10_000, 'publish without the publish right');
      assertCapabilityError(err, 'publish with a subscribe-only token');

      const forbidden = realtime.channels.get(uniq(`other-narrow-${format.name}`));
      assertCapabilityError(
        await expectRejection(forbidden.attach(), 10_000, 'attach outside the token capability'),
        'attach outside a narrowed token capability',
      );
      assert.equal(realtime.connection.state, 'connected');
    });

    test(`${format.name}: REST publish with the limited key`, async () => {
      pool = new ClientPool(server.port);
      const rest = pool.rest({ key: LIMITED_KEY, useBinaryProtocol: format.useBinaryProtocol });

      // Positive control.
      await withTimeout(
        rest.channels.get(uniq(`allowed:rest-${format.name}`)).publish('ok', 'allowed'),
        10_000,
        'REST publish to an allowed channel',
      );

      const err = await expectRejection(
        rest.channels.get(uniq(`forbidden-rest-${format.name}`)).publish('nope', 'denied'),
        10_000,
        'REST publish to a forbidden channel',
      );
      assertCapabilityError(err, 'REST publish to a forbidden channel');
    });
  }
});
