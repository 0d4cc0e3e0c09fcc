// Three gateway nodes on one redis-server behind a TCP balancer, ably-js subscribers spread over
// them, and a backend keeping ~50 REST publishes in flight while, in turn, a node is killed
// (SIGKILL), Redis is killed and comes back empty, and a node is drained (SIGTERM). Every
// acknowledged message reaches every subscriber exactly once, in order, and nobody is told that
// continuity was lost: nothing acknowledged was. Then a Sentinel set whose master is killed
// under an ably-js realtime publisher (`--redis-min-replicas 1`): every publish ably-js saw
// succeed is delivered and in history, once, in order.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Ably from 'ably';

import { FULL_KEY, clientOptions, startServer } from './server.mjs';
import { Collector, awaitConnected, pollUntil, uniq, withTimeout } from './helpers.mjs';
import { startBalancer, startRedis, startSentinelSet } from './cluster-helpers.mjs';

const PUBLISHERS = 50;
const SUBSCRIBERS = 12;

/** `PUBLISHERS` loops publishing `m-<p>-<seq>` through REST to the nodes in `live` (round robin). */
function startPublishers(channelName, live) {
  const rest = new Map();
  const channelOn = (port) => {
    if (!rest.has(port)) rest.set(port, new Ably.Rest(clientOptions(port, { key: FULL_KEY })).channels.get(channelName));
    return rest.get(port);
  };
  const state = { acked: [], failed: 0, running: true };
  let turn = 0;
  state.done = Promise.all(
    Array.from({ length: PUBLISHERS }, async (_, p) => {
      for (let seq = 0; state.running; seq += 1) {
        const name = `m-${p}-${seq}`;
        try {
          await withTimeout(channelOn(live[turn++ % live.length]).publish(name, { p, seq }), 10_000, `publish ${name}`);
          state.acked.push(name);
        } catch {
          // Refused (503 while Redis is away) or cut off with its node: not acknowledged.
          state.failed += 1;
        }
      }
    }),
  );
  /** Resolves once `n` more publishes were acknowledged. */
  state.untilMore = (n, what) => {
    const target = state.acked.length + n;
    return pollUntil(async () => state.acked.length, (count) => count >= target, 30_000, what);
  };
  return state;
}

