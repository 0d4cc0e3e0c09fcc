// Occupancy with the real ably-js client: a channel attached with `params: { occupancy: 'metrics' }`
// receives `[meta]occupancy` events that follow joins and leaves, at most about one per second.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { ClientPool, Collector, FORMATS, uniq, useServer, withTimeout } from './helpers.mjs';

describe('occupancy events', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: [meta]occupancy follows joins and leaves, throttled`, async () => {
      pool = new ClientPool(server.port);
      const channelName = uniq(`live:${format.name}`);
      const [watcher] = await pool.connected({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
      const channel = watcher.channels.get(channelName, { params: { occupancy: 'metrics' } });
      const events = new Collector();
      const started = Date.now();
      await withTimeout(channel.subscribe('[meta]occupancy', events.listener), 10_000, 'attach with occupancy');
      assert.deepEqual(channel.params, { occupancy: 'metrics' }, 'ATTACHED echoes the occupancy param');

      const viewers = [];
      for (let i = 0; i < 3; i++) {
        const viewer = pool.realtime({ key: FULL_KEY, clientId: `viewer-${i}`, useBinaryProtocol: format.useBinaryProtocol });
        const viewerChannel = viewer.channels.get(channelName);
        await viewerChannel.attach();
        await viewerChannel.presence.enter('watching');
        viewers.push(viewer);
      }
      const full = await events.waitFor(
        (m) => m.data?.metrics?.connections === 4 && m.data?.metrics?.presenceMembers === 3,
        10_000,
        'occupancy with 4 connections and 3 members',
      );
      assert.equal(full.data.metrics.subscribers, 4, JSON.stringify(full.data));
      assert.equal(full.data.metrics.presenceConnections, 3, JSON.stringify(full.data));

      await pool.close(viewers[0]);
      await events.waitFor(
        (m) => m.data?.metrics?.connections === 3 && m.data?.metrics?.presenceMembers === 2,
        10_000,
        'occupancy after one viewer left',
      );

      // Seven changes (3 attaches, 3 enters, 1 close) in well under the elapsed seconds: the events
      // are throttled to about one per second, not one per change.
      const seconds = (Date.now() - started) / 1000;
      assert.ok(
        events.messages.length <= Math.ceil(seconds) + 1,
        `${events.messages.length} events in ${seconds.toFixed(1)} s: ${events.describe()}`,
      );
    });
  }

  test('only subscribers that asked receive occupancy events', async () => {
    pool = new ClientPool(server.port);
    const channelName = uniq('live:quiet');
    const [plain, watcher] = await pool.connected({ key: FULL_KEY }, { key: FULL_KEY });
    const plainMessages = await new Collector().subscribe(plain.channels.get(channelName));
    const watched = new Collector();
    await withTimeout(
      watcher.channels.get(channelName, { params: { occupancy: 'metrics' } }).subscribe('[meta]occupancy', watched.listener),
      10_000,
      'attach with occupancy',
    );
    await watched.waitFor((m) => m.data?.metrics?.connections === 2, 10_000, 'an occupancy event for 2 connections');
    // A marker message published after the event: once the plain subscriber has it, it would have had
    // any occupancy event sent before it.
    await pool.rest({ key: FULL_KEY }).channels.get(channelName).publish('marker', 'x');
    await plainMessages.waitFor((m) => m.name === 'marker', 10_000, 'the marker');
    assert.deepEqual(
      plainMessages.messages.map((m) => m.name),
      ['marker'],
      'no [meta]occupancy for a subscriber that did not ask',
    );
  });
});
