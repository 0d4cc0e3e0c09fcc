// History: `GET /channels/{ch}/messages` through ably-js `channel.history()` (REST and realtime channels),
// newest first by default, forwards on request, paged with `next()` over the relative Link headers,
// a time window with start/end, `untilAttach`, the raw Link/envelope format, and the `history` capability.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY, LIMITED_KEY } from './server.mjs';
import { awaitConnected, ClientPool, expectRejection, FORMATS, safeJson, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';
import { allPages, names, publishNumbered } from './continuity-helpers.mjs';

function assertWellFormed(messages, what) {
  for (const m of messages) {
    assert.equal(typeof m.id, 'string', `${what}: id on ${safeJson(m)}`);
    assert.equal(typeof m.timestamp, 'number', `${what}: timestamp on ${safeJson(m)}`);
    assert.deepEqual(m.data, { i: Number(m.name.split('-').at(-1)) }, `${what}: data of ${m.name}`);
  }
  assert.equal(new Set(messages.map((m) => m.id)).size, messages.length, `${what}: ids are distinct`);
  const serials = messages.map((m) => m.serial);
  assert.ok(serials.every((s) => typeof s === 'string'), `${what}: every message has a serial: ${safeJson(serials)}`);
  const sorted = [...serials].sort();
  const forwards = serials.join() === sorted.join();
  const backwards = serials.join() === [...sorted].reverse().join();
  assert.ok(forwards || backwards, `${what}: serials are lexically monotonic in page order: ${safeJson(serials)}`);
  assert.equal(new Set(serials).size, serials.length, `${what}: serials are distinct`);
}

/** GET with Basic auth, JSON; returns { status, headers, body }. */
async function rawGet(port, path) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: { Authorization: `Basic ${Buffer.from(FULL_KEY).toString('base64')}`, Accept: 'application/json' },
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body };
}