describe('faults under load: a node killed, Redis killed and restarted empty, a node drained', () => {
  const env = { redis: undefined, nodes: [], balancer: undefined, clients: [], dir: undefined, loops: [] };
  before(async () => {
    env.redis = await startRedis();
    // ~400 publishes/s on one channel: the default 500-message log would cover about a second,
    // less than a SIGKILLed node's clients take to resume elsewhere (its lease, then a retry).
    env.dir = mkdtempSync(path.join(tmpdir(), 'realtime-faults-'));
    const config = path.join(env.dir, 'realtime.toml');
    writeFileSync(config, '[history]\nmax_messages = 20000\n');
    const args = ['--redis', env.redis.url, '--node-lease-ms', '1000', '--config', config];
    for (let i = 0; i < 3; i += 1) env.nodes.push(await startServer({ args }));
    env.balancer = await startBalancer(env.nodes.map((n) => n.port));
  });
  after(async () => {
    // A failed test leaves its publishers looping: they would keep the file's process alive.
    for (const loop of env.loops) loop.running = false;
    for (const client of env.clients) client.close();
    env.balancer?.stop();
    for (const node of env.nodes) await node.stop();
    await env.redis?.stop();
    if (env.dir) rmSync(env.dir, { recursive: true, force: true });
  });

  test('every subscriber gets every acknowledged message exactly once, in order, and keeps its connection', async () => {
    const [nodeA, nodeB] = env.nodes;
    const channelName = uniq('live:faults');
    const subscribers = [];
    // Which fault was under way when a notice came, so a failure says where to look.
    let phase = 'attaching';
    for (let i = 0; i < SUBSCRIBERS; i += 1) {
      const realtime = new Ably.Realtime(
        clientOptions(env.balancer.port, { key: FULL_KEY, useBinaryProtocol: i % 2 === 0, disconnectedRetryTimeout: 500 }),
      );
      env.clients.push(realtime);
      await awaitConnected(realtime);
      const channel = realtime.channels.get(channelName);
      const got = await new Collector().subscribe(channel);
      // After the first attach, any (re-)attach or update that is not RESUMED tells of a loss.
      const notices = [];
      channel.on(['attached', 'update'], (change) => {
        if (!change.resumed) notices.push({ code: change.reason?.code ?? null, phase, at: Date.now() });
      });
      const subscriber = { realtime, id: realtime.connection.id, got, notices, disconnects: 0 };
      realtime.connection.on('disconnected', () => {
        subscriber.disconnects += 1;
      });
      subscribers.push(subscriber);
    }
    const live = env.nodes.map((n) => n.port);
    const allConnected = (what) =>
      pollUntil(
        async () => subscribers.filter((s) => s.realtime.connection.state === 'connected').length,
        (n) => n === SUBSCRIBERS,
        20_000,
        what,
      );
    // Takes `node` out of the balancer and the publishers' list, runs `fault` on it, then waits
    // until each of its clients noticed (went disconnected) and all are connected again, so the
    // next fault does not land in the middle of their resume.
    const takeOut = async (node, what, fault) => {
      env.balancer.targets = env.balancer.targets.filter((port) => port !== node.port);
      live.splice(live.indexOf(node.port), 1);
      const onIt = env.balancer.connectionsTo(node.port);
      const before = subscribers.map((s) => s.disconnects);
      await fault();
      await pollUntil(
        async () => subscribers.filter((s, k) => s.disconnects > before[k]).length,
        (n) => n >= onIt,
        10_000,
        `${what}: its ${onIt} clients noticed`,
      );
      await allConnected(what);
    };

    const marks = {};
    const publishers = startPublishers(channelName, live);
    env.loops.push(publishers);
    await publishers.untilMore(100, 'publishing before the faults');

    // 1. Node A dies without a word; the balancer has stopped sending to it (it failed its probe).
    marks.killA = publishers.acked.length;
    phase = 'node A killed';
    await takeOut(nodeA, 'subscribers of node A resumed elsewhere', () => nodeA.kill('SIGKILL'));
    await publishers.untilMore(100, 'publishing after node A died');

    // 2. Redis is killed with the publishes in flight and comes back empty.
    marks.redis = publishers.acked.length;
    phase = 'Redis restarted';
    await env.redis.restart();
    await publishers.untilMore(150, 'publishing after Redis came back');
    await allConnected('subscribers connected after the Redis restart');

    // 3. Node B is drained (a rolling update): its clients move to C.
    marks.drainB = publishers.acked.length;
    phase = 'node B drained';
    await takeOut(nodeB, 'subscribers of node B resumed on C', async () => {
      const exit = await nodeB.stop();
      assert.equal(exit.signal, null, `node B exited by itself: ${JSON.stringify(exit)}`);
    });
    await publishers.untilMore(100, 'publishing after node B drained');

    publishers.running = false;
    phase = 'stopping';
    await publishers.done;
    const acked = publishers.acked;

    for (const [i, s] of subscribers.entries()) {
      await pollUntil(
        async () => new Set(s.got.messages.map((m) => m.name)),
        (names) => acked.every((name) => names.has(name)),
        20_000,
        `subscriber ${i}: every acknowledged message`,
      ).catch((err) => {
        const names = new Set(s.got.messages.map((m) => m.name));
        const missing = acked.filter((name) => !names.has(name));
        const where = missing.slice(0, 10).map((name) => acked.indexOf(name));
        throw new Error(
          `${err.message}: ${missing.length} of ${acked.length} missing, e.g. ${missing.slice(0, 10)} (acknowledged as ${where}); ` +
            `notices ${JSON.stringify(s.notices)}, connection ${s.id} -> ${s.realtime.connection.id}, marks ${JSON.stringify(marks)}`,
        );
      });
      const names = s.got.messages.map((m) => m.name);
      assert.equal(new Set(names).size, names.length, `subscriber ${i}: no message twice`);
      const serials = s.got.messages.map((m) => m.serial);
      assert.ok(
        serials.every((serial, k) => k === 0 || serials[k - 1] < serial),
        `subscriber ${i}: in serial order`,
      );
      const lastSeq = new Map();
      for (const name of names) {
        const [, p, seq] = name.split('-').map(Number);
        assert.ok(!(lastSeq.get(p) >= seq), `subscriber ${i}: publisher ${p}'s messages in the order published`);
        lastSeq.set(p, seq);
      }
      assert.deepEqual(s.notices, [], `subscriber ${i}: never told continuity was lost`);
      assert.equal(s.realtime.connection.id, s.id, `subscriber ${i}: the same connection throughout`);
    }
  });
});

