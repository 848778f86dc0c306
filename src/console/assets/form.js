// Create and edit a function: every field of the original system's upload page and more, the
// code typed in or uploaded from a file, and the API's validation errors shown beside the
// field each one names.

import { api, paths, seg, ApiError } from './api.js';
import { h, replace, toast } from './dom.js';

const RUNTIMES = ['python3', 'node', 'shell', 'image'];
const MAX_CODE = 500 * 1024;
const TEMPLATES = {
  python3: 'def handler(event, context):\n    return {"hello": (event or {}).get("name", "world")}\n',
  node: 'exports.handler = async (event, context) => ({ hello: (event && event.name) || "world" });\n',
  shell: '#!/bin/sh\n# The event arrives on stdin; what is printed is the result.\ncat\n',
};
let uid = 0;

/** A labelled field: its input carries `data-field` (the API's field path) for errors. */
function field(label, input, { path, hint, wide, cls } = {}) {
  const id = input.id || `f${++uid}`;
  input.id = id;
  if (path) input.dataset.field = path;
  const hintEl = hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null;
  const err = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  input.setAttribute('aria-describedby', [hintEl ? `${id}-hint` : '', `${id}-error`].filter(Boolean).join(' '));
  const isCheck = input.type === 'checkbox';
  return h('div', { class: `field${wide ? ' wide' : ''}${isCheck ? ' check' : ''}${cls ? ` ${cls}` : ''}` },
    isCheck ? [input, h('label', { for: id }, label)] : [h('label', { for: id }, label), input],
    hintEl, err);
}

function num(value, attrs = {}) {
  return h('input', { type: 'number', inputmode: 'numeric', step: 1, value: value ?? '', ...attrs });
}

function text(value, attrs = {}) {
  return h('input', { type: 'text', value: value ?? '', spellcheck: 'false', autocomplete: 'off', ...attrs });
}

/** "a*" → prefix a, "*b" → suffix b, "a*b" → both, anything else exact. */
export function affixToFilter(dim, v) {
  const out = {};
  const t = v.trim();
  const star = t.indexOf('*');
  if (t === '*' || star < 0 || t.indexOf('*', star + 1) >= 0) { out[dim] = t; return out; }
  const [pre, suf] = [t.slice(0, star), t.slice(star + 1)];
  if (pre) out[`${dim}Prefix`] = pre;
  if (suf) out[`${dim}Suffix`] = suf;
  return out;
}

function filterToAffix(dim, e) {
  if (e[dim] != null) return e[dim];
  if (e[`${dim}Prefix`] == null && e[`${dim}Suffix`] == null) return '';
  return `${e[`${dim}Prefix`] || ''}*${e[`${dim}Suffix`] || ''}`;
}

/** A repeated group of inputs (env vars, event triggers, schedules) with add and remove. */
function rows(title, path, columns, initial, addLabel) {
  const box = h('div', {});
  const list = [];
  const renumber = () => list.forEach((r, i) => {
    for (const [j, c] of columns.entries()) {
      r.inputs[j].dataset.field = `${path}[${i}].${c.key}`;
      r.inputs[j].setAttribute('aria-label', `${c.label} ${i + 1}`);
    }
  });
  const add = (values = {}) => {
    const inputs = columns.map((c) => text(values[c.key] ?? '', { placeholder: c.placeholder || '' }));
    const remove = h('button', { type: 'button', class: 'secondary small' }, 'Remove');
    const el = h('div', { class: `list-row${columns.length === 3 ? ' three' : ''}` },
      columns.map((c, j) => field(c.label, inputs[j])), remove);
    const r = { el, inputs };
    remove.addEventListener('click', () => {
      list.splice(list.indexOf(r), 1);
      el.remove();
      renumber();
    });
    list.push(r);
    box.append(el);
    renumber();
    return r;
  };
  for (const v of initial) add(v);
  const addBtn = h('button', { type: 'button', class: 'secondary small' }, addLabel);
  addBtn.addEventListener('click', () => add().inputs[0].focus());
  return {
    el: h('div', { class: 'field wide', dataset: { field: path } }, h('span', { class: 'lbl' }, title), box, h('div', {}, addBtn),
      h('p', { class: 'field-error', hidden: true })),
    values: () => list.map((r) => Object.fromEntries(columns.map((c, j) => [c.key, r.inputs[j].value]))),
  };
}

function parseLabels(textValue) {
  const out = {};
  for (const [i, line] of textValue.split('\n').entries()) {
    const t = line.trim();
    if (!t) continue;
    const eq = t.indexOf('=');
    if (eq <= 0) throw new FieldError('metadata.labels', `line ${i + 1}: write key=value`);
    out[t.slice(0, eq).trim()] = t.slice(eq + 1).trim();
  }
  return out;
}