describe('channel history', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: 25 messages page 10/10/5 newest first with next(), and forwards`, async () => {
      pool = new ClientPool(server.port);
      const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
      const channelName = uniq(`history:${format.name}`);
      const channel = rest.channels.get(channelName);
      const published = await publishNumbered(channel, 'm', 25);

      const backwards = await allPages(await withTimeout(channel.history({ limit: 10 }), 10_000, 'history'));
      assert.deepEqual(
        backwards.pages.map((p) => p.length),
        [10, 10, 5],
        'pages of 10, 10 and 5',
      );
      assert.deepEqual(names(backwards.items), [...published].reverse(), 'newest first, complete, no repeats');
      assertWellFormed(backwards.items, 'backwards');

      const forwards = await allPages(
        await withTimeout(channel.history({ limit: 10, direction: 'forwards' }), 10_000, 'forwards history'),
      );
      assert.deepEqual(forwards.pages.map((p) => p.length), [10, 10, 5]);
      assert.deepEqual(names(forwards.items), published, 'oldest first with direction=forwards');
      assertWellFormed(forwards.items, 'forwards');
      assert.deepEqual(
        forwards.items.map((m) => m.id),
        [...backwards.items].reverse().map((m) => m.id),
        'the same messages both ways',
      );

      // Default limit (100) returns all 25 on one page, with no next page.
      const all = await withTimeout(channel.history(), 10_000, 'history with the default limit');
      assert.equal(all.items.length, 25);
      assert.equal(all.hasNext(), false, 'no next page when everything fits');
      assert.equal(all.isLast(), true);

      // first() goes back to the first page from a later one.
      const firstPage = await channel.history({ limit: 10 });
      const second = await firstPage.next();
      const again = await withTimeout(second.first(), 10_000, 'first()');
      assert.deepEqual(names(again.items), names(firstPage.items), 'first() returns the first page again');
    });
  }

  test('msgpack: realtime channel history pages the same way', async () => {
    pool = new ClientPool(server.port);
    const rest = pool.rest({ key: FULL_KEY });
    const [realtime] = await pool.connected({ key: FULL_KEY });
    const channelName = uniq('history:realtime');
    const published = await publishNumbered(rest.channels.get(channelName), 'pre', 12);
    const channel = realtime.channels.get(channelName);
    const result = await allPages(await withTimeout(channel.history({ limit: 5 }), 10_000, 'realtime history'));
    assert.deepEqual(result.pages.map((p) => p.length), [5, 5, 2]);
    assert.deepEqual(names(result.items), [...published].reverse());
    assertWellFormed(result.items, 'realtime history');
  });

  // ably-js sends `from_serial=<attachSerial>` (the channelSerial of the ATTACHED); the server must then
  // return only messages up to the attach point.
  test('json: history({ untilAttach: true }) stops at the attach point', async () => {
      pool = new ClientPool(server.port);
      const rest = pool.rest({ key: FULL_KEY });
      const wire = new WireLog();
      const [realtime] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: false, ...wire.options });
      const channelName = uniq('history:untilAttach');
      const restChannel = rest.channels.get(channelName);
      const before = await publishNumbered(restChannel, 'pre', 7);
      const channel = realtime.channels.get(channelName);
      await withTimeout(channel.attach(), 10_000, 'attach');
      const attachSerial = channel.properties.attachSerial;
      assert.ok(attachSerial, 'ATTACHED carried a channelSerial (the attachSerial)');
      await publishNumbered(restChannel, 'post', 3);
      const result = await allPages(
        await withTimeout(channel.history({ untilAttach: true, limit: 5 }), 10_000, 'untilAttach history'),
      );
      const requests = wire.lines.filter((l) => l.includes('from_serial'));
      assert.ok(requests.length > 0, 'ably-js sent from_serial');
      assert.deepEqual(
        names(result.items),
        [...before].reverse(),
        `only messages up to the attach, newest first (request: ${requests[0]})`,
      );
    },
  );

  test('json: start/end select a time window (inclusive) in both directions', async () => {
    pool = new ClientPool(server.port);
    const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: false });
    const channel = rest.channels.get(uniq('history:window'));
    for (let batch = 0; batch < 3; batch += 1) {
      await publishNumbered(channel, 'w', 4, batch * 4);
      await new Promise((r) => setTimeout(r, 30)); // distinct timestamps between batches
    }
    const everything = (await channel.history({ direction: 'forwards' })).items;
    assert.equal(everything.length, 12);
    const start = everything[4].timestamp;
    const end = everything[7].timestamp;
    const expected = everything.filter((m) => m.timestamp >= start && m.timestamp <= end).map((m) => m.name);
    assert.ok(expected.length >= 4 && expected.length < 12, `a proper window: ${safeJson(expected)}`);

    const fwd = await allPages(await channel.history({ start, end, direction: 'forwards', limit: 2 }));
    assert.deepEqual(names(fwd.items), expected, 'forwards window, paged by 2');
    const back = await allPages(await channel.history({ start, end, limit: 3 }));
    assert.deepEqual(names(back.items), [...expected].reverse(), 'backwards window, paged by 3');
    const none = await channel.history({ start: everything[11].timestamp + 60_000 });
    assert.deepEqual(none.items, [], 'nothing after the last message');
  });

  test('json: raw Link headers are relative and carry a cursor; the envelope has them too', async () => {
    pool = new ClientPool(server.port);
    const channelName = uniq('history:raw');
    await publishNumbered(pool.rest({ key: FULL_KEY }).channels.get(channelName), 'r', 5);
    const path = `/channels/${encodeURIComponent(channelName)}/messages`;

    const page = await rawGet(server.port, `${path}?limit=2`);
    assert.equal(page.status, 200);
    assert.deepEqual(page.body.map((m) => m.name), ['r-4', 'r-3']);
    const link = page.headers.get('link');
    assert.ok(link, 'a Link header');
    const next = /<(\.\/messages\?[^>]+)>; rel="next"/.exec(link);
    assert.ok(next, `a relative rel="next" link: ${link}`);
    assert.match(next[1], /[?&]cursor=[^&]+/, `the next link carries a cursor: ${next[1]}`);
    assert.match(link, /<\.\/messages\?[^>]+>; rel="first"/, `a rel="first" link: ${link}`);
    const nextPage = await rawGet(server.port, `${path}${next[1].slice('./messages'.length)}`);
    assert.deepEqual(nextPage.body.map((m) => m.name), ['r-2', 'r-1']);

    const enveloped = await rawGet(server.port, `${path}?limit=2&envelope=json`);
    assert.equal(enveloped.status, 200);
    assert.equal(enveloped.body.statusCode, 200);
    assert.deepEqual(enveloped.body.response.map((m) => m.name), ['r-4', 'r-3']);
    const envLink = enveloped.body.headers?.link ?? enveloped.body.headers?.Link;
    assert.match(String(envLink), /<\.\/messages\?[^>]*cursor=[^>]+>; rel="next"/, `envelope headers.link: ${safeJson(enveloped.body.headers)}`);

    const tooMany = await rawGet(server.port, `${path}?limit=1001`);
    assert.equal(tooMany.status, 400, `limit over 1000 is refused: ${safeJson(tooMany.body)}`);
  });

  for (const format of FORMATS) {
    test(`${format.name}: history is refused with 40160 without the history capability`, async () => {
      pool = new ClientPool(server.port);
      const channelName = uniq('allowed:history');
      const full = pool.rest({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
      await publishNumbered(full.channels.get(channelName), 'h', 2);
      // LIMITED_KEY may publish and subscribe on allowed:* but not read history.
      const limited = pool.rest({ key: LIMITED_KEY, useBinaryProtocol: format.useBinaryProtocol });
      const err = await expectRejection(limited.channels.get(channelName).history(), 10_000, 'history with LIMITED_KEY');
      assert.equal(err.code, 40160, `code 40160: ${safeJson(err)}`);
      assert.equal(err.statusCode, 401);
      const presenceErr = await expectRejection(
        limited.channels.get(channelName).presence.history(),
        10_000,
        'presence history with LIMITED_KEY',
      );
      assert.equal(presenceErr.code, 40160, `presence history 40160: ${safeJson(presenceErr)}`);

      const [realtime] = await pool.connected({ key: LIMITED_KEY, useBinaryProtocol: format.useBinaryProtocol });
      const rtErr = await expectRejection(
        realtime.channels.get(channelName).history(),
        10_000,
        'realtime channel history with LIMITED_KEY',
      );
      assert.equal(rtErr.code, 40160);
      // The full key can read the same channel.
      assert.equal((await full.channels.get(channelName).history()).items.length, 2);
    });
  }
});
