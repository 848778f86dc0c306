// One function: live status, invoke, charts of its last hour, its executions and their logs,
// edit and delete.

import { api, call, paths, seg, session, ApiError } from './api.js';
import { h, replace, age, when, conditionBadge, table, labels, liveIndicator, toast } from './dom.js';
import { Watch } from './watch.js';
import { timeChart, codeColor, chartWindow } from './charts.js';

/** Asks before deleting a function; deletes it and goes back to the list. */
export function confirmDelete(f) {
  const name = f.metadata.name;
  const ns = f.metadata.namespace || session.namespace;
  const cancel = h('button', { type: 'button', class: 'secondary', value: 'cancel' }, 'Cancel');
  const ok = h('button', { type: 'button', class: 'danger', value: 'delete' }, 'Delete');
  const err = h('p', { class: 'field-error', role: 'alert' });
  const d = h('dialog', { 'aria-labelledby': 'del-title', 'aria-describedby': 'del-text' },
    h('h2', { id: 'del-title' }, 'Delete function?'),
    h('p', { id: 'del-text' }, 'Delete ', h('code', {}, `${ns}/${name}`),
      '? Its replicas stop and its Swarm service goes; execution records stay until retention removes them.'),
    err,
    h('div', { class: 'row' }, ok, cancel));
  cancel.addEventListener('click', () => d.close());
  d.addEventListener('close', () => d.remove());
  ok.addEventListener('click', async () => {
    ok.disabled = true;
    try {
      await api('DELETE', paths.fn(ns, name));
      d.close();
      toast(`Deleted ${name}.`);
      if (location.hash !== '#/functions') location.hash = '#/functions';
    } catch (e) {
      err.textContent = e.message;
      ok.disabled = false;
    }
  });
  document.body.append(d);
  d.showModal();
  cancel.focus();
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function statusPanel(f) {
  const sp = f.spec;
  const st = f.status || {};
  const a = st.autoscaler;
  const triggers = [
    sp.triggers?.http !== false ? 'http' : null,
    ...(sp.triggers?.events || []).map((e) => `event ${e.source ?? `${e.sourcePrefix || ''}*${e.sourceSuffix || ''}`} / ${e.type ?? `${e.typePrefix || ''}*${e.typeSuffix || ''}`}`),
    ...(sp.triggers?.schedules || []).map((s) => `schedule ${s.cron}${s.timezone ? ` (${s.timezone})` : ''}`),
  ].filter(Boolean);
  return h('div', { class: 'grid2' },
    h('section', { class: 'panel', 'aria-labelledby': 'st-spec' }, h('h2', { id: 'st-spec' }, 'Spec'), kv([
      ['Runtime', sp.runtime + (sp.image ? ` (${sp.image})` : '')],
      ['Handler', sp.handler],
      ['Memory / CPU', `${sp.resources?.memoryMb ?? 128} MiB / ${sp.resources?.cpuMillis ?? 500} m`],
      ['Timeout', `${sp.timeoutSeconds ?? 30} s`],
      ['Concurrency', String(sp.concurrency ?? 8)],
      ['Replicas (min–max)', `${sp.minReplicas ?? 1}–${sp.maxReplicas ?? 10}`],
      ['Scale to zero after', sp.scaleToZeroAfterSeconds ? `${sp.scaleToZeroAfterSeconds} s` : 'never'],
      ['Triggers', triggers.join('; ') || 'none'],
      ['Retry', `${sp.retry?.maxAttempts ?? 3} attempts, backoff ${sp.retry?.backoffSeconds ?? 1} s${sp.retry?.deadLetterQueue ? `, dead letters to ${sp.retry.deadLetterQueue}` : ''}`],
      ['Labels', labels(f.metadata)],
    ])),
    h('section', { class: 'panel', 'aria-labelledby': 'st-status' }, h('h2', { id: 'st-status' }, 'Status'), kv([
      ['Ready', conditionBadge(f)],
      ['Replicas', `${st.readyReplicas || 0} ready of ${st.replicas || 0} (desired ${st.desiredReplicas ?? '—'})`],
      ['Autoscaler', a ? `${a.reason}: ${a.message}` : ''],
      ['Endpoints', (st.endpoints || []).map((e) => e.address).join(', ')],
      ['Service', st.serviceId],
      ['Generation', `${f.metadata.generation} (observed ${st.observedGeneration ?? '—'})`],
      ['Last error', st.lastError],
    ]),
    table('Conditions', ['Type', 'Status', 'Reason', 'Message', 'Since'],
      (st.conditions || []).map((c) => h('tr', {}, h('td', {}, c.type), h('td', {}, c.status), h('td', {}, c.reason),
        h('td', { class: 'wrap' }, c.message), h('td', {}, age(c.lastTransitionTime)))))));
}

function invokePanel(ns, name, onExecution) {
  const body = h('textarea', { id: 'invoke-body', class: 'code short', rows: 5, spellcheck: 'false' }, '{}');
  const asyncBox = h('input', { type: 'checkbox', id: 'invoke-async' });
  const logsBox = h('input', { type: 'checkbox', id: 'invoke-logs', checked: true });
  const btn = h('button', { type: 'submit', id: 'invoke-button' }, 'Invoke');
  const out = h('div', { id: 'invoke-result', 'aria-live': 'polite' });
  const f = h('form', { class: 'panel', 'aria-labelledby': 'inv-title' },
    h('h2', { id: 'inv-title' }, 'Invoke'),
    h('div', { class: 'field wide' }, h('label', { for: 'invoke-body' }, 'Event (JSON body)'), body),
    h('div', { class: 'row' },
      h('div', { class: 'field check' }, asyncBox, h('label', { for: 'invoke-async' }, 'Asynchronous (queued, recorded as an execution)')),
      h('div', { class: 'field check' }, logsBox, h('label', { for: 'invoke-logs' }, 'Show the function’s output')),
      btn),
    out);
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    try { JSON.parse(body.value || 'null'); } catch (x) {
      replace(out, h('p', { class: 'field-error', role: 'alert' }, `The body is not JSON: ${x.message}`));
      body.setAttribute('aria-invalid', 'true');
      body.focus();
      return;
    }
    body.removeAttribute('aria-invalid');
    btn.disabled = true;
    replace(out, h('p', { class: 'muted' }, 'Invoking…'));
    const headers = {};
    if (asyncBox.checked) headers.Prefer = 'respond-async';
    if (logsBox.checked && !asyncBox.checked) headers['X-Lambda-Log-Type'] = 'Tail';
    try {
      const r = await call('POST', paths.invoke(ns, name), { body: body.value || 'null', headers });
      const gw = r.headers.get('X-Lambda-Duration-Ms');
      const pretty = r.json !== undefined ? JSON.stringify(r.json, null, 2) : r.text;
      let logs = null;
      const tail = r.headers.get('X-Lambda-Log-Result');
      if (tail) {
        try { logs = new TextDecoder().decode(Uint8Array.from(atob(tail), (c) => c.charCodeAt(0))); } catch { logs = null; }
      }
      const cls = r.status < 300 ? 'ok' : r.status === 429 || r.status === 503 ? 'warn' : 'bad';
      replace(out,
        h('div', { class: 'row' },
          h('span', { class: `badge ${cls}`, id: 'invoke-status' }, `HTTP ${r.status}`),
          h('span', { id: 'invoke-duration' }, gw ? `${Number(gw).toFixed(1)} ms in the gateway` : '', ` · ${r.ms.toFixed(0)} ms round trip`)),
        h('h3', {}, 'Result'), h('pre', { class: 'out', id: 'invoke-output' }, pretty || '(empty)'),
        logs ? [h('h3', {}, 'Output'), h('pre', { class: 'out', id: 'invoke-logs-output' }, logs)] : null);
      if (r.status === 202 && r.json?.executionId) onExecution(r.json.executionId);
    } catch (x) {
      replace(out, h('p', { class: 'errors', role: 'alert' }, `The call failed: ${x.message}`));
    } finally {
      btn.disabled = false;
    }
  });
  return f;
}

