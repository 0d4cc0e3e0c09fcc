// Ably Chat through the unmodified `@ably/chat` 1.4.0 SDK (on ably-js 2.28): rooms on `room::$chat`
// channels, messages sent, received, edited, deleted, their versions and history (the Chat REST API,
// /chat/v4/...), typing and room reactions as ephemeral messages that history never holds, presence and
// occupancy; and a key whose capability names another room refused. JSON and msgpack.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ChatClient, ChatMessageEventType, MessageReactionType } from '@ably/chat';

import { FULL_KEY } from './server.mjs';
import { ClientPool, Events, FORMATS, awaitConnected, expectRejection, pollUntil, uniq, useServer, withTimeout } from './helpers.mjs';
import { signJwt } from './supabase-helpers.mjs';

// Chat rooms live in the `room` namespace; its rule makes them mutable.
const dir = mkdtempSync(path.join(os.tmpdir(), 'chat-sdk-'));
const configFile = path.join(dir, 'realtime.toml');
writeFileSync(configFile, '[[history.namespace]]\nname = "room"\nmutable_messages = true\n');
const OTHER_ROOM_KEY = 'app1.other:secretother';
const keys = `${FULL_KEY},${OTHER_ROOM_KEY}=${JSON.stringify({ 'room:other': ['*'] })}`;

