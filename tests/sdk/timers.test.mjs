// The timers a client is promised, each waited out with ably-js against short settings:
// - a token that expires before the server would ask for renewal (ttl < --token-renew-lead-ms) ends in
//   DISCONNECTED 40142; ably-js gets a new token and resumes: same connection, nothing lost or repeated;
// - presence grace (--presence-grace-ms): a member whose transport drops stays present until the grace is
//   over, then leaves once; `remainPresentFor` shortens it; a resume within the grace keeps the member;
// - connection-state TTL (--connection-state-ttl-ms): a resume after it is refused with 80008, the client
//   gets a new connection, its channels re-attach with resumed=false, and live messages flow.
// (The renewal lead itself is token-renewal.test.mjs: renewals asked in band, several times over.)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, awaitConnectionState, ClientPool, Collector, safeJson, tokenRequestAuthCallback, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';
import { dropTransport, jsonSubscriberAfterOne, names, nextChannelChange, PresenceCollector, publishNumbered, recordChannelChanges } from './continuity-helpers.mjs';

/** startServer's --token-renew-lead-ms: tokens with less left than this are not asked to renew. */
const RENEW_LEAD_MS = 2000;
const PRESENCE_GRACE_MS = 1500;
const CONNECTION_STATE_TTL_MS = 2500;

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

