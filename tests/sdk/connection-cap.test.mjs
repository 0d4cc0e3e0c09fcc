// Connection cap (issue 18 item 2): a server started with `--max-connections 2` serves two ably-js
// clients; the third is told DISCONNECTED with 50003 (statusCode 503) and keeps retrying, while the
// two keep publishing and receiving; once one of them closes, the third connects on its next retry
// and works. `--keep-alive-timeout-ms 1000` so the startup probe's idle keep-alive socket gives its
// slot back quickly.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, awaitConnectionState, ClientPool, Collector, uniq, useServer, withTimeout } from './helpers.mjs';

describe('connection cap', () => {
  let server;
  let pool;
  useServer(
    (s) => {
      server = s;
    },
    () => pool,
    { args: ['--max-connections', '2', '--keep-alive-timeout-ms', '1000'] },
  );

  test('the client over the cap gets 50003 and connects once a slot frees; the others are unaffected', async () => {
    pool = new ClientPool(server.port);
    const options = { key: FULL_KEY, disconnectedRetryTimeout: 500 };
    const channelName = uniq('cap');

    const publisher = pool.realtime({ ...options, clientId: 'publisher' });
    await awaitConnected(publisher, 15_000);
    const reader = pool.realtime({ ...options, clientId: 'reader' });
    await awaitConnected(reader, 15_000);
    const readerGot = await new Collector().subscribe(reader.channels.get(channelName));
    const pubChannel = publisher.channels.get(channelName);
    const publisherGot = await new Collector().subscribe(pubChannel);

    // Over the cap: every attempt is refused while both stay.
    const third = pool.realtime({ ...options, clientId: 'third' });
    const refused = await awaitConnectionState(third, 'disconnected', 15_000);
    assert.equal(refused.reason?.code, 50003, `reason: ${refused.reason?.message}`);
    assert.equal(refused.reason?.statusCode, 503);

    // The two connected clients keep working throughout.
    await withTimeout(pubChannel.publish('during', 'while the third is refused'), 10_000, 'ACK during the refusal');
    await readerGot.waitFor((m) => m.name === 'during', 10_000, 'reader receives during the refusal');
    await publisherGot.waitFor((m) => m.name === 'during', 10_000, 'publisher receives its own message');
    assert.equal(publisher.connection.state, 'connected');
    assert.equal(reader.connection.state, 'connected');
    assert.notEqual(third.connection.state, 'connected', 'the third never got in while the cap was full');

    // A slot frees: the third connects on a retry and works.
    await pool.close(publisher);
    await awaitConnected(third, 15_000);
    const thirdGot = await new Collector().subscribe(third.channels.get(channelName));
    await withTimeout(reader.channels.get(channelName).publish('after', 'a slot freed'), 10_000, 'ACK after');
    await thirdGot.waitFor((m) => m.name === 'after', 10_000, 'third receives after connecting');
    await readerGot.waitFor((m) => m.name === 'after', 10_000, 'reader receives its own message after');
  });
});