function chartsPanel(ns, name) {
  const el = h('section', { class: 'panel', 'aria-labelledby': 'charts-title' },
    h('h2', { id: 'charts-title' }, 'Last hour (calls through this gateway since it started)'), h('p', { class: 'muted' }, 'Loading…'));
  const draw = async () => {
    let hist;
    try { hist = await api('GET', paths.fnHistory(ns, name)); } catch (e) {
      replace(el, h('h2', { id: 'charts-title' }, 'Last hour'), h('p', { class: 'muted' }, e.message));
      return;
    }
    const bucket = hist.bucketSeconds * 1000;
    const end = Math.ceil((hist.now * 1000) / bucket) * bucket;
    const { start } = chartWindow(end, hist.windowSeconds * 1000, hist.since * 1000, bucket);
    const codes = [...new Set(hist.buckets.flatMap((b) => Object.keys(b.codes)))].sort();
    const total = hist.buckets.reduce((n, b) => n + b.count, 0);
    const bars = codes.map((c) => ({
      name: c === 'other' ? 'other' : `HTTP ${c}`,
      color: codeColor(c),
      values: hist.buckets.map((b) => [b.start * 1000, (b.codes[c] || 0) / hist.bucketSeconds]),
    }));
    const line = (q) => hist.buckets.map((b) => [b.start * 1000 + bucket / 2, b[q]]);
    const p99 = Math.max(0, ...hist.buckets.map((b) => b.p99Ms || 0));
    replace(el, h('h2', { id: 'charts-title' }, 'Last hour (calls through this gateway since it started)'),
      h('div', { class: 'charts' },
        timeChart({ title: 'Invocations per second by status', start, end, since: hist.since * 1000, bars, bucketMs: bucket, yUnit: '/s',
          summary: `${total} calls in the last hour${codes.length ? `, by status ${codes.join(', ')}` : ''}.` }),
        timeChart({ title: 'Latency p50 / p99', start, end, since: hist.since * 1000, yUnit: ' ms',
          lines: [
            { name: 'p50', color: '#1f6feb', points: line('p50Ms'), gapMs: bucket * 1.5 },
            { name: 'p99', color: '#bf3989', points: line('p99Ms'), gapMs: bucket * 1.5 },
          ],
          summary: total ? `Highest p99 in a 10 s bucket: ${p99.toFixed(1)} ms.` : 'No calls.' })));
  };
  draw();
  const timer = setInterval(draw, 10000);
  return { el, stop: () => clearInterval(timer), refresh: draw };
}

