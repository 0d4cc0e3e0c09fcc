// A private redis-server and a TCP balancer, for tests that run several gateway nodes on one bus.

import { spawn } from 'node:child_process';
import net from 'node:net';

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