describe('a Sentinel failover under an ably-js realtime publisher (--redis-min-replicas 1)', () => {
  const env = { set: undefined, nodes: [], clients: [], loops: [] };
  before(async () => {
    env.set = await startSentinelSet();
    const args = ['--redis', env.set.url, '--redis-min-replicas', '1'];
    for (let i = 0; i < 2; i += 1) env.nodes.push(await startServer({ args }));
  });
  after(async () => {
    for (const loop of env.loops) loop.running = false;
    for (const client of env.clients) client.close();
    for (const node of env.nodes) await node.stop();
    await env.set?.stop();
  });

  test('every publish ably-js saw succeed across the master kill is delivered and in history, once, in order', async () => {
    const [nodeA, nodeB] = env.nodes;
    const channelName = uniq('sentinel:sdk');
    const connect = async (port) => {
      const realtime = new Ably.Realtime(clientOptions(port, { key: FULL_KEY }));
      env.clients.push(realtime);
      await awaitConnected(realtime);
      return realtime;
    };
    const subscriber = await connect(nodeB.port);
    const got = await new Collector().subscribe(subscriber.channels.get(channelName));
    const channel = (await connect(nodeA.port)).channels.get(channelName);
    await channel.attach();
    // One publish at a time, as an app sending chat lines; a refused one is not retried.
    const state = { acked: [], refused: [], running: true };
    env.loops.push(state);
    state.done = (async () => {
      for (let seq = 0; state.running; seq += 1) {
        try {
          await withTimeout(channel.publish(`s-${seq}`, String(seq)), 15_000, `publish s-${seq}`);
          state.acked.push(`s-${seq}`);
        } catch (err) {
          state.refused.push(err.code);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    })();
    const untilMore = (n, what) => {
      const target = state.acked.length + n;
      return pollUntil(async () => state.acked.length, (count) => count >= target, 30_000, what);
    };
    await untilMore(30, 'publishing before the kill');
    await env.set.killMaster();
    const promoted = await pollUntil(
      async () => env.set.masterPort(),
      (port) => env.set.replicas.includes(port),
      30_000,
      'Sentinel promotes a replica',
    );
    // Until the other replica follows the new master nothing is confirmed.
    await pollUntil(async () => env.set.onlineReplicas(promoted), (n) => n >= 1, 30_000, 'the other replica follows');
    await untilMore(30, 'publishing after the failover');
    state.running = false;
    await state.done;

    const { acked } = state;
    await pollUntil(
      async () => new Set(got.messages.map((m) => m.name)),
      (names) => acked.every((name) => names.has(name)),
      20_000,
      'every acknowledged publish delivered',
    );
    const delivered = got.messages.map((m) => m.name).filter((name) => acked.includes(name));
    assert.deepEqual(delivered, acked, 'delivered once each, in the order acknowledged');
    const rest = new Ably.Rest(clientOptions(nodeB.port, { key: FULL_KEY }));
    const page = await rest.channels.get(channelName).history({ direction: 'forwards', limit: 1000 });
    const stored = page.items.map((m) => m.name).filter((name) => acked.includes(name));
    assert.deepEqual(stored, acked, 'in history once each, in order');
    // Refusals during the failover say the bus could not confirm the publish.
    assert.ok(
      state.refused.every((code) => code === 50003),
      `refused only as unconfirmed: ${JSON.stringify(state.refused)}`,
    );
  });
});
