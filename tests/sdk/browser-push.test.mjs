// Browser push: a Digis page in headless Chromium signs in with a Supabase token and runs ably-js's
// own push.activate() (its push plugin, a service worker, the VAPID key from /push/publicVapidKey, a
// device registration with the user's token) and channel.push.subscribeDevice(). A backend REST
// publish with extras.push then reaches the Web Push receiver once: VAPID-signed for the receiver's
// origin with the gateway's key, encrypted (RFC 8291 aes128gcm) so that only the subscription's own
// private key decrypts it. The browser's push service (FCM) is out of reach offline: the receiver
// stands in for it, and the page's PushManager.subscribe hands ably-js the receiver's subscription
// (browser/page.js); everything else is Chromium's and ably-js's own.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FULL_KEY, REALTIME_BIN } from './server.mjs';
import { ClientPool, uniq, withTimeout } from './helpers.mjs';
import { browserSuite, describeTab, inPage, openTab } from './browser-helpers.mjs';

const b64url = (buffer) => Buffer.from(buffer).toString('base64url');

/** `realtime push generate-vapid-keys`: the line after each label. */
function vapidKeys() {
  const out = execFileSync(REALTIME_BIN, ['push', 'generate-vapid-keys'], { encoding: 'utf8' }).split('\n');
  const after = (label) => out[out.indexOf(label) + 1]?.trim();
  return { publicKey: after('Public Key:'), privateKey: after('Private Key:') };
}

/**
 * A Web Push receiver on loopback holding one subscription's keys (what a browser keeps): it
 * records every request and decrypts aes128gcm bodies (RFC 8291) with the subscription's
 * private key and auth secret.
 */
async function startReceiver() {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  const authSecret = crypto.randomBytes(16);
  const receiver = { requests: [], waiting: [] };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      receiver.requests.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(201).end();
      for (const wake of receiver.waiting.splice(0)) wake();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.origin = `http://127.0.0.1:${server.address().port}`;
  receiver.subscription = {
    endpoint: `${receiver.origin}/push/browser-1`,
    p256dh: b64url(ecdh.getPublicKey()),
    auth: b64url(authSecret),
  };
  /** The `n`-th request (from 0), waiting for it (bounded). */
  receiver.request = async (n) => {
    const deadline = Date.now() + 10_000;
    while (receiver.requests.length <= n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no push request #${n + 1} within 10 s (got ${receiver.requests.length})`);
      await new Promise((resolve) => {
        receiver.waiting.push(resolve);
        setTimeout(resolve, left);
      });
    }
    return receiver.requests[n];
  };
  /** RFC 8291: salt, record size, the sender's key, then one record; its plaintext as JSON. */
  receiver.decrypt = (body) => {
    const salt = body.subarray(0, 16);
    const keyLength = body[20];
    const senderKey = body.subarray(21, 21 + keyLength);
    const record = body.subarray(21 + keyLength);
    const shared = ecdh.computeSecret(senderKey);
    const info = Buffer.concat([Buffer.from('WebPush: info\0'), ecdh.getPublicKey(), senderKey]);
    const ikm = Buffer.from(crypto.hkdfSync('sha256', shared, authSecret, info, 32));
    const cek = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
    const nonce = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
    const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
    decipher.setAuthTag(record.subarray(record.length - 16));
    const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
    // The last record ends with the delimiter 2, then zero padding.
    const end = padded.lastIndexOf(2);
    assert.ok(end >= 0 && padded.subarray(end + 1).every((b) => b === 0), 'a final record');
    return JSON.parse(padded.subarray(0, end).toString('utf8'));
  };
  receiver.stop = () => new Promise((resolve) => server.close(resolve));
  return receiver;
}

