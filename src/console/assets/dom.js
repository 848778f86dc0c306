// DOM helpers. Every piece of data reaches the page as a text node or an attribute value,
// never as markup: a function named or labelled `<b>x</b>` shows those characters.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

/** Appends children: strings and numbers as text, nodes as they are, arrays flattened. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/x'}, 'text', child…). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** "3m ago"-style age of an RFC 3339 time. */
export function age(ts) {
  if (!ts) return '';
  const secs = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (secs < 60) return `${Math.floor(secs)}s`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m`;
  if (secs < 86400) return `${Math.floor(secs / 3600)}h`;
  return `${Math.floor(secs / 86400)}d`;
}

/** Local date and time of an RFC 3339 time. */
export function when(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

/** The condition of a type in an object's status. */
export function condition(obj, type) {
  return (obj?.status?.conditions || []).find((c) => c.type === type);
}

/** A badge for a condition: Ready (green), a False reason (red), pending (amber). */
export function conditionBadge(obj, type = 'Ready') {
  const c = condition(obj, type);
  if (!c) return h('span', { class: 'badge info' }, 'Pending');
  if (c.status === 'True') return h('span', { class: 'badge ok', title: c.message || '' }, c.reason && c.reason !== type ? `${type}: ${c.reason}` : type);
  const cls = c.status === 'False' ? 'bad' : 'warn';
  return h('span', { class: `badge ${cls}`, title: c.message || '' }, c.reason || c.status);
}

/** A table in its scrolling wrapper; `rows` are <tr> elements. */
export function table(caption, headers, rows, empty = 'None.') {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      caption ? h('caption', { class: 'skip' }, caption) : null,
      h('thead', {}, h('tr', {}, headers.map((x) => (typeof x === 'string'
        ? h('th', { scope: 'col' }, x)
        : h('th', { scope: 'col', class: x.cls }, x.text))))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, empty)))));
}

/** Labels as chips. */
export function labels(meta) {
  return Object.entries(meta?.labels || {}).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`));
}

/** A short-lived message for screen readers and sighted users alike. */
export function toast(text) {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ''; }, 4000);
}

/** `ns/name` of an object. */
export function keyOf(obj) {
  return `${obj.metadata.namespace || 'default'}/${obj.metadata.name}`;
}

/** A live/offline indicator bound to a watch's state. */
export function liveIndicator() {
  const el = h('span', { class: 'live', role: 'status' }, 'connecting');
  el.update = (state) => {
    el.className = `live ${state === 'live' ? 'on' : state === 'error' ? 'off' : ''}`;
    el.textContent = state === 'live' ? 'live' : state === 'error' ? 'reconnecting' : 'connecting';
  };
  return el;
}