describe('Ably Chat SDK', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool, { keys, args: ['--config', configFile] });

  for (const format of FORMATS) {
    test(`${format.name}: messages, edits, deletes, versions, history, typing, reactions, presence, occupancy`, async () => {
      pool = new ClientPool(server.port);
      const options = (clientId) => ({ key: FULL_KEY, clientId, useBinaryProtocol: format.useBinaryProtocol });
      const [aliceRealtime, bobRealtime] = await pool.connected(options('alice'), options('bob'));
      const roomName = uniq(`room:chat-${format.name}`);
      const alice = await new ChatClient(aliceRealtime).rooms.get(roomName, { occupancy: { enableEvents: true } });
      const bob = await new ChatClient(bobRealtime).rooms.get(roomName, { occupancy: { enableEvents: true } });

      const bobMessages = new Events();
      const typing = new Events();
      const reactions = new Events();
      const occupancy = new Events();
      const subscription = bob.messages.subscribe(bobMessages.listener);
      bob.typing.subscribe(typing.listener);
      bob.reactions.subscribe(reactions.listener);
      bob.occupancy.subscribe(occupancy.listener);
      await withTimeout(Promise.all([alice.attach(), bob.attach()]), 10_000, 'both rooms attached');

      const before = await withTimeout(alice.messages.send({ text: 'before', metadata: { n: 1 } }), 10_000, 'send');
      assert.equal(before.text, 'before');
      assert.equal(before.clientId, 'alice');
      assert.deepEqual(before.metadata, { n: 1 });
      const received = await bobMessages.waitFor((e) => e.message.serial === before.serial, 'the sent message');
      assert.equal(received.type, ChatMessageEventType.Created);
      assert.equal(received.message.text, 'before');
      assert.equal(received.message.clientId, 'alice');

      const sent = await alice.messages.send({ text: 'hello', headers: { lang: 'en' } });
      const edited = await withTimeout(
        alice.messages.update(sent.serial, { text: 'hello, edited' }, { description: 'typo' }),
        10_000,
        'update',
      );
      assert.equal(edited.text, 'hello, edited');
      assert.equal(edited.serial, sent.serial);
      assert.ok(edited.version.serial > sent.serial, 'a later version');
      assert.deepEqual(edited.headers, {}, 'PUT semantics: headers left out are cleared');
      const update = await bobMessages.waitFor((e) => e.type === ChatMessageEventType.Updated, 'the update');
      assert.equal(update.message.text, 'hello, edited');
      assert.equal(update.message.version.serial, edited.version.serial);
      assert.equal(update.message.version.description, 'typo');

      const deleted = await withTimeout(alice.messages.delete(sent.serial, { description: 'gone' }), 10_000, 'delete');
      assert.equal(deleted.action, 'message.delete');
      assert.equal(deleted.text, '', 'a deleted message keeps no text');
      const gone = await bobMessages.waitFor((e) => e.type === ChatMessageEventType.Deleted, 'the delete');
      assert.equal(gone.message.serial, sent.serial);
      assert.equal(gone.message.version.description, 'gone');

      const got = await bob.messages.get(sent.serial);
      assert.equal(got.action, 'message.delete');
      const versions = await bob.messages.getVersions(sent.serial);
      assert.deepEqual(
        versions.items.map((m) => m.action),
        ['message.create', 'message.update', 'message.delete'],
      );

      // Typing and room reactions are ephemeral: delivered live, never in history.
      await alice.typing.keystroke();
      await typing.waitFor((e) => e.currentlyTyping.has('alice'), 'alice typing');
      await alice.reactions.send({ name: 'heart' });
      const heart = await reactions.waitFor((e) => e.reaction.name === 'heart', 'the room reaction');
      assert.equal(heart.reaction.clientId, 'alice');

      const history = await bob.messages.history({ limit: 10 });
      assert.deepEqual(
        history.items.map((m) => m.text),
        ['', 'before'],
        'newest first, latest versions (the deleted one keeps no text), no typing or reactions',
      );
      // History before a subscription: from the attach for one made before it (nothing was sent
      // yet), from the channel's position for one made while attached.
      const atAttach = await subscription.historyBeforeSubscribe({ limit: 10 });
      assert.deepEqual(atAttach.items, []);
      const later = bob.messages.subscribe(() => {});
      const earlier = await later.historyBeforeSubscribe({ limit: 10 });
      assert.deepEqual(
        earlier.items.map((m) => m.serial),
        [sent.serial, before.serial],
      );

      await alice.presence.enter({ status: 'live' });
      const members = await pollUntil(
        () => bob.presence.get(),
        (m) => m.some((member) => member.clientId === 'alice'),
        10_000,
        'alice present',
      );
      assert.deepEqual(members.find((member) => member.clientId === 'alice').data, { status: 'live' });
      const counted = await bob.occupancy.get();
      assert.equal(counted.connections, 2);
      assert.equal(counted.presenceMembers, 1);
      await occupancy.waitFor((e) => e.occupancy.connections === 2, 'an occupancy event', 20_000);
    });
  }

  test('message reactions: summaries to every subscriber, a client\'s own reactions by REST', async () => {
    pool = new ClientPool(server.port);
    const options = (clientId) => ({ key: FULL_KEY, clientId });
    const [aliceRealtime, bobRealtime] = await pool.connected(options('alice'), options('bob'));
    const roomName = uniq('reactions');
    const alice = await new ChatClient(aliceRealtime).rooms.get(roomName);
    const bob = await new ChatClient(bobRealtime).rooms.get(roomName);
    const summaries = new Events();
    bob.messages.reactions.subscribe(summaries.listener);
    await withTimeout(Promise.all([alice.attach(), bob.attach()]), 10_000, 'attached');
    const message = await alice.messages.send({ text: 'react to me' });
    await alice.messages.reactions.send(message.serial, { type: MessageReactionType.Distinct, name: 'heart' });
    await bob.messages.reactions.send(message.serial, { type: MessageReactionType.Distinct, name: 'heart' });
    await bob.messages.reactions.send(message.serial, { type: MessageReactionType.Distinct, name: 'rocket' });
    const summary = await summaries.waitFor(
      (e) => e.reactions.distinct.heart?.total === 2 && e.reactions.distinct.rocket?.total === 1,
      'a summary of all three',
    );
    assert.equal(summary.messageSerial, message.serial);
    assert.deepEqual(summary.reactions.distinct.heart.clientIds, ['alice', 'bob'], 'in the order they reacted');
    const bobs = await alice.messages.reactions.clientReactions(message.serial, 'bob');
    assert.deepEqual(Object.keys(bobs.distinct).sort(), ['heart', 'rocket']);
    assert.deepEqual(bobs.distinct.heart.clientIds, ['bob']);
    const alices = await alice.messages.reactions.clientReactions(message.serial);
    assert.deepEqual(Object.keys(alices.distinct), ['heart']);

    await bob.messages.reactions.delete(message.serial, { type: MessageReactionType.Distinct, name: 'rocket' });
    await summaries.waitFor((e) => e.reactions.distinct.rocket === undefined, 'the rocket gone from the summary');
    const history = await bob.messages.history({ limit: 1 });
    assert.equal(history.items[0].reactions.distinct.heart.total, 2, 'history carries the summary');
  });

  test('userClaim: from the JWT, on messages, edits, typing and presence, never forged', async () => {
    pool = new ClientPool(server.port);
    const roomName = uniq('claims');
    const [keyName, secret] = FULL_KEY.split(':');
    const jwtFor = (clientId, claim) => {
      const now = Math.floor(Date.now() / 1000);
      const claims = { iat: now, exp: now + 600, 'x-ably-clientId': clientId, [`ably.room.${roomName}`]: claim };
      return signJwt(claims, { alg: 'HS256', secret, kid: keyName });
    };
    const client = (clientId, claim) =>
      pool.realtime({ clientId, authCallback: (_, callback) => callback(null, jwtFor(clientId, claim)) });
    const [creator, moderator] = [client('creator', 'creator-tier'), client('mod', 'moderator')];
    await Promise.all([awaitConnected(creator), awaitConnected(moderator)]);
    const room = await new ChatClient(creator).rooms.get(roomName);
    const watch = await new ChatClient(moderator).rooms.get(roomName);
    const messages = new Events();
    const typing = new Events();
    watch.messages.subscribe(messages.listener);
    watch.typing.subscribe(typing.listener);
    await withTimeout(Promise.all([room.attach(), watch.attach()]), 10_000, 'attached');

    const sent = await room.messages.send({ text: 'hi' });
    assert.equal(sent.userClaim, 'creator-tier');
    const heard = await messages.waitFor((e) => e.message.serial === sent.serial, 'the message');
    assert.equal(heard.message.userClaim, 'creator-tier');
    const deleted = await watch.messages.delete(sent.serial);
    assert.equal(deleted.userClaim, 'moderator', 'a change carries its editor\'s claim');

    await room.typing.keystroke();
    const typingEvent = await typing.waitFor((e) => e.currentlyTyping.has('creator'), 'typing');
    assert.equal(typingEvent.change.userClaim, 'creator-tier');
    await room.presence.enter();
    const members = await pollUntil(() => watch.presence.get(), (m) => m.length === 1, 10_000, 'the creator present');
    assert.equal(members[0].userClaim, 'creator-tier');

    // A client writing its own claim gets the server's instead.
    const raw = new Events();
    await moderator.channels.get(`${roomName}::$chat`).subscribe('forgery', raw.listener);
    await creator.channels
      .get(`${roomName}::$chat`)
      .publish({ name: 'forgery', data: 'x', extras: { ephemeral: true, userClaim: 'forged' } });
    const received = await raw.waitFor(() => true, 'the message with a forged claim');
    assert.equal(received.extras.userClaim, 'creator-tier');
  });

  test("a JWT's per-attachment publish limit (ably.limits.publish.perAttachment.maxRate.*)", async () => {
    pool = new ClientPool(server.port);
    const [keyName, secret] = FULL_KEY.split(':');
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt(
      { iat: now, exp: now + 600, 'x-ably-clientId': 'fan', 'ably.limits.publish.perAttachment.maxRate.slow:*': 1 },
      { alg: 'HS256', secret, kid: keyName },
    );
    const realtime = pool.realtime({ authCallback: (_, callback) => callback(null, token) });
    await awaitConnected(realtime);
    const slow = realtime.channels.get(uniq('slow:room'));
    const free = realtime.channels.get(uniq('free:room'));
    await withTimeout(Promise.all([slow.attach(), free.attach()]), 10_000, 'attached');
    await withTimeout(slow.publish('m', 'one'), 10_000, 'the first');
    const refused = await expectRejection(slow.publish('m', 'two'), 10_000, 'a second within the second');
    assert.equal(refused.code, 42911, refused.message);
    for (const n of [1, 2, 3]) {
      await withTimeout(free.publish('m', String(n)), 10_000, 'unlimited elsewhere');
    }
  });

  test('a capability for another room is refused', async () => {
    pool = new ClientPool(server.port);
    const realtime = pool.realtime({ key: OTHER_ROOM_KEY, clientId: 'carol' });
    await awaitConnected(realtime);
    const chat = new ChatClient(realtime);
    const mine = await chat.rooms.get('room:other');
    await withTimeout(mine.attach(), 10_000, 'own room attaches');
    await withTimeout(mine.messages.send({ text: 'ok' }), 10_000, 'own room send');
    const theirs = await chat.rooms.get(uniq('room:private'));
    const refused = await expectRejection(theirs.messages.send({ text: 'no' }), 10_000, 'send to another room');
    assert.equal(refused.code, 40160, refused.message);
  });
});