/** The VAPID `Authorization` header (RFC 8292): its JWT's claims once its ES256 signature checks with `k`. */
function vapidClaims(authorization, publicKey) {
  const match = /^vapid t=([^,]+), ?k=(.+)$/.exec(authorization ?? '');
  assert.ok(match, `a VAPID Authorization header: ${authorization}`);
  const [jwt, k] = [match[1], match[2]];
  assert.equal(k, publicKey, 'signed with the gateway\'s VAPID key');
  const raw = Buffer.from(k, 'base64url');
  const key = crypto.createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: b64url(raw.subarray(1, 33)), y: b64url(raw.subarray(33, 65)) },
    format: 'jwk',
  });
  const [header, payload, signature] = jwt.split('.');
  const signed = crypto.verify('sha256', Buffer.from(`${header}.${payload}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(signature, 'base64url'));
  assert.ok(signed, 'the JWT verifies with k');
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
}

const vapid = vapidKeys();
const dir = mkdtempSync(path.join(tmpdir(), 'realtime-browser-push-'));
const config = path.join(dir, 'realtime.toml');
writeFileSync(config, '[[history.namespace]]\nname = "push"\npush_enabled = true\n');
// Signed-in users may register their browser and subscribe it on push:… channels.
const policy = path.join(dir, 'policy.toml');
writeFileSync(
  policy,
  '[[rule]]\nrole = "authenticated"\ncapability = { "push:*" = ["subscribe", "push-subscribe"] }\n',
);

describe('browser (Chromium): ably-js push.activate() and a Web Push notification', () => {
  const env = browserSuite([
    '--config', config,
    '--policy', policy,
    '--push-vapid-public-key', vapid.publicKey,
    '--push-vapid-private-key', vapid.privateKey,
    '--push-vapid-subject', 'mailto:ops@digis.example',
    // The test's push service is on loopback.
    '--push-web-endpoint-hosts', '127.0.0.1',
  ]);
  let receiver;
  before(async () => {
    receiver = await startReceiver();
  });
  after(async () => {
    await receiver?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the page activates as a push device, subscribes, and a notification reaches it once, encrypted and VAPID-signed', async () => {
    env.context = await env.browser.newContext();
    await env.context.grantPermissions(['notifications'], { origin: env.pages.origin });
    const sub = crypto.randomUUID();
    const tab = await openTab(env.context, env.pages.url({ gatewayPort: env.server.port, sub, format: 'json' }), env.server.url);
    const channelName = uniq('push:creator');
    const device = await inPage(
      tab,
      ([name, subscription]) => window.app.activatePush(name, subscription),
      [channelName, receiver.subscription],
      'push.activate() and subscribeDevice()',
    );
    assert.deepEqual(device.applicationServerKeys, [Buffer.from(vapid.publicKey, 'base64url').toString('base64')], 'subscribed with the gateway\'s VAPID key');
    assert.equal(device.clientId, sub, 'the device is the Supabase user\'s');
    assert.ok(device.workers.some((url) => url?.endsWith('/sw.js')), `the service worker registered: ${JSON.stringify(device.workers)}`);

    // What the page registered, as the backend (push-admin) sees it.
    const backend = new ClientPool(env.server.port).rest({ key: FULL_KEY });
    const registered = await withTimeout(backend.push.admin.deviceRegistrations.get(device.deviceId), 10_000, 'GET the registration');
    assert.equal(registered.platform, 'browser');
    assert.equal(registered.clientId, sub);
    assert.equal(registered.push.state, 'ACTIVE');
    assert.equal(registered.push.recipient.transportType, 'web');
    assert.equal(Buffer.from(registered.push.recipient.targetUrl, 'base64').toString(), receiver.subscription.endpoint);
    const subscriptions = await backend.push.admin.channelSubscriptions.list({ channel: channelName });
    assert.deepEqual(subscriptions.items.map((s) => s.deviceId), [device.deviceId], 'subscribed by the page');

    // "Your creator is live": the backend publishes with extras.push; then a plain message and a second notification.
    const channel = backend.channels.get(channelName);
    const live = (title) => ({ name: 'live', data: title, extras: { push: { notification: { title, body: 'Ann is live' }, data: { stream: 's1' } } } });
    await channel.publish(live('first'));
    const first = await receiver.request(0);
    assert.equal(first.path, '/push/browser-1');
    assert.equal(first.headers['content-encoding'], 'aes128gcm');
    const claims = vapidClaims(first.headers.authorization, vapid.publicKey);
    assert.equal(claims.aud, receiver.origin, 'the JWT names the push service\'s origin');
    assert.equal(claims.sub, 'mailto:ops@digis.example');
    assert.ok(claims.exp * 1000 > Date.now(), 'not expired');
    const payload = receiver.decrypt(first.body);
    assert.equal(payload.notification.title, 'first', JSON.stringify(payload));
    assert.equal(payload.data.stream, 's1', JSON.stringify(payload));

    await channel.publish({ name: 'chat', data: 'no push here' });
    await channel.publish(live('second'));
    const second = await receiver.request(1);
    assert.equal(receiver.decrypt(second.body).notification.title, 'second', 'the next request is the next notification: each once, none for the plain message');
    assert.deepEqual(tab.errors, [], describeTab(tab));
  });
});
