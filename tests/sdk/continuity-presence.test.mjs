// Presence: enter/update/leave broadcast to presence subscribers, the member set via SYNC on attach
// (HAS_PRESENCE), REST presence and presence history, occupancy presenceMembers/presenceConnections,
// a closed connection leaving at once, and members surviving a resumed transport drop.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, ClientPool, FORMATS, pollUntil, safeJson, tokenRequestAuthCallback, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';
import { PresenceCollector, allPages, dropTransport } from './continuity-helpers.mjs';

const members = (list) =>
  list
    .map((m) => `${m.clientId}=${safeJson(m.data)}`)
    .sort()
    .join(' ');

describe('presence', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: two members, a watcher's get(), SYNC for a late attach, one leave, REST presence, occupancy`, async () => {
      pool = new ClientPool(server.port);
      const opts = { useBinaryProtocol: format.useBinaryProtocol };
      const rest = pool.rest({ key: FULL_KEY, ...opts });
      const channelName = uniq(`presence:${format.name}`);
      const status = async () => (await rest.channels.get(channelName).status()).status?.occupancy?.metrics;

      // alice: key auth with a clientId option; bob: token auth whose token carries the clientId.
      const alice = pool.realtime({ key: FULL_KEY, clientId: 'alice', ...opts });
      const bob = pool.realtime({
        authCallback: tokenRequestAuthCallback(rest, { clientId: 'bob' }),
        ...opts,
      });
      const watcher = pool.realtime({ key: FULL_KEY, ...opts });
      await Promise.all([awaitConnected(alice), awaitConnected(bob), awaitConnected(watcher)]);

      const watched = await new PresenceCollector().subscribe(watcher.channels.get(channelName));
      const aliceChannel = alice.channels.get(channelName);
      const bobChannel = bob.channels.get(channelName);
      await withTimeout(aliceChannel.presence.enter({ name: 'Alice' }), 10_000, 'alice enter ACK');
      await withTimeout(bobChannel.presence.enter({ name: 'Bob' }), 10_000, 'bob enter ACK');

      const aliceEnter = await watched.waitFor((e) => e.action === 'enter' && e.clientId === 'alice', 5_000, 'alice enter');
      const bobEnter = await watched.waitFor((e) => e.action === 'enter' && e.clientId === 'bob', 5_000, 'bob enter');
      assert.equal(aliceEnter.connectionId, alice.connection.id, 'the server stamps the connectionId');
      assert.equal(bobEnter.connectionId, bob.connection.id);
      assert.deepEqual(aliceEnter.data, { name: 'Alice' });
      assert.match(aliceEnter.id, new RegExp(`^${alice.connection.id}:\\d+:\\d+$`), 'id = connectionId:msgSerial:index');
      assert.equal(typeof aliceEnter.timestamp, 'number');

      const seen = await withTimeout(watcher.channels.get(channelName).presence.get(), 10_000, 'watcher presence.get');
      assert.equal(members(seen), 'alice={"name":"Alice"} bob={"name":"Bob"}', `watcher sees both: ${safeJson(seen)}`);
      assert.ok(seen.every((m) => m.action === 'present' || m.action === 'enter'));

      // A client attaching now gets the set through SYNC (ATTACHED has HAS_PRESENCE).
      const wire = new WireLog();
      const late = pool.realtime({ key: FULL_KEY, useBinaryProtocol: !format.useBinaryProtocol, ...wire.options });
      await awaitConnected(late);
      const lateSeen = await withTimeout(late.channels.get(channelName).presence.get(), 10_000, 'late presence.get');
      assert.equal(members(lateSeen), 'alice={"name":"Alice"} bob={"name":"Bob"}', `late attach sees both: ${safeJson(lateSeen)}`);
      const attached = wire.receivedAction('ATTACHED').find((l) => l.includes(`channel=${channelName};`));
      assert.match(attached ?? '', /HAS_PRESENCE/, `ATTACHED has HAS_PRESENCE: ${attached}`);
      assert.ok(wire.receivedAction('SYNC').some((l) => l.includes(`channel=${channelName};`)), 'a SYNC followed');

      await pollUntil(
        status,
        (m) => m?.presenceMembers === 2 && m?.presenceConnections === 2,
        5_000,
        'occupancy presenceMembers=2, presenceConnections=2',
      );

      await withTimeout(bobChannel.presence.update({ name: 'Bob', busy: true }), 10_000, 'bob update ACK');
      await watched.waitFor((e) => e.action === 'update' && e.clientId === 'bob', 5_000, 'bob update');

      await withTimeout(aliceChannel.presence.leave(), 10_000, 'alice leave ACK');
      const leave = await watched.waitFor((e) => e.action === 'leave' && e.clientId === 'alice', 5_000, 'alice leave');
      assert.equal(leave.connectionId, alice.connection.id);
      // A later event as a marker: any duplicate leave would have been delivered before it.
      await withTimeout(bobChannel.presence.update({ name: 'Bob', busy: false }), 10_000, 'bob second update');
      await watched.waitFor(
        (e) => e.action === 'update' && e.clientId === 'bob' && e.data?.busy === false,
        5_000,
        'the marker update',
      );
      assert.deepEqual(
        watched.events.filter((e) => e.action === 'leave').map((e) => e.clientId),
        ['alice'],
        `exactly one leave event: ${watched.describe()}`,
      );

      const remaining = await watcher.channels.get(channelName).presence.get();
      assert.equal(members(remaining), 'bob={"name":"Bob","busy":false}');
      const restMembers = await withTimeout(rest.channels.get(channelName).presence.get(), 10_000, 'REST presence.get');
      assert.equal(members(restMembers.items), 'bob={"name":"Bob","busy":false}', `REST presence: ${safeJson(restMembers.items)}`);
      assert.equal(restMembers.items[0].action, 'present');
      assert.equal(restMembers.items[0].connectionId, bob.connection.id);
      const byClient = await rest.channels.get(channelName).presence.get({ clientId: 'alice' });
      assert.deepEqual(byClient.items, [], 'REST presence filtered by a clientId that left');
      await pollUntil(
        status,
        (m) => m?.presenceMembers === 1 && m?.presenceConnections === 1,
        5_000,
        'occupancy presenceMembers=1, presenceConnections=1',
      );

      // Closing a connection leaves at once (not after the 15 s grace of an abrupt drop).
      const closedAt = Date.now();
      await pool.close(bob);
      await watched.waitFor((e) => e.action === 'leave' && e.clientId === 'bob', 3_000, 'bob to leave on close');
      assert.ok(Date.now() - closedAt < 3_000);
      assert.equal((await rest.channels.get(channelName).presence.get()).items.length, 0, 'nobody left present');
      await pollUntil(status, (m) => m?.presenceMembers === 0, 5_000, 'occupancy presenceMembers=0');

      // Presence history, newest first, has every event.
      const history = await allPages(await rest.channels.get(channelName).presence.history({ limit: 3 }));
      const events = history.items.map((e) => `${e.action}:${e.clientId}`);
      assert.deepEqual(
        [...events].reverse(),
        ['enter:alice', 'enter:bob', 'update:bob', 'leave:alice', 'update:bob', 'leave:bob'],
        `presence history: ${safeJson(events)}`,
      );
      const forwards = await allPages(await rest.channels.get(channelName).presence.history({ direction: 'forwards', limit: 4 }));
      assert.deepEqual(forwards.items.map((e) => `${e.action}:${e.clientId}`), [...events].reverse());
    });
  }

  test('json: a member whose transport drops and resumes stays present: no leave, same member', async () => {
    pool = new ClientPool(server.port);
    const channelName = uniq('presence:resume');
    // Token auth: the resumed connection must be matched to the token's clientId.
    const member = pool.realtime({
      authCallback: tokenRequestAuthCallback(pool.rest({ key: FULL_KEY }), { clientId: 'carol' }),
      useBinaryProtocol: false,
    });
    const watcher = pool.realtime({ key: FULL_KEY, useBinaryProtocol: true });
    await Promise.all([awaitConnected(member), awaitConnected(watcher)]);
    const watched = await new PresenceCollector().subscribe(watcher.channels.get(channelName));
    const channel = member.channels.get(channelName);
    await withTimeout(channel.presence.enter('here'), 10_000, 'enter');
    await watched.waitFor((e) => e.action === 'enter' && e.clientId === 'carol', 5_000, 'enter');

    const { id } = await dropTransport(member, { abrupt: true });
    // Several presence broadcast periods while it is away: an early leave would show up here.
    await new Promise((r) => setTimeout(r, 400));
    const during = await new ClientPool(server.port).rest({ key: FULL_KEY }).channels.get(channelName).presence.get();
    assert.deepEqual(during.items.map((m) => m.clientId), ['carol'], 'still present while the connection is resumable');

    member.connection.connect();
    await awaitConnected(member);
    assert.equal(member.connection.id, id, 'resumed');
    await withTimeout(channel.presence.update('back'), 10_000, 'update after the resume');
    await watched.waitFor((e) => e.action === 'update' && e.data === 'back', 5_000, 'the update after the resume');
    assert.ok(
      !watched.events.some((e) => e.action === 'leave'),
      `no leave while the connection was resumable: ${watched.describe()}`,
    );
    const seen = await watcher.channels.get(channelName).presence.get();
    assert.deepEqual(seen.map((m) => `${m.clientId}:${m.connectionId}:${m.data}`), [`carol:${id}:back`]);
  });

  test('msgpack: a watcher whose transport drops learns, on resume, who entered and who left meanwhile', async () => {
    pool = new ClientPool(server.port);
    const channelName = uniq('presence:watcher-resume');
    const carol = pool.realtime({ key: FULL_KEY, clientId: 'carol' });
    const dave = pool.realtime({ key: FULL_KEY, clientId: 'dave', useBinaryProtocol: false });
    const watcher = pool.realtime({ key: FULL_KEY });
    await Promise.all([awaitConnected(carol), awaitConnected(dave), awaitConnected(watcher)]);
    const watchedChannel = watcher.channels.get(channelName);
    const watched = await new PresenceCollector().subscribe(watchedChannel);
    await withTimeout(carol.channels.get(channelName).presence.enter('c'), 10_000, 'carol enter');
    await watched.waitFor((e) => e.action === 'enter' && e.clientId === 'carol', 5_000, 'carol enter');

    const { id } = await dropTransport(watcher);
    await withTimeout(dave.channels.get(channelName).presence.enter('d'), 10_000, 'dave enter');
    await pool.close(carol); // leaves at once
    const rest = pool.rest({ key: FULL_KEY });
    await pollUntil(
      async () => (await rest.channels.get(channelName).presence.get()).items.map((m) => m.clientId),
      (ids) => ids.join() === 'dave',
      5_000,
      'the server to have dave only',
    );
    assert.equal(watched.events.length, 1, 'nothing reached the watcher while it was away');

    watcher.connection.connect();
    await awaitConnected(watcher);
    assert.equal(watcher.connection.id, id, 'resumed');
    await watched.waitFor((e) => e.action === 'leave' && e.clientId === 'carol', 5_000, 'carol leave after the resume');
    await watched.waitFor(
      (e) => ['enter', 'present'].includes(e.action) && e.clientId === 'dave',
      5_000,
      'dave after the resume',
    );
    const seen = await withTimeout(watchedChannel.presence.get(), 10_000, 'presence.get after the resume');
    assert.deepEqual(seen.map((m) => m.clientId), ['dave'], `members after the resume: ${safeJson(seen)}`);
  });

  test('json: REST presence.get pages with limit and next() like history', async () => {
    pool = new ClientPool(server.port);
    const channelName = uniq('presence:paged');
    const clients = ['p1', 'p2', 'p3'].map((clientId) => pool.realtime({ key: FULL_KEY, clientId, useBinaryProtocol: false }));
    await Promise.all(clients.map((c) => awaitConnected(c)));
    await Promise.all(clients.map((c) => withTimeout(c.channels.get(channelName).presence.enter(), 10_000, 'enter')));
    const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: false });
    await pollUntil(
      async () => (await rest.channels.get(channelName).presence.get()).items.length,
      (n) => n === 3,
      5_000,
      'three members over REST',
    );
    const first = await rest.channels.get(channelName).presence.get({ limit: 2 });
    assert.equal(first.items.length, 2, 'limit=2 gives two members');
    assert.equal(first.hasNext(), true, 'and a next page for the third (no silent truncation)');
    const all = await allPages(first);
    assert.deepEqual(all.items.map((m) => m.clientId).sort(), ['p1', 'p2', 'p3']);
  });
});
