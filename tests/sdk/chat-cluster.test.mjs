// Ably Chat across two gateway nodes on one real redis-server: `@ably/chat` 1.4.0 clients on node A and
// node B share one room. A message sent through A reaches B's client; B's edit and delete reach A's;
// message reactions give the same summary on both; typing, room reactions and presence cross nodes;
// history, a single message and its versions read the same from either node.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ChatClient, ChatMessageEventType, MessageReactionType } from '@ably/chat';

import { FULL_KEY, startServer } from './server.mjs';
import { startRedis } from './cluster-helpers.mjs';
import { ClientPool, Events, awaitConnected, pollUntil, uniq, withTimeout } from './helpers.mjs';

describe('Ably Chat on two nodes with Redis', () => {
  const env = { redis: undefined, nodeA: undefined, nodeB: undefined, pools: [] };
  before(async () => {
    env.redis = await startRedis();
    env.nodeA = await startServer({ args: ['--redis', env.redis.url] });
    env.nodeB = await startServer({ args: ['--redis', env.redis.url] });
  });
  after(async () => {
    for (const pool of env.pools) await pool.closeAll();
    await env.nodeA?.stop();
    await env.nodeB?.stop();
    await env.redis?.stop();
  });

  test('messages, edits, deletes, reactions, typing, presence and history cross nodes', async () => {
    const [poolA, poolB] = [new ClientPool(env.nodeA.port), new ClientPool(env.nodeB.port)];
    env.pools.push(poolA, poolB);
    const aliceRealtime = poolA.realtime({ key: FULL_KEY, clientId: 'alice' });
    const bobRealtime = poolB.realtime({ key: FULL_KEY, clientId: 'bob' });
    await Promise.all([awaitConnected(aliceRealtime), awaitConnected(bobRealtime)]);
    const roomName = uniq('stream');
    const alice = await new ChatClient(aliceRealtime).rooms.get(roomName);
    const bob = await new ChatClient(bobRealtime).rooms.get(roomName);
    const [onA, onB, summariesA, summariesB, typingB, reactionsA] = Array.from({ length: 6 }, () => new Events());
    alice.messages.subscribe(onA.listener);
    bob.messages.subscribe(onB.listener);
    alice.messages.reactions.subscribe(summariesA.listener);
    bob.messages.reactions.subscribe(summariesB.listener);
    bob.typing.subscribe(typingB.listener);
    alice.reactions.subscribe(reactionsA.listener);
    await withTimeout(Promise.all([alice.attach(), bob.attach()]), 10_000, 'both attached');

    const sent = await alice.messages.send({ text: 'from A' });
    const heard = await onB.waitFor((e) => e.message.serial === sent.serial, 'A\'s message on B');
    assert.equal(heard.message.text, 'from A');

    const edited = await bob.messages.update(sent.serial, { text: 'edited on B' });
    const update = await onA.waitFor((e) => e.type === ChatMessageEventType.Updated, 'B\'s edit on A');
    assert.equal(update.message.text, 'edited on B');
    assert.equal(update.message.version.serial, edited.version.serial);

    await alice.messages.reactions.send(sent.serial, { type: MessageReactionType.Distinct, name: 'heart' });
    await bob.messages.reactions.send(sent.serial, { type: MessageReactionType.Distinct, name: 'heart' });
    for (const [summaries, node] of [
      [summariesA, 'A'],
      [summariesB, 'B'],
    ]) {
      const summary = await summaries.waitFor((e) => e.reactions.distinct.heart?.total === 2, `the summary on ${node}`);
      assert.deepEqual(summary.reactions.distinct.heart.clientIds, ['alice', 'bob'], node);
    }

    await alice.typing.keystroke();
    await typingB.waitFor((e) => e.currentlyTyping.has('alice'), 'A typing, seen on B');
    await bob.reactions.send({ name: 'fire' });
    await reactionsA.waitFor((e) => e.reaction.name === 'fire' && e.reaction.clientId === 'bob', 'B\'s room reaction on A');
    await alice.presence.enter({ role: 'creator' });
    await pollUntil(() => bob.presence.get(), (m) => m.some((p) => p.clientId === 'alice'), 15_000, 'A present, seen on B');

    await bob.messages.delete(sent.serial);
    await onA.waitFor((e) => e.type === ChatMessageEventType.Deleted, 'B\'s delete on A');
    for (const [room, node] of [
      [alice, 'A'],
      [bob, 'B'],
    ]) {
      const history = await room.messages.history({ limit: 10 });
      assert.deepEqual(
        history.items.map((m) => [m.serial, m.action]),
        [[sent.serial, 'message.delete']],
        `history on ${node}`,
      );
      const versions = await room.messages.getVersions(sent.serial);
      assert.deepEqual(
        versions.items.map((m) => m.action),
        ['message.create', 'message.update', 'message.delete'],
        `versions on ${node}`,
      );
    }
  });
});
