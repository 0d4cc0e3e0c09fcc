// A private redis-server (or a Sentinel set) and a TCP balancer, for tests that run several
// gateway nodes on one bus.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { freePort } from './server.mjs';
import { pollUntil } from './helpers.mjs';

/** Resolves once something accepts TCP connections on loopback `port` (bounded). */
function untilListening(port, what) {
  const up = () =>
    new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
  return pollUntil(up, (ok) => ok, 10_000, what, 20);
}

/**
 * A redis-server on a free loopback port (never the machine's own), keeping nothing on disk.
 * `restart()` kills it (SIGKILL) and starts it again, empty, on the same port; `stop()` kills it.
 */
export async function startRedis() {
  const port = await freePort();
  const redis = { port, url: `redis://127.0.0.1:${port}` };
  const spawnRedis = async () => {
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await untilListening(port, 'redis-server accepting connections');
    return { child, exited };
  };
  let current = await spawnRedis();
  redis.stop = async () => {
    current.child.kill('SIGKILL');
    await current.exited;
  };
  redis.restart = async () => {
    await redis.stop();
    current = await spawnRedis();
  };
  return redis;
}

/**
 * Forwards each new TCP connection to the next of `balancer.targets` (ports, round robin);
 * existing connections stay where they are, as a Kubernetes Service does.
 */
export async function startBalancer(targets) {
  const balancer = { targets: [...targets], sockets: new Set(), next: 0 };
  const open = new Map();
  /** How many client connections are open to `port`. */
  balancer.connectionsTo = (port) => open.get(port)?.size ?? 0;
  const server = net.createServer((client) => {
    const target = balancer.targets[balancer.next++ % balancer.targets.length];
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) balancer.sockets.add(s);
    if (!open.has(target)) open.set(target, new Set());
    open.get(target).add(client);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      balancer.sockets.delete(client);
      balancer.sockets.delete(upstream);
      open.get(target).delete(client);
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  balancer.port = server.address().port;
  balancer.stop = () => {
    for (const s of balancer.sockets) s.destroy();
    server.close();
  };
  return balancer;
}

/** `redis-cli -p port args…`'s output ('' if it cannot connect). */
function cli(port, ...args) {
  try {
    return execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8', timeout: 5_000 });
  } catch {
    return '';
  }
}

/**
 * A master, two replicas and 3 sentinels (`redis-server --sentinel`, master name `m`, the master
 * judged down after 1 s) on free loopback ports, keeping nothing on disk; resolves once both
 * replicas are in sync and every sentinel knows them and the other two. `url` is
 * `redis+sentinel://…/m`; `killMaster()` SIGKILLs the master at the start, `masterPort()` is the
 * master as sentinel 0 names it, `onlineReplicas(port)` how many replicas the server on `port`
 * serves in sync. Two replicas, as production sets run: the failover itself moves the one not
 * promoted to the new master (a restarted old master would wait for Sentinel's INFO rounds).
 */
export async function startSentinelSet() {
  const dir = mkdtempSync(path.join(tmpdir(), 'realtime-sdk-sentinels-'));
  const children = new Map();
  const run = async (name, args, port) => {
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    children.set(name, { child, exited });
    await untilListening(port, `${name} accepting connections`);
  };
  // A replica's full sync goes through an RDB file: in the set's own directory.
  const data = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const masterPort = await freePort();
  await run('master', ['--port', String(masterPort), ...data], masterPort);
  const replicas = [];
  for (let i = 0; i < 2; i += 1) {
    const port = await freePort();
    await run(`replica ${i}`, ['--port', String(port), ...data, '--replicaof', '127.0.0.1', String(masterPort)], port);
    replicas.push(port);
  }
  const sentinels = [];
  for (let i = 0; i < 3; i += 1) {
    const port = await freePort();
    const conf = path.join(dir, `sentinel-${i}.conf`);
    writeFileSync(
      conf,
      `port ${port}\nbind 127.0.0.1\ndir ${dir}\nsentinel resolve-hostnames no\n` +
        `sentinel monitor m 127.0.0.1 ${masterPort} 2\n` +
        'sentinel down-after-milliseconds m 1000\nsentinel failover-timeout m 5000\n',
    );
    await run(`sentinel ${i}`, [conf, '--sentinel'], port);
    sentinels.push(port);
  }
  const lines = (port, ...args) => cli(port, ...args).split('\n');
  const kill = async (name) => {
    const running = children.get(name);
    running.child.kill('SIGKILL');
    await running.exited;
  };
  const stop = async () => {
    for (const name of children.keys()) await kill(name);
    rmSync(dir, { recursive: true, force: true });
  };
  await pollUntil(
    async () =>
      replicas.every((port) => cli(port, 'INFO', 'replication').includes('master_link_status:up')) &&
      sentinels.every(
        (port) =>
          lines(port, 'SENTINEL', 'REPLICAS', 'm').filter((l) => l === 'name').length === replicas.length &&
          lines(port, 'SENTINEL', 'SENTINELS', 'm').filter((l) => l === 'name').length >= 2,
      ),
    (ready) => ready,
    30_000,
    'the sentinels see both replicas and each other',
  ).catch(async (err) => {
    await stop();
    throw err;
  });
  return {
    url: `redis+sentinel://${sentinels.map((port) => `127.0.0.1:${port}`).join(',')}/m`,
    masterPort: () => Number(lines(sentinels[0], 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'm')[1]),
    oldMaster: masterPort,
    replicas,
    killMaster: () => kill('master'),
    onlineReplicas: (port) => (cli(port, 'INFO', 'replication').match(/state=online/g) ?? []).length,
    stop,
  };
}
