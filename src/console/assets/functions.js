// The functions of a namespace with their live status.

import { paths, seg } from './api.js';
import { h, replace, age, condition, conditionBadge, table, labels, liveIndicator } from './dom.js';
import { Watch } from './watch.js';
import { confirmDelete } from './function.js';

function replicas(f) {
  const st = f.status || {};
  const want = st.desiredReplicas ?? f.spec.minReplicas ?? 1;
  return `${st.readyReplicas || 0}/${want}`;
}

function row(f) {
  const name = f.metadata.name;
  const ready = condition(f, 'Ready');
  const href = `#/functions/${seg(name)}`;
  return h('tr', { dataset: { name } },
    h('td', {}, h('a', { href }, name), h('span', { class: 'sub' }, labels(f.metadata))),
    h('td', {}, f.spec.runtime),
    h('td', {}, conditionBadge(f), ready && ready.status !== 'True' && ready.message ? h('span', { class: 'sub' }, ready.message) : null),
    h('td', { class: 'num' }, replicas(f)),
    h('td', { class: 'wrap' }, f.status?.lastError || ''),
    h('td', { class: 'hide-narrow' }, age(f.metadata.creationTimestamp)),
    h('td', {}, h('div', { class: 'row' },
      h('a', { class: 'button small secondary', href }, 'Invoke'),
      h('a', { class: 'button small secondary', href: `${href}/edit` }, 'Edit'),
      h('button', { type: 'button', class: 'small danger', onclick: () => confirmDelete(f) }, 'Delete'))));
}

export function mount(main, { ns }) {
  const live = liveIndicator();
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const err = h('p', { class: 'errors', role: 'alert', hidden: true });
  replace(main,
    h('div', { class: 'row' },
      h('h1', {}, 'Functions in ', h('code', {}, ns)), live, h('span', { class: 'spacer' }),
      h('a', { class: 'button', href: '#/functions/new' }, 'New function')),
    err, body);
  const w = new Watch(paths.watch(ns), 'Function', {
    onState: live.update,
    onError: (e) => { err.hidden = false; err.textContent = e.message; },
    onChange: (watch) => {
      err.hidden = true;
      const items = watch.list();
      replace(body, table(`Functions in ${ns}`, ['Name', 'Runtime', 'Status', 'Replicas', 'Last error', { text: 'Age', cls: 'hide-narrow' }, 'Actions'],
        items.map(row), 'No functions yet: create one with “New function”.'));
    },
  }).start();
  return () => w.stop();
}
