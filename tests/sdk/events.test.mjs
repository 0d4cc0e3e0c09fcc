// POST /events → ably-js subscribers: every built-in event type lands on exactly the channels the
// default routing table names, as an ordinary message (name = type, data = the event data), once
// per event id; a batch with a bad event is refused whole, naming the field; a key that may not
// publish on a target channel is refused naming the channel.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY, LIMITED_KEY } from './server.mjs';
import { awaitConnected, ClientPool, Collector, uniq, useServer } from './helpers.mjs';

/** What a serverless backend does: one `fetch` with the API key. */
async function postEvents(port, body, key = FULL_KEY) {
  const response = await fetch(`http://127.0.0.1:${port}/events`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(key).toString('base64')}`,
      'content-type': 'application/json',
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, body: await response.json() };
}

describe('POST /events', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  test('every built-in type lands on exactly its channels, once per event id', async () => {
    pool = new ClientPool(server.port);
    const ids = {
      session: uniq('s'),
      call: uniq('c'),
      stream: uniq('st'),
      creator: uniq('creator'),
      fan: uniq('fan'),
      payer: uniq('payer'),
    };
    const channels = {
      session: `session:${ids.session}`,
      call: `call:${ids.call}`,
      stream: `stream:${ids.stream}`,
      creator: `user:${ids.creator}`,
      fan: `user:${ids.fan}`,
      payer: `user:${ids.payer}`,
    };
    const realtime = pool.realtime({ key: FULL_KEY });
    await awaitConnected(realtime);
    const collectors = {};
    for (const [what, name] of Object.entries(channels)) {
      collectors[what] = await new Collector().subscribe(realtime.channels.get(name));
    }
    // A browser listening for one type only, as the Digis apps do.
    const ringing = [];
    await realtime.channels.get(channels.fan).subscribe('call.ringing', (m) => ringing.push(m));

    const session = { session_id: ids.session, creator_id: ids.creator, fan_id: ids.fan };
    const call = { call_id: ids.call, creator_id: ids.creator, fan_id: ids.fan, call_type: 'video' };
    const stream = { stream_id: ids.stream, creator_id: ids.creator };
    const events = [
      ...['session.started', 'session.updated', 'session.ended'].map((type) => [type, session]),
      ...['call.ringing', 'call.accepted', 'call.declined', 'call.ended'].map((type) => [type, call]),
      ['stream.started', stream],
      ['stream.viewers', { ...stream, viewers: 12 }],
      ['stream.ended', stream],
      ['payment.succeeded', { user_id: ids.payer, amount: 9.99, currency: 'usd', balance: 120 }],
      ['payment.failed', { user_id: ids.payer, amount: 5, currency: 'usd' }],
      ['tokens.credited', { user_id: ids.payer, tokens: 100, balance: 220 }],
      ['tokens.debited', { user_id: ids.payer, tokens: 20 }],
    ].map(([type, data]) => ({ id: uniq(`evt-${type}`), type, data }));

    const first = await postEvents(server.port, events);
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.equal(first.body.length, events.length);
    // Every event again, one by one: each answered as the first time, nothing published.
    for (const [i, event] of events.entries()) {
      const again = await postEvents(server.port, event);
      assert.equal(again.status, 201);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(again.body, first.body[i], `${event.type}: the first answer`);
    }

    // A marker on every channel after the events: once it is in, everything before it is.
    const rest = pool.rest({ key: FULL_KEY });
    for (const [what, name] of Object.entries(channels)) {
      await rest.channels.get(name).publish('marker', 'end');
      await collectors[what].waitFor((m) => m.name === 'marker', 10_000, `marker on ${name}`);
    }

    const session3 = ['session.started', 'session.updated', 'session.ended'];
    const call4 = ['call.ringing', 'call.accepted', 'call.declined', 'call.ended'];
    const expected = {
      session: session3,
      call: call4,
      stream: ['stream.started', 'stream.viewers', 'stream.ended'],
      creator: [...session3, ...call4, 'stream.started', 'stream.ended'],
      fan: [...session3, ...call4],
      payer: ['payment.succeeded', 'payment.failed', 'tokens.credited', 'tokens.debited'],
    };
    for (const [what, names] of Object.entries(expected)) {
      const got = collectors[what].messages.filter((m) => m.name !== 'marker');
      assert.deepEqual(got.map((m) => m.name), names, `${channels[what]} got exactly its events, once each`);
      for (const message of got) {
        const event = events.find((e) => e.type === message.name);
        assert.deepEqual(message.data, event.data, `${message.name} data arrives as the event data`);
        assert.match(message.id, new RegExp(`^evt:${event.id}:\\d+$`), 'stable id from the event id');
      }
    }
    assert.deepEqual(ringing.map((m) => m.name), ['call.ringing'], "subscribe('call.ringing') gets only that");
  });

  test('a batch with one bad event is refused whole, naming the field', async () => {
    pool = new ClientPool(server.port);
    const user = uniq('u');
    const good = { id: uniq('good'), type: 'tokens.credited', data: { user_id: user, tokens: 5 } };
    const bad = {
      id: uniq('bad'),
      type: 'call.ringing',
      data: { call_id: 'c', creator_id: 'a', fan_id: 'b', call_type: 'fax' },
    };
    const refused = await postEvents(server.port, [good, bad]);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error.code, 40003);
    assert.match(refused.body.error.message, /events\[1\].*data\.call_type must be "voice" or "video"/);

    const unknown = await postEvents(server.port, { id: uniq('x'), type: 'call.teleported', data: {} });
    assert.equal(unknown.status, 400);
    assert.match(unknown.body.error.message, /unknown event type "call.teleported"/);

    const history = await pool.rest({ key: FULL_KEY }).channels.get(`user:${user}`).history();
    assert.equal(history.items.length, 0, 'the good event of the refused batch was not published');
  });

  test('a key that may not publish on a target channel is refused, naming it', async () => {
    const denied = await postEvents(
      server.port,
      { id: uniq('p'), type: 'payment.succeeded', data: { user_id: 'u1', amount: 1, currency: 'usd' } },
      LIMITED_KEY,
    );
    assert.equal(denied.status, 401);
    assert.equal(denied.body.error.code, 40160);
    assert.match(denied.body.error.message, /"user:u1"/);
  });
});