describe('timers', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool, {
    args: ['--presence-grace-ms', String(PRESENCE_GRACE_MS), '--connection-state-ttl-ms', String(CONNECTION_STATE_TTL_MS)],
  });

  test('json: a token left to expire → DISCONNECTED 40142 → authCallback again → resumed, same id, every message once', async () => {
    pool = new ClientPool(server.port);
    const signer = pool.rest({ key: FULL_KEY });
    const channelName = uniq('expiry');
    const restChannel = pool.rest({ key: FULL_KEY }).channels.get(channelName);
    // The first token lives less than the renewal lead, so the server lets it expire; the next one lasts.
    // ably-js asks for it with no transport open: messages published before handing it over are missed
    // on the wire and must come with the resume.
    const shortToken = tokenRequestAuthCallback(signer, { clientId: 'expirer', ttl: RENEW_LEAD_MS - 500 });
    const longToken = tokenRequestAuthCallback(signer, { clientId: 'expirer', ttl: 60_000 });
    let calls = 0;
    const authCallback = (params, cb) => {
      calls += 1;
      if (calls === 1) shortToken(params, cb);
      else publishNumbered(restChannel, 'gap', 3).then(() => longToken(params, cb), (err) => cb(err, null));
    };
    const wire = new WireLog();
    const realtime = pool.realtime({ authCallback, useBinaryProtocol: false, ...wire.options });
    const changes = [];
    realtime.connection.on((c) => changes.push(c));
    await awaitConnected(realtime);
    const id = realtime.connection.id;
    const channel = realtime.channels.get(channelName);
    const got = await new Collector().subscribe(channel);
    const channelChanges = recordChannelChanges(channel);
    await publishNumbered(restChannel, 'before', 2);

    const disconnected = await awaitConnectionState(realtime, 'disconnected', RENEW_LEAD_MS + 5_000);
    const resumed = await awaitConnectionState(realtime, 'connected');
    await publishNumbered(restChannel, 'after', 1);

    const diag = () =>
      `state changes ${safeJson(changes.map((c) => `${c.previous}->${c.current}${c.reason ? ` (${c.reason.code})` : ''}`))}; ` +
      `DISCONNECTED frames ${safeJson(wire.receivedAction('DISCONNECTED'))}; AUTH frames ${wire.receivedAction('AUTH').length}; uris ${safeJson(wire.connectUris())}`;
    assert.equal(disconnected.reason?.code, 40142, `disconnected for the expired token: ${diag()}`);
    const [frame] = wire.receivedAction('DISCONNECTED');
    assert.match(frame ?? '', /code=40142/, `the server ended the transport with DISCONNECTED 40142: ${diag()}`);
    assert.equal(wire.receivedAction('AUTH').length, 0, `the server did not ask for renewal: ${diag()}`);
    assert.equal(calls, 2, `authCallback called again for the reconnect: ${diag()}`);
    assert.ok(wire.connectUris().at(-1).includes('resume='), `reconnected with resume=: ${diag()}`);
    assert.equal(realtime.connection.id, id, `same connection id: ${diag()}`);
    assert.ok(!resumed.reason, `resumed without an error: ${safeJson(resumed.reason)}`);

    await got.waitFor((m) => m.name === 'after-0', 10_000, 'the message after the resume');
    assert.deepEqual(
      names(got.messages),
      ['before-0', 'before-1', 'gap-0', 'gap-1', 'gap-2', 'after-0'],
      'every message exactly once, in order, across the expiry',
    );
    assert.ok(channelChanges.some((c) => c.current === 'attached'), `the channel re-attached: ${safeJson(channelChanges)}`);
    for (const change of channelChanges) {
      assert.ok(['attaching', 'attached'].includes(change.current), `unexpected channel change ${safeJson(change)}`);
      if (change.current === 'attached') assert.equal(change.resumed, true, `re-attached resumed: ${safeJson(change)}`);
    }
  });

  test(`msgpack: presence grace ${PRESENCE_GRACE_MS} ms: a dropped member stays until it is over and leaves once; one that resumes within it stays`, async () => {
    pool = new ClientPool(server.port);
    const channelName = uniq('grace');
    const gone = pool.realtime({ key: FULL_KEY, clientId: 'gone' });
    const back = pool.realtime({ key: FULL_KEY, clientId: 'back' });
    const watcher = pool.realtime({ key: FULL_KEY });
    await Promise.all([awaitConnected(gone), awaitConnected(back), awaitConnected(watcher)]);
    const watched = await new PresenceCollector().subscribe(watcher.channels.get(channelName));
    for (const member of [gone, back]) {
      await withTimeout(member.channels.get(channelName).presence.enter(), 10_000, `${member.auth.clientId} enter`);
      await watched.waitFor((e) => e.action === 'enter' && e.clientId === member.auth.clientId, 5_000, 'the enter');
    }
    const rest = pool.rest({ key: FULL_KEY }).channels.get(channelName);
    const presentIds = async () => (await rest.presence.get()).items.map((m) => m.clientId).sort();

    const droppedAt = Date.now();
    const [{ id: backId }] = await Promise.all([dropTransport(back, { abrupt: true }), dropTransport(gone, { abrupt: true })]);

    // Most of the grace later both are still present; `back` resumes now, inside the grace.
    await delay(PRESENCE_GRACE_MS - 500);
    assert.deepEqual(await presentIds(), ['back', 'gone'], 'both still present just before the grace is over');
    assert.ok(!watched.events.some((e) => e.action === 'leave'), `no leave within the grace: ${watched.describe()}`);
    back.connection.connect();
    await awaitConnected(back);
    assert.equal(back.connection.id, backId, 'back resumed');

    const leave = await watched.waitFor((e) => e.action === 'leave', PRESENCE_GRACE_MS + 5_000, 'the leave after the grace');
    const leftAfterMs = Date.now() - droppedAt;
    assert.equal(leave.clientId, 'gone', `the member that stayed away leaves: ${watched.describe()}`);
    assert.ok(leftAfterMs >= PRESENCE_GRACE_MS, `left ${leftAfterMs} ms after the drop, not before the ${PRESENCE_GRACE_MS} ms grace`);
    // A later event as a marker: a second leave (for either) would have come before it.
    await withTimeout(back.channels.get(channelName).presence.update('marker'), 10_000, 'marker update');
    await watched.waitFor((e) => e.action === 'update' && e.data === 'marker', 5_000, 'the marker');
    assert.deepEqual(
      watched.events.filter((e) => e.action === 'leave').map((e) => e.clientId),
      ['gone'],
      `exactly one leave: ${watched.describe()}`,
    );
    assert.deepEqual(await presentIds(), ['back']);
  });

  test('json: remainPresentFor shorter than the grace: the dropped member leaves after it', async () => {
    pool = new ClientPool(server.port);
    const REMAIN_MS = 300;
    const channelName = uniq('remain');
    const wire = new WireLog();
    const member = pool.realtime({
      key: FULL_KEY,
      clientId: 'brief',
      useBinaryProtocol: false,
      transportParams: { remainPresentFor: REMAIN_MS },
      ...wire.options,
    });
    const watcher = pool.realtime({ key: FULL_KEY, useBinaryProtocol: false });
    await Promise.all([awaitConnected(member), awaitConnected(watcher)]);
    assert.ok(wire.connectUris()[0].includes(`remainPresentFor=${REMAIN_MS}`), `asked on connect: ${wire.connectUris()[0]}`);
    const watched = await new PresenceCollector().subscribe(watcher.channels.get(channelName));
    await withTimeout(member.channels.get(channelName).presence.enter(), 10_000, 'enter');
    await watched.waitFor((e) => e.action === 'enter', 5_000, 'the enter');

    const droppedAt = Date.now();
    await dropTransport(member, { abrupt: true });
    // Before the server's own grace is over: only remainPresentFor can have made it leave.
    await watched.waitFor((e) => e.action === 'leave' && e.clientId === 'brief', PRESENCE_GRACE_MS - 200, 'the leave after remainPresentFor');
    const leftAfterMs = Date.now() - droppedAt;
    assert.ok(leftAfterMs >= REMAIN_MS, `left ${leftAfterMs} ms after the drop, not before remainPresentFor (${REMAIN_MS} ms)`);
  });

  test(`json: a resume after the ${CONNECTION_STATE_TTL_MS} ms connection-state TTL → 80008, new connection, resumed=false, live messages`, async () => {
    pool = new ClientPool(server.port);
    const { wire, sub, channel, got, restChannel } = await jsonSubscriberAfterOne(pool, 'ttl', { restBinary: true });

    // Kept away (no transport, no retry) past the TTL: the server forgets the connection.
    const { id, key } = await dropTransport(sub, { abrupt: true });
    await delay(CONNECTION_STATE_TTL_MS + 500);
    await publishNumbered(restChannel, 'missed', 1);

    const reattached = nextChannelChange(channel, (c) => c.current === 'attached' || c.current === 'update', 10_000, 'the channel to re-attach');
    sub.connection.connect();
    const connected = await awaitConnectionState(sub, 'connected');
    assert.ok(wire.connectUris().at(-1).includes(`resume=${encodeURIComponent(key)}`), 'ably-js tried to resume');
    assert.equal(connected.reason?.code, 80008, `the expired connection is refused with 80008: ${safeJson(connected.reason)}`);
    assert.notEqual(sub.connection.id, id, 'a new connection id');
    const change = await reattached;
    assert.equal(change.resumed, false, `the channel re-attaches with resumed=false: ${safeJson(change)}`);

    await publishNumbered(restChannel, 'after', 1);
    await got.waitFor((m) => m.name === 'after-0', 10_000, 'a live message on the new connection');
    assert.deepEqual(names(got.messages), ['before-0', 'after-0'], 'nothing replayed from the expired connection');
  });
});
