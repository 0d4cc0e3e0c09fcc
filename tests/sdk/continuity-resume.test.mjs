// Continuity across transport drops: resume (same connection, every missed message exactly once, in order,
// channels stay attached with RESUMED), recover (a new client takes over the connection with a recovery key),
// and refused resumes (unknown key, server restarted): a new connection id with 80008, channels re-attached
// with resumed=false.
//
// How "published while the transport is down" is guaranteed: see dropTransport() in continuity-helpers.mjs.
// In short, the ably-js test-suite technique (request `disconnected`, then disconnectAllTransports) leaves
// the client disconnected with NO retry timer; it only reconnects when the test calls connection.connect(),
// after every REST publish of the gap has been acknowledged by the server.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { FULL_KEY, startServer } from './server.mjs';
import { awaitConnected, awaitConnectionState, ClientPool, Collector, FORMATS, safeJson, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';
import {
  abandonTransport,
  dropTransport,
  jsonSubscriberAfterOne,
  names,
  nextChannelChange,
  publishNumbered,
  recordChannelChanges,
} from './continuity-helpers.mjs';

const range = (prefix, from, to) => Array.from({ length: to - from }, (_, k) => `${prefix}-${from + k}`);

/** Frames received for `channelName` since index `from` of wire.received(). */
function framesFor(wire, channelName, from = 0) {
  return wire
    .received()
    .slice(from)
    .filter((l) => l.includes(`channel=${channelName};`) || l.includes(`channel=${channelName}]`));
}

function assertNoDuplicates(collector) {
  const ids = collector.messages.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `every message delivered once: ${collector.describe(50)}`);
}

