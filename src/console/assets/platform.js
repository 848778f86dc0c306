// The platform, live: node pools (with their node count over the last hour and the
// autoscaler's decisions), nodes, snapshot images, event sources; and the events stream.

import { api, paths } from './api.js';
import { h, replace, age, when, condition, conditionBadge, table, liveIndicator, keyOf } from './dom.js';
import { Watch } from './watch.js';
import { timeChart, chartWindow } from './charts.js';

function section(id, title, live) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const el = h('section', { 'aria-labelledby': id }, h('div', { class: 'row' }, h('h2', { id }, title), live), body);
  return { el, body };
}

function poolRow(p) {
  const st = p.status || {};
  const a = st.autoscaler;
  const sp = p.spec;
  return h('tr', { dataset: { pool: keyOf(p) } },
    h('td', {}, p.metadata.name, h('span', { class: 'sub' }, p.metadata.namespace)),
    h('td', {}, conditionBadge(p)),
    h('td', { class: 'num', dataset: { nodes: String(st.replicas || 0), ready: String(st.readyReplicas || 0) } }, `${st.readyReplicas || 0}/${st.replicas || 0}`),
    h('td', { class: 'num' }, `${sp.replicas ?? 0} (${sp.minReplicas ?? 0}–${sp.maxReplicas ?? 10})`),
    h('td', { class: 'num' }, st.desiredReplicas ?? '—'),
    h('td', { class: 'wrap' }, a ? [h('strong', {}, a.decision), ' ', a.reason || ''] : (sp.autoscaling?.enabled ? 'no decision yet' : 'off')),
    h('td', { class: 'hide-narrow' }, sp.flavor, h('span', { class: 'sub' }, sp.image?.snapshotImage ? `snapshot ${sp.image.snapshotImage}` : sp.image?.glanceImage || '')));
}

/** The node-count chart of one pool from the gateway's history. */
async function poolChart(p) {
  const ns = p.metadata.namespace || 'default';
  const hist = await api('GET', paths.poolHistory(ns, p.metadata.name));
  const end = Date.parse(hist.now);
  const { start } = chartWindow(end, hist.windowSeconds * 1000, Date.parse(hist.since));
  const pts = (k) => hist.samples.map((x) => [Math.max(start, Date.parse(x.time)), x[k] ?? null]);
  const marks = hist.marks.map((m) => ({ t: Date.parse(m.time), label: m.decision, title: `${m.source}: ${m.reason}` }));
  const last = hist.samples[hist.samples.length - 1] || {};
  return timeChart({
    title: `${ns}/${p.metadata.name}: nodes over the last hour`,
    start, end, since: Date.parse(hist.since), minTop: 2, yFormat: (v) => (Number.isInteger(v) ? String(v) : ''),
    lines: [
      { name: 'Nodes', color: '#1f6feb', points: pts('replicas'), step: true },
      { name: 'Ready', color: '#2da44e', points: pts('readyReplicas'), step: true, dash: '6 3' },
      { name: 'spec.replicas', color: '#8c959f', points: pts('specReplicas'), step: true, dash: '2 3' },
      { name: 'Autoscaler wants', color: '#bf8700', points: pts('desiredReplicas'), step: true, dash: '1 4' },
    ],
    marks,
    summary: `Now ${last.replicas ?? 0} nodes, ${last.readyReplicas ?? 0} ready; ${marks.length} decisions or edits in the last hour${marks.length ? `, the last: ${marks[marks.length - 1].title}` : ''}.`,
  });
}

function nodeRow(n) {
  const st = n.status || {};
  return h('tr', { dataset: { node: keyOf(n) } },
    h('td', {}, n.metadata.name, h('span', { class: 'sub' }, n.metadata.namespace)),
    h('td', {}, n.spec.pool),
    h('td', { class: 'wrap' }, st.serverName || '', h('span', { class: 'sub mono' }, st.serverId || '')),
    h('td', {}, (st.addresses || []).join(', ')),
    h('td', {}, st.vmState || '—'),
    h('td', {}, [st.swarmState, st.swarmAvailability].filter(Boolean).join(' / ') || '—'),
    h('td', {}, conditionBadge(n), st.lastError ? h('span', { class: 'sub' }, st.lastError) : null),
    h('td', { class: 'hide-narrow' }, age(n.metadata.creationTimestamp)));
}

function imageRow(i) {
  const st = i.status || {};
  return h('tr', {},
    h('td', {}, i.metadata.name, h('span', { class: 'sub' }, i.metadata.namespace)),
    h('td', {}, st.phase || 'Pending'),
    h('td', {}, conditionBadge(i)),
    h('td', { class: 'mono wrap' }, st.imageId || ''),
    h('td', { class: 'mono wrap' }, st.builderServerId || ''),
    h('td', { class: 'wrap' }, Object.keys(st.runtimeImages || {}).join(', ') || (i.spec.runtimes || []).join(', ')),
    h('td', { class: 'wrap' }, st.lastError || ''));
}

