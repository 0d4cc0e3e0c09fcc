// The operator dashboard: polls /dashboard/api/* and fills the page. No framework, no build.
// Everything user-supplied (channel names, client ids, message data) goes into the DOM through
// textContent, never as markup.
'use strict';

const OVERVIEW_EVERY_MS = 1000;
const CHANNELS_EVERY_MS = 2000;
const SVG = 'http://www.w3.org/2000/svg';

let selected = null; // the inspected channel's name
let lastOverviewAt = 0;

const $ = (id) => document.getElementById(id);

function text(id, value) {
  const el = $(id);
  if (el && el.textContent !== String(value)) el.textContent = String(value);
}

function number(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: 1 });
}

// Latencies are bucket bounds in whole ms; the 0 bucket is "within the same millisecond".
function ms(n) {
  if (n === null || n === undefined) return '–';
  return n === 0 ? '<1 ms' : `${n} ms`;
}

function cell(row, value, className) {
  const td = document.createElement('td');
  td.textContent = String(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function stateClass(state) {
  return 'badge state-' + String(state).replace(/[^a-z]+/gi, '-').toLowerCase();
}

async function getJson(path, init) {
  const response = await fetch(path, { credentials: 'same-origin', cache: 'no-store', ...init });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

// A sparkline of `values` (nulls skipped) scaled to the SVG's 120×30 viewBox.
function sparkline(id, values) {
  const svg = $(id);
  if (!svg) return;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const points = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  if (points.length < 2) return;
  const max = Math.max(1, ...points.map(([, v]) => v));
  const step = 120 / Math.max(1, values.length - 1);
  const xy = points.map(([i, v]) => `${(i * step).toFixed(1)},${(29 - (v / max) * 27).toFixed(1)}`);
  const area = document.createElementNS(SVG, 'polygon');
  area.setAttribute('points', `${xy[0].split(',')[0]},30 ${xy.join(' ')} ${xy[xy.length - 1].split(',')[0]},30`);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', xy.join(' '));
  svg.appendChild(area);
  svg.appendChild(line);
}

function renderOverview(overview) {
  const total = overview.cluster;
  const here = overview.nodes[0] || {};
  text('node-id', overview.clustered ? `node ${overview.node} · cluster of ${total.nodes}` : `node ${overview.node}`);
  const badge = $('node-state');
  badge.textContent = here.state || '?';
  badge.className = stateClass(here.state);
  text('m-connections', number(total.connections));
  text('m-attachments', number(total.attachments));
  text('m-channels', number(total.channels));
  text('m-in-rate', number(total.inPerSecond));
  text('m-out-rate', number(total.outPerSecond));
  text('m-messages-in', number(total.messagesIn));
  text('m-messages-out', number(total.messagesOut));
  text('m-p50', ms(total.latency.p50));
  text('m-p90', ms(total.latency.p90));
  text('m-p99', ms(total.latency.p99));
  text('m-latency-count', number(total.latency.count));
  text('m-slow', number(total.slowConsumerDisconnects));
  text('m-auth', number(total.authFailures));
  text('cluster-mode', overview.clustered ? 'clustered through Redis' : 'embedded (one process)');

  // Cluster series: the nodes' per-second readings summed position by position (newest last).
  const sum = (key) => {
    const length = Math.max(0, ...overview.nodes.map((n) => (n.series ? n.series[key].length : 0)));
    const out = new Array(length).fill(null);
    for (const node of overview.nodes) {
      const values = node.series ? node.series[key] : [];
      values.forEach((v, i) => {
        const at = length - values.length + i;
        if (v === null) return;
        out[at] = key === 'p99Ms' ? Math.max(out[at] || 0, v) : (out[at] || 0) + v;
      });
    }
    return out;
  };
  sparkline('s-in', sum('inPerSecond'));
  sparkline('s-out', sum('outPerSecond'));
  sparkline('s-p99', sum('p99Ms'));

  const body = $('nodes').tBodies[0];
  const rows = document.createDocumentFragment();
  for (const node of overview.nodes) {
    const row = document.createElement('tr');
    cell(row, node.node, 'mono');
    const state = document.createElement('span');
    state.textContent = node.state;
    state.className = stateClass(node.state);
    row.appendChild(document.createElement('td')).appendChild(state);
    cell(row, number(node.connections));
    cell(row, number(node.channels));
    cell(row, number(node.inPerSecond));
    cell(row, number(node.outPerSecond));
    cell(row, ms(node.latency ? node.latency.p99 : null));
    cell(row, number(node.slowConsumerDisconnects));
    cell(row, number(node.authFailures));
    cell(row, node.at ? `${Math.max(0, Math.round((Date.now() - node.at) / 1000))} s ago` : '–');
    rows.appendChild(row);
  }
  body.replaceChildren(rows);
  lastOverviewAt = Date.now();
  text('updated', `updated ${new Date(lastOverviewAt).toLocaleTimeString()}`);
  $('updated').classList.remove('error');
}

function renderChannels(list) {
  text('channels-total', list.total > list.channels.length ? `${list.channels.length} busiest of ${list.total}` : `${list.total}`);
  const body = $('channels').tBodies[0];
  const rows = document.createDocumentFragment();
  for (const channel of list.channels) {
    const row = document.createElement('tr');
    row.dataset.channel = channel.name;
    if (channel.name === selected) row.className = 'selected';
    cell(row, channel.name, 'mono');
    cell(row, number(channel.occupancy.connections));
    cell(row, number(channel.occupancy.subscribers));
    cell(row, number(channel.occupancy.presenceMembers));
    rows.appendChild(row);
  }
  body.replaceChildren(rows);
  $('channels-empty').hidden = list.channels.length > 0;
}

function dataText(message) {
  const data = message.data;
  if (data === undefined || data === null) return '';
  const shown = typeof data === 'string' ? data : JSON.stringify(data);
  return message.encoding && message.encoding !== 'json' ? `${shown} (${message.encoding})` : shown;
}

function renderInspection(inspection) {
  if (inspection.name !== selected) return;
  $('inspector-hint').hidden = true;
  $('inspector-body').hidden = false;
  text('inspector-name', inspection.name);
  text('i-connections', inspection.occupancy.connections);
  text('i-subscribers', inspection.occupancy.subscribers);
  text('i-publishers', inspection.occupancy.publishers);
  text('i-members', inspection.members.length);
  const members = document.createDocumentFragment();
  for (const member of inspection.members) {
    const li = document.createElement('li');
    const data = member.data === undefined ? '' : ` · ${typeof member.data === 'string' ? member.data : JSON.stringify(member.data)}`;
    li.textContent = `${member.clientId || '(no clientId)'} (${member.connectionId || '?'})${data}`;
    members.appendChild(li);
  }
  if (!inspection.members.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'none';
    members.appendChild(li);
  }
  $('i-member-list').replaceChildren(members);
  const rows = document.createDocumentFragment();
  for (const message of inspection.messages) {
    const row = document.createElement('tr');
    cell(row, message.timestamp ? new Date(message.timestamp).toLocaleTimeString() : '');
    cell(row, message.name || '', 'mono');
    cell(row, message.clientId || '', 'mono');
    const data = cell(row, dataText(message), 'data mono');
    data.title = dataText(message);
    rows.appendChild(row);
  }
  $('i-messages').tBodies[0].replaceChildren(rows);
}

const channelPath = (name) => `/dashboard/api/channels/${encodeURIComponent(name)}`;

async function refreshOverview() {
  try {
    renderOverview(await getJson('/dashboard/api/overview'));
  } catch (error) {
    text('updated', `not updating: ${error.message}`);
    $('updated').classList.add('error');
  }
}

async function refreshChannels() {
  try {
    renderChannels(await getJson('/dashboard/api/channels'));
  } catch (error) {
    text('channels-total', error.message);
  }
  if (selected !== null) await refreshInspector();
}

async function refreshInspector() {
  const name = selected;
  try {
    renderInspection(await getJson(channelPath(name)));
  } catch (error) {
    if (name === selected) {
      $('inspector-hint').hidden = false;
      text('inspector-hint', error.message);
    }
  }
}

function inspect(name) {
  selected = name;
  text('inspector-name', name);
  $('publish-channel').value = name;
  for (const row of $('channels').tBodies[0].rows) {
    row.classList.toggle('selected', row.dataset.channel === name);
  }
  refreshInspector();
}

async function publish(event) {
  event.preventDefault();
  const channel = $('publish-channel').value.trim();
  const name = $('publish-name').value;
  const data = $('publish-data').value;
  const result = $('publish-result');
  result.classList.remove('error');
  try {
    const body = await getJson(`${channelPath(channel)}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: name || undefined, data }),
    });
    result.textContent = `published (serial ${body.serials[0] || 'duplicate'})`;
    if (selected !== channel) inspect(channel);
    else refreshInspector();
    refreshOverview();
  } catch (error) {
    result.textContent = `failed: ${error.message}`;
    result.classList.add('error');
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('channels').tBodies[0].addEventListener('click', (event) => {
    const row = event.target.closest('tr');
    if (row && row.dataset.channel !== undefined) inspect(row.dataset.channel);
  });
  $('inspect-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('inspect-name').value.trim();
    if (name) inspect(name);
  });
  $('publish-form').addEventListener('submit', publish);
  refreshOverview();
  refreshChannels();
  setInterval(refreshOverview, OVERVIEW_EVERY_MS);
  setInterval(refreshChannels, CHANNELS_EVERY_MS);
});