class FieldError extends Error {
  constructor(path, message) { super(message); this.path = path; }
}

/** Clears every field error. */
function clearErrors(form, summary) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error')) { el.textContent = ''; el.hidden = true; }
  summary.hidden = true;
  replace(summary);
}

/** `a.b[0].c`, `a.b[0]`, `a.b`, `a`. */
function ancestors(path) {
  const out = [];
  for (let p = path; p;) {
    out.push(p);
    const shorter = p.replace(/(\.[^.[\]]+|\[\d+\])$/, '');
    if (shorter === p) break;
    p = shorter;
  }
  return out;
}

/**
 * Shows each {field, message} beside the input whose data-field is that path, or its nearest
 * named ancestor (`spec.triggers.events[0].sourcePrefix` → the trigger's source input); the
 * rest in the summary. Focuses the first field in error.
 */
export function showErrors(form, summary, message, details) {
  let first = null;
  const unplaced = [];
  const byField = new Map([...form.querySelectorAll('[data-field]')].map((el) => [el.dataset.field, el]));
  for (const d of details) {
    const path = String(d.field || '').replace(/(source|type)(Prefix|Suffix)$/, '$1');
    const target = ancestors(path).map((p) => byField.get(p)).find(Boolean);
    if (!target) { unplaced.push(d); continue; }
    const fieldEl = target.closest('.field');
    const err = fieldEl?.querySelector(':scope > .field-error');
    if (target.matches('input, select, textarea')) target.setAttribute('aria-invalid', 'true');
    if (err) {
      err.hidden = false;
      err.textContent = err.textContent ? `${err.textContent} ${d.message}` : d.message;
    } else unplaced.push(d);
    first = first || target;
  }
  summary.hidden = false;
  replace(summary,
    h('p', {}, h('strong', {}, details.length ? 'The function is invalid:' : 'The gateway refused it:'), ' ', details.length ? '' : message),
    details.length ? h('ul', {}, details.map((d) => h('li', {}, `${d.field}: ${d.message}`))) : null);
  (first && first.matches('input, select, textarea') ? first : summary).focus();
  return unplaced;
}

export function mount(main, { ns, params }) {
  const [editing] = params;
  const holder = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  replace(main, h('p', {}, h('a', { href: editing ? `#/functions/${seg(editing)}` : '#/functions' }, '← Back')),
    h('h1', {}, editing ? `Edit ${editing}` : `New function in ${ns}`), holder);
  if (!editing) {
    render(holder, ns, null);
    return null;
  }
  api('GET', paths.fn(ns, editing))
    .then((f) => render(holder, ns, f))
    .catch((e) => replace(holder, h('p', { class: 'errors', role: 'alert' }, e.message)));
  return null;
}

