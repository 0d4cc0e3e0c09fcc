// Shared helpers for the ably-js end-to-end suite: bounded waits, message collectors,
// a wire log (frames the client received, taken from ably-js' own micro-level log), and a client pool
// that makes sure every client a test opens gets closed.

import { after, afterEach, before } from 'node:test';

import Ably from 'ably';
import { clientOptions, startServer } from './server.mjs';

/**
 * The hooks most files share, registered on the enclosing `describe`: one server for the block
 * (`startServer(options)`, `options` an object or a function called when the server starts),
 * handed to `setServer`; the test's client pool (`getPool()`) closed after each test and at the
 * end, then the server stopped.
 */
export function useServer(setServer, getPool, options) {
  let server;
  before(async () => {
    server = await startServer(typeof options === 'function' ? options() : options);
    setServer(server);
  });
  afterEach(async () => {
    await getPool()?.closeAll();
  });
  after(async () => {
    await getPool()?.closeAll();
    await server?.stop();
  });
}

/** The two wire formats; `useBinaryProtocol` selects msgpack (true) or JSON (false). */
export const FORMATS = [
  { name: 'json', useBinaryProtocol: false },
  { name: 'msgpack', useBinaryProtocol: true },
];

/** Resolve/reject with `promise`, or reject after `ms` with a message naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}

/** Wait until a realtime client is `connected`; reject early if it goes `failed`, `suspended` or `closed`. */
export function awaitConnected(realtime, ms = 10_000) {
  const conn = realtime.connection;
  if (conn.state === 'connected') return Promise.resolve();
  return withTimeout(
    new Promise((resolve, reject) => {
      const listener = (change) => {
        if (change.current === 'connected') {
          conn.off(listener);
          resolve();
        } else if (['failed', 'suspended', 'closed'].includes(change.current)) {
          conn.off(listener);
          reject(
            Object.assign(new Error(`connection went ${change.current}: ${change.reason}`), { reason: change.reason }),
          );
        }
      };
      conn.on(listener);
    }),
    ms,
    'connection to become connected',
  );
}

/** Wait until the connection reaches `state` (e.g. 'failed'); resolves with the state change. */
export function awaitConnectionState(realtime, state, ms = 10_000) {
  const conn = realtime.connection;
  return withTimeout(
    new Promise((resolve) => {
      if (conn.state === state) {
        resolve({ current: state, reason: conn.errorReason });
        return;
      }
      const listener = (change) => {
        if (change.current === state) {
          conn.off(listener);
          resolve(change);
        }
      };
      conn.on(listener);
    }),
    ms,
    `connection state ${state}`,
  );
}

/** Await a promise that must reject; returns the error. */
export async function expectRejection(promise, ms, what) {
  let result;
  try {
    result = await withTimeout(promise, ms, what);
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('timed out after')) throw err;
    return err;
  }
  throw new Error(`expected ${what} to be rejected, but it resolved with ${safeJson(result)}`);
}

