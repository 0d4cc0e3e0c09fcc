// `rewind`: a fresh attach replays the last N messages (or those of the last duration) right after ATTACHED,
// before live ones; as a channel param (`channels.get(name, { params: { rewind } })`) or in the name
// (`[?rewind=N]name`); capped at 100 messages.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, ClientPool, Collector, FORMATS, safeJson, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';
import { dropTransport, names, nextChannelChange, publishNumbered } from './continuity-helpers.mjs';

const numbered = (prefix, from, to) => Array.from({ length: to - from }, (_, k) => `${prefix}-${from + k}`);

describe('rewind', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  let liveCount = 0;

  /**
   * Subscribe on `channel` (listener registered before the attach), wait for `expected` replayed messages,
   * then publish one live message and check the subscriber saw exactly `expected` then the live one.
   */
  /** `count` messages m-0… published over REST on a fresh channel, then a realtime client (with a wire log) connected: both in `format`. */
  async function afterPublishing(format, prefix, count) {
    pool = new ClientPool(server.port);
    const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
    const channelName = uniq(`${prefix}:${format.name}`);
    const restChannel = rest.channels.get(channelName);
    await publishNumbered(restChannel, 'm', count);
    const wire = new WireLog();
    const [realtime] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol, ...wire.options });
    return { channelName, restChannel, wire, realtime };
  }

  /** A new client pool, and a REST channel (full key, msgpack) with a fresh `prefix` name. */
  function restChannelOnNewPool(prefix) {
    pool = new ClientPool(server.port);
    const channelName = uniq(prefix);
    return { channelName, restChannel: pool.rest({ key: FULL_KEY }).channels.get(channelName) };
  }

  async function expectRewind(channel, restChannel, expected, wire) {
    const attached = nextChannelChange(channel, (c) => c.current === 'attached', 10_000, 'attached');
    const got = await new Collector().subscribe(channel);
    const change = await attached;
    if (expected.length > 0) {
      await got.waitForCount(expected.length, 10_000, `${expected.length} rewound messages`);
      assert.equal(change.hasBacklog, true, `attached with hasBacklog: ${safeJson(change)}`);
    }
    liveCount += 1;
    const [live] = await publishNumbered(restChannel, `live${liveCount}`, 1);
    await got.waitFor((m) => m.name === live, 10_000, 'the live message after the rewind');
    assert.deepEqual(names(got.messages), [...expected, live], 'exactly the rewound messages, in order, then live');
    if (wire) {
      const frames = wire
        .received()
        .filter((l) => l.includes(`channel=${channel.name};`) && /action=(ATTACHED|MESSAGE)/.test(l));
      assert.match(frames[0] ?? '', /action=ATTACHED/, `ATTACHED comes first: ${safeJson(frames)}`);
      // The replay may come several messages to a frame; the live message is a frame of its own.
      const replayFrames = frames.length - 2;
      assert.ok(
        replayFrames >= (expected.length > 0 ? 1 : 0) && replayFrames <= expected.length,
        `ATTACHED, ${expected.length} replayed in 1..${expected.length} frames, 1 live: ${safeJson(frames)}`,
      );
    }
    return got;
  }

  for (const format of FORMATS) {
    test(`${format.name}: params { rewind: '3' } replays the last 3 right after ATTACHED`, async () => {
      const { channelName, restChannel, wire, realtime } = await afterPublishing(format, 'rewind', 10);
      const channel = realtime.channels.get(channelName, { params: { rewind: '3' } });
      const got = await expectRewind(channel, restChannel, numbered('m', 7, 10), wire);
      assert.deepEqual(channel.params, { rewind: '3' }, 'ATTACHED echoes the accepted rewind param');
      assert.deepEqual(
        got.messages.slice(0, 3).map((m) => m.data),
        [{ i: 7 }, { i: 8 }, { i: 9 }],
        'payloads intact',
      );
    });

    test(`${format.name}: the [?rewind=2] qualifier replays the last 2`, async () => {
      const { channelName: base, restChannel, wire, realtime } = await afterPublishing(format, 'rewindq', 6);
      const channel = realtime.channels.get(`[?rewind=2]${base}`);
      await expectRewind(channel, restChannel, numbered('m', 4, 6), wire);
    });
  }

  test('json: rewind larger than the log replays all of it; rewind on an empty channel replays nothing', async () => {
    pool = new ClientPool(server.port);
    const rest = pool.rest({ key: FULL_KEY });
    const [realtime] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: false });
    const small = uniq('rewind:small');
    await publishNumbered(rest.channels.get(small), 'm', 4);
    await expectRewind(realtime.channels.get(small, { params: { rewind: '50' } }), rest.channels.get(small), numbered('m', 0, 4));
    const empty = uniq('rewind:empty');
    await expectRewind(realtime.channels.get(`[?rewind=5]${empty}`), rest.channels.get(empty), []);
  });

  test('msgpack: rewind is capped at 100 messages', async () => {
    const { channelName, restChannel } = restChannelOnNewPool('rewind:cap');
    for (let batch = 0; batch < 3; batch += 1) {
      const messages = Array.from({ length: 40 }, (_, k) => ({ name: `m-${batch * 40 + k}`, data: { i: batch * 40 + k } }));
      await withTimeout(restChannel.publish(messages), 10_000, 'REST batch publish');
    }
    const [realtime] = await pool.connected({ key: FULL_KEY });
    await expectRewind(realtime.channels.get(channelName, { params: { rewind: '150' } }), restChannel, numbered('m', 20, 120));
  });

  test('json: a duration rewind (2s / 1m) replays the messages of that span only', async () => {
    const { channelName, restChannel } = restChannelOnNewPool('rewind:duration');
    await publishNumbered(restChannel, 'old', 3);
    await new Promise((r) => setTimeout(r, 2_300)); // the old ones are now > 2 s old
    await publishNumbered(restChannel, 'new', 2);

    const [realtime] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: false });
    await expectRewind(realtime.channels.get(channelName, { params: { rewind: '2s' } }), restChannel, numbered('new', 0, 2));

    const [other] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: true });
    await expectRewind(other.channels.get(`[?rewind=1m]${channelName}`), restChannel, [
      ...numbered('old', 0, 3),
      ...numbered('new', 0, 2),
      `live${liveCount}-0`, // the live message of the first subscriber, now history too
    ]);
  });

  test('msgpack: after a resume, a rewind channel gets what it missed, not the rewind again', async () => {
    // The re-ATTACH after the resume carries both the rewind param and the channelSerial: the serial wins.
    const { channelName, restChannel } = restChannelOnNewPool('rewind:resume');
    await publishNumbered(restChannel, 'm', 5);
    const [realtime] = await pool.connected({ key: FULL_KEY });
    const channel = realtime.channels.get(`[?rewind=3]${channelName}`);
    const got = await expectRewind(channel, restChannel, numbered('m', 2, 5));
    const { id } = await dropTransport(realtime);
    await publishNumbered(restChannel, 'missed', 2);
    realtime.connection.connect();
    await awaitConnected(realtime);
    assert.equal(realtime.connection.id, id, 'resumed');
    const [after] = await publishNumbered(restChannel, 'after', 1);
    await got.waitFor((m) => m.name === after, 10_000, 'the live message after the resume');
    assert.deepEqual(names(got.messages), [...numbered('m', 2, 5), `live${liveCount}-0`, 'missed-0', 'missed-1', after]);
  });

  test('json: an invalid rewind value is refused on the channel', async () => {
    pool = new ClientPool(server.port);
    const [realtime] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: false });
    const channel = realtime.channels.get(uniq('rewind:bad'), { params: { rewind: 'yesterday' } });
    let err;
    try {
      await withTimeout(channel.attach(), 10_000, 'attach with a bad rewind');
    } catch (e) {
      err = e;
    }
    assert.ok(err, 'attach with rewind=yesterday is refused');
    assert.equal(err.statusCode, 400, `a 400-class error: ${safeJson(err)}`);
    assert.equal(realtime.connection.state, 'connected', 'only the channel is affected');
  });
});
