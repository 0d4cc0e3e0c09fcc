// Two gateway nodes on one real redis-server behind a TCP load balancer (as Kubernetes puts a Service in
// front of pods). Node A is killed with SIGKILL while an unmodified ably-js client is connected through
// it: the client reconnects through the balancer to node B and resumes there with the same connection,
// every message published meanwhile exactly once and in order, every channel resumed, and its presence
// never seen to leave by anyone; a client that never comes back leaves once, after its grace.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Ably from 'ably';

import { FULL_KEY, clientOptions, startServer } from './server.mjs';
import { startBalancer, startRedis } from './cluster-helpers.mjs';
import { Collector, awaitConnected, awaitConnectionState, pollUntil, safeJson, uniq, withTimeout } from './helpers.mjs';
import { PresenceCollector, names, publishNumbered } from './continuity-helpers.mjs';

/**
 * Per describe block: a private redis-server, nodes A and B on it (`nodeArgs` added), and a TCP
 * balancer sending new connections to A; the clients a test pushes on `env.clients` are closed
 * and everything stopped at the end.
 */
function twoNodesBehindBalancer(nodeArgs) {
  const env = { redis: undefined, nodeA: undefined, nodeB: undefined, balancer: undefined, clients: [] };
  before(async () => {
    env.redis = await startRedis();
    const args = ['--redis', env.redis.url, ...nodeArgs];
    env.nodeA = await startServer({ args });
    env.nodeB = await startServer({ args });
    env.balancer = await startBalancer([env.nodeA.port]);
  });
  after(async () => {
    for (const client of env.clients) client.close();
    env.balancer?.stop();
    await env.nodeA?.stop();
    await env.nodeB?.stop();
    await env.redis?.stop();
  });
  return env;
}

describe('a gateway node killed under an ably-js client', () => {
  const env = twoNodesBehindBalancer(['--node-lease-ms', '1000']);

  test('the client resumes on the other node: same connection, every channel resumed, every message once, in order, its presence never seen to flap; a client that never returns leaves once, on every node', async () => {
    // A short presence grace (the client's remainPresentFor) keeps the test short: fan-2, whose client
    // never comes back, leaves once it has passed; by then fan-1's members would have left too had they
    // not been adopted when fan-1 resumed.
    const grace = { remainPresentFor: 2500 };
    const nodeC = await startServer({ args: ['--redis', env.redis.url, '--node-lease-ms', '1000'] });
    // fan-2 reaches node A through a balancer of its own, stopped when A dies: it never gets anywhere again.
    const lostRoute = await startBalancer([env.nodeA.port]);
    try {
      const channelNames = [uniq('session:kill'), uniq('session:kill')];

      // Watchers on node B and node C see every presence event from the start.
      const watchers = [];
      for (const node of [env.nodeB, nodeC]) {
        const watcherClient = new Ably.Realtime(clientOptions(node.port, { key: FULL_KEY, clientId: 'creator' }));
        env.clients.push(watcherClient);
        const perChannel = [];
        const messages = [];
        for (const name of channelNames) {
          perChannel.push(await new PresenceCollector().subscribe(watcherClient.channels.get(name)));
          messages.push(await new Collector().subscribe(watcherClient.channels.get(name)));
        }
        watchers.push({ port: node.port, perChannel, messages });
      }

      const realtime = new Ably.Realtime(
        clientOptions(env.balancer.port, { key: FULL_KEY, clientId: 'fan-1', disconnectedRetryTimeout: 500, transportParams: grace }),
      );
      env.clients.push(realtime);
      await awaitConnected(realtime);
      const id = realtime.connection.id;
      const abandoned = new Ably.Realtime(
        clientOptions(lostRoute.port, { key: FULL_KEY, clientId: 'fan-2', disconnectedRetryTimeout: 500, transportParams: grace }),
      );
      env.clients.push(abandoned);
      await awaitConnected(abandoned);

      const channels = [];
      for (const name of channelNames) {
        const channel = realtime.channels.get(name);
        const got = await new Collector().subscribe(channel);
        await withTimeout(channel.presence.enter('watching'), 10_000, 'fan-1 presence enter');
        await withTimeout(abandoned.channels.get(name).presence.enter('watching'), 10_000, 'fan-2 presence enter');
        const changes = [];
        channel.on((change) => changes.push(change));
        const restChannel = new Ably.Rest(clientOptions(env.nodeB.port, { key: FULL_KEY })).channels.get(name);
        channels.push({ name, channel, got, changes, restChannel });
      }
      for (const { perChannel } of watchers) {
        for (const [i, collector] of perChannel.entries()) {
          await collector.waitFor((e) => e.clientId === 'fan-2' && e.action === 'enter', 10_000, `channel ${i}: both entered`);
        }
      }
      for (const { restChannel, got } of channels) {
        await publishNumbered(restChannel, 'before', 3);
        await got.waitForCount(3, 10_000, 'messages before the kill');
      }

      // The balancer sends new connections to B (A failed its probe), then A dies without a word.
      env.balancer.targets = [env.nodeB.port];
      const disconnected = awaitConnectionState(realtime, 'disconnected', 10_000);
      const changesAtKill = channels.map((c) => c.changes.length);
      await env.nodeA.kill('SIGKILL');
      lostRoute.stop();
      await disconnected;
      for (const { restChannel } of channels) await publishNumbered(restChannel, 'missed', 10);

      await awaitConnectionState(realtime, 'connected', 15_000);
      assert.equal(realtime.connection.id, id, 'resumed on node B: the same connection id');

      const expected = [
        ...Array.from({ length: 3 }, (_, i) => `before-${i}`),
        ...Array.from({ length: 10 }, (_, i) => `missed-${i}`),
        'after-0',
      ];
      for (const [i, { restChannel, got, changes, channel }] of channels.entries()) {
        await got.waitForCount(13, 15_000, `channel ${i}: the messages published while it moved`);
        await publishNumbered(restChannel, 'after', 1);
        await got.waitFor((m) => m.name === 'after-0', 10_000, `channel ${i}: live after the resume`);
        assert.deepEqual(names(got.messages), expected, `channel ${i}: every message exactly once, in order`);

        const moved = changes.slice(changesAtKill[i]);
        const attached = moved.filter((c) => c.current === 'attached');
        assert.ok(attached.length > 0, `channel ${i} re-attached after the move: ${safeJson(moved)}`);
        for (const change of attached) assert.equal(change.resumed, true, `channel ${i} re-attached resumed: ${safeJson(moved)}`);
        assert.equal(channel.state, 'attached');
      }

      // fan-2 never returns: it leaves once its grace has passed, on every node. fan-1's members,
      // adopted on B, neither left nor entered again.
      for (const { port, perChannel } of watchers) {
        for (const [i, collector] of perChannel.entries()) {
          await collector.waitFor((e) => e.clientId === 'fan-2' && e.action === 'leave', 15_000, `node ${port}, channel ${i}: fan-2 leaves`);
        }
      }
      // Presence and messages share the channel's topic: a message published after the leave reaches each
      // watcher after any second announcement made before it.
      for (const { restChannel } of channels) await publishNumbered(restChannel, 'last', 1);
      for (const { port, perChannel, messages } of watchers) {
        for (const [i, collector] of perChannel.entries()) {
          await messages[i].waitFor((m) => m.name === 'last-0', 10_000, `node ${port}, channel ${i}: the last message`);
          const seen = (clientId) => collector.events.filter((e) => e.clientId === clientId).map((e) => e.action);
          assert.deepEqual(seen('fan-1'), ['enter'], `node ${port}, channel ${i}: fan-1 entered once, never left: ${collector.describe()}`);
          assert.deepEqual(seen('fan-2'), ['enter', 'leave'], `node ${port}, channel ${i}: fan-2 left once: ${collector.describe()}`);
        }
      }
      for (const port of [env.nodeB.port, nodeC.port]) {
        for (const { name } of channels) {
          const rest = new Ably.Rest(clientOptions(port, { key: FULL_KEY })).channels.get(name);
          const present = (await rest.presence.get()).items.map((m) => m.clientId);
          assert.deepEqual(present, ['fan-1'], `node ${port}: only fan-1 present on ${name}`);
        }
      }
    } finally {
      lostRoute.stop();
      await nodeC.stop();
    }
  });
});

