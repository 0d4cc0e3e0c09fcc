// --policy FILE (brief part C): a TOML policy replaces the default mapping from Supabase claims to
// capabilities. Rules match on role/roles/aal/is_anonymous; channel patterns may name claims such as
// `{sub}` or `{app_metadata.org}`. A pattern naming `user_metadata` (which users can edit themselves) makes the
// binary refuse to start with exit code 64 (EX_USAGE), naming --policy.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { REALTIME_BIN, freePort } from './server.mjs';
import { awaitConnected, ClientPool, Collector, expectRejection, safeJson, uniq, useServer, WireLog, withTimeout } from './helpers.mjs';
import { ACTION, WireProbe, probeToken, restWithBearer, runToExit, signJwt, userClaims } from './supabase-helpers.mjs';

const SECRET = 'policy-test-jwt-secret-with-at-least-32-characters';

const ORG_POLICY = `
# Members publish and subscribe in their organisation's channels, and hear their own user channel.
[[rule]]
role = "authenticated"
capability = { "org:{app_metadata.org}:*" = ["publish", "subscribe"], "user:{sub}" = ["subscribe"] }

# Only sessions with MFA (aal2) that are not anonymous may listen on secure:*.
[[rule]]
roles = ["authenticated", "service_role"]
aal = "aal2"
is_anonymous = false
capability = { "secure:*" = ["subscribe"] }
`;