describe('resume after a dropped transport', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    for (const abrupt of [false, true]) {
      const how = abrupt ? 'socket destroyed without DISCONNECT' : 'DISCONNECT + close (ably-js test way)';
      test(`${format.name}, ${how}: 10 messages published meanwhile arrive exactly once, in order, same connection`, async () => {
        pool = new ClientPool(server.port);
        const wire = new WireLog();
        const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
        const [sub] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol, ...wire.options });

        const channelName = uniq(`resume:${format.name}:${abrupt ? 'abrupt' : 'clean'}`);
        const channel = sub.channels.get(channelName);
        const got = await new Collector().subscribe(channel);
        const restChannel = rest.channels.get(channelName);
        await publishNumbered(restChannel, 'before', 2);
        await got.waitForCount(2, 10_000, 'the two messages before the drop');
        const serialBeforeDrop = channel.properties.channelSerial;
        assert.ok(serialBeforeDrop, 'the client holds a channelSerial from the messages it received');

        const changes = recordChannelChanges(channel);
        const { id, key } = await dropTransport(sub, { abrupt });

        // Published while the subscriber has no transport: the client is disconnected with no retry
        // scheduled, and each REST publish is acknowledged before the next.
        await publishNumbered(restChannel, 'missed', 10);
        assert.equal(sub.connection.state, 'disconnected', 'still disconnected after the 10 publishes');
        assert.deepEqual(names(got.messages), range('before', 0, 2), 'nothing arrived while the transport was down');

        const receivedBefore = wire.received().length;
        const attachesBefore = wire.sentAction('ATTACH').length;
        sub.connection.connect();
        const reconnected = await awaitConnectionState(sub, 'connected', 10_000);
        const uri = wire.connectUris().at(-1);
        assert.ok(
          uri.includes(`resume=${encodeURIComponent(key)}`),
          `ably-js reconnected with resume=<connectionKey>: ${uri}`,
        );
        assert.equal(sub.connection.id, id, 'resume keeps the connection id');
        assert.ok(!reconnected.reason, `a successful resume has no error: ${safeJson(reconnected.reason)}`);

        await got.waitForCount(12, 10_000, 'the 10 missed messages');
        // A live message after the replay: had anything been replayed twice, it would precede this one.
        await publishNumbered(restChannel, 'after', 1);
        await got.waitFor((m) => m.name === 'after-0', 10_000, 'the live message after the resume');
        assert.deepEqual(
          names(got.messages),
          [...range('before', 0, 2), ...range('missed', 0, 10), 'after-0'],
          'every message exactly once, in publish order',
        );
        assertNoDuplicates(got);
        const stored = (await restChannel.history({ direction: 'forwards' })).items;
        assert.deepEqual(
          got.messages.map((m) => `${m.id}@${m.serial}`),
          stored.map((m) => `${m.id}@${m.serial}`),
          'the replayed messages are the stored ones (same ids and serials as history)',
        );
        assert.deepEqual(
          got.messages.map((m) => m.data.i),
          [0, 1, ...Array.from({ length: 10 }, (_, k) => k), 0],
        );

        // Wire: ATTACH carried the last channelSerial, ATTACHED came back RESUMED, then the replay.
        const reattach = wire.sentAction('ATTACH').slice(attachesBefore);
        assert.ok(
          reattach.some((l) => l.includes(`channel=${channelName};`) && l.includes(`channelSerial=${serialBeforeDrop}`)),
          `re-ATTACH carries channelSerial=${serialBeforeDrop}: ${safeJson(reattach)}`,
        );
        const frames = framesFor(wire, channelName, receivedBefore);
        const attachedAt = frames.findIndex((l) => l.includes('action=ATTACHED'));
        assert.ok(attachedAt >= 0, `an ATTACHED after reconnecting: ${safeJson(frames)}`);
        assert.match(frames[attachedAt], /flags=[^\]]*RESUMED/, `ATTACHED has the RESUMED flag: ${frames[attachedAt]}`);
        assert.doesNotMatch(frames[attachedAt], /error=/, 'RESUMED ATTACHED carries no error');
        const firstMissed = frames.findIndex((l) => l.includes('action=MESSAGE'));
        assert.ok(firstMissed > attachedAt, `the replay follows the ATTACHED: ${safeJson(frames)}`);

        // The channel never lost continuity: at most attaching → attached(resumed), never resumed=false.
        assert.equal(channel.state, 'attached');
        for (const change of changes) {
          assert.ok(
            ['attaching', 'attached'].includes(change.current),
            `unexpected channel state change ${safeJson(change)}`,
          );
          if (change.current === 'attached') assert.equal(change.resumed, true, `resumed: ${safeJson(change)}`);
        }
        assert.ok(!changes.some((c) => c.current === 'update'), `no update event: ${safeJson(changes)}`);
      });
    }
  }

  test('msgpack: several channels resume together, including one attached before any message and one with no gap', async () => {
    pool = new ClientPool(server.port);
    const wire = new WireLog();
    const rest = pool.rest({ key: FULL_KEY });
    const [sub] = await pool.connected({ key: FULL_KEY, ...wire.options });
    const [busy, empty, quiet] = ['busy', 'empty', 'quiet'].map((n) => uniq(`resume-multi:${n}`));
    const got = {};
    for (const name of [busy, empty, quiet]) got[name] = await new Collector().subscribe(sub.channels.get(name));
    await publishNumbered(rest.channels.get(busy), 'b', 3);
    await publishNumbered(rest.channels.get(quiet), 'q', 2);
    await got[busy].waitForCount(3, 10_000, 'busy before');
    await got[quiet].waitForCount(2, 10_000, 'quiet before');
    // `empty` was attached before anything was ever published: its channelSerial is the ATTACHED one.
    assert.ok(sub.channels.get(empty).properties.channelSerial, 'empty channel has the ATTACHED channelSerial');

    const { id } = await dropTransport(sub);
    await publishNumbered(rest.channels.get(busy), 'b', 4, 3);
    await publishNumbered(rest.channels.get(empty), 'e', 3);
    const receivedBefore = wire.received().length;
    sub.connection.connect();
    await awaitConnected(sub);
    assert.equal(sub.connection.id, id, 'resumed');
    await got[busy].waitForCount(7, 10_000, 'busy replay');
    await got[empty].waitForCount(3, 10_000, 'empty replay');
    for (const name of [busy, empty, quiet]) await publishNumbered(rest.channels.get(name), 'live', 1);
    for (const name of [busy, empty, quiet]) await got[name].waitFor((m) => m.name === 'live-0', 10_000, `live on ${name}`);
    assert.deepEqual(names(got[busy].messages), [...range('b', 0, 7), 'live-0']);
    assert.deepEqual(names(got[empty].messages), [...range('e', 0, 3), 'live-0']);
    assert.deepEqual(names(got[quiet].messages), [...range('q', 0, 2), 'live-0']);
    for (const name of [busy, empty, quiet]) {
      const attached = framesFor(wire, name, receivedBefore).find((l) => l.includes('action=ATTACHED'));
      assert.match(attached ?? '', /RESUMED/, `${name}: ATTACHED with RESUMED: ${attached}`);
      assert.equal(sub.channels.get(name).state, 'attached');
    }
  });

  test('json: a steady stream published across the drop and the resume arrives without gaps or duplicates', async () => {
    // A realtime publisher keeps publishing (each awaited until ACKed) before the drop, during the gap and
    // while the subscriber reconnects and re-attaches: the hand-over from replay to live must lose nothing.
    pool = new ClientPool(server.port);
    const {
      subscriber: sub,
      name: channelName,
      received: got,
      channel: pubChannel,
    } = await pool.publisherAndSubscriber('resume:stream', { key: FULL_KEY, useBinaryProtocol: true }, { key: FULL_KEY, useBinaryProtocol: false });
    let stop = false;
    let sent = 0;
    const pump = (async () => {
      while (!stop) {
        await pubChannel.publish(`s-${sent}`, { i: sent });
        sent += 1;
      }
    })();
    const sentAtLeast = (n) =>
      withTimeout(
        (async () => {
          while (sent < n) await new Promise((r) => setTimeout(r, 5));
        })(),
        10_000,
        `${n} publishes`,
      );
    try {
      await sentAtLeast(20);
      const { id } = await dropTransport(sub, { abrupt: true });
      const atDrop = sent;
      await sentAtLeast(atDrop + 20);
      sub.connection.connect();
      await awaitConnected(sub);
      assert.equal(sub.connection.id, id, 'resumed');
      const afterResume = sent;
      await sentAtLeast(afterResume + 20);
    } finally {
      stop = true;
      await withTimeout(pump, 10_000, 'the publisher loop to stop');
    }
    await got.waitForCount(sent, 10_000, `all ${sent} messages`);
    await new Promise((r) => setTimeout(r, 100)); // room for a duplicate to show up
    assert.deepEqual(names(got.messages), range('s', 0, sent), 'every message once, in order, across the resume');
  });

  test('json: a publish sent but not acknowledged before the drop is not duplicated after the resume', async () => {
    // ably-js resends unacknowledged publishes with their msgSerial after a successful resume; the server
    // must de-duplicate by (connectionId, msgSerial). To lose the ACK deterministically, the drop is started
    // from ably-js' log handler at the moment it logs "Protocol.send() sending msg; [ProtocolMessage;
    // action=MESSAGE…]": the MESSAGE is still written to the socket, then (next tick, before any socket read)
    // DISCONNECT is written and the socket closed, so the server processes the MESSAGE but its ACK is never
    // read by the client.
    pool = new ClientPool(server.port);
    const wire = new WireLog();
    let onMessageSend = null;
    const logHandler = (line) => {
      wire.options.logHandler(line);
      const text = String(line);
      if (onMessageSend && text.includes('Protocol.send()') && text.includes('action=MESSAGE')) {
        const hook = onMessageSend;
        onMessageSend = null;
        hook();
      }
    };
    const [publisher, observer] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: false, logLevel: 4, logHandler }, { key: FULL_KEY, useBinaryProtocol: true });
    const channelName = uniq('resume:resend');
    const pubChannel = publisher.channels.get(channelName);
    await withTimeout(pubChannel.attach(), 10_000, 'publisher attach');
    const seen = await new Collector().subscribe(observer.channels.get(channelName));

    let dropped;
    onMessageSend = () => {
      dropped = dropTransport(publisher);
    };
    const published = pubChannel.publish('once', 'only once');
    await seen.waitFor((m) => m.name === 'once', 10_000, 'the observer to get the message');
    assert.ok(dropped, 'the drop was triggered by the MESSAGE send');
    const { id } = await dropped;
    assert.equal(wire.receivedAction('ACK').length, 0, 'the client never read the ACK');

    publisher.connection.connect();
    await awaitConnectionState(publisher, 'connected');
    assert.equal(publisher.connection.id, id, 'resumed');
    await withTimeout(published, 10_000, 'the resent publish to be acknowledged');
    const sends = wire.sentAction('MESSAGE').filter((l) => l.includes('msgSerial=0'));
    assert.equal(sends.length, 2, `the MESSAGE was sent twice (original + resend): ${safeJson(sends)}`);
    await withTimeout(pubChannel.publish('marker', 'after'), 10_000, 'ACK of the marker');
    await seen.waitFor((m) => m.name === 'marker', 10_000, 'the marker');
    assert.deepEqual(names(seen.messages), ['once', 'marker'], 'the resent publish was not delivered twice');
  });

  test('msgpack: recover with createRecoveryKey() takes over the connection and replays what was missed', async () => {
    pool = new ClientPool(server.port);
    const rest = pool.rest({ key: FULL_KEY });
    const [first] = await pool.connected({ key: FULL_KEY });
    const channelName = uniq('recover');
    const restChannel = rest.channels.get(channelName);
    const firstGot = await new Collector().subscribe(first.channels.get(channelName));
    await publishNumbered(restChannel, 'before', 3);
    await firstGot.waitForCount(3, 10_000, 'messages before the recovery key');
    const recoveryKey = first.connection.createRecoveryKey();
    const recovery = JSON.parse(recoveryKey);
    assert.equal(typeof recovery.channelSerials?.[channelName], 'string', `recovery key names the channel: ${recoveryKey}`);
    const { id } = await dropTransport(first); // `first` stays disconnected for good

    await publishNumbered(restChannel, 'missed', 5);

    const wire = new WireLog();
    const second = pool.realtime({ key: FULL_KEY, recover: recoveryKey, ...wire.options });
    const connected = await awaitConnectionState(second, 'connected');
    assert.ok(wire.connectUris().at(-1).includes('recover='), `connected with recover=: ${wire.connectUris().at(-1)}`);
    assert.equal(second.connection.id, id, 'recover keeps the connection id');
    assert.ok(!connected.reason, `a successful recover has no error: ${safeJson(connected.reason)}`);

    const channel = second.channels.get(channelName);
    const attached = nextChannelChange(channel, (c) => c.current === 'attached', 10_000, 'attached');
    const got = await new Collector().subscribe(channel);
    assert.equal((await attached).resumed, true, 'the recovered channel attaches with resumed=true');
    await got.waitForCount(5, 10_000, 'the 5 missed messages');
    await publishNumbered(restChannel, 'after', 1);
    await got.waitFor((m) => m.name === 'after-0', 10_000, 'the live message');
    assert.deepEqual(names(got.messages), [...range('missed', 0, 5), 'after-0'], 'missed ones exactly once, then live');
    assertNoDuplicates(got);
  });

  test('json: recover after the original connection was closed → new connection id, 80008, resumed=false', async () => {
    pool = new ClientPool(server.port);
    const [first] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: false });
    const channelName = uniq('recover-closed');
    const firstGot = await new Collector().subscribe(first.channels.get(channelName));
    await publishNumbered(pool.rest({ key: FULL_KEY }).channels.get(channelName), 'before', 1);
    await firstGot.waitForCount(1, 10_000, 'a message before the recovery key');
    const recoveryKey = first.connection.createRecoveryKey();
    const oldId = first.connection.id;
    await pool.close(first); // CLOSE: the server discards the connection

    const second = pool.realtime({ key: FULL_KEY, recover: recoveryKey, useBinaryProtocol: false });
    const connected = await awaitConnectionState(second, 'connected');
    assert.notEqual(second.connection.id, oldId, 'a closed connection cannot be recovered');
    assert.equal(connected.reason?.code, 80008, `80008: ${safeJson(connected.reason)}`);
    const channel = second.channels.get(channelName);
    const attached = nextChannelChange(channel, (c) => c.current === 'attached');
    await withTimeout(channel.attach(), 10_000, 'attach');
    assert.equal((await attached).resumed, false, 'the recovered channel is not resumed');
  });

  for (const format of FORMATS) {
    test(`${format.name}: resume with a connection key the server never issued → new connection, 80018, resumed=false`, async () => {
      pool = new ClientPool(server.port);
      const wire = new WireLog();
      const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
      const [sub] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol, ...wire.options });
      const channelName = uniq(`resume-refused:${format.name}`);
      const channel = sub.channels.get(channelName);
      const got = await new Collector().subscribe(channel);
      const restChannel = rest.channels.get(channelName);
      await publishNumbered(restChannel, 'before', 2);
      await got.waitForCount(2, 10_000, 'messages before the drop');

      const { id } = await dropTransport(sub);
      // Sabotage the resume the way ably-js' resume_lost_continuity test does: a key nobody issued.
      const fake = `${randomBytes(6).toString('hex')}!${randomBytes(8).toString('hex')}`;
      sub.connection.connectionManager.connectionKey = fake;
      await publishNumbered(restChannel, 'missed', 3);

      const receivedBefore = wire.received().length;
      const reattached = nextChannelChange(
        channel,
        (c) => c.current === 'attached' || c.current === 'update',
        10_000,
        'the channel to re-attach',
      );
      sub.connection.connect();
      const connected = await awaitConnectionState(sub, 'connected');
      assert.ok(wire.connectUris().at(-1).includes(`resume=${encodeURIComponent(fake)}`), 'tried to resume');
      assert.notEqual(sub.connection.id, id, 'a refused resume gives a new connection id');
      assert.equal(connected.reason?.code, 80018, `connected with error 80018 (invalid key): ${safeJson(connected.reason)}`);
      const change = await reattached;
      assert.equal(change.resumed, false, `the channel reports resumed=false: ${safeJson(change)}`);
      assert.equal(channel.state, 'attached');
      const attachedFrames = framesFor(wire, channelName, receivedBefore).filter((l) => l.includes('action=ATTACHED'));
      assert.ok(attachedFrames.length >= 1);
      assert.doesNotMatch(attachedFrames[0], /RESUMED/, `no RESUMED flag: ${attachedFrames[0]}`);

      // The new connection works: its msgSerial restarted at 0 and publishes are acknowledged.
      await withTimeout(channel.publish('own', 'after refusal'), 10_000, 'ACK of a publish on the new connection');
      await publishNumbered(restChannel, 'after', 1);
      await got.waitFor((m) => m.name === 'after-0', 10_000, 'live messages on the new connection');
      assert.ok(names(got.messages).includes('own'));
      assertNoDuplicates(got);
      assert.ok(
        !names(got.messages).slice(2).some((n) => n.startsWith('before-')),
        `nothing from before the drop is delivered again: ${got.describe(50)}`,
      );
    });
  }

  test('json: resume succeeds but the channel position fell out of the log (>500 messages) → resumed=false with an error', async () => {
    pool = new ClientPool(server.port);
    const { sub, channel, got, restChannel } = await jsonSubscriberAfterOne(pool, 'resume-gap');
    const { id } = await dropTransport(sub);
    // 520 messages > the default log of 500: the subscriber's position is evicted.
    for (let batch = 0; batch < 4; batch += 1) {
      const messages = Array.from({ length: 130 }, (_, k) => ({ name: `flood-${batch * 130 + k}`, data: { k } }));
      await withTimeout(restChannel.publish(messages), 10_000, 'REST batch publish');
    }
    const reattached = nextChannelChange(channel, (c) => c.current === 'attached' || c.current === 'update');
    sub.connection.connect();
    const connected = await awaitConnectionState(sub, 'connected');
    assert.equal(sub.connection.id, id, 'the connection itself resumes');
    assert.ok(!connected.reason, 'no connection-level error');
    const change = await reattached;
    assert.equal(change.resumed, false, `the channel reports lost continuity: ${safeJson(change)}`);
    assert.ok(change.reason, `with a reason: ${safeJson(change)}`);
    await publishNumbered(restChannel, 'after', 1);
    await got.waitFor((m) => m.name === 'after-0', 10_000, 'live messages after the gap');
    assertNoDuplicates(got);
  });

  test('json: resume while the server still holds the old socket (half-open path) keeps the connection', async () => {
    // The client gives up on a socket the server still considers open (e.g. the phone changed network),
    // and reconnects with resume=. The server must hand the connection over to the new transport.
    pool = new ClientPool(server.port);
    const { wire, sub, got, restChannel } = await jsonSubscriberAfterOne(pool, 'resume-halfopen');
    const old = await abandonTransport(sub);
    try {
      assert.equal(wire.sentAction('DISCONNECT').length, 0, 'the server was told nothing');
      await publishNumbered(restChannel, 'missed', 3);
      assert.equal(old.ws.readyState, 1, 'the old socket is still open when the client resumes');
      sub.connection.connect();
      const connected = await awaitConnectionState(sub, 'connected');
      const connectedFrame = wire.receivedAction('CONNECTED').at(-1);
      assert.equal(
        sub.connection.id,
        old.id,
        `resume of a connection whose old socket is still open keeps the id; got ${connectedFrame} (reason ${safeJson(connected.reason)})`,
      );
      assert.ok(!connected.reason, `no error: ${safeJson(connected.reason)}`);
      await got.waitForCount(4, 10_000, 'the missed messages');
      assert.deepEqual(names(got.messages), ['before-0', ...range('missed', 0, 3)]);
    } finally {
      old.close();
    }
  });
});

