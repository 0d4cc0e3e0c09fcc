// A live stream's chat on Digis Realtime, with the unmodified `ably` and `@ably/chat` browser bundles
// (window.Ably, window.AblyChat). The viewer signs in with their Supabase access token; the gateway checks
// it and applies policy.toml: what they may do in the room, and the badge (userClaim) on their messages.
//
// Query: ?token=<Supabase access token> (else a sign-in box), ?gateway=http://127.0.0.1:8080,
// ?room=room:stream-42.

const { ChatClient, ChatMessageAction, ChatMessageEventType } = window.AblyChat;

const HEART = '❤️';
const query = new URLSearchParams(location.search);
const roomName = query.get('room') || 'room:stream-42';
const gateway = new URL(query.get('gateway') || 'http://127.0.0.1:8080');

const $ = (selector) => document.querySelector(selector);

/** The token's claims, read only to decide what to show; the gateway verifies the token and decides. */
function claimsOf(jwt) {
  try {
    const base64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
}

function showError(err) {
  $('#error').textContent = err ? `${err.message ?? err}${err.code ? ` (${err.code})` : ''}` : '';
}

/** Display names by clientId, from presence data (each viewer enters with their name). */
const names = new Map();
const nameOf = (clientId) => names.get(clientId) || clientId.slice(0, 8);

async function join(token) {
  const claims = claimsOf(token);
  const myName = claims.user_metadata?.name || claims.email?.split('@')[0] || String(claims.sub ?? 'viewer').slice(0, 8);
  // Mirrors policy.toml's creator rule; a viewer who forges the button gets 40160 from the gateway.
  const isCreator = `room:${claims.app_metadata?.creator_of}` === roomName;

  const tls = gateway.protocol === 'https:';
  const realtime = new Ably.Realtime({
    endpoint: gateway.hostname,
    tls,
    port: Number(gateway.port) || 80,
    tlsPort: Number(gateway.port) || 443,
    fallbackHosts: [],
    disableConnectivityCheck: true,
    transports: ['web_socket'],
    // The Supabase access token is the realtime credential; ably-js asks again before it expires. With
    // supabase-js: `const { data } = await supabase.auth.getSession(); callback(null, data.session?.access_token)`.
    authCallback: (_params, callback) => callback(null, token),
  });
  realtime.connection.on((change) => {
    $('#status').textContent = change.current;
    if (change.reason && change.current !== 'connected') showError(change.reason);
  });

  const chat = new ChatClient(realtime);
  const room = await chat.rooms.get(roomName, { occupancy: { enableEvents: true } });
  window.liveChat = { realtime, chat, room };
  $('#room-name').textContent = roomName;

  /** The messages shown, by serial (Message objects, kept current with `message.with(event)`). */
  const messages = new Map();
  const list = $('#messages');
  const me = () => realtime.auth.clientId;

  function renderHeart(item, message) {
    const hearts = message.reactions.distinct[HEART];
    const button = item.querySelector('.heart');
    button.querySelector('.count').textContent = String(hearts?.total ?? 0);
    button.setAttribute('aria-pressed', String(Boolean(hearts?.clientIds.includes(me()))));
  }

  function show(message) {
    if (message.action === ChatMessageAction.MessageDelete) {
      remove(message.serial);
      return;
    }
    const known = messages.get(message.serial);
    messages.set(message.serial, known ? known.with(message) : message);
    let item = list.querySelector(`li[data-serial="${CSS.escape(message.serial)}"]`);
    if (!item) {
      item = document.createElement('li');
      item.dataset.serial = message.serial;
      item.dataset.clientId = message.clientId;
      const author = Object.assign(document.createElement('span'), { className: 'author' });
      author.textContent = message.metadata?.name || nameOf(message.clientId);
      item.append(author);
      if (message.userClaim) {
        const badge = Object.assign(document.createElement('span'), { className: 'badge', textContent: message.userClaim });
        badge.dataset.badge = message.userClaim;
        item.append(badge);
      }
      item.append(Object.assign(document.createElement('span'), { className: 'text' }));
      const heart = Object.assign(document.createElement('button'), { type: 'button', className: 'heart', title: 'Like' });
      heart.append(`${HEART} `, Object.assign(document.createElement('span'), { className: 'count', textContent: '0' }));
      heart.addEventListener('click', () => toggleHeart(message.serial));
      item.append(heart);
      if (isCreator) {
        const del = Object.assign(document.createElement('button'), { type: 'button', className: 'delete', textContent: 'Delete' });
        del.addEventListener('click', () =>
          room.messages.delete(message.serial, { description: 'removed by the creator' }).then(() => showError(null), showError),
        );
        item.append(del);
      }
      // Serials order messages; history arrives after live ones may have.
      const next = [...list.children].find((li) => li.dataset.serial > message.serial);
      list.insertBefore(item, next ?? null);
      if (!next) list.scrollTop = list.scrollHeight;
    }
    const current = messages.get(message.serial);
    item.querySelector('.text').textContent = current.text;
    renderHeart(item, current);
  }

  function remove(serial) {
    messages.delete(serial);
    list.querySelector(`li[data-serial="${CSS.escape(serial)}"]`)?.remove();
  }

  async function toggleHeart(serial) {
    const message = messages.get(serial);
    if (!message) return;
    const mine = message.reactions.distinct[HEART]?.clientIds.includes(me());
    try {
      if (mine) await room.messages.reactions.delete(serial, { name: HEART });
      else await room.messages.reactions.send(serial, { name: HEART });
      showError(null);
    } catch (err) {
      showError(err);
    }
  }

  function floatHeart(reaction) {
    const heart = Object.assign(document.createElement('span'), { className: 'floating-heart', textContent: reaction.name });
    heart.dataset.clientId = reaction.clientId;
    heart.style.left = `${Math.floor(Math.random() * 70)}%`;
    heart.addEventListener('animationend', () => heart.remove());
    setTimeout(() => heart.remove(), 5_000); // a hidden tab may never run the animation
    $('#hearts').append(heart);
  }

  function renderTyping(event) {
    const others = event.currentTypers.filter((typer) => typer.clientId !== me()).map((typer) => nameOf(typer.clientId));
    const [first, second] = others;
    $('#typing').textContent = [
      '',
      `${first} is typing…`,
      `${first} and ${second} are typing…`,
    ][others.length] ?? `${others.length} people are typing…`;
  }

  const renderViewers = (occupancy) => ($('#viewers').textContent = String(occupancy.connections));

  // Subscribe before attaching, so nothing between attach and the first render is missed.
  const subscription = room.messages.subscribe((event) => {
    if (event.type === ChatMessageEventType.Deleted) remove(event.message.serial);
    else show(event.message);
  });
  room.messages.reactions.subscribe((event) => {
    const message = messages.get(event.messageSerial);
    if (!message) return;
    const updated = message.with(event);
    messages.set(event.messageSerial, updated);
    const item = list.querySelector(`li[data-serial="${CSS.escape(event.messageSerial)}"]`);
    if (item) renderHeart(item, updated);
  });
  room.reactions.subscribe((event) => floatHeart(event.reaction));
  room.typing.subscribe(renderTyping);
  room.occupancy.subscribe((event) => renderViewers(event.occupancy));
  room.presence.subscribe((event) => {
    if (event.member.data?.name) names.set(event.member.clientId, String(event.member.data.name));
  });

  await room.attach();
  await room.presence.enter({ name: myName });
  for (const member of await room.presence.get()) {
    if (member.data?.name) names.set(member.clientId, String(member.data.name));
  }
  renderViewers(await room.occupancy.get());
  // The last 50 messages before we subscribed, newest first.
  const history = await subscription.historyBeforeSubscribe({ limit: 50 });
  for (const message of history.items) show(message);

  $('#composer').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('#text');
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    try {
      await room.typing.stop();
      show(await room.messages.send({ text, metadata: { name: myName } }));
      showError(null);
    } catch (err) {
      input.value = text;
      showError(err);
    }
  });
  $('#text').addEventListener('input', (event) => {
    (event.target.value.trim() ? room.typing.keystroke() : room.typing.stop()).catch(showError);
  });
  $('#love').addEventListener('click', () => room.reactions.send({ name: HEART }).catch(showError));

  $('#chat').hidden = false;
  document.body.dataset.ready = 'true';
}

function start(token) {
  $('#signin').hidden = true;
  join(token).catch((err) => {
    showError(err);
    $('#status').textContent = 'failed';
    $('#chat').hidden = false;
  });
}

const token = query.get('token');
if (token) {
  start(token);
} else {
  $('#signin').hidden = false;
  $('#signin').addEventListener('submit', (event) => {
    event.preventDefault();
    start($('#token-input').value.trim());
  });
}
