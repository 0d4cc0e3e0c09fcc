// Test 7: clientId mismatches are refused by the SERVER.
//
// ably-js 2.28 performs no local check of a message's clientId against the client's identity on publish
// (src/common/lib/client/restchannel.ts and realtimechannel.ts `publish` only validate argument shape and
// size). Its only local clientId checks are: the clientId option must be a string and not '*'
// (baseclient.ts), and a *known* token clientId that differs from the clientId option (auth.ts
// `_tokenClientIdMismatch`). The clients below are built from a bare token string, so ably-js cannot know
// the token's clientId before the server tells it; the realtime cases additionally check the received
// frames (NACK / ERROR) in ably-js' wire log.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { ClientPool, Collector, FORMATS, WireLog, awaitConnected, awaitConnectionState, expectRejection, safeJson, uniq, useServer, withTimeout } from './helpers.mjs';

describe('clientId mismatch (40012 / 40102)', () => {
  let server;
  let pool;
  let aliceToken;
  useServer((s) => (server = s), () => pool);

  // Runs after useServer's `before`, which started the server.
  before(async () => {
    const issuer = new ClientPool(server.port).rest({ key: FULL_KEY });
    const details = await withTimeout(issuer.auth.requestToken({ clientId: 'alice' }), 10_000, 'token for alice');
    assert.equal(details.clientId, 'alice', 'TokenDetails carries the clientId');
    assert.equal(typeof details.token, 'string');
    aliceToken = details.token;
  });

  for (const format of FORMATS) {
    test(`${format.name}: REST publish as bob with alice's token → 40012`, async () => {
      pool = new ClientPool(server.port);
      const watcher = pool.realtime({ key: FULL_KEY, useBinaryProtocol: !format.useBinaryProtocol });
      await awaitConnected(watcher);
      const channelName = uniq(`cid:rest-${format.name}`);
      const seen = await new Collector().subscribe(watcher.channels.get(channelName));

      const rest = pool.rest({ token: aliceToken, useBinaryProtocol: format.useBinaryProtocol });
      assert.ok(!rest.auth.clientId, 'ably-js does not know the token clientId up front');
      const channel = rest.channels.get(channelName);

      const err = await expectRejection(
        channel.publish({ name: 'as-bob', data: 'x', clientId: 'bob' }),
        10_000,
        'REST publish with a mismatched clientId',
      );
      assert.equal(err?.code, 40012, `code 40012 expected, got ${err?.code} (${err?.message})`);
      assert.equal(err?.statusCode, 400, `HTTP 400 expected, got ${err?.statusCode}`);

      // Positive controls: the matching clientId and an implicit one are accepted and stamped as alice.
      await withTimeout(channel.publish({ name: 'as-alice', data: 'y', clientId: 'alice' }), 10_000, 'publish as alice');
      await withTimeout(channel.publish('implicit', 'z'), 10_000, 'publish without clientId');
      await seen.waitFor((m) => m.name === 'implicit', 10_000, 'the implicit message');
      assert.deepEqual(
        seen.messages.map((m) => [m.name, m.clientId]),
        [
          ['as-alice', 'alice'],
          ['implicit', 'alice'],
        ],
        'the refused message was not delivered; accepted ones carry clientId alice',
      );
    });

    test(`${format.name}: realtime publish as bob with alice's token → NACK 40012`, async () => {
      pool = new ClientPool(server.port);
      const wire = new WireLog();
      const realtime = pool.realtime({ token: aliceToken, useBinaryProtocol: format.useBinaryProtocol, ...wire.options });
      await awaitConnected(realtime);
      assert.equal(realtime.auth.clientId, 'alice', 'CONNECTED told the client it is alice');

      const channel = realtime.channels.get(uniq(`cid:rt-${format.name}`));
      const got = await new Collector().subscribe(channel);

      const nacksBefore = wire.receivedAction('NACK').length;
      const err = await expectRejection(
        channel.publish({ name: 'as-bob', data: 'x', clientId: 'bob' }),
        10_000,
        'realtime publish with a mismatched clientId',
      );
      assert.equal(err?.code, 40012, `code 40012 expected, got ${err?.code} (${err?.message})`);
      const nacks = wire.receivedAction('NACK').slice(nacksBefore);
      assert.ok(nacks.some((l) => l.includes('code=40012')), `server NACKed with 40012; frames: ${safeJson(nacks)}`);
      assert.equal(realtime.connection.state, 'connected', 'a NACK does not hurt the connection');

      await withTimeout(channel.publish({ name: 'as-alice', data: 'y', clientId: 'alice' }), 10_000, 'publish as alice');
      await got.waitFor((m) => m.name === 'as-alice', 10_000, 'own accepted message');
      assert.deepEqual(got.messages.map((m) => m.name), ['as-alice'], 'the refused message was not delivered');
      assert.equal(got.messages[0].clientId, 'alice');
    });

    test(`${format.name}: realtime with alice's token and clientId option bob → connection fails 40102`, async () => {
      pool = new ClientPool(server.port);
      const wire = new WireLog();
      const realtime = pool.realtime({
        token: aliceToken,
        clientId: 'bob',
        useBinaryProtocol: format.useBinaryProtocol,
        ...wire.options,
      });
      const change = await awaitConnectionState(realtime, 'failed', 15_000).catch((err) => {
        throw new Error(`${err.message}; state ${realtime.connection.state}; received ${safeJson(wire.received())}`);
      });
      assert.equal(change.reason?.code, 40102, `failed with 40102, got ${change.reason?.code} (${change.reason?.message})`);
      // The refusal must be the server's ERROR frame, not ably-js noticing a mismatched CONNECTED.
      const errors = wire.receivedAction('ERROR');
      assert.ok(errors.some((l) => l.includes('code=40102')), `server sent ERROR 40102; received: ${safeJson(wire.received())}`);
      assert.equal(wire.receivedAction('CONNECTED').length, 0, 'server never sent CONNECTED');
    });
  }
});
