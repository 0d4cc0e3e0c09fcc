// Ephemeral messages through the real ably-js: REST `channel.publish(message, { ephemeral: true })`
// (ably-js puts publish params in the query string) and realtime `extras: { ephemeral: true }` reach a
// subscriber live without a serial, are not in history nor replayed by rewind, and a publish mixing both
// kinds is refused with 40030. JSON and msgpack.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { ClientPool, Collector, expectRejection, FORMATS, safeJson, uniq, useServer, withTimeout } from './helpers.mjs';

describe('ephemeral messages', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: delivered live without serial, never stored, a mix refused`, async () => {
      pool = new ClientPool(server.port);
      const options = { key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol };
      const { name, received, channel } = await pool.publisherAndSubscriber(`ephemeral:${format.name}`, options, options);
      const rest = pool.rest(options).channels.get(name);

      await withTimeout(
        rest.publish({ name: 'typing', data: 'rest', extras: { headers: { k: 'v' } } }, { ephemeral: true }),
        10_000,
        'REST ephemeral publish',
      );
      await withTimeout(
        channel.publish({ name: 'typing', data: 'realtime', extras: { ephemeral: true } }),
        10_000,
        'realtime ephemeral publish (ACK)',
      );
      const mixed = [
        { name: 'mixed', data: 'stored' },
        { name: 'mixed', data: 'ephemeral', extras: { ephemeral: true } },
      ];
      for (const [what, publish] of [
        ['REST', () => rest.publish(mixed)],
        ['realtime', () => channel.publish(mixed)],
      ]) {
        const error = await expectRejection(publish(), 10_000, `${what} mixed publish`);
        assert.equal(error.code, 40030, `${what}: ${safeJson(error)}`);
        assert.equal(error.statusCode, 400, `${what}: ${safeJson(error)}`);
      }
      await withTimeout(channel.publish('stored', 'kept'), 10_000, 'stored publish');

      const got = await received.waitForCount(3, 10_000, 'three messages');
      assert.deepEqual(
        got.map((m) => `${m.name}=${m.data}`),
        ['typing=rest', 'typing=realtime', 'stored=kept'],
        'in order, once each, nothing of the refused publishes',
      );
      const [fromRest, fromRealtime, stored] = got;
      assert.deepEqual(fromRest.extras, { headers: { k: 'v' }, ephemeral: true }, 'the param marks it, extras kept');
      assert.deepEqual(fromRealtime.extras, { ephemeral: true });
      for (const message of [fromRest, fromRealtime]) {
        assert.equal(message.serial, undefined, `no serial: ${safeJson(message)}`);
      }
      assert.equal(typeof stored.serial, 'string', `the stored one has a serial: ${safeJson(stored)}`);

      const history = await withTimeout(rest.history(), 10_000, 'history');
      assert.deepEqual(
        history.items.map((m) => m.name),
        ['stored'],
        'only the stored message is in history',
      );

      const [late] = await pool.connected(options);
      const rewound = await new Collector().subscribe(late.channels.get(name, { params: { rewind: '10' } }));
      await withTimeout(channel.publish('marker', 'live'), 10_000, 'marker publish');
      const replayed = await rewound.waitForCount(2, 10_000, 'rewind then the live marker');
      assert.deepEqual(
        replayed.map((m) => m.name),
        ['stored', 'marker'],
        'rewind replays only the stored message',
      );
    });
  }
});