export function safeJson(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/**
 * Subscribe to a channel and collect every message; `waitFor(pred)` resolves once a message matching
 * `pred` has arrived (or is already there), `waitForCount(n)` once n messages have arrived.
 */
export class Collector {
  constructor() {
    this.messages = [];
    this.waiters = [];
    this.listener = (msg) => {
      this.messages.push(msg);
      for (const w of [...this.waiters]) w.check();
    };
  }

  /** Subscribe (attaching implicitly) and resolve once attached. */
  async subscribe(channel, ms = 10_000) {
    this.channel = channel;
    await withTimeout(channel.subscribe(this.listener), ms, `attach+subscribe to ${channel.name}`);
    return this;
  }

  waitFor(pred, ms, what) {
    return withTimeout(
      new Promise((resolve) => {
        const waiter = {
          check: () => {
            const found = this.messages.find(pred);
            if (found) {
              this.waiters.splice(this.waiters.indexOf(waiter), 1);
              resolve(found);
            }
          },
        };
        this.waiters.push(waiter);
        waiter.check();
      }),
      ms,
      what,
    ).catch((err) => {
      throw new Error(`${err.message}; received so far: ${this.describe()}`);
    });
  }

  waitForCount(n, ms, what) {
    return withTimeout(
      new Promise((resolve) => {
        const waiter = {
          check: () => {
            if (this.messages.length >= n) {
              this.waiters.splice(this.waiters.indexOf(waiter), 1);
              resolve(this.messages.slice(0, n));
            }
          },
        };
        this.waiters.push(waiter);
        waiter.check();
      }),
      ms,
      what,
    ).catch((err) => {
      throw new Error(`${err.message}; received ${this.messages.length}: ${this.describe()}`);
    });
  }

  describe(max = 20) {
    const shown = this.messages.slice(-max).map((m) => `${m.name}=${safeJson(m.data)}`);
    return `[${shown.join(', ')}]`;
  }
}

/** The messages among `messages` whose action is `action`. */
function withAction(messages, action) {
  return messages.filter((l) => l.includes(`action=${action};`) || l.includes(`action=${action}]`));
}

/**
 * Capture ably-js' micro-level log. `received()` lists the ProtocolMessages the client decoded from the
 * server (as ably-js stringifies them: "[ProtocolMessage; action=NACK; ...; error=[ErrorInfo: ...]]").
 * Lets a test prove that an error came from the server rather than from a local check in ably-js.
 */
export class WireLog {
  constructor() {
    this.lines = [];
    this.options = {
      logLevel: 4,
      logHandler: (line) => {
        this.lines.push(String(line));
        if (this.lines.length > 20_000) this.lines.splice(0, 10_000);
      },
    };
  }

  /** The ProtocolMessages of the log lines that contain both `where` and `what`. */
  #messages(where, what) {
    return this.lines
      .filter((l) => l.includes(where) && l.includes(what))
      .map((l) => {
        const i = l.indexOf('[ProtocolMessage');
        return i >= 0 ? l.slice(i) : l;
      });
  }

  received() {
    return this.#messages('Transport.onProtocolMessage()', 'received on');
  }

  receivedAction(action) {
    return withAction(this.received(), action);
  }

  /** ProtocolMessages the client sent ("[ProtocolMessage; action=ATTACH; channel=…; channelSerial=…]"). */
  sent() {
    return this.#messages('Protocol.send()', 'sending msg');
  }

  sentAction(action) {
    return withAction(this.sent(), action);
  }

  /** The WebSocket URIs (with query: `resume=`, `recover=`…) of the transports the client opened, in order. */
  connectUris() {
    const uris = [];
    for (const line of this.lines) {
      const i = line.indexOf('WebSocketTransport; uri=');
      if (i < 0) continue;
      // Some log lines go on after the URI with "; mode = …" (the URI itself has no raw ';').
      const uri = line.slice(i + 'WebSocketTransport; uri='.length).split(/[\s;]/)[0];
      if (!uris.includes(uri)) uris.push(uri);
    }
    return uris;
  }

  tail(n = 40) {
    return this.lines.slice(-n).join('\n');
  }
}

/** Keeps every realtime client a test opens so that `closeAll()` can close them. */
export class ClientPool {
  constructor(port) {
    this.port = port;
    this.realtimes = new Set();
  }

  realtime(extra = {}) {
    const client = new Ably.Realtime(clientOptions(this.port, extra));
    this.realtimes.add(client);
    return client;
  }

  rest(extra = {}) {
    return new Ably.Rest(clientOptions(this.port, extra));
  }

  /** One realtime client per options object, opened together; resolves when all are connected. */
  async connected(...extras) {
    const clients = extras.map((extra) => this.realtime(extra));
    await Promise.all(clients.map((client) => awaitConnected(client)));
    return clients;
  }

  /**
   * A publisher and a subscriber, connected together, on a fresh channel `prefix…`; the
   * subscriber's Collector listens before anything is published.
   */
  async publisherAndSubscriber(prefix, publisherOptions, subscriberOptions) {
    const [publisher, subscriber] = await this.connected(publisherOptions, subscriberOptions);
    const name = uniq(prefix);
    const received = await new Collector().subscribe(subscriber.channels.get(name));
    return { publisher, subscriber, name, received, channel: publisher.channels.get(name) };
  }

