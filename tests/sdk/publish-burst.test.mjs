// A publisher that sends faster than it reads is slowed down, never disconnected: unmodified
// ably-js publishing 500 messages without awaiting each (Promise.all), attached to the channel
// with echoes on, so every publish brings back an ACK and its own message, and then not reading
// for a moment (busy). All resolve, its connection never leaves
// `connected`, and a subscriber receives all 500 in order.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, ClientPool, Collector, FORMATS, uniq, useServer, withTimeout } from './helpers.mjs';

const BURST = 500;

/**
 * Stops reading the client's socket for `ms`, as a client busy with other work would (blocking
 * the whole event loop would stop the subscriber in this process too). ably-js is not changed:
 * its transport's socket is paused from outside.
 */
function notReadingFor(realtime, ms) {
  const socket = realtime.connection.connectionManager.activeProtocol?.transport?.wsConnection?._socket;
  assert.ok(socket, 'the publisher\'s socket');
  socket.pause();
  setTimeout(() => socket.resume(), ms);
}

describe('publish burst', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: ${BURST} publishes in flight at once all resolve and the publisher stays connected`, async () => {
      pool = new ClientPool(server.port);
      const options = { key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol };
      const publisher = pool.realtime(options);
      const subscriber = pool.realtime(options);
      await Promise.all([awaitConnected(publisher), awaitConnected(subscriber)]);
      const changes = [];
      publisher.connection.on((change) => changes.push(`${change.previous}->${change.current}`));

      const name = uniq(`burst:${format.name}`);
      const received = await new Collector().subscribe(subscriber.channels.get(name));
      const channel = publisher.channels.get(name);
      const echoes = await new Collector().subscribe(channel);

      // 8 MB of echoes: more than loopback buffers hold for a client that is not reading.
      const payload = 'x'.repeat(16 * 1024);
      const burst = Array.from({ length: BURST }, (_, i) => channel.publish(`m-${i}`, `${i}:${payload}`));
      notReadingFor(publisher, 1500);
      await withTimeout(Promise.all(burst), 20_000, `ACKs of ${BURST} publishes in flight at once`);
      const all = await received.waitForCount(BURST, 20_000, `${BURST} messages at the subscriber`);
      assert.deepEqual(
        all.map((m) => m.name),
        Array.from({ length: BURST }, (_, i) => `m-${i}`),
        'every message once, in order',
      );
      await echoes.waitForCount(BURST, 20_000, `${BURST} echoes at the publisher`);
      assert.deepEqual(changes, [], 'the publisher never left connected');
      assert.equal(publisher.connection.state, 'connected');
    });
  }
});
