// Every fenced snippet in the README is run or checked here, so none can rot: the quickstart runs
// as pasted against a server started as the README says (with the development key it prints),
// the events example posts a real event, each TOML block passes `realtime check-config`, the
// JSON parses, the `serve` command line is accepted, and the snippets that need a service we do
// not start (a Supabase project, Express, a Kubernetes cluster) are at least parsed.
// A snippet this file does not recognise fails the test: a new one must be given a check here.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { freePort, REALTIME_BIN, startServer, FULL_KEY } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const README = readFileSync(path.join(root, 'README.md'), 'utf8');

/** The README's fenced blocks, indented ones (inside list items) included. */
function snippets(markdown) {
  const blocks = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const [, indent, lang] = open;
    const body = [];
    let j = i + 1;
    for (; j < lines.length && lines[j].trim() !== '```'; j++) body.push(lines[j].slice(indent.length));
    blocks.push({ line: i + 1, lang, code: body.join('\n') + '\n' });
    i = j;
  }
  return blocks;
}

const blocks = snippets(README);
const where = (block) => `README.md:${block.line}`;

// Scratch files live under tests/sdk so `import 'ably'` resolves to its node_modules.
const scratch = mkdtempSync(path.join(here, '.readme-'));
process.on('exit', () => rmSync(scratch, { recursive: true, force: true }));
let fileCount = 0;
function scratchFile(name, text) {
  const file = path.join(scratch, `${fileCount++}-${name}`);
  writeFileSync(file, text);
  return file;
}

