// Publish limits with the real SDK: a publish of more messages than one publish may hold (1,000)
// is rejected with 40030 by the server, realtime and REST, and the connection carries on; a
// publish of exactly 1,000 and a burst of single publishes without awaiting go through, every
// message delivered. Another reader of the channel and a bystander on another channel see only
// what they should.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, ClientPool, Collector, expectRejection, FORMATS, uniq, useServer, withTimeout } from './helpers.mjs';

const MAX = 1000;
/** Single publishes in flight at once: what ably-js does for a loop that does not await. */
const BURST = 1000;

function batch(tag, n) {
  return Array.from({ length: n }, (_, i) => ({ name: `${tag}-${i}`, data: `payload ${i}` }));
}

describe('publish limits', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: an array over ${MAX} messages is rejected with 40030, ${MAX} are all delivered`, async () => {
      pool = new ClientPool(server.port);
      const options = { key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol };
      const publisher = pool.realtime({ ...options, echoMessages: false });
      const reader = pool.realtime(options);
      const bystander = pool.realtime(options);
      await Promise.all([awaitConnected(publisher), awaitConnected(reader), awaitConnected(bystander)]);

      const name = uniq(`limits:${format.name}`);
      const calm = uniq(`calm:${format.name}`);
      const received = await new Collector().subscribe(reader.channels.get(name));
      const heard = await new Collector().subscribe(bystander.channels.get(calm));
      const channel = publisher.channels.get(name);

      const error = await expectRejection(channel.publish(batch('over', MAX + 1)), 10_000, 'a publish of 1,001');
      assert.equal(error.code, 40030, `${error.message}`);
      assert.equal(error.statusCode, 400);
      assert.match(error.message, /1000/);
      assert.equal(publisher.connection.state, 'connected', 'the connection carries on');

      // The REST SDK gets the same answer in Ably's envelope.
      const rest = pool.rest(options);
      const restError = await expectRejection(
        rest.channels.get(name).publish(batch('rest-over', MAX + 1)),
        10_000,
        'a REST publish of 1,001',
      );
      assert.equal(restError.code, 40030, `${restError.message}`);
      assert.equal(restError.statusCode, 400);

      await withTimeout(channel.publish(batch('fits', MAX)), 10_000, `ACK of a publish of ${MAX}`);
      await withTimeout(bystander.channels.get(calm).publish('hi', 'there'), 10_000, 'bystander publish');
      const all = await received.waitForCount(MAX, 15_000, `${MAX} messages at the reader`);
      assert.deepEqual(
        all.map((m) => m.name),
        batch('fits', MAX).map((m) => m.name),
        'every message of the accepted publish, in order, none of the refused ones',
      );
      assert.equal(new Set(all.map((m) => m.id)).size, MAX, 'ids are unique');
      await heard.waitFor((m) => m.name === 'hi', 10_000, 'the bystander hears its own channel');
      assert.equal(heard.messages.length, 1, 'the bystander heard nothing else');
      for (const client of [publisher, reader, bystander]) {
        assert.equal(client.connection.state, 'connected');
      }
    });
  }

  test('a burst of single publishes without awaiting is not limited by default', async () => {
    pool = new ClientPool(server.port);
    const { publisher, received, channel } = await pool.publisherAndSubscriber(
      'limits:burst',
      { key: FULL_KEY, echoMessages: false },
      { key: FULL_KEY, useBinaryProtocol: true },
    );
    await withTimeout(channel.attach(), 10_000, 'publisher attach');

    const burst = Array.from({ length: BURST }, (_, i) => channel.publish(`b-${i}`, `n${i}`));
    await withTimeout(Promise.all(burst), 20_000, `ACKs of ${BURST} publishes in flight at once`);
    const all = await received.waitForCount(BURST, 20_000, `${BURST} messages at the reader`);
    assert.deepEqual(
      all.map((m) => m.data),
      Array.from({ length: BURST }, (_, i) => `n${i}`),
    );
    assert.equal(publisher.connection.state, 'connected');
  });
});

describe('publish rate limits', () => {
  let server;
  let pool;
  // Budgets of 20 messages refilled at 1 per second: a burst past them is refused, not queued.
  useServer(
    (s) => (server = s),
    () => pool,
    {
      args: [
        '--publish-max-messages', '20',
        '--publish-max-batch-messages', '20',
        '--publish-connection-messages-per-sec', '1',
        '--publish-connection-burst-messages', '20',
        '--publish-key-messages-per-sec', '1',
        '--publish-key-burst-messages', '20',
      ],
    },
  );

  test('a connection over its rate gets 42911 for those publishes only and stays connected; REST gets 42910', async () => {
    pool = new ClientPool(server.port);
    const publisher = pool.realtime({ key: FULL_KEY, echoMessages: false });
    const reader = pool.realtime({ key: FULL_KEY });
    const other = pool.realtime({ key: FULL_KEY });
    await Promise.all([awaitConnected(publisher), awaitConnected(reader), awaitConnected(other)]);
    const name = uniq('limits:rate');
    const received = await new Collector().subscribe(reader.channels.get(name));
    const channel = publisher.channels.get(name);

    const outcomes = await withTimeout(
      Promise.allSettled(Array.from({ length: 25 }, (_, i) => channel.publish(`r-${i}`, 'x'))),
      10_000,
      '25 publishes answered',
    );
    const accepted = outcomes.filter((o) => o.status === 'fulfilled').length;
    const refused = outcomes.filter((o) => o.status === 'rejected');
    assert.ok(accepted >= 20 && accepted < 25, `${accepted} of 25 accepted`);
    for (const { reason } of refused) {
      assert.equal(reason.code, 42911, reason.message);
      assert.equal(reason.statusCode, 429);
      assert.match(reason.message, /rate/);
    }
    assert.equal(publisher.connection.state, 'connected');

    // Another connection has its own budget; the reader got exactly the accepted ones, then it.
    await withTimeout(other.channels.get(name).publish('other', 'y'), 10_000, 'another connection publishes');
    const all = await received.waitForCount(accepted + 1, 10_000, 'accepted messages and the other one');
    assert.deepEqual(
      all.map((m) => m.name),
      [...outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [`r-${i}`] : [])), 'other'],
    );

    // REST: the key's budget is its own, and over it the SDK gets 42910 / 429.
    const rest = pool.rest({ key: FULL_KEY });
    const restChannel = rest.channels.get(name);
    await withTimeout(restChannel.publish(batch('rest', 20)), 10_000, 'a REST publish of 20');
    const error = await expectRejection(restChannel.publish('one-more', 'z'), 10_000, 'a REST publish over the rate');
    assert.equal(error.code, 42910, error.message);
    assert.equal(error.statusCode, 429);
  });
});
