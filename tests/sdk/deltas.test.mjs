// Deltas (`delta=vcdiff`) and filtered channels (`getDerived`) with the unmodified ably-js SDK, its patches
// decoded by Ably's own VCDIFF decoder (`@ably/vcdiff-decoder`, the plugin ably-js documents): a stream's
// state republished with small changes arrives whole first and as patches after, on one node and across
// two nodes on Redis, in JSON and msgpack, across a resume and a rewind; a client without the plugin is
// refused as ably-js refuses it (40019); a derived channel gets only the messages its filter matches.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Ably from 'ably';
import vcdiffDecoder from '@ably/vcdiff-decoder';

import { FULL_KEY, clientOptions, startServer } from './server.mjs';
import { startRedis } from './cluster-helpers.mjs';
import { Collector, FORMATS, awaitConnected, uniq, withTimeout } from './helpers.mjs';
import { dropTransport, nextChannelChange } from './continuity-helpers.mjs';

/** The plugin ably-js takes, counting the patches it decodes. */
function countingDecoder() {
  const decoder = {
    calls: 0,
    decode(delta, base) {
      decoder.calls += 1;
      return vcdiffDecoder.decode(delta, base);
    },
  };
  return decoder;
}

/** A ~2 KB stream state; each round changes the tips of three of its 60 viewers (about 5 % of it). */
function streamState(round) {
  const viewers = [];
  for (let i = 0; i < 60; i += 1) {
    viewers.push({ user: `viewer-${String(i).padStart(3, '0')}`, tips: i % 20 === round % 20 ? round * 10 : i });
  }
  return { stream: 'stream:42', round, viewers };
}

async function publishStates(restChannel, from, to) {
  for (let round = from; round < to; round += 1) {
    await restChannel.publish(String(round), streamState(round));
  }
}

function assertStates(messages, from, to) {
  assert.deepEqual(
    messages.map((m) => m.name),
    Array.from({ length: to - from }, (_, i) => String(from + i)),
  );
  for (const message of messages) assert.deepEqual(message.data, streamState(Number(message.name)));
}

describe('deltas with ably-js and @ably/vcdiff-decoder', () => {
  const env = { clients: [] };
  before(async () => {
    env.redis = await startRedis();
    env.nodeA = await startServer({ args: ['--redis', env.redis.url] });
    env.nodeB = await startServer({ args: ['--redis', env.redis.url] });
  });
  after(async () => {
    for (const client of env.clients) client.close();
    await env.nodeA?.stop();
    await env.nodeB?.stop();
    await env.redis?.stop();
  });
  const realtime = (port, extra) => {
    const client = new Ably.Realtime(clientOptions(port, { key: FULL_KEY, ...extra }));
    env.clients.push(client);
    return client;
  };

  for (const format of FORMATS) {
    test(`${format.name}: published on one node, patched on the other: the first whole, every later one a patch that decodes to what was published`, async () => {
      const name = uniq('stream:viewers');
      const decoder = countingDecoder();
      const subscriber = realtime(env.nodeB.port, { useBinaryProtocol: format.useBinaryProtocol, plugins: { vcdiff: decoder } });
      const plain = realtime(env.nodeB.port, { useBinaryProtocol: format.useBinaryProtocol });
      const patched = await new Collector().subscribe(subscriber.channels.get(name, { params: { delta: 'vcdiff' } }));
      const whole = await new Collector().subscribe(plain.channels.get(name));
      const rest = new Ably.Rest(clientOptions(env.nodeA.port, { key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol }));
      await publishStates(rest.channels.get(name), 0, 6);
      assertStates(await patched.waitForCount(6, 10_000, 'six states'), 0, 6);
      assertStates(await whole.waitForCount(6, 10_000, 'six states'), 0, 6);
      assert.equal(decoder.calls, 5, 'every state after the first came as a patch');
    });
  }

  test('a client without the vcdiff plugin that asks for deltas fails the channel with 40019, as ably-js does', async () => {
    const name = uniq('stream:noplugin');
    const client = realtime(env.nodeA.port);
    const channel = client.channels.get(name, { params: { delta: 'vcdiff' } });
    await channel.attach();
    const failed = nextChannelChange(channel, (change) => change.current === 'failed', 10_000, 'the channel to fail');
    await publishStates(new Ably.Rest(clientOptions(env.nodeA.port, { key: FULL_KEY })).channels.get(name), 0, 3);
    const change = await failed;
    assert.equal(change.reason.code, 40019);
  });

  test('across a resume the replay starts whole and patches follow, live ones too; a rewind starts whole', async () => {
    const name = uniq('stream:resume');
    const decoder = countingDecoder();
    const client = realtime(env.nodeA.port, { plugins: { vcdiff: decoder } });
    await awaitConnected(client);
    const collector = await new Collector().subscribe(client.channels.get(name, { params: { delta: 'vcdiff' } }));
    const rest = new Ably.Rest(clientOptions(env.nodeA.port, { key: FULL_KEY }));
    const restChannel = rest.channels.get(name);
    await publishStates(restChannel, 0, 2);
    await collector.waitForCount(2, 10_000, 'two states');
    const before = await dropTransport(client);
    await publishStates(restChannel, 2, 5);
    client.connection.connect();
    await awaitConnected(client);
    assert.equal(client.connection.id, before.id, 'resumed');
    await publishStates(restChannel, 5, 6);
    assertStates(await collector.waitForCount(6, 10_000, 'every state, once'), 0, 6);
    // Live 1; replayed 3 and 4 after a whole 2; live 5.
    assert.equal(decoder.calls, 4);

    const rewinder = countingDecoder();
    const late = realtime(env.nodeB.port, { plugins: { vcdiff: rewinder } });
    const rewound = await new Collector().subscribe(late.channels.get(name, { params: { delta: 'vcdiff', rewind: '3' } }));
    assertStates(await rewound.waitForCount(3, 10_000, 'the last three states'), 3, 6);
    assert.equal(rewinder.calls, 2, 'the rewind starts whole');
  });
});

