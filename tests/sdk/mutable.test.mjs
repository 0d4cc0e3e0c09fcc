// Mutable messages through the real ably-js (2.28): `updateMessage`, `appendMessage` and
// `deleteMessage` over realtime (the ACK's version serial), a subscriber that gets each as it went out,
// REST `getMessage` and `getMessageVersions` showing the latest view and the versions, and a key
// without the capability refused with 40160. JSON and msgpack, on a namespace the config file makes
// mutable.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { FULL_KEY, LIMITED_KEY } from './server.mjs';
import { ClientPool, FORMATS, expectRejection, useServer, withTimeout } from './helpers.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'mutable-sdk-'));
const configFile = path.join(dir, 'realtime.toml');
writeFileSync(configFile, '[[history.namespace]]\nname = "allowed"\nmutable_messages = true\n');

describe('mutable messages', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool, { args: ['--config', configFile] });

  for (const format of FORMATS) {
    test(`${format.name}: update, append and delete reach subscribers and REST reads`, async () => {
      pool = new ClientPool(server.port);
      const options = { key: FULL_KEY, useBinaryProtocol: format.useBinaryProtocol };
      const { name, received, channel } = await pool.publisherAndSubscriber(`allowed:mutable-${format.name}`, options, options);

      const published = await withTimeout(channel.publish('greeting', 'Hello'), 10_000, 'publish');
      const serial = published.serials[0];
      await received.waitFor((m) => m.serial === serial, 10_000, 'the create');

      const updated = await withTimeout(
        channel.updateMessage({ serial, data: 'Hi' }, { description: 'shorter', metadata: { why: 'test' } }),
        10_000,
        'updateMessage',
      );
      assert.equal(typeof updated.versionSerial, 'string');
      assert.ok(updated.versionSerial > serial, `${updated.versionSerial} after ${serial}`);
      const update = await received.waitFor((m) => m.action === 'message.update', 10_000, 'the update');
      assert.equal(update.serial, serial);
      assert.equal(update.data, 'Hi');
      assert.equal(update.name, 'greeting', 'the name the update left out is kept');
      assert.equal(update.version.serial, updated.versionSerial);
      assert.equal(update.version.description, 'shorter');
      assert.deepEqual(update.version.metadata, { why: 'test' });

      const appended = await withTimeout(channel.appendMessage({ serial, data: ' there' }), 10_000, 'appendMessage');
      const append = await received.waitFor((m) => m.action === 'message.append', 10_000, 'the append');
      assert.equal(append.data, ' there', 'a subscriber that has the message gets the appended part');
      assert.equal(append.version.serial, appended.versionSerial);

      const rest = pool.rest(options).channels.get(name);
      const latest = await rest.getMessage(serial);
      assert.equal(latest.action, 'message.update');
      assert.equal(latest.data, 'Hi there');
      assert.equal(latest.version.serial, appended.versionSerial);

      const deleted = await withTimeout(channel.deleteMessage({ serial }), 10_000, 'deleteMessage');
      const gone = await received.waitFor((m) => m.action === 'message.delete', 10_000, 'the delete');
      assert.equal(gone.version.serial, deleted.versionSerial);
      const versions = await rest.getMessageVersions(serial);
      assert.deepEqual(
        versions.items.map((v) => v.action),
        ['message.create', 'message.update', 'message.delete'],
        'appends are not versions',
      );

      const limited = pool.rest({ key: LIMITED_KEY, useBinaryProtocol: format.useBinaryProtocol });
      const refused = await expectRejection(
        limited.channels.get(name).updateMessage({ serial, data: 'not mine' }),
        10_000,
        'an update without the capability',
      );
      assert.equal(refused.code, 40160, refused.message);
    });
  }
});
