// Tests 1 and 2: REST publish (key auth) → realtime subscriber using token auth obtained through
// authCallback (test 1) or authUrl (test 2). String, JSON object and binary payloads must arrive intact,
// in JSON and msgpack on both the REST and the realtime side.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { FULL_KEY, startServer } from './server.mjs';
import { awaitConnected, ClientPool, Collector, FORMATS, tokenRequestAuthCallback, uniq, useServer, withTimeout } from './helpers.mjs';

const PUBLISHER_CLIENT_ID = 'rest-publisher';

// Payloads that must survive the trip untouched.
const STRING_DATA = 'héllo wörld ☃ 🎉 {"looks":"like json"} but is a string';
const JSON_DATA = {
  text: 'ünïcödé ☃',
  n: 42,
  f: 3.25,
  neg: -7,
  yes: true,
  no: false,
  nothing: null,
  list: [1, 'two', { three: 3 }, []],
  nested: { deep: { deeper: ['x'] } },
};
// Bytes that are not valid UTF-8, all 256 values, so any text conversion would corrupt them.
const BINARY_DATA = Buffer.from([0x00, 0xff, 0xfe, 0xc3, 0x28, 0x80, ...Array.from({ length: 256 }, (_, i) => i)]);

async function publishAllTypes(restChannel) {
  // Sequential awaits: each publish completes (HTTP 201) before the next one, so arrival order is fixed.
  await withTimeout(
    restChannel.publish({ name: 'string', data: STRING_DATA, clientId: PUBLISHER_CLIENT_ID }),
    10_000,
    'REST publish of string data',
  );
  await withTimeout(
    restChannel.publish({ name: 'json', data: JSON_DATA, clientId: PUBLISHER_CLIENT_ID }),
    10_000,
    'REST publish of JSON data',
  );
  await withTimeout(
    restChannel.publish({ name: 'binary', data: BINARY_DATA, clientId: PUBLISHER_CLIENT_ID }),
    10_000,
    'REST publish of binary data',
  );
}

function assertCommonFields(msg, name, startedAt) {
  assert.equal(msg.name, name, 'message name');
  assert.equal(msg.clientId, PUBLISHER_CLIENT_ID, `clientId of ${name}`);
  assert.equal(typeof msg.id, 'string', `id of ${name} is a string`);
  assert.ok(msg.id.length > 0, `id of ${name} is not empty`);
  assert.equal(typeof msg.timestamp, 'number', `timestamp of ${name} is a number (got ${msg.timestamp})`);
  assert.ok(
    msg.timestamp >= startedAt - 60_000 && msg.timestamp <= Date.now() + 60_000,
    `timestamp of ${name} (${msg.timestamp}) is close to now (${Date.now()})`,
  );
  assert.ok(!msg.encoding, `encoding of ${name} fully decoded (left: ${JSON.stringify(msg.encoding)})`);
}

async function assertAllTypesArrive(collector, startedAt) {
  const got = await collector.waitForCount(3, 10_000, 'three messages on the realtime subscriber');
  assert.deepEqual(
    got.map((m) => m.name),
    ['string', 'json', 'binary'],
    'messages arrive in publish order',
  );
  const [str, json, bin] = got;

  assertCommonFields(str, 'string', startedAt);
  assert.equal(typeof str.data, 'string', 'string data stays a string');
  assert.equal(str.data, STRING_DATA);

  assertCommonFields(json, 'json', startedAt);
  assert.deepEqual(json.data, JSON_DATA, 'JSON object arrives as an equal object');

  assertCommonFields(bin, 'binary', startedAt);
  assert.ok(Buffer.isBuffer(bin.data), `binary data arrives as a Buffer (got ${typeof bin.data})`);
  assert.ok(bin.data.equals(BINARY_DATA), `binary bytes intact (got ${bin.data.toString('hex')})`);

  assert.equal(new Set(got.map((m) => m.id)).size, 3, 'message ids are distinct');
}