function duration(x) {
  const ms = (x.attempts || []).reduce((n, a) => n + (a.durationMs || 0), 0);
  return x.attempts?.length ? `${ms} ms` : '';
}

function executionDetail(x) {
  const badge = x.status === 'Succeeded' ? 'ok' : ['Failed', 'DeadLettered'].includes(x.status) ? 'bad' : 'warn';
  return h('div', { class: 'panel', id: 'execution-detail', 'aria-live': 'polite' },
    h('h3', {}, 'Execution ', h('code', {}, x.id)),
    kv([
      ['Status', h('span', { class: `badge ${badge}` }, x.status)],
      ['Reason', x.reason],
      ['Trigger', x.trigger?.kind],
      ['Event', x.event ? `${x.event.source} / ${x.event.type} (${x.event.id})` : ''],
      ['Created', when(x.createdAt)],
      ['Finished', when(x.finishedAt)],
    ]),
    table('Attempts', ['#', 'Outcome', 'HTTP', 'Duration', 'Error'], (x.attempts || []).map((a) => h('tr', {},
      h('td', {}, String(a.number)), h('td', {}, a.outcome || 'running'), h('td', {}, a.httpStatus ?? ''),
      h('td', { class: 'num' }, a.durationMs != null ? `${a.durationMs} ms` : ''), h('td', { class: 'wrap' }, a.error || ''))), 'No attempt yet.'),
    h('h3', {}, 'Result'), h('pre', { class: 'out' }, x.result ?? '(none)'),
    h('h3', {}, 'Logs'), h('pre', { class: 'out', id: 'execution-logs' }, x.logs || '(no output)'));
}

