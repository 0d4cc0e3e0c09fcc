// The test page: a Digis front end in miniature. It signs in as a Supabase user (the token comes from
// this page's own origin, /supabase-token), connects ably-js to the gateway on another origin, shows the
// messages of a session channel and who is present, and keeps what a test needs to read in `window.app`.
//
// Query: ?gateway=<port on 127.0.0.1>&sub=<user id>&format=json|msgpack

'use strict';

const query = new URLSearchParams(location.search);

const gatewayOptions = {
  endpoint: '127.0.0.1',
  port: Number(query.get('gateway')),
  tls: false,
  fallbackHosts: [],
  disableConnectivityCheck: true,
  transports: ['web_socket'],
  useBinaryProtocol: query.get('format') === 'msgpack',
};

/** What Digis does with supabase-js: hand ably-js the session's access token (a JWT string). */
function authCallback(_params, callback) {
  fetch(`/supabase-token?sub=${encodeURIComponent(query.get('sub'))}`)
    .then((res) => {
      if (!res.ok) throw new Error(`/supabase-token answered ${res.status}`);
      return res.text();
    })
    .then((token) => callback(null, token), (err) => callback(err, null));
}

/** Channels whose state changes are being recorded. */
const recorded = new Set();

const describeError = (err) => (err ? { code: err.code, statusCode: err.statusCode, message: err.message } : null);

const app = {
  realtime: null,
  /** Every connection state change: { previous, current, reason }. */
  stateChanges: [],
  /** Every channel state change or update: { channel, event, previous, current, resumed, reason }. */
  channelChanges: [],
  /** Every message received: { channel, name, data, id }. */
  received: [],
  /** Every presence event: { action, clientId }. */
  presenceEvents: [],

  /** Connect as the signed-in user; resolves once connected. */
  connect() {
    const realtime = new Ably.Realtime({ ...gatewayOptions, authCallback });
    app.realtime = realtime;
    realtime.connection.on((change) => {
      app.stateChanges.push({ previous: change.previous, current: change.current, reason: describeError(change.reason) });
      document.getElementById('state').textContent = change.current;
      document.getElementById('connection-id').textContent = realtime.connection.id ?? '';
    });
    return new Promise((resolve, reject) => {
      const listener = (change) => {
        if (change.current === 'connected') {
          realtime.connection.off(listener);
          resolve(app.snapshot());
        } else if (['failed', 'suspended', 'closed'].includes(change.current)) {
          realtime.connection.off(listener);
          reject(new Error(`connection went ${change.current}: ${change.reason?.message}`));
        }
      };
      realtime.connection.on(listener);
    });
  },

  /** Subscribe to `channelName`, rendering each message as a list item; resolves once attached. */
  subscribe(channelName) {
    const channel = app.channel(channelName);
    const list = document.getElementById('messages');
    return channel
      .subscribe((message) => {
        app.received.push({ channel: channelName, name: message.name, data: message.data, id: message.id });
        const item = document.createElement('li');
        item.dataset.name = message.name;
        item.dataset.seq = String(message.data?.seq ?? '');
        item.textContent = `${message.name} ${JSON.stringify(message.data)}`;
        list.append(item);
      })
      .then(() => null);
  },

  /** Enter presence on `channelName` and keep the list of present clientIds rendered. */
  async enterPresence(channelName) {
    const channel = app.channel(channelName);
    const render = async () => {
      const members = await channel.presence.get();
      const list = document.getElementById('presence');
      list.replaceChildren(
        ...members
          .map((member) => member.clientId)
          .sort()
          .map((clientId) => {
            const item = document.createElement('li');
            item.dataset.clientId = clientId;
            item.textContent = clientId;
            return item;
          }),
      );
    };
    await channel.presence.subscribe((event) => {
      app.presenceEvents.push({ action: event.action, clientId: event.clientId });
      render();
    });
    await channel.presence.enter({ tab: document.title });
    await render();
  },

  /**
   * Cross-origin HTTP from the browser: ably-js REST with the same Supabase token (Authorization: Bearer, so
   * the browser sends a CORS preflight), in the page's wire format. Resolves with what came back.
   */
  async restRequests(channelName) {
    const rest = new Ably.Rest({ ...gatewayOptions, authCallback });
    const serverTime = await rest.time();
    const members = await rest.channels.get(channelName).presence.get();
    return { serverTime, presentClientIds: members.items.map((m) => m.clientId).sort() };
  },

  /**
   * Web Push as a Digis page sets it up: ably-js's push plugin activates the browser as a push
   * device (service worker, VAPID key from the gateway, device registration with the signed-in
   * user's token) and subscribes it to `channelName`. The browser's push service (FCM, for
   * Chromium) is out of reach offline, so `PushManager.subscribe` answers with `subscription`,
   * the test receiver's endpoint and keys, where Chromium would have asked FCM for one; it
   * records the VAPID key it was asked with. Resolves with the device's id and clientId.
   */
  async activatePush(channelName, subscription) {
    const bytes = (base64url) => Uint8Array.from(atob(base64url.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0)).buffer;
    const asked = [];
    PushManager.prototype.subscribe = async function subscribe(options) {
      asked.push(btoa(String.fromCharCode(...new Uint8Array(options.applicationServerKey))));
      const keys = { p256dh: bytes(subscription.p256dh), auth: bytes(subscription.auth) };
      return { endpoint: subscription.endpoint, getKey: (name) => keys[name] ?? null, options };
    };
    const realtime = new Ably.Realtime({
      ...gatewayOptions,
      authCallback,
      plugins: { Push: AblyPushPlugin },
      pushServiceWorkerUrl: '/sw.js',
    });
    app.realtime = realtime;
    await realtime.push.activate();
    await realtime.channels.get(channelName).push.subscribeDevice();
    const device = realtime.device();
    return {
      deviceId: device.id,
      clientId: device.clientId ?? realtime.auth.clientId,
      applicationServerKeys: asked,
      workers: (await navigator.serviceWorker.getRegistrations()).map((r) => r.active?.scriptURL ?? r.installing?.scriptURL ?? null),
    };
  },

  channel(channelName) {
    const channel = app.realtime.channels.get(channelName);
    if (!recorded.has(channelName)) {
      recorded.add(channelName);
      channel.on(function record(change) {
        app.channelChanges.push({
          channel: channelName,
          event: this.event,
          previous: change.previous,
          current: change.current,
          resumed: change.resumed,
          reason: describeError(change.reason),
        });
      });
    }
    return channel;
  },

  snapshot() {
    const connection = app.realtime?.connection;
    return {
      state: connection?.state ?? 'none',
      connectionId: connection?.id ?? null,
      clientId: app.realtime?.auth.clientId ?? null,
      stateChanges: app.stateChanges,
      channelChanges: app.channelChanges,
    };
  },
};

window.app = app;
