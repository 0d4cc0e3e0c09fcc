// Before-publish moderation ([[moderation]]) through the unmodified SDKs: a moderator this test runs
// rejects text containing "bad", and the rejection reaches the client as ErrorInfo 42213 with the
// moderator's reason in `err.detail` (ably-js 2.19+): @ably/chat's send and edit (the Chat REST API),
// ably-js realtime publish (a NACK) and REST publish, JSON and msgpack. Only accepted messages arrive.

import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ChatClient, ErrorCode } from '@ably/chat';

import { FULL_KEY, startServer } from './server.mjs';
import { ClientPool, Collector, FORMATS, expectRejection, uniq, withTimeout } from './helpers.mjs';

const DETAIL = { reason: 'no bad words', rule: 'words' };

/** A moderator: `{"action":"reject",...}` for a question mentioning "bad", accept otherwise. */
function startModerator() {
  const questions = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      questions.push(JSON.parse(body));
      const answer = body.includes('bad')
        ? { action: 'reject', reason: DETAIL.reason, rejectionDetail: { rule: DETAIL.rule } }
        : { action: 'accept' };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, questions, port: server.address().port }));
  });
}

function assertRejected(err, what) {
  assert.equal(err.code, 42213, `${what}: ${err}`);
  assert.equal(err.statusCode, 422, `${what}: ${err}`);
  assert.deepEqual({ ...err.detail }, DETAIL, `${what}: detail`);
  assert.match(err.message, /no bad words/, what);
}

describe('before-publish moderation', () => {
  let moderator;
  let server;
  let pool;

  before(async () => {
    moderator = await startModerator();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'moderation-sdk-'));
    const configFile = path.join(dir, 'realtime.toml');
    writeFileSync(
      configFile,
      [
        '[[history.namespace]]',
        'name = "room"',
        'mutable_messages = true',
        '[[moderation]]',
        'channels = "room:*"',
        `url = "http://127.0.0.1:${moderator.port}/moderate"`,
        '[[moderation]]',
        'channels = "mod:*"',
        `url = "http://127.0.0.1:${moderator.port}/moderate"`,
        '',
      ].join('\n'),
    );
    server = await startServer({ args: ['--config', configFile] });
  });

  // Each test's clients, closed after it (open ones would keep the process alive).
  afterEach(async () => {
    await pool?.closeAll();
  });

  after(async () => {
    await pool?.closeAll();
    await server?.stop();
    moderator?.server.close();
  });

  for (const format of FORMATS) {
    test(`${format.name}: @ably/chat send and edit rejected with err.detail; accepted ones arrive`, async () => {
      pool = new ClientPool(server.port);
      const options = (clientId) => ({ key: FULL_KEY, clientId, useBinaryProtocol: format.useBinaryProtocol });
      const [aliceRealtime, bobRealtime] = await pool.connected(options('alice'), options('bob'));
      const roomName = uniq(`room:moderated-${format.name}`);
      const alice = await new ChatClient(aliceRealtime).rooms.get(roomName);
      const bob = await new ChatClient(bobRealtime).rooms.get(roomName);
      const received = [];
      let arrived;
      const fineArrived = new Promise((resolve) => (arrived = resolve));
      bob.messages.subscribe((event) => {
        received.push(event.message.text);
        if (event.message.text === 'a fine word') arrived();
      });
      await withTimeout(Promise.all([alice.attach(), bob.attach()]), 10_000, 'rooms attached');

      const refused = await expectRejection(alice.messages.send({ text: 'a bad word' }), 10_000, 'a bad send');
      assertRejected(refused, 'send');
      assert.equal(refused.code, ErrorCode.MessageRejectedByModeration);

      const sent = await withTimeout(alice.messages.send({ text: 'a fine word' }), 10_000, 'a fine send');
      const edit = alice.messages.update(sent.serial, { text: 'now bad' }, { description: 'edit' });
      assertRejected(await expectRejection(edit, 10_000, 'a bad edit'), 'edit');

      const fetched = await withTimeout(alice.messages.get(sent.serial), 10_000, 'get');
      assert.equal(fetched.text, 'a fine word', 'a refused edit changes nothing');
      await withTimeout(fineArrived, 10_000, 'the accepted message at bob');
      assert.deepEqual(received, ['a fine word'], 'only the accepted message was delivered');
      const asked = moderator.questions.filter((q) => q.room === roomName);
      assert.equal(asked.length, 3, 'send, send, edit were each asked about');
      assert.equal(asked[0].clientId, 'alice');
    });

    test(`${format.name}: ably-js realtime and REST publishes rejected with err.detail`, async () => {
      pool = new ClientPool(server.port);
      const options = { key: FULL_KEY, clientId: 'carol', useBinaryProtocol: format.useBinaryProtocol };
      const { channel, name, received } = await pool.publisherAndSubscriber('mod:sdk-', options, options);

      assertRejected(await expectRejection(channel.publish('said', 'bad news'), 10_000, 'a NACKed publish'), 'realtime');
      const rest = pool.rest(options).channels.get(name);
      assertRejected(await expectRejection(rest.publish('said', 'bad again'), 10_000, 'a refused REST publish'), 'rest');

      await withTimeout(channel.publish('said', 'good news'), 10_000, 'an accepted publish');
      await received.waitFor((m) => m.data === 'good news', 10_000, 'the accepted message');
      assert.deepEqual(
        received.messages.map((m) => m.data),
        ['good news'],
        'nothing refused was delivered',
      );
      const history = await withTimeout(rest.history(), 10_000, 'history');
      assert.deepEqual(history.items.map((m) => m.data), ['good news']);
    });
  }
});