/** On `channelName`: `publishAllTypes` over REST in the `rest` format, then `assertAllTypesArrive` on `realtime`. */
async function assertAllTypesCarried(pool, realtime, channelName, rest) {
  const collector = await new Collector().subscribe(realtime.channels.get(channelName));
  const publisher = pool.rest({ key: FULL_KEY, useBinaryProtocol: rest.useBinaryProtocol });
  const startedAt = Date.now();
  await publishAllTypes(publisher.channels.get(channelName));
  await assertAllTypesArrive(collector, startedAt);
}

const COMBOS = [];
for (const rest of FORMATS) for (const rt of FORMATS) COMBOS.push({ rest, rt });

describe('REST publish → realtime subscriber (authCallback token auth)', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool);

  for (const { rest, rt } of COMBOS) {
    test(`rest-${rest.name} → realtime-${rt.name}: string, JSON and binary data arrive intact`, async () => {
      pool = new ClientPool(server.port);
      const signer = pool.rest({ key: FULL_KEY });
      const subscriberClientId = `sub-${rest.name}-${rt.name}`;
      const authCallback = tokenRequestAuthCallback(signer, { clientId: subscriberClientId });

      const realtime = pool.realtime({ authCallback, useBinaryProtocol: rt.useBinaryProtocol });
      await awaitConnected(realtime);
      assert.ok(authCallback.calls >= 1, 'authCallback was used');
      assert.equal(realtime.auth.clientId, subscriberClientId, 'token clientId is known to the realtime client');
      assert.ok(realtime.connection.id, 'connection has an id');

      await assertAllTypesCarried(pool, realtime, uniq(`types:rest-${rest.name}:rt-${rt.name}`), rest);
    });
  }
});

describe('REST publish → realtime subscriber (authUrl token auth)', () => {
  let server;
  let pool;
  let authServer;
  let authUrl;
  let authHits = [];
  let signer;

  before(async () => {
    server = await startServer();
    pool = new ClientPool(server.port);
    signer = pool.rest({ key: FULL_KEY });
    authServer = http.createServer(async (req, res) => {
      const url = new URL(req.url, 'http://127.0.0.1');
      authHits.push({ method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams) });
      if (url.pathname !== '/auth') {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found');
        return;
      }
      try {
        const clientId = url.searchParams.get('for') || 'url-client';
        const tokenRequest = await signer.auth.createTokenRequest({ clientId });
        const body = JSON.stringify(tokenRequest);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(err));
      }
    });
    await new Promise((resolve, reject) => {
      authServer.once('error', reject);
      authServer.listen(0, '127.0.0.1', resolve);
    });
    authUrl = `http://127.0.0.1:${authServer.address().port}/auth`;
  });
  afterEach(async () => {
    await pool?.closeAll();
  });
  after(async () => {
    await pool?.closeAll();
    if (authServer) {
      authServer.closeAllConnections();
      await new Promise((resolve) => authServer.close(resolve));
    }
    await server?.stop();
  });

  for (const { rest, rt } of COMBOS) {
    test(`rest-${rest.name} → realtime-${rt.name} via authUrl: data arrives intact`, async () => {
      const subscriberClientId = `url-${rest.name}-${rt.name}`;
      const hitsBefore = authHits.length;
      const realtime = pool.realtime({
        // The authUrl's own query string is kept and merged with authParams by ably-js.
        authUrl: `${authUrl}?for=${encodeURIComponent(subscriberClientId)}`,
        useBinaryProtocol: rt.useBinaryProtocol,
      });
      await awaitConnected(realtime);
      const hits = authHits.slice(hitsBefore).filter((h) => h.path === '/auth');
      assert.ok(hits.length >= 1, 'the authUrl was requested');
      assert.equal(hits[0].query.for, subscriberClientId, 'authUrl query string preserved');
      assert.equal(realtime.auth.clientId, subscriberClientId, 'clientId from the token issued via authUrl');

      await assertAllTypesCarried(pool, realtime, uniq(`authurl:rest-${rest.name}:rt-${rt.name}`), rest);
    });
  }
});