let dir;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'realtime-policy-'));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function writePolicy(name, text) {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

const token = (claims) => signJwt(userClaims(claims), { alg: 'HS256', secret: SECRET });

describe('--policy with {app_metadata.org}', () => {
  let server;
  let pool;
  useServer((s) => (server = s), () => pool, () => ({ args: ['--supabase-jwt-secret', SECRET, '--policy', writePolicy('org.toml', ORG_POLICY)] }));

  test('an acme member publishes on org:acme:* (ACK, delivered to another member), not on org:globex:* (NACK 40160)', async () => {
    pool = new ClientPool(server.port);
    const alice = randomUUID();
    const bob = randomUUID();
    const wire = new WireLog();
    const [publisher, listener] = await pool.connected({ ...wire.options, authCallback: (_, cb) => cb(null, token({ sub: alice, app_metadata: { org: 'acme', provider: 'email' } })) }, { authCallback: (_, cb) => cb(null, token({ sub: bob, app_metadata: { org: 'acme' } })) });
    assert.equal(publisher.auth.clientId, alice);

    const own = uniq('org:acme:general');
    const got = await new Collector().subscribe(listener.channels.get(own));
    await withTimeout(publisher.channels.get(own).publish('hello', { from: 'alice' }), 10_000, `publish to ${own}`);
    const msg = await got.waitFor((m) => m.name === 'hello', 10_000, 'alice\'s message at bob');
    assert.equal(msg.clientId, alice);

    const foreign = uniq('org:globex:general');
    const nack = await expectRejection(publisher.channels.get(foreign).publish('nope', {}), 10_000, `publish to ${foreign}`);
    assert.equal(nack.code, 40160, `publish to another org: ${nack.code} ${nack.message}`);
    assert.ok(wire.receivedAction('NACK').some((l) => l.includes('code=40160')), `server NACKed with 40160: ${safeJson(wire.receivedAction('NACK'))}`);
  });

  test('REST with Bearer: org member publishes to own org (201), not to another (401/40160)', async () => {
    const t = token({ sub: randomUUID(), app_metadata: { org: 'acme' } });
    const ok = await restWithBearer(server.url, t, `/channels/${encodeURIComponent(uniq('org:acme:rest'))}/messages`, { method: 'POST', body: { name: 'x', data: 'y' } });
    assert.equal(ok.status, 201, `own org: ${ok.status} ${safeJson(ok.body)}`);
    const denied = await restWithBearer(server.url, t, `/channels/${encodeURIComponent(uniq('org:globex:rest'))}/messages`, { method: 'POST', body: { name: 'x' } });
    assert.equal(denied.status, 401, `other org: ${denied.status} ${safeJson(denied.body)}`);
    assert.equal(denied.body?.error?.code, 40160);
  });

  test('the policy file replaces the default: session:* is no longer granted; own user channel and aal2-only rule', async () => {
    const sub = randomUUID();
    const probe = new WireProbe(server.port, token({ sub, app_metadata: { org: 'acme' } }));
    try {
      const first = await probe.first();
      assert.equal(first.action, ACTION.CONNECTED, probe.describe());
      assert.equal((await probe.attach(`user:${sub}`)).action, ACTION.ATTACHED, probe.describe());
      const session = await probe.attach(uniq('session:s'));
      assert.equal(session.action, ACTION.ERROR, `session:* not in this policy: ${probe.describe()}`);
      assert.equal(session.error?.code, 40160);
      const secure = await probe.attach(uniq('secure:vault'));
      assert.equal(secure.action, ACTION.ERROR, `aal1 may not attach secure:*: ${probe.describe()}`);
      assert.equal(secure.error?.code, 40160);
    } finally {
      await probe.close();
    }
    const mfa = new WireProbe(server.port, token({ sub, aal: 'aal2', app_metadata: { org: 'acme' } }));
    try {
      assert.equal((await mfa.first()).action, ACTION.CONNECTED, mfa.describe());
      assert.equal((await mfa.attach(uniq('secure:vault'))).action, ACTION.ATTACHED, `aal2 may attach secure:*: ${mfa.describe()}`);
    } finally {
      await mfa.close();
    }
    const anonymousMfa = new WireProbe(server.port, token({ sub, aal: 'aal2', is_anonymous: true, app_metadata: { org: 'acme' } }));
    try {
      assert.equal((await anonymousMfa.first()).action, ACTION.CONNECTED, anonymousMfa.describe());
      const r = await anonymousMfa.attach(uniq('secure:vault'));
      assert.equal(r.action, ACTION.ERROR, `is_anonymous users excluded by the rule: ${anonymousMfa.describe()}`);
      assert.equal(r.error?.code, 40160);
    } finally {
      await anonymousMfa.close();
    }
  });

  test('a crafted org claim cannot widen the pattern; no org and no other grant is refused 40160', async () => {
    // org "*" would turn `org:{app_metadata.org}:*` into `org:*:*` (every org); org "globex:x" into a pattern for
    // another org. Such a substituted value drops the resource instead.
    const crafted = token({ sub: randomUUID(), app_metadata: { org: '*' } });
    const res = await restWithBearer(server.url, crafted, `/channels/${encodeURIComponent('org:globex:x')}/messages`, { method: 'POST', body: { name: 'x' } });
    assert.equal(res.body?.error?.code, 40160, `crafted org claim: ${res.status} ${safeJson(res.body)}`);
    const crafted2 = token({ sub: randomUUID(), app_metadata: { org: 'globex:x' } });
    const res2 = await restWithBearer(server.url, crafted2, `/channels/${encodeURIComponent('org:globex:x:y')}/messages`, { method: 'POST', body: { name: 'x' } });
    assert.equal(res2.body?.error?.code, 40160, `org claim with ':' : ${res2.status} ${safeJson(res2.body)}`);

    // A role no rule names gets nothing at all: refused at connect.
    const frame = await probeToken(server.port, token({ sub: randomUUID(), role: 'anon' }));
    assert.equal(frame.action, ACTION.ERROR, safeJson(frame));
    assert.equal(frame.error?.code, 40160, safeJson(frame.error));
  });
});

describe('--policy refused at start', () => {
  test('a pattern using user_metadata makes the binary exit 64 naming --policy', async () => {
    const file = writePolicy('bad.toml', `
[[rule]]
role = "authenticated"
capability = { "team:{user_metadata.team}:*" = ["subscribe"] }
`);
    const port = await freePort();
    const { code, signal, output } = await runToExit(REALTIME_BIN, [
      'serve', '--listen', `127.0.0.1:${port}`, '--keys', 'app1.full:secretfull',
      '--supabase-jwt-secret', SECRET, '--policy', file,
    ]);
    assert.equal(signal, null, `exited by itself: ${output}`);
    assert.equal(code, 64, `exit code (EX_USAGE); output: ${output}`);
    assert.match(output, /--policy/, `names the setting: ${output}`);
    assert.ok(output.includes(file), `names the file: ${output}`);
    assert.match(output, /user_metadata/, `says why: ${output}`);
  });

  test('a policy file that is not valid TOML also exits 64 naming --policy', async () => {
    const file = writePolicy('broken.toml', '[[rule]\nrole = \n');
    const port = await freePort();
    const { code, output } = await runToExit(REALTIME_BIN, [
      'serve', '--listen', `127.0.0.1:${port}`, '--keys', 'app1.full:secretfull',
      '--supabase-jwt-secret', SECRET, '--policy', file,
    ]);
    assert.equal(code, 64, `exit code; output: ${output}`);
    assert.match(output, /--policy/, output);
  });
});