  async close(client) {
    this.realtimes.delete(client);
    await closeRealtime(client);
  }

  async closeAll() {
    const all = [...this.realtimes];
    this.realtimes.clear();
    await Promise.all(all.map((c) => closeRealtime(c)));
  }
}

/** Close a realtime client and wait (bounded) until it is closed or failed. Never throws. */
export async function closeRealtime(client) {
  const conn = client.connection;
  if (['closed', 'failed'].includes(conn.state)) return;
  const done = new Promise((resolve) => {
    const listener = (change) => {
      if (['closed', 'failed'].includes(change.current)) {
        conn.off(listener);
        resolve();
      }
    };
    conn.on(listener);
  });
  // ably-js 2.28 quirk: an authorize() that completes after close() (e.g. the answer to a server AUTH that
  // was in flight) calls connectionManager.onAuthUpdated(), which requests `connecting` again from `closed`.
  // A resurrected client would retry forever and keep node alive, so close it again if that happens.
  conn.on((change) => {
    if (change.current === 'connecting') client.close();
  });
  try {
    client.close();
    await withTimeout(done, 12_000, 'client to close');
  } catch (err) {
    console.warn(`warning: closing ably client: ${err.message}`);
  }
}

/**
 * authCallback handing back TokenRequests signed by `signer` (an Ably.Rest with a key): what the brief calls
 * "authCallback that calls rest.auth.createTokenRequest(...)". `calls` counts invocations.
 */
export function tokenRequestAuthCallback(signer, tokenParams = {}) {
  const cb = (params, callback) => {
    cb.calls += 1;
    cb.params.push(params);
    signer.auth.createTokenRequest({ ...tokenParams }).then(
      (tokenRequest) => callback(null, tokenRequest),
      (err) => callback(err, null),
    );
  };
  cb.calls = 0;
  cb.params = [];
  return cb;
}

/**
 * An authCallback that hands each call to `issue(params, cb)` and records when (`times`) until `stop()`;
 * after that every call is refused with 40170 and counted (`refused`), so no renewal can complete after
 * close() (see closeRealtime).
 */
export function stoppableAuthCallback(issue) {
  const cb = (params, callback) => {
    if (cb.stopped) {
      cb.refused += 1;
      callback({ code: 40170, statusCode: 401, message: 'test finished: no more tokens' }, null);
      return;
    }
    cb.times.push(Date.now());
    issue(params, callback);
  };
  cb.times = [];
  cb.refused = 0;
  cb.stopped = false;
  cb.stop = () => {
    cb.stopped = true;
  };
  return cb;
}

/** Poll `fn` (async) until `pred(value)` holds; bounded by `ms`. Returns the last value. */
export async function pollUntil(fn, pred, ms, what, intervalMs = 100) {
  const deadline = Date.now() + ms;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      lastErr = undefined;
      if (pred(last)) return last;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}; last value ${safeJson(last)}${lastErr ? `; last error ${lastErr}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Unique-ish suffix so channel names never collide between tests. */
let seq = 0;
export function uniq(prefix) {
  seq += 1;
  return `${prefix}-${process.pid}-${seq}`;
}

/** Events a listener got (`listener`), and a bounded wait for one (`waitFor`). */
export class Events {
  constructor() {
    this.all = [];
    this.waiters = [];
  }

  listener = (event) => {
    this.all.push(event);
    for (const waiter of [...this.waiters]) waiter();
  };

  waitFor(pred, what, ms = 15_000) {
    return withTimeout(
      new Promise((resolve) => {
        const check = () => {
          const found = this.all.find(pred);
          if (found) {
            this.waiters.splice(this.waiters.indexOf(check), 1);
            resolve(found);
          }
        };
        this.waiters.push(check);
        check();
      }),
      ms,
      what,
    );
  }
}