function render(holder, ns, existing) {
  const sp = existing?.spec || {};
  const meta = existing?.metadata || {};
  const name = text(meta.name, { required: true, pattern: '[a-z0-9]([-a-z0-9]*[a-z0-9])?', maxlength: 63, disabled: !!existing });
  const labelsIn = h('textarea', { rows: 2, spellcheck: 'false' },
    Object.entries(meta.labels || {}).map(([k, v]) => `${k}=${v}`).join('\n'));
  const runtime = h('select', {}, RUNTIMES.map((r) => h('option', { value: r, selected: (sp.runtime || 'python3') === r }, r)));
  const image = text(sp.image, { placeholder: 'lambda/custom:1' });
  const code = h('textarea', { class: 'code', rows: 14, spellcheck: 'false', autocapitalize: 'off', wrap: 'off' },
    sp.code?.inline ?? (existing ? '' : TEMPLATES.python3));
  const file = h('input', { type: 'file', accept: '.py,.js,.mjs,.cjs,.sh,.txt,text/*' });
  const fileNote = h('span', { class: 'hint', 'aria-live': 'polite' });
  const handler = text(sp.handler, { placeholder: 'main.handler' });
  const memory = num(sp.resources?.memoryMb ?? 128, { min: 32, max: 16384 });
  const cpu = num(sp.resources?.cpuMillis ?? 500, { min: 50, max: 16000 });
  const timeout = num(sp.timeoutSeconds ?? 30, { min: 1, max: 900 });
  const concurrency = num(sp.concurrency ?? 8, { min: 1, max: 1000 });
  const minR = num(sp.minReplicas ?? 1, { min: 0 });
  const maxR = num(sp.maxReplicas ?? 10, { min: 1, max: 1000 });
  const zero = num(sp.scaleToZeroAfterSeconds, { min: 10, max: 86400, placeholder: 'never' });
  const http = h('input', { type: 'checkbox', checked: sp.triggers?.http !== false });
  const attempts = num(sp.retry?.maxAttempts ?? 3, { min: 1, max: 10 });
  const backoff = num(sp.retry?.backoffSeconds ?? 1, { min: 1, max: 3600 });
  const maxAge = num(sp.retry?.maxEventAgeSeconds ?? 21600, { min: 60, max: 86400 });
  const dlq = text(sp.retry?.deadLetterQueue, { placeholder: 'e.g. resize.failed' });
  const env = rows('Environment variables', 'spec.env', [{ key: 'name', label: 'Name' }, { key: 'value', label: 'Value' }], sp.env || [], 'Add variable');
  const evs = rows('Events (by source and type; a*, *b or a*b match a prefix, a suffix or both; * any)', 'spec.triggers.events',
    [{ key: 'source', label: 'Source', placeholder: 'storage/uploads' }, { key: 'type', label: 'Type', placeholder: 'file.created' }],
    (sp.triggers?.events || []).map((e) => ({ source: filterToAffix('source', e), type: filterToAffix('type', e) })), 'Add event trigger');
  const sch = rows('Schedules (cron: 5 fields, or 6 with seconds first)', 'spec.triggers.schedules',
    [{ key: 'cron', label: 'Cron', placeholder: '*/5 * * * *' }, { key: 'timezone', label: 'Time zone', placeholder: 'UTC' },
      { key: 'payload', label: 'Payload (JSON)', placeholder: '{}' }],
    (sp.triggers?.schedules || []).map((s) => ({ cron: s.cron, timezone: s.timezone || '', payload: s.payload !== undefined ? JSON.stringify(s.payload) : '' })),
    'Add schedule');

  const imageField = field('Image', image, { path: 'spec.image', hint: 'Custom image (runtime image only)' });
  const codeFields = h('div', { class: 'field wide' });
  const syncRuntime = () => {
    const isImage = runtime.value === 'image';
    imageField.hidden = !isImage;
    codeFields.hidden = isImage;
    handler.placeholder = runtime.value === 'node' ? 'index.handler' : runtime.value === 'python3' ? 'main.handler' : '(not used)';
  };
  runtime.addEventListener('change', () => {
    const templ = Object.values(TEMPLATES);
    if (!existing && (code.value === '' || templ.includes(code.value)) && TEMPLATES[runtime.value]) code.value = TEMPLATES[runtime.value];
    syncRuntime();
  });
  file.addEventListener('change', async () => {
    const f = file.files?.[0];
    if (!f) return;
    if (f.size > MAX_CODE) {
      fileNote.textContent = `${f.name} is ${f.size} bytes: the code may be at most 500 KiB.`;
      return;
    }
    code.value = await f.text();
    const ext = f.name.split('.').pop();
    const guess = { py: 'python3', js: 'node', mjs: 'node', cjs: 'node', sh: 'shell' }[ext];
    if (guess && !existing && runtime.value !== guess) { runtime.value = guess; syncRuntime(); }
    fileNote.textContent = `Loaded ${f.name} (${f.size} bytes) into the editor.`;
  });
  replace(codeFields,
    field('Code', code, { path: 'spec.code.inline', wide: true, hint: 'Stored inline in the function (at most 500 KiB).' }),
    field('…or upload a file', file, { path: 'spec.code.file' }), fileNote);
  codeFields.dataset.field = 'spec.code';
  codeFields.append(h('p', { class: 'field-error', hidden: true }));

  const summary = h('div', { class: 'errors', role: 'alert', tabindex: '-1', hidden: true });
  const submit = h('button', { type: 'submit' }, existing ? 'Save' : 'Create');
  const form = h('form', { class: 'fn', novalidate: true, 'aria-label': existing ? `Edit ${meta.name}` : 'New function' },
    summary,
    h('fieldset', {}, h('legend', {}, 'Function'), h('div', { class: 'fields' },
      field('Name', name, { path: 'metadata.name', hint: 'Lower-case letters, digits and -' }),
      field('Runtime', runtime, { path: 'spec.runtime' }),
      field('Handler', handler, { path: 'spec.handler', hint: 'module.function (python3, node)' }),
      imageField,
      field('Labels', labelsIn, { path: 'metadata.labels', hint: 'key=value, one per line' }),
      codeFields)),
    h('fieldset', {}, h('legend', {}, 'Resources and scaling'), h('div', { class: 'fields' },
      field('Memory (MiB)', memory, { path: 'spec.resources.memoryMb', hint: '32–16384; decides which nodes fit' }),
      field('CPU (millicores)', cpu, { path: 'spec.resources.cpuMillis', hint: '50–16000' }),
      field('Timeout (s)', timeout, { path: 'spec.timeoutSeconds', hint: '1–900' }),
      field('Concurrency per replica', concurrency, { path: 'spec.concurrency', hint: '1–1000' }),
      field('Min replicas', minR, { path: 'spec.minReplicas' }),
      field('Max replicas', maxR, { path: 'spec.maxReplicas', hint: '1–1000' }),
      field('Scale to zero after (s)', zero, { path: 'spec.scaleToZeroAfterSeconds', hint: 'Empty: never (10–86400)' }))),
    h('fieldset', {}, h('legend', {}, 'Triggers'), h('div', { class: 'fields' },
      field('Invocable over HTTP (the REST API)', http, { path: 'spec.triggers.http' }),
      evs.el, sch.el)),
    h('fieldset', {}, h('legend', {}, 'Retries of asynchronous runs'), h('div', { class: 'fields' },
      field('Attempts', attempts, { path: 'spec.retry.maxAttempts', hint: '1–10, the first included' }),
      field('Backoff (s)', backoff, { path: 'spec.retry.backoffSeconds', hint: 'Doubles each retry' }),
      field('Max event age (s)', maxAge, { path: 'spec.retry.maxEventAgeSeconds', hint: '60–86400' }),
      field('Dead-letter queue', dlq, { path: 'spec.retry.deadLetterQueue', hint: 'Gets what failed every attempt' }))),
    h('fieldset', {}, h('legend', {}, 'Environment'), h('div', { class: 'fields' }, env.el)),
    h('div', { class: 'row' }, submit, h('a', { class: 'button secondary', href: existing ? `#/functions/${seg(meta.name)}` : '#/functions' }, 'Cancel')));
  syncRuntime();

  const intOrUndef = (el) => (el.value.trim() === '' ? undefined : Number(el.value));
  const build = () => {
    const spec = structuredClone(sp);
    spec.runtime = runtime.value;
    if (runtime.value === 'image') { spec.image = image.value.trim(); delete spec.code; delete spec.handler; } else {
      delete spec.image;
      spec.code = { inline: code.value };
      if (handler.value.trim()) spec.handler = handler.value.trim(); else delete spec.handler;
    }
    spec.resources = { ...(sp.resources || {}), memoryMb: intOrUndef(memory), cpuMillis: intOrUndef(cpu) };
    spec.timeoutSeconds = intOrUndef(timeout);
    spec.concurrency = intOrUndef(concurrency);
    spec.minReplicas = intOrUndef(minR);
    spec.maxReplicas = intOrUndef(maxR);
    spec.scaleToZeroAfterSeconds = intOrUndef(zero);
    spec.env = env.values().filter((v) => v.name || v.value);
    const events = evs.values().filter((v) => v.source || v.type)
      .map((v) => ({ ...affixToFilter('source', v.source), ...affixToFilter('type', v.type) }));
    const schedules = sch.values().map((v, i) => {
      if (!v.cron && !v.timezone && !v.payload) return null;
      const out = { cron: v.cron.trim() };
      if (v.timezone.trim()) out.timezone = v.timezone.trim();
      if (v.payload.trim()) {
        try { out.payload = JSON.parse(v.payload); } catch (x) { throw new FieldError(`spec.triggers.schedules[${i}].payload`, `not JSON: ${x.message}`); }
      }
      return out;
    }).filter(Boolean);
    spec.triggers = { ...(sp.triggers || {}), http: http.checked, events, schedules };
    spec.retry = { ...(sp.retry || {}), maxAttempts: intOrUndef(attempts), backoffSeconds: intOrUndef(backoff), maxEventAgeSeconds: intOrUndef(maxAge) };
    if (dlq.value.trim()) spec.retry.deadLetterQueue = dlq.value.trim(); else delete spec.retry.deadLetterQueue;
    return {
      apiVersion: 'lambda/v1alpha1',
      kind: 'Function',
      metadata: { name: existing ? meta.name : name.value.trim(), labels: parseLabels(labelsIn.value),
        ...(meta.annotations ? { annotations: meta.annotations } : {}) },
      spec: JSON.parse(JSON.stringify(spec)),
    };
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form, summary);
    let body;
    try { body = build(); } catch (x) {
      if (x instanceof FieldError) { showErrors(form, summary, x.message, [{ field: x.path, message: x.message }]); return; }
      throw x;
    }
    submit.disabled = true;
    try {
      const fnName = body.metadata.name;
      if (existing) await api('PUT', paths.fn(ns, fnName), body);
      else await api('POST', paths.functions(ns), body);
      toast(existing ? `Saved ${fnName}.` : `Created ${fnName}.`);
      location.hash = `#/functions/${seg(fnName)}`;
    } catch (x) {
      if (x instanceof ApiError) showErrors(form, summary, x.message, x.details);
      else showErrors(form, summary, String(x.message || x), []);
    } finally {
      submit.disabled = false;
    }
  });
  replace(holder, form);
  (existing ? runtime : name).focus();
}