function sourceRow(e) {
  const st = e.status || {};
  const kind = e.spec.directory ? `directory ${e.spec.directory.path}` : e.spec.openstack ? `openstack ${e.spec.openstack.exchange || ''}` : '';
  const connected = condition(e, 'Connected');
  return h('tr', {},
    h('td', {}, e.metadata.name, h('span', { class: 'sub' }, e.metadata.namespace)),
    h('td', { class: 'wrap' }, kind),
    h('td', {}, conditionBadge(e), connected ? h('span', { class: 'sub' }, `Connected: ${connected.status}`) : null),
    h('td', { class: 'num' }, String(st.eventsPublished || 0)),
    h('td', { class: 'num' }, String(st.eventsSkipped || 0)),
    h('td', {}, st.lastEventTime ? `${age(st.lastEventTime)} ago` : '—'),
    h('td', { class: 'wrap' }, st.lastError || ''));
}

export function mountPlatform(main) {
  const watches = [];
  const timers = [];
  const lives = [liveIndicator(), liveIndicator(), liveIndicator(), liveIndicator()];
  const pools = section('pools-title', 'Node pools', lives[0]);
  const charts = h('div', { class: 'charts', id: 'pool-charts' });
  const nodes = section('nodes-title', 'Nodes', lives[1]);
  const images = section('images-title', 'Snapshot images', lives[2]);
  const sources = section('sources-title', 'Event sources', lives[3]);
  replace(main, h('h1', {}, 'Platform'), pools.el, charts, nodes.el, images.el, sources.el);

  let poolList = [];
  const drawCharts = async () => {
    const figs = await Promise.all(poolList.map((p) => poolChart(p).catch((e) => h('p', { class: 'muted' }, `${keyOf(p)}: ${e.message}`))));
    replace(charts, figs.map((f) => h('div', { class: 'panel' }, f)));
  };
  const watch = (kind, live, onChange) => {
    watches.push(new Watch(paths.watch(null), kind, { onState: live.update, onChange }).start());
  };
  watch('NodePool', lives[0], (w) => {
    poolList = w.list();
    replace(pools.body, table('Node pools', ['Pool', 'Status', 'Nodes ready/all', 'Spec replicas (min–max)', 'Autoscaler wants', 'Last decision', { text: 'Flavor / image', cls: 'hide-narrow' }],
      poolList.map(poolRow), 'No node pools.'));
    drawCharts();
  });
  timers.push(setInterval(drawCharts, 10000));
  watch('Node', lives[1], (w) => replace(nodes.body, table('Nodes', ['Node', 'Pool', 'Server', 'Addresses', 'VM', 'Swarm', 'Ready', { text: 'Age', cls: 'hide-narrow' }],
    w.list().map(nodeRow), 'No nodes.')));
  watch('SnapshotImage', lives[2], (w) => replace(images.body, table('Snapshot images', ['Image', 'Phase', 'Ready', 'Glance image', 'Builder', 'Runtimes', 'Last error'],
    w.list().map(imageRow), 'No snapshot images.')));
  watch('EventSource', lives[3], (w) => replace(sources.body, table('Event sources', ['Source', 'Kind', 'Ready', 'Published', 'Skipped', 'Last event', 'Last error'],
    w.list().map(sourceRow), 'No event sources.')));
  return () => { watches.forEach((w) => w.stop()); timers.forEach(clearInterval); };
}

const MAX_EVENTS = 300;

export function mountEvents(main) {
  const live = liveIndicator();
  const filter = h('input', { id: 'events-filter', type: 'search', placeholder: 'reason, object or message', spellcheck: 'false' });
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  let last = null;
  const draw = () => {
    if (!last) return;
    const q = filter.value.trim().toLowerCase();
    const items = last.list()
      .filter((e) => !q || [e.spec.reason, e.spec.message, e.spec.involvedObject.kind, e.spec.involvedObject.name, e.spec.source]
        .some((x) => String(x || '').toLowerCase().includes(q)))
      .sort((a, b) => Date.parse(b.spec.lastTimestamp) - Date.parse(a.spec.lastTimestamp))
      .slice(0, MAX_EVENTS);
    replace(body, table('Events', ['Last seen', 'Type', 'Reason', 'Object', 'Message', 'Count', 'From'], items.map((e) => {
      const o = e.spec.involvedObject;
      return h('tr', {},
        h('td', { title: when(e.spec.lastTimestamp) }, `${age(e.spec.lastTimestamp)} ago`),
        h('td', {}, h('span', { class: `badge ${e.spec.type === 'Warning' ? 'warn' : 'info'}` }, e.spec.type)),
        h('td', {}, e.spec.reason),
        h('td', {}, `${o.kind} ${o.namespace}/${o.name}`),
        h('td', { class: 'wrap' }, e.spec.message),
        h('td', { class: 'num' }, String(e.spec.count)),
        h('td', {}, e.spec.source || ''));
    }), 'No events in the last hour.'));
  };
  filter.addEventListener('input', draw);
  replace(main, h('div', { class: 'row' }, h('h1', {}, 'Events'), live),
    h('p', { class: 'muted' }, 'What the controllers did (as ', h('code', {}, 'lambda get events'), '), newest first, live; events expire an hour after they last happened.'),
    h('div', { class: 'field' }, h('label', { for: 'events-filter' }, 'Filter'), filter), body);
  const w = new Watch(paths.watch(null), 'Event', { onState: live.update, onChange: (x) => { last = x; draw(); } }).start();
  return () => w.stop();
}