describe('filtered channels with ably-js getDerived', () => {
  const env = { clients: [] };
  before(async () => {
    env.server = await startServer();
  });
  after(async () => {
    for (const client of env.clients) client.close();
    await env.server?.stop();
  });

  test('a derived channel gets only what its filter matches, beside a plain attachment of the same channel on the same connection', async () => {
    const name = uniq('user:42');
    const client = new Ably.Realtime(clientOptions(env.server.port, { key: FULL_KEY, clientId: 'fan' }));
    env.clients.push(client);
    const filter = 'name == `"tip"` && headers.amount >= `100`';
    const filtered = await new Collector().subscribe(client.channels.getDerived(name, { filter }));
    const everything = await new Collector().subscribe(client.channels.get(name));
    const rest = new Ably.Rest(clientOptions(env.server.port, { key: FULL_KEY }));
    await rest.channels.get(name).publish([
      { name: 'tip', data: 'big tip', extras: { headers: { amount: 500 } } },
      { name: 'chat', data: 'hello', extras: { headers: { amount: 500 } } },
      { name: 'tip', data: 'small tip', extras: { headers: { amount: 5 } } },
      { name: 'tip', data: 'no headers' },
      { name: 'tip', data: 'exactly enough', extras: { headers: { amount: 100 } } },
      { name: 'end', data: 'end' },
    ]);
    await everything.waitFor((m) => m.name === 'end', 10_000, 'the end marker');
    assert.equal(everything.messages.length, 6);
    assert.deepEqual(
      filtered.messages.map((m) => m.data),
      ['big tip', 'exactly enough'],
    );

    // A filtered channel is only subscribed to: a publish or a presence enter on it is refused.
    for (const attempt of [
      () => client.channels.getDerived(name, { filter }).publish('tip', 'through the filter'),
      () => client.channels.getDerived(name, { filter }).presence.enter('here'),
    ]) {
      const refusal = await withTimeout(
        attempt().then(
          () => assert.fail('accepted'),
          (err) => err,
        ),
        10_000,
        'the refusal',
      );
      assert.equal(refusal.code, 40010, String(refusal.message));
    }

    // Detaching the derived channel leaves the plain one attached and receiving.
    await client.channels.getDerived(name, { filter }).detach();
    await rest.channels.get(name).publish({ name: 'tip', data: 'after', extras: { headers: { amount: 1000 } } });
    await everything.waitFor((m) => m.data === 'after', 10_000, 'a message after the detach');
    assert.equal(filtered.messages.length, 2);
  });

  test('a token for [filter]user:* subscribes through a filter, never to the channel itself', async () => {
    const rest = new Ably.Rest(clientOptions(env.server.port, { key: FULL_KEY }));
    const token = await rest.auth.requestToken({ capability: JSON.stringify({ '[filter]user:*': ['subscribe'] }) });
    const client = new Ably.Realtime(clientOptions(env.server.port, { token: token.token }));
    env.clients.push(client);
    const name = uniq('user:44');
    const filtered = await new Collector().subscribe(client.channels.getDerived(name, { filter: "name == 'tip'" }));
    await rest.channels.get(name).publish([{ name: 'chat', data: 'no' }, { name: 'tip', data: 'yes' }]);
    await filtered.waitFor((m) => m.data === 'yes', 10_000, 'the tip');
    assert.deepEqual(filtered.messages.map((m) => m.data), ['yes']);
    const refusal = await withTimeout(
      client.channels.get(name).attach().then(
        () => assert.fail('attached unfiltered'),
        (err) => err,
      ),
      10_000,
      'the refusal',
    );
    assert.equal(refusal.code, 40160);
  });

  test('an invalid filter is refused at attach with 40010', async () => {
    const client = new Ably.Realtime(clientOptions(env.server.port, { key: FULL_KEY }));
    env.clients.push(client);
    const channel = client.channels.getDerived(uniq('user:43'), { filter: 'name == ' });
    const error = await withTimeout(
      channel.attach().then(
        () => assert.fail('attached'),
        (err) => err,
      ),
      10_000,
      'the refusal',
    );
    assert.equal(error.code, 40010);
  });
});