function executionsPanel(ns, name) {
  const list = h('div', {});
  const detail = h('div', {});
  let selected = null;
  const show = async (id) => {
    selected = id;
    try {
      const x = await api('GET', paths.execution(ns, id));
      if (selected === id) replace(detail, executionDetail(x));
    } catch (e) {
      replace(detail, h('p', { class: 'errors', role: 'alert' }, e.message));
    }
  };
  const load = async () => {
    let page;
    try { page = await api('GET', paths.executions(ns, name)); } catch (e) {
      replace(list, h('p', { class: 'muted' }, e.message));
      return;
    }
    replace(list, table('Executions', ['ID', 'Trigger', 'Status', 'Attempts', 'Duration', 'Created'],
      page.items.map((x) => {
        const open = h('button', { type: 'button', class: 'link mono', 'aria-label': `Show execution ${x.id}` }, x.id.slice(0, 12));
        open.addEventListener('click', () => show(x.id));
        return h('tr', { 'aria-selected': String(x.id === selected), dataset: { id: x.id } },
          h('td', {}, open), h('td', {}, x.trigger?.kind || ''), h('td', {}, x.status),
          h('td', { class: 'num' }, String(x.attempts?.length || 0)), h('td', { class: 'num' }, duration(x)), h('td', {}, age(x.createdAt)));
      }), 'No executions yet (asynchronous, event and scheduled runs are recorded).'));
    if (selected) show(selected);
  };
  const refresh = h('button', { type: 'button', class: 'secondary small', onclick: load }, 'Refresh');
  const el = h('section', { class: 'panel', 'aria-labelledby': 'ex-title' },
    h('div', { class: 'row' }, h('h2', { id: 'ex-title' }, 'Recent executions'), refresh), list, detail);
  load();
  const timer = setInterval(load, 5000);
  return { el, stop: () => clearInterval(timer), show: (id) => { selected = id; load(); } };
}

export function mount(main, { ns, params }) {
  const [name] = params;
  const live = liveIndicator();
  const head = h('div', { id: 'fn-ready' });
  const status = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const executions = executionsPanel(ns, name);
  const charts = chartsPanel(ns, name);
  let current = null;
  const del = h('button', { type: 'button', class: 'danger', onclick: () => current && confirmDelete(current) }, 'Delete');
  replace(main,
    h('p', {}, h('a', { href: '#/functions' }, '← Functions')),
    h('div', { class: 'row' }, h('h1', {}, name), head, live, h('span', { class: 'spacer' }),
      h('a', { class: 'button secondary', href: `#/functions/${seg(name)}/edit` }, 'Edit'), del),
    status,
    invokePanel(ns, name, (id) => { executions.show(id); setTimeout(charts.refresh, 500); }),
    charts.el,
    executions.el);
  const w = new Watch(paths.watch(ns), 'Function', {
    onState: live.update,
    onChange: (watch) => {
      const f = watch.objects.get(`${ns}/${name}`);
      current = f || null;
      if (!f) {
        replace(status, h('p', { class: 'errors', role: 'alert' }, `Function ${ns}/${name} does not exist (or was deleted).`));
        replace(head);
        return;
      }
      replace(head, conditionBadge(f));
      replace(status, statusPanel(f));
    },
    onError: (e) => toast(e instanceof ApiError ? e.message : String(e.message || e)),
  }).start();
  return () => { w.stop(); executions.stop(); charts.stop(); };
}
