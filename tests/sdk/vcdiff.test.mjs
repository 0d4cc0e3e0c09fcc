// Our VCDIFF encoder (the vcdiff crate) against the decoder ably-js uses for `delta=vcdiff`
// channels, @ably/vcdiff-decoder: every delta of a seeded corpus (random, edited, runs, empty
// sides, 2 KB JSON messages) must decode to its target.
//
// The corpus comes from the crate's example, $VCDIFF_CORPUS_BIN, else
// ../../target/debug/examples/vcdiff_corpus (built by `cargo build -p vcdiff --examples`, and by
// `cargo build --workspace --all-targets` in scripts/test.sh).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import vcdiffDecoder from '@ably/vcdiff-decoder';

const here = path.dirname(fileURLToPath(import.meta.url));
const CORPUS_BIN = process.env.VCDIFF_CORPUS_BIN
  ? path.resolve(process.env.VCDIFF_CORPUS_BIN)
  : path.resolve(here, '../../target/debug/examples/vcdiff_corpus');
const CASES = 600;

test('@ably/vcdiff-decoder decodes every delta our encoder writes', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vcdiff-corpus-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const made = spawnSync(CORPUS_BIN, [dir, String(CASES), '42'], { encoding: 'utf8' });
  assert.equal(made.status, 0, `${CORPUS_BIN} failed: ${made.error ?? made.stderr}`);

  const names = readdirSync(dir).filter((name) => name.endsWith('.delta')).sort();
  assert.equal(names.length, CASES);
  let deltaBytes = 0;
  let targetBytes = 0;
  for (const name of names) {
    const base = path.join(dir, name.slice(0, -'.delta'.length));
    const source = new Uint8Array(readFileSync(`${base}.source`));
    const target = new Uint8Array(readFileSync(`${base}.target`));
    const delta = new Uint8Array(readFileSync(`${base}.delta`));
    const decoded = vcdiffDecoder.decode(delta, source);
    assert.ok(
      Buffer.from(decoded).equals(Buffer.from(target)),
      `${name}: ${source.length} -> ${target.length} bytes decoded to ${decoded.length} different bytes`,
    );
    deltaBytes += delta.length;
    targetBytes += target.length;
  }
  t.diagnostic(`${CASES} deltas: ${deltaBytes} bytes for ${targetBytes} target bytes`);
});