describe('a rolling restart of one of two gateway nodes while the backend publishes', () => {
  const env = twoNodesBehindBalancer([]);

  test('every subscriber gets every acknowledged message exactly once and resumes; the node exits in time', async () => {
    const channelName = uniq('live:rolling');
    const subscribers = [];
    for (let i = 0; i < 12; i += 1) {
      const realtime = new Ably.Realtime(
        clientOptions(env.balancer.port, { key: FULL_KEY, useBinaryProtocol: i % 2 === 0, disconnectedRetryTimeout: 500 }),
      );
      env.clients.push(realtime);
      await awaitConnected(realtime);
      const got = await new Collector().subscribe(realtime.channels.get(channelName));
      subscribers.push({ realtime, id: realtime.connection.id, got });
    }

    const restChannel = new Ably.Rest(clientOptions(env.nodeB.port, { key: FULL_KEY })).channels.get(channelName);
    const acked = [];
    let publishing = true;
    const publisher = (async () => {
      for (let i = 0; publishing; i += 1) {
        await withTimeout(restChannel.publish(`m-${i}`, { i }), 10_000, `publish m-${i}`);
        acked.push(`m-${i}`);
      }
    })();
    await pollUntil(async () => acked.length, (n) => n >= 20, 10_000, 'the publisher running');

    // The rollout: the balancer stops sending new connections to A, then A gets SIGTERM.
    env.balancer.targets = [env.nodeB.port];
    const stoppedAt = Date.now();
    const exit = await env.nodeA.stop();
    const drainTook = Date.now() - stoppedAt;
    assert.equal(exit.signal, null, `node A exited by itself, not killed: ${JSON.stringify(exit)}`);
    assert.ok(drainTook < 8_000, `node A exited within its 2 s drain (+ margin): ${drainTook} ms`);

    const afterStop = acked.length;
    await pollUntil(async () => acked.length, (n) => n >= afterStop + 20, 10_000, 'publishing after the restart');
    publishing = false;
    await publisher;

    for (const [i, s] of subscribers.entries()) {
      await s.got.waitForCount(acked.length, 15_000, `subscriber ${i}: every acknowledged message`);
      assert.deepEqual(names(s.got.messages), acked, `subscriber ${i}: each message once, in order`);
      assert.equal(s.realtime.connection.state, 'connected');
      assert.equal(s.realtime.connection.id, s.id, `subscriber ${i} resumed its connection on node B`);
    }
  });
});
