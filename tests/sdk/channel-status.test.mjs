// Test 8: `GET /channels/{ch}` through `rest.channels.get(ch).status()` reports occupancy metrics that follow
// attached realtime clients.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, ClientPool, FORMATS, pollUntil, uniq, useServer, withTimeout } from './helpers.mjs';

const METRICS = ['connections', 'presenceConnections', 'presenceMembers', 'presenceSubscribers', 'publishers', 'subscribers'];

describe('channel status with occupancy', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: status() shows subscribers while realtime clients are attached`, async () => {
      pool = new ClientPool(server.port);
      const rest = pool.rest({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
      // A name with characters that ably-js percent-encodes in the path.
      const channelName = uniq(`status:room ${format.name}`);
      const status = () => withTimeout(rest.channels.get(channelName).status(), 10_000, `status of ${channelName}`);

      const first = pool.realtime({ key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol });
      await awaitConnected(first);
      await withTimeout(first.channels.get(channelName).attach(), 10_000, 'first attach');

      const details = await status();
      assert.equal(details.channelId, channelName, 'channelId is the decoded channel name');
      assert.equal(details.status?.isActive, true, 'channel is active');
      const metrics = details.status?.occupancy?.metrics;
      assert.ok(metrics, `occupancy.metrics present: ${JSON.stringify(details)}`);
      for (const key of METRICS) assert.equal(typeof metrics[key], 'number', `metrics.${key} is a number`);
      assert.ok(metrics.subscribers >= 1, `subscribers ≥ 1 with one attached client: ${JSON.stringify(metrics)}`);
      assert.ok(metrics.connections >= 1, `connections ≥ 1: ${JSON.stringify(metrics)}`);

      // A second attached client is counted too.
      const second = pool.realtime({ key: FULL_KEY, useBinaryProtocol: !format.useBinaryProtocol });
      await awaitConnected(second);
      const secondChannel = second.channels.get(channelName);
      await withTimeout(secondChannel.attach(), 10_000, 'second attach');
      await pollUntil(
        status,
        (d) => d.status?.occupancy?.metrics?.subscribers >= 2 && d.status.occupancy.metrics.connections >= 2,
        5_000,
        'subscribers ≥ 2 and connections ≥ 2 with two attached clients',
      );

      // Detaching removes it again.
      await withTimeout(secondChannel.detach(), 10_000, 'second detach');
      await pollUntil(
        status,
        (d) => d.status?.occupancy?.metrics?.subscribers === 1 && d.status.occupancy.metrics.connections === 1,
        5_000,
        'subscribers and connections back to 1 after a detach',
      );
    });
  }
});
