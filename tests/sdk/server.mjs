// Test helper: start and stop the Digis Realtime server binary for the ably-js end-to-end suite.
//
// The binary comes from $REALTIME_BIN, else ../../target/debug/realtime relative to this file.
// Every test file calls startServer() in `before` and server.stop() in `after`.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export const REALTIME_BIN = process.env.REALTIME_BIN
  ? path.resolve(process.env.REALTIME_BIN)
  : path.resolve(here, '../../target/debug/realtime');

// Keys known to every server started by this helper.
export const FULL_KEY = 'app1.full:secretfull';
export const LIMITED_KEY = 'app1.limited:secretlim';
export const LIMITED_CAPABILITY = { 'allowed:*': ['publish', 'subscribe'] };
export const DEFAULT_KEYS = `${FULL_KEY},${LIMITED_KEY}=${JSON.stringify(LIMITED_CAPABILITY)}`;

const STARTUP_DEADLINE_MS = 10_000;
const STOP_GRACE_MS = 5_000;

/** Find a free TCP port on 127.0.0.1 (listen on port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** GET http://127.0.0.1:port/time once; resolves with the status code (or rejects on a network error). */
function probeTime(port, timeoutMs = 1000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/time', timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
  });
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Start `realtime serve --listen 127.0.0.1:PORT --keys KEYS [...args]` and wait until GET /time answers 200.
 * `args` are extra command-line arguments (e.g. `['--supabase-jwt-secret', s]`), `env` extra environment,
 * `port` a fixed port (default: a free one).
 * Returns { port, url, stop(), output() }.
 */
export async function startServer({ keys = DEFAULT_KEYS, env = {}, args: extraArgs = [], port: fixedPort } = {}) {
  if (!existsSync(REALTIME_BIN)) {
    throw new Error(
      `realtime binary not found at ${REALTIME_BIN}: run \`cargo build\` in the repository root or set REALTIME_BIN`,
    );
  }
  // `port`: listen on this port (e.g. to restart a server where clients expect it) instead of a free one.
  const port = fixedPort ?? (await freePort());
  const listen = `127.0.0.1:${port}`;
  // Test tokens live seconds, not hours: the server asks for renewal (AUTH) 2 s before expiry.
  // With Ably's default 30 s lead such tokens would simply expire into 40142 instead.
  // A stopping server hands its clients over within 2 s rather than the default 10 s.
  const args = ['serve', '--listen', listen, '--keys', keys, '--token-renew-lead-ms', '2000', '--drain-ms', '2000', ...extraArgs];
  const child = spawn(REALTIME_BIN, args, {
    env: { ...process.env, RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let output = '';
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);

  let exited = null; // { code, signal } once the process has exited
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  let spawnError = null;
  child.once('error', (err) => {
    spawnError = err;
  });

  const describe = () =>
    `command: ${REALTIME_BIN} ${args.map((a) => JSON.stringify(a)).join(' ')}\n--- server output ---\n${output || '(none)'}`;

  const deadline = Date.now() + STARTUP_DEADLINE_MS;
  let lastProblem = 'no attempt made';
  for (;;) {
    if (spawnError) throw new Error(`could not spawn realtime server: ${spawnError.message}\n${describe()}`);
    if (exited) {
      throw new Error(
        `realtime server exited during startup (code ${exited.code}, signal ${exited.signal})\n${describe()}`,
      );
    }
    try {
      const status = await probeTime(port);
      if (status === 200) break;
      lastProblem = `GET /time answered HTTP ${status}`;
    } catch (err) {
      lastProblem = `GET /time failed: ${err.message}`;
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exitPromise;
      throw new Error(
        `realtime server did not answer GET /time with 200 within ${STARTUP_DEADLINE_MS} ms (${lastProblem})\n${describe()}`,
      );
    }
    await delay(50); // polling interval while waiting for startup, not a correctness sleep
  }

  let stopping = null;
  const stop = () => {
    if (stopping) return stopping;
    stopping = (async () => {
      if (exited) return exited;
      child.kill('SIGTERM');
      let timer;
      const killer = new Promise((resolve) => {
        timer = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
          resolve();
        }, STOP_GRACE_MS);
      });
      await Promise.race([exitPromise, killer]);
      const result = await exitPromise;
      clearTimeout(timer);
      return result;
    })();
    return stopping;
  };

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stop,
    /** Sends `signal` (default SIGKILL: no goodbye) and resolves once the process has exited. */
    kill: (signal = 'SIGKILL') => {
      if (!exited) child.kill(signal);
      return exitPromise;
    },
    /** Everything the server printed so far (stdout and stderr). */
    output: () => output,
  };
}

/**
 * ably-js client options pointing at the local server only: a hostname endpoint (no fallbacks derived),
 * plain ws/http, no fallback hosts, no connectivity check against public Ably hosts.
 */
export function clientOptions(port, extra = {}) {
  return {
    endpoint: '127.0.0.1',
    port,
    tls: false,
    fallbackHosts: [],
    disableConnectivityCheck: true,
    ...extra,
  };
}
