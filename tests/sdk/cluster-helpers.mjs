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
 * A master, its replica and 3 sentinels (`redis-server --sentinel`, master name `m`, the master
 * judged down after 1 s) on free loopback ports, keeping nothing on disk; resolves once the
 * replica is in sync and every sentinel knows it and the other two. `url` is
 * `redis+sentinel://…/m`; `killMaster()` SIGKILLs the master at the start, `restartOldMaster()`
 * starts it again, empty, on its port (the sentinels make it a replica of the new master),
 * `masterPort()` is the master as sentinel 0 names it.
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
  const [masterPort, replicaPort] = [await freePort(), await freePort()];
  await run('master', ['--port', String(masterPort), ...data], masterPort);
  await run('replica', ['--port', String(replicaPort), ...data, '--replicaof', '127.0.0.1', String(masterPort)], replicaPort);
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
  await pollUntil(
    async () =>
      cli(replicaPort, 'INFO', 'replication').includes('master_link_status:up') &&
      sentinels.every(
        (port) =>
          cli(port, 'SENTINEL', 'REPLICAS', 'm').split('\n').includes('slave') &&
          cli(port, 'SENTINEL', 'SENTINELS', 'm').split('\n').filter((l) => l === 'name').length >= 2,
      ),
    (ready) => ready,
    30_000,
    'the sentinels see the replica and each other',
  );
  const kill = async (name) => {
    const running = children.get(name);
    running.child.kill('SIGKILL');
    await running.exited;
  };
  return {
    url: `redis+sentinel://${sentinels.map((port) => `127.0.0.1:${port}`).join(',')}/m`,
    masterPort: () => Number(cli(sentinels[0], 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'm').split('\n')[1]),
    oldMaster: masterPort,
    replica: replicaPort,
    killMaster: () => kill('master'),
    restartOldMaster: () => run('master', ['--port', String(masterPort), ...data], masterPort),
    /** Whether the old master is a replica in sync again. */
    oldMasterReplicates: () => {
      const info = cli(masterPort, 'INFO', 'replication');
      return info.includes('role:slave') && info.includes('master_link_status:up');
    },
    stop: async () => {
      for (const name of children.keys()) await kill(name);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
