// Tests 3 and 4: realtime publish awaited until ACK and delivered to another subscriber and (by default)
// back to the publisher; `echoMessages: false` suppresses only the publisher's own messages.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, ClientPool, Collector, FORMATS, tokenRequestAuthCallback, uniq, useServer, withTimeout } from './helpers.mjs';

function other(format) {
  return FORMATS.find((f) => f.name !== format.name);
}

describe('realtime publish with ACK', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const pubFormat of FORMATS) {
    const subFormat = other(pubFormat);
    test(`publisher-${pubFormat.name} → subscriber-${subFormat.name}: publish resolves on ACK, both receive it`, async () => {
      pool = new ClientPool(server.port);
      const signer = pool.rest({ key: FULL_KEY });
      const publisherClientId = `rt-pub-${pubFormat.name}`;
      const publisher = pool.realtime({
        authCallback: tokenRequestAuthCallback(signer, { clientId: publisherClientId }),
        useBinaryProtocol: pubFormat.useBinaryProtocol,
      });
      const subscriber = pool.realtime({ key: FULL_KEY, useBinaryProtocol: subFormat.useBinaryProtocol });
      await Promise.all([awaitConnected(publisher), awaitConnected(subscriber)]);

      const channelName = uniq(`rtpub:${pubFormat.name}`);
      const pubChannel = publisher.channels.get(channelName);
      const own = await new Collector().subscribe(pubChannel);
      const theirs = await new Collector().subscribe(subscriber.channels.get(channelName));

      // One publish on its own, awaited until the server ACKs it.
      const payload = { greeting: 'hello', n: 1 };
      await withTimeout(pubChannel.publish('greeting', payload), 10_000, 'ACK of the first publish');

      const seen = await theirs.waitFor((m) => m.name === 'greeting', 10_000, 'greeting at the other subscriber');
      assert.deepEqual(seen.data, payload);
      assert.equal(seen.clientId, publisherClientId, 'server fills in the publisher clientId');
      assert.equal(seen.connectionId, publisher.connection.id, 'connectionId is the publisher connection');
      assert.equal(typeof seen.id, 'string');
      assert.ok(
        seen.id.startsWith(`${publisher.connection.id}:`),
        `realtime message id ${seen.id} starts with the publisher connectionId ${publisher.connection.id}`,
      );
      assert.equal(typeof seen.timestamp, 'number', 'timestamp set');

      const echoed = await own.waitFor((m) => m.name === 'greeting', 10_000, 'the publisher to receive its own message');
      assert.deepEqual(echoed.data, payload);
      assert.equal(echoed.id, seen.id, 'same id at publisher and subscriber');

      // Several publishes in flight at once: every one must be ACKed (msgSerial/count handling)
      // and delivered in order.
      const burst = Array.from({ length: 5 }, (_, i) => `burst-${i}`);
      await withTimeout(
        Promise.all(burst.map((name, i) => pubChannel.publish(name, `payload ${i}`))),
        10_000,
        'ACKs of 5 concurrent publishes',
      );
      await theirs.waitForCount(1 + burst.length, 10_000, 'all burst messages at the subscriber');
      assert.deepEqual(
        theirs.messages.map((m) => m.name),
        ['greeting', ...burst],
        'subscriber receives every message once, in order',
      );
      await own.waitForCount(1 + burst.length, 10_000, 'all burst messages echoed to the publisher');
      assert.deepEqual(own.messages.map((m) => m.name), ['greeting', ...burst]);
      assert.equal(new Set(theirs.messages.map((m) => m.id)).size, theirs.messages.length, 'ids are unique');
    });
  }
});

describe('echoMessages: false', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: a client with echo off does not get its own messages, others do`, async () => {
      pool = new ClientPool(server.port);
      const quiet = pool.realtime({
        key: FULL_KEY,
        clientId: 'quiet',
        echoMessages: false,
        useBinaryProtocol: format.useBinaryProtocol,
      });
      const other = pool.realtime({ key: FULL_KEY, clientId: 'other', useBinaryProtocol: !format.useBinaryProtocol });
      await Promise.all([awaitConnected(quiet), awaitConnected(other)]);

      const channelName = uniq(`echo:${format.name}`);
      const quietChannel = quiet.channels.get(channelName);
      const otherChannel = other.channels.get(channelName);
      const quietGot = await new Collector().subscribe(quietChannel);
      const otherGot = await new Collector().subscribe(otherChannel);

      await withTimeout(quietChannel.publish('own', 'from quiet'), 10_000, 'ACK of the echo-off publish');
      const delivered = await otherGot.waitFor((m) => m.name === 'own', 10_000, 'the other client to get "own"');
      assert.equal(delivered.connectionId, quiet.connection.id);
      assert.equal(delivered.clientId, 'quiet');

      // Marker from the other client: the server orders messages per channel, so once the echo-off client
      // has the marker, its own earlier message would already have arrived had it been echoed.
      await withTimeout(otherChannel.publish('marker', 'from other'), 10_000, 'ACK of the marker');
      await quietGot.waitFor((m) => m.name === 'marker', 10_000, 'the echo-off client to get the marker');
      assert.deepEqual(
        quietGot.messages.map((m) => m.name),
        ['marker'],
        'the echo-off client received only the marker, never its own message',
      );

      // And the normal client still gets its own echo.
      await otherGot.waitFor((m) => m.name === 'marker', 10_000, 'the echo-on client to get its own marker');
      assert.deepEqual(otherGot.messages.map((m) => m.name), ['own', 'marker']);
    });
  }
});
