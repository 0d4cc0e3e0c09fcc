// Test 5: a short-lived token (ttl 4 s) renewed in band. The server must send AUTH before expiry, ably-js
// calls the authCallback again and sends the new token, the server answers CONNECTED with the same
// connectionId. Meanwhile numbered REST publishes keep flowing and must all arrive exactly once, in order,
// without the connection ever leaving `connected`.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY } from './server.mjs';
import { awaitConnected, ClientPool, Collector, FORMATS, safeJson, stoppableAuthCallback, tokenRequestAuthCallback, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';

const TTL_MS = 4000;
const PUBLISH_INTERVAL_MS = 75;
const HARD_DEADLINE_MS = 16_000; // publishing loop bound; the whole test stays < 20 s
const MIN_AUTH_CALLS = 3; // initial token + at least 2 renewals

describe('in-band token renewal', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const format of FORMATS) {
    test(`${format.name}: ttl ${TTL_MS} ms token renewed ≥ 2 times without losing the connection or messages`, { timeout: 30_000 }, async () => {
      pool = new ClientPool(server.port);
      const signer = pool.rest({ key: FULL_KEY });
      const authCallback = tokenRequestAuthCallback(signer, { clientId: 'renewer', ttl: TTL_MS });
      // After the measurement no more tokens are handed out (`stop()`).
      const countingCallback = stoppableAuthCallback(authCallback);
      const authCallTimes = countingCallback.times; // calls that were given a token request
      const wire = new WireLog();
      const realtime = pool.realtime({
        authCallback: countingCallback,
        useBinaryProtocol: format.useBinaryProtocol,
        autoConnect: false,
        ...wire.options,
      });

      // Record every connection event from the very start.
      const changes = [];
      const idsAtUpdate = [];
      realtime.connection.on((change) => {
        changes.push(change);
        if (change.current === 'connected') idsAtUpdate.push(realtime.connection.id);
      });
      realtime.connect();
      await awaitConnected(realtime);
      const connectionId = realtime.connection.id;
      assert.ok(connectionId, 'connection has an id');

      const channelName = uniq(`renew:${format.name}`);
      const collector = await new Collector().subscribe(realtime.channels.get(channelName));

      // Publish numbered messages over REST until the token has been renewed at least twice and the
      // connection has outlived the token that preceded the last renewal by a full ttl.
      const publisher = pool.rest({ key: FULL_KEY, useBinaryProtocol: !format.useBinaryProtocol });
      const restChannel = publisher.channels.get(channelName);
      const start = Date.now();
      let n = 0;
      for (;;) {
        const enoughRenewals =
          authCallTimes.length >= MIN_AUTH_CALLS && Date.now() - authCallTimes[MIN_AUTH_CALLS - 1] >= TTL_MS;
        if (enoughRenewals || Date.now() - start > HARD_DEADLINE_MS) break;
        await withTimeout(restChannel.publish('n', { n }), 5_000, `REST publish #${n}`);
        n += 1;
        await new Promise((r) => setTimeout(r, PUBLISH_INTERVAL_MS)); // pacing of the load, not a correctness wait
      }
      const published = n;

      const diag = () =>
        `authCallback calls at +ms: ${safeJson(authCallTimes.map((t) => t - start))} (+${countingCallback.refused} refused after the test); ` +
        `state changes: ${safeJson(changes.map((c) => `${c.previous}->${c.current}${c.reason ? ` (${c.reason.code} ${c.reason.message})` : ''}`))}; ` +
        `AUTH frames received: ${wire.receivedAction('AUTH').length}; ` +
        `CONNECTED frames: ${safeJson(wire.receivedAction('CONNECTED'))}; ` +
        `DISCONNECTED/ERROR frames: ${safeJson([...wire.receivedAction('DISCONNECTED'), ...wire.receivedAction('ERROR')])}`;

      assert.ok(
        authCallTimes.length >= MIN_AUTH_CALLS,
        `authCallback called ${authCallTimes.length} times (want ≥ ${MIN_AUTH_CALLS}) within ${HARD_DEADLINE_MS} ms; ${diag()}`,
      );

      // Every numbered message exactly once, in order.
      await collector.waitForCount(published, 10_000, `all ${published} numbered messages`).catch((err) => {
        throw new Error(`${err.message}; ${diag()}`);
      });
      const numbers = collector.messages.map((m) => m.data?.n);
      assert.deepEqual(
        numbers,
        Array.from({ length: published }, (_, i) => i),
        `subscriber got every message exactly once in order; ${diag()}`,
      );

      // Stop issuing tokens and let any renewal already under way finish: each token after the first must be
      // answered by a CONNECTED (an `update`) from the server.
      countingCallback.stop();
      const issued = authCallTimes.length;
      await withTimeout(
        new Promise((resolve) => {
          const check = () => {
            const sinceConnect = changes.slice(changes.findIndex((c) => c.current === 'connected') + 1);
            const updates = sinceConnect.filter((c) => c.previous === 'connected' && c.current === 'connected');
            // Also stop waiting once the connection has left `connected`: the assertions below report that.
            if (updates.length >= issued - 1 || updates.length < sinceConnect.length) {
              realtime.connection.off(check);
              resolve();
            }
          };
          realtime.connection.on(check);
          check();
        }),
        10_000,
        `a CONNECTED from the server for each of the ${issued - 1} renewed tokens`,
      ).catch((err) => {
        throw new Error(`${err.message}; ${diag()}`);
      });

      // The connection never left `connected`: after the first connect only `update` events, which ably-js
      // emits as connected -> connected state changes (ConnectionStateChange carries no event name).
      const isUpdate = (c) => c.previous === 'connected' && c.current === 'connected';
      const firstConnected = changes.findIndex((c) => c.current === 'connected');
      const afterConnect = changes.slice(firstConnected + 1);
      const bad = afterConnect.filter((c) => !isUpdate(c));
      assert.deepEqual(bad.map((c) => `${c.previous}->${c.current}`), [], `no state change away from connected; ${diag()}`);
      assert.equal(realtime.connection.state, 'connected');
      assert.equal(realtime.connection.id, connectionId, 'same connection id after the renewals');
      assert.ok(
        idsAtUpdate.every((id) => id === connectionId),
        `every CONNECTED kept the connection id: ${safeJson(idsAtUpdate)}`,
      );

      // The renewals were asked for by the server in band (AUTH), and answered with CONNECTED.
      const authFrames = wire.receivedAction('AUTH');
      assert.ok(authFrames.length >= MIN_AUTH_CALLS - 1, `server sent ≥ ${MIN_AUTH_CALLS - 1} AUTH frames; ${diag()}`);
      const updates = afterConnect.filter(isUpdate);
      assert.ok(updates.length >= MIN_AUTH_CALLS - 1, `≥ ${MIN_AUTH_CALLS - 1} CONNECTED updates after re-auth; ${diag()}`);
      assert.equal(wire.receivedAction('DISCONNECTED').length, 0, `no DISCONNECTED frame; ${diag()}`);
    });
  }
});