/** Runs a command to completion (async, so a server this process started keeps being served). */
function run(command, args, { env = {}, timeoutMs = 20_000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: here, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const checked = new Set();
const claim = (predicate) => {
  const found = blocks.filter(predicate);
  for (const block of found) checked.add(block);
  return found;
};

test('the first commands, the printed development key and the quickstart work as pasted', async () => {
  const [commands] = claim((b) => b.lang === 'sh' && b.code.includes('./scripts/test.sh'));
  assert.ok(commands, 'the README opens with the server and test commands');
  assert.match(commands.code, /^cargo run --release -- serve\b/m);
  // `.ci/run` runs exactly the README's test command.
  const ci = readFileSync(path.join(root, '.ci/run'), 'utf8');
  assert.match(ci, /\.\/scripts\/test\.sh/);

  const [printed] = claim((b) => b.lang === '' && b.code.includes('generated a development key'));
  const [quickstart] = claim((b) => b.lang === 'js' && b.code.includes("import * as Ably from 'ably'"));
  assert.ok(printed && quickstart);

  // `serve` with no key, as the first command runs it (the debug build, on a free port).
  const port = await freePort();
  const server = spawn(REALTIME_BIN, ['serve', '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, RUST_LOG: 'warn', REALTIME_KEYS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    let output = '';
    const key = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no development key printed: ${output}`)), 10_000);
      server.stdout.on('data', (d) => {
        output += d;
        const found = /key: '([^']+)'/.exec(output);
        if (found && output.includes('\n', output.indexOf(found[0]))) {
          clearTimeout(timer);
          resolve(found[1]);
        }
      });
      server.on('exit', (code) => reject(new Error(`server exited (${code}): ${output}`)));
    });
    // What it prints has the README's shape, with this run's key and port.
    const expected = printed.code.replace("'dev.Ab12Cd:...'", `'${key}'`).replace('port: 8080', `port: ${port}`);
    assert.equal(output.trim(), expected.trim());

    // The quickstart, pasted with that key (and this run's port): it prints the message.
    assert.ok(quickstart.code.includes("'dev.Ab12Cd:...'") && quickstart.code.includes('port: 8080'));
    const file = scratchFile(
      'quickstart.mjs',
      quickstart.code.replace("'dev.Ab12Cd:...'", `'${key}'`).replace('port: 8080', `port: ${port}`),
    );
    const result = await run(process.execPath, [file]);
    assert.equal(result.code, 0, `quickstart failed: ${result.stderr}`);
    assert.match(result.stdout, /status: 'live'/);
  } finally {
    server.kill('SIGKILL');
  }
});

test('the events example publishes an event', async () => {
  const [example] = claim((b) => b.lang === 'js' && b.code.includes('/events'));
  assert.ok(example);
  const server = await startServer();
  try {
    const file = scratchFile('events.mjs', example.code);
    const result = await run(process.execPath, [file], { env: { REALTIME_URL: server.url, REALTIME_KEY: FULL_KEY } });
    assert.equal(result.code, 0, `events example failed: ${result.stderr}`);
    assert.match(result.stdout, /^201 /);
    assert.match(result.stdout, /user:user-42/);
  } finally {
    await server.stop();
  }
});

test('every TOML block is a configuration (or policy) the server accepts', () => {
  const tomls = claim((b) => b.lang === 'toml');
  assert.ok(tomls.length >= 4);
  for (const block of tomls) {
    const file = scratchFile('settings.toml', block.code);
    const flag = /^\[\[rule\]\]/m.test(block.code) ? '--policy' : '--config';
    const result = spawnSync(REALTIME_BIN, ['check-config', flag, file, '--keys', 'readme.check:secret'], {
      encoding: 'utf8',
      env: { ...process.env, REALTIME_SUPABASE_JWT_SECRET: 'readme-secret' },
    });
    assert.equal(result.status, 0, `${where(block)} (${flag}): ${result.stdout}${result.stderr}`);
  }
});

test('the delta and filter snippets run: patched states arrive whole, and only the big tip', async () => {
  const [delta] = claim((b) => b.lang === 'js' && b.code.includes('@ably/vcdiff-decoder'));
  const [filter] = claim((b) => b.lang === 'js' && b.code.includes('getDerived'));
  assert.ok(delta && filter);
  const server = await startServer();
  try {
    // What the snippets take from the quickstart (`self`, a key) and the app (`render`,
    // `celebrate`), then the snippets as pasted, then a backend publishing to them.
    const program = `
import * as Ably from 'ably';
const self = { endpoint: '127.0.0.1', port: ${server.port}, tls: false, fallbackHosts: [], disableConnectivityCheck: true };
const key = '${FULL_KEY}';
const rendered = [];
const render = (state) => rendered.push(state);
const celebrated = [];
const celebrate = (data) => celebrated.push(data);
${delta.code}
${filter.code}
const rest = new Ably.Rest({ key, ...self });
for (let round = 0; round < 3; round += 1) {
  await rest.channels.get('stream:42').publish('state', { viewers: Array.from({ length: 50 }, (_, i) => ({ i, tips: i === round ? 99 : 0 })) });
}
await rest.channels.get('stream:42').publish([
  { name: 'tip', data: 'small', extras: { headers: { amount: 5 } } },
  { name: 'tip', data: 'big', extras: { headers: { amount: 500 } } },
]);
const deadline = Date.now() + 10_000;
while ((rendered.length < 5 || celebrated.length < 1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
const patched = viewers.channelOptions?.params?.delta;
console.log(JSON.stringify({ rendered: rendered.slice(0, 3).map((s) => s.viewers.findIndex((v) => v.tips === 99)), celebrated, patched }));
realtime.close();
`;
    const file = scratchFile('deltas.mjs', program);
    const result = await run(process.execPath, [file]);
    assert.equal(result.code, 0, `the snippets failed: ${result.stderr}`);
    const out = JSON.parse(result.stdout.trim().split('\n').pop());
    assert.deepEqual(out.rendered, [0, 1, 2], 'every state arrives whole, in order');
    assert.deepEqual(out.celebrated, ['big']);
    assert.equal(out.patched, 'vcdiff');
  } finally {
    await server.stop();
  }
});

test('the JSON example parses, and the `serve` command line is accepted', () => {
  for (const block of claim((b) => b.lang === 'json')) {
    assert.doesNotThrow(() => JSON.parse(block.code), where(block));
  }
  const [serve] = claim((b) => b.lang === 'sh' && /^realtime serve /m.test(b.code));
  assert.ok(serve);
  const result = spawnSync('bash', ['-c', serve.code.replace(/^realtime serve /m, '"$REALTIME_BIN" check-config ')], {
    encoding: 'utf8',
    env: { ...process.env, REALTIME_BIN, BACKEND_KEY_SECRET: 'backend-secret', SUPABASE_JWT_SECRET: 'jwt-secret' },
  });
  assert.equal(result.status, 0, `${where(serve)}: ${result.stdout}${result.stderr}`);
  assert.match(result.stdout, /supabase: on/);
});

test('snippets that need a service we do not start still parse', () => {
  // A Supabase client in a browser and an Express webhook receiver: syntax-checked as modules.
  for (const block of claim((b) => b.lang === 'js' && (b.code.includes('supabase.auth') || b.code.includes('express')))) {
    const file = scratchFile('snippet.mjs', block.code);
    const result = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8' });
    assert.equal(result.status, 0, `${where(block)}: ${result.stderr}`);
  }
  // Shell for a Kubernetes cluster: valid shell, at least.
  for (const block of claim((b) => b.lang === 'sh' && /^\s*kubectl /m.test(b.code))) {
    const result = spawnSync('bash', ['-n', '-c', block.code], { encoding: 'utf8' });
    assert.equal(result.status, 0, `${where(block)}: ${result.stderr}`);
  }
  // The half-hour soak: the packages it builds exist and the load tool knows every flag it uses.
  const [soak] = claim((b) => b.lang === 'sh' && b.code.includes('realtime-load'));
  assert.ok(soak);
  const cargoToml = readFileSync(path.join(root, 'load-tests/Cargo.toml'), 'utf8');
  assert.match(soak.code, /cargo build --release -p realtime -p load-tests/);
  assert.match(cargoToml, /name = "realtime-load"/);
  const load = path.join(path.dirname(REALTIME_BIN), 'realtime-load');
  const help = ['--help', 'soak --help'].map((a) => spawnSync(load, a.split(' '), { encoding: 'utf8' }).stdout).join('');
  const line = soak.code.split('\n').find((l) => l.includes('realtime-load'));
  for (const [flag] of line.matchAll(/--[a-z-]+/g)) assert.ok(help.includes(flag), `${where(soak)}: realtime-load has no ${flag}`);
});

test('every snippet in the README is checked by this file', () => {
  const unchecked = blocks.filter((b) => !checked.has(b)).map((b) => `${where(b)} (${b.lang || 'plain'})`);
  assert.deepEqual(unchecked, []);
});