describe('resume refused after a server restart', () => {
  let server;
  let pool;

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await pool?.closeAll();
    await server?.stop();
  });

  test('json: the restarted server does not know the key → new connection id, 80018, channel resumed=false, live works', async () => {
    pool = new ClientPool(server.port);
    const { wire, sub, channelName, channel, got } = await jsonSubscriberAfterOne(pool, 'restart', { restBinary: true });

    const { id, key } = await dropTransport(sub);
    const port = server.port;
    await server.stop();
    server = await startServer({ port });

    const reattached = nextChannelChange(channel, (c) => c.current === 'attached' || c.current === 'update');
    sub.connection.connect();
    const connected = await awaitConnectionState(sub, 'connected');
    assert.ok(wire.connectUris().at(-1).includes(`resume=${encodeURIComponent(key)}`), 'tried to resume');
    assert.notEqual(sub.connection.id, id, 'new connection id');
    assert.equal(connected.reason?.code, 80018, `a restarted server never issued the key: 80018: ${safeJson(connected.reason)}`);
    const change = await reattached;
    assert.equal(change.resumed, false, `resumed=false: ${safeJson(change)}`);

    await publishNumbered(pool.rest({ key: FULL_KEY }).channels.get(channelName), 'after', 1);
    await got.waitFor((m) => m.name === 'after-0', 10_000, 'a live message from the new server');
    assert.deepEqual(names(got.messages), ['before-0', 'after-0']);
  });
});

